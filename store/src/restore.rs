//! Reading snapshots back: `dump` (one item to a writer) and `restore` (items into a directory).
//!
//! Content is read by a small pipeline: one thread walks the chunk list (loading stored lists as it
//! goes, so memory stays bounded) and reads each sealed blob from its pack; worker threads decrypt,
//! decompress and verify every chunk against its id; the caller writes the chunks in order. An
//! ordered hand-off (one single-slot reply channel per chunk, queued in stream order) keeps the
//! output sequential while the workers run in parallel.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::backend::PositionalRead;
use crate::blob;
use crate::crypto::Keys;
use crate::error::{corrupt, Error, IoContext, Result};
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::pack::pack_path;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{
    parse_records, ChunkRef, ContentRef, EntryType, Item, ItemKind, Snapshot, TreeEntry,
};

/// Options for `cairn restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only these items (all when empty).
    pub items: Vec<String>,
    /// Restore into a non-empty target directory.
    pub force: bool,
}

/// Open packs kept by a reader: chunks of one stream mostly sit in a few packs in a row.
const OPEN_PACKS: usize = 8;

/// Reads blobs through the index.
pub(crate) struct BlobReader<'r> {
    pub(crate) repo: &'r Repository,
    pub(crate) index: Index,
    open: RefCell<Vec<(PackId, Box<dyn PositionalRead>)>>,
}

impl<'r> BlobReader<'r> {
    pub(crate) fn new(repo: &'r Repository, index: Index) -> Self {
        Self {
            repo,
            index,
            open: RefCell::new(Vec::new()),
        }
    }

    /// The sealed bytes of a blob.
    pub(crate) fn read_sealed(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = self
            .index
            .lookup(id)?
            .ok_or(Error::MissingBlob { id: *id })?;
        let mut open = self.open.borrow_mut();
        let pos = match open.iter().position(|(p, _)| *p == loc.pack) {
            Some(i) => i,
            None => {
                let f = self
                    .repo
                    .backend
                    .open_reader(&pack_path(&loc.pack))
                    .map_err(|e| match e {
                        Error::Io { source, .. }
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            Error::MissingPack { id: loc.pack }
                        }
                        e => e,
                    })?;
                if open.len() == OPEN_PACKS {
                    open.remove(0);
                }
                open.push((loc.pack, f));
                open.len() - 1
            }
        };
        let mut buf = vec![0u8; loc.length as usize];
        open[pos]
            .1
            .read_exact_at(&mut buf, loc.offset as u64)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    corrupt(
                        format!("pack {}", loc.pack),
                        format!("truncated: blob {id} lies beyond its end"),
                    )
                } else {
                    Error::Io {
                        path: self.repo.path().join(pack_path(&loc.pack)),
                        source: e,
                    }
                }
            })?;
        Ok(buf)
    }

    /// A blob's verified plaintext.
    pub(crate) fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        Ok(blob::decode(&self.repo.keys, id, &self.read_sealed(id)?)?.1)
    }

    /// Calls `f` with every leaf chunk of `content`, in order, loading stored lists on the way.
    /// `on_meta` sees every list chunk id (check uses it).
    pub(crate) fn for_each_leaf(
        &self,
        content: &ContentRef,
        on_meta: &mut dyn FnMut(&ChunkId),
        f: &mut dyn FnMut(ChunkRef) -> Result<()>,
    ) -> Result<()> {
        let mut carries = vec![Vec::new(); content.depth as usize];
        self.walk(
            &content.chunks,
            content.depth as usize,
            &mut carries,
            on_meta,
            f,
        )?;
        if carries.iter().any(|c| !c.is_empty()) {
            return Err(corrupt("chunk list", "ends inside a record"));
        }
        Ok(())
    }

    fn walk(
        &self,
        refs: &[ChunkRef],
        depth: usize,
        carries: &mut [Vec<u8>],
        on_meta: &mut dyn FnMut(&ChunkId),
        f: &mut dyn FnMut(ChunkRef) -> Result<()>,
    ) -> Result<()> {
        if depth == 0 {
            return refs.iter().try_for_each(|r| f(*r));
        }
        for r in refs {
            on_meta(&r.0);
            let bytes = self.read(&r.0)?;
            let mut lower = Vec::new();
            parse_records(&mut carries[depth - 1], &bytes, &mut lower);
            self.walk(&lower, depth - 1, carries, on_meta, f)?;
        }
        Ok(())
    }
}

type Reply = Receiver<Result<Vec<u8>>>;

