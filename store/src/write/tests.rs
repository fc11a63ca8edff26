//! Tests of the write path through the public API and one injected race.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::pack::pack_path;
use crate::util::now_unix;
use crate::{Credentials, InitOptions, NewKey, NoProgress, OpenOptions};

fn repo(dir: &Path) -> Repository {
    let opts = OpenOptions {
        cache_dir: dir.join("cache"),
        ..Default::default()
    };
    let key = NewKey::Passphrase {
        passphrase: "pw".to_string().into(),
        log_n: Some(10),
    };
    Repository::init(&dir.join("repo").into(), &key, &InitOptions::default(), opts.clone()).unwrap();
    Repository::open(
        &dir.join("repo").into(),
        &Credentials::Passphrase("pw".to_string().into()),
        opts,
    )
    .unwrap()
}

#[test]
fn a_backup_takes_items_from_several_threads_at_once() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let backup = repo.backup(BackupOptions::default(), Arc::new(NoProgress)).unwrap();
    shareable(&backup);
    let data: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            (0..3_000_000u32)
                .map(|n| (n.wrapping_mul(2654435761) >> (i + 3)) as u8)
                .collect()
        })
        .collect();
    std::thread::scope(|s| {
        for (i, d) in data.iter().enumerate() {
            let b = &backup;
            s.spawn(move || b.add_stream(&format!("s{i}"), &d[..]).unwrap());
        }
        // The same name twice at the same time is refused for one of them.
        let b = &backup;
        let slow = std::io::Read::chain(&b"x"[..], std::io::repeat(7).take(1 << 20));
        let one = s.spawn(move || b.add_stream("twice", slow).is_ok());
        let two = s.spawn(move || b.add_stream("twice", &b"y"[..]).is_ok());
        assert!(
            one.join().unwrap() ^ two.join().unwrap(),
            "exactly one of two same-named items is kept"
        );
    });
    backup.set_item_meta("s2", "rows", 42.into()).unwrap();
    assert!(backup.set_item_meta("nope", "rows", 1.into()).is_err());
    let snap = backup.commit().unwrap();
    assert_eq!(snap.items.len(), 5);
    assert_eq!(snap.item("s2").unwrap().meta["rows"], 42);
    for (i, d) in data.iter().enumerate() {
        let mut out = Vec::new();
        repo.dump(&snap.name, &format!("s{i}"), &mut out, &NoProgress).unwrap();
        assert!(out == *d, "stream s{i} differs");
    }
}

/// The one race deletion markers leave open (`deletion.rs`): a marker written after the
/// backup read the markers, without its lock. The commit copies what it needs out of the
/// marked packs; if they are gone already, it commits nothing and says why.
#[test]
fn commit_rescues_blobs_from_packs_marked_meanwhile_or_fails_if_they_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|n| (n.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let named = |n: &str| BackupOptions {
        name: Some(n.into()),
        ..Default::default()
    };
    let b = repo.backup(named("old"), Arc::new(NoProgress)).unwrap();
    b.add_stream("s", &data[..]).unwrap();
    b.commit().unwrap();
    repo.forget(&["old".into()]).unwrap();
    let packs = || {
        let (_, idx) = repo.synced().unwrap();
        idx.packs().unwrap().into_iter().map(|p| p.0).collect::<Vec<_>>()
    };
    for gone in [false, true] {
        let name = if gone { "late" } else { "rescued" };
        let old_packs = packs();
        let b = repo.backup(named(name), Arc::new(NoProgress)).unwrap();
        let item = b.add_stream("s", &data[..]).unwrap();
        assert_eq!(
            item.stats.chunks_new, 0,
            "everything deduplicated against the old packs"
        );
        // A prune that did not see this backup marks the old packs (and, later, deletes them).
        crate::deletion::write(
            repo.store.as_ref(),
            &repo.keys,
            &crate::deletion::Marker::new(now_unix(), old_packs.clone(), Vec::new()),
        )
        .unwrap();
        if gone {
            for p in &old_packs {
                repo.store.delete(&pack_path(p)).unwrap();
            }
            let err = b.commit().unwrap_err();
            assert!(matches!(err, Error::Concurrent(_)), "{err}");
            assert!(err.to_string().contains("nothing was committed"), "{err}");
            assert!(!repo.snapshot_exists(name).unwrap());
        } else {
            let snap = b.commit().unwrap();
            assert!(repo.snapshot_exists(name).unwrap());
            for p in &old_packs {
                repo.store.delete(&pack_path(p)).unwrap();
            }
            let mut out = Vec::new();
            repo.dump(&snap.name, "s", &mut out, &NoProgress).unwrap();
            assert!(out == data, "the rescued snapshot restores");
        }
    }
}
