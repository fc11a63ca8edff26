//! Round trips through the real `cairn` binary: streams, commands, file trees; dedup across
//! snapshots; listing and showing; keys.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use support::*;

#[test]
fn stream_round_trip_and_dedup_across_snapshots() {
    let env = Env::new();
    let day0 = dump_text(3 << 20, 0);
    let s0 = env.backup_bytes("day0", "db.sql", &day0);
    assert_eq!(json_u64(&s0, "size"), day0.len() as u64);
    assert_eq!(env.dump("day0", "db.sql"), day0);

    // The same bytes again: every chunk is a duplicate, only metadata may be added.
    let again = env.backup_bytes("again", "db.sql", &day0);
    assert_eq!(json_u64(&again, "chunks_new"), 0, "{again}");
    assert_eq!(json_u64(&again, "bytes_added"), 0, "{again}");

    // A few rows changed: far less than a full copy is added.
    let day1 = dump_text(3 << 20, 17);
    assert_ne!(day0, day1);
    let s1 = env.backup_bytes("day1", "db.sql", &day1);
    let (full, added) = (json_u64(&s0, "bytes_added"), json_u64(&s1, "bytes_added"));
    assert!(added * 3 < full, "day1 added {added} of a full {full}");
    assert!(json_u64(&s1, "chunks_dup") > 0);
    assert_eq!(env.dump("day1", "db.sql"), day1);
    assert_eq!(env.dump("day0", "db.sql"), day0);

    let list = env.ok(&["snapshots"]);
    for n in ["day0", "again", "day1"] {
        assert!(list.contains(n), "{list}");
    }
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    let show = env.ok(&["show", "day1"]);
    assert!(
        show.contains("db.sql") && show.contains("exact duplicates") && show.contains("dedup"),
        "{show}"
    );
    let show_json: serde_json::Value = serde_json::from_str(&env.ok(&["show", "--json", "day1"])).unwrap();
    assert_eq!(show_json["summary"]["bytes_added"].as_u64(), Some(added));
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

#[test]
fn large_stream_uses_stored_chunk_lists() {
    // 40 MiB of incompressible data at the default 64 KiB chunks is ~640 chunks: more than fit
    // inline, so the chunk list is stored as blobs and read back through them.
    let env = Env::new();
    let data = random_bytes(40 << 20, 3);
    env.backup_bytes("big", "big.bin", &data);
    let show: serde_json::Value = serde_json::from_str(&env.ok(&["show", "--json", "big"])).unwrap();
    assert!(
        show["items"][0]["content"]["depth"].as_u64().unwrap() >= 1,
        "{}",
        show["items"][0]["content"]
    );
    assert!(env.dump("big", "big.bin") == data);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors found"));
}

#[test]
fn command_output_is_backed_up_and_failures_leave_no_snapshot() {
    let env = Env::new();
    env.ok(&[
        "backup",
        "--name",
        "cmd",
        "--stdin-from-command",
        "out.txt",
        "--",
        "sh",
        "-c",
        "seq 1 100000",
    ]);
    let expected: String = (1..=100000).map(|i| format!("{i}\n")).collect();
    assert_eq!(env.dump("cmd", "out.txt"), expected.as_bytes());

    let err = env.fails(&[
        "backup",
        "--name",
        "bad",
        "--stdin-from-command",
        "x",
        "--",
        "sh",
        "-c",
        "echo partial; echo boom >&2; exit 3",
    ]);
    assert!(err.contains("exit status: 3") && err.contains("boom"), "{err}");
    assert!(!env.ok(&["snapshots"]).contains("bad"));

    // An empty stream is what a failed dump in a pipe leaves: refused unless asked for.
    let err = env.fails(&["backup", "--name", "empty", "--stdin-from-command", "e", "--", "true"]);
    assert!(err.contains("was empty, so nothing was committed"), "{err}");
    assert!(!env.ok(&["snapshots"]).contains("empty"));
    let err = env.fails(&["backup", "--name", "empty", "--stdin", "e"]);
    assert!(err.contains("standard input was empty"), "{err}");
    let o = env.run(&[
        "backup",
        "--name",
        "empty",
        "--allow-empty",
        "--stdin-from-command",
        "e",
        "--",
        "true",
    ]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("wrote nothing"), "{}", stderr(&o));
    assert!(env.dump("empty", "e").is_empty());
    let missing = env.fails(&[
        "backup",
        "--name",
        "nocmd",
        "--stdin-from-command",
        "x",
        "--",
        "/nonexistent/cmd",
    ]);
    assert!(missing.contains("cannot start command"), "{missing}");
}

#[test]
fn file_tree_round_trip_keeps_modes_times_and_symlinks() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("sub/b.bin"), &random_bytes(300_000, 9));
    write(&src.join("sub/deeper/c.key"), b"secret");
    write(&src.join("empty"), b"");
    std::fs::create_dir_all(src.join("emptydir")).unwrap();
    std::fs::set_permissions(src.join("sub/deeper/c.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("sub/b.bin", src.join("link")).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(src.join("a.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    env.ok(&["backup", "--name", "tree", src.to_str().unwrap()]);
    let target = env.path("restored");
    env.ok(&["restore", "tree", "--target", target.to_str().unwrap()]);
    let out = target.join(src.to_str().unwrap().trim_start_matches('/'));
    for f in ["a.txt", "sub/b.bin", "sub/deeper/c.key", "empty"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
        let (a, b) = (
            std::fs::metadata(src.join(f)).unwrap(),
            std::fs::metadata(out.join(f)).unwrap(),
        );
        assert_eq!(a.mode(), b.mode(), "{f}");
        assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{f}");
        assert_eq!(a.mtime(), b.mtime(), "{f}");
    }
    assert_eq!(std::fs::metadata(out.join("sub")).unwrap().mode() & 0o7777, 0o750);
    assert!(out.join("emptydir").is_dir());
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap().to_str(),
        Some("sub/b.bin")
    );

    // A single file as an item can be dumped.
    env.ok(&["backup", "--name", "one", src.join("a.txt").to_str().unwrap()]);
    let item = src.join("a.txt").to_str().unwrap().trim_start_matches('/').to_string();
    assert_eq!(env.dump("one", &item), b"alpha");
    // Restoring only a chosen item.
    let t2 = env.path("only");
    env.ok(&["restore", "one", "--target", t2.to_str().unwrap(), &item]);
    assert_eq!(std::fs::read(t2.join(&item)).unwrap(), b"alpha");
}

