//! A repository on a local or mounted filesystem.
//!
//! How it keeps the object-store contract (`storage/mod.rs`):
//! 1. `put` writes the object under `tmp/`, fsyncs it, renames it into place and fsyncs the
//!    directory: the name appears only complete and durable.
//! 3. `put_if_absent` does the same with `link(2)` in place of rename: `link` fails if the name
//!    exists, atomically, also against a writer on another host sharing the filesystem.
//! 4. `ENOENT` becomes `Error::NotFound`; every other failure stays an I/O error with its path.
//! - A crash can leave only files under `tmp/`, named `<host>-<pid>-<random>`, so the next writer
//!   on that host removes those of dead processes (`clean_up`); `list` never shows `tmp/`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Location, ObjectInfo, ObjectReader, ObjectStore, ObjectWriter};
use crate::error::{Error, IoContext, Result};
use crate::util::{create_private_dir, create_private_file, hostname, pid_alive, sync_dir};

const TMP: &str = "tmp";
/// Directories a new repository starts with, as restic's local backend does, so the layout is
/// there to see (and to mount or watch) before the first backup. Others appear on first put.
const LAYOUT: [&str; 4] = ["packs", "snapshots", "locks", TMP];

/// A repository directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    location: Location,
}

/// A file under `tmp/`, removed when dropped unless it was moved into place.
struct Temp {
    path: PathBuf,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl LocalStore {
    /// The store of an existing repository directory.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::NoRepository(root.display().to_string()));
        }
        Ok(Self::at(root))
    }

    /// The store for a new repository: `root` is created (`0700`) or must be empty.
    pub fn create(root: &Path) -> Result<Self> {
        if root.exists() {
            let mut rd = fs::read_dir(root).at(root)?;
            if rd.next().is_some() {
                return Err(Error::AlreadyExists(root.display().to_string()));
            }
        }
        for d in LAYOUT {
            create_private_dir(&root.join(d))?;
        }
        Ok(Self::at(root))
    }

    fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            location: Location::Local(root.to_path_buf()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Maps an I/O error on `path`: absence is `NotFound` (contract 4).
    fn err(path: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound(path.display().to_string())
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    }

    /// A new file under `tmp/`, named so that `clean_up` on this host can tell whether its
    /// writer is alive.
    fn new_temp(&self) -> Result<(File, Temp)> {
        let dir = self.root.join(TMP);
        create_private_dir(&dir)?;
        let name = format!("{}-{}-{:016x}", hostname(), std::process::id(), rand::random::<u64>());
        let temp = Temp { path: dir.join(name) };
        let f = create_private_file(&temp.path)?;
        Ok((f, temp))
    }

    /// Writes `data` to a new, fsynced file under `tmp/`.
    fn write_temp(&self, data: &[u8]) -> Result<Temp> {
        let (mut f, temp) = self.new_temp()?;
        f.write_all(data).at(&temp.path)?;
        f.sync_all().at(&temp.path)?;
        Ok(temp)
    }

    fn list_dir(&self, rel: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
        let p = self.path(rel);
        let rd = match fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => return Ok(()),
            Err(e) => return Err(e).at(p),
        };
        for entry in rd {
            let entry = entry.at(&p)?;
            let Some(file) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let name = if rel.is_empty() { file } else { format!("{rel}/{file}") };
            if name == TMP {
                continue;
            }
            let ft = entry.file_type().at(entry.path())?;
            if ft.is_dir() {
                self.list_dir(&name, out)?;
            } else if ft.is_file() {
                match entry.metadata() {
                    Ok(md) => out.push(ObjectInfo { name, size: md.len() }),
                    // Deleted between the listing and the stat: it is gone.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).at(entry.path()),
                }
            }
        }
        Ok(())
    }
}

impl LocalStore {
    /// Renames a complete, fsynced temp file into place and fsyncs the directory.
    fn publish(&self, mut temp: Temp, name: &str) -> Result<()> {
        let dest = self.path(name);
        let dir = dest.parent().expect("an object name has a parent");
        create_private_dir(dir)?;
        fs::rename(&temp.path, &dest).at(&dest)?;
        temp.path = PathBuf::new();
        sync_dir(dir)
    }
}

/// An open object file.
struct LocalReader {
    file: File,
    path: PathBuf,
}

impl ObjectReader for LocalReader {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset).at(&self.path)?;
        Ok(buf)
    }
}

/// An object streamed into a file under `tmp/`: the kernel writes it back while the rest
/// arrives, and `finish` is the same fsync and rename as `put`.
struct LocalWriter {
    store: LocalStore,
    file: File,
    temp: Temp,
    written: u64,
}

impl ObjectWriter for LocalWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).at(&self.temp.path)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.written
    }

    fn finish(self: Box<Self>, name: &str) -> Result<()> {
        let LocalWriter { store, file, temp, .. } = *self;
        file.sync_all().at(&temp.path)?;
        drop(file);
        store.publish(temp, name)
    }
}

