//! Committing a backup: crash-safety steps 4 and 5 (`write/mod.rs`), and the rescue of blobs
//! from packs a prune marked while the backup ran.

use std::collections::{BTreeMap, HashSet};

use super::Backup;
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::pack::{pack_path, Copier, PackEntry};
use crate::snapshot::{Item, Snapshot, Stats, Status, MANIFEST_VERSION};

impl Backup {
    /// Finishes the backup: drains the pipeline, then writes the manifest (crash-safety steps 4-5).
    pub fn commit(self) -> Result<Snapshot> {
        self.commit_with(Status::Complete, BTreeMap::new())
    }

    /// Finishes with a given status and snapshot-level metadata (plugins record failures this way).
    pub fn commit_with(mut self, status: Status, meta: BTreeMap<String, serde_json::Value>) -> Result<Snapshot> {
        self.pipeline.finish()?;
        let mut total = Stats::default();
        let items: Vec<Item> = std::mem::take(&mut *self.items.lock().unwrap())
            .into_iter()
            .map(|(mut item, c)| {
                item.stats = c.stats();
                total.add(&item.stats);
                item
            })
            .collect();
        let snap = Snapshot {
            version: MANIFEST_VERSION,
            name: self.name.clone(),
            time: self.time,
            host: self.opts.host.clone().unwrap_or_else(crate::util::hostname),
            tags: self.opts.tags.clone(),
            status,
            duration_secs: self.started.elapsed().as_secs_f64(),
            items,
            stats: total,
            meta,
        };
        // Never commit what would not restore: packs relied on must still be there and not
        // about to go (`trust.rs`); blobs in packs at risk are copied first.
        let at_risk = self.trust.at_risk(self._lock.name())?;
        if !at_risk.is_empty() {
            self.rescue(&at_risk, &snap.items)?;
        }
        if self.repo.held_by_failed(&snap.name)? {
            self.repo
                .store
                .delete(&crate::snapshot::manifest_path(&self.repo.snapshot_id(&snap.name)))?;
        }
        self.repo.write_manifest(&snap)?;
        Ok(snap)
    }

    /// Copies the blobs the snapshot needs out of packs at risk (marked for deletion without
    /// this backup's lock, or gone) into new packs; fails, naming why, if one is gone everywhere.
    fn rescue(&self, at_risk: &HashSet<PackId>, items: &[Item]) -> Result<()> {
        let (synced, mut idx) = self.repo.synced()?;
        // Finding what the snapshot needs reads its chunk lists, which may be in a pack that is
        // gone already: the same race as a gone data blob below, reported the same way.
        let needed = synced.live_set(items.iter(), &idx).map_err(|e| match e {
            Error::MissingBlob { .. } | Error::MissingPack { .. } => Error::Concurrent(format!(
                "a chunk list this backup found stored was deleted meanwhile (by a prune that did \
                 not see this backup: {e}); nothing was committed: run the backup again"
            )),
            e => e,
        })?;
        let marked_now = crate::deletion::marked_set(self.repo.store.as_ref(), &self.repo.keys)?;
        let mut copier = Copier::new(self.repo.store.as_ref(), &self.repo.keys, self.repo.config.pack_size);
        let mut copied = 0u64;
        for id in &needed {
            let locs = idx.locations(id)?;
            if locs
                .iter()
                .any(|l| !at_risk.contains(&l.pack) && !marked_now.contains(&l.pack))
            {
                continue;
            }
            let mut sealed = None;
            for l in &locs {
                if let Ok(b) = self
                    .repo
                    .store
                    .get_range(&pack_path(&l.pack), l.offset as u64, l.length as usize)
                {
                    sealed = Some((l, b));
                    break;
                }
            }
            let Some((l, bytes)) = sealed else {
                return Err(Error::Concurrent(format!(
                    "blob {id}, which this backup found stored, was deleted meanwhile (by a prune \
                     that did not see this backup); nothing was committed: run the backup again"
                )));
            };
            let e = PackEntry {
                id: *id,
                kind: l.kind,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
                bases: Vec::new(),
                depth: l.depth,
                sketch: idx.sketch(id)?,
            };
            if let Some(fin) = copier.add(&e, &bytes)? {
                idx.add_pack(&fin)?;
            }
            copied += 1;
        }
        if let Some(fin) = copier.finish()? {
            idx.add_pack(&fin)?;
        }
        if copied > 0 {
            self.warn(format!(
                "copied {copied} blob(s) out of {} pack(s) a prune marked for deletion while this backup ran",
                at_risk.len()
            ));
        }
        Ok(())
    }
}
