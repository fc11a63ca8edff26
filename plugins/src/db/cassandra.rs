//! Cassandra (4.x): `nodetool snapshot` on every node, the SSTables of the snapshot, and the
//! schema from `cqlsh`.
//!
//! Backup: the schema (`DESCRIBE SCHEMA`) is stored as a stream; every node takes a snapshot
//! with one tag (`nodetool snapshot -t cairn-<unix ms>`, which flushes memtables and hard-links
//! the live SSTables), and each node's snapshot directories
//! (`<data_dir>/<keyspace>/<table>-<id>/snapshots/<tag>/`) are stored as a file tree, after
//! which the tag is cleared again. Row counts of every table (`SELECT COUNT(*)`) are taken
//! before and after; when they agree, the restore is verified against them exactly. Snapshots
//! on different nodes are taken one after another, not at one instant.
//!
//! Restore follows Cassandra's documented procedure for a snapshot restore: the schema is
//! applied with `IF NOT EXISTS` (so dropped tables come back, existing ones stay), every
//! table is truncated, each node's SSTables are copied into that node's live table directory
//! (owned like the directory) and loaded with `nodetool refresh`. Disaster recovery does the
//! same onto a fresh cluster (the schema creates the tables; nothing to truncate).
//!
//! Credentials: cqlsh reads them from a cqlshrc file (`--cqlshrc`, mode 0600), nodetool from
//! a JMX password file (`-pwf`); neither is on a command line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::db::common::absolute;
use crate::error::{Error, Result};
use crate::plugin::{as_in_snapshot, timestamped, Ctx, Health, ItemSink, ItemSource, Keep, Mode, Plugin};
use crate::process;
use crate::remote::host::{Host, Hosts};

/// `[cassandra]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// cqlshrc file with `[authentication]` username and password (mode 0600).
    pub cqlshrc: Option<PathBuf>,
    /// JMX user for nodetool, with `jmx_password_file` (`user password` lines, mode 0600).
    pub jmx_user: Option<String>,
    pub jmx_password_file: Option<PathBuf>,
    /// Keyspaces to back up (default: every keyspace but Cassandra's own).
    #[serde(default)]
    pub keyspaces: Vec<String>,
    /// Programs (default `nodetool`, `cqlsh`).
    pub nodetool: Option<String>,
    pub cqlsh: Option<String>,
    /// Every node of the cluster.
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub host: String,
    /// CQL native port (default 9042).
    pub cql_port: Option<u16>,
    /// JMX port nodetool talks to (default 7199).
    pub jmx_port: Option<u16>,
    /// The node's `data_file_directories` entry.
    pub data_dir: PathBuf,
    /// The `[hosts.NAME]` this node runs on: its data directory is there, and its nodetool
    /// and cqlsh run there (with `cqlshrc` and `jmx_password_file` of that host); default:
    /// this host.
    pub runs_on: Option<String>,
}

pub struct Cassandra {
    name: String,
    cfg: Config,
    /// Each node's host, in the order of `cfg.nodes`.
    hosts: Vec<Host>,
}

/// Keyspaces Cassandra keeps for itself.
const SYSTEM_KEYSPACES: [&str; 5] = [
    "system",
    "system_schema",
    "system_auth",
    "system_distributed",
    "system_traces",
];

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    if cfg.nodes.is_empty() {
        return Err("nodes must list every node of the cluster ([[cassandra.nodes]])".into());
    }
    for (i, n) in cfg.nodes.iter().enumerate() {
        crate::db::common::plain_name(&format!("nodes[{i}].name"), &n.name)?;
        absolute(&format!("nodes[{i}].data_dir"), &n.data_dir)?;
        if n.host.is_empty() || n.host.contains(char::is_whitespace) {
            return Err(format!("nodes[{i}].host = {:?} is not a host name", n.host));
        }
    }
    for (k, p) in [("cqlshrc", &cfg.cqlshrc), ("jmx_password_file", &cfg.jmx_password_file)] {
        if let Some(p) = p {
            absolute(k, p)?;
        }
    }
    if cfg.jmx_user.is_some() != cfg.jmx_password_file.is_some() {
        return Err("give jmx_user and jmx_password_file together".into());
    }
    for k in &cfg.keyspaces {
        if SYSTEM_KEYSPACES.contains(&k.as_str()) || !is_identifier(k) {
            return Err(format!("keyspaces: {k:?} cannot be backed up as a user keyspace"));
        }
    }
    let hosts = cfg
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| hosts.get(n.runs_on.as_deref()).map_err(|e| format!("nodes[{i}].{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Cassandra {
        name: name.to_string(),
        cfg: cfg.clone(),
        hosts,
    }))
}

