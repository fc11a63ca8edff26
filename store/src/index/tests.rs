//! The index cache against what it is given and what the packs say.

use std::collections::HashSet;

use super::*;
use crate::crypto::Secrets;
use crate::pack::PackWriter;
use crate::storage::LocalStore;

fn cid(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

fn entry(n: u8, offset: u32, bases: &[u8], depth: u8) -> PackEntry {
    PackEntry {
        id: cid(n),
        kind: if bases.is_empty() {
            BlobKind::Data
        } else {
            BlobKind::Delta
        },
        offset,
        length: 10,
        raw_len: 20,
        bases: bases.iter().map(|b| cid(*b)).collect(),
        depth,
        sketch: Default::default(),
    }
}

fn fresh() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(dir.path(), &RepoId([1; 32])).unwrap();
    (dir, idx)
}

#[test]
fn packs_blobs_and_bases_round_trip() {
    let (_d, mut idx) = fresh();
    let (p1, p2) = (PackId([1; 32]), PackId([0x81; 32]));
    idx.replace_pack(&p1, 100, &[entry(1, 0, &[], 0), entry(2, 10, &[1], 1)])
        .unwrap();
    // The same chunk in a second pack, stored whole there: the shortest chain comes first.
    idx.replace_pack(&p2, 50, &[entry(2, 0, &[], 0), entry(3, 10, &[2], 1)])
        .unwrap();
    let locs = idx.locations(&cid(2)).unwrap();
    assert_eq!(
        locs.iter().map(|l| (l.pack, l.depth)).collect::<Vec<_>>(),
        vec![(p2, 0), (p1, 1)]
    );
    assert!(idx.contains(&cid(3)).unwrap());
    assert!(!idx.contains(&cid(9)).unwrap());
    assert_eq!(idx.bases(&cid(3)).unwrap(), vec![cid(2)]);
    assert!(idx.bases(&cid(1)).unwrap().is_empty());
    assert_eq!(
        idx.pack_entries(&p1).unwrap(),
        vec![entry(1, 0, &[], 0), entry(2, 10, &[1], 1)]
    );
    assert_eq!(idx.packs().unwrap(), vec![(p1, 100), (p2, 50)]);
    assert_eq!(idx.deepest_chain().unwrap(), 1);
    idx.remove_pack(&p1).unwrap();
    assert!(!idx.contains(&cid(1)).unwrap());
    assert_eq!(idx.locations(&cid(2)).unwrap().len(), 1);
    assert!(idx.pack_entries(&p1).unwrap().is_empty());
    // A second connection sees the same cache.
    assert!(idx.reopen().unwrap().contains(&cid(3)).unwrap());
}

#[test]
fn the_broken_closure_follows_chains_to_damage_and_to_missing_bases() {
    let (_d, mut idx) = fresh();
    // 1 <- 2 <- 3, and 5 on a base (4) no pack holds; 6 stands alone.
    idx.replace_pack(
        &PackId([1; 32]),
        100,
        &[
            entry(1, 0, &[], 0),
            entry(2, 10, &[1], 1),
            entry(3, 20, &[2], 2),
            entry(5, 30, &[4], 1),
            entry(6, 40, &[], 0),
        ],
    )
    .unwrap();
    let none = idx.broken_closure(&HashSet::new()).unwrap();
    assert_eq!(none, [cid(5)].into_iter().collect());
    let some = idx.broken_closure(&[cid(2)].into_iter().collect()).unwrap();
    assert_eq!(some, [cid(2), cid(3), cid(5)].into_iter().collect());
}

#[test]
fn sync_finds_new_packs_drops_gone_ones_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::create(&dir.path().join("repo")).unwrap();
    let keys = Keys::new(Secrets::generate());
    let write = |n: u8| {
        let mut w = PackWriter::new(&store).unwrap();
        w.add(cid(n), BlobKind::Data, 3, &[n; 40], &[], 0, Default::default())
            .unwrap();
        w.finish(&keys).unwrap()
    };
    let (a, b) = (write(1), write(2));
    let mut idx = Index::open(&dir.path().join("cache"), &RepoId([2; 32])).unwrap();
    let s = idx.sync(&store, &keys).unwrap();
    assert_eq!((s.packs_added, s.packs_removed), (2, 0));
    assert!(idx.contains(&cid(1)).unwrap() && idx.contains(&cid(2)).unwrap());
    let s = idx.sync(&store, &keys).unwrap();
    assert_eq!((s.packs_added, s.packs_removed), (0, 0), "nothing new: nothing read");
    store.delete(&crate::pack::pack_path(&a.id)).unwrap();
    let garbage = PackId([0xee; 32]);
    store.put(&crate::pack::pack_path(&garbage), b"not a pack").unwrap();
    let s = idx.sync(&store, &keys).unwrap();
    assert_eq!((s.packs_added, s.packs_removed), (0, 1));
    assert_eq!(s.unreadable.len(), 1);
    assert_eq!(s.unreadable[0].0, garbage);
    assert!(!idx.contains(&cid(1)).unwrap(), "a pack that is gone leaves the index");
    assert!(idx.contains(&cid(2)).unwrap());
    let rebuilt = idx.rebuild(&store, &keys).unwrap();
    assert_eq!(rebuilt.packs_added, 1);
    assert_eq!(idx.pack_entries(&b.id).unwrap().len(), 1);
}
