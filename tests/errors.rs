//! Bad input gets a clear error, a non-zero exit, and nothing is lost.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

#[test]
fn wrong_passphrase_is_refused() {
    let env = Env::new();
    env.backup_bytes("s", "x", b"data");
    let o = env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "not it")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong passphrase or identity"), "{}", stderr(&o));
    // No passphrase at all, and no terminal to ask on.
    let o = env.cmd(&["snapshots"]).env_remove("CAIRN_PASSWORD").output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no passphrase"), "{}", stderr(&o));
    // An identity that is not one of the repository's keys.
    let id = env.path("other.id");
    env.ok(&["key", "generate-identity", id.to_str().unwrap()]);
    let o = env.cmd(&["snapshots"]).env("CAIRN_IDENTITY", &id).output().unwrap();
    assert!(stderr(&o).contains("wrong passphrase or identity"), "{}", stderr(&o));
}

#[test]
fn missing_and_foreign_repositories() {
    let env = Env::empty();
    let err = env.fails(&["snapshots"]);
    assert!(
        err.contains("no Cairn repository at") && err.contains("cairn init"),
        "{err}"
    );
    std::fs::create_dir_all(&env.repo).unwrap();
    write(&env.repo.join("somebody-elses.txt"), b"hello");
    let err = env.fails(&["snapshots"]);
    assert!(err.contains("is not a Cairn repository"), "{err}");
    let err = env.fails(&["init"]);
    assert!(err.contains("not empty"), "{err}");
    // A marker from a future format version.
    let env2 = Env::new();
    std::fs::write(env2.repo.join("CAIRN"), "cairn repository\nformat 99\n").unwrap();
    let err = env2.fails(&["snapshots"]);
    assert!(err.contains("format version 99"), "{err}");
}

#[test]
fn snapshot_names_and_items() {
    let env = Env::new();
    env.backup_bytes("taken", "x", b"one");
    let err = env.fails(&[
        "backup",
        "--name",
        "taken",
        "--stdin-from-command",
        "x",
        "--",
        "echo",
        "two",
    ]);
    assert!(err.contains("already taken"), "{err}");
    assert_eq!(env.dump("taken", "x"), b"one");
    assert!(env.fails(&["show", "nope"]).contains("no snapshot named \"nope\""));
    assert!(env.fails(&["dump", "taken", "nope"]).contains("no item named"));
    assert!(env
        .fails(&["restore", "nope", "--target", env.path("t").to_str().unwrap()])
        .contains("no snapshot named"));
    assert!(env.fails(&["backup", "--name", "x"]).contains("nothing to back up"));
    assert!(env
        .fails(&["backup", "--name", "y", "/no/such/path"])
        .contains("no such file"));
    // Bad flags are usage errors (exit 2).
    assert_eq!(env.run(&["backup", "--bogus"]).status.code(), Some(2));
    assert_eq!(env.run(&["check", "--read-data-subset", "x%"]).status.code(), Some(1));
}

#[test]
fn restore_refuses_a_non_empty_target_unless_forced() {
    let env = Env::new();
    env.backup_bytes("s", "file", b"new content");
    let target = env.path("target");
    write(&target.join("file"), b"old content");
    let err = env.fails(&["restore", "s", "--target", target.to_str().unwrap()]);
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(target.join("file")).unwrap(), b"old content");
    env.ok(&["restore", "s", "--target", target.to_str().unwrap(), "--force"]);
    assert_eq!(std::fs::read(target.join("file")).unwrap(), b"new content");
}

/// Flipping one byte anywhere in a pack is caught by `check --read-data`, and restore refuses
/// the damaged chunk instead of writing it.
#[test]
fn tampered_pack_is_detected() {
    let env = Env::new();
    let data = random_bytes(3 << 20, 5);
    env.backup_bytes("s", "d", &data);
    let packs = env.pack_files();
    assert!(packs.len() >= 2);
    let victim = &packs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(victim, &bytes).unwrap();
    let out = env.fails(&["check", "--read-data"]);
    assert!(
        out.contains("authentication failed") || out.contains("does not match its name"),
        "{out}"
    );
    assert!(out.contains("damaged snapshots: s"), "{out}");
    let err = env.fails(&["dump", "s", "d"]);
    assert!(err.contains("integrity error"), "{err}");
}

