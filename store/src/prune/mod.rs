//! Forgetting snapshots and pruning the data no snapshot needs any more.
//!
//! `forget` deletes snapshot manifests (the roots). `prune` then deletes what no remaining
//! snapshot needs, in two phases (`deletion.rs`): a pack found unreferenced is first *marked*,
//! and deleted by a later prune once the mark is older than the grace period, no backup that was
//! running when it was marked still holds its lock, and the pack is still unreferenced. Prune
//! holds a prune lock: no other prune, repair, restore, check or forget runs beside it, but
//! backups do, since nothing they may reference is deleted under them.
//!
//! One prune run, in this order (the order is what the safety argument in `deletion.rs` needs):
//!
//! 1. *Markers and locks.* Read every deletion marker, then the locks: a marker is *due* when it
//!    is old enough and none of the locks it recorded remains (unless its owner is proven dead).
//! 2. *Plan.* List the snapshots. The live set is every blob a complete snapshot references
//!    (leaves, chunk-list chunks, tree listings and their files' chunks) plus, transitively, the
//!    bases of every live delta. Failed snapshots are roots of nothing and are removed. Each pack
//!    is then *kept* (enough of it is live), *repacked* (less than `repack_below` of its bytes
//!    are live) or *dropped* (nothing live). A kept pack that holds a dead delta whose base would
//!    go is repacked as well, so that every blob left in the repository can still be decoded.
//!    A live blob stored more than once counts in one pack only, its *home* copy (`plan.rs`);
//!    packs holding old copies of chunks keyframes rewrote, or a delta copy that is not its
//!    chunk's home, are repacked.
//!    Before the packs are classed, *keyframes* (`keyframes.rs`, step 2b in docs/format.md): the
//!    newest version of each item is stored without deltas and the chains behind it as reverse
//!    deltas, into new packs published and indexed before anything is marked.
//! 3. *Copy.* The home copies of live blobs in repacked packs that no kept pack also holds are
//!    copied, still sealed (each one authenticated on the way), into new packs, published and
//!    indexed like any pack.
//! 4. *Delete.* Packs of due markers that are not kept are removed from the index cache, then
//!    deleted, then their markers. Markers naming a kept pack are replaced by one without it.
//!    Failed snapshots' manifests are deleted.
//! 5. *Mark.* Packs repacked or dropped that no marker names yet are written into a new marker,
//!    with the names of the locks present now. With a grace period of zero the run then starts
//!    again from 1, so that what it marked and what no backup holds goes at once.
//!
//! A crash at any point leaves every blob a kept snapshot needs in some pack on disk: a pack is
//! deleted only when its live blobs sit in a kept or newly published pack. What a crash can leave
//! behind is extra copies and markers (a later prune finishes them) and files in `tmp/`.
//!
//! Memory follows the live set (one 32-byte id per live blob, a few tens of bytes with the set's
//! overhead) plus one pack being copied; time follows the kept snapshots' chunk lists (read to
//! find the live set) and the bytes deleted and copied, not the repository's size.

mod keyframes;
mod plan;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::deletion::{self, Marker};
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::lock::LockMode;
use crate::pack::{pack_path, Copier, FinishedPack, PackEntry};
use crate::progress::Progress;
use crate::read::BlobReader;
use crate::repo::{Repository, Synced};
use crate::snapshot::{Item, Snapshot};
use crate::util::now_unix;
use plan::{MarkerState, Plan};

/// How prune decides.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Only plan; change nothing.
    pub dry_run: bool,
    /// Repack a pack when less than this fraction of its bytes is live (0 never repacks,
    /// 1 repacks every pack with any dead blob).
    pub repack_below: f64,
    /// How long a pack stays marked before a prune may delete it. Zero deletes in the same run
    /// what no running backup may need.
    pub grace: Duration,
    /// Store the newest version of each item without deltas and older versions as reverse deltas
    /// (`keyframes.rs`), so that the newest restores fastest.
    pub keyframes: bool,
}

/// The default grace period: an hour.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            repack_below: 0.5,
            grace: DEFAULT_GRACE,
            keyframes: true,
        }
    }
}

