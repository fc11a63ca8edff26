//! Snapshot manifests: finding, reading and writing them.
//!
//! A manifest is stored as `snapshots/<id>`, where the id is a keyed hash of the snapshot's name
//! (names are not visible without the key), zstd-compressed JSON sealed with the id as associated
//! data, so a manifest cannot be passed off under another name. It is written once, with
//! put-if-absent: the name is taken by exactly one writer (crash-safety step 5 in `write/mod.rs`).

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::{manifest_aad, manifest_path, Snapshot};

/// The name that stands for the newest complete snapshot.
pub const LATEST: &str = "latest";

impl Repository {
    pub(crate) fn snapshot_id(&self, name: &str) -> SnapshotId {
        SnapshotId(self.keys.keyed_name("snapshot name", name.as_bytes()))
    }

    /// Loads a snapshot by name. `latest` (unless a snapshot has that very name) is the newest
    /// complete snapshot that is not a safety snapshot (tag `safety`).
    pub fn snapshot(&self, name: &str) -> Result<Snapshot> {
        let id = self.snapshot_id(name);
        if !self.store.exists(&manifest_path(&id))? {
            if name == LATEST {
                return self
                    .snapshots()?
                    .into_iter()
                    .flatten()
                    .filter(|s| s.is_complete() && !s.tags.iter().any(|t| t == "safety"))
                    .max_by_key(|s| (s.time, s.name.clone()))
                    .ok_or_else(|| Error::UnknownSnapshot("latest (no complete snapshot yet)".into()));
            }
            return Err(Error::UnknownSnapshot(name.into()));
        }
        let snap = self.read_manifest(&id)?;
        if snap.name != name {
            return Err(crate::error::corrupt(
                format!("snapshot {name:?}"),
                "manifest holds another name",
            ));
        }
        Ok(snap)
    }

    pub(crate) fn read_manifest(&self, id: &SnapshotId) -> Result<Snapshot> {
        let what = format!("snapshot file {}", manifest_path(id));
        let sealed = self.store.get(&manifest_path(id))?;
        let compressed = self.keys.open(&what, &manifest_aad(id), &sealed)?;
        let json =
            zstd::stream::decode_all(&compressed[..]).map_err(|e| crate::error::corrupt(&what, e.to_string()))?;
        let snap: Snapshot = serde_json::from_slice(&json).map_err(|e| crate::error::corrupt(&what, e.to_string()))?;
        if snap.version > crate::snapshot::MANIFEST_VERSION {
            return Err(crate::error::corrupt(
                &what,
                format!("manifest version {} is newer than this cairn", snap.version),
            ));
        }
        Ok(snap)
    }

    /// Writes a manifest under its name; fails if the name is taken.
    pub(crate) fn write_manifest(&self, snap: &Snapshot) -> Result<()> {
        let id = self.snapshot_id(&snap.name);
        let json = serde_json::to_vec(snap).expect("manifest serialises");
        let compressed =
            zstd::bulk::compress(&json, 3).map_err(|e| Error::Invalid(format!("compressing a manifest: {e}")))?;
        let sealed = self.keys.seal(&manifest_aad(&id), &compressed);
        if !self.store.put_if_absent(&manifest_path(&id), &sealed)? {
            return Err(Error::SnapshotExists(snap.name.clone()));
        }
        Ok(())
    }

    /// Whether a new snapshot may take `name`: `false` when it is free, `true` when a failed
    /// snapshot holds it (the new one replaces it); `SnapshotExists` when a complete snapshot,
    /// or a manifest that cannot be read, holds it.
    pub(crate) fn held_by_failed(&self, name: &str) -> Result<bool> {
        if !self.snapshot_exists(name)? {
            return Ok(false);
        }
        match self.snapshot(name) {
            Ok(s) if !s.is_complete() => Ok(true),
            _ => Err(Error::SnapshotExists(name.into())),
        }
    }

    /// Whether a snapshot of this name exists (an error when that cannot be told).
    pub fn snapshot_exists(&self, name: &str) -> Result<bool> {
        self.store.exists(&manifest_path(&self.snapshot_id(name)))
    }

    /// All snapshots, oldest first. Unreadable manifests are returned as errors in the list so
    /// one damaged file does not hide the others.
    pub fn snapshots(&self) -> Result<Vec<std::result::Result<Snapshot, Error>>> {
        let mut out = Vec::new();
        for name in crate::storage::names_in(self.store.as_ref(), "snapshots")? {
            let Ok(id) = name.parse::<SnapshotId>() else {
                continue;
            };
            out.push(self.read_manifest(&id));
        }
        out.sort_by_key(|s| match s {
            Ok(s) => (s.time, s.name.clone()),
            Err(_) => (i64::MAX, String::new()),
        });
        Ok(out)
    }

    /// Loads a snapshot that may be restored (not one marked failed).
    pub fn restorable_snapshot(&self, name: &str) -> Result<Snapshot> {
        let snap = self.snapshot(name)?;
        if let crate::snapshot::Status::Failed { reason } = &snap.status {
            return Err(Error::FailedSnapshot {
                name: snap.name.clone(),
                reason: reason.clone(),
            });
        }
        Ok(snap)
    }
}
