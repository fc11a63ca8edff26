//! The Cassandra, Elasticsearch and ArangoDB plugins against loopback stand-ins
//! (`tests/standins/*.py`): no server for these databases can be installed on our machines, so
//! each stand-in speaks exactly the documented surface the plugin uses (REST endpoints, tool
//! options and output formats, on-disk layouts). See README, "Stand-in-tested plugins".

mod support;

use std::path::Path;

use serde_json::Value;
use support::standins::{http, http_ok, secret_file, tool, Es, Server, ES_AUTH};
use support::Env;

fn base_config(env: &Env) -> String {
    std::fs::write(env.path("password"), format!("{}\n", support::PASSWORD)).unwrap();
    format!(
        "repository = \"{}\"\ncache_dir = \"{}\"\nwork_dir = \"{}\"\nstate_dir = \"{}\"\npassword_file = \"{}\"\n",
        env.repo.display(),
        env.cache.display(),
        env.path("work").display(),
        env.path("state").display(),
        env.path("password").display(),
    )
}

fn write_config(env: &Env, name: &str, text: &str) -> String {
    let p = env.path(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Runs a system restore and returns its JSON report, asserting success.
fn restore(env: &Env, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = env.run(&a);
    let (so, se) = (support::stdout(&out), support::stderr(&out));
    assert!(out.status.success(), "restore failed: {se}\n{so}");
    json(&so)
}

fn verified(report: &Value) -> String {
    report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["detail"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------- Elasticsearch

fn es_config(env: &Env, es: &Es) -> String {
    let cred = env.path("es-client.cred");
    secret_file(&cred, &format!("{ES_AUTH}\n"));
    format!(
        "{}\n[elasticsearch]\nurl = \"{}\"\ncredentials_file = \"{}\"\nlocation = \"{}\"\nrestore_location = \"{}\"\n\
         reindex = [\"events\", \"audit\"]\n",
        base_config(env),
        es.url(""),
        cred.display(),
        env.path("es-snapshots/cairn").display(),
        env.path("es-snapshots/cairn-restore").display(),
    )
}

#[test]
fn elasticsearch_snapshot_restore_reindex_and_disaster_recovery() {
    let env = Env::empty();
    let es = Es::start(&env, "es1");
    es.call(
        "PUT",
        "/events-v1",
        Some(r#"{"mappings":{"properties":{"n":{"type":"long"},"msg":{"type":"text"}}},"aliases":{"events":{}}}"#),
    );
    es.bulk("events-v1", 0, 2000);
    es.bulk("audit", 0, 300);
    let want = es.state();
    let cfg = write_config(&env, "cairn.toml", &es_config(&env, &es));
    env.ok(&["--config", &cfg, "init"]);

    let out = env.ok(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]);
    let s1 = json(&out);
    assert_eq!(s1["snapshot"]["status"]["state"], "complete", "{s1}");
    let added = |s: &Value| s["snapshot"]["stats"]["bytes_added"].as_u64().unwrap();
    let s2 = json(&env.ok(&["--config", &cfg, "backup", "--system", "--name", "s2", "--json"]));
    assert!(
        added(&s2) * 5 < added(&s1),
        "an unchanged second backup added {} bytes; the first {}",
        added(&s2),
        added(&s1)
    );
    let health = env.ok(&["--config", &cfg, "healthcheck"]);
    let line = health
        .lines()
        .find(|l| l.starts_with("elasticsearch"))
        .unwrap_or_default();
    assert!(line.contains(" ok ") && line.contains("cluster"), "{health}");
    // Cairn keeps the snapshots; the cluster's repository holds only the newest.
    let in_cluster = es.call("GET", "/_snapshot/cairn/_all", None);
    assert_eq!(in_cluster["snapshots"].as_array().unwrap().len(), 1, "{in_cluster}");

    // Damage: documents deleted and added, an index dropped, another one created.
    for i in 0..100 {
        es.call("DELETE", &format!("/events-v1/_doc/{i}"), None);
    }
    es.bulk("events-v1", 5000, 20);
    es.call("DELETE", "/audit", None);
    es.bulk("scratch", 0, 5);
    assert_ne!(es.state(), want);

    let report = restore(&env, &["--config", &cfg, "restore", "s1"]);
    assert!(verified(&report).contains("as in the snapshot"), "{report}");
    // The index created since the snapshot is gone, and listed.
    assert!(
        verified(&report).contains("removed, not in the snapshot: index scratch"),
        "{report}"
    );
    assert_eq!(es.state(), want);
    assert!(
        !env.path("es-snapshots/cairn-restore").exists(),
        "the restore scratch copy was left behind"
    );
    assert_eq!(
        http("GET", &es.url("/_snapshot/cairn-restore"), Some(ES_AUTH), None).0,
        404,
        "the read-only restore repository is still registered"
    );

    // Reindex: each name (an alias and a plain index) ends up an alias of a fresh index with the same documents.
    let out = env.ok(&["--config", &cfg, "reindex", "--json"]);
    let r = json(&out);
    let rebuilt = r["plugins"][0]["indices"].as_array().unwrap();
    assert_eq!(rebuilt.len(), 2, "{r}");
    for (x, (name, docs)) in rebuilt.iter().zip([("events", 2000), ("audit", 300)]) {
        assert_eq!(x["name"], name);
        assert_eq!(x["before"], docs, "{x}");
        assert_eq!(x["after"], docs, "{x}");
        let to = x["to"].as_str().unwrap();
        assert!(to.starts_with(&format!("{name}-r")), "{x}");
        let alias = es.call("GET", &format!("/_alias/{name}"), None);
        assert!(alias.get(to).is_some(), "{name} does not point at {to}: {alias}");
        assert_eq!(es.count(name), docs);
        let from = x["from"].as_str().unwrap();
        assert!(
            !es.state().iter().any(|(i, _, _)| i == from),
            "{from} is still an index"
        );
    }
    let table = env.ok(&["--config", &cfg, "reindex", "--index", "events"]);
    assert!(table.contains("events") && table.contains("2000"), "{table}");
    let err = env.fails(&["--config", &cfg, "reindex", "--index", "nosuch"]);
    assert!(
        err.contains("nosuch") && err.contains("neither an alias nor an index"),
        "{err}"
    );

    // Disaster recovery onto a fresh, empty node.
    drop(es);
    let fresh = Es::start(&env, "es2");
    assert!(fresh.state().is_empty());
    let cfg2 = write_config(&env, "cairn-dr.toml", &es_config(&env, &fresh));
    let report = restore(&env, &["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    assert!(verified(&report).contains("as in the snapshot"), "{report}");
    assert_eq!(fresh.state(), want);

    // Disaster recovery refuses a cluster that is not fresh.
    let out = env.run(&["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("fresh cluster"),
        "{}",
        support::stderr(&out)
    );

    // Wrong credentials: unhealthy, and a backup fails naming the plugin and the server's reason.
    secret_file(&env.path("es-client.cred"), "elastic:wrong\n");
    let out = env.run(&["--config", &cfg2, "healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(support::stdout(&out).contains("401"), "{}", support::stdout(&out));
    let err = env.fails(&["--config", &cfg2, "backup", "--system", "--name", "denied"]);
    assert!(err.contains("elasticsearch") && err.contains("401"), "{err}");
    assert!(!err.contains("es-secret-pw"), "{err}");
}

// ---------------------------------------------------------------- ArangoDB

const ARANGO_AUTH: &str = "root:arango-secret-pw";

struct Arango {
    server: Server,
}

impl Arango {
    fn start(env: &Env, data: &str) -> Arango {
        let cred = env.path("arango-server.cred");
        secret_file(&cred, &format!("{ARANGO_AUTH}\n"));
        let dir = env.path(data);
        let args = [
            "serve".to_string(),
            "--port-file".into(),
            dir.join("port").display().to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--credentials-file".into(),
            cred.display().to_string(),
        ];
        Arango {
            server: Server::start("arangodb", &dir, &args, &["port"]),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.server.port());
        http_ok(method, &url, Some(ARANGO_AUTH), body)
    }

    fn insert(&self, db: &str, coll: &str, from: usize, n: usize) {
        let docs: Vec<Value> = (from..from + n)
            .map(|i| serde_json::json!({"_key": format!("k{i}"), "n": i, "name": format!("item {i}")}))
            .collect();
        self.call(
            "POST",
            &format!("/_db/{db}/_api/document/{coll}"),
            Some(&Value::Array(docs).to_string()),
        );
    }

    /// db/collection -> every document's (key, n), sorted.
    fn state(&self) -> Vec<(String, Vec<(String, u64)>)> {
        let mut out = Vec::new();
        let dbs = self.call("GET", "/_api/database", None);
        for db in dbs["result"].as_array().unwrap() {
            let db = db.as_str().unwrap();
            let colls = self.call("GET", &format!("/_db/{db}/_api/collection?excludeSystem=true"), None);
            for c in colls["result"].as_array().unwrap() {
                let c = c["name"].as_str().unwrap();
                let q =
                    serde_json::json!({"query": "FOR d IN @@c RETURN d", "bindVars": {"@c": c}, "batchSize": 100000});
                let r = self.call("POST", &format!("/_db/{db}/_api/cursor"), Some(&q.to_string()));
                let mut docs: Vec<(String, u64)> = r["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| (d["_key"].as_str().unwrap().to_string(), d["n"].as_u64().unwrap_or(0)))
                    .collect();
                docs.sort();
                out.push((format!("{db}/{c}"), docs));
            }
        }
        out.sort();
        out
    }
}

fn arango_config(env: &Env, a: &Arango) -> String {
    let cred = env.path("arango-client.cred");
    secret_file(&cred, &format!("{ARANGO_AUTH}\n"));
    let bin = env.path("bin");
    format!(
        "{}\n[arangodb]\nendpoint = \"tcp://127.0.0.1:{}\"\ncredentials_file = \"{}\"\narangodump = \"{}\"\narangorestore = \"{}\"\n",
        base_config(env),
        a.server.port(),
        cred.display(),
        tool(&bin, "arangodb", "arangodump").display(),
        tool(&bin, "arangodb", "arangorestore").display(),
    )
}

#[test]
fn arangodb_dump_restore_and_disaster_recovery() {
    let env = Env::empty();
    let a = Arango::start(&env, "arango1");
    for db in ["shop", "crm"] {
        a.call("POST", "/_api/database", Some(&format!("{{\"name\":\"{db}\"}}")));
    }
    for (db, coll, n) in [
        ("shop", "orders", 3000),
        ("shop", "items", 400),
        ("crm", "contacts", 1200),
    ] {
        a.call(
            "POST",
            &format!("/_db/{db}/_api/collection"),
            Some(&format!("{{\"name\":\"{coll}\"}}")),
        );
        a.insert(db, coll, 0, n);
    }
    let want = a.state();
    let cfg = write_config(&env, "cairn.toml", &arango_config(&env, &a));
    env.ok(&["--config", &cfg, "init"]);
    let out = env.run(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]);
    let (so, se) = (support::stdout(&out), support::stderr(&out));
    assert!(out.status.success(), "{se}");
    assert!(
        !so.contains("arango-secret-pw") && !se.contains("arango-secret-pw"),
        "{se}"
    );
    let s1 = json(&so);
    assert_eq!(s1["snapshot"]["status"]["state"], "complete");
    // The staged dump and the tools' credentials file are gone.
    assert_eq!(std::fs::read_dir(env.path("work")).unwrap().count(), 0);
    assert!(env.ok(&["--config", &cfg, "healthcheck"]).contains("ArangoDB 3.11"));
    let s2 = json(&env.ok(&["--config", &cfg, "backup", "--system", "--name", "s2", "--json"]));
    let added = |s: &Value| s["snapshot"]["stats"]["bytes_added"].as_u64().unwrap();
    assert!(
        added(&s2) * 10 < added(&s1),
        "unchanged second dump added {} of {}",
        added(&s2),
        added(&s1)
    );

    for i in 0..50 {
        a.call("DELETE", &format!("/_db/shop/_api/document/orders/k{i}"), None);
    }
    a.insert("shop", "orders", 90000, 7);
    a.call("DELETE", "/_db/shop/_api/collection/items", None);
    a.call("DELETE", "/_api/database/crm", None);
    // Added since the snapshot: gone after the restore, and listed.
    a.call("POST", "/_api/database", Some("{\"name\":\"later\"}"));
    a.call("POST", "/_db/shop/_api/collection", Some("{\"name\":\"newer\"}"));
    assert_ne!(a.state(), want);

    let report = restore(&env, &["--config", &cfg, "restore", "s1"]);
    assert!(verified(&report).contains("as in the snapshot"), "{report}");
    assert!(
        verified(&report).contains("collection shop.newer") && verified(&report).contains("database later"),
        "{report}"
    );
    assert_eq!(a.state(), want);

    // Disaster recovery onto a fresh server holding only _system.
    drop(a);
    let fresh = Arango::start(&env, "arango2");
    let cfg2 = write_config(&env, "cairn-dr.toml", &arango_config(&env, &fresh));
    let report = restore(&env, &["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    assert!(verified(&report).contains("3 collections"), "{report}");
    assert_eq!(fresh.state(), want);

    // The server down: unhealthy, and a backup fails naming the plugin.
    drop(fresh);
    let out = env.run(&["--config", &cfg2, "healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
    let err = env.fails(&["--config", &cfg2, "backup", "--system", "--name", "down"]);
    assert!(err.contains("plugin arangodb failed"), "{err}");
}

// ---------------------------------------------------------------- Cassandra

struct CassandraNode {
    server: Server,
    data: std::path::PathBuf,
}

impl CassandraNode {
    fn start(env: &Env, name: &str) -> CassandraNode {
        let dir = env.path(name);
        let cred = env.path("cassandra-server.cred");
        secret_file(&cred, "cassandra:cass-secret-pw\n");
        let args = [
            "serve".to_string(),
            "--data-dir".into(),
            dir.join("node").display().to_string(),
            "--cql-port-file".into(),
            dir.join("cql.port").display().to_string(),
            "--jmx-port-file".into(),
            dir.join("jmx.port").display().to_string(),
            "--credentials-file".into(),
            cred.display().to_string(),
        ];
        CassandraNode {
            server: Server::start("cassandra", &dir, &args, &["cql.port", "jmx.port"]),
            data: dir.join("node/data"),
        }
    }

    fn cqlshrc(env: &Env) -> std::path::PathBuf {
        let rc = env.path("cqlshrc");
        secret_file(
            &rc,
            "[authentication]\nusername = cassandra\npassword = cass-secret-pw\n",
        );
        rc
    }

    fn cql(&self, env: &Env, statements: &str) -> String {
        let f = env.path("stmt.cql");
        std::fs::write(&f, statements).unwrap();
        let out = std::process::Command::new("python3")
            .arg(support::standins::script("cassandra"))
            .args(["cqlsh", "127.0.0.1", &self.server.ports[0].to_string(), "--cqlshrc"])
            .arg(Self::cqlshrc(env))
            .arg("-f")
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success(), "cqlsh: {}", support::stderr(&out));
        support::stdout(&out)
    }

    /// Every row of the test tables, as cqlsh prints them.
    fn state(&self, env: &Env) -> String {
        self.cql(
            env,
            "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM shop.customers; SELECT COUNT(*) FROM logs.events;\n\
             SELECT * FROM shop.orders WHERE id = 7; SELECT * FROM shop.customers WHERE id = 3;",
        )
    }
}

fn cassandra_config(env: &Env, n: &CassandraNode) -> String {
    let bin = env.path("bin");
    let jmx = env.path("jmx.pass");
    secret_file(&jmx, "cassandra cass-secret-pw\n");
    format!(
        "{}\n[cassandra]\njmx_user = \"cassandra\"\njmx_password_file = \"{}\"\ncqlshrc = \"{}\"\nnodetool = \"{}\"\ncqlsh = \"{}\"\n\n[[cassandra.nodes]]\nname = \"node1\"\n\
         host = \"127.0.0.1\"\ncql_port = {}\njmx_port = {}\ndata_dir = \"{}\"\n",
        base_config(env),
        jmx.display(),
        CassandraNode::cqlshrc(env).display(),
        tool(&bin, "cassandra", "nodetool").display(),
        tool(&bin, "cassandra", "cqlsh").display(),
        n.server.ports[0],
        n.server.ports[1],
        n.data.display(),
    )
}

#[test]
fn cassandra_snapshot_restore_and_disaster_recovery() {
    let env = Env::empty();
    let node = CassandraNode::start(&env, "cass1");
    let mut load = String::from(
        "CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};\n\
         CREATE TABLE shop.orders (id int PRIMARY KEY, customer text, total double);\n\
         CREATE TABLE shop.customers (id int PRIMARY KEY, name text);\n\
         CREATE KEYSPACE logs WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};\n\
         CREATE TABLE logs.events (day text, seq int, msg text, PRIMARY KEY ((day), seq));\n",
    );
    for i in 0..1500 {
        load.push_str(&format!(
            "INSERT INTO shop.orders (id, customer, total) VALUES ({i}, 'c{}', {}.5);\n",
            i % 40,
            i
        ));
    }
    for i in 0..40 {
        load.push_str(&format!(
            "INSERT INTO shop.customers (id, name) VALUES ({i}, 'customer ''{i}''');\n"
        ));
    }
    for i in 0..600 {
        load.push_str(&format!(
            "INSERT INTO logs.events (day, seq, msg) VALUES ('d{}', {i}, 'event {i}');\n",
            i % 7
        ));
    }
    node.cql(&env, &load);
    let want = node.state(&env);
    assert!(want.contains("1500") && want.contains("customer '3'"), "{want}");
    let cfg = write_config(&env, "cairn.toml", &cassandra_config(&env, &node));
    env.ok(&["--config", &cfg, "init"]);
    let out = env.run(&["--config", &cfg, "backup", "--system", "--name", "s1", "--json"]);
    let (so, se) = (support::stdout(&out), support::stderr(&out));
    assert!(out.status.success(), "{se}");
    assert!(!se.contains("cass-secret-pw"), "{se}");
    let s1 = json(&so);
    let items = support::item_names(&s1);
    assert_eq!(items, ["cassandra/schema.cql", "cassandra/node1/sstables"]);
    let health = env.ok(&["--config", &cfg, "healthcheck"]);
    assert!(health.contains("1 nodes up/normal, 3 user tables"), "{health}");
    // The snapshot tag is cleared from the node again.
    let leftovers: Vec<_> = walk(&node.data)
        .into_iter()
        .filter(|p| p.contains("/snapshots/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Damage: rows deleted and changed, a table truncated, another dropped.
    node.cql(
        &env,
        "DELETE FROM shop.orders WHERE id = 7; UPDATE shop.customers SET name = 'changed' WHERE id = 3;\n\
         TRUNCATE logs.events; DROP TABLE shop.customers;\n\
         CREATE TABLE shop.later (id int PRIMARY KEY, v text);\n\
         CREATE KEYSPACE newks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};\n\
         CREATE TABLE newks.t (id int PRIMARY KEY);",
    );
    assert_ne!(node.state_lenient(&env), want);

    let report = restore(&env, &["--config", &cfg, "restore", "s1"]);
    assert!(verified(&report).contains("as in the snapshot"), "{report}");
    for gone in ["table shop.later", "table newks.t", "keyspace newks"] {
        assert!(verified(&report).contains(gone), "{gone}: {report}");
    }
    assert_eq!(node.state(&env), want);

    // Disaster recovery onto a fresh node.
    drop(node);
    let fresh = CassandraNode::start(&env, "cass2");
    let cfg2 = write_config(&env, "cairn-dr.toml", &cassandra_config(&env, &fresh));
    let report = restore(&env, &["--config", &cfg2, "restore", "s1", "--disaster-recovery"]);
    assert!(verified(&report).contains("3 tables, 2140 rows"), "{report}");
    assert_eq!(fresh.state(&env), want);

    // The node down: unhealthy, and a backup fails naming the plugin and nodetool's error.
    drop(fresh);
    let out = env.run(&["--config", &cfg2, "healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
    let err = env.fails(&["--config", &cfg2, "backup", "--system", "--name", "down"]);
    assert!(
        err.contains("plugin cassandra failed") && err.contains("Connection"),
        "{err}"
    );
}

impl CassandraNode {
    /// `state`, tolerating a dropped table.
    fn state_lenient(&self, env: &Env) -> String {
        let out = std::process::Command::new("python3")
            .arg(support::standins::script("cassandra"))
            .args(["cqlsh", "127.0.0.1", &self.server.ports[0].to_string(), "--cqlshrc"])
            .arg(Self::cqlshrc(env))
            .args([
                "-e",
                "SELECT COUNT(*) FROM shop.orders; SELECT COUNT(*) FROM shop.customers;",
            ])
            .output()
            .unwrap();
        format!("{}{}", support::stdout(&out), support::stderr(&out))
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}
