//! `cso_backupnrestore`, the operator interface, driven as operators type it: every documented
//! example against a platform of a real MariaDB server, a real etcd member, an Elasticsearch
//! stand-in and a certificate directory; the refused combinations through the real binary; the
//! cron entry installed, replaced and removed in a temp cron dir; scheduled runs (named
//! `DAILY/<UTC time>`, logged, retention applied, skipped while the previous one runs).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::servers::{Etcd, MariaDb};
use support::standins::{secret_file, Es, ES_AUTH};
use support::{stderr, stdout, Env};

struct Cso<'a> {
    env: &'a Env,
    config: PathBuf,
    cron_dir: PathBuf,
}

impl Cso<'_> {
    fn cmd(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .env("CAIRN_CONFIG", &self.config)
            .env("CAIRN_CACHE_DIR", &self.env.cache)
            .env("CAIRN_CRON_DIR", &self.cron_dir)
            .env("CAIRN_SCRYPT_LOG_N", "10")
            .env_remove("CAIRN_REPO")
            .env_remove("CAIRN_PASSWORD")
            .stdin(std::process::Stdio::null());
        c
    }
    /// `cso_backupnrestore ARGS` (split at spaces, as a shell would here).
    fn run(&self, args: &str) -> Output {
        let argv: Vec<&str> = args.split_whitespace().collect();
        self.cmd(env!("CARGO_BIN_EXE_cso_backupnrestore"), &argv)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &str) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "cso_backupnrestore {args}: {}{}",
            stderr(&o),
            stdout(&o)
        );
        stdout(&o)
    }
    fn cairn(&self, args: &[&str]) -> Output {
        self.cmd(env!("CARGO_BIN_EXE_cairn"), args).output().unwrap()
    }
}

fn config(env: &Env, m: &MariaDb, etcd: &Etcd, es: &Es, certs: &Path, retention: &str) -> String {
    let es_cred = env.path("es-client.cred");
    secret_file(&es_cred, &format!("{ES_AUTH}\n"));
    let e = &etcd.members[0];
    format!(
        "repository = \"{repo}\"\npassword_file = \"{pw}\"\nwork_dir = \"{work}\"\nstate_dir = \"{state}\"\n\
         [maintenance]\nenter = \"echo on >> {state}/maintenance.log\"\nleave = \"echo off >> {state}/maintenance.log\"\n\
         {retention}\n\
         [mariadb]\nsocket = \"{sock}\"\ndatadir = \"{datadir}\"\nstart = \"{mstart}\"\nstop = \"{mstop}\"\n\
         install_db = \"mariadb-install-db --user=root --datadir={datadir} --auth-root-authentication-method=socket --skip-test-db\"\n\
         [[etcd.members]]\nname = \"{ename}\"\nclient_url = \"http://127.0.0.1:{ec}\"\npeer_url = \"http://127.0.0.1:{ep}\"\n\
         data_dir = \"{edir}\"\nstart = \"{estart}\"\nstop = \"{estop}\"\n\
         [elasticsearch]\nurl = \"{esurl}\"\ncredentials_file = \"{escred}\"\nlocation = \"{esloc}\"\nreindex = [\"events\"]\n\
         [files.certificates]\npaths = [\"{certs}\"]\n",
        repo = env.repo.display(),
        pw = env.path("password").display(),
        work = env.path("work").display(),
        state = env.path("state").display(),
        sock = m.socket().display(),
        datadir = m.datadir().display(),
        mstart = m.start_line().replace('\'', ""),
        mstop = m.stop_line().replace('\'', ""),
        ename = e.name,
        ec = e.client,
        ep = e.peer,
        edir = e.dir.display(),
        estart = etcd.start_line(e).replace('\'', ""),
        estop = etcd.stop_line(e).replace('\'', ""),
        esurl = es.url(""),
        escred = es_cred.display(),
        esloc = env.path("es-snapshots/cairn").display(),
        certs = certs.display(),
    )
}

fn mariadb_state(m: &MariaDb) -> String {
    m.sql_all("CHECKSUM TABLE shop.orders; SELECT COUNT(*) FROM shop.orders;")
}

