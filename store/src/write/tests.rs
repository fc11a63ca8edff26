//! Tests of the write path through the public API and one injected race.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::pack::pack_path;
use crate::util::now_unix;
use crate::{Credentials, InitOptions, NewKey, NoProgress, OpenOptions};

fn repo(dir: &Path) -> Repository {
    repo_with(dir, &InitOptions::default())
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
    // Periodic (a few distinct chunks), and long enough that its chunk list is stored in a
    // piece of its own, which the rescue must find too.
    let data: Vec<u8> = (0..6_000_000u32)
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
        b.add_stream("s", &data[..]).unwrap();
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
            let stats = &snap.item("s").unwrap().stats;
            assert_eq!(stats.chunks_new, 0, "everything deduplicated against the old packs");
            for p in &old_packs {
                repo.store.delete(&pack_path(p)).unwrap();
            }
            let mut out = Vec::new();
            repo.dump(&snap.name, "s", &mut out, &NoProgress).unwrap();
            assert!(out == data, "the rescued snapshot restores");
        }
    }
}

fn repo_with(dir: &Path, init: &InitOptions) -> Repository {
    let opts = OpenOptions {
        cache_dir: dir.join("cache"),
        ..Default::default()
    };
    let key = NewKey::Passphrase {
        passphrase: "pw".to_string().into(),
        log_n: Some(10),
    };
    Repository::init(&dir.join("repo").into(), &key, init, opts.clone()).unwrap();
    let creds = Credentials::Passphrase("pw".to_string().into());
    Repository::open(&dir.join("repo").into(), &creds, opts).unwrap()
}

/// Text shaped like a sysbench dump: numbered rows of about 190 bytes (a number, a string of 119
/// digits and dashes and one of 59), distinct everywhere.
fn rows(n: usize) -> Vec<u8> {
    let mut x = 1u64;
    let mut out = Vec::new();
    for i in 0..n {
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            format!("{:011}", x >> 27)
        };
        let c: Vec<String> = (0..10).map(|_| next()).collect();
        let pad: Vec<String> = (0..5).map(|_| next()).collect();
        out.extend_from_slice(format!("({i},{},'{}','{}'),\n", x >> 44, c.join("-"), pad.join("-")).as_bytes());
    }
    out
}

