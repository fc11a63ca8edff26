//! Placing an item that arrives as a stream, on a host that cannot read the repository (an
//! agent): [`Repository::item_stream`] writes an item's entries in listing order, each regular
//! file's bytes right after its entry; [`TreePlacer`] puts them in place one by one with the
//! same guarantees as a local restore (`tree.rs`: nothing below the target is followed, names
//! are checked, types, modes, owners, times, extended attributes, hard links and holes as they
//! were), in one thread.
//!
//! Stream format: for each entry, `u32` length (little-endian, at least 1) and the entry's JSON
//! (a listing line), then for a file stored with content (not a hard link) exactly its size in
//! bytes; after the last entry, `u32` zero. A stream item is one entry: a file at the root.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags};

use super::fs::*;
use super::tree::{place_symlink, Sparse};
use crate::error::{corrupt, Error, Result};
use crate::progress::NoProgress;
use crate::repo::Repository;
use crate::snapshot::{EntryType, ItemKind, TreeEntry};

/// The largest entry line a stream may carry.
const MAX_ENTRY: u32 = 1 << 20;

impl Repository {
    /// Writes an item as a placement stream (see the module documentation) into `out`.
    pub fn item_stream(&self, snapshot: &str, item: &str, out: &mut dyn Write) -> Result<()> {
        let _lock = self.read_lock(&format!("restore {snapshot}"))?;
        let it = self.restorable_item(snapshot, item)?;
        let (synced, _) = self.synced()?;
        let wrote = |e: std::io::Error| Error::Io {
            path: PathBuf::from(format!("<stream of {item}>")),
            source: e,
        };
        let put_entry = |e: &TreeEntry, out: &mut dyn Write| -> Result<()> {
            let line = serde_json::to_vec(e).expect("entry serialises");
            out.write_all(&(line.len() as u32).to_le_bytes()).map_err(wrote)?;
            out.write_all(&line).map_err(wrote)
        };
        match &it.kind {
            ItemKind::Stream { content } => {
                let e = TreeEntry {
                    path: String::new(),
                    entry_type: EntryType::File,
                    mode: 0o600,
                    // -1: fchown leaves the owner as the placing process makes it.
                    uid: u32::MAX,
                    gid: u32::MAX,
                    mtime: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                    mtime_nsec: 0,
                    target: None,
                    content: Some(content.clone()),
                    raw_path: None,
                    raw_target: None,
                    link: None,
                    xattrs: Vec::new(),
                };
                put_entry(&e, out)?;
                synced.write_content(content, out, &NoProgress)?;
            }
            ItemKind::Tree { listing, .. } => {
                for e in synced.tree_entries(listing)? {
                    put_entry(&e, out)?;
                    if let (Some(c), None) = (&e.content, e.link) {
                        synced.write_content(c, out, &NoProgress)?;
                    }
                }
            }
        }
        out.write_all(&0u32.to_le_bytes()).map_err(wrote)?;
        out.flush().map_err(wrote)
    }
}

/// Reads one entry of a placement stream; `None` at its end marker.
pub fn read_entry(input: &mut dyn Read) -> Result<Option<TreeEntry>> {
    let bad = |m: String| corrupt("item stream", m);
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(|e| bad(format!("cut short: {e}")))?;
    let len = u32::from_le_bytes(len);
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_ENTRY {
        return Err(bad(format!("an entry of {len} bytes")));
    }
    let mut line = vec![0u8; len as usize];
    input
        .read_exact(&mut line)
        .map_err(|e| bad(format!("cut short: {e}")))?;
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| bad(format!("an entry: {e}")))
}

/// Places a stream's entries under one path.
pub struct TreePlacer {
    parent: OwnedFd,
    name: OsString,
    dest: PathBuf,
    /// The root directory, once placed (none for a single file or symlink).
    root: Option<OwnedFd>,
    /// Each placed entry's components and whether it can be a hard link's target.
    lines: Vec<(Vec<OsString>, bool)>,
    /// Directories with their entries, for their metadata at the end.
    dirs: Vec<(Vec<OsString>, TreeEntry)>,
}

impl TreePlacer {
    /// Places at exactly `dest`. Unless `overwrite`, `dest` must be absent or an empty
    /// directory; with it, entries replace what is there and other files are left alone.
    pub fn new(dest: &Path, overwrite: bool) -> Result<Self> {
        super::check_target(dest, overwrite)?;
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file or directory name", dest.display())))?;
        Ok(Self {
            parent: open_trusted_dir(dest.parent().unwrap_or(Path::new(".")))?,
            name: name.to_owned(),
            dest: dest.to_path_buf(),
            root: None,
            lines: Vec::new(),
            dirs: Vec::new(),
        })
    }

