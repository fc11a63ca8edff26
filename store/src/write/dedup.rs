//! The dedup stage, in the thread of the item being read: hash each chunk, ask the destination
//! whether it is missing, pick delta bases for the new ones and queue them for encoding. A
//! duplicate costs a hash and a lookup, nothing more.

use std::sync::Arc;

use super::base::{choose_bases, BaseSelector};
use super::pipeline::{Job, Pipeline};
use super::stats::Counters;
use crate::blob::BlobKind;
use crate::chunker::Chunker;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::progress::Progress;
use crate::sketch::Sketcher;
use crate::snapshot::ChunkRef;

/// Hands one item's chunks to the pipeline, dropping duplicates first.
pub(crate) struct Sink<'a> {
    pub keys: &'a Keys,
    pub max_depth: u8,
    /// Bytes of data stored so far in this item (the offset of the next chunk).
    pub offset: u64,
    pub selector: Option<Box<dyn BaseSelector>>,
    pub pipeline: &'a Pipeline,
    pub chunker: &'a Chunker,
    /// Sketches new data chunks for the selector (where the repository keeps sketches).
    pub sketcher: Option<&'a Sketcher>,
    pub counters: Arc<Counters>,
    pub progress: &'a dyn Progress,
    /// Bytes an agent sent for this content so far (`foreign/receive.rs`); `None` for a local
    /// source. Reported to `progress` with the bytes stored.
    pub sent: Option<u64>,
}

impl Sink<'_> {
    /// Stores one chunk (data, or a piece of a chunk list or tree listing); returns its reference.
    /// Data chunks are offered to the base selector.
    pub fn store(&mut self, kind: BlobKind, data: &[u8]) -> Result<ChunkRef> {
        self.store_with(kind, data, None)
    }

    /// Stores a piece of the content's chunk list (the first level up) that starts `start` bytes
    /// into the list; the selector may name the previous list's pieces as bases.
    pub fn store_list_piece(&mut self, start: u64, data: &[u8]) -> Result<ChunkRef> {
        self.store_with(BlobKind::Meta, data, Some(start))
    }

    fn store_with(&mut self, kind: BlobKind, data: &[u8], list_start: Option<u64>) -> Result<ChunkRef> {
        if self.pipeline.failed() {
            return Err(Error::Pipeline("after an earlier error".into()));
        }
        let id = self.keys.chunk_id(data);
        let new = self.pipeline.destination().missing(&[id])?[0];
        self.place(kind, id, data.len(), Some((data, None)), list_start, new)
    }

    /// A data chunk cut and hashed on another host (`foreign.rs`): the caller asked the
    /// destination itself (`claimed`: it answered "missing", so the chunk is encoded here) and
    /// has checked `data`, when it has it, against `id`.
    /// `frame`: the chunk as the agent compressed it at this repository's level, kept if the
    /// chunk is stored whole.
    pub fn store_foreign(
        &mut self,
        id: ChunkId,
        len: usize,
        data: Option<&[u8]>,
        frame: Option<Vec<u8>>,
        claimed: bool,
    ) -> Result<ChunkRef> {
        if self.pipeline.failed() {
            return Err(Error::Pipeline("after an earlier error".into()));
        }
        self.place(BlobKind::Data, id, len, data.map(|d| (d, frame)), None, claimed)
    }

    /// Counts a chunk, queues it for encoding if it is `new` (then `data` is needed, with the
    /// frame an agent compressed it to, if any) and tells the selector about it.
    fn place(
        &mut self,
        kind: BlobKind,
        id: ChunkId,
        len: usize,
        data: Option<(&[u8], Option<Vec<u8>>)>,
        list_start: Option<u64>,
        new: bool,
    ) -> Result<ChunkRef> {
        Counters::add(&self.counters.chunks, 1);
        let offset = self.offset;
        if kind == BlobKind::Data {
            // Totals first: `advance` may print the line, and it should carry them.
            self.progress.totals(
                self.sent,
                self.counters.bytes_added.load(std::sync::atomic::Ordering::Relaxed),
            );
            self.progress.advance(len as u64);
            self.offset += len as u64;
        }
        let selector = self.selector.as_mut();
        match data {
            Some((data, frame)) if new => {
                Counters::add(&self.counters.chunks_new, 1);
                Counters::add(&self.counters.bytes_new, len as u64);
                let mut sketch = None;
                let candidates = match (selector, list_start) {
                    (Some(s), Some(start)) => s.list_bases(start, len),
                    (Some(s), None) if kind == BlobKind::Data => {
                        sketch = self.sketcher.map(|k| k.sketch(data));
                        s.observe(offset, data, &id, sketch.as_ref())
                    }
                    _ => Vec::new(),
                };
                let dest = self.pipeline.destination();
                let (bases, depth) = choose_bases(dest, self.max_depth, candidates, &id)?;
                self.pipeline.submit(Job {
                    id,
                    kind,
                    data: data.to_vec(),
                    bases,
                    depth,
                    sketch,
                    frame,
                    counters: self.counters.clone(),
                })?;
            }
            None if new => {
                return Err(Error::Pipeline(format!("chunk {id} is new and came without its data")));
            }
            _ => {
                if let Some(s) = selector.filter(|_| kind == BlobKind::Data) {
                    s.seen(offset, len, &id);
                }
            }
        }
        Ok(ChunkRef(id, len as u32))
    }
}
