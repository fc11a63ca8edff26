//! The **base selector** seam: which stored chunks a new chunk is delta-encoded against.
//!
//! A [`BaseSelector`] sees every data chunk of one stream in order and names candidate bases for
//! the chunks that must be stored. [`choose_bases`] then keeps the candidates only if every one
//! is stored and usable and the chain stays within the repository's depth limit. Today's
//! selector is positional ([`PositionalSelector`]); a content-based one (resemblance sketches of
//! stored chunks, say) implements the same trait and is built in `Backup::selector_for`.

use std::collections::VecDeque;

use crossbeam_channel::{bounded, Receiver};

use super::destination::ChunkDestination;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::read::BlobReader;
use crate::repo::Synced;
use crate::sketch::Sketch;
use crate::snapshot::ContentRef;

/// Names delta bases for the new chunks of one stream.
pub trait BaseSelector: Send {
    /// Sees the stream's next data chunk, which starts at `start` and must be stored; returns
    /// candidate bases, best first, at most `blob::MAX_BASES - 1`. `sketch` is the chunk's
    /// resemblance sketch where the repository keeps them.
    fn observe(&mut self, start: u64, data: &[u8], id: &ChunkId, sketch: Option<&Sketch>) -> Vec<ChunkId>;

    /// Sees the stream's next data chunk, which is stored already.
    fn seen(&mut self, start: u64, len: usize, id: &ChunkId);

    /// Candidate bases for a new piece of the stream's chunk list (the first level up, see
    /// `chunklist.rs`) covering `len` bytes from `start` of the list.
    fn list_bases(&mut self, start: u64, len: usize) -> Vec<ChunkId> {
        let _ = (start, len);
        Vec::new()
    }
}

/// Keeps the candidate bases if each is usable and the chain they make stays within this chunk's
/// depth limit; returns the bases and the delta's depth (none and 0: store the chunk whole).
///
/// The limit varies with the chunk's id between `max_depth / 2` and `max_depth`, so chains of
/// neighbouring chunks do not all restart at once. A chain that would pass it restarts from the
/// chunks its candidates' chains lead to (their roots, stored whole): a delta against a root
/// carries every change since, which for a chunk that changes a little each time is still a
/// fraction of storing it whole, and the chain is one delta deep again.
pub(crate) fn choose_bases(
    dest: &dyn ChunkDestination,
    max_depth: u8,
    candidates: Vec<ChunkId>,
    id: &ChunkId,
) -> Result<(Vec<ChunkId>, u8)> {
    let limit = max_depth - id.0[0] % (max_depth / 2 + 1);
    match chain_depth(dest, &candidates)? {
        Some(depth) if depth < limit => Ok((candidates, depth + 1)),
        Some(_) => {
            let roots = roots_of(dest, &candidates)?;
            match chain_depth(dest, &roots)? {
                Some(0) => Ok((roots, 1)),
                _ => Ok((Vec::new(), 0)),
            }
        }
        _ => Ok((Vec::new(), 0)),
    }
}

/// The deepest chain among `bases`; `None` if there are none or one is not usable.
fn chain_depth(dest: &dyn ChunkDestination, bases: &[ChunkId]) -> Result<Option<u8>> {
    let mut depth = 0u8;
    for b in bases {
        match dest.base_depth(b)? {
            Some(d) => depth = depth.max(d),
            None => return Ok(None),
        }
    }
    Ok((!bases.is_empty()).then_some(depth))
}

/// The chunks stored whole that the candidates' chains lead to, nearest first, at most
/// `blob::MAX_BASES - 1`.
fn roots_of(dest: &dyn ChunkDestination, candidates: &[ChunkId]) -> Result<Vec<ChunkId>> {
    chain_roots(candidates, crate::blob::MAX_BASES - 1, |c| dest.bases(c))
}

/// Chunks a walk along delta chains looks at, at most.
const CHAIN_WALK: usize = 24;

