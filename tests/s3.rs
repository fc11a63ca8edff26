//! The repository in a bucket of a real three-node Garage cluster (replication factor 3),
//! started by `tests/servers/garage.sh` on loopback ports.

mod support;

use std::process::Stdio;

use support::servers::{line, sh};
use support::{random_bytes, stderr, stdout, Env};

/// A Garage cluster of three nodes in a temp dir of its own, stopped when dropped (before its
/// directory goes).
struct Garage {
    dir: std::path::PathBuf,
    /// `export` lines: the key, the region and the nodes' S3 addresses.
    env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

impl Garage {
    /// A cluster on ports from `base`; `None` where garage is not installed and
    /// `CAIRN_TESTS_WITHOUT_GARAGE` says to skip.
    fn start(base: u16) -> Option<Garage> {
        if !garage_available() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("garage");
        // Made first, so that a start that fails half way is stopped too (by `drop`).
        let mut g = Garage {
            dir: dir.clone(),
            env: Vec::new(),
            _tmp: tmp,
        };
        sh(&line("garage", &["start", &dir.to_string_lossy(), &base.to_string()]));
        let text = std::fs::read_to_string(dir.join("env")).unwrap();
        g.env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Some(g)
    }

    fn var(&self, k: &str) -> String {
        self.env.iter().find(|(n, _)| n == k).unwrap().1.clone()
    }

    /// The S3 address of node `i` (1-3).
    fn node(&self, i: usize) -> String {
        self.var("S3_ENDPOINTS").split(' ').nth(i - 1).unwrap().to_string()
    }

    fn kill(&self, i: usize) {
        sh(&line("garage", &["kill", &self.dir.to_string_lossy(), &i.to_string()]));
    }

