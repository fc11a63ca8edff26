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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::repo::test_repo;
    use crate::snapshot::{Stats, Status, MANIFEST_VERSION};

    fn snap(name: &str, time: i64, tags: &[&str], status: Status) -> Snapshot {
        Snapshot {
            version: MANIFEST_VERSION,
            name: name.into(),
            time,
            host: "h".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            status,
            duration_secs: 0.5,
            items: Vec::new(),
            stats: Stats::default(),
            meta: BTreeMap::new(),
        }
    }

    #[test]
    fn manifests_round_trip_and_a_name_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let s = snap("a/b", 100, &["x"], Status::Complete);
        repo.write_manifest(&s).unwrap();
        assert_eq!(repo.snapshot("a/b").unwrap(), s);
        assert!(matches!(repo.write_manifest(&s), Err(Error::SnapshotExists(_))));
        assert!(repo.snapshot_exists("a/b").unwrap());
        assert!(!repo.snapshot_exists("c").unwrap());
        assert!(matches!(repo.snapshot("c"), Err(Error::UnknownSnapshot(_))));
        // The file name reveals nothing of the snapshot name.
        let names = crate::storage::names_in(repo.store.as_ref(), "snapshots").unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(names[0], repo.snapshot_id("a/b").to_hex());
    }

    #[test]
    fn a_manifest_moved_under_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        repo.write_manifest(&snap("real", 1, &[], Status::Complete)).unwrap();
        let from = manifest_path(&repo.snapshot_id("real"));
        let to = manifest_path(&repo.snapshot_id("fake"));
        let bytes = repo.store.get(&from).unwrap();
        repo.store.put(&to, &bytes).unwrap();
        let e = repo.snapshot("fake").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        // Damaged bytes are reported, and the listing still shows the others.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        repo.store.delete(&from).unwrap();
        repo.store.put(&from, &bad).unwrap();
        let all = repo.snapshots().unwrap();
        assert_eq!(all.iter().filter(|s| s.is_err()).count(), 2, "both copies fail to open");
    }

    #[test]
    fn latest_is_the_newest_complete_non_safety_snapshot_and_failed_names_can_be_retaken() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        assert!(matches!(repo.snapshot(LATEST), Err(Error::UnknownSnapshot(_))));
        repo.write_manifest(&snap("old", 10, &[], Status::Complete)).unwrap();
        repo.write_manifest(&snap("safe", 30, &["safety"], Status::Complete))
            .unwrap();
        let failed = Status::Failed { reason: "boom".into() };
        repo.write_manifest(&snap("broken", 40, &[], failed)).unwrap();
        repo.write_manifest(&snap("mid", 20, &[], Status::Complete)).unwrap();
        assert_eq!(repo.snapshot(LATEST).unwrap().name, "mid");
        assert_eq!(
            repo.snapshots()
                .unwrap()
                .into_iter()
                .map(|s| s.unwrap().name)
                .collect::<Vec<_>>(),
            vec!["old", "mid", "safe", "broken"],
            "oldest first"
        );
        assert!(repo.held_by_failed("broken").unwrap());
        assert!(!repo.held_by_failed("free").unwrap());
        assert!(matches!(repo.held_by_failed("mid"), Err(Error::SnapshotExists(_))));
        assert!(matches!(
            repo.restorable_snapshot("broken"),
            Err(Error::FailedSnapshot { .. })
        ));
        // A snapshot really named `latest` is that one.
        repo.write_manifest(&snap(LATEST, 1, &[], Status::Complete)).unwrap();
        assert_eq!(repo.snapshot(LATEST).unwrap().time, 1);
    }
}
