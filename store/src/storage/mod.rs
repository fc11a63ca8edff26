//! Where repository objects live: the **object store** seam.
//!
//! The store names every object with a `/`-separated relative name (`config`, `keys/<id>`,
//! `packs/ab/<id>`, `snapshots/<id>`, `locks/<name>`, `deletions/<name>`) and reaches storage
//! only through [`ObjectStore`]. A [`Location`] (what `--repo` parses into) opens one.
//!
//! # Contract
//! What the crash-safety argument (`write/mod.rs`) and two-phase deletion (`deletion.rs`) rely
//! on; every implementation must give it:
//! 1. **Whole objects.** [`ObjectStore::put`] makes an object visible under its name only
//!    complete and durable; a crash or error in the middle leaves the name as it was (absent).
//!    Readers never see a partial object. The same holds for an object streamed in through an
//!    [`ObjectWriter`] (a pack, whose name is the hash of its bytes and so is known only at the
//!    end): nothing is visible before [`ObjectWriter::finish`], and a writer dropped unfinished
//!    leaves nothing a reader sees. Where it keeps the bytes meanwhile is the store's business
//!    (a file on the same filesystem, memory, a multipart upload).
//! 2. **Nothing changes in place.** The store puts each name once (content-named packs may be put
//!    again with the same bytes) and later deletes it whole.
//! 3. **Put-if-absent** ([`ObjectStore::put_if_absent`]) is atomic against every other writer of
//!    the repository: exactly one of two racing writers of one name gets `true`. Where a storage
//!    cannot give this, its implementation says how names are made unique instead.
//! 4. **Errors tell "not found" from "could not ask"**: a missing object is
//!    [`Error::NotFound`](crate::Error::NotFound) and nothing else is; a network or permission
//!    failure is never read as absence.
//! 5. **Deleting is idempotent**: deleting a missing object succeeds.
//! 6. **Listing** returns every object under a prefix, with its size, in one call; an object
//!    being put may or may not be listed, a complete one is.
//!
//! A new storage (S3-compatible, say) is one new file implementing the trait and one case in
//! [`Location::parse`] and [`Location::open`].

mod local;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use local::LocalStore;

use crate::error::{Error, Result};

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's full name (`packs/ab/<id>`).
    pub name: String,
    pub size: u64,
}

/// Storage for repository objects (see the module's contract).
pub trait ObjectStore: Send + Sync {
    /// Where the store lives, for messages.
    fn location(&self) -> &Location;
    /// Stores a whole object durably (contract 1).
    fn put(&self, name: &str, data: &[u8]) -> Result<()>;
    /// Starts an object streamed in and named when complete (contract 1).
    fn writer(&self) -> Result<Box<dyn ObjectWriter>>;
    /// Stores a whole object unless the name is taken; `Ok(false)` if it was (contract 3).
    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool>;
    /// Reads a whole object.
    fn get(&self, name: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; a range beyond the end is an `UnexpectedEof` I/O error.
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Opens an object for many ranged reads (a restore reads a pack blob by blob); the same as
    /// calling `get_range` each time, without finding the object again for each read.
    fn open(&self, name: &str) -> Result<Box<dyn ObjectReader>>;
    /// An object's size.
    fn size(&self, name: &str) -> Result<u64>;
    /// Every object whose name starts with `prefix`, with sizes, sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes an object; a missing object is no error (contract 5).
    fn delete(&self, name: &str) -> Result<()>;

    /// Whether an object exists; an error when that cannot be told (contract 4).
    fn exists(&self, name: &str) -> Result<bool> {
        match self.size(name) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes what crashed writers of this host left behind; returns how many. Stores whose
    /// puts leave nothing behind have nothing to do.
    fn clean_up(&self) -> Result<usize> {
        Ok(0)
    }

    /// Names of leftovers of interrupted writes (any host), for `check` to report.
    fn leftovers(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// An object open for ranged reads; see [`ObjectStore::open`].
pub trait ObjectReader: Send {
    /// Reads `len` bytes at `offset`; a range beyond the end is an `UnexpectedEof` I/O error.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// An object being streamed in; see [`ObjectStore::writer`].
pub trait ObjectWriter: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Bytes written so far.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes the object visible as `name`, whole and durable.
    fn finish(self: Box<Self>, name: &str) -> Result<()>;
}

/// The names directly under `dir` (a flat directory such as `snapshots` or `keys`), without the
/// `dir/` prefix.
pub fn names_in(store: &dyn ObjectStore, dir: &str) -> Result<Vec<String>> {
    let prefix = format!("{dir}/");
    Ok(store
        .list(&prefix)?
        .into_iter()
        .filter_map(|o| o.name.strip_prefix(&prefix).map(str::to_string))
        .filter(|n| !n.contains('/'))
        .collect())
}

/// Where a repository is: what `--repo` and `CAIRN_REPO` parse into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local or mounted filesystem (a SAN volume works as long as it honours
    /// fsync, rename and link).
    Local(PathBuf),
}

impl Location {
    /// Parses a repository location: `local:PATH` or a plain path.
    pub fn parse(s: &str) -> Result<Location> {
        if s.is_empty() {
            return Err(Error::Invalid("an empty repository location".into()));
        }
        if let Some(path) = s.strip_prefix("local:") {
            return Ok(Location::Local(path.into()));
        }
        if let Some((scheme, _)) = s.split_once(':') {
            let looks_like_scheme =
                !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) && !s.starts_with('/');
            if looks_like_scheme && ["s3", "sftp", "rest", "http", "https"].contains(&scheme) {
                return Err(Error::Invalid(format!(
                    "repository location {s:?}: {scheme}: repositories are not supported by this cairn"
                )));
            }
        }
        Ok(Location::Local(s.into()))
    }

    /// Opens the store of an existing location (a local one must be a directory).
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            Location::Local(p) => Ok(Arc::new(LocalStore::open(p)?)),
        }
    }

    /// Opens the store for a new repository: absent or empty, never one that holds anything.
    pub fn create(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            Location::Local(p) => Ok(Arc::new(LocalStore::create(p)?)),
        }
    }

    /// The local directory, for a repository on a filesystem.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
        }
    }

    /// Where an object of this location is, for messages.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Location::Local(p) => p.join(name).display().to_string(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

impl From<&std::path::Path> for Location {
    fn from(p: &std::path::Path) -> Self {
        Location::Local(p.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Local(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Location::Local(p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(Location::parse("/backups").unwrap(), Location::Local("/backups".into()));
        assert_eq!(Location::parse("local:/a:b").unwrap(), Location::Local("/a:b".into()));
        assert_eq!(Location::parse("rel/dir").unwrap(), Location::Local("rel/dir".into()));
        assert_eq!(
            Location::parse("/odd:name").unwrap(),
            Location::Local("/odd:name".into())
        );
        let e = Location::parse("s3:https://h/b").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(Location::parse("").is_err());
    }
}
