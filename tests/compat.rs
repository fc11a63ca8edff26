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
