//! Retention and pruning end to end: `cairn forget` by policy and by name, `cairn prune`
//! keeping delta bases alive, SIGKILL at each step of a prune, and a backup running while a
//! prune is asked for.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{dump_text, json_u64, random_bytes, stderr, stdout, Env};

fn repo_bytes(env: &Env) -> u64 {
    env.pack_files()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Six daily dumps of a slowly changing database (later ones stored largely as deltas of
/// earlier ones); the first three also end in 2 MiB of data no later day has.
fn six_days(env: &Env) -> Vec<Vec<u8>> {
    (0..6u64)
        .map(|d| {
            let mut data = dump_text(3 << 20, d * 7 + 1);
            if d < 3 {
                data.extend(random_bytes(2 << 20, 100 + d));
            }
            let s = env.backup_bytes(&format!("day{d}"), "db.sql", &data);
            // Later days are stored as deltas against earlier days' chunks (the bases prune must keep).
            assert!(d == 0 || json_u64(&s, "chunks_delta") > 0, "day{d}: {s}");
            data
        })
        .collect()
}

#[test]
fn forget_by_policy_then_prune_keeps_delta_bases_and_frees_space() {
    let env = Env::new();
    let days = six_days(&env);
    // A failed system snapshot (its one database's dump fails): prune removes it.
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let cfg = env.path("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\nwork_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [[exec]]\nname = \"db\"\ndump = \"echo partial; exit 3\"\nrestore = \"cat\"\n",
            env.repo.display(),
            env.path("password").display(),
            env.dir.path().display(),
            env.path("state").display()
        ),
    )
    .unwrap();
    let out = env.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "backup",
        "--system",
        "--name",
        "broken",
    ]);
    assert!(!out.status.success());
    assert!(env.ok(&["snapshots"]).contains("broken"));

    // No keep rule is refused: it would forget everything.
    let err = env.fails(&["forget"]);
    assert!(err.contains("no keep rule"), "{err}");
    let err = env.fails(&["forget", "day1", "--keep-last", "2"]);
    assert!(err.contains("not both"), "{err}");
    let err = env.fails(&["forget", "--keep-within", "7x"]);
    assert!(err.contains("7x"), "{err}");

    let plan = env.ok(&["forget", "--keep-last", "2", "--dry-run"]);
    assert!(plan.contains("would forget 5 of 7"), "{plan}");
    assert!(plan.contains("failed snapshot") && plan.contains("last 2"), "{plan}");
    assert_eq!(
        env.ok(&["snapshots"]).matches("day").count(),
        6,
        "a dry run changed something"
    );

    let before = repo_bytes(&env);
    let dry = env.ok(&["prune", "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(repo_bytes(&env), before, "a dry-run prune changed the repository");
    assert_eq!(dry["failed_snapshots"][0], "broken");

    let out = env.ok(&["forget", "--keep-last", "2", "--prune", "--json"]);
    assert!(out.contains("\"keep\": false"), "{out}");
    let after = repo_bytes(&env);
    assert!(after * 2 < before, "prune left {after} of {before} bytes");
    let snaps = env.ok(&["snapshots"]);
    assert!(
        snaps.contains("day4") && snaps.contains("day5") && !snaps.contains("day3") && !snaps.contains("broken"),
        "{snaps}"
    );
    // day4 and day5 are mostly deltas against chunks of days 0-3: those bases must still be there.
    assert_eq!(env.dump("day4", "db.sql"), days[4]);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors found"), "{check}");

    // Forgetting by name, then a prune with nothing to do.
    env.ok(&["forget", "day4"]);
    let err = env.fails(&["forget", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    env.ok(&["prune"]);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--json"])).unwrap();
    assert_eq!(json_u64(&r, "packs_deleted") + json_u64(&r, "packs_repacked"), 0, "{r}");
}

/// A dump in which a row every ~15 KB changes each day: every chunk is a delta of the day before.
fn churning_dump(day: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..20_000u64 {
        let v = if i % 150 == day % 150 { day + 1 } else { 0 };
        let r = random_bytes(40, i * 7 + v * 100_003);
        out.extend_from_slice(format!("INSERT INTO t VALUES ({i},'{}');\n", hex(&r)).as_bytes());
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A pack kept for its live blobs can also hold dead deltas whose bases are in packs prune
/// deletes (short chains restart often, so old versions die while packs they share live on):
/// prune must leave no unreadable blob behind (check --read-data decodes every blob).
#[test]
fn prune_leaves_every_remaining_blob_readable() {
    for repack_below in ["0", "50"] {
        let env = Env::empty();
        env.ok(&["init", "--pack-size-mib", "1", "--delta-max-depth", "2"]);
        let days: Vec<Vec<u8>> = (0..8).map(churning_dump).collect();
        for (d, data) in days.iter().enumerate() {
            let s = env.backup_bytes(&format!("day{d}"), "db.sql", data);
            assert!(d == 0 || json_u64(&s, "chunks_delta") > 0, "{s}");
        }
        env.ok(&["forget", "--keep-last", "3"]);
        env.ok(&["prune", "--repack-below", repack_below]);
        let check = env.run(&["check", "--read-data"]);
        assert!(
            check.status.success(),
            "--repack-below {repack_below}: {}{}",
            stdout(&check),
            stderr(&check)
        );
        for (d, data) in days.iter().enumerate().skip(5) {
            assert_eq!(&env.dump(&format!("day{d}"), "db.sql"), data);
        }
    }
}

#[test]
fn sigkill_at_each_step_of_a_prune_loses_nothing() {
    let env = Env::new();
    let days = six_days(&env);
    env.ok(&["forget", "--keep-last", "2"]);
    // Repack everything that has a dead blob, so every step (copy, index, delete) happens.
    for point in ["prune-copying", "prune-indexed", "prune-deleting"] {
        let out = env
            .cmd(&["prune", "--repack-below", "100"])
            .env("CAIRN_CRASH_POINT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "prune was not killed at {point}: {}",
            stdout(&out)
        );
        assert!(stderr(&out).contains(point), "{}", stderr(&out));
        let check = env.run(&["check", "--read-data"]);
        assert!(
            check.status.success(),
            "after a kill at {point}: {}{}",
            stdout(&check),
            stderr(&check)
        );
        assert_eq!(env.dump("day4", "db.sql"), days[4], "after a kill at {point}");
        assert_eq!(env.dump("day5", "db.sql"), days[5], "after a kill at {point}");
    }
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--repack-below", "100", "--json"])).unwrap();
    assert!(json_u64(&r, "packs_before") >= json_u64(&r, "packs_deleted"), "{r}");
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
    assert_eq!(env.dump("day4", "db.sql"), days[4]);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    // Nothing is left to do, and no crashed run's temp files remain after a clean one.
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--json"])).unwrap();
    assert_eq!(json_u64(&r, "packs_deleted"), 0, "{r}");
}

#[test]
fn a_backup_running_during_a_prune_is_not_harmed() {
    let env = Env::new();
    let days = six_days(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    // A backup whose source is slow and shares most chunks with the snapshots being pruned.
    let src = env.path("slow.sql");
    let next = dump_text(3 << 20, 99);
    std::fs::write(&src, &next).unwrap();
    let slow = format!("sleep 2; cat {}; sleep 1", src.display());
    let mut backup = env
        .cmd(&[
            "backup",
            "--name",
            "during",
            "--stdin-from-command",
            "db.sql",
            "--",
            "sh",
            "-c",
            &slow,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while env.repo.join("locks").read_dir().unwrap().next().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the backup took no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The prune waits for the backup's lock, then runs.
    let out = env.run(&["prune", "--repack-below", "100", "--lock-wait", "60"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let b = backup.wait().unwrap();
    assert!(b.success());
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "prune did not wait for the backup"
    );
    assert_eq!(env.dump("during", "db.sql"), next);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}
