//! The content-based base selector: a new chunk's delta bases are the stored chunks most like it,
//! wherever they are, found by resemblance sketch (`sketch.rs`) in the index cache, with the
//! previous version's overlapping chunks ([`PositionalSelector`]) among the candidates, and
//! standing in when nothing similar is indexed (chunks written before sketches, or by a format 1
//! writer).
//!
//! Why both: positional bases are right when a stream changes in place (OLTP updates), and wrong
//! once a change shifts everything after it and no duplicate is left to re-anchor on (a column
//! added to every row of a table, rows deleted all through it); sketches find the old rows
//! wherever they went. Candidates are only proposals: `choose_bases` keeps them if they are
//! stored and usable, and the encoder keeps a delta only if it is small.

use std::collections::HashMap;

use super::base::{chain_roots, BaseSelector, PositionalSelector};
use crate::id::ChunkId;
use crate::index::Index;
use crate::sketch::Sketch;

/// Chunks sharing features that the index is asked for, per new chunk.
const CANDIDATES: usize = 4;
/// Of which at most this many become bases (a new chunk's rows are usually spread over two
/// old chunks); positional ones fill the rest.
const SIMILAR_BASES: usize = 2;

pub(crate) struct SimilarSelector {
    positional: Option<PositionalSelector>,
    index: Index,
    /// Sketches found along recent positional candidates' chains (neighbouring new chunks
    /// share candidates); cleared when it holds [`REMEMBERED`] chunks.
    lineages: HashMap<ChunkId, Vec<Sketch>>,
}

/// Positional candidates whose lineage sketches are remembered.
const REMEMBERED: usize = 4096;

impl SimilarSelector {
    /// Looks up similar chunks in `index`; follows the item's previous version too, if any.
    pub fn new(positional: Option<PositionalSelector>, index: Index) -> Self {
        Self {
            positional,
            index,
            lineages: HashMap::new(),
        }
    }

    /// The sketches of the chunks `id`'s delta chains lead to (itself, if stored whole): only
    /// chunks stored whole carry one, and a chunk changed in place still resembles them.
    fn lineage(&mut self, id: ChunkId) -> crate::error::Result<&[Sketch]> {
        if !self.lineages.contains_key(&id) {
            let index = &self.index;
            let mut found = Vec::new();
            for root in chain_roots(&[id], usize::MAX, |c| index.bases(c))? {
                let sketch = index.sketch(&root)?;
                if !sketch.is_empty() {
                    found.push(sketch);
                }
            }
            if self.lineages.len() >= REMEMBERED {
                self.lineages.clear();
            }
            self.lineages.insert(id, found);
        }
        Ok(&self.lineages[&id])
    }
}

impl BaseSelector for SimilarSelector {
    fn seen(&mut self, start: u64, len: usize, id: &ChunkId) {
        if let Some(p) = &mut self.positional {
            p.seen(start, len, id);
        }
    }

    fn observe(&mut self, start: u64, data: &[u8], id: &ChunkId, sketch: Option<&Sketch>) -> Vec<ChunkId> {
        let positional = match &mut self.positional {
            Some(p) => p.observe(start, data, id, sketch),
            None => Vec::new(),
        };
        let Some(sketch) = sketch.filter(|s| !s.is_empty()) else {
            return positional;
        };
        // The previous version's chunks at the same place are the right bases for a chunk changed
        // in place (they cover its whole range, and nothing shares more features with it); the
        // index's finds replace them only when they share more (the rows moved). The index
        // failing to answer only costs this chunk its similar bases.
        let similar: Vec<(ChunkId, usize)> = self
            .index
            .similar(sketch, CANDIDATES)
            .unwrap_or_default()
            .into_iter()
            .filter(|(c, _)| !positional.contains(c))
            .collect();
        let Some(most) = similar.first().map(|(_, n)| *n) else {
            return positional;
        };
        let shared = |other: &Sketch| sketch.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        let mut at_place = 0;
        for p in &positional {
            if at_place >= most {
                break;
            }
            let best = self.lineage(*p).map_or(0, |l| l.iter().map(shared).max().unwrap_or(0));
            at_place = at_place.max(best);
        }
        let mut bases: Vec<ChunkId> = similar
            .into_iter()
            .filter(|(_, n)| *n > at_place)
            .take(SIMILAR_BASES)
            .map(|(c, _)| c)
            .collect();
        for p in positional {
            if bases.len() < crate::blob::MAX_BASES - 1 {
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
