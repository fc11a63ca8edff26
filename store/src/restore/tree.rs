//! Restoring items onto a filesystem: only where told, and as they were.
//!
//! *Only where told.* Below the target directory nothing is looked up by path: every directory is
//! opened relative to its parent's descriptor with `O_NOFOLLOW`, and every file, link and
//! directory is created relative to one (`openat`, `mkdirat`, `symlinkat`, `linkat`). A symlink
//! or file found in the way (planted, or left from before) is removed, never followed, so a
//! restore never writes, chmods or chowns outside its target. Stored names are checked: an
//! empty, `.` or `..` component, or a NUL byte, is refused as a hostile snapshot.
//!
//! *As they were.* Types, modes, owners (when root), modification times (of symlinks too),
//! extended attributes (POSIX ACLs and SELinux labels are stored as such), hard links (as links
//! to the first name), sparse files (all-zero chunks become holes) and names that are not UTF-8,
//! byte for byte.
//!
//! *Fast.* Files are written by a pool of workers, one per core, each with its own index
//! connection, sharing one cache of decoded chunks; small files go in batches, so a tree of
//! many small files costs little more than its system calls. Files larger than [`BIG_FILE`] are
//! decoded by the parallel content writer one at a time.

use std::ffi::OsStr;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crossbeam_channel::bounded;
use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;

use super::fs::*;
use crate::cache::ChunkCache;
use crate::error::{corrupt, Error, Result};
use crate::progress::Progress;
use crate::read::{BlobReader, CACHE_BYTES};
use crate::repo::Synced;
use crate::snapshot::{ContentRef, EntryType, TreeEntry};

/// Files above this size are decoded by the parallel content writer.
const BIG_FILE: u64 = 32 << 20;
/// Files per work unit for the pool (or fewer, up to about 8 MiB of content).
const BATCH_FILES: usize = 256;
const BATCH_BYTES: u64 = 8 << 20;

/// Writes into a new file, leaving holes where whole 4 KiB blocks are zero (call
/// [`Sparse::finish`] to set the length, so that trailing zeros exist too).
pub(super) struct Sparse<'f> {
    pub(super) f: &'f mut std::fs::File,
    pub(super) len: u64,
}

const BLOCK: usize = 4096;

impl Write for Sparse<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut i = 0;
        while i < buf.len() {
            let end = (i + BLOCK).min(buf.len());
            // Runs of data blocks are written in one call; zero blocks are skipped.
            if buf[i..end].iter().all(|b| *b == 0) {
                self.f.seek(SeekFrom::Current((end - i) as i64))?;
                i = end;
            } else {
                let mut j = end;
                while j < buf.len() {
                    let e = (j + BLOCK).min(buf.len());
                    if buf[j..e].iter().all(|b| *b == 0) {
                        break;
                    }
                    j = e;
                }
                self.f.write_all(&buf[i..j])?;
                i = j;
            }
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

impl Sparse<'_> {
    pub(super) fn finish(self) -> std::io::Result<()> {
        self.f.set_len(self.len)
    }
}

/// Writes `content` into `f` chunk by chunk; zero blocks become holes.
fn write_sparse(
    reader: &BlobReader,
    content: &ContentRef,
    f: &mut std::fs::File,
    path: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let at = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut out = Sparse { f, len: 0 };
    reader.for_each_leaf(content, &mut |_| {}, &mut |r| {
        let d = reader.read_shared(&r.0)?;
        if d.len() != r.1 as usize {
            return Err(corrupt(format!("blob {}", r.0), "length differs from the chunk list"));
        }
        out.write_all(&d).map_err(at)?;
        progress.advance(d.len() as u64);
        Ok(())
    })?;
    if out.len != content.size {
        return Err(corrupt(
            "content",
            format!("{}: {} bytes, expected {}", path.display(), out.len, content.size),
        ));
    }
    out.finish().map_err(at)
}

/// A parsed entry: its components below the tree root.
struct Placed<'a> {
    entry: &'a TreeEntry,
    comps: Vec<&'a OsStr>,
    display: PathBuf,
}

impl<'a> Placed<'a> {
    fn parent(&self) -> &[&'a OsStr] {
        &self.comps[..self.comps.len().saturating_sub(1)]
    }
    fn name(&self) -> &'a OsStr {
        self.comps.last().copied().unwrap_or_default()
    }
}