#[test]
fn truncated_and_missing_packs_are_detected() {
    let env = Env::new();
    let data = random_bytes(3 << 20, 6);
    env.backup_bytes("s", "d", &data);
    assert!(env.ok(&["check"]).contains("no errors found"));
    let packs = env.pack_files();
    let f = std::fs::OpenOptions::new().write(true).open(&packs[0]).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    drop(f);
    let out = env.fails(&["check"]);
    assert!(out.contains("truncated") || out.contains("differs"), "{out}");
    let err = env.fails(&["dump", "s", "d"]);
    assert!(err.contains("integrity error") || err.contains("truncated"), "{err}");

    std::fs::remove_file(&packs[0]).unwrap();
    let out = env.fails(&["check"]);
    assert!(out.contains("missing") && out.contains("damaged snapshots: s"), "{out}");
    let err = env.fails(&["dump", "s", "d"]);
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn tampered_manifest_and_config_are_detected() {
    let env = Env::new();
    env.backup_bytes("s", "d", b"abc");
    let snap = std::fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x80;
    std::fs::write(&snap, &b).unwrap();
    assert!(env.fails(&["show", "s"]).contains("integrity error"));
    assert!(env.fails(&["check"]).contains("integrity error"));
    let mut c = std::fs::read(env.repo.join("config")).unwrap();
    c[30] ^= 1;
    std::fs::write(env.repo.join("config"), &c).unwrap();
    assert!(env.fails(&["snapshots"]).contains("integrity error in config"));
}

fn drop_to_nobody(c: &mut Command) {
    // Root reads any file; run cairn as `nobody` so a mode-000 file really is unreadable.
    let prog = c.get_program().to_owned();
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let mut s = Command::new("setpriv");
    s.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(prog)
        .args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    *c = s;
}

#[test]
fn unreadable_source_file_fails_the_backup() {
    let env = Env::empty();
    let root = unsafe_is_root();
    if root {
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let as_user = |args: &[&str]| {
        let mut c = env.cmd(args);
        if root {
            drop_to_nobody(&mut c);
        }
        c.output().unwrap()
    };
    assert!(as_user(&["init"]).status.success());
    let src = env.path("src");
    write(&src.join("ok.txt"), b"fine");
    write(&src.join("secret.txt"), b"no");
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(src.join("secret.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = as_user(&["backup", "--name", "s", src.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("secret.txt") && err.contains("ermission denied"), "{err}");
    assert!(!stdout(&as_user(&["snapshots"])).contains(" s "));
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A full disk fails the backup with a clear message; earlier snapshots stay intact and the
/// repository checks clean. Needs a small tmpfs, so root (as in CI).
#[test]
fn disk_full_fails_cleanly() {
    if !unsafe_is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root and must run this test");
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = Env::empty();
    let mnt = env.path("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let env = Env {
        repo: mnt.join("repo"),
        ..env
    };
    env.ok(&["init", "--pack-size-mib", "1"]);
    let small = random_bytes(1 << 20, 1);
    env.backup_bytes("small", "d", &small);
    let big = random_bytes(12 << 20, 2);
    let mut c = env.cmd(&["backup", "--name", "big", "--stdin", "d"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&big);
    });
    let o = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("disk is full"), "{}", stderr(&o));
    let list = env.ok(&["snapshots"]);
    assert!(list.contains("small") && !list.contains("big"), "{list}");
    assert_eq!(env.dump("small", "d"), small);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A tmpfs of `size` at `dir`, unmounted when the guard goes.
fn tmpfs(dir: &std::path::Path, size: &str) -> Unmount {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs failed");
    Unmount(dir.to_path_buf())
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let out = Command::new("find").arg(dir).output().unwrap();
    let mut v: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    v.sort();
    v
}

/// A repository mounted read-only (a SAN snapshot mounted at disaster-recovery time): every
/// reading command works and creates nothing in it.
#[test]
fn a_read_only_repository_can_be_read() {
    if !unsafe_is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root and must run this test");
        eprintln!("skipped: mounting needs root");
        return;
    }
    let env = Env::empty();
    let mnt = env.path("ro");
    let _guard = tmpfs(&mnt, "32m");
    let env = Env {
        repo: mnt.join("repo"),
        ..env
    };
    env.ok(&["init", "--pack-size-mib", "1"]);
    let data = random_bytes(3 << 20, 3);
    env.backup_bytes("one", "d", &data);
    let src = env.path("tree");
    write(&src.join("a/b.txt"), b"tree file");
    env.ok(&["backup", "--name", "two", src.to_str().unwrap()]);
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let before = listing(&mnt);
    assert!(env.ok(&["snapshots"]).contains("one"));
    assert!(env.ok(&["show", "one"]).contains("d"));
    assert_eq!(env.dump("one", "d"), data);
    let target = env.path("restored");
    env.ok(&["restore", "two", "--target", target.to_str().unwrap()]);
    let restored = target.join(src.strip_prefix("/").unwrap()).join("a/b.txt");
    assert_eq!(std::fs::read(restored).unwrap(), b"tree file");
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
    // Writing fails clearly.
    let err = env.fails(&["backup", "--name", "three", src.to_str().unwrap()]);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(listing(&mnt), before, "a reading command wrote into the repository");
}

/// On a full repository filesystem, forget and prune still run: they are how space comes back.
#[test]
fn forget_and_prune_free_a_full_repository() {
    if !unsafe_is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root and must run this test");
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = Env::empty();
    let mnt = env.path("full");
    let _guard = tmpfs(&mnt, "8m");
    let env = Env {
        repo: mnt.join("repo"),
        ..env
    };
    env.ok(&["init", "--pack-size-mib", "1"]);
    let mut n = 0;
    loop {
        let data = random_bytes(2 << 20, 100 + n);
        let mut c = env.cmd(&["backup", "--name", &format!("b{n}"), "--stdin", "d"]);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let w = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
        let o = child.wait_with_output().unwrap();
        w.join().unwrap();
        if !o.status.success() {
            assert!(stderr(&o).contains("disk is full"), "{}", stderr(&o));
            break;
        }
        n += 1;
        assert!(n < 10, "never filled");
    }
    assert!(n >= 2);
    // Fill the last bytes too, as a full disk is.
    let _ = std::fs::write(mnt.join("filler"), vec![0u8; 8 << 20]);
    let out = env.ok(&["forget", "--keep-last", "1", "--prune", "--grace-period", "0"]);
    assert!(out.contains("delete"), "{out}");
    let _ = std::fs::remove_file(mnt.join("filler"));
    let list = env.ok(&["snapshots"]);
    assert!(list.contains(&format!("b{}", n - 1)) && !list.contains("b0 "), "{list}");
    env.backup_bytes("after", "d", &random_bytes(1 << 20, 99));
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

/// Runs `cairn ARGS` under strace, failing the `when`-th call of `syscall` with `errno`.
fn injected(
    env: &Env,
    syscall: &str,
    errno: &str,
    when: u32,
    args: &[&str],
    input: Option<&[u8]>,
) -> std::process::Output {
    let (trace, inject) = (
        format!("trace={syscall}"),
        format!("inject={syscall}:error={errno}:when={when}"),
    );
    let mut c = support::wrapped(
        &env.cmd(args),
        &["strace", "-f", "-o", "/dev/null", "-e", &trace, "-e", &inject],
    );
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.map(<[u8]>::to_vec).unwrap_or_default();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let o = child.wait_with_output().unwrap();
    w.join().unwrap();
    o
}

/// Faults injected into real system calls: each error names its cause and the file, a restore is
/// never called a backup, and nothing is committed.
#[test]
fn injected_faults_name_their_cause() {
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI must have strace");
        eprintln!("skipped: no strace");
        return;
    }
    let env = Env::new();
    let data = random_bytes(5 << 20, 40);
    env.backup_bytes("base", "d", &data[..3 << 20]);
    for (syscall, errno, text) in [
        ("rename", "ENOSPC", "No space left on device"),
        ("fsync", "EIO", "Input/output error"),
        ("write", "EIO", "Input/output error"),
    ] {
        for when in [2, 5] {
            let name = format!("f-{syscall}-{when}");
            let o = injected(
                &env,
                syscall,
                errno,
                when,
                &["backup", "--name", &name, "--stdin", "d"],
                Some(&data),
            );
            let err = stderr(&o);
            if o.status.success() {
                continue; // the call hit was one the backup may retry or ignore (a lock cleanup)
            }
            assert!(err.contains(text), "{syscall}@{when}: {err}");
            assert!(
                err.contains(env.dir.path().to_str().unwrap()),
                "{syscall}@{when} names no path: {err}"
            );
            assert!(!err.contains("stopped: stopped") && !err.contains("panicked"), "{err}");
            assert!(!env.ok(&["snapshots"]).contains(&name), "{syscall}@{when} committed");
        }
    }
    // The writes failed above may have left the index cache damaged (then the next run sets it
    // aside and rebuilds it, and a read fault would land in the rebuild instead): start clean,
    // so each injected read hits the same call every run.
    env.ok(&["repair", "index"]);
    for when in [3, 8] {
        let o = injected(&env, "pread64", "EIO", when, &["dump", "base", "d"], None);
        if !o.status.success() {
            let err = stderr(&o);
            // The failed read is a pack's or the index cache's: either way, said so with the file.
            assert!(
                (err.contains("Input/output error") && err.contains("packs/"))
                    || (err.contains("disk I/O error") && err.contains("index.sqlite")),
                "{err}"
            );
            assert!(!err.contains("backup"), "a dump is no backup: {err}");
        }
    }
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}