/// What prune found and did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Failed snapshots removed.
    pub failed_snapshots: Vec<String>,
    pub snapshots_kept: usize,
    pub live_blobs: u64,
    pub packs_before: u64,
    pub bytes_before: u64,
    /// Packs deleted (their mark was due).
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Packs newly marked for deletion by a later prune.
    pub packs_marked: u64,
    pub bytes_marked: u64,
    /// Marked packs not deleted yet, and why.
    pub packs_waiting: u64,
    pub bytes_waiting: u64,
    pub waiting: Vec<String>,
    pub packs_repacked: u64,
    pub packs_written: u64,
    /// Live bytes copied out of repacked packs.
    pub bytes_copied: u64,
    /// Chunks of the newest versions stored whole again (keyframes), and older versions stored
    /// as deltas against newer ones; sealed bytes of both.
    pub keyframes: u64,
    pub reverse_deltas: u64,
    pub bytes_rewritten: u64,
    /// Bytes of packs in the repository afterwards (marked ones included until deleted).
    pub bytes_after: u64,
    pub warnings: Vec<String>,
}

impl Synced {
    /// Every blob the given items need: what they reference and, transitively, the bases of
    /// every delta among those.
    pub(crate) fn live_set<'i>(&self, items: impl Iterator<Item = &'i Item>, idx: &Index) -> Result<HashSet<ChunkId>> {
        let reader = BlobReader::new(self)?;
        let mut live: HashSet<ChunkId> = HashSet::new();
        for item in items {
            for c in &self.item_contents(item).map_err(|(_, e)| e)? {
                let mut meta = Vec::new();
                reader.for_each_leaf(c, &mut |id| meta.push(*id), &mut |r| {
                    live.insert(r.0);
                    Ok(())
                })?;
                live.extend(meta);
            }
        }
        let mut frontier: Vec<ChunkId> = live.iter().copied().collect();
        while let Some(id) = frontier.pop() {
            for b in idx.all_bases(&id)? {
                if live.insert(b) {
                    frontier.push(b);
                }
            }
        }
        Ok(live)
    }
}

impl Repository {
    /// Deletes the manifests of the named snapshots. Their data stays until `prune`.
    pub fn forget(&self, names: &[String]) -> Result<()> {
        let _lock = self.freeing_lock(LockMode::Shared, "forget")?;
        for n in names {
            if !self.snapshot_exists(n)? {
                return Err(Error::UnknownSnapshot(n.clone()));
            }
        }
        for n in names {
            self.store
                .delete(&crate::snapshot::manifest_path(&self.snapshot_id(n)))?;
        }
        Ok(())
    }

    /// Removes failed snapshots and every blob no remaining snapshot needs; see the module
    /// documentation for the order that keeps this safe beside backups and against crashes.
    pub fn prune(&self, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        let lock = self.freeing_lock(LockMode::Prune, "prune")?;
        let own = lock.as_ref().map_or("", |l| l.name());
        // Temp files of dead processes first: on a full disk they may be what fills it.
        self.store.clean_up()?;
        let mut report = self.prune_once(opts, own, progress)?;
        if opts.grace.is_zero() && !opts.dry_run && report.packs_marked > 0 {
            let again = self.prune_once(opts, own, progress)?;
            report.packs_deleted += again.packs_deleted;
            report.bytes_deleted += again.bytes_deleted;
            report.packs_waiting = again.packs_waiting;
            report.bytes_waiting = again.bytes_waiting;
            report.waiting = again.waiting;
            report.bytes_after = again.bytes_after;
            report.warnings.extend(again.warnings);
        }
        Ok(report)
    }

    fn prune_once(&self, opts: &PruneOptions, own_lock: &str, progress: &dyn Progress) -> Result<PruneReport> {
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };

        // 1. Markers, then locks: which marks are due.
        let now = now_unix();
        let locks: HashMap<String, Option<crate::lock::LockInfo>> =
            self.locks()?.into_iter().map(|(n, i)| (n, i.ok())).collect();
        let mut markers: Vec<MarkerState> = Vec::new();
        for (name, m) in deletion::list(self.store.as_ref(), &self.keys)? {
            let marker = match m {
                Ok(m) => m,
                Err(e) => {
                    report.warnings.push(format!(
                        "{e}; its packs stay until `cairn repair snapshots` removes the marker"
                    ));
                    continue;
                }
            };
            // A marker dated in the future (its prune's clock ran ahead) is dated again by this
            // clock: a wrong clock may delay a deletion, never hasten one or block it for good.
            let (name, marker) = if marker.time > now && !opts.dry_run {
                report.warnings.push(format!(
                    "deletion marker {name} is dated {}s ahead of this host's clock; dated it again",
                    marker.time - now
                ));
                let mut redated = marker.clone();
                redated.time = now;
                let new = deletion::write(self.store.as_ref(), &self.keys, &redated)?;
                deletion::remove(self.store.as_ref(), &name)?;
                (new, redated)
            } else {
                (name, marker)
            };
            let age = now - marker.time;
            let holders: Vec<String> = marker
                .locks
                .iter()
                .filter(|l| *l != own_lock)
                .filter_map(|l| match locks.get(l) {
                    None => None,
                    Some(Some(i)) if i.is_dead() => None,
                    Some(Some(i)) => Some(i.describe()),
                    Some(None) => Some(format!("unreadable lock {l}")),
                })
                .collect();
            let mut why = Vec::new();
            if age < opts.grace.as_secs() as i64 {
                why.push(format!("marked {}s ago, grace {}s", age.max(0), opts.grace.as_secs()));
            }
            if !holders.is_empty() {
                why.push(format!("held by {}", holders.join(", ")));
            }
            if !why.is_empty() {
                report
                    .waiting
                    .push(format!("{} pack(s): {}", marker.packs.len(), why.join("; ")));
            }
            markers.push(MarkerState {
                name,
                marker,
                due: why.is_empty(),
            });
        }

        // 2. Plan, from the snapshots as they are now (listed after the locks were looked at).
        let (synced, mut idx) = self.synced()?;
        let mut kept: Vec<Snapshot> = Vec::new();
        for s in self.snapshots()? {
            // An unreadable manifest may name blobs we cannot see: refuse rather than guess.
            let s = s.map_err(|e| {
                Error::Invalid(format!(
                    "prune needs every snapshot manifest readable: {e} (`cairn repair snapshots` \
                     removes unreadable manifests)"
                ))
            })?;
            if s.is_complete() {
                kept.push(s);
            } else {
                report.failed_snapshots.push(s.name.clone());
            }
        }
        report.snapshots_kept = kept.len();
        progress.start("prune: find live data", None);
        let live = synced.live_set(kept.iter().flat_map(|s| s.items.iter()), &idx)?;
        report.live_blobs = live.len() as u64;
        progress.finish();

        let bytes_before: u64 = idx.packs()?.iter().map(|p| p.1).sum();
        // 2b. Keyframes: new copies of the newest versions' chunks (and the chains behind them)
        // are published and indexed first; the packs with their old copies are then repacked.
        let marked: HashSet<PackId> = markers.iter().flat_map(|m| m.marker.packs.iter().copied()).collect();
        // The newest versions' chunks: keyframes rewrites what leads to them, and the plan
        // prefers their whole copies (with or without keyframes this run, so that a prune
        // `--no-keyframes` keeps what an earlier one turned around).
        let newest = keyframes::newest_chunks(&synced, &kept)?;
        let rewrite = if opts.keyframes {
            self.rewrite_keyframes(&synced, &mut idx, &newest, &marked, opts.dry_run, progress)?
        } else {
            Default::default()
        };
        report.keyframes = rewrite.keyframes;
        report.reverse_deltas = rewrite.reverse_deltas;
        report.bytes_rewritten = rewrite.bytes;
        report.warnings.extend(rewrite.warning.clone());
        let superseded = keyframes::superseded_packs(&idx, &rewrite)?;
        let packs = idx.packs()?;
        report.packs_before = packs.len() as u64 - rewrite.packs.len() as u64;
        report.bytes_before = bytes_before;
        // `secured`: live blobs already safe in kept packs, never copied; grows as blobs are copied.
        let plan::Decision {
            fates,
            mut secured,
            home,
        } = plan::decide(
            &packs,
            |id| idx.pack_entries(id),
            &live,
            opts.repack_below,
            &marked,
            &superseded,
            &newest.into_iter().collect(),
        )?;
        if opts.dry_run {
            secured.extend(rewrite.rewritten.iter().copied());
        }
        let plan = Plan::new(fates, &markers);
        plan.account(&mut report);

