//! Repairs: what `cairn check` finds damaged is taken out, so no damage needs hand work in the
//! repository's directories and the next backup stores again what was lost.
//!
//! - [`Repository::repair_packs`]: every pack is read whole. A pack whose trailer cannot be read
//!   (truncated, damaged) is deleted: without its table of contents nothing in it can be found.
//!   A pack with damaged blobs has its intact blobs copied (authenticated) into new packs and is
//!   then deleted. The damaged blobs are then in no pack and no index, so a backup of the same
//!   data stores them again instead of deduplicating against them. New packs are published and
//!   indexed before any old pack is deleted, under an exclusive lock.
//! - [`Repository::repair_snapshots`]: manifests and deletion markers that cannot be read are
//!   deleted (prune refuses to run while a manifest is unreadable); a snapshot that needs blobs no
//!   pack holds is written again without the items that need them, with `meta.repaired` naming
//!   them (or as failed if nothing is left). The old manifest is first copied to
//!   `snapshots/<id>.repairing`, which a rerun puts back if a crash came between removing the
//!   old manifest and writing the new one.

use std::collections::HashSet;

use serde::Serialize;

use crate::blob;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::index::Index;
use crate::lock::LockMode;
use crate::pack::{pack_path, Copier, PackEntry};
use crate::progress::Progress;
use crate::read::BlobReader;
use crate::repo::{Repository, Synced};
use crate::snapshot::{manifest_path, Item, Snapshot, Status};

/// What `repair packs` found and did.
#[derive(Debug, Default, Serialize)]
pub struct RepairPacksReport {
    pub dry_run: bool,
    pub packs_read: u64,
    /// Packs deleted, each with why.
    pub packs_removed: Vec<String>,
    pub packs_written: u64,
    pub blobs_copied: u64,
    /// Damaged blobs taken out of the repository.
    pub blobs_removed: u64,
    /// Snapshots that still need a blob no pack holds (`repair snapshots` cuts those parts).
    pub damaged_snapshots: Vec<String>,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    /// Unreadable manifests deleted (their file names).
    pub manifests_removed: Vec<String>,
    pub markers_removed: Vec<String>,
    /// Snapshots written again without lost items: (name, items cut).
    pub snapshots_cut: Vec<(String, Vec<String>)>,
    /// Interrupted repairs finished.
    pub resumed: usize,
}

impl Repository {
    /// Drops the index cache and rebuilds it from the pack trailers. Takes an exclusive lock.
    pub fn repair_index(&self) -> Result<crate::index::SyncStats> {
        let _lock = self.lock(LockMode::Exclusive, "repair index")?;
        // The old cache is never opened: it may be what is broken.
        Index::discard(&self.opts.cache_dir, &self.config.repo_id)?;
        let mut idx = Index::open(&self.opts.cache_dir, &self.config.repo_id)?;
        idx.rebuild(self.store.as_ref(), &self.keys)
    }

