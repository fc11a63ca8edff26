//! What a backup may rely on: the repository's files, never the index cache alone.
//!
//! The index cache says which pack holds each blob, but it is a cache: a wrong row (a damaged
//! or foreign `index.sqlite`, a copy put back after a prune) must never let a backup commit a
//! snapshot that does not restore. So before a backup deduplicates against a pack, or uses one
//! of its blobs as a delta base, it reads that pack's trailer from the repository, once per
//! backup, and:
//! - a pack that is gone is dropped from the index; one whose trailer cannot be read or
//!   authenticated is not used (`cairn check` reports it, `cairn repair packs` removes it);
//! - a pack whose index rows differ from its trailer is indexed again from the trailer, with a
//!   warning;
//! - a pack marked for deletion (`deletion.rs`) when the backup started is not used;
//! - a delta is used only if every base of its chain resolves the same way;
//! - a copy that the last `cairn check` on this host found damaged is not used, so the chunk
//!   is stored again (and restores read the new copy).
//!
//! Every pack relied on is remembered. At commit the backup reads the deletion markers again:
//! a pack it relies on that a marker names without the backup's own lock (the one race
//! `deletion.rs` describes), or that is gone, puts the snapshot at risk, and
//! [`crate::Backup::commit`] copies the blobs it needs out of such packs first (or fails, naming
//! why, if they are gone).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::blob::BlobKind;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::index::{BlobLocation, Index};
use crate::pack::{self, PackEntry};
use crate::storage::ObjectStore;

/// Longest delta chain followed when checking a delta's bases (chains are bounded at 32).
const MAX_CHAIN: usize = 40;

/// The file in the cache directory where `cairn check` leaves the damaged copies it found.
fn damage_file(cache_dir: &std::path::Path, repo: &crate::id::RepoId) -> std::path::PathBuf {
    cache_dir.join(repo.to_hex()).join("damaged")
}

/// Records the damaged copies (`pack blob` per line) a check found, so that backups on this
/// host store those chunks again instead of deduplicating against them. Earlier findings for
/// packs this check did not read (`read(pack)` false) are kept.
pub(crate) fn record_damage(
    cache_dir: &std::path::Path,
    repo: &crate::id::RepoId,
    found: &HashSet<(PackId, ChunkId)>,
    read: impl Fn(&PackId) -> bool,
) -> Result<()> {
    let path = damage_file(cache_dir, repo);
    let mut all: Vec<(PackId, ChunkId)> = load_damage(cache_dir, repo)
        .into_iter()
        .filter(|(p, _)| !read(p))
        .chain(found.iter().copied())
        .collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    let text: String = all.iter().map(|(p, b)| format!("{p} {b}\n")).collect();
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::util::create_private_file(&tmp)?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| Error::Io { path, source })
}

