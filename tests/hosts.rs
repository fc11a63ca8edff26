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
        assert!(o.status.success(), "cairn {args:?} failed: {}{}", stdout(&o), stderr(&o));
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
    if skip() {
        return;
    }
    let env = controller_env();
    let hosts = Hosts::start(env.dir.path(), &["h1", "h2"]);
    let p = Platform { env, hosts };
    let (h1, h2) = (p.hosts.get("h1"), p.hosts.get("h2"));

    // MariaDB on h1, its files and socket visible there only; a ledger file on h2.
    let mdir = h1.dir.join("mariadb");
    let mstart = line("mariadb", &["start", &mdir.to_string_lossy()]).replace('\'', "");
    let mstop = line("mariadb", &["stop", &mdir.to_string_lossy()]).replace('\'', "");
    h1.sh(&mstart);
    let sock = mdir.join("mysqld.sock").to_string_lossy().into_owned();
    sql(h1, &sock, LOAD);
    let creds = h1.dir.join("mariadb.cnf");
    std::fs::write(h1.backing.join("mariadb.cnf"), "[client]\nuser=cairn\npassword=db-secret-pw\n").unwrap();
    h1.sh(&format!("chmod 600 {}", creds.display()));
    let ledger = h2.dir.join("ledger.txt");
    let ledger_data: String = (0..5000).map(|i| format!("entry {i}: {}\n", i * 7919 % 10007)).collect();
    std::fs::write(h2.backing.join("ledger.txt"), &ledger_data).unwrap();
    let sections = format!(
        "[mariadb]\nruns_on = \"h1\"\nsocket = \"{sock}\"\ndatadir = \"{data}\"\ncredentials_file = \"{creds}\"\n\
         start = \"{mstart}\"\nstop = \"{mstop}\"\n\n\
         [[exec]]\nname = \"ledger\"\nruns_on = \"h2\"\ndump = \"cat {ledger}\"\nrestore = \"cat > {ledger}\"\n\
         verify = \"sha256sum < {ledger}\"\n",
        data = mdir.join("data").display(),
        creds = creds.display(),
        ledger = ledger.display(),
    );
    let cfg = p.config("cairn.toml", &sections);

    // The controller cannot see the hosts' files: a plugin reaching for them locally fails.
    let o = p.hosts.controller(&{
        let mut c = Command::new("ls");
        c.arg(&h1.dir).arg(&h2.dir);
        c
    });
    let o = { o }.output().unwrap();
    assert!(!o.status.success(), "the controller sees the hosts' files: {}", stdout(&o));
    let local = p.config("local.toml", &sections.replace("runs_on = \"h1\"\n", ""));
    p.ok(&["--config", &local, "init"]);
    let o = p.cairn(&["--config", &local, "backup", "--system", "--name", "local"]);
    assert!(!o.status.success(), "MariaDB was reached without its host: {}", stdout(&o));
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
    let dumped = p.ok(&["--config", &cfg, "dump", "s1", "ledger/dump"]);
    assert!(dumped == ledger_data, "the ledger item differs from the file on h2");

    // Damage both hosts, restore, compare.
    sql(h1, &sock, "DROP DATABASE shop; DELETE FROM billing.invoices WHERE id < 100; CREATE DATABASE junk;");
    std::fs::write(h2.backing.join("ledger.txt"), "overwritten\n").unwrap();
    let out = p.cairn(&["--config", &cfg, "restore", "s1", "--json"]);
    assert!(out.status.success(), "restore failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(sql(h1, &sock, STATE), want_db);
    assert_eq!(std::fs::read_to_string(h2.backing.join("ledger.txt")).unwrap(), ledger_data);
    let report = stdout(&out);
    assert!(report.contains("database junk"), "the extra database is not reported removed: {report}");

    // A host down fails the snapshot, naming the host and the plugin; the other is unharmed.
    let mut hosts = p.hosts;
    hosts.hosts.iter_mut().find(|h| h.name == "h2").unwrap().down();
    let p = Platform { env: p.env, hosts };
    let out = p.cairn(&["--config", &cfg, "backup", "--system", "--name", "s2"]);
    assert!(!out.status.success(), "a backup with h2 down succeeded: {}", stdout(&out));
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(err.contains("host h2") && err.contains("ledger"), "{err}");
    let snaps = p.ok(&["--config", &cfg, "snapshots", "--json"]);
    assert!(!json(&snaps).as_array().unwrap().iter().any(|s| s["name"] == "s2" && s["status"]["state"] == "complete"), "{snaps}");
    p.hosts.get("h1").sh(&mstop);
}
