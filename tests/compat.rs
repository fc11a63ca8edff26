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

/// Backs up `prev` with one byte in every `step` from `start` set to `byte` as the snapshot
/// `name` (item `dump.sql`) and checks that it was stored as deltas; returns what was backed up.
fn back_up_changed_day(env: &Env, name: &str, prev: &[u8], start: usize, step: usize, byte: u8) -> Vec<u8> {
    let mut day = prev.to_vec();
    for at in (start..day.len()).step_by(step) {
        day[at] = byte;
    }
    let input = env.path(&format!("{name}.sql"));
    std::fs::write(&input, &day).unwrap();
    let o = env
        .cmd(&["backup", "--name", name, "--stdin", "dump.sql"])
        .env("CAIRN_PASSWORD", "fixture")
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("as deltas"), "{}", stdout(&o));
    day
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
    let d3 = back_up_changed_day(&env, "d3", &d2, 500, 50_000, b'7');
    let o = run(&["dump", "d3", "dump.sql"]);
    assert!(o.stdout == d3, "d3 restores");
    let o = run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(env.repo.join("CAIRN")).unwrap(),
        "cairn repository\nformat 1\n"
    );
}

/// A format 2 repository as cairn wrote it when issue 12 was worked on (371b78d): resemblance
/// sketches in pack trailers, chunk lists stored as deltas, and a keyframe prune between d3 and
/// d4, so chunks have several stored copies (keyframes, reverse deltas, forward deltas on top).
/// Today's cairn reads every version, checks it clean, adds to it and prunes it again.
#[test]
fn format_2_repository_with_keyframes_is_readable() {
    let env = Env::empty();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v2-repo"),
        &env.repo,
    );
    let run = |args: &[&str]| env.cmd(args).env("CAIRN_PASSWORD", "fixture").output().unwrap();
    let o = run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mut d4 = Vec::new();
    for (i, (len, sum)) in [
        (
            593_825,
            "451e173b2c29e0181a9bd9c254f648009aa7df9f25d07cd40182b7cc7018de68",
        ),
        (
            593_828,
            "1773cb3680c2990e31e4b3447c36e20c392c29bc8f2888a0aa0b8f61a950d62d",
        ),
        (
            534_349,
            "31a5d3aca35bb8dbd4570a92bb9d6909b28d15440a06beca29b0beb34b06f8a4",
        ),
        (
            573_714,
            "4e984c88395deffda152ff9512c1c24f22918102a83527ec38cc1b2be3352461",
        ),
        (
            579_527,
            "7a75786b7563c163dada46e129426175fdf678ebc668bb5b9232e1be42fcd85a",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let day = format!("d{i}");
        let o = run(&["dump", &day, "dump.sql"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout.len(), len, "{day}");
        assert_eq!(sha256(&o.stdout), sum, "{day}");
        d4 = o.stdout;
    }
    // A changed day on top, encoded against the fixture's copies.
    let d5 = back_up_changed_day(&env, "d5", &d4, 700, 40_000, b'3');
    // Prune turns the new chains around again; every version still reads back.
    let o = run(&["prune", "--grace-period", "0"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("reverse deltas"), "{}", stdout(&o));
    let o = run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(run(&["dump", "d5", "dump.sql"]).stdout == d5, "d5 restores");
    let o = run(&["dump", "d0", "dump.sql"]);
    assert_eq!(
        sha256(&o.stdout),
        "451e173b2c29e0181a9bd9c254f648009aa7df9f25d07cd40182b7cc7018de68"
    );
    assert_eq!(
        std::fs::read_to_string(env.repo.join("CAIRN")).unwrap(),
        "cairn repository\nformat 2\n"
    );
}
