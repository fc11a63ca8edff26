//! The read path, shared by restore, dump, check, prune and the backup's delta encoder.
//!
//! [`BlobReader`] turns a chunk id into its verified plaintext: index lookup, ranged get from
//! the object store, decrypt, decompress, resolve delta bases through a shared cache, verify
//! against the id. [`content`] writes a whole content (a stream, a file) in order with worker
//! threads. Restoring into a filesystem is `restore.rs`; this module knows no filesystem.

mod blobs;
pub(crate) mod content;

pub(crate) use blobs::{BlobReader, CACHE_BYTES};
