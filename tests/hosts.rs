//! The platform spans hosts: plugins run where their databases live, through `cairn agent`
//! over SSH. Each host is a network and mount namespace with its own OpenSSH server
//! (`support/hosts.rs`); the controller runs where no host's files are visible.

mod support;

use std::process::Command;

use support::hosts::{self, Hosts};
use support::servers::line;
use support::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// An environment whose repository, cache and configuration are the controller's alone
/// (under `T/ctl`, which hosts do not see).
fn controller_env() -> Env {
    let mut env = Env::empty();
    std::fs::create_dir_all(env.path("ctl")).unwrap();
    env.repo = env.path("ctl/repo");
    env.cache = env.path("ctl/cache");
    std::fs::write(env.path("ctl/password"), format!("{PASSWORD}\n")).unwrap();
    env
}

fn skip() -> bool {
    if let Err(why) = hosts::available() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

/// A controller and the named hosts; `None` (saying why) where these tests cannot run.
fn platform(names: &[&str]) -> Option<Platform> {
    if skip() {
        return None;
    }
    let env = controller_env();
    let hosts = Hosts::start(env.dir.path(), names);
    Some(Platform { env, hosts })
}

struct Platform {
    env: Env,
    hosts: Hosts,
}

impl Platform {
    /// A cairn command run as the controller (its own mount namespace).
    fn cairn(&self, args: &[&str]) -> std::process::Output {
        self.hosts.controller(&self.env.cmd(args)).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cairn(args);
        assert!(
            o.status.success(),
            "cairn {args:?} failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn config(&self, name: &str, sections: &str) -> String {
        let ctl = self.env.path("ctl");
        let text = format!(
            "repository = \"{repo}\"\ncache_dir = \"{cache}\"\nwork_dir = \"{ctl}/work\"\nstate_dir = \"{ctl}/state\"\n\
             password_file = \"{ctl}/password\"\n\n{hosts}{sections}",
            repo = self.env.repo.display(),
            cache = self.env.cache.display(),
            ctl = ctl.display(),
            hosts = self.hosts.config(),
        );
        let path = ctl.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// Type, mode and content (or link target) of every entry under `dir`, sorted.
fn tree_state(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = p.symlink_metadata().unwrap();
        let rel = p.strip_prefix(dir).unwrap().display().to_string();
        let data = if md.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
        } else if md.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            Vec::new()
        };
        out.push((rel, md.permissions().mode(), data));
    }
    out.sort();
    out
}

/// MariaDB's SQL run on its host, as root over the socket.
fn sql(h: &hosts::Host, sock: &str, q: &str) -> String {
    std::fs::write(h.backing.join("q.sql"), q).unwrap();
    h.sh(&format!(
        "mariadb --socket={sock} --batch --skip-column-names < {}",
        h.dir.join("q.sql").display()
    ))
}

const LOAD: &str = "CREATE DATABASE shop; USE shop;
    CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2), note TEXT);
    INSERT INTO orders SELECT seq, CONCAT('customer-', seq % 977), seq * 1.25, REPEAT('x', seq % 50) FROM seq_1_to_20000;
    CREATE DATABASE billing; CREATE TABLE billing.invoices (id INT PRIMARY KEY, amount INT);
    INSERT INTO billing.invoices SELECT seq, seq FROM seq_1_to_500;
    CREATE USER cairn@localhost IDENTIFIED BY 'db-secret-pw'; GRANT ALL ON *.* TO cairn@localhost WITH GRANT OPTION;";

const STATE: &str = "CHECKSUM TABLE shop.orders, billing.invoices; SELECT COUNT(*) FROM shop.orders;
    SELECT COUNT(*) FROM billing.invoices; SHOW DATABASES;";