/// The damaged copies recorded by the last check (none if it found none or never ran here).
pub(crate) fn load_damage(cache_dir: &std::path::Path, repo: &crate::id::RepoId) -> HashSet<(PackId, ChunkId)> {
    std::fs::read_to_string(damage_file(cache_dir, repo))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, b) = l.split_once(' ')?;
            Some((p.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

pub(crate) struct Trust {
    store: Arc<dyn ObjectStore>,
    keys: Keys,
    /// Packs marked for deletion when the backup started.
    marked: HashSet<PackId>,
    /// Copies `cairn check` found damaged: never relied on.
    damaged: HashSet<(PackId, ChunkId)>,
    /// Its own connection, for the rows it heals.
    index: Mutex<Index>,
    /// Packs whose trailer was read: usable or not.
    packs: Mutex<HashMap<PackId, bool>>,
    /// Deltas whose whole chain resolved.
    chains: Mutex<HashSet<ChunkId>>,
    relied: Mutex<HashSet<PackId>>,
    warnings: Arc<Mutex<Vec<String>>>,
}

/// The same blobs at the same places (bases are not compared: the index keeps them per chunk).
fn same_entries(mut a: Vec<PackEntry>, b: &[PackEntry]) -> bool {
    let key = |e: &PackEntry| (e.offset, e.id, e.kind as u8, e.length, e.raw_len, e.depth);
    let mut b: Vec<_> = b.iter().map(key).collect();
    b.sort();
    a.sort_by_key(|e| e.offset);
    a.len() == b.len() && a.iter().map(key).eq(b)
}

impl Trust {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        keys: Keys,
        marked: HashSet<PackId>,
        damaged: HashSet<(PackId, ChunkId)>,
        index: Index,
        warnings: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        Self {
            store,
            keys,
            marked,
            damaged,
            index: Mutex::new(index),
            packs: Mutex::default(),
            chains: Mutex::default(),
            relied: Mutex::default(),
            warnings,
        }
    }

    fn warn(&self, w: String) {
        self.warnings.lock().unwrap().push(w);
    }

    /// Another connection to the index cache this trust heals.
    pub fn index_connection(&self) -> Result<Index> {
        self.index.lock().unwrap().reopen()
    }

    /// Whether a pack may be relied on, reading its trailer the first time; and whether that
    /// first read changed what the index says of it (rows replaced or dropped).
    fn pack_ok(&self, id: &PackId) -> Result<(bool, bool)> {
        let mut packs = self.packs.lock().unwrap();
        if let Some(ok) = packs.get(id) {
            return Ok((*ok, false));
        }
        let mut reindexed = false;
        let ok = if self.marked.contains(id) {
            false
        } else {
            let mut idx = self.index.lock().unwrap();
            match pack::read_trailer(self.store.as_ref(), &self.keys, id) {
                Ok((size, entries)) => {
                    if !same_entries(idx.pack_entries(id)?, &entries) {
                        self.warn(format!(
                            "the index cache was wrong about pack {id}; indexed it again from the pack"
                        ));
                        idx.replace_pack(id, size, &entries)?;
                        reindexed = true;
                    }
                    true
                }
                Err(Error::NotFound(_)) => {
                    self.warn(format!(
                        "the index cache named pack {id}, which is not in the repository; dropped it"
                    ));
                    idx.remove_pack(id)?;
                    reindexed = true;
                    false
                }
                Err(e) => {
                    self.warn(format!("{e}; its blobs are stored again (`cairn check` reports it)"));
                    false
                }
            }
        };
        packs.insert(*id, ok);
        Ok((ok, reindexed))
    }

    /// A copy of `id` this backup may rely on, if any.
    pub fn resolve(&self, idx: &Index, id: &ChunkId) -> Result<Option<BlobLocation>> {
        self.resolve_at(idx, id, 0)
    }

    fn resolve_at(&self, idx: &Index, id: &ChunkId, level: usize) -> Result<Option<BlobLocation>> {
        if level > MAX_CHAIN {
            return Ok(None);
        }
        // Reading a trailer may re-index its pack: then ask the index again. A pack is read
        // once per backup, so this asks at most once more per pack named.
        loop {
            let locs = idx.locations(id)?;
            let mut reindexed = false;
            for loc in &locs {
                reindexed |= self.pack_ok(&loc.pack)?.1;
            }
            if reindexed {
                continue;
            }
            for loc in locs {
                if self.damaged.contains(&(loc.pack, *id)) || !self.pack_ok(&loc.pack)?.0 {
                    continue;
                }
                if loc.kind == BlobKind::Delta && !self.chain_ok(idx, id, level)? {
                    continue;
                }
                self.relied.lock().unwrap().insert(loc.pack);
                return Ok(Some(loc));
            }
            return Ok(None);
        }
    }

    fn chain_ok(&self, idx: &Index, id: &ChunkId, level: usize) -> Result<bool> {
        if self.chains.lock().unwrap().contains(id) {
            return Ok(true);
        }
        for b in idx.bases(id)? {
            if self.resolve_at(idx, &b, level + 1)?.is_none() {
                return Ok(false);
            }
        }
        self.chains.lock().unwrap().insert(*id);
        Ok(true)
    }

    /// Records a pack this backup wrote.
    pub fn wrote(&self, id: PackId) {
        self.relied.lock().unwrap().insert(id);
    }

    /// The packs relied on that are gone, or marked for deletion by a marker that did not record
    /// `own_lock` (see the module documentation).
    pub fn at_risk(&self, own_lock: &str) -> Result<HashSet<PackId>> {
        let relied = self.relied.lock().unwrap().clone();
        let mut risky: HashSet<PackId> = crate::deletion::marked(self.store.as_ref(), &self.keys)?
            .into_iter()
            .filter(|(p, locks)| relied.contains(p) && !locks.iter().any(|l| l == own_lock))
            .map(|(p, _)| p)
            .collect();
        for p in &relied {
            match self.store.size(&pack::pack_path(p)) {
                Ok(_) => {}
                Err(Error::NotFound(_)) => {
                    risky.insert(*p);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(risky)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;

    fn entry(id: u8, offset: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([id; 32]),
            kind: BlobKind::Data,
            offset,
            length: 10,
            raw_len: 20,
            bases: Vec::new(),
            depth: 0,
            sketch: Default::default(),
        }
    }

    #[test]
    fn entries_compare_by_content_not_order() {
        let a = vec![entry(1, 0), entry(2, 10)];
        assert!(same_entries(a.clone(), &[entry(2, 10), entry(1, 0)]));
        assert!(!same_entries(a.clone(), &[entry(1, 0)]), "a phantom row");
        assert!(!same_entries(a, &[entry(1, 0), entry(2, 11)]), "a wrong offset");
    }

    #[test]
    fn the_damage_file_round_trips_and_ignores_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::id::RepoId([4; 32]);
        std::fs::create_dir_all(dir.path().join(repo.to_hex())).unwrap();
        let found: HashSet<(PackId, ChunkId)> = [(PackId([1; 32]), ChunkId([2; 32]))].into();
        record_damage(dir.path(), &repo, &found, |_| true).unwrap();
        assert_eq!(load_damage(dir.path(), &repo), found);
        let path = damage_file(dir.path(), &repo);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("garbage\nzz 12\n\u{0}\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(load_damage(dir.path(), &repo), found, "garbage lines are skipped");
        record_damage(dir.path(), &repo, &HashSet::new(), |_| true).unwrap();
        assert!(!path.exists(), "a clean check leaves no file");
    }
}
