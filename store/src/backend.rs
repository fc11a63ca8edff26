//! Where repository files live. The store talks to storage only through [`Backend`], whose
//! contract is what the crash-safety argument in `backup.rs` relies on.
//!
//! Contract:
//! 1. A file becomes visible under its final name only complete and durable: it is written under
//!    `tmp/`, fsynced, renamed (or linked) into place, and the directory is fsynced.
//! 2. Nothing is ever modified in place. Files are created once and, later, deleted whole.
//! 3. `create_new` is atomic and fails with `AlreadyExists` if the name is taken, also against a
//!    concurrent writer on another host sharing the filesystem (it uses `link(2)`).
//! 4. A crash can leave only files under `tmp/` behind, named `<host>-<pid>-<random>` so the next
//!    writer on that host can remove those of dead processes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Storage for repository files, addressed by `/`-separated relative paths.
pub trait Backend: Send + Sync {
    /// Where this backend lives, for messages.
    fn location(&self) -> &Path;
    /// Writes a whole file atomically and durably (contract 1), replacing nothing.
    fn write_new(&self, rel: &str, data: &[u8]) -> Result<()>;
    /// Like `write_new`, but returns `Ok(false)` if `rel` already exists (contract 3).
    fn create_new(&self, rel: &str, data: &[u8]) -> Result<bool>;
    /// Starts a file that is streamed in and published by [`TempFile::publish`].
    fn temp_file(&self) -> Result<TempFile>;
    /// Reads a whole file.
    fn read(&self, rel: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; a short file is an `UnexpectedEof` error.
    fn read_at(&self, rel: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Opens a file for many positional reads (restore reads a pack chunk by chunk).
    fn open_reader(&self, rel: &str) -> Result<Box<dyn PositionalRead>>;
    /// Size of a file.
    fn size(&self, rel: &str) -> Result<u64>;
    /// Names (not paths) of the files directly in `dir`; an absent directory is empty.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Deletes a file; deleting a missing file is not an error (idempotent).
    fn remove(&self, rel: &str) -> Result<()>;
    fn exists(&self, rel: &str) -> bool;
}

/// An open file that can be read at any offset; a short read is an `UnexpectedEof` error.
pub trait PositionalRead: Send {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl PositionalRead for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// A repository on a local or mounted filesystem (a SAN volume works as long as it honours
/// fsync, rename and link).
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

/// A file being written under `tmp/`. Dropped unpublished, it is removed.
pub struct TempFile {
    file: Option<File>,
    path: PathBuf,
    root: PathBuf,
    written: u64,
}

impl TempFile {
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("temp file open until published");
        f.write_all(data).at(&self.path)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Fsyncs the file, renames it to `rel` and fsyncs the directory (contract 1).
    pub fn publish(mut self, rel: &str) -> Result<()> {
        let f = self.file.take().expect("published once");
        f.sync_all().at(&self.path)?;
        drop(f);
        let dest = self.root.join(rel);
        let dir = dest.parent().expect("relative path has a parent");
        create_private_dir(dir)?;
        fs::rename(&self.path, &dest).at(&dest)?;
        sync_dir(dir)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates a directory and its missing parents, each `0700` whatever the umask (everything Cairn
/// keeps may reveal what is backed up).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).at(dir)
}

/// Makes a file Cairn created readable by its owner only (`0600`), whatever the umask.
pub fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = fs::metadata(path).at(path)?;
    if md.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).at(path)?;
    }
    Ok(())
}

/// Opens a new file, `0600` whatever the umask; fails if it exists.
pub fn create_private_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// This host's name, for lock files and temp names.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn new_temp(&self) -> Result<(File, PathBuf)> {
        let dir = self.root.join("tmp");
        create_private_dir(&dir)?;
        let name = format!("{}-{}-{:016x}", hostname(), std::process::id(), rand::random::<u64>());
        let path = dir.join(name);
        let f = create_private_file(&path)?;
        Ok((f, path))
    }

    /// Removes temp files left by dead processes of this host (contract 4). Returns how many.
    pub fn clean_stale_temp(&self) -> Result<usize> {
        let host = hostname();
        let mut removed = 0;
        for name in self.list("tmp")? {
            let mut parts = name.rsplitn(3, '-');
            let (_rand, pid, h) = (parts.next(), parts.next(), parts.next());
            if h == Some(host.as_str()) {
                if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                    if !pid_alive(pid) {
                        self.remove(&format!("tmp/{name}"))?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> &Path {
        &self.root
    }

    fn write_new(&self, rel: &str, data: &[u8]) -> Result<()> {
        let mut t = self.temp_file()?;
        t.write_all(data)?;
        t.publish(rel)
    }

    fn create_new(&self, rel: &str, data: &[u8]) -> Result<bool> {
        let (mut f, tmp) = self.new_temp()?;
        let guard = TempFile {
            file: None,
            path: tmp.clone(),
            root: self.root.clone(),
            written: 0,
        };
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        let dest = self.path(rel);
        let dir = dest.parent().expect("relative path has a parent");
        create_private_dir(dir)?;
        // link(2) fails if the name exists: the atomic "create if absent" that rename lacks.
        let created = match fs::hard_link(&tmp, &dest) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).at(&dest),
        };
        drop(guard);
        if created {
            sync_dir(dir)?;
        }
        Ok(created)
    }

    fn temp_file(&self) -> Result<TempFile> {
        let (f, path) = self.new_temp()?;
        Ok(TempFile {
            file: Some(f),
            path,
            root: self.root.clone(),
            written: 0,
        })
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let p = self.path(rel);
        fs::read(&p).at(p)
    }

    fn read_at(&self, rel: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(rel);
        let f = File::open(&p).at(&p)?;
        let mut buf = vec![0u8; len];
        FileExt::read_exact_at(&f, &mut buf, offset).at(&p)?;
        Ok(buf)
    }

    fn open_reader(&self, rel: &str) -> Result<Box<dyn PositionalRead>> {
        let p = self.path(rel);
        Ok(Box::new(File::open(&p).at(&p)?))
    }

    fn size(&self, rel: &str) -> Result<u64> {
        let p = self.path(rel);
        Ok(fs::metadata(&p).at(&p)?.len())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let p = self.path(dir);
        let rd = match fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(p),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.at(&p)?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, rel: &str) -> Result<()> {
        let p = self.path(rel);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(p),
        }
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        assert!(b.create_new("snapshots/a", b"1").unwrap());
        assert!(!b.create_new("snapshots/a", b"2").unwrap());
        assert_eq!(b.read("snapshots/a").unwrap(), b"1");
        assert!(b.list("tmp").unwrap().is_empty(), "temp files cleaned up");
    }

    #[test]
    fn temp_file_dropped_unpublished_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        let mut t = b.temp_file().unwrap();
        t.write_all(b"abc").unwrap();
        assert_eq!(b.list("tmp").unwrap().len(), 1);
        drop(t);
        assert!(b.list("tmp").unwrap().is_empty());
        let mut t = b.temp_file().unwrap();
        t.write_all(b"abc").unwrap();
        t.publish("packs/00/x").unwrap();
        assert_eq!(b.read_at("packs/00/x", 1, 2).unwrap(), b"bc");
        assert!(b.read_at("packs/00/x", 1, 5).is_err());
    }
}
