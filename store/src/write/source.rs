//! Where a tree backup reads: [`TreeSource`] gives a tree's entries (metadata) and its files'
//! bytes. [`LocalTree`] reads this host's filesystem; a plugin backing up a tree on another
//! host passes a source that asks that host's agent, which walks with [`LocalTree`] itself, so
//! both see a tree alike.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::snapshot::{ContentRef, EntryType, TreeEntry};

/// One entry of a walk: what the listing will say of it (without content or link), and what a
/// backup needs besides to find hard links and to size the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    #[serde(flatten)]
    pub entry: TreeEntry,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// Size in bytes (a regular file's; others report what the filesystem says).
    pub len: u64,
}

/// A tree to back up.
pub trait TreeSource: Send + Sync {
    /// The entries under `root`: the root first (path `""`), then every entry below it,
    /// directories before what is in them, names in byte order. A directory for which
    /// `keep(relative path)` is false is left out with everything in it. Sockets, fifos and
    /// devices are left out.
    fn entries<'a>(
        &'a self,
        root: &Path,
        keep: &'a dyn Fn(&Path) -> bool,
    ) -> Result<Box<dyn Iterator<Item = Result<SourceEntry>> + 'a>>;
    /// The bytes of the regular file at `rel` (path bytes relative to `root`).
    fn open(&self, root: &Path, rel: &[u8]) -> Result<Box<dyn Read + Send + '_>>;
    /// The host whose agent reads this tree (`None`: this one). Its files may come cut and
    /// hashed there ([`foreign`](Self::foreign)); the item records the host.
    fn host(&self) -> Option<&str> {
        None
    }
    /// Has the regular file at `rel` (`len` bytes) cut and sent where it is, `store` taking the
    /// sending end (`write/foreign/`); `None`: read it with [`open`](Self::open) instead.
    fn foreign(
        &self,
        root: &Path,
        rel: &[u8],
        len: u64,
        store: &mut dyn FnMut(&mut dyn super::foreign::ForeignSource) -> Result<ContentRef>,
    ) -> Option<Result<ContentRef>> {
        let _ = (root, rel, len, store);
        None
    }
}

fn src_err(p: &Path, reason: String) -> Error {
    Error::Source {
        path: p.display().to_string(),
        reason,
    }
}

/// This host's filesystem.
pub struct LocalTree;

impl TreeSource for LocalTree {
    fn entries<'a>(
        &'a self,
        root: &Path,
        keep: &'a dyn Fn(&Path) -> bool,
    ) -> Result<Box<dyn Iterator<Item = Result<SourceEntry>> + 'a>> {
        let root = root.to_path_buf();
        let walk_root = root.clone();
        let walker = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |e| e.depth() == 0 || keep(e.path().strip_prefix(&walk_root).unwrap_or(e.path())));
        let mut xattr_buf = XattrBuffers::default();
        Ok(Box::new(walker.filter_map(move |entry| {
            local_entry(&root, entry, &mut xattr_buf).transpose()
        })))
    }

    fn open(&self, root: &Path, rel: &[u8]) -> Result<Box<dyn Read + Send + '_>> {
        use std::os::unix::ffi::OsStrExt;
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(rel))
        };
        let f = std::fs::File::open(&path).map_err(|err| src_err(&path, format!("cannot read: {err}")))?;
        Ok(Box::new(f))
    }
}

/// One walked entry; `None` for the types a backup leaves out.
fn local_entry(
    root: &Path,
    entry: walkdir::Result<walkdir::DirEntry>,
    xattr_buf: &mut XattrBuffers,
) -> Result<Option<SourceEntry>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let entry = entry.map_err(|e| {
        let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
        src_err(&p, e.io_error().map(|e| e.to_string()).unwrap_or_else(|| e.to_string()))
    })?;
    let path = entry.path();
    let md = std::fs::symlink_metadata(path).map_err(|e| src_err(path, e.to_string()))?;
    let ft = md.file_type();
    let entry_type = if ft.is_dir() {
        EntryType::Dir
    } else if ft.is_symlink() {
        EntryType::Symlink
    } else if ft.is_file() {
        EntryType::File
    } else {
        // Sockets, fifos and devices are not backed up; they are recreated by their owners.
        return Ok(None);
    };
    let rel = path.strip_prefix(root).unwrap_or(path);
    // Any name a filesystem allows, byte for byte: not UTF-8 goes in hex beside a lossy form.
    let (rel, raw_path) = crate::snapshot::text_and_raw(rel.as_os_str().as_bytes());
    let (mut target, mut raw_target) = (None, None);
    if entry_type == EntryType::Symlink {
        let t = std::fs::read_link(path).map_err(|err| src_err(path, err.to_string()))?;
        let (t, raw) = crate::snapshot::text_and_raw(t.as_os_str().as_bytes());
        (target, raw_target) = (Some(t), raw);
    }
    Ok(Some(SourceEntry {
        entry: TreeEntry {
            path: rel,
            entry_type,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            target,
            content: None,
            raw_path,
            raw_target,
            link: None,
            xattrs: xattr_buf
                .read(path)
                .map_err(|err| src_err(path, format!("extended attributes: {err}")))?,
        },
        dev: md.dev(),
        ino: md.ino(),
        nlink: md.nlink(),
        len: md.len(),
    }))
}

/// Reads extended attributes (POSIX ACLs and SELinux labels among them) without following
/// symlinks, reusing its buffers across entries.
#[derive(Default)]
struct XattrBuffers {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl XattrBuffers {
    /// Name and hex value of each attribute, sorted; none where the filesystem keeps none.
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<(String, String)>> {
        use rustix::io::Errno;
        const MAX: usize = 64 << 10; // the largest value and list Linux allows
        if self.names.is_empty() {
            self.names = vec![0; MAX];
            self.value = vec![0; MAX];
        }
        let n = match rustix::fs::llistxattr(path, &mut self.names[..]) {
            Ok(n) => n,
            Err(e) if e == Errno::NOTSUP || e == Errno::NOSYS => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for name in self.names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(text) = std::str::from_utf8(name) else {
                continue;
            };
            match rustix::fs::lgetxattr(path, name, &mut self.value[..]) {
                Ok(len) => out.push((text.to_string(), hex::encode(&self.value[..len]))),
                Err(e) if e == Errno::NODATA => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_json_and_keep_prunes_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/deep")).unwrap();
        std::fs::create_dir_all(dir.path().join("skip/me")).unwrap();
        std::fs::write(dir.path().join("a/deep/f"), b"x").unwrap();
        std::fs::write(dir.path().join("skip/me/g"), b"y").unwrap();
        std::os::unix::fs::symlink("a/deep/f", dir.path().join("l")).unwrap();
        let keep = |p: &Path| !p.starts_with("skip");
        let all: Vec<SourceEntry> = LocalTree
            .entries(dir.path(), &keep)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let paths: Vec<&str> = all.iter().map(|e| e.entry.path.as_str()).collect();
        assert_eq!(paths, ["", "a", "a/deep", "a/deep/f", "l"]);
        for e in &all {
            let line = serde_json::to_string(e).unwrap();
            assert_eq!(&serde_json::from_str::<SourceEntry>(&line).unwrap(), e);
        }
        assert_eq!(all[4].entry.target.as_deref(), Some("a/deep/f"));
        let mut f = String::new();
        LocalTree
            .open(dir.path(), b"a/deep/f")
            .unwrap()
            .read_to_string(&mut f)
            .unwrap();
        assert_eq!(f, "x");
    }
}