#[test]
fn keys_add_list_remove_and_identity_files() {
    let env = Env::new();
    env.backup_bytes("s", "x", b"payload");
    let pw2 = env.path("pw2");
    write(&pw2, b"second passphrase\n");
    let out = env.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let second = out.trim().rsplit(' ').next().unwrap().to_string();

    // An age identity unlocks too.
    let ident = env.path("id.txt");
    assert!(env
        .ok(&["key", "generate-identity", ident.to_str().unwrap()])
        .contains("age1"));
    assert_eq!(std::fs::metadata(&ident).unwrap().mode() & 0o777, 0o600);
    env.ok(&["key", "add", "--new-identity", ident.to_str().unwrap()]);
    let list = env.ok(&["key", "list"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("x25519") && list.contains("passphrase"));
    let o = env
        .cmd(&["dump", "s", "x"])
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_IDENTITY", &ident)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"payload");
    let o = env
        .cmd(&["dump", "s", "x", "--password-file", pw2.to_str().unwrap()])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"payload", "{}", stderr(&o));

    // The key in use cannot be removed; another one can, and then no longer unlocks.
    let current = list
        .lines()
        .find(|l| l.starts_with('*'))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(env
        .fails(&["key", "remove", &current])
        .contains("unlocked this session"));
    env.ok(&["key", "remove", &second]);
    let o = env
        .cmd(&["dump", "s", "x", "--password-file", pw2.to_str().unwrap()])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
}

#[test]
fn repair_index_rebuilds_the_cache_from_packs() {
    let env = Env::new();
    let data = dump_text(2 << 20, 0);
    env.backup_bytes("s", "d", &data);
    std::fs::remove_dir_all(&env.cache).unwrap();
    let out = env.ok(&["repair", "index"]);
    assert!(out.contains("index rebuilt"), "{out}");
    assert_eq!(env.dump("s", "d"), data);
    // Without a repair, a lost cache is rebuilt by the next sync as well.
    std::fs::remove_dir_all(&env.cache).unwrap();
    assert!(env.ok(&["check"]).contains("no errors found"));
}

#[test]
fn demo_runs() {
    let env = Env::empty();
    let dir = env.path("demo");
    let out = env.ok(&["demo", "--dir", dir.to_str().unwrap(), "--size-mib", "8"]);
    assert!(out.contains("byte-identical") && out.contains("no errors"), "{out}");
}