/// An unquoted CQL identifier (what `nodetool` and the data directory names use).
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const SCHEMA: &str = "schema.cql";
const PREFIX: &str = "cairn-";

/// Row counts per `keyspace.table`.
type Counts = BTreeMap<String, u64>;

impl Cassandra {
    fn nodetool(&self, node: &Node, args: &[&str]) -> Command {
        let mut c = process::command(self.cfg.nodetool.as_deref().unwrap_or("nodetool"), &[]);
        c.args(["-h", &node.host, "-p", &node.jmx_port.unwrap_or(7199).to_string()]);
        if let (Some(u), Some(f)) = (&self.cfg.jmx_user, &self.cfg.jmx_password_file) {
            c.args(["-u", u]).arg("-pwf").arg(f);
        }
        c.args(args);
        c
    }

    fn cqlsh(&self, node: &Node) -> Command {
        let mut c = process::command(self.cfg.cqlsh.as_deref().unwrap_or("cqlsh"), &[]);
        c.args([&node.host, &node.cql_port.unwrap_or(9042).to_string()]);
        if let Some(rc) = &self.cfg.cqlshrc {
            c.arg("--cqlshrc").arg(rc);
        }
        c.arg("--no-color");
        c
    }

    /// The host a node runs on.
    fn host_of(&self, node: &Node) -> &Host {
        let i = self
            .cfg
            .nodes
            .iter()
            .position(|n| n.name == node.name)
            .expect("a configured node");
        &self.hosts[i]
    }

    /// Runs CQL statements on the first node that answers (cqlsh on its host).
    async fn cql(&self, statements: &str) -> Result<String> {
        let mut last = None;
        for n in &self.cfg.nodes {
            match self.host_of(n).output(self.cqlsh(n).args(["-e", statements])).await {
                Ok(out) => return Ok(out),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unhealthy("no nodes".into())))
    }

