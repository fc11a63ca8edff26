//! A backup never commits a snapshot that does not restore, whatever the local index cache says,
//! and damage to the cache heals: a phantom row, an old copy of the cache put back after a
//! prune, two copies of one repository sharing a cache, a cache that is garbage.

mod support;

use support::{random_bytes, stderr, Env};

fn index_file(env: &Env) -> std::path::PathBuf {
    let dir = std::fs::read_dir(&env.cache).unwrap().next().unwrap().unwrap().path();
    dir.join("index.sqlite")
}

/// Backs up `a` as s1 and `b` as s2, keeps a copy of the cache that knows `b`'s blobs, then
/// forgets s2 and prunes its packs away.
fn with_pruned_blobs(env: &Env, a: &[u8], b: &[u8]) -> std::path::PathBuf {
    env.backup_bytes("s1", "x", a);
    env.backup_bytes("s2", "x", b);
    let saved = env.path("index.saved");
    let idx = index_file(env);
    let conn = rusqlite::Connection::open(&idx).unwrap();
    conn.execute("VACUUM INTO ?1", [saved.to_str().unwrap()]).unwrap();
    drop(conn);
    env.ok(&["forget", "s2"]);
    env.ok(&["prune", "--grace-period", "0"]);
    saved
}

fn backup_restores(env: &Env, name: &str, data: &[u8]) -> String {
    use std::process::Stdio;
    let mut child = env
        .cmd(&["backup", "--name", name, "--stdin", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let check = env.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}{}", support::stdout(&check), stderr(&check));
    assert!(env.dump(name, "x") == data, "{name} does not restore");
    stderr(&o)
}

#[test]
fn a_phantom_row_in_the_cache_is_not_trusted() {
    let env = Env::new();
    let (a, b) = (random_bytes(3 << 20, 1), random_bytes(3 << 20, 2));
    let saved = with_pruned_blobs(&env, &a, &b);
    // Rows for b's blobs, pointing into a pack that exists but does not hold them.
    let conn = rusqlite::Connection::open(index_file(&env)).unwrap();
    conn.execute("ATTACH ?1 AS old", [saved.to_str().unwrap()]).unwrap();
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO blobs SELECT b.id, (SELECT min(pid) FROM packs), b.kind, 0, 100, b.raw_len, 0
             FROM old.blobs b",
            [],
        )
        .unwrap();
    assert!(n > 10);
    drop(conn);
    let err = backup_restores(&env, "s3", &b);
    assert!(err.contains("index cache was wrong about pack"), "{err}");
}

#[test]
fn an_old_copy_of_the_cache_put_back_after_a_prune_is_not_trusted() {
    let env = Env::new();
    let (a, b) = (random_bytes(3 << 20, 3), random_bytes(3 << 20, 4));
    let saved = with_pruned_blobs(&env, &a, &b);
    let idx = index_file(&env);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", idx.display()));
    }
    std::fs::copy(&saved, &idx).unwrap();
    backup_restores(&env, "s3", &b);
}