#[test]
fn databases_on_other_hosts_back_up_and_restore_through_their_agents() {
    let Some(p) = platform(&["h1", "h2"]) else {
        return;
    };
    let (h1, h2) = (p.hosts.get("h1"), p.hosts.get("h2"));

    // MariaDB on h1, its files and socket visible there only; a ledger file on h2.
    let mdir = h1.dir.join("mariadb");
    let mstart = line("mariadb", &["start", &mdir.to_string_lossy()]).replace('\'', "");
    let mstop = line("mariadb", &["stop", &mdir.to_string_lossy()]).replace('\'', "");
    h1.sh(&mstart);
    let sock = mdir.join("mysqld.sock").to_string_lossy().into_owned();
    sql(h1, &sock, LOAD);
    let creds = h1.dir.join("mariadb.cnf");
    std::fs::write(
        h1.backing.join("mariadb.cnf"),
        "[client]\nuser=cairn\npassword=db-secret-pw\n",
    )
    .unwrap();
    h1.sh(&format!("chmod 600 {}", creds.display()));
    let ledger = h2.dir.join("ledger.txt");
    let ledger_data: String = (0..200_000)
        .map(|i| format!("entry {i}: {}\n", i * 7919 % 10007))
        .collect();
    std::fs::write(h2.backing.join("ledger.txt"), &ledger_data).unwrap();
    // Certificates on h2: a directory with a private key, a symlink and a subdirectory.
    let certs = h2.backing.join("certs");
    std::fs::create_dir_all(certs.join("ca")).unwrap();
    std::fs::write(certs.join("server.pem"), "-----BEGIN CERTIFICATE-----\nabc\n").unwrap();
    std::fs::write(certs.join("server.key"), "secret key\n").unwrap();
    std::fs::write(certs.join("ca/root.pem"), "root\n").unwrap();
    // A large file too: cut on h2 and sent by what the repository lacks.
    let bundle: String = (0..100_000)
        .map(|i| format!("cert {i}: {}\n", i * 7919 % 65521))
        .collect();
    std::fs::write(certs.join("bundle.pem"), &bundle).unwrap();
    // And many small ones, as a CA's issued certificates are: an unchanged backup sends their
    // chunk ids, not their bytes.
    std::fs::create_dir_all(certs.join("issued")).unwrap();
    for n in 0..40 {
        let pem: String = (0..50).map(|l| format!("{n:03}{l:02}{}\n", "Q".repeat(58))).collect();
        std::fs::write(certs.join(format!("issued/host{n}.pem")), pem).unwrap();
    }
    std::os::unix::fs::symlink("server.pem", certs.join("current.pem")).unwrap();
    std::fs::set_permissions(
        certs.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let want_certs = tree_state(&certs);
    let sections = format!(
        "[files.certs]\nruns_on = \"h2\"\npaths = [\"{certs_on_h2}\"]\n\n\
         [mariadb]\nruns_on = \"h1\"\nsocket = \"{sock}\"\ndatadir = \"{data}\"\ncredentials_file = \"{creds}\"\n\
         start = \"{mstart}\"\nstop = \"{mstop}\"\n\n\
         [[exec]]\nname = \"ledger\"\nruns_on = \"h2\"\ndump = \"cat {ledger}; if [ -e {ledger}.slow ]; then touch {ledger}.dumping; sleep 60; fi\"\nrestore = \"cat > {ledger}\"\n\
         verify = \"sha256sum < {ledger}\"\n",
        data = mdir.join("data").display(),
        creds = creds.display(),
        ledger = ledger.display(),
        certs_on_h2 = h2.dir.join("certs").display(),
    );
    let cfg = p.config("cairn.toml", &sections);

    // The controller cannot see the hosts' files: a plugin reaching for them locally fails.
    let o = p.hosts.controller(&{
        let mut c = Command::new("ls");
        c.arg(&h1.dir).arg(&h2.dir);
        c
    });
    let o = { o }.output().unwrap();
    assert!(
        !o.status.success(),
        "the controller sees the hosts' files: {}",
        stdout(&o)
    );
    let local = p.config("local.toml", &sections.replace("runs_on = \"h1\"\n", ""));
    p.ok(&["--config", &local, "init"]);
    let o = p.cairn(&["--config", &local, "backup", "--system", "--name", "local"]);
    assert!(
        !o.status.success(),
        "MariaDB was reached without its host: {}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("mariadb"), "{}", stderr(&o));

    // One snapshot of both hosts.
    let want_db = sql(h1, &sock, STATE);
    let out = p.cairn(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]);
    assert!(out.status.success(), "system backup failed: {}", stderr(&out));
    assert!(!stderr(&out).contains("db-secret-pw") && !stdout(&out).contains("db-secret-pw"));
    let s1 = json(&stdout(&out));
    assert_eq!(s1["snapshot"]["status"]["state"], "complete");
    let items = item_names(&s1);
    for want in ["mariadb/databases.sql", "mariadb/users.sql", "ledger/dump"] {
        assert!(items.iter().any(|i| i == want), "{want} missing from {items:?}");
    }
    let cert_item = format!(
        "certs/{}",
        h2.dir.join("certs").to_string_lossy().trim_start_matches('/')
    );
    assert!(items.contains(&cert_item), "{cert_item} missing from {items:?}");
    let dumped = p.ok(&["--config", &cfg, "dump", "s1", "ledger/dump"]);
    assert!(dumped == ledger_data, "the ledger item differs from the file on h2");
    let wire = |snap: &serde_json::Value, item: &str| -> (u64, u64) {
        let items = snap["snapshot"]["items"].as_array().unwrap();
        let i = items.iter().find(|i| i["name"] == item).unwrap();
        assert_eq!(i["meta"]["host"], if item.starts_with("mariadb") { "h1" } else { "h2" });
        (i["meta"]["wire_bytes"].as_u64().unwrap(), i["size"].as_u64().unwrap())
    };
    // (The ledger went over the wire in the failed attempt above: h2's agent sent it then.)

    // An unchanged second backup sends little more than chunk ids; the table says so per host.
    let table = p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1b"]);
    assert!(
        table.contains("sent") && table.contains("h1") && table.contains("h2"),
        "{table}"
    );
    let s1c = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1c", "--json"]));
    let (mut sent, mut size) = (0, 0);
    for item in ["mariadb/databases.sql", "ledger/dump", cert_item.as_str()] {
        let (w, s) = wire(&s1c, item);
        (sent, size) = (sent + w, size + s);
    }
    assert!(sent * 100 <= size, "an unchanged backup sent {sent} bytes for {size}");
    let (sent, size) = wire(&s1c, &cert_item);
    assert!(sent * 100 <= size, "an unchanged tree sent {sent} bytes for {size}");

    // Damage both hosts, restore, compare.
    sql(
        h1,
        &sock,
        "DROP DATABASE shop; DELETE FROM billing.invoices WHERE id < 100; CREATE DATABASE junk;",
    );
    std::fs::write(h2.backing.join("ledger.txt"), "overwritten\n").unwrap();
    std::fs::write(certs.join("server.pem"), "tampered\n").unwrap();
    std::fs::remove_file(certs.join("ca/root.pem")).unwrap();
    std::fs::create_dir_all(certs.join("new/dir")).unwrap();
    std::fs::write(certs.join("new/dir/planted.pem"), "x").unwrap();
    let out = p.cairn(&["--config", &cfg, "restore", "s1", "--json"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(sql(h1, &sock, STATE), want_db);
    assert_eq!(
        std::fs::read_to_string(h2.backing.join("ledger.txt")).unwrap(),
        ledger_data
    );
    let report = stdout(&out);
    let sent = json(&report)["transfers"].as_array().unwrap().clone();
    for (host, item) in [
        ("h1", "mariadb/databases.sql"),
        ("h2", "ledger/dump"),
        ("h2", cert_item.as_str()),
    ] {
        let t = sent
            .iter()
            .find(|t| t["item"] == item)
            .unwrap_or_else(|| panic!("{item} not in {sent:?}"));
        assert_eq!(t["host"], host);
        assert!(t["bytes"].as_u64().unwrap() > 0, "{t}");
    }
    assert!(
        report.contains("database junk"),
        "the extra database is not reported removed: {report}"
    );
    assert_eq!(
        tree_state(&certs),
        want_certs,
        "the certificates on h2 differ after the restore"
    );
    assert!(
        report.contains("certs/new"),
        "the planted directory is not reported removed: {report}"
    );

    // Least privilege: a database host holds nothing that reads the repository. Neither the
    // passphrase nor the repository is anywhere it can see (its files, its agents' work
    // directories), and cairn run there with the repository's path finds no repository.
    for h in [h1, h2] {
        let found = h.sh(&format!(
            "grep -rlF '{PASSWORD}' {} 2>/dev/null || true",
            h.dir.display()
        ));
        assert!(found.trim().is_empty(), "{}: the passphrase is in {found}", h.name);
        let o = h.sh(&format!(
            "CAIRN_PASSWORD='{PASSWORD}' {} -r {} snapshots 2>&1 || echo refused",
            cairn_bin().display(),
            p.env.repo.display()
        ));
        assert!(o.contains("refused"), "{}: {o}", h.name);
    }

    // The SSH connection to h2 killed in the middle of a backup: no snapshot, the host named;
    // the next run goes through, and sends only what had not come through before the cut.
    let ledger_new: String = (0..400_000u64)
        .map(|i| format!("entry {i}: {} moved\n", i * 31337 % 1_000_003))
        .collect();
    std::fs::write(h2.backing.join("ledger.txt"), &ledger_new).unwrap();
    let logged = || -> u64 {
        let dir = std::fs::read_dir(&p.env.cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("agents");
        std::fs::read_dir(dir).map_or(0, |d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
    };
    let logged_before = logged();
    std::fs::write(h2.backing.join("ledger.txt.slow"), "").unwrap();
    let mut running = p
        .hosts
        .controller(&p.env.cmd(&["--config", &cfg, "backup", "--system", "--name", "cut"]));
    let running = running
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ssh_to_h2 = format!("ssh -T .*root@{} ", h2.addr);
    // Once the dump is under way on h2 (it says so), its connection goes.
    for _ in 0..300 {
        if h2.backing.join("ledger.txt.dumping").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        h2.backing.join("ledger.txt.dumping").exists(),
        "the slow dump never started"
    );
    // Most of the new ledger is through (the controller logs each chunk it takes from h2).
    let chunks = ledger_new.len() as u64 / (64 << 10);
    for _ in 0..300 {
        if logged() >= logged_before + 32 * chunks / 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &ssh_to_h2])
        .status()
        .unwrap();
    assert!(killed.success(), "no ssh connection to h2 was seen");
    let out = running.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "a backup whose connection was cut succeeded: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("host h2") && err.contains("ledger"), "{err}");
    let snaps = json(&p.ok(&["--config", &cfg, "snapshots", "--json"]));
    let cut = snaps.as_array().unwrap().iter().find(|s| s["name"] == "cut");
    assert!(cut.is_none_or(|s| s["status"]["state"] != "complete"), "{snaps}");
    std::fs::remove_file(h2.backing.join("ledger.txt.slow")).unwrap();
    let again = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "cut", "--json"]));
    assert_eq!(again["snapshot"]["status"]["state"], "complete");
    let (sent, size) = wire(&again, "ledger/dump");
    assert_eq!(size, ledger_new.len() as u64);
    assert!(
        sent * 2 < size,
        "the rerun sent {sent} bytes of the {size} the cut run had begun to send"
    );
    let dumped = p.ok(&["--config", &cfg, "dump", "cut", "ledger/dump"]);
    assert!(dumped == ledger_new, "the ledger item differs from the file on h2");

    // A host down fails the snapshot, naming the host and the plugin; the other is unharmed.
    let mut hosts = p.hosts;
    hosts.hosts.iter_mut().find(|h| h.name == "h2").unwrap().down();
    let p = Platform { env: p.env, hosts };
    let out = p.cairn(&["--config", &cfg, "backup", "--system", "--name", "s2"]);
    assert!(
        !out.status.success(),
        "a backup with h2 down succeeded: {}",
        stdout(&out)
    );
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(err.contains("host h2") && err.contains("ledger"), "{err}");
    let snaps = p.ok(&["--config", &cfg, "snapshots", "--json"]);
    assert!(
        !json(&snaps)
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "s2" && s["status"]["state"] == "complete"),
        "{snaps}"
    );
}

