//! ArangoDB (3.11): `arangodump` and `arangorestore`, one database at a time.
//!
//! arangodump writes a directory (structure and data files per collection) and cannot stream
//! to stdout, so the dump is staged in the plugin's private work directory, uncompressed
//! (`--compress-output false`) so it deduplicates, stored as a file tree and removed. The tools
//! get the endpoint and credentials from a `--configuration` file of mode 0600 in that same
//! private directory, never on their command line. Document counts of every collection are
//! read over the HTTP API before and after the dump; when they agree, the restore is verified
//! against them exactly (arangodump reads collections one after another; it is not a
//! point-in-time snapshot of a database that is being written).
//!
//! Restore runs `arangorestore --create-database true --overwrite true` per database: the
//! snapshot's collections replace those of the same names; other collections are left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::db::common::absolute;
use crate::db::http::{segment, Http};
use crate::error::{Error, Result};
use crate::plugin::{as_in_snapshot, Ctx, Health, ItemSink, ItemSource, Plugin};
use crate::process;
use crate::remote::host::{Host, Hosts};

/// `[arangodb]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server as the tools name it: `tcp://host:8529` or `ssl://host:8529`.
    pub endpoint: String,
    /// `user:password` on the first line (mode 0600).
    pub credentials_file: Option<PathBuf>,
    /// CA certificate (PEM) Cairn's own HTTP calls (counts, healthcheck) trust for an `ssl://`
    /// endpoint; arangodump and arangorestore do not verify server certificates.
    pub cacert: Option<PathBuf>,
    /// Databases to back up (default: every database the user can reach).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Programs (default `arangodump`, `arangorestore`).
    pub arangodump: Option<String>,
    pub arangorestore: Option<String>,
    /// The `[hosts.NAME]` arangodump and arangorestore run on, staging the dump there
    /// (default: this host). Cairn's own HTTP calls go from here.
    pub runs_on: Option<String>,
}

pub struct ArangoDb {
    name: String,
    cfg: Config,
    host: Host,
}

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    http_url(&cfg.endpoint)?;
    for (k, p) in [("credentials_file", &cfg.credentials_file), ("cacert", &cfg.cacert)] {
        if let Some(p) = p {
            absolute(k, p)?;
        }
    }
    for d in &cfg.databases {
        crate::db::common::plain_name("databases", d)?;
    }
    Ok(Arc::new(ArangoDb {
        name: name.to_string(),
        cfg: cfg.clone(),
        host: hosts.get(cfg.runs_on.as_deref())?,
    }))
}

/// The HTTP URL of an arangod endpoint (`tcp://` and `http+tcp://` are plain HTTP, `ssl://`
/// and `http+ssl://` HTTPS).
fn http_url(endpoint: &str) -> Result<String, String> {
    for (scheme, http) in [
        ("tcp://", "http://"),
        ("http+tcp://", "http://"),
        ("ssl://", "https://"),
        ("http+ssl://", "https://"),
    ] {
        if let Some(rest) = endpoint.strip_prefix(scheme) {
            if !rest.is_empty() && !rest.contains('/') {
                return Ok(format!("{http}{rest}"));
            }
        }
    }
    Err(format!(
        "endpoint = {endpoint:?} must be tcp://host:port or ssl://host:port"
    ))
}

/// The staged dump, one directory per database.
const DUMP: &str = "dump";
/// Document counts per database and collection.
type Counts = BTreeMap<String, BTreeMap<String, u64>>;

impl ArangoDb {
    fn client(&self) -> Result<Http> {
        let url = http_url(&self.cfg.endpoint).map_err(Error::State)?;
        Http::new(
            &self.name,
            &url,
            self.cfg.credentials_file.as_deref(),
            self.cfg.cacert.as_deref(),
            Duration::from_secs(300),
        )
    }

    async fn databases(&self, http: &Http) -> Result<Vec<String>> {
        let all: Vec<String> = http.get("/_api/database/user").await?["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        if self.cfg.databases.is_empty() {
            return Ok(all);
        }
        for d in &self.cfg.databases {
            if !all.contains(d) {
                crate::bail!(State, "database {d:?} is configured but does not exist");
            }
        }
        Ok(self.cfg.databases.clone())
    }

    /// The snapshot's state, not more: collections created since in the restored databases go,
    /// and, when every database is backed up, databases created since (the safety snapshot
    /// keeps them).
    async fn remove_added_since(&self, ctx: &Ctx, want: &Counts) -> Result<()> {
        let http = self.client()?;
        let now = self.counts(&http, &want.keys().cloned().collect::<Vec<_>>()).await?;
        for (db, colls) in &now {
            for c in colls
                .keys()
                .filter(|c| !want.get(db).is_some_and(|w| w.contains_key(*c)))
            {
                http.call(
                    "DELETE",
                    &format!("/_db/{}/_api/collection/{}", segment(db), segment(c)),
                    None,
                )
                .await?;
                ctx.removed(format!("collection {db}.{c}"));
            }
        }
        if self.cfg.databases.is_empty() {
            for db in self.databases(&http).await? {
                if db != "_system" && !want.contains_key(&db) {
                    http.call("DELETE", &format!("/_api/database/{}", segment(&db)), None)
                        .await?;
                    ctx.removed(format!("database {db}"));
                }
            }
        }
        Ok(())
    }

    async fn counts(&self, http: &Http, dbs: &[String]) -> Result<Counts> {
        let mut out = Counts::new();
        for db in dbs {
            let d = segment(db);
            let list = http
                .get(&format!("/_db/{d}/_api/collection?excludeSystem=true"))
                .await?;
            let mut per = BTreeMap::new();
            for c in list["result"].as_array().into_iter().flatten() {
                let Some(name) = c["name"].as_str() else { continue };
                let v = http
                    .get(&format!("/_db/{d}/_api/collection/{}/count", segment(name)))
                    .await?;
                let n = v["count"]
                    .as_u64()
                    .ok_or_else(|| Error::Answer(format!("{d}/{name}: no document count in {v}")))?;
                per.insert(name.to_string(), n);
            }
            out.insert(db.clone(), per);
        }
        Ok(out)
    }

