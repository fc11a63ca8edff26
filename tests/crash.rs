//! Crash safety and concurrency: SIGKILL mid-backup, concurrent backups, locks.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_a_lock(env: &Env) {
    wait_for("a lock file", Duration::from_secs(30), || {
        std::fs::read_dir(env.repo.join("locks"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
}

/// Killing a backup with SIGKILL leaves a repository that checks clean, no snapshot for the
/// killed run, and packs that the re-run reuses.
#[test]
fn sigkill_mid_backup_then_check_and_rerun() {
    let env = Env::new();
    let data_path = env.path("data.bin");
    let data = random_bytes(48 << 20, 11);
    write(&data_path, &data);
    // The source is slowed down so the kill lands mid-stream, after some packs are published.
    let slow = format!(
        "for i in $(seq 0 47); do dd if={} bs=1M skip=$i count=1 status=none; sleep 0.05; done",
        data_path.display()
    );
    let mut child = env
        .cmd(&[
            "backup",
            "--name",
            "run",
            "--stdin-from-command",
            "d",
            "--",
            "sh",
            "-c",
            &slow,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("published packs", Duration::from_secs(60), || {
        env.pack_files().len() >= 8
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let published = env.pack_files().len();

    let check = env.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}{}", stdout(&check), stderr(&check));
    assert!(!env.ok(&["snapshots"]).contains("run"));

    // The re-run stores only what the killed run had not published yet.
    let s = env.backup_bytes("run", "d", &data);
    let (size, added) = (json_u64(&s, "size"), json_u64(&s, "bytes_added"));
    assert!(json_u64(&s, "chunks_dup") > 0, "{s}");
    assert!(
        added < size - (published as u64 - 1) * (900 << 10),
        "re-run added {added} of {size} after {published} packs"
    );
    assert_eq!(env.dump("run", "d"), data);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
    // The killed run's temp file is gone after the re-run (its pid is dead).
    assert!(std::fs::read_dir(env.repo.join("tmp")).unwrap().next().is_none());
}

#[test]
fn two_concurrent_backups() {
    let env = Env::new();
    let shared = random_bytes(4 << 20, 21);
    let mut a = shared.clone();
    a.extend(random_bytes(4 << 20, 22));
    let mut b = shared.clone();
    b.extend(random_bytes(4 << 20, 23));
    let (pa, pb) = (env.path("a.bin"), env.path("b.bin"));
    write(&pa, &a);
    write(&pb, &b);
    let spawn = |name: &str, p: &std::path::Path| {
        env.cmd(&[
            "backup",
            "--name",
            name,
            "--json",
            "--stdin-from-command",
            "d",
            "--",
            "cat",
            p.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (ca, cb) = (spawn("A", &pa), spawn("B", &pb));
    let (oa, ob) = (ca.wait_with_output().unwrap(), cb.wait_with_output().unwrap());
    assert!(oa.status.success(), "{}", stderr(&oa));
    assert!(ob.status.success(), "{}", stderr(&ob));
    assert_eq!(env.dump("A", "d"), a);
    assert_eq!(env.dump("B", "d"), b);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
    // A third backup of either finds everything already stored.
    let s = env.backup_bytes("again", "d", &b);
    assert_eq!(json_u64(&s, "chunks_new"), 0);
}

#[test]
fn exclusive_operation_waits_for_a_running_backup_and_stale_locks_are_broken() {
    let env = Env::new();
    let mut child = env
        .cmd(&[
            "backup",
            "--name",
            "slow",
            "--stdin-from-command",
            "d",
            "--",
            "sh",
            "-c",
            "echo start; sleep 4; echo end",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_a_lock(&env);
    let err = env.fails(&["repair", "index", "--lock-wait", "0"]);
    assert!(
        err.contains("repository is locked") && err.contains("backup lock"),
        "{err}"
    );
    // Waiting long enough, the exclusive operation runs after the backup.
    env.ok(&["repair", "index", "--lock-wait", "60"]);
    assert!(child.wait().unwrap().success());
    assert_eq!(env.dump("slow", "d"), b"start\nend\n");

    // A backup killed by SIGKILL leaves its lock behind: stale (dead pid), ignored and removable.
    let mut child = env
        .cmd(&[
            "backup",
            "--name",
            "killed",
            "--stdin-from-command",
            "d",
            "--",
            "sleep",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_a_lock(&env);
    child.kill().unwrap();
    child.wait().unwrap();
    env.ok(&["repair", "index", "--lock-wait", "0"]);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("1 lock(s) removed"), "{out}");
    assert!(std::fs::read_dir(env.repo.join("locks")).unwrap().next().is_none());
}
