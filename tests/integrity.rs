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
    let damages: Vec<(&str, Box<dyn Fn(&std::path::Path)>)> = vec![
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