impl ObjectStore for LocalStore {
    fn location(&self) -> &Location {
        &self.location
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        let temp = self.write_temp(data)?;
        self.publish(temp, name)
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let (file, temp) = self.new_temp()?;
        Ok(Box::new(LocalWriter {
            store: self.clone(),
            file,
            temp,
            written: 0,
        }))
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        let temp = self.write_temp(data)?;
        let dest = self.path(name);
        let dir = dest.parent().expect("an object name has a parent");
        create_private_dir(dir)?;
        // link(2) fails if the name exists: the atomic "create if absent" that rename lacks.
        let created = match fs::hard_link(&temp.path, &dest) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).at(&dest),
        };
        drop(temp);
        if created {
            sync_dir(dir)?;
        }
        Ok(created)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.path(name);
        fs::read(&p).map_err(|e| Self::err(&p, e))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(name);
        let f = File::open(&p).map_err(|e| Self::err(&p, e))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).at(&p)?;
        Ok(buf)
    }

    fn open(&self, name: &str) -> Result<Box<dyn ObjectReader>> {
        let path = self.path(name);
        let file = File::open(&path).map_err(|e| Self::err(&path, e))?;
        Ok(Box::new(LocalReader { file, path }))
    }

    fn size(&self, name: &str) -> Result<u64> {
        let p = self.path(name);
        Ok(fs::metadata(&p).map_err(|e| Self::err(&p, e))?.len())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let mut out = Vec::new();
        self.list_dir(dir, &mut out)?;
        out.retain(|o| o.name.starts_with(prefix));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let p = self.path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(p),
        }
    }

    fn clean_up(&self) -> Result<usize> {
        let host = hostname();
        let mut removed = 0;
        for name in self.leftovers()? {
            let mut parts = name.rsplitn(3, '-');
            let (_rand, pid, h) = (parts.next(), parts.next(), parts.next());
            if h == Some(host.as_str()) {
                if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                    if !pid_alive(pid) {
                        self.delete(&format!("{TMP}/{name}"))?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    fn leftovers(&self) -> Result<Vec<String>> {
        let p = self.path(TMP);
        let rd = match fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(p),
        };
        let mut out = Vec::new();
        for entry in rd {
            if let Some(name) = entry.at(&p)?.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::create(&dir.path().join("repo")).unwrap();
        (dir, s)
    }

    #[test]
    fn put_if_absent_refuses_existing_and_leaves_no_temp_files() {
        let (_d, s) = store();
        assert!(s.put_if_absent("snapshots/a", b"1").unwrap());
        assert!(!s.put_if_absent("snapshots/a", b"2").unwrap());
        assert_eq!(s.get("snapshots/a").unwrap(), b"1");
        assert!(s.leftovers().unwrap().is_empty());
    }

    #[test]
    fn objects_round_trip_and_absence_is_not_found() {
        let (_d, s) = store();
        s.put("packs/00/x", b"abc").unwrap();
        assert_eq!(s.get_range("packs/00/x", 1, 2).unwrap(), b"bc");
        let r = s.open("packs/00/x").unwrap();
        assert_eq!(r.read_at(0, 2).unwrap(), b"ab");
        assert!(matches!(r.read_at(2, 5), Err(Error::Io { .. })));
        assert!(matches!(s.open("packs/00/y"), Err(Error::NotFound(_))));
        assert!(matches!(s.get_range("packs/00/x", 1, 5), Err(Error::Io { .. })));
        assert_eq!(s.size("packs/00/x").unwrap(), 3);
        assert!(s.exists("packs/00/x").unwrap());
        for r in [
            s.get("packs/00/y").map(|_| ()),
            s.size("nope").map(|_| ()),
            s.get_range("a/b", 0, 1).map(|_| ()),
        ] {
            assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
        }
        assert!(!s.exists("packs/00/y").unwrap());
        s.delete("packs/00/x").unwrap();
        s.delete("packs/00/x").unwrap();
        assert!(!s.exists("packs/00/x").unwrap());
    }

    #[test]
    fn a_streamed_object_appears_only_when_finished() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write(b"ab").unwrap();
        w.write(b"c").unwrap();
        assert_eq!(w.len(), 3);
        assert!(s.list("").unwrap().is_empty(), "nothing visible before finish");
        w.finish("packs/00/p").unwrap();
        assert_eq!(s.get("packs/00/p").unwrap(), b"abc");
        assert!(s.leftovers().unwrap().is_empty());
        let mut w = s.writer().unwrap();
        w.write(b"x").unwrap();
        drop(w);
        assert!(s.leftovers().unwrap().is_empty(), "an abandoned object leaves nothing");
        assert_eq!(s.list("").unwrap().len(), 1);
    }

    #[test]
    fn listing_is_recursive_by_prefix_with_sizes_and_hides_temp_files() {
        let (_d, s) = store();
        s.put("packs/00/a", b"1").unwrap();
        s.put("packs/ff/b", b"22").unwrap();
        s.put("snapshots/c", b"333").unwrap();
        std::fs::write(s.root.join("tmp/host-1-2"), b"x").unwrap();
        let names = |p: &str| {
            s.list(p)
                .unwrap()
                .into_iter()
                .map(|o| (o.name, o.size))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("packs/"),
            vec![("packs/00/a".into(), 1), ("packs/ff/b".into(), 2)]
        );
        assert_eq!(names("packs/ff"), vec![("packs/ff/b".into(), 2)]);
        assert_eq!(names("").len(), 3);
        assert!(names("keys/").is_empty());
        assert_eq!(super::super::names_in(&s, "snapshots").unwrap(), vec!["c".to_string()]);
        assert_eq!(s.leftovers().unwrap(), vec!["host-1-2".to_string()]);
    }

    #[test]
    fn a_failed_put_leaves_the_name_absent() {
        let (_d, s) = store();
        // A directory in the way of the rename: the put fails and nothing appears.
        std::fs::create_dir_all(s.root.join("keys/k/inner")).unwrap();
        assert!(s.put("keys/k", b"data").is_err());
        assert!(s.leftovers().unwrap().is_empty(), "the temp file is removed");
    }

    #[test]
    fn create_refuses_a_non_empty_directory_and_open_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        assert!(matches!(LocalStore::create(dir.path()), Err(Error::AlreadyExists(_))));
        assert!(matches!(
            LocalStore::open(&dir.path().join("none")),
            Err(Error::NoRepository(_))
        ));
    }
}
