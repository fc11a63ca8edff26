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
//! A storage is one file implementing the trait and one case in [`Location::parse`] and
//! [`Location::open`]: `local.rs` (a directory) and `s3/` (a bucket of an S3-compatible store).

mod local;
mod s3;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use local::LocalStore;
pub use s3::S3Store;

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
    /// calling `get_range` each time, without finding the object again for each read. A missing
    /// object is `NotFound` from `open` or, where opening asks nothing of the store (S3), from
    /// the first read.
    fn open(&self, name: &str) -> Result<Box<dyn ObjectReader>>;
    /// An object's size.
    fn size(&self, name: &str) -> Result<u64>;
    /// An object's size and its last `len` bytes (all of it if shorter): a pack's trailer in one
    /// request where the store allows it.
    fn get_tail(&self, name: &str, len: usize) -> Result<(u64, Vec<u8>)> {
        let size = self.size(name)?;
        let n = (len as u64).min(size);
        Ok((size, self.get_range(name, size - n, n as usize)?))
    }
    /// Every object whose name starts with `prefix`, with sizes, sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes an object; a missing object is no error (contract 5).
    fn delete(&self, name: &str) -> Result<()>;

    /// How many packs a backup should be putting at once: one on a local disk; more where each
    /// put waits on the network.
    fn puts_in_flight(&self) -> usize {
        1
    }

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
    /// A bucket (and prefix) of an S3-compatible store: `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`.
    S3(S3Location),
}

/// Where an S3 repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http[s]://HOST[:PORT]`
    pub endpoint: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "repository location s3:{s}: {why} (expected s3:https://HOST[:PORT]/BUCKET[/PREFIX])"
            ))
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no http:// or https://"))?;
        if scheme != "https" && scheme != "http" {
            return Err(bad("the scheme must be https or http"));
        }
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no bucket"))?;
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(bad("a bad host"));
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(bad("a bucket name is 3 to 63 lowercase letters, digits, '-' or '.'"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("a bad prefix"));
        }
        Ok(Self {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
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
        if let Some(rest) = s.strip_prefix("s3:") {
            return Ok(Location::S3(S3Location::parse(rest)?));
        }
        if let Some((scheme, _)) = s.split_once(':') {
            let looks_like_scheme =
                !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) && !s.starts_with('/');
            if looks_like_scheme && ["sftp", "rest", "http", "https"].contains(&scheme) {
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
            Location::S3(l) => Ok(Arc::new(s3::SharedS3(Arc::new(S3Store::open(l)?)))),
        }
    }

    /// Opens the store for a new repository: absent or empty, never one that holds anything.
    pub fn create(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            Location::Local(p) => Ok(Arc::new(LocalStore::create(p)?)),
            Location::S3(l) => Ok(Arc::new(s3::SharedS3(Arc::new(S3Store::create(l)?)))),
        }
    }

    /// The local directory, for a repository on a filesystem.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }

    /// Where an object of this location is, for messages.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Location::Local(p) => p.join(name).display().to_string(),
            Location::S3(l) => format!("{l}/{name}"),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(l) => write!(f, "{l}"),
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
        let e = Location::parse("sftp:host:/b").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn s3_locations_parse() {
        let l = Location::parse("s3:https://s3.example.net:3900/backups/site1/cairn/").unwrap();
        assert_eq!(
            l,
            Location::S3(S3Location {
                endpoint: "https://s3.example.net:3900".into(),
                bucket: "backups".into(),
                prefix: "site1/cairn".into(),
            })
        );
        assert_eq!(l.to_string(), "s3:https://s3.example.net:3900/backups/site1/cairn");
        assert_eq!(l.local_path(), None);
        let root = Location::parse("s3:http://127.0.0.1:3900/cairn").unwrap();
        assert_eq!(root.to_string(), "s3:http://127.0.0.1:3900/cairn");
        assert_eq!(root.describe("config"), "s3:http://127.0.0.1:3900/cairn/config");
        for bad in [
            "s3:s3.example.net/b",
            "s3:ftp://h/bucket",
            "s3:https://h",
            "s3:https://h/",
            "s3:https://h/UPPER",
            "s3:https://h/ab",
            "s3:https://h/bucket/../x",
            "s3:https://user@h/bucket",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected s3:https://HOST"), "{bad}: {e}");
        }
    }
}