    /// Writes the tools' configuration file (endpoint and credentials), mode 0600, into the
    /// private work directory on the tools' host.
    async fn tool_config(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("{}-arango-client.conf", self.name));
        let mut text = format!("[server]\nendpoint = {}\n", self.cfg.endpoint);
        match &self.cfg.credentials_file {
            Some(f) => {
                let (user, password) = crate::db::http::read_credentials(f)?;
                text.push_str(&format!("username = {user}\npassword = {password}\n"));
            }
            // Without credentials the tools would prompt for a password.
            None => text.push_str("authentication = false\n"),
        }
        self.host.write_file(&path, text.into_bytes(), 0o600).await?;
        Ok(path)
    }

    /// `program --configuration CONF --server.database DB DIR_OPTION DIR`.
    fn tool(program: &str, conf: &Path, db: &str, dir_option: &str, dir: &Path) -> Command {
        let mut c = process::command(program, &[]);
        c.arg("--configuration")
            .arg(conf)
            .args(["--server.database", db, dir_option])
            .arg(dir);
        c
    }
}

/// What a backup records, for the restore and its verification.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// Documents per collection per database when the dump started: what is restored and
    /// compared.
    collections: Counts,
    /// Whether the counts were the same when the dump ended, so they compare exactly.
    exact: bool,
}

#[async_trait]
impl Plugin for ArangoDb {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "arangodb"
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        let r = async {
            let http = self.client()?;
            let v = http.get("/_api/version").await?;
            let a = http.get("/_admin/server/availability").await?;
            let dbs = self.databases(&http).await?;
            Ok::<_, Error>(format!(
                "ArangoDB {}, mode {}, {} databases",
                v["version"].as_str().unwrap_or("?"),
                a["mode"].as_str().unwrap_or("?"),
                dbs.len()
            ))
        };
        Health::from_result(r.await)
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let http = self.client()?;
        let dbs = self.databases(&http).await?;
        let before = self.counts(&http, &dbs).await?;
        let work = self.host.work_dir(&ctx.work_dir).await?;
        let conf = self.tool_config(&work).await?;
        let dump = work.join(format!("{}-{DUMP}", self.name));
        for db in &dbs {
            ctx.log(format!("dumping database {db}"));
            let mut c = Self::tool(
                self.cfg.arangodump.as_deref().unwrap_or("arangodump"),
                &conf,
                db,
                "--output-directory",
                &dump.join(db),
            );
            c.args([
                "--compress-output",
                "false",
                "--overwrite",
                "true",
                "--include-system-collections",
                "false",
            ]);
            if let Err(e) = self.host.output(&mut c).await {
                let _ = self.host.remove(&conf).await;
                return Err(e);
            }
        }
        let _ = self.host.remove(&conf).await;
        let after = self.counts(&http, &dbs).await?;
        let stored = sink.tree(&self.host, DUMP, &dump, None).await;
        self.host.remove(&dump).await?;
        stored?;
        let facts = Facts {
            exact: before == after,
            collections: after,
        };
        sink.set_facts(DUMP, &facts)?;
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        let counts = source.facts::<Facts>(DUMP)?.collections;
        let work = self.host.work_dir(&ctx.work_dir).await?;
        let dump = work.join(format!("{}-{DUMP}", self.name));
        source.restore_to(&self.host, DUMP, &dump, false).await?;
        let conf = self.tool_config(&work).await?;
        let r = async {
            for db in counts.keys() {
                ctx.log(format!("restoring database {db}"));
                let mut c = Self::tool(
                    self.cfg.arangorestore.as_deref().unwrap_or("arangorestore"),
                    &conf,
                    db,
                    "--input-directory",
                    &dump.join(db),
                );
                c.args([
                    "--create-database",
                    "true",
                    "--overwrite",
                    "true",
                    "--include-system-collections",
                    "false",
                ]);
                self.host.output(&mut c).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        let _ = self.host.remove(&conf).await;
        let _ = self.host.remove(&dump).await;
        r?;
        self.remove_added_since(ctx, &counts).await
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let http = self.client()?;
        let Facts {
            collections: want,
            exact,
        } = source.facts(DUMP)?;
        let dbs: Vec<String> = want.keys().cloned().collect();
        let now = self.counts(&http, &dbs).await?;
        let mut docs = 0;
        for (db, colls) in &want {
            for (c, n) in colls {
                let got = now.get(db).and_then(|m| m.get(c)).copied();
                if exact && got != Some(*n) {
                    crate::bail!(
                        Mismatch,
                        "collection {db}/{c} holds {} documents; the snapshot had {n}",
                        got.map_or("no".to_string(), |g| g.to_string())
                    );
                }
                docs += got.unwrap_or(0);
            }
        }
        Ok(format!(
            "{} databases, {} collections, {docs} documents{}",
            want.len(),
            want.values().map(BTreeMap::len).sum::<usize>(),
            as_in_snapshot(exact)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_to_http_urls() {
        assert_eq!(http_url("tcp://127.0.0.1:8529").unwrap(), "http://127.0.0.1:8529");
        assert_eq!(http_url("ssl://db:8530").unwrap(), "https://db:8530");
        assert_eq!(http_url("http+tcp://db:1").unwrap(), "http://db:1");
        assert!(http_url("http://db:8529").is_err());
        assert!(http_url("tcp://").is_err());
    }
}
