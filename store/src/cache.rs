//! A byte-bounded LRU of decoded chunks, shared by the threads of one restore or backup.
//!
//! Delta chains make neighbouring chunks share ancestors (a delta's bases are the previous
//! version's chunks that overlap it), so decoding chunks in stream order with a small cache
//! decodes each ancestor about once. Eviction scans for the oldest entry; the cache holds a few
//! hundred chunks at most, so that is cheap next to decoding one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::id::ChunkId;

pub(crate) struct ChunkCache {
    /// id -> (plaintext, last use, whether its hash was verified)
    map: HashMap<ChunkId, (Arc<Vec<u8>>, u64, bool)>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

pub(crate) type SharedCache = Arc<Mutex<ChunkCache>>;

impl ChunkCache {
    pub(crate) fn shared(budget: usize) -> SharedCache {
        Arc::new(Mutex::new(Self {
            map: HashMap::new(),
            bytes: 0,
            budget,
            tick: 0,
        }))
    }

    /// The chunk and whether its content was verified against its id.
    pub(crate) fn get(&mut self, id: &ChunkId) -> Option<(Arc<Vec<u8>>, bool)> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(id).map(|(d, used, verified)| {
            *used = t;
            (d.clone(), *verified)
        })
    }

    pub(crate) fn mark_verified(&mut self, id: &ChunkId) {
        if let Some(e) = self.map.get_mut(id) {
            e.2 = true;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub(crate) fn insert(&mut self, id: ChunkId, data: Arc<Vec<u8>>, verified: bool) {
        if data.len() > self.budget / 4 || self.map.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += data.len();
        self.map.insert(id, (data, self.tick, verified));
        while self.bytes > self.budget {
            let oldest = *self
                .map
                .iter()
                .min_by_key(|(_, (_, used, _))| *used)
                .map(|(k, _)| k)
                .expect("over budget means not empty");
            if let Some((d, _, _)) = self.map.remove(&oldest) {
                self.bytes -= d.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let c = ChunkCache::shared(300);
        let mut c = c.lock().unwrap();
        let id = |b: u8| ChunkId([b; 32]);
        c.insert(id(1), Arc::new(vec![0; 70]), true);
        c.insert(id(2), Arc::new(vec![0; 70]), true);
        c.insert(id(3), Arc::new(vec![0; 70]), true);
        assert!(c.get(&id(1)).is_some()); // 1 is now more recent than 2
        c.insert(id(4), Arc::new(vec![0; 70]), true);
        c.insert(id(5), Arc::new(vec![0; 70]), true);
        assert!(c.bytes <= 300);
        assert!(c.get(&id(2)).is_none(), "least recently used went first");
        assert!(c.get(&id(1)).is_some() && c.get(&id(5)).is_some());
        c.insert(id(9), Arc::new(vec![0; 200]), true); // larger than a quarter of the budget: not kept
        assert!(c.get(&id(9)).is_none());
    }
}