/// Keeps the last parent directory opened, since files come grouped by directory.
struct ParentCache {
    path: Vec<Vec<u8>>,
    fd: Option<OwnedFd>,
}

impl ParentCache {
    fn get(&mut self, root: BorrowedFd, comps: &[&OsStr]) -> std::result::Result<BorrowedFd<'_>, Errno> {
        let same = self.path.len() == comps.len() && self.path.iter().zip(comps).all(|(a, b)| a == b.as_bytes());
        if self.fd.is_none() || !same {
            self.fd = Some(open_dir(root, comps)?);
            self.path = comps.iter().map(|c| c.as_bytes().to_vec()).collect();
        }
        Ok(self.fd.as_ref().expect("set above").as_fd())
    }
}

impl Synced {
    /// Restores one item to `name` in the directory `parent` (shown as `dest`).
    pub(crate) fn place_item(
        &self,
        kind: &crate::snapshot::ItemKind,
        parent: BorrowedFd,
        name: &OsStr,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        match kind {
            crate::snapshot::ItemKind::Stream { content } => {
                let mut f = create_file(parent, name).map_err(|e| io_err(dest, e))?;
                self.write_content(content, &mut f, progress)?;
                f.sync_all().map_err(|e| Error::Io {
                    path: dest.into(),
                    source: e,
                })
            }
            crate::snapshot::ItemKind::Tree { listing, .. } => {
                let entries = self.tree_entries(listing)?;
                self.restore_tree_at(&entries, parent, name, dest, progress)
            }
        }
    }

    /// Restores a tree whose root goes to `name` in the directory `parent` (shown as `dest`).
    pub(crate) fn restore_tree_at(
        &self,
        entries: &[TreeEntry],
        parent: BorrowedFd,
        name: &OsStr,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut placed = Vec::with_capacity(entries.len());
        let mut raw_paths = Vec::with_capacity(entries.len());
        for e in entries {
            raw_paths.push(e.path_bytes().map_err(|m| corrupt("tree listing", m))?);
        }
        for (e, raw) in entries.iter().zip(&raw_paths) {
            let comps = components(raw)?;
            let display = comps.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
            placed.push(Placed {
                entry: e,
                comps,
                display,
            });
        }
        let Some(root) = placed.first().filter(|p| p.comps.is_empty()) else {
            return Err(corrupt("tree listing", "does not start with its root"));
        };
        match root.entry.entry_type {
            EntryType::Dir => {}
            // A single file or symlink: its "root" is the item itself.
            _ => return self.restore_leaves(&placed[..1], parent, Some(name), dest, progress),
        }
        let root_fd = open_dir(parent, &[name]).map_err(|e| io_err(dest, e))?;
        // Directories first, in listing order (parents before children).
        for p in placed.iter().skip(1).filter(|p| p.entry.entry_type == EntryType::Dir) {
            open_dir(root_fd.as_fd(), &p.comps).map_err(|e| io_err(&p.display, e))?;
        }
        self.restore_leaves(&placed[1..], root_fd.as_fd(), None, dest, progress)?;
        // Hard links, to names restored above.
        for p in placed.iter().skip(1) {
            let Some(first) = p.entry.link else { continue };
            let target = placed
                .get(first as usize)
                .filter(|t| t.entry.entry_type == EntryType::File && t.entry.link.is_none() && first > 0)
                .ok_or_else(|| corrupt("tree listing", format!("{}: bad hard link", p.display.display())))?;
            let from = open_dir(root_fd.as_fd(), target.parent()).map_err(|e| io_err(&target.display, e))?;
            let to = open_dir(root_fd.as_fd(), p.parent()).map_err(|e| io_err(&p.display, e))?;
            remove_at(to.as_fd(), p.name()).map_err(|e| io_err(&p.display, e))?;
            rfs::linkat(&from, target.name(), &to, p.name(), AtFlags::empty()).map_err(|e| io_err(&p.display, e))?;
        }
        // Directory metadata last, deepest first, so writing their contents does not reset times.
        for p in placed.iter().rev().filter(|p| p.entry.entry_type == EntryType::Dir) {
            let fd = open_dir(root_fd.as_fd(), &p.comps).map_err(|e| io_err(&p.display, e))?;
            apply_meta(fd.as_fd(), p.entry, &p.display)?;
        }
        Ok(())
    }

