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
    let packs_before = env.pack_files();
    let dry = env.ok(&["prune", "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(repo_bytes(&env), before, "a dry-run prune changed the repository");
    assert_eq!(dry["failed_snapshots"][0], "broken");

    let out = env.ok(&["forget", "--keep-last", "2", "--prune", "--json"]);
    assert!(out.contains("\"keep\": false"), "{out}");
    // Two phases: this prune only marks; a prune after the grace period deletes.
    for p in &packs_before {
        assert!(p.exists(), "a first prune deleted {} at once", p.display());
    }
    assert_eq!(env.repo.join("deletions").read_dir().unwrap().count(), 1);
    let waiting: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--json"])).unwrap();
    assert_eq!(json_u64(&waiting, "packs_deleted"), 0, "{waiting}");
    assert!(json_u64(&waiting, "packs_waiting") > 0, "{waiting}");
    assert!(waiting["waiting"][0].as_str().unwrap().contains("grace"), "{waiting}");
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(json_u64(&r, "packs_deleted") > 0, "{r}");
    assert_eq!(
        env.repo.join("deletions").read_dir().unwrap().count(),
        0,
        "markers left"
    );
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
    env.ok(&["prune", "--grace-period", "0"]);
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
    for point in ["prune-copying", "prune-indexed", "prune-marked", "prune-deleting"] {
        let out = env
            .cmd(&["prune", "--repack-below", "100", "--grace-period", "0"])
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
    let r: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--repack-below", "100", "--grace-period", "0", "--json"])).unwrap();
    assert!(json_u64(&r, "packs_before") >= json_u64(&r, "packs_deleted"), "{r}");
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
    assert_eq!(env.dump("day4", "db.sql"), days[4]);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    // Nothing is left to do, and no crashed run's temp files remain after a clean one.
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--json"])).unwrap();
    assert_eq!(json_u64(&r, "packs_deleted"), 0, "{r}");
}

/// A `sh -c` script for `--stdin-from-command` that writes `file`, then waits `secs` seconds.
fn slow_source(file: &std::path::Path, secs: u32) -> String {
    format!("cat {}; sleep {secs}", file.display())
}

fn spawn_backup(env: &Env, name: &str, script: &str, wrap: &[&str]) -> std::process::Child {
    let base = env.backup_of_script(name, script);
    let mut c = if wrap.is_empty() {
        base
    } else {
        support::wrapped(&base, wrap)
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_lock(env: &Env) {
    let start = Instant::now();
    while env.repo.join("locks").read_dir().unwrap().next().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the backup took no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backup running while a prune deletes: the prune does not wait for it, and deletes nothing
/// the backup may reference until the backup is done; then it deletes the rest.
#[test]
fn a_backup_running_during_a_prune_is_not_harmed() {
    let env = Env::new();
    let days = six_days(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    // A backup whose source shares most chunks with the snapshots being pruned, and is slow.
    let src = env.path("old.sql");
    std::fs::write(&src, &days[0]).unwrap();
    let mut backup = spawn_backup(&env, "during", &slow_source(&src, 4), &[]);
    wait_for_lock(&env);
    std::thread::sleep(Duration::from_millis(1500));
    let before = repo_bytes(&env);
    let r: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--repack-below", "100", "--grace-period", "0", "--json"])).unwrap();
    assert!(backup.try_wait().unwrap().is_none(), "prune waited for the backup");
    assert_eq!(json_u64(&r, "packs_deleted"), 0, "deleted under a running backup: {r}");
    assert!(r["waiting"][0].as_str().unwrap().contains("backup during"), "{r}");
    assert!(repo_bytes(&env) >= before);
    let b = backup.wait_with_output().unwrap();
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(env.dump("during", "db.sql"), days[0]);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    // Now the backup is done: what it does not reference goes.
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(json_u64(&r, "packs_deleted") > 0, "{r}");
    assert_eq!(env.dump("during", "db.sql"), days[0]);
    assert_eq!(env.dump("day5", "db.sql"), days[5]);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

/// A backup stopped (SIGSTOP, as a paused VM or a dump blocked on a lock) for longer than any
/// timeout, while a prune whose clock runs 2 hours ahead marks and tries to delete the packs it
/// deduplicated against: nothing it references is deleted, and its snapshot restores.
#[test]
fn a_stopped_backup_and_a_skewed_clock_lose_nothing() {
    let env = Env::new();
    let days = six_days(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    let src = env.path("old.sql");
    std::fs::write(&src, &days[1]).unwrap();
    let backup = spawn_backup(&env, "stopped", &slow_source(&src, 3), &[]);
    wait_for_lock(&env);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = backup.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    for _ in 0..2 {
        let out = env
            .cmd(&["prune", "--grace-period", "1h", "--json"])
            .env("CAIRN_TEST_CLOCK_OFFSET", "7200")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json_u64(&r, "packs_deleted"), 0, "deleted under a stopped backup: {r}");
    }
    // Nor does `cairn unlock` take the lock of a process that is merely stopped.
    assert!(env.ok(&["unlock"]).contains("0 lock(s) removed"));
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let b = backup.wait_with_output().unwrap();
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(env.dump("stopped", "db.sql"), days[1]);
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(json_u64(&r, "packs_deleted") > 0, "{r}");
    assert_eq!(env.dump("stopped", "db.sql"), days[1]);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

/// A backup in another pid namespace with the same host name (a container): its lock is not
/// judged by this namespace's pids, so neither `unlock` nor prune takes it for dead.
#[test]
fn a_backup_in_another_pid_namespace_keeps_its_lock() {
    if !support::is_root() {
        eprintln!("skipped: needs root for unshare");
        return;
    }
    let env = Env::new();
    let days = six_days(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    let src = env.path("old.sql");
    std::fs::write(&src, &days[2]).unwrap();
    let backup = spawn_backup(
        &env,
        "contained",
        &slow_source(&src, 4),
        &["unshare", "--pid", "--fork", "--mount-proc"],
    );
    wait_for_lock(&env);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(env.ok(&["unlock"]).contains("0 lock(s) removed"));
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert_eq!(json_u64(&r, "packs_deleted"), 0, "{r}");
    let b = backup.wait_with_output().unwrap();
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(env.dump("contained", "db.sql"), days[2]);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

/// Prune stores the newest version whole (keyframes) and older ones as reverse deltas: all
/// versions still read bit for bit, the repository does not grow once the old copies go, a
/// second prune finds nothing left to turn around, and SIGKILL while the new copies are written
/// leaves a repository that checks clean.
#[test]
fn keyframes_turn_the_chains_around_and_survive_sigkill() {
    let env = Env::empty();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let days: Vec<Vec<u8>> = (0..6).map(churning_dump).collect();
    for (d, data) in days.iter().enumerate() {
        let s = env.backup_bytes(&format!("day{d}"), "db.sql", data);
        assert!(d == 0 || json_u64(&s, "chunks_delta") > 0, "{s}");
    }
    let before = repo_bytes(&env);
    let all_read = |when: &str| {
        let check = env.run(&["check", "--read-data"]);
        assert!(check.status.success(), "{when}: {}{}", stdout(&check), stderr(&check));
        for (d, data) in days.iter().enumerate() {
            assert_eq!(&env.dump(&format!("day{d}"), "db.sql"), data, "{when}: day{d}");
        }
    };
    let out = env
        .cmd(&["prune", "--grace-period", "0"])
        .env("CAIRN_CRASH_POINT", "prune-keyframes")
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("prune-keyframes"),
        "{}",
        stderr(&out)
    );
    all_read("after a kill while writing keyframes");

    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(
        json_u64(&r, "keyframes") > 0 && json_u64(&r, "reverse_deltas") > 0,
        "{r}"
    );
    assert!(json_u64(&r, "packs_deleted") > 0, "the old copies go: {r}");
    all_read("after the keyframes");
    let after = repo_bytes(&env);
    assert!(after * 10 <= before * 11, "{before} bytes before, {after} after");
    // The newest version's chunks are read whole now: nothing is left to turn around.
    let again: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert_eq!(
        json_u64(&again, "keyframes") + json_u64(&again, "reverse_deltas"),
        0,
        "{again}"
    );

    // A new day is a forward delta against the keyframes; the next prune turns it around too.
    let day6 = churning_dump(6);
    env.backup_bytes("day6", "db.sql", &day6);
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(
        json_u64(&r, "keyframes") > 0 && json_u64(&r, "reverse_deltas") > 0,
        "{r}"
    );
    assert_eq!(env.dump("day6", "db.sql"), day6);
    all_read("after the next day's keyframes");
    // Without keyframes, prune leaves the chains as they are.
    env.backup_bytes("day7", "db.sql", &churning_dump(7));
    let r: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--grace-period", "0", "--no-keyframes", "--json"])).unwrap();
    assert_eq!(json_u64(&r, "keyframes") + json_u64(&r, "reverse_deltas"), 0, "{r}");
}