impl Repository {
    /// Writes one content to `out`, verifying every chunk.
    pub(crate) fn write_content(
        &self,
        content: &ContentRef,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<()> {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let index = self.index_no_sync()?;
        // Channel sizes: 4 chunks per worker in flight keeps reads and decoding overlapped; with
        // chunks of at most `max` bytes that bounds memory to a few MiB per worker.
        let (job_tx, job_rx) = bounded::<(ChunkId, Vec<u8>, Sender<Result<Vec<u8>>>)>(2 * n);
        let (order_tx, order_rx) = bounded::<Reply>(4 * n);
        std::thread::scope(|s| -> Result<()> {
            for _ in 0..n {
                let rx = job_rx.clone();
                let keys: &Keys = &self.keys;
                s.spawn(move || {
                    for (id, sealed, reply) in rx {
                        let _ = reply.send(blob::decode(keys, &id, &sealed).map(|(_, d)| d));
                    }
                });
            }
            drop(job_rx);
            let reader = s.spawn(move || -> Result<()> {
                let br = BlobReader::new(self, index);
                br.for_each_leaf(content, &mut |_| {}, &mut |r| {
                    let (reply_tx, reply_rx) = bounded(1);
                    let sealed = br.read_sealed(&r.0);
                    match sealed {
                        Ok(sealed) => {
                            if order_tx.send(reply_rx).is_err()
                                || job_tx.send((r.0, sealed, reply_tx)).is_err()
                            {
                                return Err(Error::Pipeline("restore writer stopped".into()));
                            }
                        }
                        Err(e) => {
                            let _ = reply_tx.send(Err(e));
                            if order_tx.send(reply_rx).is_err() {
                                return Err(Error::Pipeline("restore writer stopped".into()));
                            }
                        }
                    }
                    Ok(())
                })
            });
            let mut written = 0u64;
            let mut result = Ok(());
            for reply in order_rx.iter() {
                let chunk = match reply.recv() {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    Err(_) => {
                        result = Err(Error::Pipeline("a restore worker stopped".into()));
                        break;
                    }
                };
                if let Err(e) = out.write_all(&chunk) {
                    result = Err(Error::Io {
                        path: "output".into(),
                        source: e,
                    });
                    break;
                }
                written += chunk.len() as u64;
                progress.advance(chunk.len() as u64);
            }
            drop(order_rx);
            let read_result = reader
                .join()
                .unwrap_or_else(|_| Err(Error::Pipeline("reader panicked".into())));
            result?;
            read_result?;
            if written != content.size {
                return Err(corrupt(
                    "content",
                    format!("restored {written} bytes, expected {}", content.size),
                ));
            }
            Ok(())
        })
    }

    /// The index without a pack listing: reading trusts the index cache and reports what is missing.
    pub(crate) fn index_no_sync(&self) -> Result<Index> {
        Index::open(&self.opts.cache_dir, &self.config.repo_id)
    }

    /// Loads a snapshot that may be restored.
    pub fn restorable_snapshot(&self, name: &str) -> Result<Snapshot> {
        let snap = self.snapshot(name)?;
        if let crate::snapshot::Status::Failed { reason } = &snap.status {
            return Err(Error::FailedSnapshot {
                name: name.into(),
                reason: reason.clone(),
            });
        }
        Ok(snap)
    }

    /// Writes one item of a snapshot to `out`: a stream, or a tree that is a single file.
    pub fn dump(
        &self,
        snapshot: &str,
        item: &str,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let _lock = self.lock(false, &format!("dump {snapshot}"))?;
        let snap = self.restorable_snapshot(snapshot)?;
        let it = snap
            .item(item)
            .ok_or_else(|| Error::UnknownItem(snapshot.into(), item.into()))?;
        // Sync once so packs written by others since our last run are readable.
        drop(self.index()?);
        progress.start(&format!("dump {item}"), Some(it.size));
        let content = match &it.kind {
            ItemKind::Stream { content } => content.clone(),
            ItemKind::Tree { listing, .. } => {
                let entries = self.tree_entries(listing)?;
                match entries.as_slice() {
                    [e] if e.entry_type == EntryType::File => e.content.clone().unwrap_or_default(),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "item {item:?} is a directory tree; use `cairn restore`"
                        )))
                    }
                }
            }
        };
        self.write_content(&content, out, progress)?;
        progress.finish();
        Ok(content.size)
    }

    /// Every entry of a tree listing.
    pub fn tree_entries(&self, listing: &ContentRef) -> Result<Vec<TreeEntry>> {
        let br = BlobReader::new(self, self.index_no_sync()?);
        let mut bytes = Vec::new();
        br.for_each_leaf(listing, &mut |_| {}, &mut |r| {
            bytes.extend_from_slice(&br.read(&r.0)?);
            Ok(())
        })?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).map_err(|e| corrupt("tree listing", e.to_string())))
            .collect()
    }

    /// Restores items of a snapshot under `target/<item name>`.
    pub fn restore(
        &self,
        snapshot: &str,
        target: &Path,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<Item>> {
        let _lock = self.lock(false, &format!("restore {snapshot}"))?;
        let snap = self.restorable_snapshot(snapshot)?;
        for name in &opts.items {
            if snap.item(name).is_none() {
                return Err(Error::UnknownItem(snapshot.into(), name.clone()));
            }
        }
        if target.exists() && !opts.force && std::fs::read_dir(target).at(target)?.next().is_some()
        {
            return Err(Error::TargetNotEmpty(target.into()));
        }
        std::fs::create_dir_all(target).at(target)?;
        drop(self.index()?);
        let chosen: Vec<Item> = snap
            .items
            .iter()
            .filter(|i| opts.items.is_empty() || opts.items.contains(&i.name))
            .cloned()
            .collect();
        progress.start("restore", Some(chosen.iter().map(|i| i.size).sum()));
        for item in &chosen {
            let dest = target.join(safe_relative(&item.name)?);
            match &item.kind {
                ItemKind::Stream { content } => {
                    if let Some(p) = dest.parent() {
                        std::fs::create_dir_all(p).at(p)?;
                    }
                    let mut f = std::fs::File::create(&dest).at(&dest)?;
                    self.write_content(content, &mut f, progress)?;
                    f.sync_all().at(&dest)?;
                }
                ItemKind::Tree { listing, .. } => self.restore_tree(listing, &dest, progress)?,
            }
        }
        progress.finish();
        Ok(chosen)
    }

    fn restore_tree(
        &self,
        listing: &ContentRef,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let entries = self.tree_entries(listing)?;
        let mut dirs: Vec<(PathBuf, &TreeEntry)> = Vec::new();
        for e in &entries {
            let p = if e.path.is_empty() {
                dest.to_path_buf()
            } else {
                dest.join(safe_relative(&e.path)?)
            };
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).at(parent)?;
            }
            match e.entry_type {
                EntryType::Dir => {
                    std::fs::create_dir_all(&p).at(&p)?;
                    dirs.push((p, e));
                }
                EntryType::File => {
                    let _ = std::fs::remove_file(&p);
                    let mut f = std::fs::File::create(&p).at(&p)?;
                    if let Some(c) = &e.content {
                        self.write_content(c, &mut f, progress)?;
                    }
                    apply_owner(&p, e, false)?;
                    f.set_permissions(std::fs::Permissions::from_mode(e.mode))
                        .at(&p)?;
                    f.set_modified(mtime(e)).at(&p)?;
                }
                EntryType::Symlink => {
                    let _ = std::fs::remove_file(&p);
                    let t = e.target.as_deref().unwrap_or_default();
                    std::os::unix::fs::symlink(t, &p).at(&p)?;
                    apply_owner(&p, e, true)?;
                }
            }
        }
        // Directories last, deepest first, so writing their contents does not reset their times.
        for (p, e) in dirs.iter().rev() {
            apply_owner(p, e, false)?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(e.mode)).at(p)?;
            std::fs::File::open(p)
                .and_then(|f| f.set_modified(mtime(e)))
                .at(p)?;
        }
        Ok(())
    }
}

fn mtime(e: &TreeEntry) -> std::time::SystemTime {
    let base = std::time::UNIX_EPOCH;
    if e.mtime >= 0 {
        base + std::time::Duration::new(e.mtime as u64, e.mtime_nsec)
    } else {
        base - std::time::Duration::from_secs(e.mtime.unsigned_abs())
    }
}

/// Owners are restored when running as root; otherwise files belong to whoever restores them.
fn apply_owner(p: &Path, e: &TreeEntry, link: bool) -> Result<()> {
    let r = if link {
        std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid))
    } else {
        std::os::unix::fs::chown(p, Some(e.uid), Some(e.gid))
    };
    match r {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(err) => Err(err).at(p),
    }
}

/// A relative path with no `..`, root or prefix components, so a manifest cannot write outside
/// the target directory.
fn safe_relative(p: &str) -> Result<PathBuf> {
    let path = Path::new(p.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return Err(Error::Invalid(format!("unsafe path {p:?} in snapshot"))),
        }
    }
    if out.as_os_str().is_empty() {
        out.push("root");
    }
    Ok(out)
}