    /// Places every entry of `input` and finishes.
    pub fn place_all(mut self, input: &mut dyn Read) -> Result<u64> {
        let mut n = 0;
        while let Some(e) = read_entry(input)? {
            self.place(e, input)?;
            n += 1;
        }
        self.finish()?;
        Ok(n)
    }

    /// Places one entry; a file's bytes are read from `input` (exactly its size).
    pub fn place(&mut self, e: TreeEntry, input: &mut dyn Read) -> Result<()> {
        let raw = e.path_bytes().map_err(|m| corrupt("item stream", m))?;
        let comps: Vec<OsString> = components(&raw)?.into_iter().map(OsStr::to_os_string).collect();
        let path = comps.iter().fold(self.dest.clone(), |p, c| p.join(c));
        let first = self.lines.is_empty();
        if first != comps.is_empty() {
            return Err(corrupt("item stream", "the root must come first, and once"));
        }
        let borrowed: Vec<&OsStr> = comps.iter().map(OsString::as_os_str).collect();
        // Where the entry goes: (its directory, its name).
        let (dir, name): (OwnedFd, &OsStr) = if first {
            (rustix::io::dup(&self.parent).map_err(|e| io_err(&path, e))?, &self.name)
        } else {
            let root = self
                .root
                .as_ref()
                .ok_or_else(|| corrupt("item stream", "entries below a root that is not a directory"))?;
            let parent = &borrowed[..borrowed.len() - 1];
            (
                open_dir(root.as_fd(), parent).map_err(|e| io_err(&path, e))?,
                borrowed[borrowed.len() - 1],
            )
        };
        let mut link_target = false;
        match e.entry_type {
            EntryType::Dir => {
                let fd = open_dir(dir.as_fd(), &[name]).map_err(|err| io_err(&path, err))?;
                if first {
                    self.root = Some(fd);
                }
                self.dirs.push((comps.clone(), e));
            }
            EntryType::Symlink => place_symlink(dir.as_fd(), name, &e, &path)?,
            EntryType::File => match e.link {
                Some(line) => {
                    let (target, ok) = self
                        .lines
                        .get(line as usize)
                        .filter(|_| line > 0)
                        .ok_or_else(|| corrupt("item stream", format!("{}: bad hard link", path.display())))?;
                    if !ok {
                        return Err(corrupt("item stream", format!("{}: bad hard link", path.display())));
                    }
                    let root = self.root.as_ref().expect("checked above");
                    let t: Vec<&OsStr> = target.iter().map(OsString::as_os_str).collect();
                    let from = open_dir(root.as_fd(), &t[..t.len() - 1]).map_err(|err| io_err(&path, err))?;
                    remove_at(dir.as_fd(), name).map_err(|err| io_err(&path, err))?;
                    rfs::linkat(&from, t[t.len() - 1], &dir, name, AtFlags::empty())
                        .map_err(|err| io_err(&path, err))?;
                }
                None => {
                    let mut f = create_file(dir.as_fd(), name).map_err(|err| io_err(&path, err))?;
                    let size = e.content.as_ref().map_or(0, |c| c.size);
                    let mut out = Sparse { f: &mut f, len: 0 };
                    let at = |err: std::io::Error| Error::Io {
                        path: path.clone(),
                        source: err,
                    };
                    let copied = std::io::copy(&mut input.take(size), &mut out).map_err(at)?;
                    if copied != size {
                        return Err(corrupt(
                            "item stream",
                            format!("{}: {copied} bytes, expected {size}", path.display()),
                        ));
                    }
                    out.finish().map_err(at)?;
                    apply_meta(f.as_fd(), &e, &path)?;
                    f.sync_all().map_err(at)?;
                    link_target = !first;
                }
            },
        }
        self.lines.push((comps, link_target));
        Ok(())
    }

