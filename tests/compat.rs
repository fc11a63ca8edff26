//! Repositories written by earlier versions stay readable.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

fn sha256(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    std::fs::write(&f, data).unwrap();
    let o = Command::new("sha256sum").arg(&f).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn format_1_repository_without_deltas_is_readable() {
    let env = Env::empty();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v1-repo"),
        &env.repo,
    );
    let run = |args: &[&str]| env.cmd(args).env("CAIRN_PASSWORD", "fixture").output().unwrap();
    let o = run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = run(&["dump", "v1-stream", "dump.sql"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 935_603);
    assert_eq!(
        sha256(&o.stdout),
        "6a4fceb5447188a9e556259358275a516b7301cc3ee4c0641b5947c419561c3f"
    );
    let target = env.path("restored");
    let o = run(&["restore", "v1-tree", "--target", target.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(target.join("etc/server.pem")).unwrap(), b"cert\n");
    assert_eq!(
        std::fs::metadata(target.join("etc/server.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_link(target.join("etc/current.pem")).unwrap().to_str(),
        Some("server.pem")
    );
    // Today's cairn can add to it, and the old snapshots stay intact.
    let o = env
        .cmd(&[
            "backup",
            "--name",
            "new",
            "--stdin-from-command",
            "d",
            "--",
            "echo",
            "hi",
        ])
        .env("CAIRN_PASSWORD", "fixture")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run(&["check", "--read-data"]).status.success());
}

/// A format 1 repository with delta chains (written before resemblance sketches): today's cairn
/// reads every version, adds to it as format 1 (no sketches, so the cairn that wrote it can
/// still read it) and its deltas and old chains check clean.
#[test]
fn format_1_repository_with_deltas_is_readable_and_stays_format_1() {
    let env = Env::empty();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v1-delta-repo"),
        &env.repo,
    );
    let run = |args: &[&str]| env.cmd(args).env("CAIRN_PASSWORD", "fixture").output().unwrap();
    let o = run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mut d2 = Vec::new();
    for (day, sum) in [
        ("d0", "82e2bb073dcdef39103d7caea44d817c2e9b0997ed1cda8c696dda8cd790812b"),
        ("d1", "7dabbcbca453b98c9593c81e7cdba65e50295b151d07e5d1349522d9bd6d7478"),
        ("d2", "1ce0896209ad08e3802d3333632e97b411b5b53c0a9f74749c6e0a54ec4a078d"),
    ] {
        let o = run(&["dump", day, "dump.sql"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(sha256(&o.stdout), sum, "{day}");
        d2 = o.stdout;
    }
    // A changed day on top, encoded against the fixture's chains.
    let mut d3 = d2.clone();
    for at in (500..d3.len()).step_by(50_000) {
        d3[at] = b'7';
    }
    let input = env.path("d3.sql");
    std::fs::write(&input, &d3).unwrap();
    let o = env
        .cmd(&["backup", "--name", "d3", "--stdin", "dump.sql"])
        .env("CAIRN_PASSWORD", "fixture")
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("as deltas"), "{}", stdout(&o));
    let o = run(&["dump", "d3", "dump.sql"]);
    assert!(o.stdout == d3, "d3 restores");
    let o = run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(env.repo.join("CAIRN")).unwrap(),
        "cairn repository\nformat 1\n"
    );
}