    /// The user tables, as `keyspace.table`.
    async fn tables(&self) -> Result<Vec<String>> {
        let out = self
            .cql("SELECT keyspace_name, table_name FROM system_schema.tables;")
            .await?;
        let wanted: BTreeSet<&str> = self.cfg.keyspaces.iter().map(String::as_str).collect();
        let mut tables: Vec<String> = rows(&out)
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [k, t]
                    if !SYSTEM_KEYSPACES.contains(&k.as_str())
                        && (wanted.is_empty() || wanted.contains(k.as_str())) =>
                {
                    Some(format!("{k}.{t}"))
                }
                _ => None,
            })
            .collect();
        tables.sort();
        for k in &wanted {
            if !tables.iter().any(|t| t.split('.').next() == Some(k)) {
                crate::bail!(State, "keyspace {k:?} is configured but has no tables");
            }
        }
        Ok(tables)
    }

    async fn counts(&self, tables: &[String]) -> Result<Counts> {
        if tables.is_empty() {
            return Ok(Counts::new());
        }
        let q: String = tables.iter().map(|t| format!("SELECT COUNT(*) FROM {t};")).collect();
        let out = self.cql(&q).await?;
        let counts: Vec<u64> = rows(&out)
            .into_iter()
            .filter_map(|r| r.first().and_then(|c| c.parse().ok()))
            .collect();
        if counts.len() != tables.len() {
            crate::bail!(
                Answer,
                "cqlsh answered {} counts for {} tables: {}",
                counts.len(),
                tables.len(),
                out.chars().take(500).collect::<String>()
            );
        }
        Ok(tables.iter().cloned().zip(counts).collect())
    }

    fn keyspaces_of(tables: &[String]) -> Vec<String> {
        let set: BTreeSet<&str> = tables.iter().filter_map(|t| t.split('.').next()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    async fn clear(&self, tag: &str, keyspaces: &[String]) {
        for n in &self.cfg.nodes {
            let mut args = vec!["clearsnapshot", "-t", tag, "--"];
            args.extend(keyspaces.iter().map(String::as_str));
            let _ = self.host_of(n).output(&mut self.nodetool(n, &args)).await;
        }
    }

    /// Copies one node's snapshot SSTables (staged on its host) into its live table
    /// directories, owned like them, and loads them.
    async fn load_node(&self, ctx: &Ctx, node: &Node, staged: &Path, tag: &str) -> Result<()> {
        let host = self.host_of(node);
        for ks in read_dirs(host, staged).await? {
            for table_dir in read_dirs(host, &staged.join(&ks)).await? {
                let snap = staged.join(&ks).join(&table_dir).join("snapshots").join(tag);
                if host.stat(&snap).await?.is_none_or(|s| s.kind != "dir") {
                    continue;
                }
                let table = table_name(&table_dir);
                let live = live_table_dir(host, &node.data_dir.join(&ks), table).await?;
                let mut files = Vec::new();
                for name in host.list_dir(&snap).await? {
                    let is_file = host.stat(&snap.join(&name)).await?.is_some_and(|s| s.kind == "file");
                    if is_file && name != "manifest.json" && name != "schema.cql" {
                        files.push(snap.join(name));
                    }
                }
                if !files.is_empty() {
                    // cp, then the owner of the live directory (the node's own user).
                    let mut cp = process::command("cp", &["--"]);
                    cp.args(&files).arg(&live);
                    host.output(&mut cp).await?;
                    let mut chown = process::command("chown", &[]);
                    chown.arg(format!("--reference={}", live.display()));
                    chown.args(files.iter().map(|f| live.join(f.file_name().expect("a file name"))));
                    host.output(&mut chown).await?;
                }
                ctx.log(format!(
                    "{}: {} SSTable files into {ks}.{table}",
                    node.name,
                    files.len()
                ));
                host.output(&mut self.nodetool(node, &["refresh", "--", &ks, table]))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Rows of cqlsh's result tables: the lines between a `---+---` rule and the blank line
/// that ends the table, split at ` | `.
fn rows(out: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in out.lines() {
        let t = line.trim();
        if !in_table {
            in_table = !t.is_empty() && t.chars().all(|c| c == '-' || c == '+');
        } else if t.is_empty() || (t.starts_with('(') && t.ends_with("rows)")) {
            in_table = false;
        } else {
            rows.push(t.split(" | ").map(|c| c.trim().to_string()).collect());
        }
    }
    rows
}

/// `users-5bc52802de2535edaeab188eecebb090` → `users`.
fn table_name(dir: &str) -> &str {
    dir.rsplit_once('-').map_or(dir, |(t, _)| t)
}

/// The directories in `p` on `host`, sorted.
async fn read_dirs(host: &Host, p: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in host.list_dir(p).await? {
        if host.stat(&p.join(&name)).await?.is_some_and(|s| s.kind == "dir") {
            out.push(name);
        }
    }
    Ok(out)
}

/// The live directory of `table` in a keyspace directory: `<table>-<id>`. A dropped and
/// recreated table leaves its old directory behind; the newest one is the live one.
async fn live_table_dir(host: &Host, ks_dir: &Path, table: &str) -> Result<PathBuf> {
    let mut best: Option<(i64, PathBuf)> = None;
    for d in read_dirs(host, ks_dir).await? {
        if table_name(&d) == table {
            let p = ks_dir.join(&d);
            let t = host.stat(&p).await?.map_or(0, |s| s.mtime);
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, p));
            }
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| Error::State(format!("no directory for table {table} in {}", ks_dir.display())))
}

/// Makes `DESCRIBE SCHEMA` output safe to replay onto a cluster that has part of it.
fn if_not_exists(schema: &str) -> String {
    let mut out = String::with_capacity(schema.len() + 256);
    for line in schema.lines() {
        let mut l = line.to_string();
        for kind in [
            "KEYSPACE",
            "TABLE",
            "TYPE",
            "INDEX",
            "CUSTOM INDEX",
            "MATERIALIZED VIEW",
            "FUNCTION",
            "AGGREGATE",
        ] {
            let head = format!("CREATE {kind} ");
            if l.starts_with(&head) && !l[head.len()..].starts_with("IF NOT EXISTS") {
                l = format!("{head}IF NOT EXISTS {}", &l[head.len()..]);
                break;
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn keep_snapshot(keyspaces: Vec<String>, tag: String) -> Keep {
    let keyspaces: BTreeSet<String> = keyspaces.into_iter().collect();
    Arc::new(move |p: &Path| {
        let parts: Vec<_> = p.iter().map(|c| c.to_string_lossy()).collect();
        match parts.len() {
            0 => true,
            1 => keyspaces.contains(parts[0].as_ref()),
            2 => keyspaces.contains(parts[0].as_ref()),
            3 => parts[2] == "snapshots",
            _ => parts[2] == "snapshots" && parts[3] == tag.as_str(),
        }
    })
}

/// What a backup records, for the restore and its verification.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// The name of the nodes' snapshot the SSTables were copied from.
    tag: String,
    /// Rows per table (`keyspace.table`) when the snapshot was taken: what the restore
    /// truncates and loads, and what verify compares.
    tables: Counts,
    /// Whether the counts were the same before and after, so they compare exactly.
    exact: bool,
    /// The nodes backed up, each with its own SSTables item.
    nodes: Vec<String>,
}

#[async_trait]
impl Plugin for Cassandra {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "cassandra"
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        let r = async {
            let mut up = 0;
            for n in &self.cfg.nodes {
                let out = self.host_of(n).output(&mut self.nodetool(n, &["status"])).await?;
                let down: Vec<&str> = out
                    .lines()
                    .filter(|l| l.starts_with('D') && l.len() > 2 && l.as_bytes()[1].is_ascii_uppercase())
                    .collect();
                if !down.is_empty() {
                    crate::bail!(Unhealthy, "node {} reports nodes down: {}", n.name, down.join("; "));
                }
                up = up.max(out.lines().filter(|l| l.starts_with("UN ")).count());
            }
            let tables = self.tables().await?;
            Ok::<_, Error>(format!("{up} nodes up/normal, {} user tables", tables.len()))
        };
        Health::from_result(r.await)
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let tables = self.tables().await?;
        let keyspaces = Self::keyspaces_of(&tables);
        let before = self.counts(&tables).await?;
        let first = &self.cfg.nodes[0];
        let mut describe = self.cqlsh(first);
        describe.args(["-e", "DESCRIBE SCHEMA"]);
        sink.command_output(self.host_of(first), SCHEMA, &mut describe).await?;
        let tag = timestamped(PREFIX);
        let r = async {
            for n in &self.cfg.nodes {
                ctx.log(format!("nodetool snapshot -t {tag} on {}", n.name));
                let mut args = vec!["snapshot", "-t", &tag, "--"];
                args.extend(keyspaces.iter().map(String::as_str));
                self.host_of(n).output(&mut self.nodetool(n, &args)).await?;
            }
            for n in &self.cfg.nodes {
                let item = format!("{}/sstables", n.name);
                sink.tree(
                    self.host_of(n),
                    &item,
                    &n.data_dir,
                    Some(keep_snapshot(keyspaces.clone(), tag.clone())),
                )
                .await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        self.clear(&tag, &keyspaces).await;
        r?;
        let after = self.counts(&tables).await?;
        let facts = Facts {
            exact: before == after,
            tag,
            tables: after,
            nodes: self.cfg.nodes.iter().map(|n| n.name.clone()).collect(),
        };
        sink.set_facts(SCHEMA, &facts)?;
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        let Facts { tag, tables, .. } = source.facts(SCHEMA)?;
        let first = &self.cfg.nodes[0];
        let h0 = self.host_of(first);
        let work0 = h0.work_dir(&ctx.work_dir).await?;
        let schema_file = work0.join(format!("{}-{SCHEMA}", self.name));
        source.restore_to(h0, SCHEMA, &schema_file, false).await?;
        let schema = String::from_utf8_lossy(&h0.read_file(&schema_file).await?).into_owned();
        let _ = h0.remove(&schema_file).await;
        let replay = work0.join(format!("{}-schema-if-not-exists.cql", self.name));
        h0.write_file(&replay, if_not_exists(&schema).into_bytes(), 0o600)
            .await?;
        ctx.log("applying the schema (IF NOT EXISTS)");
        let applied = h0.output(self.cqlsh(first).arg("-f").arg(&replay)).await;
        let _ = h0.remove(&replay).await;
        applied?;
        let names: Vec<String> = tables.keys().cloned().collect();
        if ctx.mode == Mode::Normal && !names.is_empty() {
            ctx.log(format!("truncating {} tables", names.len()));
            let q: String = names.iter().map(|t| format!("TRUNCATE {t};")).collect();
            self.cql(&q).await?;
        }
        for n in &self.cfg.nodes {
            let item = format!("{}/sstables", n.name);
            if source.item(&item).is_err() {
                crate::bail!(
                    Selection,
                    "the snapshot has no SSTables of node {}; nodes must match the backup's",
                    n.name
                );
            }
            let host = self.host_of(n);
            let staged = host
                .work_dir(&ctx.work_dir)
                .await?
                .join(format!("{}-{}", self.name, n.name));
            source.restore_to(host, &item, &staged, false).await?;
            // A fresh node creates table directories when the schema reaches it.
            let loaded = async {
                process::wait_until(60, || async {
                    for t in &names {
                        let (ks, table) = t.split_once('.').unwrap_or((t, ""));
                        live_table_dir(host, &n.data_dir.join(ks), table).await?;
                    }
                    Ok(())
                })
                .await?;
                self.load_node(ctx, n, &staged, &tag).await
            }
            .await;
            let _ = host.remove(&staged).await;
            loaded?;
        }
        // The snapshot's state, not more: tables created since (in the backed-up keyspaces) go,
        // and keyspaces left without tables (the safety snapshot keeps them).
        if ctx.mode == Mode::Normal {
            let before: BTreeSet<String> = names
                .iter()
                .map(|t| t.split('.').next().unwrap_or("").to_string())
                .collect();
            for t in self.tables().await? {
                if tables.contains_key(&t) {
                    continue;
                }
                self.cql(&format!("DROP TABLE {t};")).await?;
                ctx.removed(format!("table {t}"));
                let ks = t.split('.').next().unwrap_or("").to_string();
                if !before.contains(&ks) && !self.tables().await?.iter().any(|x| x.starts_with(&format!("{ks}."))) {
                    self.cql(&format!("DROP KEYSPACE {ks};")).await?;
                    ctx.removed(format!("keyspace {ks}"));
                }
            }
        }
        Ok(())
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let Facts {
            tables: want, exact, ..
        } = source.facts(SCHEMA)?;
        let names: Vec<String> = want.keys().cloned().collect();
        let now = self.counts(&names).await?;
        if exact {
            for (t, n) in &want {
                if now.get(t) != Some(n) {
                    crate::bail!(
                        Mismatch,
                        "table {t} holds {} rows; the snapshot had {n}",
                        now.get(t).copied().unwrap_or(0)
                    );
                }
            }
        }
        Ok(format!(
            "{} tables, {} rows{}",
            now.len(),
            now.values().sum::<u64>(),
            as_in_snapshot(exact)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cqlsh_tables_are_parsed() {
        let out = "\n keyspace_name | table_name\n---------------+------------\n        shop |      users\n  system |   local\n\n(2 rows)\n\n count\n-------\n  1234\n\n(1 rows)\n";
        assert_eq!(
            rows(out),
            vec![
                vec!["shop".to_string(), "users".to_string()],
                vec!["system".into(), "local".into()],
                vec!["1234".into()]
            ]
        );
    }

    #[test]
    fn schema_replays_with_if_not_exists() {
        let s = "CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy'};\n\nCREATE TABLE shop.users (\n    id int PRIMARY KEY\n);\nCREATE TABLE IF NOT EXISTS shop.x (id int PRIMARY KEY);\n";
        let r = if_not_exists(s);
        assert!(r.contains("CREATE KEYSPACE IF NOT EXISTS shop WITH"));
        assert!(r.contains("CREATE TABLE IF NOT EXISTS shop.users ("));
        assert!(r.contains("CREATE TABLE IF NOT EXISTS shop.x"));
        assert!(!r.contains("IF NOT EXISTS IF NOT EXISTS"));
        assert_eq!(table_name("users-5bc52802de2535edaeab188eecebb090"), "users");
        assert_eq!(table_name("user_events-0a"), "user_events");
    }

    #[test]
    fn only_the_tagged_snapshot_is_kept() {
        let keep = keep_snapshot(vec!["shop".into()], "cairn-1".into());
        for (p, want) in [
            ("shop", true),
            ("system", false),
            ("shop/users-ab", true),
            ("shop/users-ab/nb-1-big-Data.db", false),
            ("shop/users-ab/snapshots", true),
            ("shop/users-ab/snapshots/cairn-1", true),
            ("shop/users-ab/snapshots/cairn-1/nb-1-big-Data.db", true),
            ("shop/users-ab/snapshots/other", false),
        ] {
            assert_eq!(keep(Path::new(p)), want, "{p}");
        }
    }
}