#[test]
fn two_copies_of_one_repository_sharing_a_cache_do_not_mislead_each_other() {
    let env = Env::new();
    let (a, b) = (random_bytes(3 << 20, 5), random_bytes(3 << 20, 6));
    env.backup_bytes("s1", "x", &a);
    let copy = env.path("copy");
    assert!(std::process::Command::new("cp")
        .args(["-a", env.repo.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    // The original learns b; the copy, through the same cache, must not believe it has b.
    env.backup_bytes("s2", "x", &b);
    let other = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: copy,
        cache: env.cache.clone(),
    };
    backup_restores(&other, "s2-copy", &b);
    // And back: the original's cache rows for the copy's packs must not mislead it.
    env.ok(&["forget", "s2"]);
    env.ok(&["prune", "--grace-period", "0"]);
    backup_restores(&env, "s3", &b);
}

/// A cache that is garbage, truncated or half-written heals itself: set aside with a warning and
/// rebuilt from the packs; `repair index` never opens it.
#[test]
fn a_damaged_cache_is_set_aside_and_rebuilt() {
    let env = Env::new();
    let a = random_bytes(3 << 20, 7);
    env.backup_bytes("s1", "x", &a);
    let idx = index_file(&env);
    let size = std::fs::metadata(&idx).unwrap().len();
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let damages: Vec<(&str, Damage)> = vec![
        ("garbage", Box::new(|p| std::fs::write(p, vec![0x5a; 8192]).unwrap())),
        (
            "truncated",
            Box::new(move |p| {
                let data = std::fs::read(p).unwrap();
                std::fs::write(p, &data[..(size as usize / 2).max(100)]).unwrap()
            }),
        ),
        (
            "empty header",
            Box::new(|p| std::fs::write(p, b"SQLite format 3\0").unwrap()),
        ),
    ];
    for (i, (what, damage)) in damages.iter().enumerate() {
        // Every reading and writing command copes, and so does `repair index`.
        for (j, cmd) in ["backup", "snapshots", "dump", "check", "repair"].iter().enumerate() {
            let _ = env.run(&["snapshots"]); // a healthy cache with WAL files, then damage it
            for ext in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", idx.display()));
            }
            damage(&idx);
            let name = format!("s-{i}-{j}");
            let o = match *cmd {
                "backup" => {
                    let s = backup_restores(&env, &name, &a);
                    assert!(s.contains("damaged"), "{what}: {s}");
                    continue;
                }
                "snapshots" => env.run(&["snapshots"]),
                "dump" => env.run(&["dump", "s1", "x"]),
                "check" => env.run(&["check", "--read-data"]),
                _ => env.run(&["repair", "index"]),
            };
            assert!(o.status.success(), "{cmd} after {what}: {}", stderr(&o));
            if *cmd == "dump" {
                assert!(o.stdout == a, "{what}");
            }
        }
    }
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

fn flip_byte_in(path: &std::path::Path, at: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[at] ^= 0x40;
    std::fs::write(path, &data).unwrap();
}

/// Damage heals: after `repair packs` takes damaged blobs out, a backup of the same data stores
/// them again, and then even the old snapshot restores; a truncated or deleted pack likewise.
#[test]
fn damaged_truncated_and_deleted_packs_heal_through_repair_and_the_next_backup() {
    for damage in ["flip", "truncate", "delete"] {
        let env = Env::new();
        let a = random_bytes(4 << 20, 9);
        env.backup_bytes("s1", "x", &a);
        let packs = env.pack_files();
        assert!(packs.len() >= 3, "{packs:?}");
        let victim = &packs[1];
        match damage {
            "flip" => flip_byte_in(victim, 1000),
            "truncate" => {
                let len = std::fs::metadata(victim).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(victim).unwrap();
                f.set_len(len / 2).unwrap();
            }
            _ => std::fs::remove_file(victim).unwrap(),
        }
        let check = env.run(&["check", "--read-data"]);
        assert!(!check.status.success(), "{damage}");
        assert!(
            support::stdout(&check).contains("s1"),
            "{damage}: {}",
            support::stdout(&check)
        );
        assert!(support::stdout(&check).contains("cairn repair packs"), "{damage}");
        let r = env.ok(&["repair", "packs"]);
        if damage != "delete" {
            assert!(r.contains("removed pack"), "{damage}: {r}");
        }
        assert!(!victim.exists(), "{damage}: the damaged pack is still there");
        // The next backup of the same data stores the lost blobs again ...
        let s = env.backup_bytes("s2", "x", &a);
        assert!(support::json_u64(&s, "chunks_new") > 0, "{damage}: {s}");
        assert!(env.dump("s2", "x") == a, "{damage}");
        // ... which heals the old snapshot too.
        assert!(env.dump("s1", "x") == a, "{damage}");
        let check = env.run(&["check", "--read-data"]);
        assert!(check.status.success(), "{damage}: {}", support::stdout(&check));
    }
}

/// What cannot heal is cut out of the snapshot, marked so; an unreadable manifest or deletion
/// marker is removed by `repair snapshots` (prune refuses to run while one is unreadable).
#[test]
fn repair_snapshots_cuts_lost_items_and_removes_unreadable_manifests() {
    let env = Env::new();
    let (a, b) = (random_bytes(3 << 20, 10), random_bytes(100_000, 11));
    let src = env.path("small");
    std::fs::write(&src, &b).unwrap();
    env.ok(&["backup", "--name", "both", src.to_str().unwrap()]);
    let before = env.pack_files();
    env.backup_bytes("big", "x", &a);
    let big_only: Vec<_> = env.pack_files().into_iter().filter(|p| !before.contains(p)).collect();
    env.backup_bytes("gone", "y", &random_bytes(50_000, 12));
    // Lose a pack of "big", and damage the manifest of "gone".
    std::fs::remove_file(&big_only[0]).unwrap();
    let manifests: Vec<_> = std::fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(manifests.len(), 3);
    // Damage one manifest: snapshots lists the others; prune refuses and names the repair.
    let gone_manifest = manifests
        .iter()
        .find(|m| {
            let saved = std::fs::read(m).unwrap();
            flip_byte_in(m, 40);
            let listed = support::stdout(&env.run(&["snapshots"]));
            let hit = !listed.contains("gone");
            if !hit {
                std::fs::write(m, &saved).unwrap();
            }
            hit
        })
        .unwrap()
        .clone();
    let err = env.fails(&["prune"]);
    assert!(err.contains("cairn repair snapshots"), "{err}");
    let dry = env.ok(&["repair", "snapshots", "--dry-run"]);
    assert!(dry.contains("would remove unreadable manifest"), "{dry}");
    assert!(gone_manifest.exists());
    let r = env.ok(&["repair", "snapshots"]);
    assert!(r.contains("removed unreadable manifest"), "{r}");
    assert!(r.contains("\"big\" without its lost item(s): x"), "{r}");
    assert!(!gone_manifest.exists());
    let show = env.ok(&["show", "big", "--json"]);
    assert!(show.contains("repaired") && show.contains("lost_items"), "{show}");
    assert!(env.ok(&["snapshots"]).contains("failed"), "big lost its only item");
    // A failed snapshot is a root of nothing: prune removes it with what only it needed.
    env.ok(&["prune", "--grace-period", "0"]);
    assert!(!env.ok(&["snapshots"]).contains("big"));
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
    let restored = env.path("restored");
    env.ok(&["restore", "both", "--target", restored.to_str().unwrap()]);
}

#[test]
fn a_repair_of_snapshots_killed_half_way_is_finished_by_the_next() {
    let env = Env::new();
    let src = env.path("keep");
    std::fs::write(&src, b"kept").unwrap();
    env.ok(&["backup", "--name", "two", src.to_str().unwrap()]);
    let before = env.pack_files();
    env.backup_bytes("big", "x", &random_bytes(3 << 20, 13));
    let packs: Vec<_> = env.pack_files().into_iter().filter(|p| !before.contains(p)).collect();
    std::fs::remove_file(&packs[0]).unwrap();
    let o = env
        .cmd(&["repair", "snapshots"])
        .env("CAIRN_CRASH_POINT", "repair-snapshot-removed")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!support::stdout(&env.run(&["snapshots"])).contains("big"));
    let r = env.ok(&["repair", "snapshots"]);
    assert!(r.contains("\"big\" without its lost item(s)"), "{r}");
    assert!(env.ok(&["snapshots"]).contains("big"));
    assert!(env.ok(&["check"]).contains("no errors found"));
}

/// A blob that `check` found damaged is not deduplicated against: the next backup of the same
/// data stores it again, and restores read the new copy, before any repair.
#[test]
fn a_backup_after_check_found_damage_stores_the_damaged_chunks_again() {
    let env = Env::new();
    let a = random_bytes(4 << 20, 21);
    env.backup_bytes("s1", "x", &a);
    let packs = env.pack_files();
    flip_byte_in(&packs[1], 1000);
    let check = env.run(&["check", "--read-data"]);
    assert!(!check.status.success());
    assert!(
        support::stdout(&check).contains("damaged snapshots: s1"),
        "{}",
        support::stdout(&check)
    );
    // No repair: the backup alone stores the damaged chunk again.
    let s = env.backup_bytes("s2", "x", &a);
    assert!(support::json_u64(&s, "chunks_new") >= 1, "{s}");
    assert!(env.dump("s2", "x") == a);
    assert!(env.dump("s1", "x") == a, "the old snapshot reads the new copy");
    // The damaged copy is still in its pack (check says so), but no snapshot is damaged.
    let check = env.run(&["check", "--read-data", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["damaged_snapshots"].as_array().unwrap().len(), 0, "{report}");
    env.ok(&["repair", "packs"]);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}