#[test]
fn every_documented_example_runs() {
    let env = Env::empty();
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let m = MariaDb::start(&env.path("mariadb"));
    let etcd = Etcd::plan(&env.path("etcd"), 1);
    etcd.start();
    let es = Es::start(&env, "es");
    let certs = env.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.pem"), support::random_bytes(2000, 5)).unwrap();
    m.sql(
        "CREATE DATABASE shop; USE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v TEXT);
         INSERT INTO shop.orders SELECT seq, MD5(seq) FROM seq_1_to_5000;",
    );
    etcd.put_many("/svc/", 120, "v");
    es.call("PUT", "/events-v1", Some(r#"{"aliases":{"events":{}}}"#));
    es.bulk("events-v1", 0, 400);
    let cso = Cso {
        env: &env,
        config: env.path("cairn.toml"),
        cron_dir: env.path("cron.d"),
    };
    std::fs::write(&cso.config, config(&env, &m, &etcd, &es, &certs, "")).unwrap();
    assert!(cso.cairn(&["init"]).status.success());
    let want_db = mariadb_state(&m);
    let want_etcd = etcd.all();

    // cso_backupnrestore -b backup -s MAR09
    let out = cso.ok("-b backup -s MAR09");
    assert!(out.contains("snapshot MAR09: complete"), "{out}");

    // cso_backupnrestore -b scheduledbackup -z 0-13-*-*-0 -m yes
    let o = cso.run("-b scheduledbackup -z 0-13-*-*-0 -m yes");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("0 13 * * 0") && out.contains("maintenance"), "{out}");
    let cron_runs = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| matches!(c.trim(), "cron" | "crond" | "cronie"))
    });
    if !cron_runs {
        assert!(stderr(&o).contains("no cron daemon"), "{}", stderr(&o));
    }
    let cron = std::fs::read_to_string(cso.cron_dir.join("cairn")).unwrap();
    let entry = cron
        .lines()
        .find(|l| l.starts_with("0 13 * * 0 root "))
        .unwrap_or_else(|| panic!("{cron}"));
    assert!(entry.ends_with("schedule fire --maintenance"), "{entry}");
    // What cron would run: the entry's command, as root.
    let command = entry.trim_start_matches("0 13 * * 0 root ");
    let fired = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("CAIRN_CACHE_DIR", &env.cache)
        .output()
        .unwrap();
    assert!(fired.status.success(), "{}", stderr(&fired));
    let log = std::fs::read_to_string(env.path("state/schedule.log")).unwrap();
    let daily = log
        .lines()
        .find_map(|l| l.split(" done ").nth(1))
        .and_then(|rest| rest.split(": complete").next())
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    assert!(daily.starts_with("DAILY/20") && daily.ends_with('Z'), "{daily}");
    assert!(log.contains("(maintenance mode)"), "{log}");
    let mlog = std::fs::read_to_string(env.path("state/maintenance.log")).unwrap();
    assert_eq!(mlog, "on\noff\n", "the scheduled run did not use maintenance mode");

    // cso_backupnrestore -b listbackups / -b backupdetails -s MAR09
    let list = cso.ok("-b listbackups");
    for want in ["MAR09", &daily, "complete", "certificates,elasticsearch,etcd,mariadb"] {
        assert!(list.contains(want), "{want} missing: {list}");
    }
    let details = cso.ok("-b backupdetails -s MAR09");
    for want in [
        "status:     complete",
        "mariadb/databases.sql",
        "etcd/snapshot.db",
        "elasticsearch/repository",
        "exact: counts/checksums recorded",
        "dedup",
    ] {
        assert!(details.contains(want), "{want} missing: {details}");
    }

    // Change data, then: cso_backupnrestore -b restore -s /backups/DAILY-09/2019-03-16T04 -r no
    // (here the repository is a temp dir and the scheduled run's name is DAILY/<time>).
    m.sql("DELETE FROM shop.orders WHERE id > 100;");
    etcd.etcdctl("del /svc/ --prefix");
    let path = format!("{}/{daily}", env.repo.display());
    let out = cso.ok(&format!("-b restore -s {path} -r no"));
    assert!(out.contains(&format!("from snapshot {daily}")), "{out}");
    assert_eq!(mariadb_state(&m), want_db);
    assert_eq!(etcd.all(), want_etcd);

    // cso_backupnrestore -b healthcheck / -b reindex
    let health = cso.ok("-b healthcheck");
    assert!(
        health.contains("mariadb") && health.contains("etcd") && health.contains("repository"),
        "{health}"
    );
    let reindex = cso.ok("-b reindex");
    assert!(reindex.contains("events") && reindex.contains("400"), "{reindex}");

    // A database that is down but still has its data: `-r no` restores it (starting it), and
    // its safety copy is its data directory as it is on disk. No message names an option
    // cso_backupnrestore does not have.
    m.sql("DELETE FROM shop.orders WHERE id > 10;");
    m.stop();
    let out = cso.run("-b restore -s MAR09 -d mariadb -r no");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}{}", stdout(&out));
    assert!(err.contains("mariadb is down") && err.contains("-cold"), "{err}");
    for flag in ["--no-safety-snapshot", "--config", "--password-file"] {
        assert!(!err.contains(flag), "{flag} named: {err}");
    }
    assert_eq!(mariadb_state(&m), want_db);
    assert!(cso.ok("-b listbackups").contains("-cold"));
    // Where configuration, repository and key come from, in --help and when missing.
    let help = cso.ok("--help");
    for want in ["CAIRN_CONFIG", "/etc/cairn/cairn.toml", "password_file", "repository"] {
        assert!(help.contains(want), "{want} missing: {help}");
    }
    let o = cso
        .cmd(env!("CARGO_BIN_EXE_cso_backupnrestore"), &["-b", "listbackups"])
        .env("CAIRN_CONFIG", env.path("nowhere.toml"))
        .output()
        .unwrap();
    assert!(
        !o.status.success() && !stderr(&o).contains("--config"),
        "{}",
        stderr(&o)
    );

    // cso_backupnrestore -b restore -s MAR09 -d mariadb,etcd -r yes: both rebuilt on fresh nodes.
    m.kill();
    etcd.stop();
    let fresh_m = MariaDb {
        dir: env.path("mariadb-new"),
    };
    let fresh_etcd = etcd.moved_to(&env.path("etcd-new"));
    std::fs::write(&cso.config, config(&env, &fresh_m, &fresh_etcd, &es, &certs, "")).unwrap();
    let out = cso.run("-b restore -s MAR09 -d mariadb,etcd -r yes");
    assert!(out.status.success(), "{}{}", stderr(&out), stdout(&out));
    assert!(stderr(&out).contains("may not be in step"), "{}", stderr(&out));
    assert_eq!(mariadb_state(&fresh_m), want_db);
    assert_eq!(fresh_etcd.all(), want_etcd);
    drop(etcd);

    // Refusals through the real binary: exit 2, the option named, nothing run.
    let before = cso.ok("-b listbackups");
    for (args, want) in [
        ("-b backup -z 0-13-*-*-0", "option -z is not valid with -b backup"),
        ("-b backup -d mariadb", "only -d '*' is allowed"),
        ("-b backup -r yes", "option -r is not valid with -b backup"),
        ("-b scheduledbackup -z 0-24-*-*-0", "option -z: hour field"),
        ("-b restore -s MAR09 -d oracle", "unknown database \"oracle\""),
        ("-b restore -s MAR09 -m yes", "option -m is not valid with -b restore"),
        ("-b healthcheck -s MAR09", "option -s is not valid with -b healthcheck"),
        ("-b backupdetails", "needs -s"),
    ] {
        let o = cso.run(args);
        assert_eq!(o.status.code(), Some(2), "{args}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args}: {}", stderr(&o));
    }
    for args in ["-b copy", "-s MAR09", "-b backup -m maybe"] {
        assert_eq!(cso.run(args).status.code(), Some(2), "{args}");
    }
    assert_eq!(
        cso.ok("-b listbackups"),
        before,
        "a refused command changed the repository"
    );
    let o = cso.run("-b restore -s /elsewhere/MAR09");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("under the repository"), "{}", stderr(&o));
    let o = cso.run("-b backupdetails -s NOPE");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn scheduled_runs_replace_remove_skip_and_apply_retention() {
    let env = Env::empty();
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let db = env.path("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("data"), support::random_bytes(300_000, 1)).unwrap();
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\nwork_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [retention]\nkeep_last = 2\n[files.db]\npaths = [\"{}\"]\n",
            env.repo.display(),
            env.path("password").display(),
            env.path("work").display(),
            env.path("state").display(),
            db.display()
        ),
    )
    .unwrap();
    let cso = Cso {
        env: &env,
        config: config.clone(),
        cron_dir: env.path("cron.d"),
    };
    assert!(cso.cairn(&["init"]).status.success());

    // Install, replace, show, remove.
    cso.ok("-b scheduledbackup -z 30-2-*-*-*");
    let cron = std::fs::read_to_string(cso.cron_dir.join("cairn")).unwrap();
    assert!(
        cron.contains("\n30 2 * * * root ") && cron.trim_end().ends_with("schedule fire"),
        "{cron}"
    );
    let out = cso.cairn(&["schedule", "install", "--cron", "0 1 * * 1-5", "--maintenance"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cron = std::fs::read_to_string(cso.cron_dir.join("cairn")).unwrap();
    assert!(cron.contains("\n0 1 * * 1-5 root ") && !cron.contains("30 2"), "{cron}");
    assert_eq!(
        std::fs::read_dir(&cso.cron_dir).unwrap().count(),
        1,
        "a temp file was left in the cron dir"
    );
    assert!(stdout(&cso.cairn(&["schedule", "show"])).contains("0 1 * * 1-5"));
    assert!(stdout(&cso.cairn(&["schedule", "remove"])).contains("removed"));
    assert!(!cso.cron_dir.join("cairn").exists());
    assert!(stdout(&cso.cairn(&["schedule", "remove"])).contains("no scheduled backup"));
    let bad = cso.cairn(&["schedule", "install", "--cron", "61 * * * *"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("minute field"), "{}", stderr(&bad));

    // A manual backup: scheduled retention is not allowed to remove it.
    cso.ok("-b backup -s MANUAL");
    // Three runs (a second apart, so their names differ); retention keeps the last two.
    for i in 0..3 {
        std::fs::write(db.join("data"), support::random_bytes(300_000, 10 + i)).unwrap();
        let out = cso.cairn(&["schedule", "fire"]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let list = cso.ok("-b listbackups");
    assert_eq!(list.matches("DAILY/").count(), 2, "{list}");
    assert!(
        list.contains("MANUAL"),
        "scheduled retention removed a manual snapshot: {list}"
    );
    let log = std::fs::read_to_string(env.path("state/schedule.log")).unwrap();
    assert_eq!(log.matches(" start DAILY/").count(), 3, "{log}");
    assert_eq!(log.matches(" done DAILY/").count(), 3, "{log}");
    assert!(log.contains("retention: forgot 1 snapshot(s): DAILY/"), "{log}");
    assert!(log.contains("prune: deleted"), "{log}");

    // A run that finds the previous one still going (holding the run lock) skips, logs it, and
    // exits 0. Here this test process plays the previous run.
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(env.path("state/schedule.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    std::io::Write::write_all(&mut lock, format!("{}\n", std::process::id()).as_bytes()).unwrap();
    let out = cso.cairn(&["schedule", "fire"]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(lock);
    let log = std::fs::read_to_string(env.path("state/schedule.log")).unwrap();
    assert!(
        log.contains(&format!(
            "skipped: the previous scheduled run (pid {}) is still running",
            std::process::id()
        )),
        "{log}"
    );
    assert_eq!(cso.ok("-b listbackups").matches("DAILY/").count(), 2);
    // Once the previous run is gone (its lock released), the next one runs.
    let out = cso.cairn(&["schedule", "fire"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(env.path("state/schedule.log"))
            .unwrap()
            .matches(" done DAILY/")
            .count(),
        4
    );

    // A failing run is logged and exits 1.
    std::fs::remove_dir_all(&db).unwrap();
    let out = cso.cairn(&["schedule", "fire"]);
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_to_string(env.path("state/schedule.log")).unwrap();
    assert!(log.contains("FAILED DAILY/"), "{log}");
}

/// `cairn schedule run`: the foreground scheduler fires at the next matching minute.
#[test]
fn the_foreground_scheduler_fires_on_its_expression() {
    let env = Env::empty();
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let db = env.path("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("data"), b"some data").unwrap();
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\nstate_dir = \"{}\"\n[files.db]\npaths = [\"{}\"]\n",
            env.repo.display(),
            env.path("password").display(),
            env.path("state").display(),
            db.display()
        ),
    )
    .unwrap();
    let cso = Cso {
        env: &env,
        config,
        cron_dir: env.path("cron.d"),
    };
    assert!(cso.cairn(&["init"]).status.success());
    let mut child = cso
        .cmd(env!("CARGO_BIN_EXE_cairn"), &["schedule", "run", "--cron", "* * * * *"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = env.path("state/schedule.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(" done DAILY/")
    {
        assert!(start.elapsed().as_secs() < 120, "no scheduled run within two minutes");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).contains("next scheduled backup at"), "{}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    let name = text
        .split(" start ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(name.starts_with("DAILY/") && name.ends_with('Z'), "{name}");
    assert!(cso.ok("-b listbackups").contains(&name));
}
