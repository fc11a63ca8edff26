//! The store's errors. Each variant carries what an operator needs to act: the path, the id or the
//! snapshot name involved.

use std::path::PathBuf;

use crate::id::{ChunkId, PackId};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}{}", enospc_hint(.source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An object (or file) that is not there; never used for a failure to ask (storage contract 4).
    #[error("{0}: not found")]
    NotFound(String),
    #[error("no Cairn repository at {0} (run `cairn init` first, or pass --repo / CAIRN_REPO)")]
    NoRepository(String),
    #[error("{0} already exists and is not empty; refusing to create a repository there")]
    AlreadyExists(String),
    #[error("{path} is not a Cairn repository: {reason}")]
    ForeignRepository { path: String, reason: String },
    #[error("repository format version {found} is newer than this cairn understands ({supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("wrong passphrase or identity: none of the {tried} key file(s) in {keys_dir} could be unlocked")]
    WrongKey { tried: usize, keys_dir: String },
    #[error("key error: {0}")]
    Key(String),
    #[error("integrity error in {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("blob {id} is missing from the index (pack deleted or index stale? try `cairn repair index`)")]
    MissingBlob { id: ChunkId },
    #[error("pack {id} is missing from the repository")]
    MissingPack { id: PackId },
    #[error("snapshot name {0:?} is already taken")]
    SnapshotExists(String),
    #[error("no snapshot named {0:?}")]
    UnknownSnapshot(String),
    #[error("snapshot {0:?} has no item named {1:?}")]
    UnknownItem(String, String),
    #[error("snapshot {name:?} is marked failed ({reason}); it cannot be restored")]
    FailedSnapshot { name: String, reason: String },
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error("target directory {0} is not empty (use --force to restore into it anyway)")]
    TargetNotEmpty(PathBuf),
    #[error("source {path}: {reason}")]
    Source { path: String, reason: String },
    #[error("index cache {path}: {source}")]
    Index {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A remote store (S3) refused or failed a request, after its retries.
    #[error("{what}: {reason}")]
    Remote { what: String, reason: String },
    #[error("{0}")]
    Concurrent(String),
    /// A backup's worker threads stopped (the message says why).
    #[error("the backup stopped: {0}")]
    Pipeline(String),
    /// A restore's or dump's worker threads stopped (the message says why).
    #[error("the restore stopped: {0}")]
    Restore(String),
}

fn enospc_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(28) {
        " (the disk is full: nothing was committed; free space and run the backup again)"
    } else {
        ""
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: what.into(),
        reason: reason.into(),
    }
}