/// A three-member etcd cluster, one member per host.
struct EtcdHosts {
    members: Vec<(String, String, std::path::PathBuf)>, // (member, host, data dir as the host sees it)
}

impl EtcdHosts {
    fn on(p: &Platform, hosts: &[&str]) -> EtcdHosts {
        EtcdHosts {
            members: hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("e{}", i + 1), h.to_string(), p.hosts.get(h).dir.join("e.etcd")))
                .collect(),
        }
    }
    fn addr<'a>(&self, p: &'a Platform, host: &str) -> &'a str {
        &p.hosts.get(host).addr
    }
    fn cluster(&self, p: &Platform) -> String {
        let m: Vec<String> = self
            .members
            .iter()
            .map(|(n, h, _)| format!("{n}=http://{}:2380", self.addr(p, h)))
            .collect();
        m.join(",")
    }
    fn endpoints(&self, p: &Platform) -> String {
        let m: Vec<String> = self
            .members
            .iter()
            .map(|(_, h, _)| format!("http://{}:2379", self.addr(p, h)))
            .collect();
        m.join(",")
    }
    fn start_line(&self, p: &Platform, i: usize) -> String {
        let (n, h, d) = &self.members[i];
        format!(
            "ETCD_HOST={} {}",
            self.addr(p, h),
            line(
                "etcd",
                &["start", &d.to_string_lossy(), n, "2379", "2380", &self.cluster(p)]
            )
            .replace('\'', "")
        )
    }
    fn stop_line(&self, i: usize) -> String {
        line("etcd", &["stop", &self.members[i].2.to_string_lossy()]).replace('\'', "")
    }
    fn start(&self, p: &Platform) {
        for (i, (_, h, _)) in self.members.iter().enumerate() {
            p.hosts.get(h).sh(&self.start_line(p, i));
        }
        support::servers::sh(&line("etcd", &["wait", &self.endpoints(p)]));
    }
    fn etcdctl(&self, p: &Platform, args: &str) -> String {
        support::servers::sh(&format!(
            "ETCDCTL_API=3 etcdctl --endpoints={} {args}",
            self.endpoints(p)
        ))
    }
    fn sections(&self, p: &Platform) -> String {
        let mut s = String::from("[etcd]\n");
        for (i, (n, h, d)) in self.members.iter().enumerate() {
            s.push_str(&format!(
                "[[etcd.members]]\nname = \"{n}\"\nruns_on = \"{h}\"\nclient_url = \"http://{a}:2379\"\n\
                 peer_url = \"http://{a}:2380\"\ndata_dir = \"{d}\"\nstart = \"{start}\"\nstop = \"{stop}\"\n\n",
                a = self.addr(p, h),
                d = d.display(),
                start = self.start_line(p, i),
                stop = self.stop_line(i),
            ));
        }
        s
    }
}

