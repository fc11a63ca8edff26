//! Reading snapshots back: `dump` (one item to a writer) and `restore` (items into a directory).
//!
//! Content is read by a small pipeline: one thread walks the chunk list (loading stored lists as it
//! goes, so memory stays bounded) and reads each sealed blob from its pack; worker threads decrypt,
//! decompress and verify every chunk against its id; the caller writes the chunks in order. An
//! ordered hand-off (one single-slot reply channel per chunk, queued in stream order) keeps the
//! output sequential while the workers run in parallel.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::backend::{Backend, PositionalRead};
use crate::blob;
use crate::cache::{ChunkCache, SharedCache};
use crate::crypto::Keys;
use crate::error::{corrupt, Error, IoContext, Result};
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::pack::pack_path;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{parse_records, ChunkRef, ContentRef, EntryType, Item, ItemKind, Snapshot, TreeEntry};

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
pub(crate) struct BlobReader {
    backend: Arc<dyn Backend>,
    keys: Keys,
    pub(crate) index: Index,
    open: RefCell<Vec<(PackId, Box<dyn PositionalRead>)>>,
    cache: SharedCache,
}

/// A delta's zstd prefix: one base shared from the cache, or several concatenated.
pub(crate) enum Prefix {
    One(Arc<Vec<u8>>),
    Many(Vec<u8>),
}

impl Prefix {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Prefix::One(a) => a,
            Prefix::Many(v) => v,
        }
    }
}

/// Deepest delta chain a reader follows; deeper (or cyclic) chains are reported as damage. The
/// writer's own bound (`DeltaConfig::max_depth`) is far below it.
const MAX_CHAIN: usize = 64;
/// Decoded chunks kept for reuse as bases, per restore or backup (shared by its workers). Chains
/// of neighbouring deltas share ancestors a few chunks wide per level, so 16 MiB holds them with
/// room to spare at the default chain depth and chunk size.
pub(crate) const CACHE_BYTES: usize = 16 << 20;
/// Cache of a reader that mostly walks chunk lists (metadata) rather than decoding content.
const LIST_CACHE_BYTES: usize = 4 << 20;

impl BlobReader {
    /// A reader with a small cache of its own, for walking chunk lists and tree listings.
    pub(crate) fn new(repo: &Repository, index: Index) -> Self {
        Self::with_cache(repo, index, ChunkCache::shared(LIST_CACHE_BYTES))
    }

    pub(crate) fn with_cache(repo: &Repository, index: Index, cache: SharedCache) -> Self {
        Self {
            backend: repo.backend.clone(),
            keys: repo.keys.clone(),
            index,
            open: RefCell::new(Vec::new()),
            cache,
        }
    }

