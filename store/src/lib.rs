//! # cairn-store
//!
//! Cairn's repository, which knows nothing of databases: named streams and file trees go in,
//! snapshots come out. Data takes this path (each step in its own module):
//!
//! [`chunker`] cuts content-defined chunks → [`crypto`] names each by a keyed hash → the
//! [`index`] drops chunks already stored → [`blob`] compresses and seals the rest → [`pack`]
//! gathers them into pack files → a [`snapshot`] manifest records what an item is made of.
//! [`backup`] runs that as a threaded pipeline; [`restore`] and [`check`] read it back.
//! Files reach storage only through the [`backend`] contract, and [`lock`] keeps exclusive work
//! away from running backups. `docs/format.md` specifies every byte.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_store::{BackupOptions, Credentials, InitOptions, NewKey, NoProgress, OpenOptions, Repository};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = OpenOptions { cache_dir: dir.path().join("cache"), ..Default::default() };
//! let key = NewKey::Passphrase { passphrase: "pw".to_string().into(), log_n: Some(10) };
//! Repository::init(&dir.path().join("repo"), &key, &InitOptions::default(), opts.clone()).unwrap();
//!
//! let repo = Repository::open(&dir.path().join("repo"), &Credentials::Passphrase("pw".to_string().into()), opts).unwrap();
//! let backup = repo.backup(BackupOptions { name: Some("first".into()), ..Default::default() }, Arc::new(NoProgress)).unwrap();
//! backup.add_stream("greeting", &b"hello, world"[..]).unwrap();
//! backup.commit().unwrap();
//!
//! let mut out = Vec::new();
//! repo.dump("first", "greeting", &mut out, &NoProgress).unwrap();
//! assert_eq!(out, b"hello, world");
//! assert_eq!(repo.snapshots().unwrap().len(), 1);
//! ```

pub mod backend;
pub mod backup;
pub mod blob;
pub(crate) mod cache;
pub mod check;
pub mod chunker;
pub mod config;
pub mod crypto;
pub mod deletion;
pub mod error;
pub mod id;
pub mod index;
pub(crate) mod keyfile;
pub mod lock;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod repair;
pub(crate) mod repo;
pub mod restore;
pub(crate) mod restore_tree;
pub mod retention;
pub mod snapshot;
pub(crate) mod trust;
pub(crate) mod util;

pub use backup::{validate_item_name, validate_name, Backup, BackupOptions};
pub use check::{CheckOptions, CheckReport, ReadData};
pub use chunker::ChunkerParams;
pub use config::{Config, DeltaConfig, InitOptions, FORMAT_VERSION};
pub use error::{Error, Result};
pub use id::{ChunkId, PackId, RepoId, SnapshotId};
pub use keyfile::{generate_identity_file, recipient_of_identity_file, Credentials, KeyInfo, NewKey};
pub use progress::{NoProgress, Progress};
pub use prune::{PruneOptions, PruneReport};
pub use repo::{default_cache_dir, OpenOptions, Repository};
pub use restore::RestoreOptions;
pub use retention::{parse_duration, Decision, Entry as RetentionEntry, Policy};
pub use snapshot::{Item, ItemKind, Snapshot, Stats, Status};
pub use util::{civil, format_rfc3339, now_unix, Civil};