/// Follows delta chains from `start` to the chunks stored whole they lead to (those `bases_of`
/// names no base for), nearest first, at most `most` of them. Every base of a delta is followed,
/// not only one: a delta's bases are a chunk's previous version and its neighbours, and the
/// index keeps them by id, not in the order the blob lists them. Looks at no more than
/// [`CHAIN_WALK`] chunks.
pub(super) fn chain_roots(
    start: &[ChunkId],
    most: usize,
    mut bases_of: impl FnMut(&ChunkId) -> Result<Vec<ChunkId>>,
) -> Result<Vec<ChunkId>> {
    let mut todo: std::collections::VecDeque<ChunkId> = start.iter().copied().collect();
    let (mut seen, mut roots) = (Vec::new(), Vec::new());
    while let Some(c) = todo.pop_front() {
        if seen.contains(&c) || seen.len() >= CHAIN_WALK || roots.len() >= most {
            continue;
        }
        seen.push(c);
        let bases = bases_of(&c)?;
        if bases.is_empty() {
            roots.push(c);
        }
        todo.extend(bases);
    }
    Ok(roots)
}

/// Follows the previous version of a stream alongside the new one, to name delta bases: the
/// previous chunks that overlap a new chunk's byte range. Exact duplicates re-anchor the two
/// streams (an insertion shifts everything after it), so the overlap is taken in the previous
/// version's coordinates. The previous chunk list is read by a thread into a bounded channel, and
/// only a window of it (about [`LOOKAHEAD`] bytes ahead) is held.
pub(crate) struct PositionalSelector {
    rx: Receiver<(u64, crate::snapshot::ChunkRef)>,
    window: VecDeque<(u64, crate::snapshot::ChunkRef)>,
    /// Previous offset minus new offset, learned from the last duplicate found in the window.
    shift: i64,
    eof: bool,
    /// The previous version's chunk-list pieces: (offset in the list, reference).
    list: Vec<(u64, crate::snapshot::ChunkRef)>,
}

const LOOKAHEAD: u64 = 8 << 20;

impl PositionalSelector {
    /// Follows `previous`, the content of the stream's newest complete version.
    pub fn start(repo: &Synced, previous: ContentRef) -> Result<Self> {
        let reader = BlobReader::new(repo)?;
        let mut at = 0u64;
        // A previous list that cannot be read only costs its pieces as bases.
        let list = reader
            .list_pieces(&previous)
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                at += r.1 as u64;
                (at - r.1 as u64, r)
            })
            .collect();
        let (tx, rx) = bounded(1024);
        std::thread::spawn(move || {
            let mut off = 0u64;
            // Ends early (with an error nobody needs) once the selector is dropped.
            let _ = reader.for_each_leaf(&previous, &mut |_| {}, &mut |r| {
                let o = off;
                off += r.1 as u64;
                tx.send((o, r)).map_err(|_| Error::Pipeline("selector gone".into()))
            });
        });
        Ok(Self {
            rx,
            window: VecDeque::new(),
            shift: 0,
            eof: false,
            list,
        })
    }

    fn fill(&mut self, until: u64) {
        while !self.eof
            && self
                .window
                .back()
                .is_none_or(|(o, r)| o + r.1 as u64 <= until + LOOKAHEAD)
        {
            match self.rx.recv() {
                Ok(e) => self.window.push_back(e),
                Err(_) => self.eof = true,
            }
        }
    }
}

impl BaseSelector for PositionalSelector {
    fn seen(&mut self, start: u64, len: usize, id: &ChunkId) {
        let ps = (start as i64 + self.shift).max(0) as u64;
        self.fill(ps + len as u64);
        if let Some(i) = self.window.iter().position(|(_, r)| r.0 == *id) {
            self.shift = self.window[i].0 as i64 - start as i64;
            self.window.drain(..=i);
        }
    }

    fn observe(&mut self, start: u64, data: &[u8], _: &ChunkId, _: Option<&Sketch>) -> Vec<ChunkId> {
        let ps = (start as i64 + self.shift).max(0) as u64;
        let pe = ps + data.len() as u64;
        self.fill(pe);
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

    /// The previous list's pieces over the same bytes: a list changes in place where chunks
    /// changed, and a record is the same size whatever it names.
    fn list_bases(&mut self, start: u64, len: usize) -> Vec<ChunkId> {
        let end = start + len as u64;
        let first = self.list.partition_point(|(o, r)| o + r.1 as u64 <= start);
        self.list[first..]
            .iter()
            .take_while(|(o, _)| *o < end)
            .map(|(_, r)| r.0)
            .take(crate::blob::MAX_BASES - 1)
            .collect()
    }
}
