//! System snapshots against real servers started on loopback: MariaDB, a three-member etcd
//! cluster, a three-server ZooKeeper ensemble and a certificate directory, backed up as one
//! snapshot, damaged, restored, and rebuilt on fresh nodes by a disaster-recovery restore.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::servers::{line, sh, Etcd, MariaDb, ZooKeeper};
use support::Env;

/// Loads a schema with a trigger, a routine, a view and 20 000 rows, plus an account.
fn load_mariadb(m: &MariaDb) {
    m.sql(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2), note TEXT);
         INSERT INTO orders SELECT seq, CONCAT('customer-', seq % 977), seq * 1.25, REPEAT('x', seq % 50) FROM seq_1_to_20000;
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT);
         CREATE TRIGGER orders_audit AFTER UPDATE ON orders FOR EACH ROW INSERT INTO audit (order_id) VALUES (NEW.id);
         CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 20000;
         CREATE DATABASE billing; CREATE TABLE billing.invoices (id INT PRIMARY KEY, amount INT);
         INSERT INTO billing.invoices SELECT seq, seq FROM seq_1_to_500;
         CREATE USER cairn@localhost IDENTIFIED BY 'db-secret-pw'; GRANT ALL ON *.* TO cairn@localhost WITH GRANT OPTION;
         CREATE USER app@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT ON shop.* TO app@'%';",
    );
}

/// What a restore must bring back exactly.
fn mariadb_state(m: &MariaDb) -> String {
    m.sql_all(
        "CHECKSUM TABLE shop.orders, shop.audit, billing.invoices;
         SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM billing.invoices;
         SELECT shop.double_it(21); SELECT COUNT(*) FROM shop.big_orders;
         SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'shop';
         SELECT CONCAT(user, '@', host) FROM mysql.user WHERE user IN ('app', 'cairn') ORDER BY user;
         SHOW GRANTS FOR app@'%';",
    )
}

fn load_zookeeper(z: &ZooKeeper) {
    let mut cmds = String::from("create /app \"root\"\n");
    for i in 0..60 {
        cmds.push_str(&format!("create /app/node{i:03} \"value-{i}\"\n"));
    }
    z.cli(&cmds);
}

fn zookeeper_state(z: &ZooKeeper) -> String {
    let mut out = z.cli("ls /app\nget /app/node007\nget /app/node059");
    out = out
        .lines()
        .filter(|l| l.starts_with('[') || l.starts_with("value-"))
        .collect::<Vec<_>>()
        .join("\n");
    out
}

fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir.join("private")).unwrap();
    std::fs::write(dir.join("server.pem"), support::random_bytes(3000, 1)).unwrap();
    std::fs::write(dir.join("private/server.key"), support::random_bytes(1700, 2)).unwrap();
    std::fs::set_permissions(dir.join("private/server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("server.pem", dir.join("current.pem")).unwrap();
}

/// Path -> (mode, bytes or link target) of every entry.
fn tree_state(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir(dir) {
        let md = std::fs::symlink_metadata(&e).unwrap();
        let content = if md.file_type().is_symlink() {
            std::fs::read_link(&e).unwrap().to_string_lossy().as_bytes().to_vec()
        } else if md.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            Vec::new()
        };
        out.push((
            e.strip_prefix(dir).unwrap().display().to_string(),
            md.permissions().mode(),
            content,
        ));
    }
    out
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

struct Platform {
    mariadb: MariaDb,
    etcd: Etcd,
    zk: ZooKeeper,
    certs: std::path::PathBuf,
}

fn config(env: &Env, p: &Platform, mariadb_creds: Option<&Path>, extra: &str) -> String {
    let mut c = format!(
        "repository = \"{repo}\"\ncache_dir = \"{cache}\"\nwork_dir = \"{work}\"\nstate_dir = \"{state}\"\n\
         password_file = \"{pw}\"\n\n[maintenance]\nenter = \"echo on >> {state}/maintenance.log\"\n\
         leave = \"echo off >> {state}/maintenance.log\"\n\n[mariadb]\nsocket = \"{sock}\"\ndatadir = \"{datadir}\"\n\
         start = \"{mstart}\"\nstop = \"{mstop}\"\n\
         install_db = \"mariadb-install-db --user=root --datadir={datadir} --auth-root-authentication-method=socket --skip-test-db\"\n",
        repo = env.repo.display(),
        cache = env.cache.display(),
        work = env.path("work").display(),
        state = env.path("state").display(),
        pw = env.path("password").display(),
        sock = p.mariadb.socket().display(),
        datadir = p.mariadb.datadir().display(),
        mstart = p.mariadb.start_line().replace('\'', "").replace('"', "\\\""),
        mstop = p.mariadb.stop_line().replace('\'', ""),
    );
    if let Some(f) = mariadb_creds {
        c.push_str(&format!("credentials_file = \"{}\"\n", f.display()));
    }
    c.push_str(&extra.replace("{}", ""));
    for m in &p.etcd.members {
        c.push_str(&format!(
            "\n[[etcd.members]]\nname = \"{}\"\nclient_url = \"http://127.0.0.1:{}\"\npeer_url = \"http://127.0.0.1:{}\"\n\
             data_dir = \"{}\"\nstart = \"{}\"\nstop = \"{}\"\n",
            m.name,
            m.client,
            m.peer,
            m.dir.display(),
            p.etcd.start_line(m).replace('\'', ""),
            p.etcd.stop_line(m).replace('\'', ""),
        ));
    }
    for s in &p.zk.servers {
        c.push_str(&format!(
            "\n[[zookeeper.servers]]\nid = {}\naddress = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\nstart = \"{}\"\nstop = \"{}\"\n",
            s.id,
            s.client,
            s.dir.join("data").display(),
            p.zk.start_line(s).replace('\'', ""),
            p.zk.stop_line(s).replace('\'', ""),
        ));
    }
    c.push_str(&format!(
        "\n[files.certificates]\npaths = [\"{}\"]\n",
        p.certs.display()
    ));
    c
}

fn write_config(env: &Env, name: &str, text: &str) -> String {
    let path = env.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn whole_platform_backup_restore_and_disaster_recovery() {
    let env = Env::empty();
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let p = Platform {
        mariadb: MariaDb::start(&env.path("mariadb")),
        etcd: Etcd::plan(&env.path("etcd"), 3),
        zk: ZooKeeper::plan(&env.path("zk"), 3),
        certs: env.path("certs"),
    };
    p.etcd.start();
    p.zk.start();
    load_mariadb(&p.mariadb);
    p.etcd.put_many("/config/service-", 300, "setting-");
    load_zookeeper(&p.zk);
    make_certs(&p.certs);
    let creds = env.path("mariadb.cnf");
    std::fs::write(&creds, "[client]\nuser=cairn\npassword=db-secret-pw\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = write_config(&env, "cairn.toml", &config(&env, &p, Some(&creds), ""));

    let want_db = mariadb_state(&p.mariadb);
    let want_etcd = p.etcd.all();
    let want_zk = zookeeper_state(&p.zk);
    let want_certs = tree_state(&p.certs);
    assert!(want_zk.contains("node059") && want_zk.contains("value-7"), "{want_zk}");

    // One snapshot of everything; the healthcheck sees it; a second one of unchanged data adds little.
    env.ok(&["--config", &cfg, "init"]);
    let out = env.run(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]);
    let err = support::stderr(&out);
    assert!(out.status.success(), "system backup failed: {err}");
    assert!(
        !err.contains("db-secret-pw"),
        "a credential leaked into the output: {err}"
    );
    let s1 = json(&support::stdout(&out));
    assert_eq!(s1["snapshot"]["status"]["state"], "complete");
    let items = support::item_names(&s1);
    for want in [
        "mariadb/databases.sql",
        "mariadb/users.sql",
        "etcd/snapshot.db",
        "zookeeper/data",
    ] {
        assert!(items.iter().any(|i| i == want), "{want} missing from {items:?}");
    }
    let health = env.ok(&["--config", &cfg, "healthcheck"]);
    assert!(
        health.contains("s1 taken") && health.contains("maintenance mode  -       off"),
        "{health}"
    );
    assert!(health.contains("3 of 3 members healthy"), "{health}");
    // One etcd member down: the healthcheck counts it (etcdctl 3.4 reports health on stderr
    // unless asked for JSON) and says which.
    let down = &p.etcd.members[2];
    sh(&p.etcd.stop_line(down));
    let o = env.run(&["--config", &cfg, "healthcheck"]);
    assert!(!o.status.success());
    let out = support::stdout(&o);
    assert!(
        out.contains("2 of 3 members healthy") && out.contains(&down.client.to_string()),
        "{out}"
    );
    sh(&p.etcd.start_line(down));
    sh(&line("etcd", &["wait", &p.etcd.endpoints()]));
    let s2 = json(&env.ok(&["--config", &cfg, "backup", "--system", "--name", "s2", "--json"]));
    let added = |s: &serde_json::Value| s["snapshot"]["stats"]["bytes_added"].as_u64().unwrap();
    assert!(
        added(&s2) * 10 < added(&s1),
        "an unchanged second backup added {} bytes; the first {}",
        added(&s2),
        added(&s1)
    );

    // Change and delete data everywhere.
    p.mariadb.sql(
        "UPDATE shop.orders SET total = 0 WHERE id < 100; DELETE FROM shop.orders WHERE id > 15000;
         DROP TABLE billing.invoices; DROP USER app@'%';",
    );
    p.etcd.etcdctl("del /config/service- --prefix=true --from-key=false");
    p.etcd.etcdctl("del /config/service-00001");
    p.etcd.put_many("/config/new-", 20, "x");
    p.zk.cli("deleteall /app/node007\ncreate /app/extra \"x\"\nset /app/node059 \"changed\"");
    std::fs::write(p.certs.join("server.pem"), b"tampered").unwrap();
    std::fs::remove_file(p.certs.join("private/server.key")).unwrap();
    // Added since the snapshot: a restore gives back the snapshot's state, so these go.
    p.mariadb
        .sql("CREATE DATABASE added_later; CREATE TABLE added_later.t (i INT);");
    std::fs::write(p.certs.join("added-later.pem"), b"new").unwrap();
    assert_ne!(mariadb_state(&p.mariadb), want_db);
    assert_ne!(p.etcd.all(), want_etcd);

    // Restore the first snapshot onto the running platform.
    let out = env.run(&["--config", &cfg, "restore", "s1"]);
    let (so, se) = (support::stdout(&out), support::stderr(&out));
    assert!(out.status.success(), "restore failed: {se}\n{so}");
    assert!(so.contains("counts and checksums equal"), "{so}");
    assert!(
        so.contains("removed, not in the snapshot: database added_later") && so.contains("added-later.pem"),
        "{so}"
    );
    assert!(!p.mariadb.sql_all("SHOW DATABASES").contains("added_later"));
    assert!(!p.certs.join("added-later.pem").exists());
    assert_eq!(mariadb_state(&p.mariadb), want_db);
    assert_eq!(p.etcd.all(), want_etcd);
    assert_eq!(zookeeper_state(&p.zk), want_zk);
    assert_eq!(tree_state(&p.certs), want_certs);
    // It ran in maintenance mode and left it, and kept what it replaced in a safety snapshot.
    let mlog = std::fs::read_to_string(env.path("state/maintenance.log")).unwrap();
    assert_eq!(mlog, "on\noff\n");
    assert!(!env.path("state/maintenance.json").exists());
    let snaps = env.ok(&["--config", &cfg, "snapshots"]);
    assert!(
        snaps.contains("safety-") && snaps.contains("before-restore-of-s1"),
        "{snaps}"
    );

    // Restoring one database warns that it may not be in step with the rest.
    let out = env.run(&[
        "--config",
        &cfg,
        "restore",
        "s1",
        "--db",
        "etcd",
        "--no-safety-snapshot",
    ]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("may not be in step"),
        "{}",
        support::stderr(&out)
    );

    // Disaster recovery: every node is lost; fresh, empty nodes on the same addresses.
    p.mariadb.kill();
    p.etcd.stop();
    p.zk.stop();
    std::fs::remove_dir_all(&p.certs).unwrap();
    let fresh = Platform {
        mariadb: MariaDb {
            dir: env.path("mariadb-new"),
        },
        etcd: p.etcd.moved_to(&env.path("etcd-new")),
        zk: p.zk.moved_to(&env.path("zk-new")),
        certs: p.certs.clone(),
    };
    // The same configuration as before, with its non-root `cairn` account, which the fresh
    // MariaDB does not have yet: the accounts go in as the fresh server's root over the socket.
    let cfg2 = write_config(&env, "cairn-dr.toml", &config(&env, &fresh, Some(&creds), ""));
    let out = env.run(&["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    let (so, se) = (support::stdout(&out), support::stderr(&out));
    assert!(out.status.success(), "disaster recovery failed: {se}\n{so}");
    assert_eq!(mariadb_state(&fresh.mariadb), want_db);
    assert_eq!(fresh.etcd.all(), want_etcd);
    assert_eq!(zookeeper_state(&fresh.zk), want_zk);
    assert_eq!(tree_state(&fresh.certs), want_certs);
    for s in &fresh.zk.servers {
        assert!(fresh.zk.four(s, "srvr").contains("Mode: "));
    }
    env.ok(&["--config", &cfg2, "healthcheck"]);
    let _ = line;
    let _ = sh;
}

#[test]
fn a_plugin_failing_mid_backup_fails_the_snapshot() {
    let env = Env::empty();
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let m = MariaDb::start(&env.path("mariadb"));
    m.sql(
        "CREATE DATABASE big; USE big; CREATE TABLE big.t (id INT PRIMARY KEY, pad TEXT);
         INSERT INTO big.t SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_60000;",
    );
    std::fs::create_dir_all(env.path("certs")).unwrap();
    std::fs::write(env.path("certs/ca.pem"), b"ca").unwrap();
    // The dump program kills the server once the dump is under way.
    let wrapper = env.path("dump-then-crash.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nset -o pipefail\nmariadb-dump \"$@\" | {{ head -c 200000; {} >&2; cat; }}\n",
            line("mariadb", &["kill", &m.dir.to_string_lossy()])
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = format!(
        "repository = \"{}\"\ncache_dir = \"{}\"\nwork_dir = \"{}\"\nstate_dir = \"{}\"\npassword_file = \"{}\"\n\
         [mariadb]\nsocket = \"{}\"\ndump = \"{}\"\n[files.certificates]\npaths = [\"{}\"]\n",
        env.repo.display(),
        env.cache.display(),
        env.path("work").display(),
        env.path("state").display(),
        env.path("password").display(),
        m.socket().display(),
        wrapper.display(),
        env.path("certs").display()
    );
    let cfg = write_config(&env, "cairn.toml", &cfg);
    env.ok(&["--config", &cfg, "init"]);
    let out = env.run(&["--config", &cfg, "backup", "--system", "--name", "broken"]);
    let err = support::stderr(&out);
    assert!(!out.status.success(), "a backup whose database died succeeded: {err}");
    assert!(
        err.contains("plugin mariadb failed") && err.contains("mariadb-dump"),
        "{err}"
    );
    assert!(
        err.contains("Lost connection") || err.contains("Error"),
        "the dump's own error is missing: {err}"
    );
    let snaps = env.ok(&["--config", &cfg, "snapshots"]);
    assert!(snaps.contains("broken") && snaps.contains("failed"), "{snaps}");
    let refused = env.fails(&["--config", &cfg, "restore", "broken"]);
    assert!(refused.contains("failed"), "{refused}");
    // No staging directories are left behind.
    assert_eq!(std::fs::read_dir(env.path("work")).unwrap().count(), 0);
}

/// A database added by configuration alone (`[[exec]]`): a directory of files dumped with tar,
/// its credential passed through an env file. A restore of the wrong snapshot is undone by
/// restoring the safety snapshot it took; a failing restore command fails the restore, names
/// the plugin and still leaves maintenance mode.
#[test]
fn exec_plugin_end_to_end_and_a_safety_snapshot_undoes_a_restore() {
    let env = Env::empty();
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    let db = env.path("kvdb");
    std::fs::create_dir_all(&db).unwrap();
    let put = |k: &str, v: &str| std::fs::write(db.join(k), v).unwrap();
    let state = || {
        let mut kids: Vec<_> = std::fs::read_dir(&db)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kids.sort();
        kids.iter()
            .map(|k| format!("{k}={}", std::fs::read_to_string(db.join(k)).unwrap()))
            .collect::<Vec<_>>()
            .join(",")
    };
    for i in 0..50 {
        put(&format!("key{i:02}"), &format!("value-{i}"));
    }
    let envf = env.path("kvdb.env");
    std::fs::write(&envf, "KV_TOKEN=s3cret-token\n").unwrap();
    std::fs::set_permissions(&envf, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Each command refuses to run without the credential, as a real client would.
    let guard = "[ \\\"$KV_TOKEN\\\" = s3cret-token ] || { echo 'access denied' >&2; exit 7; };";
    let d = db.display();
    let cfg = format!(
        "repository = \"{repo}\"\ncache_dir = \"{cache}\"\nwork_dir = \"{work}\"\nstate_dir = \"{st}\"\npassword_file = \"{pw}\"\n\
         [maintenance]\nenter = \"echo on >> {st}/maintenance.log\"\nleave = \"echo off >> {st}/maintenance.log\"\n\
         [[exec]]\nname = \"kvdb\"\nenv_file = \"{envf}\"\n\
         dump = \"{guard} tar -C {d} -cf - .\"\n\
         restore = \"{guard} [ ! -e {st}/break-restore ] || exit 9; find {d} -mindepth 1 -delete && tar -C {d} -xf -\"\n\
         healthcheck = \"{guard} test -d {d} && echo up\"\n\
         verify = \"{guard} cd {d} && find . -type f | sort | xargs cat | md5sum\"\n",
        repo = env.repo.display(),
        cache = env.cache.display(),
        work = env.path("work").display(),
        st = env.path("state").display(),
        pw = env.path("password").display(),
        envf = envf.display(),
    );
    let cfg = write_config(&env, "cairn.toml", &cfg);
    env.ok(&["--config", &cfg, "init"]);
    let want_a = state();
    let out = env.ok(&["--config", &cfg, "backup", "--system", "--name", "a"]);
    assert!(!out.contains("s3cret-token"), "{out}");
    assert!(env.ok(&["--config", &cfg, "healthcheck"]).contains("up"));

    // State B, backed up as well; then the operator restores the wrong snapshot (a).
    put("key00", "changed");
    std::fs::remove_file(db.join("key01")).unwrap();
    put("new", "added");
    let want_b = state();
    assert_ne!(want_a, want_b);
    env.ok(&["--config", &cfg, "backup", "--system", "--name", "b"]);
    put("key02", "written after b");
    let want_c = state();
    let out = env.run(&["--config", &cfg, "restore", "a", "--json"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let report = json(&support::stdout(&out));
    assert_eq!(state(), want_a);
    let detail = report["outcomes"][0]["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("equals the backup's"), "{report}");
    let safety = report["safety_snapshot"]
        .as_str()
        .expect("a safety snapshot")
        .to_string();

    // The safety snapshot holds what the restore replaced (c, newer than any backup): restoring it undoes the restore.
    env.ok(&["--config", &cfg, "restore", &safety, "--no-safety-snapshot"]);
    assert_eq!(state(), want_c);

    // A restore command that fails: the restore fails, names the plugin, and leaves maintenance.
    std::fs::write(env.path("state/break-restore"), "").unwrap();
    let out = env.run(&["--config", &cfg, "restore", "b", "--no-safety-snapshot"]);
    assert!(!out.status.success());
    let all = format!("{}{}", support::stdout(&out), support::stderr(&out));
    assert!(all.contains("kvdb") && all.contains("exit status: 9"), "{all}");
    let mlog = std::fs::read_to_string(env.path("state/maintenance.log")).unwrap();
    assert_eq!(
        mlog, "on\noff\non\noff\non\noff\n",
        "maintenance mode not left every time"
    );
    std::fs::remove_file(env.path("state/break-restore")).unwrap();

    // Without the credential every command is refused, and the backup fails naming the plugin.
    std::fs::write(&envf, "KV_TOKEN=wrong\n").unwrap();
    let err = env.fails(&["--config", &cfg, "backup", "--system", "--name", "denied"]);
    assert!(err.contains("kvdb") && err.contains("access denied"), "{err}");
    assert_eq!(std::fs::read_dir(env.path("work")).unwrap().count(), 0);
}