    /// The first copy of a blob that authenticates: a damaged copy is passed over for another
    /// (a backup after `cairn check` found damage stores the chunk again).
    fn open_any_copy(&self, id: &ChunkId) -> Result<blob::Opened> {
        let mut first_err = None;
        for loc in self.index.locations(id)? {
            let r = self
                .read_sealed_at(id, &loc)
                .and_then(|sealed| blob::open_blob(&self.keys, id, &sealed));
            match r {
                Ok(o) => return Ok(o),
                Err(e @ (Error::MissingPack { .. } | Error::Corrupt { .. })) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err.unwrap_or(Error::MissingBlob { id: *id }))
    }

    fn read_sealed_at(&self, id: &ChunkId, loc: &crate::index::BlobLocation) -> Result<Vec<u8>> {
        let mut open = self.open.borrow_mut();
        let pos = match open.iter().position(|(p, _)| *p == loc.pack) {
            Some(i) => i,
            None => {
                let f = self.backend.open_reader(&pack_path(&loc.pack)).map_err(|e| match e {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
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
        open[pos].1.read_exact_at(&mut buf, loc.offset as u64).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt(
                    format!("pack {}", loc.pack),
                    format!("truncated: blob {id} lies beyond its end"),
                )
            } else {
                Error::Io {
                    path: self.backend.location().join(pack_path(&loc.pack)),
                    source: e,
                }
            }
        })?;
        Ok(buf)
    }

    /// A blob's verified plaintext.
    pub(crate) fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        Ok(Arc::unwrap_or_clone(self.read_shared(id)?))
    }

    /// A blob's verified plaintext, resolving deltas through their bases (cached for reuse).
    pub(crate) fn read_shared(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        let (data, verified) = self.read_level(id, 0, false)?;
        if !verified {
            if self.keys.chunk_id(&data) != *id {
                // Intermediate bases are not hashed on the fast path: decode again verifying
                // every level, so the error names the blob that is really damaged.
                // The cache may hold the bad base: empty it (a rare path) before decoding again.
                self.cache.lock().unwrap().clear();
                return self.read_level(id, 0, true).map(|(d, _)| d);
            }
            self.cache.lock().unwrap().mark_verified(id);
        }
        Ok(data)
    }

    /// Decodes a blob; returns its plaintext and whether that was verified against its id. The
    /// top level (`level` 0) is always verified when decoded here; bases only with `verify_all`.
    fn read_level(&self, id: &ChunkId, level: usize, verify_all: bool) -> Result<(Arc<Vec<u8>>, bool)> {
        if !verify_all {
            if let Some(hit) = self.cache.lock().unwrap().get(id) {
                return Ok(hit);
            }
        }
        if level > MAX_CHAIN {
            return Err(corrupt(format!("blob {id}"), "delta chain too deep (or cyclic)"));
        }
        let opened = self.open_any_copy(id)?;
        let prefix = self.bases_prefix(id, &opened.bases, level + 1, verify_all)?;
        let verify = verify_all || level == 0;
        let data = Arc::new(if verify {
            opened.finish(&self.keys, id, prefix.as_slice())?
        } else {
            opened.finish_unverified(id, prefix.as_slice())?
        });
        self.cache.lock().unwrap().insert(*id, data.clone(), verify);
        Ok((data, verify))
    }

    /// The plaintexts of a delta's bases, concatenated: the zstd prefix it was encoded against.
    /// An unreadable base is reported as damage to `of`, the delta that needs it.
    pub(crate) fn prefix_for(&self, of: &ChunkId, bases: &[ChunkId]) -> Result<Prefix> {
        self.bases_prefix(of, bases, 1, false)
    }

    fn bases_prefix(&self, of: &ChunkId, bases: &[ChunkId], level: usize, verify_all: bool) -> Result<Prefix> {
        let read = |b: &ChunkId| {
            self.read_level(b, level, verify_all)
                .map(|(d, _)| d)
                .map_err(|e| match e {
                    Error::Corrupt { what, reason } => corrupt(
                        format!("blob {of}"),
                        format!("its delta base is unreadable: {what}: {reason}"),
                    ),
                    Error::MissingBlob { id: missing } => {
                        corrupt(format!("blob {of}"), format!("its delta base {missing} is missing"))
                    }
                    e => e,
                })
        };
        match bases {
            [] => Ok(Prefix::Many(Vec::new())),
            [one] => Ok(Prefix::One(read(one)?)),
            many => {
                let mut prefix = Vec::new();
                for b in many {
                    prefix.extend_from_slice(&read(b)?);
                }
                Ok(Prefix::Many(prefix))
            }
        }
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
        self.walk(&content.chunks, content.depth as usize, &mut carries, on_meta, f)?;
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

/// Bytes of content per restore work unit.
const SEGMENT_BYTES: u64 = 2 << 20;

fn decode_segment(br: &BlobReader, segment: &[ChunkRef]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(segment.iter().map(|r| r.1 as usize).sum());
    for r in segment {
        let d = br.read_shared(&r.0)?;
        if d.len() != r.1 as usize {
            return Err(corrupt(format!("blob {}", r.0), "length differs from the chunk list"));
        }
        out.extend_from_slice(&d);
    }
    Ok(out)
}

impl Repository {
    /// Writes one content to `out`, verifying every chunk.
    ///
    /// Workers decode *segments* (runs of consecutive chunks, about [`SEGMENT_BYTES`]) rather than
    /// single chunks, in order within a segment, so the ancestors that neighbouring deltas share
    /// are decoded once and found in the shared cache. Memory: segments in flight (two per
    /// worker) plus the cache.
    pub(crate) fn write_content(
        &self,
        content: &ContentRef,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<()> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let cache = ChunkCache::shared(CACHE_BYTES);
        let (job_tx, job_rx) = bounded::<(Vec<ChunkRef>, Sender<Result<Vec<u8>>>)>(n);
        let (order_tx, order_rx) = bounded::<Reply>(n);
        std::thread::scope(|s| -> Result<()> {
            for _ in 0..n {
                let (rx, cache) = (job_rx.clone(), cache.clone());
                s.spawn(move || {
                    let reader = self.index_no_sync().map(|idx| BlobReader::with_cache(self, idx, cache));
                    for (segment, reply) in rx {
                        let r = match &reader {
                            Ok(br) => decode_segment(br, &segment),
                            Err(e) => Err(Error::Restore(format!("cannot open the index cache: {e}"))),
                        };
                        let _ = reply.send(r);
                    }
                });
            }
            drop(job_rx);
            let producer = s.spawn(move || -> Result<()> {
                let br = BlobReader::new(self, self.index_no_sync()?);
                let mut segment = Vec::new();
                let mut bytes = 0u64;
                let send = |segment: Vec<ChunkRef>| -> Result<()> {
                    let (reply_tx, reply_rx) = bounded(1);
                    if order_tx.send(reply_rx).is_err() || job_tx.send((segment, reply_tx)).is_err() {
                        return Err(Error::Restore("its writer stopped".into()));
                    }
                    Ok(())
                };
                br.for_each_leaf(content, &mut |_| {}, &mut |r| {
                    bytes += r.1 as u64;
                    segment.push(r);
                    if bytes >= SEGMENT_BYTES {
                        bytes = 0;
                        send(std::mem::take(&mut segment))?;
                    }
                    Ok(())
                })?;
                if !segment.is_empty() {
                    send(segment)?;
                }
                Ok(())
            });
            let mut written = 0u64;
            let mut result = Ok(());
            for reply in order_rx.iter() {
                let data = match reply.recv() {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    Err(_) => {
                        result = Err(Error::Restore("a worker thread stopped".into()));
                        break;
                    }
                };
                if let Err(e) = out.write_all(&data) {
                    result = Err(Error::Io {
                        path: "output".into(),
                        source: e,
                    });
                    break;
                }
                written += data.len() as u64;
                progress.advance(data.len() as u64);
            }
            drop(order_rx);
            let read_result = producer
                .join()
                .unwrap_or_else(|_| Err(Error::Restore("its reader thread panicked".into())));
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
    /// Every chunk list an item reads: a stream's content, or a tree's listing and each of its
    /// files' contents. When the listing cannot be read, returns what was found with the error.
    pub(crate) fn item_contents(&self, item: &Item) -> std::result::Result<Vec<ContentRef>, (Vec<ContentRef>, Error)> {
        match &item.kind {
            ItemKind::Stream { content } => Ok(vec![content.clone()]),
            ItemKind::Tree { listing, .. } => {
                let mut out = vec![listing.clone()];
                match self.tree_entries(listing) {
                    Ok(entries) => {
                        out.extend(entries.into_iter().filter_map(|e| e.content));
                        Ok(out)
                    }
                    Err(e) => Err((out, e)),
                }
            }
        }
    }

    pub fn restorable_snapshot(&self, name: &str) -> Result<Snapshot> {
        let snap = self.snapshot(name)?;
        if let crate::snapshot::Status::Failed { reason } = &snap.status {
            return Err(Error::FailedSnapshot {
                name: snap.name.clone(),
                reason: reason.clone(),
            });
        }
        Ok(snap)
    }

    /// Writes one item of a snapshot to `out`: a stream, or a tree that is a single file.
    pub fn dump(&self, snapshot: &str, item: &str, out: &mut dyn Write, progress: &dyn Progress) -> Result<u64> {
        let _lock = self.read_lock(&format!("dump {snapshot}"))?;
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
        let _lock = self.read_lock(&format!("restore {snapshot}"))?;
        let snap = self.restorable_snapshot(snapshot)?;
        for name in &opts.items {
            if snap.item(name).is_none() {
                return Err(Error::UnknownItem(snapshot.into(), name.clone()));
            }
        }
        if target.exists() && !opts.force && std::fs::read_dir(target).at(target)?.next().is_some() {
            return Err(Error::TargetNotEmpty(target.into()));
        }
        let target_fd = crate::restore_tree::open_trusted_dir(target)?;
        drop(self.index()?);
        let chosen: Vec<Item> = snap
            .items
            .iter()
            .filter(|i| opts.items.is_empty() || opts.items.contains(&i.name))
            .cloned()
            .collect();
        progress.start("restore", Some(chosen.iter().map(|i| i.size).sum()));
        for item in &chosen {
            let comps = crate::restore_tree::components(item.name.as_bytes())?;
            let (name, parents) = comps
                .split_last()
                .ok_or_else(|| Error::Invalid("an item without a name".into()))?;
            let dest = target.join(&item.name);
            let parent = crate::restore_tree::open_dir(target_fd.as_fd(), parents).map_err(|e| Error::Io {
                path: dest.clone(),
                source: e.into(),
            })?;
            self.place_item(&item.kind, parent.as_fd(), name, &dest, progress)?;
        }
        progress.finish();
        Ok(chosen)
    }

    /// Restores one item to exactly `dest`: a tree's root directory (or single file), or a
    /// stream's file. Unless `overwrite`, `dest` must be absent or an empty directory; with it,
    /// entries of the item replace what is there and other files are left alone.
    pub fn restore_item_to(
        &self,
        snapshot: &str,
        item: &str,
        dest: &Path,
        overwrite: bool,
        progress: &dyn Progress,
    ) -> Result<Item> {
        let _lock = self.read_lock(&format!("restore {snapshot}"))?;
        let snap = self.restorable_snapshot(snapshot)?;
        let it = snap
            .item(item)
            .ok_or_else(|| Error::UnknownItem(snapshot.into(), item.into()))?
            .clone();
        if !overwrite && dest.is_dir() && std::fs::read_dir(dest).at(dest)?.next().is_some() {
            return Err(Error::TargetNotEmpty(dest.into()));
        }
        if !overwrite && dest.is_file() {
            return Err(Error::TargetNotEmpty(dest.into()));
        }
        drop(self.index()?);
        progress.start(&format!("restore {item}"), Some(it.size));
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file or directory name", dest.display())))?;
        let parent = crate::restore_tree::open_trusted_dir(dest.parent().unwrap_or(Path::new(".")))?;
        self.place_item(&it.kind, parent.as_fd(), name, dest, progress)?;
        progress.finish();
        Ok(it)
    }
}
