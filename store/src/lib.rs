//! # cairn-store
//!
//! Cairn's repository, which knows nothing of databases: named streams and file trees go in,
//! snapshots come out. Data takes this path (`docs/architecture.md` draws it):
//!
//! [`chunker`] cuts content-defined chunks → [`crypto`] names each by a keyed hash → the
//! [`write`] path drops chunks its [`write::ChunkDestination`] already holds, picks delta bases
//! through a [`write::BaseSelector`], and [`blob`] compresses and seals the rest → [`pack`]
//! gathers them into pack files, put through the [`storage`] contract → the [`index`] cache
//! records them → a [`snapshot`] manifest records what an item is made of. Restore, check and
//! prune read back through one read path. [`lock`] and [`deletion`] keep prune and repair from
//! taking what a running backup relies on. `docs/format.md` specifies every byte.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_store::{BackupOptions, Credentials, InitOptions, NewKey, NoProgress, OpenOptions, Repository};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = OpenOptions { cache_dir: dir.path().join("cache"), ..Default::default() };
//! let key = NewKey::Passphrase { passphrase: "pw".to_string().into(), log_n: Some(10) };
//! Repository::init(&dir.path().join("repo").into(), &key, &InitOptions::default(), opts.clone()).unwrap();
//!
//! let repo = Repository::open(&dir.path().join("repo").into(), &Credentials::Passphrase("pw".to_string().into()), opts).unwrap();
//! let backup = repo.backup(BackupOptions { name: Some("first".into()), ..Default::default() }, Arc::new(NoProgress)).unwrap();
//! backup.add_stream("greeting", &b"hello, world"[..]).unwrap();
//! backup.commit().unwrap();
//!
//! let mut out = Vec::new();
//! repo.dump("first", "greeting", &mut out, &NoProgress).unwrap();
//! assert_eq!(out, b"hello, world");
//! assert_eq!(repo.snapshots().unwrap().len(), 1);
//! ```

pub mod blob;
pub(crate) mod cache;
pub(crate) mod check;
pub mod chunker;
pub mod config;
pub mod crypto;
pub(crate) mod deletion;
pub mod error;
pub mod id;
pub(crate) mod index;
pub(crate) mod keyfile;
pub mod lock;
pub(crate) mod manifest;
pub(crate) mod pack;
pub mod progress;
pub(crate) mod prune;
pub(crate) mod read;
pub(crate) mod repair;
pub(crate) mod repo;
pub(crate) mod restore;
pub(crate) mod retention;
pub mod sketch;
pub mod snapshot;
pub mod storage;
pub(crate) mod trust;
pub(crate) mod util;
pub mod write;

pub use check::{CheckOptions, CheckReport, ReadData};
pub use chunker::ChunkerParams;
pub use config::{Config, DeltaConfig, InitOptions, FORMAT_VERSION};
pub use error::{Error, Result};
pub use id::{ChunkId, PackId, RepoId, SnapshotId};
pub use index::SyncStats;
pub use keyfile::{generate_identity_file, recipient_of_identity_file, Credentials, KeyInfo, NewKey};
pub use lock::LockInfo;
pub use progress::{NoProgress, Progress};
pub use prune::{PruneOptions, PruneReport};
pub use repo::{default_cache_dir, OpenOptions, Repository};
pub use restore::place::{read_entry, TreePlacer};
pub use restore::RestoreOptions;
pub use retention::{parse_duration, Decision, Entry as RetentionEntry, Policy};
pub use snapshot::{Item, ItemKind, Snapshot, Stats, Status};
pub use storage::{Location, ObjectStore};
pub use util::{
    civil, create_private_dir, current_pidns, format_bytes, format_rfc3339, hostname, now_unix, process_gone,
    process_start, Civil,
};
pub use write::{validate_item_name, validate_name, Backup, BackupOptions};
