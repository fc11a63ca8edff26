//! What a backup counts per item, shared by the stages that see each chunk.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::snapshot::Stats;

/// An item's counters, updated by the dedup stage (chunks seen, new) and the encode stage
/// (deltas, bytes added).
#[derive(Default)]
pub(crate) struct Counters {
    pub chunks: AtomicU64,
    pub chunks_new: AtomicU64,
    pub chunks_delta: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_added: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            chunks: self.chunks.load(Relaxed),
            chunks_new: self.chunks_new.load(Relaxed),
            chunks_delta: self.chunks_delta.load(Relaxed),
            bytes_new: self.bytes_new.load(Relaxed),
            bytes_added: self.bytes_added.load(Relaxed),
        }
    }
}