fn backup_stream(repo: &Repository, name: &str, data: &[u8]) -> crate::Item {
    let b = repo
        .backup(
            BackupOptions {
                name: Some(name.into()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .unwrap();
    b.add_stream("s", data).unwrap();
    // An item's stats are complete once the snapshot is.
    b.commit().unwrap().item("s").unwrap().clone()
}

fn restores(repo: &Repository, name: &str, data: &[u8]) {
    let mut out = Vec::new();
    repo.dump(name, "s", &mut out, &NoProgress).unwrap();
    assert!(out == data, "{name} restores to what was backed up");
}

fn checks_clean(repo: &Repository) -> crate::CheckReport {
    let report = repo
        .check(
            &crate::CheckOptions {
                read_data: crate::ReadData::All,
            },
            &NoProgress,
        )
        .unwrap();
    assert!(
        report.errors.is_empty() && report.damaged_snapshots.is_empty(),
        "{report:?}"
    );
    report
}

/// A stream changed in a few places everywhere along it changes every piece of its chunk list
/// a little: the pieces are stored as deltas against the previous list's, not whole again.
#[test]
fn a_chunk_list_that_changed_a_little_is_stored_as_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let init = InitOptions {
        chunker: crate::ChunkerParams::with_avg(1024),
        ..Default::default()
    };
    let repo = repo_with(dir.path(), &init);
    let v1 = rows(15_000);
    backup_stream(&repo, "v1", &v1);
    let mut v2 = v1.clone();
    for at in (1000..v2.len()).step_by(20_000) {
        v2[at] = b'#';
    }
    let item = backup_stream(&repo, "v2", &v2);
    let snap = repo.snapshot("v2").unwrap();
    let crate::ItemKind::Stream { content } = &snap.item("s").unwrap().kind else {
        panic!("a stream")
    };
    assert_eq!(
        content.depth, 2,
        "a list of {} chunks, two levels up",
        item.stats.chunks
    );
    let (synced, idx) = repo.synced().unwrap();
    let pieces = crate::read::BlobReader::new(&synced)
        .unwrap()
        .list_pieces(content)
        .unwrap();
    let changed: Vec<_> = pieces
        .iter()
        .filter_map(|p| idx.locations(&p.0).unwrap().into_iter().next())
        .filter(|l| l.kind == crate::blob::BlobKind::Delta)
        .collect();
    // The changed pieces found bases in the previous list (a piece whose cut moved far enough
    // to span more than three old ones may still be stored whole).
    let v1_content = match &repo.snapshot("v1").unwrap().item("s").unwrap().kind {
        crate::ItemKind::Stream { content } => content.clone(),
        _ => unreachable!(),
    };
    let old = crate::read::BlobReader::new(&synced)
        .unwrap()
        .list_pieces(&v1_content)
        .unwrap();
    let new_pieces = pieces.iter().filter(|p| !old.contains(p)).count();
    assert!(
        new_pieces >= 10,
        "changes all along the list ({new_pieces} pieces changed)"
    );
    assert!(
        changed.len() * 10 >= new_pieces * 9,
        "{} of {new_pieces} changed pieces are deltas",
        changed.len()
    );
    drop(idx);
    restores(&repo, "v1", &v1);
    restores(&repo, "v2", &v2);
    checks_clean(&repo);
}

/// A region that changes at every backup: once its chain would pass the depth limit, the chunk
/// is encoded against its chain's root (one delta deep again) instead of being stored whole.
#[test]
fn chains_at_their_limit_restart_from_their_root_not_whole() {
    let dir = tempfile::tempdir().unwrap();
    let init = InitOptions {
        chunker: crate::ChunkerParams::with_avg(16 * 1024),
        delta: crate::DeltaConfig {
            max_depth: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let repo = repo_with(dir.path(), &init);
    let mut data = rows(8_000);
    let mut versions = Vec::new();
    let mut whole = 0;
    for v in 0..12 {
        // A few rows in the middle change each time.
        for k in 0..4 {
            let at = data.len() / 2 + k * 3000 + v * 7;
            data[at] = b'0' + (v % 10) as u8;
        }
        let item = backup_stream(&repo, &format!("v{v}"), &data);
        if v > 0 {
            whole += item.stats.chunks_new - item.stats.chunks_delta;
        }
        versions.push(data.clone());
    }
    // Stored whole at each chain's limit, the two changing chunks would be whole 3 to 6 times
    // each; restarted from their roots, never (once, if a change moved a cut off its root).
    assert!(whole <= 1, "{whole} chunks stored whole after the first version");
    let report = checks_clean(&repo);
    assert!(report.deepest_delta_chain <= 4, "{report:?}");
    for (v, d) in versions.iter().enumerate() {
        restores(&repo, &format!("v{v}"), d);
    }
}

/// Rows that changed everywhere and moved far (a column added to every row, the table's halves
/// swapped): no chunk is a duplicate and none is where its old version was, so only the content
/// -based selector finds bases; the new version costs a fraction of storing it again.
#[test]
fn changed_rows_that_moved_find_their_old_versions_by_sketch() {
    let dir = tempfile::tempdir().unwrap();
    let init = InitOptions {
        chunker: crate::ChunkerParams::with_avg(16 * 1024),
        ..Default::default()
    };
    let repo = repo_with(dir.path(), &init);
    let v1 = rows(8_000);
    let first = backup_stream(&repo, "v1", &v1);
    let text = String::from_utf8(v1.clone()).unwrap();
    let widened: Vec<String> = text.lines().map(|l| l.replace("'),", "',0),")).collect();
    let half = widened.len() / 2;
    let v2 = [&widened[half..], &widened[..half]].concat().join("\n").into_bytes();
    let item = backup_stream(&repo, "v2", &v2);
    let s = &item.stats;
    assert!(s.chunks_new * 10 >= s.chunks * 9, "every chunk changed: {s:?}");
    assert!(s.chunks_delta * 3 >= s.chunks_new * 2, "most found a base: {s:?}");
    assert!(
        s.bytes_added * 2 < first.stats.bytes_added,
        "{} bytes added, the first version took {}",
        s.bytes_added,
        first.stats.bytes_added
    );
    restores(&repo, "v2", &v2);
    checks_clean(&repo);
}