        // 3. Copy the live blobs of repacked packs (estimated in a dry run).
        let mut written: Vec<FinishedPack> = Vec::new();
        progress.start("prune: repack", Some(plan.repack().map(|(_, size)| size).sum()));
        let mut copier = Copier::new(self.store.as_ref(), &self.keys, self.config.pack_size);
        for (id, size) in plan.repack() {
            let (id, size) = (&id, &size);
            let entries = idx.pack_entries(id)?;
            let wanted: Vec<&PackEntry> = entries
                .iter()
                .filter(|e| home.get(&e.id) == Some(id) && !secured.contains(&e.id))
                .collect();
            if opts.dry_run {
                report.bytes_copied += wanted.iter().map(|e| u64::from(e.length)).sum::<u64>();
                secured.extend(wanted.iter().map(|e| e.id));
                progress.advance(*size);
                continue;
            }
            if wanted.is_empty() {
                progress.advance(*size);
                continue;
            }
            let data = self.store.get(&pack_path(id))?;
            for e in wanted {
                // A delta whose base was given a new copy now reads through that copy.
                let refreshed;
                let e = if e.bases.iter().any(|b| rewrite.depth.contains_key(b)) {
                    let mut r = e.clone();
                    r.depth = 1 + e
                        .bases
                        .iter()
                        .map(|b| match rewrite.depth.get(b) {
                            Some(d) => Ok(*d),
                            None => idx.locations(b).map(|l| l.first().map_or(0, |l| l.depth)),
                        })
                        .collect::<Result<Vec<u8>>>()?
                        .into_iter()
                        .max()
                        .unwrap_or(0);
                    refreshed = r;
                    &refreshed
                } else {
                    e
                };
                let sealed = data
                    .get(e.offset as usize..e.offset as usize + e.length as usize)
                    .ok_or_else(|| crate::error::corrupt(format!("pack {id}"), "a blob lies outside the file"))?;
                if let Some(fin) = copier.add(e, sealed)? {
                    idx.add_pack(&fin)?;
                    written.push(fin);
                    crate::util::crash_point("prune-copying");
                }
                secured.insert(e.id);
            }
            progress.advance(*size);
        }
        if !opts.dry_run {
            report.bytes_copied = copier.bytes;
        }
        if let Some(fin) = copier.finish()? {
            idx.add_pack(&fin)?;
            written.push(fin);
            crate::util::crash_point("prune-copying");
        }
        progress.finish();
        report.packs_written = written.len() as u64;
        let written_bytes: u64 = written.iter().chain(&rewrite.packs).map(|p| p.size).sum();
        report.bytes_after = report.bytes_before + written_bytes - report.bytes_deleted;
        if opts.dry_run {
            // Copied blobs would fill new packs of about the same bytes.
            report.bytes_after += report.bytes_copied;
            report.packs_written = report.bytes_copied.div_ceil(self.config.pack_size.max(1));
            return Ok(report);
        }
        crate::util::crash_point("prune-indexed");

        // 4. Delete what is due: index first, then the files, then the markers.
        let gone = plan.to_delete();
        for id in &gone {
            idx.remove_pack(id)?;
        }
        for name in &report.failed_snapshots {
            self.store
                .delete(&crate::snapshot::manifest_path(&self.snapshot_id(name)))?;
        }
        progress.start("prune: delete", Some(gone.len() as u64));
        for id in &gone {
            self.store.delete(&pack_path(id))?;
            progress.advance(1);
            crate::util::crash_point("prune-deleting");
        }
        progress.finish();
        for m in &markers {
            let Some(rest) = plan.marker_rest(&m.marker) else {
                continue;
            };
            if !rest.is_empty() {
                let mut replaced = m.marker.clone();
                replaced.packs = rest;
                deletion::write(self.store.as_ref(), &self.keys, &replaced)?;
            }
            deletion::remove(self.store.as_ref(), &m.name)?;
        }

        // 5. Mark what goes next, with the locks present now.
        let to_mark = plan.to_mark();
        if !to_mark.is_empty() {
            let holders: Vec<String> = self
                .locks()?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n != own_lock)
                .collect();
            deletion::write(
                self.store.as_ref(),
                &self.keys,
                &Marker::new(now_unix(), to_mark, holders),
            )?;
            crate::util::crash_point("prune-marked");
        }
        Ok(report)
    }
}