    /// Deletes unreadable packs and rewrites packs with damaged blobs without them.
    pub fn repair_packs(&self, dry_run: bool, progress: &dyn Progress) -> Result<RepairPacksReport> {
        let _lock = self.lock(LockMode::Exclusive, "repair packs")?;
        let mut report = RepairPacksReport {
            dry_run,
            ..Default::default()
        };
        let mut idx = Index::open(&self.opts.cache_dir, &self.config.repo_id)?;
        let sync = idx.sync(self.store.as_ref(), &self.keys)?;
        let mut doomed: Vec<PackId> = Vec::new();
        for (id, why) in &sync.unreadable {
            report.packs_removed.push(format!("pack {id}: {why}"));
            doomed.push(*id);
        }
        let packs = idx.packs()?;
        progress.start("repair packs", Some(packs.iter().map(|p| p.1).sum()));
        let mut copier = Copier::new(self.store.as_ref(), &self.keys, self.config.pack_size);
        let mut written = Vec::new();
        for (id, size) in &packs {
            progress.advance(*size);
            report.packs_read += 1;
            let entries = idx.pack_entries(id)?;
            let data = match self.store.get(&pack_path(id)) {
                Ok(d) => d,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let blob = |e: &PackEntry| data.get(e.offset as usize..e.offset as usize + e.length as usize);
            let (good, bad): (Vec<&PackEntry>, Vec<&PackEntry>) = entries
                .iter()
                .partition(|e| blob(e).is_some_and(|b| blob::intact_alone(&self.keys, &e.id, b)));
            if bad.is_empty() {
                continue;
            }
            report.blobs_removed += bad.len() as u64;
            report.packs_removed.push(format!(
                "pack {id}: {} damaged blob(s) (e.g. {}); {} intact blob(s) copied",
                bad.len(),
                bad[0].id,
                good.len()
            ));
            doomed.push(*id);
            if dry_run {
                report.blobs_copied += good.len() as u64;
                continue;
            }
            for e in good {
                if let Some(fin) = copier.add(e, blob(e).expect("checked above"))? {
                    idx.add_pack(&fin)?;
                    written.push(fin.id);
                }
                report.blobs_copied += 1;
            }
        }
        progress.finish();
        if !dry_run {
            if let Some(fin) = copier.finish()? {
                idx.add_pack(&fin)?;
                written.push(fin.id);
            }
            report.packs_written = written.len() as u64;
            // New packs are indexed; now the old ones leave the index, then the repository.
            for id in &doomed {
                idx.remove_pack(id)?;
            }
            for id in &doomed {
                self.store.delete(&pack_path(id))?;
            }
        }
        drop(idx);
        report.damaged_snapshots = self
            .check_unlocked(&crate::CheckOptions::default(), &crate::NoProgress)?
            .damaged_snapshots;
        Ok(report)
    }

    /// Deletes unreadable manifests and markers; cuts lost items out of damaged snapshots.
    pub fn repair_snapshots(&self, dry_run: bool) -> Result<RepairSnapshotsReport> {
        let _lock = self.lock(LockMode::Exclusive, "repair snapshots")?;
        let mut report = RepairSnapshotsReport {
            dry_run,
            ..Default::default()
        };
        // A repair interrupted after removing a manifest: put the old one back, then redo.
        for name in crate::storage::names_in(self.store.as_ref(), "snapshots")? {
            let Some(id) = name.strip_suffix(".repairing") else {
                continue;
            };
            if dry_run {
                continue;
            }
            let saved = self.store.get(&format!("snapshots/{name}"))?;
            self.store.put_if_absent(&format!("snapshots/{id}"), &saved)?;
            self.store.delete(&format!("snapshots/{name}"))?;
            report.resumed += 1;
        }
        for name in crate::storage::names_in(self.store.as_ref(), "snapshots")? {
            let Ok(id) = name.parse::<SnapshotId>() else {
                continue;
            };
            if self.read_manifest(&id).is_err() {
                report.manifests_removed.push(name.clone());
                if !dry_run {
                    self.store.delete(&manifest_path(&id))?;
                }
            }
        }
        for (name, m) in crate::deletion::list(self.store.as_ref(), &self.keys)? {
            if m.is_err() {
                report.markers_removed.push(name.clone());
                if !dry_run {
                    crate::deletion::remove(self.store.as_ref(), &name)?;
                }
            }
        }

        let (synced, idx) = self.synced()?;
        let broken = idx.broken_closure(&HashSet::new())?;
        for snap in self.snapshots()?.into_iter().flatten() {
            let mut lost = Vec::new();
            let mut kept: Vec<Item> = Vec::new();
            for item in &snap.items {
                if synced.item_intact(item, &idx, &broken)? {
                    kept.push(item.clone());
                } else {
                    lost.push(item.name.clone());
                }
            }
            if lost.is_empty() {
                continue;
            }
            report.snapshots_cut.push((snap.name.clone(), lost.clone()));
            if dry_run {
                continue;
            }
            let mut cut = snap.clone();
            cut.items = kept;
            cut.meta.insert(
                "repaired".into(),
                serde_json::json!({"time": crate::util::format_rfc3339(crate::util::now_unix()), "lost_items": lost}),
            );
            if cut.items.is_empty() {
                cut.status = Status::Failed {
                    reason: "every item was lost to damage (cairn repair snapshots)".into(),
                };
            }
            self.replace_manifest(&snap, &cut)?;
        }
        Ok(report)
    }

    /// Replaces a manifest by another of the same name, crash-safely (see the module docs).
    fn replace_manifest(&self, old: &Snapshot, new: &Snapshot) -> Result<()> {
        let id = self.snapshot_id(&old.name);
        let path = manifest_path(&id);
        let saved = self.store.get(&path)?;
        let aside = format!("{path}.repairing");
        self.store.delete(&aside)?;
        self.store.put(&aside, &saved)?;
        self.store.delete(&path)?;
        crate::util::crash_point("repair-snapshot-removed");
        self.write_manifest(new)?;
        self.store.delete(&aside)
    }
}

impl Synced {
    /// Whether every blob an item needs is in some pack, and no delta chain it needs is broken.
    fn item_intact(&self, item: &Item, idx: &Index, broken: &HashSet<ChunkId>) -> Result<bool> {
        let reader = BlobReader::new(self)?;
        let Ok(contents) = self.item_contents(item) else {
            return Ok(false);
        };
        let ok = std::cell::Cell::new(true);
        let check = |id: &ChunkId| {
            if broken.contains(id) || !idx.contains(id).unwrap_or(false) {
                ok.set(false);
            }
        };
        for c in &contents {
            if reader
                .for_each_leaf(c, &mut |id| check(id), &mut |r| {
                    check(&r.0);
                    Ok(())
                })
                .is_err()
            {
                return Ok(false);
            }
        }
        Ok(ok.get())
    }
}
