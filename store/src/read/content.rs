//! Writing one content to a writer, in order, with every chunk verified.
//!
//! A small pipeline: one thread walks the chunk list (loading stored lists as it goes, so memory
//! stays bounded) and cuts it into segments; worker threads read, decrypt, decompress and verify
//! the chunks of a segment; the caller writes the segments in order. An ordered hand-off (one
//! single-slot reply channel per segment, queued in stream order) keeps the output sequential
//! while the workers run in parallel.

use std::io::Write;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{BlobReader, CACHE_BYTES};
use crate::cache::ChunkCache;
use crate::error::{corrupt, Error, Result};
use crate::progress::Progress;
use crate::repo::{Repository, Synced};
use crate::snapshot::{ChunkRef, ContentRef, EntryType, Item, ItemKind, TreeEntry};

/// A decoded segment: its chunks in order, shared with the cache rather than copied together.
type Segment = Vec<std::sync::Arc<Vec<u8>>>;
type Reply = Receiver<Result<Segment>>;

/// Bytes of content per restore work unit.
const SEGMENT_BYTES: u64 = 2 << 20;

fn decode_segment(br: &BlobReader, segment: &[ChunkRef]) -> Result<Segment> {
    let mut out = Vec::with_capacity(segment.len());
    for r in segment {
        let d = br.read_shared(&r.0)?;
        if d.len() != r.1 as usize {
            return Err(corrupt(format!("blob {}", r.0), "length differs from the chunk list"));
        }
        out.push(d);
    }
    Ok(out)
}

/// Writes a segment's chunks with as few system calls as the writer takes (`write_vectored`: one
/// `writev` per segment on a file), without first copying them into one buffer.
fn write_segment(out: &mut dyn Write, chunks: &Segment) -> std::io::Result<u64> {
    let mut slices: Vec<std::io::IoSlice<'_>> = chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    let mut total = 0u64;
    std::io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n as u64;
                std::io::IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

impl Synced {
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
        let (job_tx, job_rx) = bounded::<(Vec<ChunkRef>, Sender<Result<Segment>>)>(n);
        let (order_tx, order_rx) = bounded::<Reply>(n);
        std::thread::scope(|s| -> Result<()> {
            for _ in 0..n {
                let (rx, cache) = (job_rx.clone(), cache.clone());
                s.spawn(move || {
                    let reader = BlobReader::with_cache(self, cache);
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
                let br = BlobReader::new(self)?;
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
                match write_segment(out, &data) {
                    Ok(n) => {
                        written += n;
                        progress.advance(n);
                    }
                    Err(e) => {
                        result = Err(Error::Io {
                            path: "output".into(),
                            source: e,
                        });
                        break;
                    }
                }
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

    /// Every entry of a tree listing.
    pub(crate) fn tree_entries(&self, listing: &ContentRef) -> Result<Vec<TreeEntry>> {
        let br = BlobReader::new(self)?;
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
}

impl Repository {
    /// Writes one item of a snapshot to `out`: a stream, or a tree that is a single file.
    pub fn dump(&self, snapshot: &str, item: &str, out: &mut dyn Write, progress: &dyn Progress) -> Result<u64> {
        let _lock = self.read_lock(&format!("dump {snapshot}"))?;
        let snap = self.restorable_snapshot(snapshot)?;
        let it = snap
            .item(item)
            .ok_or_else(|| Error::UnknownItem(snapshot.into(), item.into()))?;
        // Sync once so packs written by others since our last run are readable.
        let (synced, _) = self.synced()?;
        progress.start(&format!("dump {item}"), Some(it.size));
        let content = match &it.kind {
            ItemKind::Stream { content } => content.clone(),
            ItemKind::Tree { listing, .. } => {
                let entries = synced.tree_entries(listing)?;
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
        synced.write_content(&content, out, progress)?;
        progress.finish();
        Ok(content.size)
    }

    /// Every entry of a tree listing (after bringing the index cache up to date).
    pub fn tree_entries(&self, listing: &ContentRef) -> Result<Vec<TreeEntry>> {
        self.synced()?.0.tree_entries(listing)
    }
}