    /// Directory metadata last, deepest first, so placing their contents did not reset times.
    pub fn finish(self) -> Result<()> {
        let Some(root) = self.root else {
            return Ok(());
        };
        for (comps, e) in self.dirs.iter().rev() {
            let borrowed: Vec<&OsStr> = comps.iter().map(OsString::as_os_str).collect();
            let path = comps.iter().fold(self.dest.clone(), |p, c| p.join(c));
            let fd = open_dir(root.as_fd(), &borrowed).map_err(|err| io_err(&path, err))?;
            apply_meta(fd.as_fd(), e, &path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_repo;
    use std::os::unix::fs::MetadataExt;

    /// Type, mode, size, mtime, link count and content of every entry under `root`.
    fn state(root: &Path) -> Vec<(String, u32, u64, i64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(root).sort_by_file_name() {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let data = if md.is_file() {
                std::fs::read(e.path()).unwrap()
            } else if md.file_type().is_symlink() {
                std::fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            let mtime = if md.is_dir() { 0 } else { md.mtime() };
            out.push((
                rel,
                md.mode(),
                if md.is_dir() { 0 } else { md.len() },
                mtime,
                md.nlink(),
                data,
            ));
        }
        out
    }

    #[test]
    fn a_streamed_tree_is_placed_as_a_local_restore_places_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("conf/deep")).unwrap();
        std::fs::write(src.join("conf/a.pem"), b"cert").unwrap();
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(src.join("conf/deep/big"), &big).unwrap();
        let mut sparse = vec![0u8; 1 << 20];
        sparse[500_000] = 1;
        std::fs::write(src.join("sparse"), &sparse).unwrap();
        std::fs::hard_link(src.join("conf/a.pem"), src.join("also.pem")).unwrap();
        std::os::unix::fs::symlink("conf/a.pem", src.join("current.pem")).unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("conf/a.pem"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let repo = test_repo(dir.path());
        let b = crate::repo::test_backup(&repo, "s");
        b.add_tree("t", &src).unwrap();
        b.add_stream("dump", &big[..]).unwrap();
        b.commit().unwrap();

        let mut stream = Vec::new();
        repo.item_stream("s", "t", &mut stream).unwrap();
        let placed = dir.path().join("placed");
        let n = TreePlacer::new(&placed, false)
            .unwrap()
            .place_all(&mut &stream[..])
            .unwrap();
        assert_eq!(n, 9);
        assert_eq!(state(&placed), state(&src));
        // Holes stay holes.
        assert!(
            placed.join("sparse").metadata().unwrap().blocks() < 64,
            "the sparse file was filled"
        );
        // A stream item is one file.
        let mut one = Vec::new();
        repo.item_stream("s", "dump", &mut one).unwrap();
        let f = dir.path().join("dump.out");
        TreePlacer::new(&f, false).unwrap().place_all(&mut &one[..]).unwrap();
        assert!(std::fs::read(&f).unwrap() == big);
        // Not over a non-empty target unless told; a cut stream is an error, not a short file.
        assert!(matches!(TreePlacer::new(&placed, false), Err(Error::TargetNotEmpty(_))));
        let cut = &stream[..stream.len() - 5000];
        let e = TreePlacer::new(&dir.path().join("cut"), false)
            .unwrap()
            .place_all(&mut &cut[..])
            .unwrap_err();
        assert!(e.to_string().contains("item stream"), "{e}");
    }

    /// Hostile streams: names that climb out, entries before the root, hard links to nothing.
    #[test]
    fn hostile_streams_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |path: &str, t: EntryType, link: Option<u64>| TreeEntry {
            path: path.into(),
            entry_type: t,
            mode: 0o755,
            uid: u32::MAX,
            gid: u32::MAX,
            mtime: 0,
            mtime_nsec: 0,
            target: None,
            content: None,
            raw_path: None,
            raw_target: None,
            link,
            xattrs: Vec::new(),
        };
        let stream = |es: &[TreeEntry]| {
            let mut out = Vec::new();
            for e in es {
                let l = serde_json::to_vec(e).unwrap();
                out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                out.extend_from_slice(&l);
            }
            out.extend_from_slice(&0u32.to_le_bytes());
            out
        };
        for (i, bad) in [
            vec![
                entry("", EntryType::Dir, None),
                entry("../escape", EntryType::File, None),
            ],
            vec![entry("x", EntryType::File, None)],
            vec![entry("", EntryType::Dir, None), entry("a", EntryType::File, Some(7))],
            vec![entry("", EntryType::File, None), entry("a", EntryType::File, None)],
        ]
        .into_iter()
        .enumerate()
        {
            let target = dir.path().join(format!("t{i}"));
            let r = TreePlacer::new(&target, false)
                .unwrap()
                .place_all(&mut &stream(&bad)[..]);
            assert!(r.is_err(), "case {i} was accepted");
        }
        assert!(!dir.path().join("escape").exists());
    }
}