#[test]
fn an_etcd_cluster_across_three_hosts_restores_and_rebuilds_on_fresh_hosts() {
    let Some(mut p) = platform(&["h1", "h2", "h3"]) else {
        return;
    };
    let etcd = EtcdHosts::on(&p, &["h1", "h2", "h3"]);
    etcd.start(&p);
    for i in 0..40 {
        etcd.etcdctl(&p, &format!("put /config/key{i:03} value-{i}"));
    }
    let want = etcd.etcdctl(&p, "get '' --prefix");
    let cfg = p.config("cairn.toml", &etcd.sections(&p));
    p.ok(&["--config", &cfg, "init"]);
    let s1 = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]));
    assert!(item_names(&s1).iter().any(|i| i == "etcd/snapshot.db"), "{s1}");

    // Damage, restore: every member rebuilt on its own host.
    etcd.etcdctl(&p, "del /config/key0 --prefix");
    etcd.etcdctl(&p, "put /junk 1");
    let out = p.cairn(&["--config", &cfg, "restore", "s1"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(etcd.etcdctl(&p, "get '' --prefix"), want);
    for (_, h, d) in &etcd.members {
        let listed = p.hosts.get(h).sh(&format!("ls {}", d.display()));
        assert!(listed.contains("member"), "{h}: {listed}");
    }

    // Disaster recovery onto three fresh hosts (new addresses, empty disks), the old ones gone.
    for (i, _) in etcd.members.iter().enumerate() {
        let h = etcd.members[i].1.clone();
        p.hosts.get(&h).sh(&etcd.stop_line(i));
    }
    for h in ["h1", "h2", "h3"] {
        p.hosts.hosts.iter_mut().find(|x| x.name == h).unwrap().down();
    }
    for h in ["h4", "h5", "h6"] {
        p.hosts.add_host(h);
    }
    let fresh = EtcdHosts::on(&p, &["h4", "h5", "h6"]);
    let cfg2 = p.config("dr.toml", &fresh.sections(&p));
    p.ok(&["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    assert_eq!(fresh.etcdctl(&p, "get '' --prefix"), want);
    let members = fresh.etcdctl(&p, "member list");
    for h in ["h4", "h5", "h6"] {
        assert!(members.contains(&p.hosts.get(h).addr), "{members}");
    }
    for (i, (_, h, _)) in fresh.members.iter().enumerate() {
        p.hosts.get(h).sh(&fresh.stop_line(i));
    }
}

#[test]
fn a_zookeeper_ensemble_across_three_hosts_restores_and_rebuilds_on_fresh_hosts() {
    let Some(mut p) = platform(&["z1", "z2", "z3"]) else {
        return;
    };
    let zk = ZkHosts(vec!["z1", "z2", "z3"]);
    zk.start(&p);
    let mut load = String::from("create /app \"root\"\n");
    for i in 0..40 {
        load.push_str(&format!("create /app/node{i:03} \"value-{i}\"\n"));
    }
    zk.cli(&p, &load);
    let state = |zk: &ZkHosts, p: &Platform| zk.cli(p, "ls /app\nget /app/node007\nget /app/node039\n");
    let want = state(&zk, &p);
    assert!(want.contains("node039") && want.contains("value-7"), "{want}");

    let cfg = p.config("cairn.toml", &zk.sections(&p));
    p.ok(&["--config", &cfg, "init"]);
    let s1 = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]));
    assert!(item_names(&s1).iter().any(|i| i == "zookeeper/data"), "{s1}");

    zk.cli(&p, "deleteall /app\ncreate /junk \"x\"\n");
    let out = p.cairn(&["--config", &cfg, "restore", "s1"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    // The ensemble was restarted by the restore; a client may still find it electing.
    zk.wait(&p);
    assert_eq!(state(&zk, &p), want);
    zk.check_ids(&p);

    // Disaster recovery onto three fresh hosts (new addresses, empty disks), the old ones gone.
    for n in &zk.0 {
        p.hosts.get(n).sh(&zk.stop_line(&p, n));
    }
    for n in ["z1", "z2", "z3"] {
        p.hosts.hosts.iter_mut().find(|x| x.name == n).unwrap().down();
    }
    for n in ["z4", "z5", "z6"] {
        p.hosts.add_host(n);
    }
    let fresh = ZkHosts(vec!["z4", "z5", "z6"]);
    let cfg2 = p.config("dr.toml", &fresh.sections(&p));
    p.ok(&["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    fresh.wait(&p);
    assert_eq!(state(&fresh, &p), want);
    fresh.check_ids(&p);
    for n in &fresh.0 {
        p.hosts.get(n).sh(&fresh.stop_line(&p, n));
    }
}

/// A three-server ZooKeeper ensemble, one server per named host (ids 1, 2, 3 in that order).
struct ZkHosts(Vec<&'static str>);

impl ZkHosts {
    fn addr<'a>(&self, p: &'a Platform, n: &str) -> &'a str {
        &p.hosts.get(n).addr
    }

    fn dir(&self, p: &Platform, n: &str) -> std::path::PathBuf {
        p.hosts.get(n).dir.join("zk")
    }

    fn start_line(&self, p: &Platform, i: usize) -> String {
        let ensemble: Vec<String> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}={}:2888:3888", i + 1, self.addr(p, n)))
            .collect();
        let n = self.0[i];
        format!(
            "ZK_HOST={} {}",
            self.addr(p, n),
            line(
                "zookeeper",
                &[
                    "start",
                    &self.dir(p, n).to_string_lossy(),
                    &(i + 1).to_string(),
                    "2181",
                    &ensemble.join(",")
                ]
            )
            .replace('\'', "")
        )
    }

    fn stop_line(&self, p: &Platform, n: &str) -> String {
        line("zookeeper", &["stop", &self.dir(p, n).to_string_lossy()]).replace('\'', "")
    }

    fn clients(&self, p: &Platform) -> Vec<String> {
        self.0.iter().map(|n| format!("{}:2181", self.addr(p, n))).collect()
    }

    fn start(&self, p: &Platform) {
        for (i, n) in self.0.iter().enumerate() {
            p.hosts.get(n).sh(&self.start_line(p, i));
        }
        self.wait(p);
    }

    /// Until every server serves.
    fn wait(&self, p: &Platform) {
        let clients = self.clients(p);
        let mut wait = vec!["wait"];
        wait.extend(clients.iter().map(String::as_str));
        support::servers::sh(&line("zookeeper", &wait));
    }

    fn cli(&self, p: &Platform, cmds: &str) -> String {
        let mut c = Command::new("bash");
        c.arg(support::servers::script("zookeeper"))
            .arg("cli")
            .arg(&self.clients(p)[0]);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{cmds}\nquit\n").as_bytes())
            .unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    }

    fn sections(&self, p: &Platform) -> String {
        let mut sections = String::new();
        for (i, n) in self.0.iter().enumerate() {
            sections.push_str(&format!(
                "[[zookeeper.servers]]\nid = {id}\nruns_on = \"{n}\"\naddress = \"{a}:2181\"\ndata_dir = \"{d}\"\n\
                 start = \"{start}\"\nstop = \"{stop}\"\n\n",
                id = i + 1,
                a = self.addr(p, n),
                d = self.dir(p, n).join("data").display(),
                start = self.start_line(p, i),
                stop = self.stop_line(p, n),
            ));
        }
        sections
    }

    /// Each server's data directory holds its own id.
    fn check_ids(&self, p: &Platform) {
        for (i, n) in self.0.iter().enumerate() {
            let myid = p
                .hosts
                .get(n)
                .sh(&format!("cat {}", self.dir(p, n).join("data/myid").display()));
            assert_eq!(myid.trim(), (i + 1).to_string(), "{n}");
        }
    }
}

/// Elasticsearch (the stand-in) on a host: its shared-filesystem repository is there; the
/// controller speaks HTTP to it and carries the repository through the host's agent.
#[test]
fn an_elasticsearch_repository_on_another_host_is_carried_through_its_agent() {
    let Some(p) = platform(&["es1"]) else {
        return;
    };
    let h = p.hosts.get("es1");
    let es = h.dir.join("es");
    let path_repo = format!("--path-repo {}", es.display());
    let port = start_standin(h, "elasticsearch", "", &path_repo, support::standins::ES_AUTH);
    let url = format!("http://{}:{port}", h.addr);
    let auth = Some(support::standins::ES_AUTH);
    let call =
        |m: &str, path: &str, body: Option<&str>| support::standins::http_ok(m, &format!("{url}{path}"), auth, body);
    let mut bulk = String::new();
    for i in 0..300 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"events\",\"_id\":\"{i}\"}}}}\n{{\"n\":{i}}}\n"
        ));
    }
    call("POST", "/_bulk?refresh=true", Some(&bulk));
    let count = || call("GET", "/events/_count", None)["count"].as_u64().unwrap();
    assert_eq!(count(), 300);
    let cred = p.env.path("ctl/es.cred");
    support::standins::secret_file(&cred, &format!("{}\n", support::standins::ES_AUTH));
    let sections = format!(
        "[elasticsearch]\nruns_on = \"es1\"\nurl = \"{url}\"\ncredentials_file = \"{}\"\nlocation = \"{}\"\n",
        cred.display(),
        es.join("cairn").display(),
    );
    let cfg = p.config("cairn.toml", &sections);
    p.ok(&["--config", &cfg, "init"]);
    let s1 = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]));
    assert!(item_names(&s1).iter().any(|i| i == "elasticsearch/repository"), "{s1}");
    call("DELETE", "/events", None);
    let out = p.cairn(&["--config", &cfg, "restore", "s1"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(count(), 300);
    // The scratch copy the restore registered is gone from the host again.
    assert!(!h.backing.join("es/cairn-restore").exists());
}

/// A stand-in server started on a host, listening on its address: the port it chose.
fn start_standin(h: &hosts::Host, name: &str, serve: &str, extra: &str, cred: &str) -> u16 {
    std::fs::write(h.backing.join(format!("{name}.cred")), format!("{cred}\n")).unwrap();
    h.sh(&format!(
        "mkdir -p {d}/{name}; nohup python3 {script} {serve} --port-file {d}/{name}/port --data-dir {d}/{name}/data \
         --credentials-file {d}/{name}.cred --host {addr} {extra} > {d}/{name}/server.log 2>&1 < /dev/null &",
        d = h.dir.display(),
        script = support::standins::script(name).display(),
        addr = h.addr,
    ));
    wait_port(h, &format!("{name}/port"))
}

/// The port a stand-in on `h` wrote into `rel` (under the host's files), once it is there.
fn wait_port(h: &hosts::Host, rel: &str) -> u16 {
    for _ in 0..100 {
        if let Some(p) = std::fs::read_to_string(h.backing.join(rel))
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return p;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no port in {rel} on {}: the stand-in did not start", h.name);
}

/// ArangoDB (the stand-in) on a host: arangodump and arangorestore run there and the dump is
/// staged in the agent's own directory, which the controller cannot see.
#[test]
fn arangodb_tools_run_on_their_host() {
    let Some(p) = platform(&["a1"]) else {
        return;
    };
    let h = p.hosts.get("a1");
    let auth = "root:arango-secret-pw";
    let port = start_standin(h, "arangodb", "serve", "", auth);
    let url = format!("http://{}:{port}", h.addr);
    let call = |m: &str, path: &str, body: Option<&str>| {
        support::standins::http_ok(m, &format!("{url}{path}"), Some(auth), body)
    };
    call("POST", "/_api/database", Some("{\"name\":\"shop\"}"));
    call("POST", "/_db/shop/_api/collection", Some("{\"name\":\"orders\"}"));
    let docs: Vec<serde_json::Value> = (0..500)
        .map(|i| serde_json::json!({"_key": format!("k{i}"), "n": i}))
        .collect();
    call(
        "POST",
        "/_db/shop/_api/document/orders",
        Some(&serde_json::Value::Array(docs).to_string()),
    );
    let count = || call("GET", "/_db/shop/_api/collection/orders/count", None)["count"].as_u64();
    assert_eq!(count(), Some(500));
    let cred = p.env.path("ctl/arango.cred");
    support::standins::secret_file(&cred, &format!("{auth}\n"));
    let bin = p.env.path("bin");
    let sections = format!(
        "[arangodb]\nruns_on = \"a1\"\nendpoint = \"tcp://{}:{port}\"\ncredentials_file = \"{}\"\n\
         arangodump = \"{}\"\narangorestore = \"{}\"\n",
        h.addr,
        cred.display(),
        support::standins::tool(&bin, "arangodb", "arangodump").display(),
        support::standins::tool(&bin, "arangodb", "arangorestore").display(),
    );
    let cfg = p.config("cairn.toml", &sections);
    p.ok(&["--config", &cfg, "init"]);
    let s1 = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]));
    assert!(item_names(&s1).iter().any(|i| i == "arangodb/dump"), "{s1}");
    call("DELETE", "/_db/shop/_api/collection/orders", None);
    let out = p.cairn(&["--config", &cfg, "restore", "s1"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(count(), Some(500));
    // Nothing staged is left on the host.
    let left = h.sh(&format!(
        "find {} -name '*arango*' | grep -v '/arangodb' || true",
        h.dir.join("tmp").display()
    ));
    assert!(left.trim().is_empty(), "{left}");
}

/// A Cassandra node (the stand-in) on a host: nodetool and cqlsh run there, its SSTables are
/// read from and copied back into its data directory there.
#[test]
fn a_cassandra_node_on_another_host_backs_up_and_restores_through_its_agent() {
    let Some(p) = platform(&["c1"]) else {
        return;
    };
    let h = p.hosts.get("c1");
    let d = h.dir.join("cassandra");
    std::fs::write(h.backing.join("cassandra.cred"), "cassandra:cass-secret-pw\n").unwrap();
    h.sh(&format!(
        "mkdir -p {d}; nohup python3 {script} serve --data-dir {d}/node --cql-port-file {d}/cql.port \
         --jmx-port-file {d}/jmx.port --credentials-file {cred} --host {addr} > {d}/server.log 2>&1 < /dev/null &",
        d = d.display(),
        script = support::standins::script("cassandra").display(),
        cred = h.dir.join("cassandra.cred").display(),
        addr = h.addr,
    ));
    let (cql_port, jmx_port) = (wait_port(h, "cassandra/cql.port"), wait_port(h, "cassandra/jmx.port"));
    // The tools' credentials are the node host's files.
    std::fs::write(
        h.backing.join("cqlshrc"),
        "[authentication]\nusername = cassandra\npassword = cass-secret-pw\n",
    )
    .unwrap();
    std::fs::write(h.backing.join("jmx.pass"), "cassandra cass-secret-pw\n").unwrap();
    h.sh(&format!("chmod 600 {0}/cqlshrc {0}/jmx.pass", h.dir.display()));
    let cql = |statements: &str| {
        std::fs::write(h.backing.join("stmt.cql"), statements).unwrap();
        h.sh(&format!(
            "python3 {} cqlsh {} {cql_port} --cqlshrc {} -f {}",
            support::standins::script("cassandra").display(),
            h.addr,
            h.dir.join("cqlshrc").display(),
            h.dir.join("stmt.cql").display()
        ))
    };
    let mut load = String::from(
        "CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};\n\
         CREATE TABLE shop.orders (id int PRIMARY KEY, customer text, total double);\n",
    );
    for i in 0..800 {
        load.push_str(&format!(
            "INSERT INTO shop.orders (id, customer, total) VALUES ({i}, 'c{}', {i}.5);\n",
            i % 40
        ));
    }
    cql(&load);
    let state = || cql("SELECT COUNT(*) FROM shop.orders; SELECT * FROM shop.orders WHERE id = 7;");
    let want = state();
    assert!(want.contains("800"), "{want}");
    let bin = p.env.path("bin");
    let sections = format!(
        "[cassandra]\njmx_user = \"cassandra\"\njmx_password_file = \"{jmx}\"\ncqlshrc = \"{rc}\"\nnodetool = \"{nt}\"\n\
         cqlsh = \"{cq}\"\n\n[[cassandra.nodes]]\nname = \"node1\"\nruns_on = \"c1\"\nhost = \"{addr}\"\n\
         cql_port = {cql_port}\njmx_port = {jmx_port}\ndata_dir = \"{data}\"\n",
        jmx = h.dir.join("jmx.pass").display(),
        rc = h.dir.join("cqlshrc").display(),
        nt = support::standins::tool(&bin, "cassandra", "nodetool").display(),
        cq = support::standins::tool(&bin, "cassandra", "cqlsh").display(),
        addr = h.addr,
        data = d.join("node/data").display(),
    );
    let cfg = p.config("cairn.toml", &sections);
    p.ok(&["--config", &cfg, "init"]);
    let s1 = json(&p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]));
    assert!(item_names(&s1).iter().any(|i| i == "cassandra/node1/sstables"), "{s1}");
    cql("DELETE FROM shop.orders WHERE id = 7; INSERT INTO shop.orders (id, customer, total) VALUES (9999, 'x', 1.0);");
    let out = p.cairn(&["--config", &cfg, "restore", "s1"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(state(), want);
}

/// MariaDB's host is lost: disaster recovery initialises and starts a server on a fresh host
/// (a new address, an empty disk) through that host's agent, and loads the snapshot into it.
#[test]
fn mariadb_is_rebuilt_on_a_fresh_host_by_disaster_recovery() {
    let Some(mut p) = platform(&["m1"]) else {
        return;
    };
    let section = |p: &Platform, host: &str| {
        let h = p.hosts.get(host);
        let mdir = h.dir.join("mariadb");
        std::fs::write(
            h.backing.join("mariadb.cnf"),
            "[client]\nuser=cairn\npassword=db-secret-pw\n",
        )
        .unwrap();
        h.sh(&format!("chmod 600 {}", h.dir.join("mariadb.cnf").display()));
        format!(
            "[mariadb]\nruns_on = \"{host}\"\nsocket = \"{sock}\"\ndatadir = \"{data}\"\ncredentials_file = \"{creds}\"\n\
             start = \"{start}\"\nstop = \"{stop}\"\n\
             install_db = \"mariadb-install-db --user=root --datadir={data} --auth-root-authentication-method=socket --skip-test-db\"\n",
            sock = mdir.join("mysqld.sock").display(),
            data = mdir.join("data").display(),
            creds = h.dir.join("mariadb.cnf").display(),
            start = line("mariadb", &["start", &mdir.to_string_lossy()]).replace('\'', ""),
            stop = line("mariadb", &["stop", &mdir.to_string_lossy()]).replace('\'', ""),
        )
    };
    let m1 = p.hosts.get("m1");
    let sock1 = m1.dir.join("mariadb/mysqld.sock").to_string_lossy().into_owned();
    m1.sh(&line("mariadb", &["start", &m1.dir.join("mariadb").to_string_lossy()]).replace('\'', ""));
    sql(m1, &sock1, LOAD);
    let want = sql(m1, &sock1, STATE);
    let cfg = p.config("cairn.toml", &section(&p, "m1"));
    p.ok(&["--config", &cfg, "init"]);
    p.ok(&["--config", &cfg, "backup", "--system", "--name", "s1"]);

    // m1 is gone; m2 is new, with nothing on it but cairn's agent.
    p.hosts.hosts.iter_mut().find(|h| h.name == "m1").unwrap().down();
    p.hosts.add_host("m2");
    let cfg2 = p.config("dr.toml", &section(&p, "m2"));
    p.ok(&["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    let m2 = p.hosts.get("m2");
    let sock2 = m2.dir.join("mariadb/mysqld.sock").to_string_lossy().into_owned();
    assert_eq!(sql(m2, &sock2, STATE), want);
    // Run again, it finds the new server answering and restores into it.
    let out = p.cairn(&["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(sql(m2, &sock2, STATE), want);
}

/// A host without cairn, then with an agent of another protocol: the configured `install`
/// command puts this binary there and the backup goes on; without it, the error says how.
#[test]
fn a_missing_or_foreign_agent_is_replaced_by_the_configured_install() {
    let env = Env::new();
    let bin = env.path("host-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let agent = bin.join("cairn");
    let config = |install: bool| {
        let path = env.path(if install { "install.toml" } else { "plain.toml" });
        let install = if install {
            format!(
                "install = [\"sh\", \"-c\", \"cat > {a}.new && chmod 755 {a}.new && mv {a}.new {a}\"]\n",
                a = agent.display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &path,
            format!(
                "work_dir = \"{w}/work\"\nstate_dir = \"{w}/state\"\n\n[hosts.box]\n\
                 command = [\"sh\", \"-c\", \"exec {a} agent\"]\n{install}\n\
                 [[exec]]\nname = \"note\"\nruns_on = \"box\"\ndump = \"echo hello from box\"\nrestore = \"cat > /dev/null\"\n",
                w = env.dir.path().display(),
                a = agent.display(),
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let (plain, install) = (config(false), config(true));

    // No cairn on the host and nothing configured to install it: the error says what to set.
    let o = env.run(&["--config", &plain, "backup", "--system", "--name", "s0"]);
    assert!(!o.status.success());
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        err.contains("host box") && err.contains("set install in [hosts.box]"),
        "{err}"
    );
    assert!(!agent.exists());

    // Installed on first use.
    let out = env.ok(&["--config", &install, "backup", "--system", "--name", "s1"]);
    assert!(out.contains("box"), "{out}");
    assert_eq!(std::fs::read(&agent).unwrap(), std::fs::read(cairn_bin()).unwrap());
    assert_eq!(env.ok(&["dump", "s1", "note/dump"]), "hello from box\n");

    // An agent of another protocol (it says hello with protocol 999) is replaced too.
    std::fs::write(
        &agent,
        "#!/usr/bin/env python3\nimport json, struct, sys\n\
         body = json.dumps({\"protocol\": 999, \"version\": \"0.0.1\"}).encode()\n\
         sys.stdout.buffer.write(struct.pack('<IBI', len(body) + 5, 1, 0) + body)\n\
         sys.stdout.flush()\nsys.stdin.buffer.read()\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = env.run(&["--config", &plain, "backup", "--system", "--name", "s2"]);
    assert!(!o.status.success());
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(err.contains("protocol 999") && err.contains("set install"), "{err}");
    env.ok(&["--config", &install, "backup", "--system", "--name", "s3"]);
    assert_eq!(std::fs::read(&agent).unwrap(), std::fs::read(cairn_bin()).unwrap());
}

/// Live progress of a system backup names each item's host and counts, while it runs, the
/// bytes the agent sent and the bytes stored; a restore's names the host it streams to. (A host
/// reached through a command running the agent here: no SSH needed to see the progress.)
#[test]
fn live_progress_names_the_host_and_counts_what_was_sent_and_stored() {
    let env = Env::new();
    let cfg = env.path("progress.toml");
    std::fs::write(
        &cfg,
        format!(
            "work_dir = \"{w}/work\"\nstate_dir = \"{w}/state\"\n\n[hosts.box]\n\
             command = [\"env\", \"CAIRN_AGENT_CACHE={w}/agent-cache\", \"{cairn}\", \"agent\"]\n\n\
             [[exec]]\nname = \"db\"\nruns_on = \"box\"\n\
             dump = \"for i in 1 2 3 4; do head -c 3000000 /dev/urandom; sleep 1; done\"\n\
             restore = \"sleep 2; cat > /dev/null\"\n",
            w = env.dir.path().display(),
            cairn = cairn_bin().display(),
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let o = env.cmd(args).env("CAIRN_PROGRESS_SECS", "1").output().unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stderr(&o)
    };
    let err = run(&["--config", &cfg, "backup", "--system", "--name", "one"]);
    // A line written while the dump was still coming: random data, so what was sent so far is
    // more than nothing and nearly all of it is stored.
    let live: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: [") && l.contains("backup db/dump from box") && !l.contains("done"))
        .collect();
    assert!(!live.is_empty(), "{err}");
    let figure = |line: &str, word: &str| -> String {
        let at = line
            .find(&format!(" {word} "))
            .unwrap_or_else(|| panic!("no {word} in {line}"));
        line[at + word.len() + 2..].split(' ').next().unwrap().to_string()
    };
    assert!(
        live.iter()
            .any(|l| figure(l, "sent") != "0" && figure(l, "stored") != "0"),
        "{err}"
    );
    let err = run(&["--config", &cfg, "restore", "one", "--no-safety-snapshot"]);
    assert!(err.contains("progress: [") && err.contains("db/dump to box"), "{err}");
}
