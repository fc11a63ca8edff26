//! Deletion markers: the first phase of deleting packs.
//!
//! Prune never deletes a pack it has just found unreferenced: a backup that started earlier may
//! have deduplicated against it and not yet written its manifest. It writes a marker instead,
//! `deletions/<32 hex>`, a sealed object (associated data `"cairn deletion v1" | name`) holding
//! JSON `{version, time, host, packs, locks}`: the packs to delete and the names of the lock
//! files present when it was written (the backups then running). A later prune deletes a
//! marker's packs only when all of these hold, checked in this order:
//!
//! 1. the marker is at least the grace period old (by that prune's clock; a convenience that
//!    spares running backups work, not what safety rests on);
//! 2. none of the recorded locks is still there, unless its owner is proven dead
//!    ([`crate::lock::LockInfo::is_dead`]): a backup stopped for hours or running in another
//!    pid namespace keeps its lock, so nothing it may reference goes;
//! 3. *after* 1 and 2, the snapshots are listed again and the pack holds no live blob that no
//!    other surviving pack holds. A backup whose lock is gone has written its manifest, so this
//!    listing sees what it references.
//!
//! A backup reads the markers after taking its lock and never deduplicates against a marked
//! pack. A marker written after that records the backup's lock, except in one narrow race (the
//! prune listed locks just before the backup took its lock, and wrote the marker just after the
//! backup read the markers); for that, a backup reads the markers again before it commits and
//! copies what it needs out of packs marked without its lock ([`crate::write`]).
//!
//! Markers are never changed: a prune that keeps some packs of a marker writes a new marker with
//! the rest and then removes the old one. A crash leaves at worst a marker whose packs are gone
//! (deleting them again is harmless) or a pack marked twice.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::crypto::Keys;
use crate::error::{corrupt, Result};
use crate::id::PackId;
use crate::storage::ObjectStore;

pub const DIR: &str = "deletions";
const VERSION: u32 = 1;

/// What a marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub version: u32,
    /// When it was written (the writer's clock, Unix seconds).
    pub time: i64,
    pub host: String,
    pub packs: Vec<PackId>,
    /// Lock file names present when it was written.
    pub locks: Vec<String>,
}

impl Marker {
    pub fn new(time: i64, packs: Vec<PackId>, locks: Vec<String>) -> Self {
        Self {
            version: VERSION,
            time,
            host: crate::util::hostname(),
            packs,
            locks,
        }
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = b"cairn deletion v1".to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

/// Writes a new marker; returns its name.
pub fn write(store: &dyn ObjectStore, keys: &Keys, marker: &Marker) -> Result<String> {
    let name = hex::encode(rand::random::<[u8; 16]>());
    let sealed = keys.seal(&aad(&name), &serde_json::to_vec(marker).expect("marker serialises"));
    store.put(&format!("{DIR}/{name}"), &sealed)?;
    Ok(name)
}

/// Reads one marker.
pub fn read(store: &dyn ObjectStore, keys: &Keys, name: &str) -> Result<Marker> {
    let what = format!("deletion marker {DIR}/{name}");
    let sealed = store.get(&format!("{DIR}/{name}"))?;
    let plain = keys.open(&what, &aad(name), &sealed)?;
    let m: Marker = serde_json::from_slice(&plain).map_err(|e| corrupt(&what, e.to_string()))?;
    if m.version != VERSION {
        return Err(corrupt(&what, format!("marker version {} is not {VERSION}", m.version)));
    }
    Ok(m)
}

/// Every marker, with what it says or why it could not be read. A marker removed between the
/// listing and the read (its prune finished) is left out.
pub fn list(store: &dyn ObjectStore, keys: &Keys) -> Result<Vec<(String, Result<Marker>)>> {
    let mut out = Vec::new();
    for name in crate::storage::names_in(store, DIR)? {
        match read(store, keys, &name) {
            Err(crate::Error::NotFound(_)) => {}
            r => out.push((name, r)),
        }
    }
    Ok(out)
}

/// The packs some readable marker names, each with the lock names its marker recorded.
/// Unreadable markers are skipped here (prune reports them; `cairn repair snapshots` removes them).
pub fn marked(store: &dyn ObjectStore, keys: &Keys) -> Result<Vec<(PackId, Vec<String>)>> {
    let mut out = Vec::new();
    for (_, m) in list(store, keys)? {
        if let Ok(m) = m {
            out.extend(m.packs.iter().map(|p| (*p, m.locks.clone())));
        }
    }
    Ok(out)
}

/// The marked packs, whatever lock their markers recorded.
pub fn marked_set(store: &dyn ObjectStore, keys: &Keys) -> Result<HashSet<PackId>> {
    Ok(marked(store, keys)?.into_iter().map(|(p, _)| p).collect())
}

pub fn remove(store: &dyn ObjectStore, name: &str) -> Result<()> {
    store.delete(&format!("{DIR}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secrets;
    use crate::storage::LocalStore;

    #[test]
    fn markers_round_trip_and_are_bound_to_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let be = LocalStore::create(dir.path()).unwrap();
        let keys = Keys::new(Secrets::generate());
        let m = Marker::new(1_800_000_000, vec![PackId([7; 32])], vec!["ab".into()]);
        let name = write(&be, &keys, &m).unwrap();
        assert_eq!(read(&be, &keys, &name).unwrap(), m);
        assert_eq!(
            marked(&be, &keys).unwrap(),
            vec![(PackId([7; 32]), vec!["ab".to_string()])]
        );
        // Moved to another name, it no longer authenticates.
        let data = be.get(&format!("{DIR}/{name}")).unwrap();
        be.put(&format!("{DIR}/other"), &data).unwrap();
        assert!(read(&be, &keys, "other").is_err());
        assert_eq!(marked_set(&be, &keys).unwrap().len(), 1, "the moved copy is skipped");
    }
}
