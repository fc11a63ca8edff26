//! Prune's plan: which packs stay, which are copied from and which go, decided from the live set
//! and the markers before anything is written (steps 1-2 of `prune/mod.rs`). Pure decisions on
//! what the index and the markers say, so each rule is tested here without a repository.

use std::collections::{HashMap, HashSet};

use super::PruneReport;
use crate::deletion::Marker;
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::pack::PackEntry;

/// One pack's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Enough of it is live: it stays as it is.
    Keep,
    /// Less than `repack_below` of its bytes are live: its live blobs are copied, then it goes.
    Repack,
    /// Nothing in it is live.
    Drop,
}

/// Every indexed pack, its size and its fate.
pub(crate) type Fates = Vec<(PackId, u64, Fate)>;

/// A readable marker and whether its packs may go now.
pub(crate) struct MarkerState {
    pub name: String,
    pub marker: Marker,
    pub due: bool,
}

/// What one prune run does.
pub(crate) struct Plan {
    pub fates: Fates,
    /// Packs some marker names.
    marked: HashSet<PackId>,
    /// Marked packs whose marker is due and that are not kept: deleted by this run.
    due: HashSet<PackId>,
    fate_of: HashMap<PackId, Fate>,
}

/// Decides each pack's fate. `entries` gives a pack's blobs (from the index). A live blob stored
/// more than once counts as live in one pack only, its *home*: a copy outside the packs markers
/// name (`marked`) if there is one; then for a chunk of `newest` (the newest versions) the
/// shortest chain, for any other the smallest copy; then the lowest pack id. A pack whose live
/// blobs all live elsewhere goes. Packs in `superseded` (holding old copies of chunks that
/// keyframes rewrote) are repacked, not kept, and so are packs holding a delta copy that is not
/// its blob's home: what stays is the homes (acyclic, checked) and whole copies. A kept pack that holds a dead delta whose base
/// would go is repacked as well, so that every blob left in the repository can still be
/// decoded; that can strand dead deltas elsewhere, hence the loop. Live blobs never strand:
/// their bases are live.
pub(crate) fn decide(
    packs: &[(PackId, u64)],
    mut entries: impl FnMut(&PackId) -> Result<Vec<PackEntry>>,
    live: &HashSet<ChunkId>,
    repack_below: f64,
    marked: &HashSet<PackId>,
    superseded: &HashSet<PackId>,
    newest: &HashSet<ChunkId>,
) -> Result<Decision> {
    // Each live blob's home: the copy of smallest rank, with its bases. Rank: in a marked or
    // superseded pack (last); then, for a chunk of the newest versions, the shortest chain first
    // (its keyframe), for any other the fewest bytes first (a reverse delta before the whole copy
    // it replaced); then the pack id. If those homes do not decode (a delta cycle, which a prune
    // killed half way through can leave among chunks it had not finished), the shortest chains
    // are taken for every chunk instead: each copy's recorded depth exceeds its bases' copies'
    // while those exist, so they do.
    // Entries are read from the index again below rather than held: memory follows the live
    // set, not the repository.
    let mut home = homes(packs, &mut entries, live, marked, superseded, Some(newest))?;
    if homes_acyclic(&home).is_err() {
        home = homes(packs, &mut entries, live, marked, superseded, None)?;
        homes_acyclic(&home)?;
    }
    let mut fates: Vec<(PackId, u64, Fate)> = Vec::with_capacity(packs.len());
    // Of each kept pack: every blob in it, and the bases of its dead deltas.
    let mut kept_blobs: Vec<(usize, Vec<ChunkId>, Vec<Vec<ChunkId>>)> = Vec::new();
    for (id, size) in packs {
        let entries = entries(id)?;
        let live_bytes: u64 = entries
            .iter()
            .filter(|e| home.get(&e.id).is_some_and(|h| h.0 .2 == *id))
            .map(|e| u64::from(e.length))
            .sum();
        let total: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        // A delta copy that is not its blob's home must not outlive this run in a kept pack:
        // readers could take it, and its chain need not agree with the homes'.
        let stray_delta = entries
            .iter()
            .any(|e| !e.bases.is_empty() && home.get(&e.id).is_some_and(|h| h.0 .2 != *id));
        let fate = if live_bytes == 0 {
            Fate::Drop
        } else if (live_bytes as f64) < repack_below * total as f64 || superseded.contains(id) || stray_delta {
            Fate::Repack
        } else {
            Fate::Keep
        };
        if fate == Fate::Keep {
            let dead_deltas = entries
                .iter()
                .filter(|e| !e.bases.is_empty() && !live.contains(&e.id))
                .map(|e| e.bases.clone())
                .collect();
            kept_blobs.push((fates.len(), entries.iter().map(|e| e.id).collect(), dead_deltas));
        }
        fates.push((*id, *size, fate));
    }
    loop {
        let survivors: HashSet<ChunkId> = kept_blobs
            .iter()
            .filter(|(i, _, _)| fates[*i].2 == Fate::Keep)
            .flat_map(|(_, ids, _)| ids.iter().copied())
            .collect();
        let mut changed = false;
        for (i, _, dead_deltas) in &kept_blobs {
            if fates[*i].2 == Fate::Keep
                && dead_deltas
                    .iter()
                    .flatten()
                    .any(|b| !survivors.contains(b) && !live.contains(b))
            {
                fates[*i].2 = Fate::Repack;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let secured = kept_blobs
        .iter()
        .filter(|(i, _, _)| fates[*i].2 == Fate::Keep)
        .flat_map(|(_, ids, _)| ids.iter().copied())
        .filter(|id| live.contains(id))
        .collect();
    let home = home.into_iter().map(|(id, h)| (id, h.0 .2)).collect();
    Ok(Decision { fates, secured, home })
}

type Rank = (bool, (u32, u32), PackId);

/// Each live blob's home copy (its rank and bases); ranks as in [`decide`], by depth alone when
/// `newest` is `None`.
fn homes(
    packs: &[(PackId, u64)],
    entries: &mut impl FnMut(&PackId) -> Result<Vec<PackEntry>>,
    live: &HashSet<ChunkId>,
    marked: &HashSet<PackId>,
    superseded: &HashSet<PackId>,
    newest: Option<&HashSet<ChunkId>>,
) -> Result<HashMap<ChunkId, (Rank, Vec<ChunkId>)>> {
    let mut home: HashMap<ChunkId, (Rank, Vec<ChunkId>)> = HashMap::with_capacity(live.len());
    for (id, _) in packs {
        for e in entries(id)? {
            if live.contains(&e.id) {
                let order = match newest {
                    Some(n) if !n.contains(&e.id) => (e.length, u32::from(e.depth)),
                    _ => (u32::from(e.depth), e.length),
                };
                let here = (marked.contains(id) || superseded.contains(id), order, *id);
                match home.get_mut(&e.id) {
                    Some(h) if h.0 <= here => {}
                    Some(h) => *h = (here, e.bases),
                    None => {
                        home.insert(e.id, (here, e.bases));
                    }
                }
            }
        }
    }
    Ok(home)
}

/// What [`decide`] decided.
pub(crate) struct Decision {
    pub fates: Fates,
    /// Live blobs that kept packs already hold (never copied).
    pub secured: HashSet<ChunkId>,
    /// The pack holding each live blob's home copy: the one copy a repack copies.
    pub home: HashMap<ChunkId, PackId>,
}

/// Whether the home copies decode: followed through their bases, no chain comes back to where it
/// started. Copies outside the homes may stay beside them (in kept packs), but a pack is only
/// dropped for holding no home, so the homes alone must always decode. By construction they do
/// (keyframes.rs); this refuses to delete anything if that ever fails.
fn homes_acyclic<T>(home: &HashMap<ChunkId, (T, Vec<ChunkId>)>) -> Result<()> {
    // 1: on the current path, 2: done.
    let mut state: HashMap<ChunkId, u8> = HashMap::with_capacity(home.len());
    for start in home.keys() {
        if state.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(ChunkId, usize)> = vec![(*start, 0)];
        state.insert(*start, 1);
        while let Some((id, i)) = stack.pop() {
            let bases = home.get(&id).map(|h| h.1.as_slice()).unwrap_or_default();
            match bases.get(i) {
                None => {
                    state.insert(id, 2);
                }
                Some(b) => {
                    stack.push((id, i + 1));
                    match state.get(b) {
                        Some(1) => {
                            return Err(crate::error::corrupt(
                                format!("blob {b}"),
                                "the copies prune would keep form a delta cycle; nothing was deleted",
                            ))
                        }
                        Some(_) => {}
                        None => {
                            state.insert(*b, 1);
                            stack.push((*b, 0));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

impl Plan {
    pub fn new(fates: Fates, markers: &[MarkerState]) -> Self {
        let fate_of: HashMap<PackId, Fate> = fates.iter().map(|(p, _, f)| (*p, *f)).collect();
        let marked = markers.iter().flat_map(|m| m.marker.packs.iter().copied()).collect();
        let due = markers
            .iter()
            .filter(|m| m.due)
            .flat_map(|m| m.marker.packs.iter().copied())
            .filter(|p| fate_of.get(p).is_none_or(|f| *f != Fate::Keep))
            .collect();
        Self {
            fates,
            marked,
            due,
            fate_of,
        }
    }

    /// Counts what the plan deletes, leaves waiting, marks and repacks.
    pub fn account(&self, report: &mut PruneReport) {
        for (id, size, fate) in &self.fates {
            if *fate == Fate::Keep {
                continue;
            }
            if self.due.contains(id) {
                report.packs_deleted += 1;
                report.bytes_deleted += size;
            } else if self.marked.contains(id) {
                report.packs_waiting += 1;
                report.bytes_waiting += size;
            } else {
                report.packs_marked += 1;
                report.bytes_marked += size;
            }
            if *fate == Fate::Repack && !self.marked.contains(id) {
                report.packs_repacked += 1;
            }
        }
    }

    /// Packs whose live blobs are copied out.
    pub fn repack(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.fates
            .iter()
            .filter(|f| f.2 == Fate::Repack)
            .map(|(p, s, _)| (*p, *s))
    }

    /// Packs this run deletes.
    pub fn to_delete(&self) -> Vec<PackId> {
        self.fates
            .iter()
            .filter(|f| f.2 != Fate::Keep && self.due.contains(&f.0))
            .map(|f| f.0)
            .collect()
    }

    /// The packs a marker should still name after this run, or `None` if it stays as it is.
    /// Deleted packs leave it; so do packs that turned out to be kept.
    pub fn marker_rest(&self, m: &Marker) -> Option<Vec<PackId>> {
        let rest: Vec<PackId> = m
            .packs
            .iter()
            .copied()
            .filter(|p| !self.due.contains(p) && self.fate_of.get(p).is_some_and(|f| *f != Fate::Keep))
            .collect();
        (rest.len() != m.packs.len()).then_some(rest)
    }

    /// Packs to go that no marker names yet: marked by this run for a later one.
    pub fn to_mark(&self) -> Vec<PackId> {
        self.fates
            .iter()
            .filter(|f| f.2 != Fate::Keep && !self.marked.contains(&f.0))
            .map(|f| f.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }

    fn entry(n: u8, length: u32, bases: &[u8]) -> PackEntry {
        PackEntry {
            id: id(n),
            kind: if bases.is_empty() {
                BlobKind::Data
            } else {
                BlobKind::Delta
            },
            offset: 0,
            length,
            raw_len: length,
            bases: bases.iter().map(|b| id(*b)).collect(),
            depth: u8::from(!bases.is_empty()),
            sketch: Default::default(),
        }
    }

    fn run(packs: &[(u8, Vec<PackEntry>)], live: &[u8], below: f64) -> (Fates, HashSet<ChunkId>) {
        let d = decide_in(packs, live, below, &[], &[], &[]).unwrap();
        (d.fates, d.secured)
    }

    fn decide_in(
        packs: &[(u8, Vec<PackEntry>)],
        live: &[u8],
        below: f64,
        marked: &[u8],
        superseded: &[u8],
        newest: &[u8],
    ) -> Result<Decision> {
        let list: Vec<(PackId, u64)> = packs.iter().map(|(p, _)| (pack(*p), 100)).collect();
        let by: HashMap<PackId, Vec<PackEntry>> = packs.iter().map(|(p, e)| (pack(*p), e.clone())).collect();
        let live: HashSet<ChunkId> = live.iter().map(|n| id(*n)).collect();
        let newest: HashSet<ChunkId> = newest.iter().map(|n| id(*n)).collect();
        let set = |v: &[u8]| v.iter().map(|n| pack(*n)).collect::<HashSet<_>>();
        decide(
            &list,
            |p| Ok(by[p].clone()),
            &live,
            below,
            &set(marked),
            &set(superseded),
            &newest,
        )
    }

    fn run_with(
        packs: &[(u8, Vec<PackEntry>)],
        live: &[u8],
        marked: &[u8],
        superseded: &[u8],
        newest: &[u8],
    ) -> Result<(Fates, HashSet<ChunkId>)> {
        decide_in(packs, live, 0.5, marked, superseded, newest).map(|d| (d.fates, d.secured))
    }

    /// Keyframes leave a chunk stored twice: the old copies (in packs prune marked, or is about to
    /// repack) are not what keeps a pack alive; the new ones are.
    #[test]
    fn a_chunk_stored_twice_keeps_alive_only_its_copy_outside_marked_packs() {
        // Chunk 1 is the newest version, chunk 2 the one before. Pack 1: old copies (2 whole, 1 a
        // delta against 2). Pack 2: new copies (1 whole, 2 a reverse delta against 1). Pack 3:
        // an unrelated live chunk.
        let packs = vec![
            (1, vec![entry(2, 60, &[]), entry(1, 40, &[2])]),
            (2, vec![entry(1, 60, &[]), entry(2, 40, &[1])]),
            (3, vec![entry(3, 50, &[])]),
        ];
        // Superseded in the run that rewrote: pack 1 goes (nothing in it is copied, its chunks
        // live in pack 2), pack 2 is kept.
        let d = run_with(&packs, &[1, 2, 3], &[], &[1], &[1]).unwrap();
        assert_eq!(fates(&d), [Fate::Drop, Fate::Keep, Fate::Keep]);
        // A later run: pack 1 is marked; it goes.
        let d = run_with(&packs, &[1, 2, 3], &[1], &[], &[1]).unwrap();
        assert_eq!(fates(&d), [Fate::Drop, Fate::Keep, Fate::Keep]);
        // Neither marked nor superseded (a crash before the marker): the newest chunk is at home
        // in its keyframe, the older one in its smaller copy, the reverse delta: pack 1 goes too.
        let d = run_with(&packs, &[1, 2, 3], &[], &[], &[1]).unwrap();
        assert_eq!(fates(&d), [Fate::Drop, Fate::Keep, Fate::Keep]);
        // Without knowing which is newest (say it was forgotten), the smallest copies would be
        // the two deltas, 1 -> 2 -> 1: the shortest chains are taken instead (2 whole in pack 1,
        // 1 whole in pack 2), and both packs are repacked, since each holds a delta copy that is
        // not its chunk's home.
        let d = run_with(&packs, &[1, 2, 3], &[], &[], &[]).unwrap();
        assert_eq!(fates(&d), [Fate::Repack, Fate::Repack, Fate::Keep]);
        // A superseded pack with a live chunk found nowhere else is repacked, not dropped.
        let packs2 = vec![packs[0].clone(), (3, vec![entry(3, 50, &[])])];
        let d = run_with(&packs2, &[1, 2, 3], &[], &[3], &[1]).unwrap();
        assert_eq!(fates(&d), [Fate::Keep, Fate::Repack]);
    }

    /// An old whole copy of a chunk now stored as a reverse delta stays where it is, counted dead:
    /// its pack is repacked only once it is mostly dead.
    #[test]
    fn an_old_whole_copy_stays_until_its_pack_thins_out() {
        let with = |other_len| {
            vec![
                (4, vec![entry(2, 60, &[]), entry(5, other_len, &[])]),
                (5, vec![entry(2, 10, &[1])]),
                (6, vec![entry(1, 60, &[])]),
            ]
        };
        let d = run_with(&with(60), &[1, 2, 5], &[], &[], &[1]).unwrap();
        assert_eq!(fates(&d), [Fate::Keep, Fate::Keep, Fate::Keep]);
        let d = run_with(&with(40), &[1, 2, 5], &[], &[], &[1]).unwrap();
        assert_eq!(fates(&d), [Fate::Repack, Fate::Keep, Fate::Keep]);
    }

    /// If no choice of copies decodes (a delta cycle), prune deletes nothing.
    #[test]
    fn homes_forming_a_delta_cycle_are_refused() {
        let packs = vec![(1, vec![entry(1, 40, &[2])]), (2, vec![entry(2, 40, &[1])])];
        let e = run_with(&packs, &[1, 2], &[], &[], &[1]).unwrap_err();
        assert!(e.to_string().contains("delta cycle"), "{e}");
    }

    fn fates(d: &(Fates, HashSet<ChunkId>)) -> Vec<Fate> {
        d.0.iter().map(|f| f.2).collect()
    }

    #[test]
    fn packs_are_kept_repacked_or_dropped_by_their_live_bytes() {
        let packs = vec![
            (1, vec![entry(1, 60, &[]), entry(2, 40, &[])]), // all live
            (2, vec![entry(3, 60, &[]), entry(4, 40, &[])]), // 40% live
            (3, vec![entry(5, 60, &[]), entry(6, 40, &[])]), // 60% live
            (4, vec![entry(7, 50, &[])]),                    // nothing live
        ];
        let d = run(&packs, &[1, 2, 4, 5], 0.5);
        assert_eq!(fates(&d), [Fate::Keep, Fate::Repack, Fate::Keep, Fate::Drop]);
        let secured: HashSet<ChunkId> = [1, 2, 5].iter().map(|n| id(*n)).collect();
        assert_eq!(d.1, secured, "live blobs of kept packs are secured, no others");
        assert_eq!(
            fates(&run(&packs, &[1, 2, 4, 5], 0.0)),
            [Fate::Keep, Fate::Keep, Fate::Keep, Fate::Drop]
        );
        assert_eq!(
            fates(&run(&packs, &[1, 2, 4, 5], 1.0)),
            [Fate::Keep, Fate::Repack, Fate::Repack, Fate::Drop]
        );
    }

    #[test]
    fn a_kept_pack_whose_dead_delta_loses_its_base_is_repacked_and_that_cascades() {
        let packs = vec![
            (1, vec![entry(1, 10, &[])]),                     // base of 2: dead, goes
            (2, vec![entry(2, 10, &[1]), entry(3, 90, &[])]), // dead delta on 1; 3 live
            (3, vec![entry(4, 10, &[2]), entry(5, 90, &[])]), // dead delta on 2; 5 live
            (4, vec![entry(6, 10, &[5]), entry(7, 90, &[])]), // dead delta on live 5: fine
        ];
        let d = run(&packs, &[3, 5, 7], 0.5);
        assert_eq!(fates(&d), [Fate::Drop, Fate::Repack, Fate::Repack, Fate::Keep]);
        let secured: HashSet<ChunkId> = [7].iter().map(|n| id(*n)).collect();
        assert_eq!(d.1, secured);
    }

    #[test]
    fn the_plan_deletes_only_due_marked_packs_and_marks_the_rest() {
        let fates = vec![
            (pack(1), 10, Fate::Keep),
            (pack(2), 20, Fate::Drop),   // marked, due
            (pack(3), 30, Fate::Repack), // marked, not due
            (pack(4), 40, Fate::Drop),   // unmarked
        ];
        let markers = vec![
            MarkerState {
                name: "a".into(),
                marker: Marker::new(0, vec![pack(1), pack(2)], vec![]),
                due: true,
            },
            MarkerState {
                name: "b".into(),
                marker: Marker::new(0, vec![pack(3)], vec!["lock".into()]),
                due: false,
            },
        ];
        let plan = Plan::new(fates, &markers);
        assert_eq!(
            plan.to_delete(),
            vec![pack(2)],
            "a kept pack is never deleted, due or not"
        );
        assert_eq!(plan.to_mark(), vec![pack(4)]);
        assert_eq!(plan.repack().collect::<Vec<_>>(), vec![(pack(3), 30)]);
        assert_eq!(
            plan.marker_rest(&markers[0].marker),
            Some(vec![]),
            "marker a is finished"
        );
        assert_eq!(plan.marker_rest(&markers[1].marker), None, "marker b stays as it is");
        let mut r = PruneReport::default();
        plan.account(&mut r);
        assert_eq!((r.packs_deleted, r.bytes_deleted), (1, 20));
        assert_eq!((r.packs_waiting, r.bytes_waiting), (1, 30));
        assert_eq!((r.packs_marked, r.bytes_marked), (1, 40));
        assert_eq!(
            r.packs_repacked, 0,
            "a marked pack was repacked by the run that marked it"
        );
    }
}