    fn restart(&self, i: usize) {
        sh(&line(
            "garage",
            &["restart", &self.dir.to_string_lossy(), &i.to_string()],
        ));
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(support::servers::script("garage"))
            .args(["stop", &self.dir.to_string_lossy()])
            .status();
    }
}

/// An environment whose repository is `s3:http://NODE/cairn/PREFIX` on node `node` of `g`.
fn s3_env(g: &Garage, node: usize, prefix: &str) -> Env {
    let mut env = Env::empty();
    env.repo = format!("s3:http://{}/cairn/{prefix}", g.node(node)).into();
    env
}

/// The same repository through node `node`, with the index cache `cache` (`env`'s own, or
/// another host's).
fn via(g: &Garage, node: usize, prefix: &str, cache: std::path::PathBuf) -> Env {
    let mut e = s3_env(g, node, prefix);
    e.cache = cache;
    e
}

fn with_keys(g: &Garage, mut c: std::process::Command) -> std::process::Command {
    for (k, v) in &g.env {
        c.env(k, v);
    }
    c
}

fn ok(g: &Garage, env: &Env, args: &[&str]) -> String {
    let o = with_keys(g, env.cmd(args)).output().unwrap();
    assert!(
        o.status.success(),
        "cairn {args:?} failed: {}{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

fn backup(g: &Garage, env: &Env, name: &str, data: &[u8]) -> std::process::Output {
    fed(
        with_keys(g, env.cmd(&["backup", "--name", name, "--json", "--stdin", "db.sql"])),
        data,
    )
}

/// Runs `c` with `data` on its standard input (written from a thread of its own).
fn fed(mut c: std::process::Command, data: &[u8]) -> std::process::Output {
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

fn dump(g: &Garage, env: &Env, name: &str) -> Vec<u8> {
    let o = with_keys(g, env.cmd(&["dump", name, "db.sql"])).output().unwrap();
    assert!(o.status.success(), "dump failed: {}", stderr(&o));
    o.stdout
}

fn garage_available() -> bool {
    if std::process::Command::new("garage").arg("--version").output().is_err() {
        // scripts/test.sh installs it; a run without it says so rather than pass silently.
        assert!(
            std::env::var_os("CAIRN_TESTS_WITHOUT_GARAGE").is_some(),
            "garage is not installed (scripts/test.sh installs it; CAIRN_TESTS_WITHOUT_GARAGE=1 skips)"
        );
        return false;
    }
    true
}

/// Backup, restore, check, forget and prune against the cluster; a day of changes adds what a
/// local repository would; a node killed in the middle of a backup and of a restore.
#[test]
fn a_repository_in_garage_backs_up_restores_checks_and_prunes() {
    let Some(g) = Garage::start(23900) else {
        return;
    };
    let env = s3_env(&g, 1, "repo1");
    ok(&g, &env, &["init", "--pack-size-mib", "4"]);
    let local = Env::new();

    let days: Vec<Vec<u8>> = (0..3u64)
        .map(|d| {
            let mut v = random_bytes(6 << 20, 7);
            v[(d as usize) << 20..((d as usize) << 20) + 4096].copy_from_slice(&random_bytes(4096, 100 + d));
            v
        })
        .collect();
    let mut added = Vec::new();
    for (d, data) in days.iter().enumerate() {
        let o = backup(&g, &env, &format!("day{d}"), data);
        assert!(o.status.success(), "{}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let l = local.backup_bytes(&format!("day{d}"), "db.sql", data);
        let n = |v: &serde_json::Value| support::json_u64(v, "bytes_added");
        added.push((n(&s), n(&l)));
    }
    // The same chunks, so about the same bytes as on a local repository (packs' own sizes
    // differ only by their count).
    for (d, (s3, loc)) in added.iter().enumerate().skip(1) {
        assert!(
            s3.abs_diff(*loc) * 10 <= *loc + 100_000,
            "day{d}: {s3} on S3, {loc} locally"
        );
    }
    for (d, data) in days.iter().enumerate() {
        assert_eq!(&dump(&g, &env, &format!("day{d}")), data);
    }
    // Through another node: the same repository.
    let other = via(&g, 2, "repo1", env.cache.clone());
    assert!(ok(&g, &other, &["snapshots"]).contains("day2"));
    let check = ok(&g, &env, &["check", "--read-data"]);
    assert!(check.contains("no errors found"), "{check}");

    // A node dies in the middle of a backup and of a restore: both finish (two of three
    // replicas answer), and nothing is lost.
    let big = random_bytes(24 << 20, 9);
    let mut c = with_keys(&g, env.cmd(&["backup", "--name", "big", "--stdin", "db.sql"]));
    c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write;
        stdin.write_all(&big[..8 << 20]).unwrap();
        g.kill(3);
        stdin.write_all(&big[8 << 20..]).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "backup with node 3 down: {}", stderr(&out));
    g.restart(3);
    // Node 3 serves again (through its own address) before node 2 goes: one node down at a time.
    let through3 = via(&g, 3, "repo1", env.cache.clone());
    assert!(ok(&g, &through3, &["snapshots"]).contains("big"));
    let mut c = with_keys(&g, env.cmd(&["dump", "big", "db.sql"]));
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut head = vec![0u8; 1 << 20];
    {
        use std::io::Read;
        child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    }
    g.kill(2);
    let rest = child.wait_with_output().unwrap();
    assert!(rest.status.success(), "dump with node 2 down: {}", stderr(&rest));
    head.extend_from_slice(&rest.stdout);
    assert!(head == big, "the restore read what was stored");
    g.restart(2);

    // Forget and prune: the kept snapshots still restore; the bucket shrinks.
    ok(&g, &env, &["forget", "day0", "day1", "big"]);
    let r: serde_json::Value =
        serde_json::from_str(&ok(&g, &env, &["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(dump(&g, &env, "day2"), days[2]);
    let check = ok(&g, &env, &["check", "--read-data"]);
    assert!(check.contains("no errors found"), "{check}");
}

/// Two backups taking one snapshot name at the same moment: exactly one gets it (the store
/// decides names without conditional writes, `store/src/storage/s3/mod.rs`).
#[test]
fn two_writers_racing_for_one_name_in_garage_get_it_once() {
    let Some(g) = Garage::start(24900) else {
        return;
    };
    let env = s3_env(&g, 1, "race");
    ok(&g, &env, &["init"]);
    for round in 0..4 {
        let name = format!("same{round}");
        let done: Vec<_> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..2)
                .map(|w| {
                    let e = via(&g, 1 + w, "race", env.path(&format!("cache{w}")));
                    let data = random_bytes(64 << 10, round * 10 + w as u64);
                    let (g, name) = (&g, &name);
                    scope.spawn(move || (backup(g, &e, name, &data), data))
                })
                .collect();
            runs.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let won: Vec<_> = done.iter().filter(|(o, _)| o.status.success()).collect();
        assert_eq!(won.len(), 1, "round {round}: {} writers got {name}", won.len());
        let lost = done.iter().find(|(o, _)| !o.status.success()).unwrap();
        let why = stderr(&lost.0);
        assert!(why.contains("already taken") || why.contains("claiming"), "{why}");
        assert_eq!(dump(&g, &env, &name), won[0].1, "the name holds the winner's data");
    }
}

/// Wrong credentials and a missing bucket: clear errors, non-zero exits, nothing created.
#[test]
fn wrong_credentials_and_a_missing_bucket_are_clear_errors() {
    let Some(g) = Garage::start(25900) else {
        return;
    };
    let env = s3_env(&g, 1, "creds");
    ok(&g, &env, &["init"]);
    let o = with_keys(&g, env.cmd(&["snapshots"]))
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("AWS_SECRET_ACCESS_KEY") && e.contains("creds"), "{e}");

    let mut missing = Env::empty();
    missing.repo = format!("s3:http://{}/nosuchbucket/x", g.node(1)).into();
    for args in [&["init"][..], &["snapshots"]] {
        let o = with_keys(&g, missing.cmd(args)).output().unwrap();
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains("nosuchbucket") && e.contains("the bucket does not exist"),
            "{args:?}: {e}"
        );
    }

    let o = with_keys(&g, env.cmd(&["snapshots"]))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", &g.dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no S3 credentials"), "{}", stderr(&o));
}

/// Backups from two hosts (each its own cache) run while a prune deletes: the prune takes no
/// lock that stops them, deletes nothing they may reference, and everything restores.
#[test]
fn backups_from_two_hosts_while_a_prune_runs_lose_nothing() {
    let Some(g) = Garage::start(22900) else {
        return;
    };
    let env = s3_env(&g, 1, "shared");
    ok(&g, &env, &["init", "--pack-size-mib", "1"]);
    let days: Vec<Vec<u8>> = (0..4u64).map(|d| random_bytes(3 << 20, 40 + d)).collect();
    for (d, data) in days.iter().enumerate() {
        let o = backup(&g, &env, &format!("day{d}"), data);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    ok(&g, &env, &["forget", "day0", "day1", "day2"]);

    // Host A backs up day0's bytes again (chunks the prune finds unreferenced), slowly; host B
    // backs up something new through another node; the prune runs meanwhile.
    let src = env.path("old.sql");
    std::fs::write(&src, &days[0]).unwrap();
    let host = |i: usize| via(&g, i, "shared", env.path(&format!("cache-host{i}")));
    let (a, b) = (host(1), host(2));
    let spawn = |e: &Env, name: &str, script: String| {
        let mut c = with_keys(&g, e.backup_of_script(name, &script));
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let fresh = env.path("new.sql");
    std::fs::write(&fresh, random_bytes(2 << 20, 99)).unwrap();
    let ba = spawn(&a, "from-a", format!("cat {}; sleep 4", src.display()));
    let bb = spawn(&b, "from-b", format!("sleep 1; cat {}; sleep 2", fresh.display()));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r: serde_json::Value = serde_json::from_str(&ok(
        &g,
        &env,
        &["prune", "--repack-below", "100", "--grace-period", "0", "--json"],
    ))
    .unwrap();
    for (name, child) in [("from-a", ba), ("from-b", bb)] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    assert_eq!(
        r["packs_deleted"].as_u64(),
        Some(0),
        "deleted under running backups: {r}"
    );
    assert!(
        r["waiting"].as_array().is_some_and(|w| !w.is_empty()),
        "the prune says what it waits for: {r}"
    );
    assert_eq!(dump(&g, &env, "from-a"), days[0]);
    assert_eq!(dump(&g, &env, "from-b"), std::fs::read(&fresh).unwrap());
    assert_eq!(dump(&g, &env, "day3"), days[3]);
    // With the backups done, a prune deletes what they do not reference; all still restores.
    let r: serde_json::Value =
        serde_json::from_str(&ok(&g, &env, &["prune", "--grace-period", "0", "--json"])).unwrap();
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(dump(&g, &env, "from-a"), days[0]);
    assert_eq!(dump(&g, &env, "day3"), days[3]);
    let check = ok(&g, &env, &["check", "--read-data"]);
    assert!(check.contains("no errors found"), "{check}");
}

/// A request to `g`'s node 1 signed by curl (`--aws-sigv4`): `GET`, `PUT` (with `body`) or
/// `DELETE` of `key` in bucket `cairn`, or a listing when `key` starts with `?`.
fn s3_request(g: &Garage, method: &str, key: &str, body: Option<&std::path::Path>) -> Vec<u8> {
    let sep = if key.starts_with('?') { "" } else { "/" };
    let mut c = std::process::Command::new("curl");
    c.args([
        "-sS",
        "--fail",
        "-X",
        method,
        "-H",
        "x-amz-content-sha256: UNSIGNED-PAYLOAD",
    ])
    .args(["--aws-sigv4", "aws:amz:garage:s3", "--user"])
    .arg(format!(
        "{}:{}",
        g.var("AWS_ACCESS_KEY_ID"),
        g.var("AWS_SECRET_ACCESS_KEY")
    ))
    .arg(format!("http://{}/cairn{sep}{key}", g.node(1)));
    if let Some(b) = body {
        c.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "curl {method} {key}: {}", stderr(&o));
    o.stdout
}

/// The keys under `prefix` in bucket `cairn` (one listing page: the tests' buckets are small).
fn keys_under(g: &Garage, prefix: &str) -> Vec<String> {
    // The query as curl signs it: its `/` encoded.
    let query = format!("?list-type=2&prefix={}", prefix.replace('/', "%2F"));
    let xml = String::from_utf8(s3_request(g, "GET", &query, None)).unwrap();
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
        .collect()
}

/// Packs damaged in the bucket (one deleted, one cut short), as a storage fault or a careless
/// lifecycle rule would leave them: a restore that needs the deleted one fails saying what is
/// missing, `check --read-data` names the cut one and the damaged snapshots, with a non-zero
/// exit; a snapshot that needs neither still restores.
#[test]
fn damaged_packs_in_the_bucket_are_named() {
    let Some(g) = Garage::start(26900) else {
        return;
    };
    let env = s3_env(&g, 1, "damage");
    ok(&g, &env, &["init", "--pack-size-mib", "4"]);
    let a = random_bytes(10 << 20, 21);
    let b = random_bytes(10 << 20, 22);
    for (name, data) in [("a", &a), ("b", &b)] {
        let o = backup(&g, &env, name, data);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Snapshot a's packs are the ones written before b's: the listing's times cannot tell them
    // apart, so find them by what a restore of each needs once one is gone.
    let packs = keys_under(&g, "damage/packs/");
    assert!(packs.len() >= 4, "{packs:?}");
    let gone = &packs[0];
    s3_request(&g, "DELETE", gone, None);
    let broken: Vec<&str> = ["a", "b"]
        .into_iter()
        .filter(|s| {
            let o = with_keys(&g, env.cmd(&["dump", s, "db.sql"])).output().unwrap();
            if o.status.success() {
                return false;
            }
            // The index, synced with the bucket, no longer knows the pack: the blobs it held
            // are missing (as on a local repository).
            let e = stderr(&o);
            assert!(e.contains("missing"), "{s}: {e}");
            true
        })
        .collect();
    assert_eq!(broken.len(), 1, "one snapshot needs pack {gone}");
    let intact = if broken[0] == "a" { ("b", &b) } else { ("a", &a) };
    assert!(dump(&g, &env, intact.0) == *intact.1);

    // Another pack cut short: its object replaced by its first half.
    let cut = &packs[1];
    let whole = s3_request(&g, "GET", cut, None);
    let half = g.dir.join("half");
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    s3_request(&g, "PUT", cut, Some(&half));
    let o = with_keys(&g, env.cmd(&["check", "--read-data"])).output().unwrap();
    assert!(!o.status.success());
    let report = format!("{}{}", stdout(&o), stderr(&o));
    let cut_id = cut.rsplit('/').next().unwrap();
    assert!(
        report.contains(cut_id) && report.contains("damaged snapshots") && report.contains(broken[0]),
        "{report}"
    );
}

/// A TLS front for node 1 of `g` (socat), with a certificate for 127.0.0.1 signed by a CA of
/// the test's own; stopped when dropped.
struct TlsFront {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl TlsFront {
    fn start(g: &Garage, port: u16) -> TlsFront {
        let d = g.dir.join("tls");
        std::fs::create_dir_all(&d).unwrap();
        let ec = "ec_paramgen_curve:P-256";
        sh(&format!(
            "cd '{d}' && openssl req -x509 -newkey ec -pkeyopt {ec} -nodes -keyout ca.key -out ca.pem \
             -days 1 -subj '/CN=cairn test CA' && \
             openssl req -newkey ec -pkeyopt {ec} -nodes -keyout srv.key -out srv.csr -subj '/CN=127.0.0.1' && \
             printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext && \
             openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 \
             -extfile ext",
            d = d.display()
        ));
        let child = std::process::Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={c},key={k},verify=0",
                c = d.join("srv.pem").display(),
                k = d.join("srv.key").display()
            ))
            .arg(format!("TCP:{}", g.node(1)))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        TlsFront {
            child,
            port,
            ca: d.join("ca.pem"),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `https://` with a store whose certificate a private CA signed: trusted through
/// `CAIRN_S3_CA_FILE` (backup and restore work), refused without it with an error that says
/// why, and a CA file that is missing or not PEM is named.
#[test]
fn a_store_behind_tls_signed_by_a_private_ca_is_trusted_through_its_ca_file() {
    let Some(g) = Garage::start(21900) else {
        return;
    };
    let tls = TlsFront::start(&g, 21950);
    let mut env = Env::empty();
    env.repo = format!("s3:https://127.0.0.1:{}/cairn/tls", tls.port).into();
    let run = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut c = with_keys(&g, env.cmd(args));
        if let Some(ca) = ca {
            c.env("CAIRN_S3_CA_FILE", ca);
        }
        c.output().unwrap()
    };

    let o = run(&["init"], None);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("certificate") && e.contains("set CAIRN_S3_CA_FILE"), "{e}");

    let o = run(&["init"], Some(&g.dir.join("no-such-ca.pem")));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-ca.pem"), "{}", stderr(&o));
    let not_pem = g.dir.join("not.pem");
    std::fs::write(
        &not_pem,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let junk = g.dir.join("junk.pem");
    std::fs::write(&junk, "no certificate here\n").unwrap();
    for bad in [&not_pem, &junk] {
        let o = run(&["init"], Some(bad));
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains("CAIRN_S3_CA_FILE") && e.contains(&*bad.to_string_lossy()),
            "{e}"
        );
    }

    let o = run(&["init"], Some(&tls.ca));
    assert!(o.status.success(), "{}", stderr(&o));
    let data = random_bytes(3 << 20, 31);
    let mut c = with_keys(&g, env.cmd(&["backup", "--name", "one", "--stdin", "db.sql"]));
    c.env("CAIRN_S3_CA_FILE", &tls.ca);
    let o = fed(c, &data);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["dump", "one", "db.sql"], Some(&tls.ca));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == data);
}

/// Keys, locks and a system backup against the cluster, as on a local repository: a passphrase
/// added and the first removed; a backup killed mid-stream leaves its lock, which `unlock`
/// removes (its process is provably gone); a system backup and restore of a configured database
/// whose configuration names the bucket as its `repository`.
#[test]
fn keys_locks_and_a_system_snapshot_work_in_garage() {
    let Some(g) = Garage::start(20900) else {
        return;
    };
    let env = s3_env(&g, 1, "all");
    ok(&g, &env, &["init"]);

    // Keys.
    let pw = g.dir.join("new-password");
    std::fs::write(&pw, "another passphrase\n").unwrap();
    let added = ok(&g, &env, &["key", "add", "--new-password-file", &pw.to_string_lossy()]);
    let new_id = added.split_whitespace().last().unwrap().to_string();
    let listed = ok(&g, &env, &["key", "list"]);
    let first = listed
        .lines()
        .find_map(|l| l.strip_prefix("* "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(listed.contains(&new_id) && first != new_id, "{listed}");
    let as_new = |args: &[&str]| {
        with_keys(&g, env.cmd(args))
            .env("CAIRN_PASSWORD", "another passphrase")
            .output()
            .unwrap()
    };
    let o = as_new(&["key", "remove", &first]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(as_new(&["snapshots"]).status.success());
    let o = with_keys(&g, env.cmd(&["snapshots"])).output().unwrap();
    assert!(!o.status.success(), "the removed passphrase still opens the repository");

    // Locks: a backup killed with its lock held; `unlock` removes it, and the next runs.
    let mut c = with_keys(&g, env.cmd(&["backup", "--name", "killed", "--stdin", "db.sql"]));
    c.env("CAIRN_PASSWORD", "another passphrase")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&random_bytes(2 << 20, 41))
            .unwrap();
    }
    for _ in 0..100 {
        if !keys_under(&g, "all/locks/").is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!keys_under(&g, "all/locks/").is_empty(), "no lock while backing up");
    child.kill().unwrap();
    child.wait().unwrap();
    let o = as_new(&["unlock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(keys_under(&g, "all/locks/").is_empty(), "{}", stdout(&o));

    // A system snapshot: the configuration names the bucket.
    let out = g.dir.join("restored.sql");
    let cfg = g.dir.join("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "repository = \"s3:http://{node}/cairn/all\"\nwork_dir = \"{w}/work\"\nstate_dir = \"{w}/state\"\n\n\
             [[exec]]\nname = \"db\"\ndump = \"seq 1 200000\"\nrestore = \"cat > {out}\"\n",
            node = g.node(2),
            w = g.dir.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let mut system = Env::empty();
    system.cache = env.cache.clone();
    let run = |args: &[&str]| {
        let o = with_keys(&g, system.cmd(args))
            .env_remove("CAIRN_REPO")
            .env("CAIRN_PASSWORD", "another passphrase")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}{}", stderr(&o), stdout(&o));
    };
    run(&["--config", &cfg, "backup", "--system", "--name", "sys"]);
    run(&["--config", &cfg, "restore", "sys", "--no-safety-snapshot"]);
    let expected: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert!(std::fs::read_to_string(&out).unwrap() == expected);
    let o = as_new(&["check", "--read-data"]);
    assert!(stdout(&o).contains("no errors found"), "{}{}", stdout(&o), stderr(&o));
}
