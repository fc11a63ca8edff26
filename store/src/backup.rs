//! Backing up: streams and file trees in, one snapshot out.
//!
//! The pipeline (threads joined by bounded channels):
//!
//! ```text
//! caller thread            worker threads (one per core)        packer         publisher
//! read -> chunk -> hash -> compress -> seal -> decode & verify -> append to pack -> fsync, rename, index
//!         -> dedup check --(jobs: 2 per worker)-->              --(blobs: 2 per worker)--> --(1 pack)-->
//! ```
//!
//! Duplicates are dropped in the caller thread, before the costly stages: a chunk whose id is in
//! the index, or already on its way through this pipeline (`pending`), is only referenced. Each
//! channel holds two items per worker: enough that no worker waits for input while the caller
//! chunks, small enough that memory stays at a few times the maximum chunk size per worker.
//!
//! # Crash safety
//! The order of durable writes is what makes a backup killed at any moment harmless:
//! 1. Blobs are appended to a pack under `tmp/`. A crash here leaves only a temp file, which no
//!    reader looks at and the next backup on this host deletes.
//! 2. A full pack gets its trailer, is fsynced, renamed to `packs/xx/<id>` and its directory
//!    fsynced. From now on the pack is self-describing: any later `Index::sync` finds it.
//! 3. The pack's blobs are recorded in the index cache, and only then leave `pending`. A crash
//!    between 2 and 3 is repaired by the next sync, which reads the pack's trailer.
//! 4. At commit, the pipeline is drained: every blob the snapshot references is in a published
//!    pack (steps 2-3 done for all of them).
//! 5. Only then is the manifest written, atomically and under a name that must not exist yet.
//!    Without step 5 there is no snapshot, and the packs of steps 2-3 are reused by the next run.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::backend::Backend;
use crate::blob::{BlobKind, Encoder};
use crate::cache::ChunkCache;
use crate::chunker::Chunker;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::lock::{LockGuard, LockMode};
use crate::pack::{pack_path, Copier, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{BlobReader, CACHE_BYTES};
use crate::snapshot::{
    encode_record, ChunkRef, ContentRef, EntryType, Item, ItemKind, Snapshot, Stats, Status, TreeEntry, INLINE_MAX,
    LIST_RECORD, MANIFEST_VERSION,
};
use crate::trust::Trust;
use crate::util::{format_rfc3339, now_unix};

/// Options for one backup run.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Snapshot name; default: the start time as `YYYY-MM-DDTHH:MM:SSZ`.
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Recorded host; default: this host's name.
    pub host: Option<String>,
}

/// Checks a snapshot or item name.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} {name:?} must be 1-255 characters without control characters"
        )));
    }
    Ok(())
}

/// Checks an item name: a snapshot name's rules, and a relative `/`-separated path without
/// empty, `.` or `..` parts, so that no item can be restored outside its target.
pub fn validate_item_name(name: &str) -> Result<()> {
    validate_name("item name", name)?;
    // The rule a restore applies to every stored path, applied before anything is stored.
    crate::restore_tree::components(name.as_bytes()).map_err(|_| {
        Error::Invalid(format!(
            "item name {name:?} must be a relative path without empty, \".\" or \"..\" parts"
        ))
    })?;
    Ok(())
}

#[derive(Default)]
struct Counters {
    chunks: AtomicU64,
    chunks_new: AtomicU64,
    chunks_delta: AtomicU64,
    bytes_new: AtomicU64,
    bytes_added: AtomicU64,
}

impl Counters {
    fn stats(&self) -> Stats {
        Stats {
            chunks: self.chunks.load(Relaxed),
            chunks_new: self.chunks_new.load(Relaxed),
            chunks_delta: self.chunks_delta.load(Relaxed),
            bytes_new: self.bytes_new.load(Relaxed),
            bytes_added: self.bytes_added.load(Relaxed),
        }
    }
}

struct Job {
    id: ChunkId,
    kind: BlobKind,
    data: Vec<u8>,
    /// Chunks of the previous version to try as delta bases (empty: store whole).
    bases: Vec<ChunkId>,
    /// Chain depth a delta against `bases` would have.
    depth: u8,
    counters: Arc<Counters>,
}

struct Encoded {
    id: ChunkId,
    kind: BlobKind,
    raw_len: u32,
    sealed: Vec<u8>,
    bases: Vec<ChunkId>,
    depth: u8,
    counters: Arc<Counters>,
}

type Failure = Arc<Mutex<Option<Error>>>;

fn fail(failure: &Failure, e: Error) {
    let mut f = failure.lock().unwrap();
    if f.is_none() {
        *f = Some(e);
    }
}

struct Pipeline {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<()>>,
    pending: Arc<Mutex<HashSet<ChunkId>>>,
    failure: Failure,
    /// The message of the failure an item already reported.
    reported: Mutex<Option<String>>,
}

