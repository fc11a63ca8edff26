//! The content-based base selector: a new chunk's delta base is the stored chunk most like it,
//! wherever that is, found by resemblance sketch (`sketch.rs`) in the index cache. The previous
//! version's overlapping chunks ([`PositionalSelector`]) fill the remaining base slots and stand in
//! when nothing similar is indexed (chunks written before sketches, or by a format 1 writer).
//!
//! Why both: positional bases are right when a stream changes in place (OLTP updates), and wrong
//! once a change shifts everything after it and no duplicate is left to re-anchor on (a column
//! added to every row of a table, rows deleted all through it); sketches find the old rows
//! wherever they went. Candidates are only proposals: `choose_bases` keeps them if they are
//! stored and usable, and the encoder keeps a delta only if it is small.

use super::base::{BaseSelector, PositionalSelector};
use crate::id::ChunkId;
use crate::index::Index;
use crate::sketch::Sketch;

/// Chunks sharing features that the index is asked for, per new chunk.
const CANDIDATES: usize = 4;
/// Of which at most this many become bases (positional ones fill the rest).
const SIMILAR_BASES: usize = 2;

pub(crate) struct SimilarSelector {
    positional: Option<PositionalSelector>,
    index: Index,
}

impl SimilarSelector {
    /// Looks up similar chunks in `index`; follows the item's previous version too, if any.
    pub fn new(positional: Option<PositionalSelector>, index: Index) -> Self {
        Self { positional, index }
    }
}

impl BaseSelector for SimilarSelector {
    fn seen(&mut self, start: u64, data: &[u8], id: &ChunkId) {
        if let Some(p) = &mut self.positional {
            p.seen(start, data, id);
        }
    }

    fn observe(&mut self, start: u64, data: &[u8], id: &ChunkId, sketch: Option<&Sketch>) -> Vec<ChunkId> {
        let positional = match &mut self.positional {
            Some(p) => p.observe(start, data, id, sketch),
            None => Vec::new(),
        };
        let mut similar = match sketch.filter(|s| !s.is_empty()) {
            // The index failing to answer only costs this chunk its similar base.
            Some(s) => self.index.similar(s, CANDIDATES).unwrap_or_default(),
            None => Vec::new(),
        };
        // Most features shared first; among equals, a chunk at the same place in the previous
        // version.
        similar.sort_by_key(|(c, n)| (std::cmp::Reverse(*n), !positional.contains(c)));
        // Two similar chunks: a new chunk's cut points rarely match an old one's, so its rows
        // are usually spread over two old chunks.
        let mut bases: Vec<ChunkId> = similar.iter().take(SIMILAR_BASES).map(|(c, _)| *c).collect();
        for p in positional {
            if bases.len() < crate::blob::MAX_BASES - 1 && !bases.contains(&p) {
                bases.push(p);
            }
        }
        bases
    }

    fn list_bases(&mut self, start: u64, len: usize) -> Vec<ChunkId> {
        match &mut self.positional {
            Some(p) => p.list_bases(start, len),
            None => Vec::new(),
        }
    }
}