    /// Files (in parallel) and symlinks of `placed`, relative to `root`; `single` names the one
    /// leaf that is a whole item (its own components are then empty).
    fn restore_leaves<'a>(
        &self,
        placed: &[Placed<'a>],
        root: BorrowedFd,
        single: Option<&'a OsStr>,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let name_of = |p: &Placed<'a>| -> &'a OsStr { single.unwrap_or_else(|| p.name()) };
        let shown = |p: &Placed| {
            if single.is_some() {
                dest.to_path_buf()
            } else {
                p.display.clone()
            }
        };
        let files: Vec<usize> = (0..placed.len())
            .filter(|i| placed[*i].entry.entry_type == EntryType::File && placed[*i].entry.link.is_none())
            .collect();
        let size = |i: &usize| placed[*i].entry.content.as_ref().map_or(0, |c| c.size);
        let (big, small): (Vec<usize>, Vec<usize>) = files.into_iter().partition(|i| size(i) > BIG_FILE);
        let cache = ChunkCache::shared(CACHE_BYTES);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let (tx, rx) = bounded::<Vec<usize>>(2 * n);
        std::thread::scope(|s| {
            for _ in 0..n {
                let (rx, cache, failure) = (rx.clone(), cache.clone(), &failure);
                s.spawn(move || {
                    let run = || -> Result<()> {
                        let reader = BlobReader::with_cache(self, cache)?;
                        let mut parents = ParentCache {
                            path: Vec::new(),
                            fd: None,
                        };
                        for batch in rx.iter() {
                            for i in batch {
                                let p = &placed[i];
                                let path = shown(p);
                                let dir = parents.get(root, p.parent()).map_err(|e| io_err(&path, e))?;
                                let mut f = create_file(dir, name_of(p)).map_err(|e| io_err(&path, e))?;
                                if let Some(c) = &p.entry.content {
                                    write_sparse(&reader, c, &mut f, &path, progress)?;
                                }
                                apply_meta(f.as_fd(), p.entry, &path)?;
                            }
                        }
                        Ok(())
                    };
                    if let Err(e) = run() {
                        failure.lock().unwrap().get_or_insert(e);
                        // Drain, so the sender never blocks on a dead pool.
                        for _ in rx.iter() {}
                    }
                });
            }
            drop(rx);
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            for i in small {
                bytes += size(&i);
                batch.push(i);
                if batch.len() >= BATCH_FILES || bytes >= BATCH_BYTES {
                    if failure.lock().unwrap().is_some() {
                        break;
                    }
                    let _ = tx.send(std::mem::take(&mut batch));
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            drop(tx);
        });
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
        for i in big {
            let p = &placed[i];
            let path = shown(p);
            let dir = open_dir(root, p.parent()).map_err(|e| io_err(&path, e))?;
            let mut f = create_file(dir.as_fd(), name_of(p)).map_err(|e| io_err(&path, e))?;
            if let Some(c) = &p.entry.content {
                let mut out = Sparse { f: &mut f, len: 0 };
                self.write_content(c, &mut out, progress)?;
                out.finish().map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e,
                })?;
            }
            apply_meta(f.as_fd(), p.entry, &path)?;
        }
        for p in placed.iter().filter(|p| p.entry.entry_type == EntryType::Symlink) {
            let path = shown(p);
            let dir = open_dir(root, p.parent()).map_err(|e| io_err(&path, e))?;
            let name = name_of(p);
            place_symlink(dir.as_fd(), name, p.entry, &path)?;
        }
        Ok(())
    }
}

/// Creates the symlink `entry` as `name` in `dir` (replacing what is there), with its owner
/// (when allowed) and time.
pub(super) fn place_symlink(dir: BorrowedFd, name: &OsStr, entry: &TreeEntry, path: &Path) -> Result<()> {
    let target = entry
        .target_bytes()
        .map_err(|m| corrupt("tree listing", m))?
        .ok_or_else(|| corrupt("tree listing", format!("{}: symlink without target", path.display())))?;
    remove_at(dir, name).map_err(|e| io_err(path, e))?;
    rfs::symlinkat(OsStr::from_bytes(&target), dir, name).map_err(|e| io_err(path, e))?;
    if entry.uid != u32::MAX && entry.gid != u32::MAX {
        let (uid, gid) = (rfs::Uid::from_raw(entry.uid), rfs::Gid::from_raw(entry.gid));
        match rfs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(e) => return Err(io_err(path, e)),
        }
    }
    rfs::utimensat(dir, name, &timestamps(entry), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_err(path, e))
}