impl Pipeline {
    fn start(repo: &Repository, index: Index, trust: Arc<Trust>) -> Pipeline {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let (tx, job_rx) = bounded::<Job>(2 * n);
        let (blob_tx, blob_rx) = bounded::<Encoded>(2 * n);
        let failure: Failure = Arc::default();
        let pending: Arc<Mutex<HashSet<ChunkId>>> = Arc::default();
        let cache = ChunkCache::shared(CACHE_BYTES);
        let workers = (0..n)
            .map(|_| {
                let (rx, out, keys, failure) = (job_rx.clone(), blob_tx.clone(), repo.keys.clone(), failure.clone());
                let enc = Encoder::with_delta_level(repo.config.compression_level, repo.config.delta.level);
                // Each worker reads delta bases through its own index connection; decoded bases
                // are shared through one cache, since neighbouring chunks share bases.
                let reader = index
                    .reopen()
                    .map(|idx| BlobReader::with_cache(repo, idx, cache.clone()));
                std::thread::spawn(move || worker(rx, out, keys, enc, reader, failure))
            })
            .collect();
        drop(blob_tx);
        let (backend, keys, failure2, pending2) = (
            repo.backend.clone(),
            repo.keys.clone(),
            failure.clone(),
            pending.clone(),
        );
        let pack_size = repo.config.pack_size;
        let packer = std::thread::spawn(move || {
            let published = Published {
                index,
                pending: pending2,
                trust,
            };
            if let Err(e) = packer(blob_rx, backend.as_ref(), &keys, published, pack_size, &failure2) {
                fail(&failure2, e);
            }
        });
        Pipeline {
            tx: Some(tx),
            workers,
            packer: Some(packer),
            pending,
            failure,
            reported: Mutex::default(),
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().unwrap().is_some()
    }

    /// The error that stopped the pipeline. The first caller gets it; later callers (other
    /// items of the same backup) get its message, never a bare "stopped".
    fn take_failure(&self) -> Option<Error> {
        let mut reported = self.reported.lock().unwrap();
        if let Some(e) = self.failure.lock().unwrap().take() {
            *reported = Some(e.to_string());
            return Some(e);
        }
        reported
            .as_ref()
            .map(|m| Error::Pipeline(format!("after an earlier error: {m}")))
    }

    /// Waits until every submitted blob is in a published, indexed pack (crash-safety step 4).
    fn finish(&mut self) -> Result<()> {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.packer.take() {
            if p.join().is_err() {
                fail(&self.failure, Error::Pipeline("the packer thread panicked".into()));
            }
        }
        // Only an error no item has reported yet: a failed snapshot may still be committed.
        match self.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn worker(
    rx: Receiver<Job>,
    out: Sender<Encoded>,
    keys: Keys,
    mut enc: Encoder,
    reader: Result<BlobReader>,
    failure: Failure,
) {
    for job in rx {
        let raw_len = job.data.len() as u32;
        // A delta must be well under what the chunk costs whole (about half its size for dumps)
        // to be worth the reads it adds; otherwise, or if a base cannot be read, store it whole.
        let delta = match (&reader, job.bases.is_empty()) {
            (Ok(r), false) => delta_for(&mut enc, &keys, r, &job).unwrap_or(None),
            _ => None,
        };
        let (kind, sealed, bases, depth) = match delta {
            Some(sealed) => {
                job.counters.chunks_delta.fetch_add(1, Relaxed);
                (BlobKind::Delta, sealed, job.bases, job.depth)
            }
            None => match enc.encode(&keys, &job.id, job.kind, &job.data) {
                Ok(sealed) => (job.kind, sealed, Vec::new(), 0),
                Err(e) => return fail(&failure, e),
            },
        };
        let encoded = Encoded {
            id: job.id,
            kind,
            raw_len,
            sealed,
            bases,
            depth,
            counters: job.counters,
        };
        if out.send(encoded).is_err() {
            return;
        }
    }
}

/// The sealed delta for a job, if it is small enough. Errors reading a base are not fatal: the
/// chunk is then stored whole (a chunk is only as good as its base).
fn delta_for(enc: &mut Encoder, keys: &Keys, reader: &BlobReader, job: &Job) -> Result<Option<Vec<u8>>> {
    let prefix = reader.prefix_for(&job.id, &job.bases)?;
    enc.encode_delta(
        keys,
        &job.id,
        &job.data,
        &job.bases,
        prefix.as_slice(),
        job.data.len() / 4,
    )
}

/// Where the publisher records a published pack.
struct Published {
    index: Index,
    pending: Arc<Mutex<HashSet<ChunkId>>>,
    trust: Arc<Trust>,
}

fn packer(
    rx: Receiver<Encoded>,
    backend: &dyn Backend,
    keys: &Keys,
    published: Published,
    pack_size: u64,
    failure: &Failure,
) -> Result<()> {
    // Publishing (trailer, fsync, rename, index) runs in its own thread so an fsync never stalls
    // the workers; one pack may wait for it while the next one fills.
    let (pub_tx, pub_rx) = bounded::<PackWriter>(1);
    let keys2 = keys.clone();
    let failure2 = failure.clone();
    let publisher = std::thread::spawn(move || {
        let Published {
            mut index,
            pending,
            trust,
        } = published;
        for w in pub_rx {
            // Crash-safety steps 2 and 3: publish the pack, index it, then stop treating its
            // blobs as pending.
            let r = w.finish(&keys2).and_then(|fin| {
                index.add_pack(&fin)?;
                trust.wrote(fin.id);
                let mut p = pending.lock().unwrap();
                for e in &fin.entries {
                    p.remove(&e.id);
                }
                Ok(())
            });
            if let Err(e) = r {
                fail(&failure2, e);
                return;
            }
        }
    });
    let mut writer: Option<PackWriter> = None;
    let mut result = Ok(());
    for blob in rx {
        if writer.is_none() {
            match PackWriter::new(backend) {
                Ok(w) => writer = Some(w),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let w = writer.as_mut().unwrap();
        if let Err(e) = w.add(blob.id, blob.kind, blob.raw_len, &blob.sealed, &blob.bases, blob.depth) {
            result = Err(e);
            break;
        }
        blob.counters.bytes_added.fetch_add(blob.sealed.len() as u64, Relaxed);
        if w.len() >= pack_size && pub_tx.send(writer.take().unwrap()).is_err() {
            break;
        }
    }
    if result.is_ok() {
        if let Some(w) = writer.filter(|w| !w.is_empty()) {
            let _ = pub_tx.send(w);
        }
    }
    drop(pub_tx);
    if publisher.join().is_err() {
        fail(failure, Error::Pipeline("the publisher thread panicked".into()));
    }
    result
}

/// Hands chunks to the pipeline, dropping duplicates first.
struct Sink<'a> {
    keys: &'a Keys,
    delta: &'a crate::config::DeltaConfig,
    /// Bytes of data stored so far in this item (the offset of the next chunk).
    offset: u64,
    prev: Option<PrevTracker>,
    index: &'a Index,
    trust: &'a Trust,
    pipeline: &'a Pipeline,
    chunker: &'a Chunker,
    counters: Arc<Counters>,
    progress: &'a dyn Progress,
}

impl Sink<'_> {
    fn store(&mut self, kind: BlobKind, data: &[u8]) -> Result<ChunkRef> {
        if self.pipeline.failed() {
            return Err(Error::Pipeline("after an earlier error".into()));
        }
        let id = self.keys.chunk_id(data);
        self.counters.chunks.fetch_add(1, Relaxed);
        let offset = self.offset;
        if kind == BlobKind::Data {
            self.progress.advance(data.len() as u64);
            self.offset += data.len() as u64;
        }
        // `pending` is checked before the index: the packer indexes a pack before removing its
        // blobs from `pending`, so a blob is always in at least one of the two. The index is
        // only believed for packs the repository confirms (`trust.rs`).
        let is_new = !self.pipeline.pending.lock().unwrap().contains(&id)
            && self.trust.resolve(self.index, &id)?.is_none()
            && self.pipeline.pending.lock().unwrap().insert(id);
        if is_new {
            self.counters.chunks_new.fetch_add(1, Relaxed);
            self.counters.bytes_new.fetch_add(data.len() as u64, Relaxed);
            let candidates = match (&mut self.prev, kind) {
                (Some(prev), BlobKind::Data) => prev.observe(offset, data.len() as u32, &id, false),
                _ => Vec::new(),
            };
            let (bases, depth) = self.choose_bases(candidates, &id)?;
            let job = Job {
                id,
                kind,
                data: data.to_vec(),
                bases,
                depth,
                counters: self.counters.clone(),
            };
            let tx = self.pipeline.tx.as_ref().expect("pipeline open while backing up");
            if tx.send(job).is_err() {
                return Err(Error::Pipeline("its workers stopped".into()));
            }
        } else if let (Some(prev), BlobKind::Data) = (&mut self.prev, kind) {
            prev.observe(offset, data.len() as u32, &id, true);
        }
        Ok(ChunkRef(id, data.len() as u32))
    }

    /// Keeps the candidate bases that exist, if the chain they make stays within this chunk's
    /// depth limit; returns the bases and the delta's depth.
    fn choose_bases(&self, candidates: Vec<ChunkId>, id: &ChunkId) -> Result<(Vec<ChunkId>, u8)> {
        let max = self.delta.max_depth;
        let limit = max - id.0[0] % (max / 2 + 1);
        let mut depth = 0u8;
        for b in &candidates {
            match self.trust.resolve(self.index, b)? {
                Some(loc) => depth = depth.max(loc.depth),
                None => return Ok((Vec::new(), 0)),
            }
        }
        if candidates.is_empty() || depth + 1 > limit {
            return Ok((Vec::new(), 0));
        }
        Ok((candidates, depth + 1))
    }
}

/// Follows the previous version of a stream alongside the new one, to name delta bases: the
/// previous chunks that overlap a new chunk's byte range. Exact duplicates re-anchor the two
/// streams (an insertion shifts everything after it), so the overlap is taken in the previous
/// version's coordinates. The previous chunk list is read by a thread into a bounded channel, and
/// only a window of it (about [`PREV_LOOKAHEAD`] bytes ahead) is held.
struct PrevTracker {
    rx: Receiver<(u64, ChunkRef)>,
    window: std::collections::VecDeque<(u64, ChunkRef)>,
    /// Previous offset minus new offset, learned from the last duplicate found in the window.
    shift: i64,
    eof: bool,
}

const PREV_LOOKAHEAD: u64 = 8 << 20;

impl PrevTracker {
    fn start(repo: &Repository, index: &Index, content: ContentRef) -> Result<Self> {
        let reader = BlobReader::new(repo, index.reopen()?);
        let (tx, rx) = bounded(1024);
        std::thread::spawn(move || {
            let mut off = 0u64;
            // Ends early (with an error nobody needs) once the tracker is dropped.
            let _ = reader.for_each_leaf(&content, &mut |_| {}, &mut |r| {
                let o = off;
                off += r.1 as u64;
                tx.send((o, r)).map_err(|_| Error::Pipeline("tracker gone".into()))
            });
        });
        Ok(Self {
            rx,
            window: Default::default(),
            shift: 0,
            eof: false,
        })
    }

    fn fill(&mut self, until: u64) {
        while !self.eof
            && self
                .window
                .back()
                .is_none_or(|(o, r)| o + r.1 as u64 <= until + PREV_LOOKAHEAD)
        {
            match self.rx.recv() {
                Ok(e) => self.window.push_back(e),
                Err(_) => self.eof = true,
            }
        }
    }

    /// Reports a chunk of the new stream at `start`; returns delta base candidates for a new one.
    fn observe(&mut self, start: u64, len: u32, id: &ChunkId, duplicate: bool) -> Vec<ChunkId> {
        let ps = (start as i64 + self.shift).max(0) as u64;
        let pe = ps + len as u64;
        self.fill(pe);
        if duplicate {
            if let Some(i) = self.window.iter().position(|(_, r)| r.0 == *id) {
                self.shift = self.window[i].0 as i64 - start as i64;
                self.window.drain(..=i);
            }
            return Vec::new();
        }
        while self.window.front().is_some_and(|(o, r)| o + r.1 as u64 <= ps) {
            self.window.pop_front();
        }
        self.window
            .iter()
            .take_while(|(o, _)| *o < pe)
            .map(|(_, r)| r.0)
            .take(crate::blob::MAX_BASES - 1)
            .collect()
    }
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

/// Builds a chunk list as chunks arrive, spilling it into a stored `Meta` stream once it outgrows
/// [`INLINE_MAX`], so memory stays bounded however long the content is.
#[derive(Default)]
struct RefList {
    first: Vec<ChunkRef>,
    upper: Option<Box<MetaWriter>>,
}

impl RefList {
    fn push(&mut self, r: ChunkRef, sink: &mut Sink) -> Result<()> {
        if let Some(u) = &mut self.upper {
            let mut rec = Vec::with_capacity(LIST_RECORD);
            encode_record(&r, &mut rec);
            return u.write(&rec, sink);
        }
        if self.first.len() < INLINE_MAX {
            self.first.push(r);
            return Ok(());
        }
        let mut u = Box::<MetaWriter>::default();
        let mut rec = Vec::with_capacity(LIST_RECORD * (INLINE_MAX + 1));
        for f in self.first.drain(..).chain(std::iter::once(r)) {
            encode_record(&f, &mut rec);
        }
        u.write(&rec, sink)?;
        self.upper = Some(u);
        Ok(())
    }

    fn finish(self, size: u64, sink: &mut Sink) -> Result<ContentRef> {
        match self.upper {
            None => Ok(ContentRef {
                size,
                depth: 0,
                chunks: self.first,
            }),
            Some(u) => {
                let inner = u.finish(sink)?;
                Ok(ContentRef {
                    size,
                    depth: inner.depth + 1,
                    chunks: inner.chunks,
                })
            }
        }
    }
}

/// A stream of metadata bytes, chunked and stored as `Meta` blobs as it is written.
#[derive(Default)]
struct MetaWriter {
    buf: Vec<u8>,
    size: u64,
    refs: RefList,
}

impl MetaWriter {
    fn write(&mut self, data: &[u8], sink: &mut Sink) -> Result<()> {
        self.buf.extend_from_slice(data);
        self.size += data.len() as u64;
        let max = sink.chunker.params().max as usize;
        while self.buf.len() >= max {
            self.cut_one(sink)?;
        }
        Ok(())
    }

    fn cut_one(&mut self, sink: &mut Sink) -> Result<()> {
        let n = sink.chunker.cut(&self.buf);
        let r = sink.store(BlobKind::Meta, &self.buf[..n])?;
        self.refs.push(r, sink)?;
        self.buf.drain(..n);
        Ok(())
    }

    fn finish(mut self, sink: &mut Sink) -> Result<ContentRef> {
        while !self.buf.is_empty() {
            self.cut_one(sink)?;
        }
        self.refs.finish(self.size, sink)
    }
}

/// A backup in progress. Add items, then [`Backup::commit`]. Dropped without commit, it leaves
/// no snapshot; the packs it wrote are reused by the next backup.
///
/// Items may be added from several threads at once (a system snapshot streams every database's
/// dump concurrently): each item chunks in its caller's thread with its own index connection,
/// and all of them feed the one compress/pack pipeline.
pub struct Backup {
    repo: Repository,
    _lock: LockGuard,
    /// Used only to open one connection per item.
    index: Mutex<Index>,
    pipeline: Pipeline,
    chunker: Chunker,
    name: String,
    opts: BackupOptions,
    time: i64,
    started: Instant,
    items: Mutex<Vec<(Item, Arc<Counters>)>>,
    /// Names of items being added right now.
    in_flight: Mutex<HashSet<String>>,
    /// Item name -> content of its newest complete version (loaded on first use).
    previous: Mutex<Option<std::collections::HashMap<String, ContentRef>>>,
    warnings: Arc<Mutex<Vec<String>>>,
    trust: Arc<Trust>,
    progress: Arc<dyn Progress>,
}

impl Repository {
    /// Starts a backup: takes a shared lock, syncs the index and starts the pipeline.
    pub fn backup(&self, opts: BackupOptions, progress: Arc<dyn Progress>) -> Result<Backup> {
        let time = now_unix();
        let name = opts.name.clone().unwrap_or_else(|| format_rfc3339(time));
        validate_name("snapshot name", &name)?;
        for t in &opts.tags {
            validate_name("tag", t)?;
        }
        // A name held only by a failed snapshot may be taken again (the failed one is replaced
        // at commit); a complete snapshot's name never.
        self.held_by_failed(&name)?;
        let lock = self.lock(LockMode::Backup, &format!("backup {name}"))?;
        self.local.clean_stale_temp()?;
        // Markers after the lock: a marker written later records this backup's lock.
        let marked = crate::deletion::marked_set(self.backend.as_ref(), &self.keys)?;
        let index = self.index()?;
        let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
        let trust = Arc::new(Trust::new(
            self.backend.clone(),
            self.keys.clone(),
            marked,
            crate::trust::load_damage(&self.opts.cache_dir, &self.config.repo_id),
            index.reopen()?,
            warnings.clone(),
        ));
        let pipeline = Pipeline::start(self, index.reopen()?, trust.clone());
        Ok(Backup {
            repo: self.clone(),
            _lock: lock,
            index: Mutex::new(index),
            pipeline,
            chunker: Chunker::new(self.config.chunker, self.keys.chunker_key()),
            name,
            opts,
            time,
            started: Instant::now(),
            items: Mutex::default(),
            in_flight: Mutex::default(),
            previous: Mutex::default(),
            warnings,
            trust,
            progress,
        })
    }
}

/// Marks an item name as in flight until dropped.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.name);
    }
}

impl Backup {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Warnings so far (an empty command output, say).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap().clone()
    }

    /// Adds a warning to report with the snapshot.
    pub fn warn(&self, warning: String) {
        self.warnings.lock().unwrap().push(warning);
    }

    fn begin_item(&self, name: &str) -> Result<(Arc<Counters>, InFlight<'_>, Index)> {
        validate_item_name(name)?;
        let twice = || Error::Invalid(format!("item name {name:?} is used twice in this snapshot"));
        if self.items.lock().unwrap().iter().any(|(i, _)| i.name == name) {
            return Err(twice());
        }
        if !self.in_flight.lock().unwrap().insert(name.to_string()) {
            return Err(twice());
        }
        let guard = InFlight {
            set: &self.in_flight,
            name: name.to_string(),
        };
        let index = self.index.lock().unwrap().reopen()?;
        Ok((Arc::default(), guard, index))
    }

    fn finish_item(&self, item: Item, counters: Arc<Counters>) -> Item {
        self.items.lock().unwrap().push((item.clone(), counters));
        item
    }

    fn sink<'a>(&'a self, counters: &Arc<Counters>, index: &'a Index) -> Sink<'a> {
        Sink {
            keys: &self.repo.keys,
            delta: &self.repo.config.delta,
            offset: 0,
            prev: None,
            index,
            trust: &self.trust,
            pipeline: &self.pipeline,
            chunker: &self.chunker,
            counters: counters.clone(),
            progress: self.progress.as_ref(),
        }
    }

    /// The content of the newest complete snapshot's stream item with this name, the base for
    /// this item's deltas. Manifests are read once per backup.
    fn previous_version(&self, name: &str) -> Result<Option<ContentRef>> {
        let mut previous = self.previous.lock().unwrap();
        if previous.is_none() {
            let mut latest: std::collections::HashMap<String, (i64, ContentRef)> = Default::default();
            for snap in self.repo.snapshots()?.into_iter().flatten().filter(|s| s.is_complete()) {
                for item in snap.items {
                    if let ItemKind::Stream { content } = item.kind {
                        if latest.get(&item.name).is_none_or(|(t, _)| *t <= snap.time) {
                            latest.insert(item.name, (snap.time, content));
                        }
                    }
                }
            }
            *previous = Some(latest.into_iter().map(|(k, (_, c))| (k, c)).collect());
        }
        Ok(previous.as_ref().and_then(|m| m.get(name).cloned()))
    }

    /// Surfaces the pipeline's own error in place of the "stopped" a sender sees.
    fn with_cause<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| match e {
            Error::Pipeline(_) => self.pipeline.take_failure().unwrap_or(e),
            e => e,
        })
    }

    fn store_reader(&self, sink: &mut Sink, reader: impl Read, source: &str) -> Result<ContentRef> {
        let mut refs = RefList::default();
        let mut size = 0u64;
        self.chunker.for_each_chunk(
            reader,
            |chunk| {
                size += chunk.len() as u64;
                let r = sink.store(BlobKind::Data, chunk)?;
                refs.push(r, sink)
            },
            |e| Error::Source {
                path: source.to_string(),
                reason: format!("read failed: {e}"),
            },
        )?;
        refs.finish(size, sink)
    }

    /// Adds a named stream read to its end.
    pub fn add_stream(&self, name: &str, reader: impl Read) -> Result<Item> {
        let (counters, _guard, index) = self.begin_item(name)?;
        let start = Instant::now();
        self.progress.start(&format!("backup {name}"), None);
        let prev = match self.previous_version(name)? {
            Some(c) if self.repo.config.delta.enabled => Some(PrevTracker::start(&self.repo, &index, c)?),
            _ => None,
        };
        let mut sink = self.sink(&counters, &index);
        sink.prev = prev;
        let r = self.store_reader(&mut sink, reader, name);
        self.progress.finish();
        let content = self.with_cause(r)?;
        let item = Item {
            name: name.to_string(),
            size: content.size,
            kind: ItemKind::Stream { content },
            stats: Stats::default(),
            duration_secs: start.elapsed().as_secs_f64(),
            meta: BTreeMap::new(),
        };
        Ok(self.finish_item(item, counters))
    }

    /// Adds a command's standard output as a stream. A non-zero exit is an error (the caller
    /// should then drop the backup); empty output with exit 0 is kept with a warning.
    pub fn add_command_output(&self, name: &str, argv: &[String]) -> Result<Item> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| Error::Invalid("no command given".into()))?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Source {
                path: prog.clone(),
                reason: format!("cannot start command: {e}"),
            })?;
        let mut stderr = child.stderr.take().expect("piped");
        let err_thread = std::thread::spawn(move || {
            // Keep the last 4 KiB of stderr for the error message; pass it all through.
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                use std::io::Write;
                let _ = std::io::stderr().write_all(&buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            String::from_utf8_lossy(&tail).trim().to_string()
        });
        let stdout = child.stdout.take().expect("piped");
        let added = self.add_stream(name, stdout);
        let status = child.wait().map_err(|e| Error::Source {
            path: prog.clone(),
            reason: e.to_string(),
        });
        let tail = err_thread.join().unwrap_or_default();
        let item = added?;
        let status = status?;
        if !status.success() {
            self.remove_item(name);
            let mut reason = format!("command {argv:?} failed ({status})");
            if !tail.is_empty() {
                reason.push_str(&format!("; stderr: {tail}"));
            }
            return Err(Error::Source {
                path: name.to_string(),
                reason,
            });
        }
        if item.size == 0 {
            self.warn(format!(
                "command {argv:?} for item {name:?} exited 0 but wrote nothing; kept an empty item"
            ));
        }
        Ok(item)
    }

    /// Drops an added item from the snapshot (its chunks stay stored for the next backup).
    pub fn remove_item(&self, name: &str) {
        self.items.lock().unwrap().retain(|(i, _)| i.name != name);
    }

    /// Adds a file or directory tree (modes, owners, mtimes and symlinks are kept).
    pub fn add_tree(&self, name: &str, path: &Path) -> Result<Item> {
        self.add_tree_filtered(name, path, &|_| true)
    }

    /// Adds the part of a tree for which `keep(relative path)` holds (directories that are not
    /// kept are not descended into; the root is always kept).
    pub fn add_tree_filtered(&self, name: &str, path: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Item> {
        let (counters, _guard, index) = self.begin_item(name)?;
        let start = Instant::now();
        self.progress.start(&format!("backup {}", path.display()), None);
        let mut sink = self.sink(&counters, &index);
        let r = self.store_tree(&mut sink, path, keep);
        self.progress.finish();
        let (listing, size, files, dirs, symlinks) = self.with_cause(r)?;
        let item = Item {
            name: name.to_string(),
            size,
            kind: ItemKind::Tree {
                source: path.display().to_string(),
                listing,
                files,
                dirs,
                symlinks,
            },
            stats: Stats::default(),
            duration_secs: start.elapsed().as_secs_f64(),
            meta: BTreeMap::new(),
        };
        Ok(self.finish_item(item, counters))
    }

    fn store_tree(
        &self,
        sink: &mut Sink,
        root: &Path,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<(ContentRef, u64, u64, u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let src_err = |p: &Path, reason: String| Error::Source {
            path: p.display().to_string(),
            reason,
        };
        let mut listing = MetaWriter::default();
        let (mut size, mut files, mut dirs, mut symlinks) = (0u64, 0u64, 0u64, 0u64);
        // Files with several names: (device, inode) -> the listing line of the first name.
        let mut seen_inodes: std::collections::HashMap<(u64, u64), u64> = Default::default();
        let mut line_no = 0u64;
        let mut xattr_buf = XattrBuffers::default();
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || keep(e.path().strip_prefix(root).unwrap_or(e.path())));
        for entry in walker {
            let entry = entry.map_err(|e| {
                let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                src_err(&p, e.io_error().map(|e| e.to_string()).unwrap_or_else(|| e.to_string()))
            })?;
            let path = entry.path();
            let md = std::fs::symlink_metadata(path).map_err(|e| src_err(path, e.to_string()))?;
            let rel = path.strip_prefix(root).unwrap_or(path);
            // Any name a filesystem allows, byte for byte: not UTF-8 goes in hex beside a lossy form.
            let (rel, raw_path) = crate::snapshot::text_and_raw(rel.as_os_str().as_bytes());
            let ft = md.file_type();
            if !(ft.is_dir() || ft.is_symlink() || ft.is_file()) {
                // Sockets, fifos and devices are not backed up; they are recreated by their owners.
                continue;
            }
            let mut e = TreeEntry {
                path: rel,
                entry_type: EntryType::File,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                mtime_nsec: md.mtime_nsec() as u32,
                target: None,
                content: None,
                raw_path,
                raw_target: None,
                link: None,
                xattrs: xattr_buf
                    .read(path)
                    .map_err(|err| src_err(path, format!("extended attributes: {err}")))?,
            };
            if ft.is_dir() {
                e.entry_type = EntryType::Dir;
                dirs += 1;
            } else if ft.is_symlink() {
                e.entry_type = EntryType::Symlink;
                let t = std::fs::read_link(path).map_err(|err| src_err(path, err.to_string()))?;
                let (t, raw) = crate::snapshot::text_and_raw(t.as_os_str().as_bytes());
                e.target = Some(t);
                e.raw_target = raw;
                symlinks += 1;
            } else {
                let first = (md.nlink() > 1)
                    .then(|| *seen_inodes.entry((md.dev(), md.ino())).or_insert(line_no))
                    .filter(|first| *first != line_no);
                if let Some(first) = first {
                    // Another name of a file already stored: restored as a hard link to it.
                    e.link = Some(first);
                } else {
                    let f = std::fs::File::open(path).map_err(|err| src_err(path, format!("cannot read: {err}")))?;
                    let c = self.store_reader(sink, f, &path.display().to_string())?;
                    size += c.size;
                    e.content = Some(c);
                }
                files += 1;
            }
            let mut line = serde_json::to_vec(&e).expect("entry serialises");
            line.push(b'\n');
            listing.write(&line, sink)?;
            line_no += 1;
        }
        Ok((listing.finish(sink)?, size, files, dirs, symlinks))
    }

    /// Finishes the backup: drains the pipeline, then writes the manifest (crash-safety steps 4-5).
    pub fn commit(self) -> Result<Snapshot> {
        self.commit_with(Status::Complete, BTreeMap::new())
    }

    /// Finishes with a given status and snapshot-level metadata (plugins record failures this way).
    pub fn commit_with(mut self, status: Status, meta: BTreeMap<String, serde_json::Value>) -> Result<Snapshot> {
        self.pipeline.finish()?;
        let mut total = Stats::default();
        let items: Vec<Item> = std::mem::take(&mut *self.items.lock().unwrap())
            .into_iter()
            .map(|(mut item, c)| {
                item.stats = c.stats();
                total.add(&item.stats);
                item
            })
            .collect();
        let snap = Snapshot {
            version: MANIFEST_VERSION,
            name: self.name.clone(),
            time: self.time,
            host: self.opts.host.clone().unwrap_or_else(crate::backend::hostname),
            tags: self.opts.tags.clone(),
            status,
            duration_secs: self.started.elapsed().as_secs_f64(),
            items,
            stats: total,
            meta,
        };
        // Never commit what would not restore: packs relied on must still be there and not
        // about to go (`trust.rs`); blobs in packs at risk are copied first.
        let at_risk = self.trust.at_risk(self._lock.name())?;
        if !at_risk.is_empty() {
            self.rescue(&at_risk, &snap.items)?;
        }
        if self.repo.held_by_failed(&snap.name)? {
            self.repo
                .backend
                .remove(&crate::snapshot::manifest_path(&self.repo.snapshot_id(&snap.name)))?;
        }
        self.repo.write_manifest(&snap)?;
        Ok(snap)
    }

    /// Copies the blobs the snapshot needs out of packs at risk (marked for deletion without
    /// this backup's lock, or gone) into new packs; fails, naming why, if one is gone everywhere.
    fn rescue(&self, at_risk: &HashSet<PackId>, items: &[Item]) -> Result<()> {
        let mut idx = self.repo.index()?;
        let needed = self.repo.live_set(items.iter(), &idx)?;
        let marked_now = crate::deletion::marked_set(self.repo.backend.as_ref(), &self.repo.keys)?;
        let mut copier = Copier::new(self.repo.backend.as_ref(), &self.repo.keys, self.repo.config.pack_size);
        let mut copied = 0u64;
        for id in &needed {
            let locs = idx.locations(id)?;
            if locs
                .iter()
                .any(|l| !at_risk.contains(&l.pack) && !marked_now.contains(&l.pack))
            {
                continue;
            }
            let mut sealed = None;
            for l in &locs {
                if let Ok(b) = self
                    .repo
                    .backend
                    .read_at(&pack_path(&l.pack), l.offset as u64, l.length as usize)
                {
                    sealed = Some((l, b));
                    break;
                }
            }
            let Some((l, bytes)) = sealed else {
                return Err(Error::Concurrent(format!(
                    "blob {id}, which this backup found stored, was deleted meanwhile (by a prune \
                     that did not see this backup); nothing was committed: run the backup again"
                )));
            };
            let e = PackEntry {
                id: *id,
                kind: l.kind,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
                bases: Vec::new(),
                depth: l.depth,
            };
            if let Some(fin) = copier.add(&e, &bytes)? {
                idx.add_pack(&fin)?;
            }
            copied += 1;
        }
        if let Some(fin) = copier.finish()? {
            idx.add_pack(&fin)?;
        }
        if copied > 0 {
            self.warn(format!(
                "copied {copied} blob(s) out of {} pack(s) a prune marked for deletion while this backup ran",
                at_risk.len()
            ));
        }
        Ok(())
    }

    /// Sets plugin metadata on an added item.
    pub fn set_item_meta(&self, item: &str, key: &str, value: serde_json::Value) -> Result<()> {
        let mut items = self.items.lock().unwrap();
        let (item, _) = items
            .iter_mut()
            .find(|(i, _)| i.name == item)
            .ok_or_else(|| Error::UnknownItem(self.name.clone(), item.to_string()))?;
        item.meta.insert(key.to_string(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credentials, InitOptions, NewKey, NoProgress, OpenOptions};

    fn repo(dir: &Path) -> Repository {
        let opts = OpenOptions {
            cache_dir: dir.join("cache"),
            ..Default::default()
        };
        let key = NewKey::Passphrase {
            passphrase: "pw".to_string().into(),
            log_n: Some(10),
        };
        Repository::init(&dir.join("repo"), &key, &InitOptions::default(), opts.clone()).unwrap();
        Repository::open(
            &dir.join("repo"),
            &Credentials::Passphrase("pw".to_string().into()),
            opts,
        )
        .unwrap()
    }

    #[test]
    fn a_backup_takes_items_from_several_threads_at_once() {
        fn shareable<T: Send + Sync>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let backup = repo.backup(BackupOptions::default(), Arc::new(NoProgress)).unwrap();
        shareable(&backup);
        let data: Vec<Vec<u8>> = (0..4u8)
            .map(|i| {
                (0..3_000_000u32)
                    .map(|n| (n.wrapping_mul(2654435761) >> (i + 3)) as u8)
                    .collect()
            })
            .collect();
        std::thread::scope(|s| {
            for (i, d) in data.iter().enumerate() {
                let b = &backup;
                s.spawn(move || b.add_stream(&format!("s{i}"), &d[..]).unwrap());
            }
            // The same name twice at the same time is refused for one of them.
            let b = &backup;
            let slow = std::io::Read::chain(&b"x"[..], std::io::repeat(7).take(1 << 20));
            let one = s.spawn(move || b.add_stream("twice", slow).is_ok());
            let two = s.spawn(move || b.add_stream("twice", &b"y"[..]).is_ok());
            assert!(
                one.join().unwrap() ^ two.join().unwrap(),
                "exactly one of two same-named items is kept"
            );
        });
        backup.set_item_meta("s2", "rows", 42.into()).unwrap();
        assert!(backup.set_item_meta("nope", "rows", 1.into()).is_err());
        let snap = backup.commit().unwrap();
        assert_eq!(snap.items.len(), 5);
        assert_eq!(snap.item("s2").unwrap().meta["rows"], 42);
        for (i, d) in data.iter().enumerate() {
            let mut out = Vec::new();
            repo.dump(&snap.name, &format!("s{i}"), &mut out, &NoProgress).unwrap();
            assert!(out == *d, "stream s{i} differs");
        }
    }

    /// The one race deletion markers leave open (`deletion.rs`): a marker written after the
    /// backup read the markers, without its lock. The commit copies what it needs out of the
    /// marked packs; if they are gone already, it commits nothing and says why.
    #[test]
    fn commit_rescues_blobs_from_packs_marked_meanwhile_or_fails_if_they_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let data: Vec<u8> = (0..2_000_000u32)
            .map(|n| (n.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        let named = |n: &str| BackupOptions {
            name: Some(n.into()),
            ..Default::default()
        };
        let b = repo.backup(named("old"), Arc::new(NoProgress)).unwrap();
        b.add_stream("s", &data[..]).unwrap();
        b.commit().unwrap();
        repo.forget(&["old".into()]).unwrap();
        let packs = || {
            let idx = repo.index().unwrap();
            (0..=255u8)
                .flat_map(|b| idx.packs_with_prefix(b).unwrap())
                .map(|p| p.0)
                .collect::<Vec<_>>()
        };
        for gone in [false, true] {
            let name = if gone { "late" } else { "rescued" };
            let old_packs = packs();
            let b = repo.backup(named(name), Arc::new(NoProgress)).unwrap();
            let item = b.add_stream("s", &data[..]).unwrap();
            assert_eq!(
                item.stats.chunks_new, 0,
                "everything deduplicated against the old packs"
            );
            // A prune that did not see this backup marks the old packs (and, later, deletes them).
            crate::deletion::write(
                repo.backend.as_ref(),
                &repo.keys,
                &crate::deletion::Marker::new(now_unix(), old_packs.clone(), Vec::new()),
            )
            .unwrap();
            if gone {
                for p in &old_packs {
                    repo.backend.remove(&pack_path(p)).unwrap();
                }
                let err = b.commit().unwrap_err();
                assert!(matches!(err, Error::Concurrent(_)), "{err}");
                assert!(err.to_string().contains("nothing was committed"), "{err}");
                assert!(!repo.snapshot_exists(name));
            } else {
                let snap = b.commit().unwrap();
                assert!(repo.snapshot_exists(name));
                for p in &old_packs {
                    repo.backend.remove(&pack_path(p)).unwrap();
                }
                let mut out = Vec::new();
                repo.dump(&snap.name, "s", &mut out, &NoProgress).unwrap();
                assert!(out == data, "the rescued snapshot restores");
            }
        }
    }
}
