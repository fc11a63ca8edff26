//! Elasticsearch (8.x): the cluster's own snapshot API with a shared-filesystem repository.
//!
//! Backup: registers the `fs` snapshot repository `repository` at `location` (a directory in
//! every node's `path.repo`, on a filesystem this host also sees), takes a snapshot of the
//! configured indices with `wait_for_completion`, checks it ended `SUCCESS` with no failed
//! shard, deletes the older `cairn-*` snapshots from the repository (Cairn keeps them) and
//! stores the repository directory as a file tree. Document counts of every index are taken
//! before and after; when they agree, the restore is verified against them exactly.
//!
//! Restore: the tree goes back into `restore_location` (also in `path.repo`), registered as a
//! read-only repository; existing indices of the same names are deleted or closed
//! (`on_restore`), and the snapshot is restored from there. Disaster recovery expects a fresh
//! cluster and refuses to touch an index that exists.
//!
//! Reindex (`cairn reindex`): each configured name (an alias or an index) is rebuilt into a
//! fresh index with the same mappings through `_reindex`, document counts compared, and the
//! name switched over to it in one atomic `_aliases` call that also removes the old index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::common::absolute;
use crate::db::http::{segment, Http};
use crate::error::{Error, Result};
use crate::plugin::{as_in_snapshot, timestamped, Ctx, Health, ItemSink, ItemSource, Mode, Plugin, Reindexed};
use crate::remote::host::{Host, Hosts};

/// `[elasticsearch]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `http://host:9200` or `https://...` of any node.
    pub url: String,
    /// `user:password` on the first line (mode 0600), when security is on.
    pub credentials_file: Option<PathBuf>,
    /// CA certificate (PEM) of the cluster's HTTPS certificates.
    pub cacert: Option<PathBuf>,
    /// Name of the snapshot repository Cairn registers (default `cairn`).
    pub repository: Option<String>,
    /// The repository's directory: in every node's `path.repo`, visible to this host.
    pub location: PathBuf,
    /// Where a restore puts the repository back (default `<location>-restore`; also in
    /// `path.repo`).
    pub restore_location: Option<PathBuf>,
    /// Index patterns to back up (default: all, `*`).
    #[serde(default)]
    pub indices: Vec<String>,
    /// What a restore does to an existing index of the same name: `delete` (default) or
    /// `close`.
    pub on_restore: Option<OnRestore>,
    /// Aliases or indices `cairn reindex` rebuilds.
    #[serde(default)]
    pub reindex: Vec<String>,
    /// Longest wait for one snapshot, restore or reindex call (default 6 hours).
    pub timeout_secs: Option<u64>,
    /// The `[hosts.NAME]` where `location` and `restore_location` are (a node, or any host
    /// that mounts the shared repository); default: this host. The HTTP calls go from here.
    pub runs_on: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRestore {
    Delete,
    Close,
}

pub struct Elasticsearch {
    name: String,
    cfg: Config,
    host: Host,
}

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
        return Err(format!("url = {:?} must be an http:// or https:// URL", cfg.url));
    }
    absolute("location", &cfg.location)?;
    for (k, p) in [
        ("restore_location", &cfg.restore_location),
        ("credentials_file", &cfg.credentials_file),
        ("cacert", &cfg.cacert),
    ] {
        if let Some(p) = p {
            absolute(k, p)?;
        }
    }
    if cfg.restore_location.as_deref() == Some(cfg.location.as_path()) {
        return Err("restore_location must differ from location".into());
    }
    for (k, names) in [("indices", &cfg.indices), ("reindex", &cfg.reindex)] {
        for n in names.iter() {
            if n.is_empty() || n.starts_with(['_', '-', '+']) || n.contains([',', ' ', '/', '"']) {
                return Err(format!("{k}: {n:?} is not an index name or pattern"));
            }
        }
    }
    if let Some(r) = &cfg.repository {
        crate::db::common::plain_name("repository", r)?;
    }
    Ok(Arc::new(Elasticsearch {
        name: name.to_string(),
        cfg: cfg.clone(),
        host: hosts.get(cfg.runs_on.as_deref())?,
    }))
}

/// The snapshot repository, stored as a tree.
const REPOSITORY: &str = "repository";
/// Cairn's snapshots in the cluster's repository are named `cairn-<unix milliseconds>`.
const PREFIX: &str = "cairn-";
/// Marks a restore location as Cairn's own scratch directory (so it may be emptied).
const SCRATCH_MARK: &str = ".cairn-restore-scratch";

impl Elasticsearch {
    /// A client with the credentials and CA files read now (a missing file is then reported by
    /// the call that needs it, the healthcheck first).
    fn client(&self) -> Result<Http> {
        Http::new(
            &self.name,
            &self.cfg.url,
            self.cfg.credentials_file.as_deref(),
            self.cfg.cacert.as_deref(),
            Duration::from_secs(self.cfg.timeout_secs.unwrap_or(6 * 3600)),
        )
    }

    fn repository(&self) -> &str {
        self.cfg.repository.as_deref().unwrap_or("cairn")
    }

    fn restore_location(&self) -> PathBuf {
        self.cfg.restore_location.clone().unwrap_or_else(|| {
            let mut p = self.cfg.location.clone().into_os_string();
            p.push("-restore");
            PathBuf::from(p)
        })
    }

    fn patterns(&self) -> String {
        if self.cfg.indices.is_empty() {
            "*".into()
        } else {
            self.cfg.indices.join(",")
        }
    }

    /// Open indices matching the configured patterns, with their document counts.
    async fn counts(&self, http: &Http) -> Result<BTreeMap<String, u64>> {
        let path = format!("/_cat/indices/{}?format=json&h=index,status", self.patterns());
        let list = http.get(&path).await?;
        let mut out = BTreeMap::new();
        for row in list.as_array().into_iter().flatten() {
            let (Some(index), Some(status)) = (row["index"].as_str(), row["status"].as_str()) else {
                continue;
            };
            if status == "open" && !index.starts_with('.') {
                out.insert(index.to_string(), self.count(http, index).await?);
            }
        }
        Ok(out)
    }

    async fn count(&self, http: &Http, index: &str) -> Result<u64> {
        let v = http.get(&format!("/{}/_count", segment(index))).await?;
        v["count"]
            .as_u64()
            .ok_or_else(|| Error::Answer(format!("{index}/_count: no count in {v}")))
    }

    async fn index_exists(&self, http: &Http, index: &str) -> Result<bool> {
        match http.try_call("GET", &format!("/{}", segment(index)), None).await? {
            Ok(_) => Ok(true),
            Err(r) if r.status == 404 => Ok(false),
            Err(r) => Err(http.refused("GET", &format!("/{index}"), &r)),
        }
    }

    async fn register(&self, http: &Http, repo: &str, location: &Path, readonly: bool) -> Result<()> {
        let body = json!({"type": "fs", "settings": {"location": location, "readonly": readonly}});
        http.call("PUT", &format!("/_snapshot/{}", segment(repo)), Some(body))
            .await
            .map(drop)
    }

    /// Rebuilds one alias or index; see the module documentation.
    async fn reindex_one(&self, ctx: &Ctx, http: &Http, name: &str) -> Result<Reindexed> {
        let source = match http
            .try_call("GET", &format!("/_alias/{}", segment(name)), None)
            .await?
        {
            Ok(v) => {
                let indices: Vec<&String> = v.as_object().map(|m| m.keys().collect()).unwrap_or_default();
                match indices.as_slice() {
                    [one] => one.to_string(),
                    _ => crate::bail!(
                        State,
                        "alias {name} points at {} indices; reindex needs exactly one",
                        indices.len()
                    ),
                }
            }
            Err(r) if r.status == 404 => {
                if !self.index_exists(http, name).await? {
                    crate::bail!(State, "{name} is neither an alias nor an index");
                }
                name.to_string()
            }
            Err(r) => return Err(http.refused("GET", &format!("/_alias/{name}"), &r)),
        };
        let src = segment(&source);
        let mappings = http.get(&format!("/{src}/_mapping")).await?[&source]["mappings"].clone();
        let settings = http.get(&format!("/{src}/_settings")).await?[&source]["settings"]["index"].clone();
        let mut index_settings = serde_json::Map::new();
        for k in ["number_of_shards", "number_of_replicas", "analysis"] {
            if !settings[k].is_null() {
                index_settings.insert(k.into(), settings[k].clone());
            }
        }
        let aliases: Vec<String> = http.get(&format!("/{src}/_alias")).await?[&source]["aliases"]
            .as_object()
            .map(|m| m.keys().filter(|a| *a != name).cloned().collect())
            .unwrap_or_default();
        let dest = timestamped(&format!("{name}-r"));
        if dest == source {
            crate::bail!(State, "{name} was reindexed less than a millisecond ago");
        }
        let dst = segment(&dest);
        refresh(http, &source).await?;
        let before = self.count(http, &source).await?;
        ctx.log(format!("reindexing {source} ({before} documents) into {dest}"));
        http.call(
            "PUT",
            &format!("/{dst}"),
            Some(json!({"settings": {"index": index_settings}, "mappings": mappings})),
        )
        .await?;
        let result = async {
            let r = http
                .call(
                    "POST",
                    "/_reindex?wait_for_completion=true&refresh=true",
                    Some(json!({"source": {"index": source}, "dest": {"index": dest}})),
                )
                .await?;
            if r["failures"].as_array().is_some_and(|f| !f.is_empty()) {
                crate::bail!(Answer, "_reindex of {source} reported failures: {}", r["failures"]);
            }
            refresh(http, &dest).await?;
            let after = self.count(http, &dest).await?;
            if after != before {
                crate::bail!(
                    Mismatch,
                    "{dest} holds {after} documents, {source} held {before} (written to meanwhile?); {source} is kept"
                );
            }
            Ok(after)
        }
        .await;
        let after = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = http.call("DELETE", &format!("/{dst}"), None).await;
                return Err(e);
            }
        };
        let mut actions = vec![json!({"add": {"index": dest, "alias": name}})];
        actions.extend(aliases.iter().map(|a| json!({"add": {"index": dest, "alias": a}})));
        actions.push(json!({"remove_index": {"index": source}}));
        http.call("POST", "/_aliases", Some(json!({ "actions": actions })))
            .await?;
        Ok(Reindexed {
            name: name.to_string(),
            from: source,
            to: dest,
            before,
            after,
        })
    }
}

async fn refresh(http: &Http, index: &str) -> Result<()> {
    http.call("POST", &format!("/{}/_refresh", segment(index)), None)
        .await
        .map(drop)
}

/// What a backup records, for the restore and its verification.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// The cluster's snapshot (in the copied repository directory) to restore.
    snapshot: String,
    /// Documents per index when the snapshot was taken.
    indices: BTreeMap<String, u64>,
    /// Whether the counts were the same before and after, so they compare exactly.
    exact: bool,
}

#[async_trait]
impl Plugin for Elasticsearch {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        let r = async {
            let http = self.client()?;
            let h = http.get("/_cluster/health").await?;
            let status = h["status"].as_str().unwrap_or("unknown").to_string();
            Ok::<_, Error>((status, h["number_of_nodes"].as_u64().unwrap_or(0)))
        };
        match r.await {
            Ok((s, n)) if s == "green" || s == "yellow" => Health::ok(format!("cluster {s}, {n} nodes")),
            Ok((s, n)) => Health::bad(format!("cluster {s}, {n} nodes")),
            Err(e) => Health::bad(e.to_string()),
        }
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let http = self.client()?;
        let repo = self.repository().to_string();
        self.register(&http, &repo, &self.cfg.location, false).await?;
        let before = self.counts(&http).await?;
        let snap = timestamped(PREFIX);
        ctx.log(format!("snapshot {snap} of {} indices into {repo}", before.len()));
        let r = http
            .call(
                "PUT",
                &format!(
                    "/_snapshot/{}/{}?wait_for_completion=true",
                    segment(&repo),
                    segment(&snap)
                ),
                Some(json!({
                    "indices": self.patterns(),
                    "include_global_state": false,
                    "ignore_unavailable": false,
                })),
            )
            .await?;
        let s = &r["snapshot"];
        if s["state"] != "SUCCESS" || s["shards"]["failed"].as_u64() != Some(0) {
            crate::bail!(
                Answer,
                "snapshot {snap} ended {} with {} failed shards: {}",
                s["state"],
                s["shards"]["failed"],
                s["failures"]
            );
        }
        let after = self.counts(&http).await?;
        let all = http.get(&format!("/_snapshot/{}/_all", segment(&repo))).await?;
        for old in all["snapshots"].as_array().into_iter().flatten() {
            let Some(n) = old["snapshot"].as_str() else { continue };
            if n.starts_with(PREFIX) && n != snap {
                ctx.log(format!("deleting older snapshot {n} from the cluster's repository"));
                http.call("DELETE", &format!("/_snapshot/{}/{}", segment(&repo), segment(n)), None)
                    .await?;
            }
        }
        sink.tree(&self.host, REPOSITORY, &self.cfg.location, None).await?;
        let facts = Facts {
            exact: before == after,
            snapshot: snap,
            indices: after,
        };
        sink.set_facts(REPOSITORY, &facts)?;
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        let http = self.client()?;
        let facts: Facts = source.facts(REPOSITORY)?;
        let snap = facts.snapshot;
        let indices: Vec<String> = facts.indices.into_keys().collect();
        let scratch = self.restore_location();
        if self.host.stat(&scratch).await?.is_some() {
            let ours = self.host.stat(&scratch.join(SCRATCH_MARK)).await?.is_some();
            let empty = !self.host.dir_has_entries(&scratch).await?;
            if !ours && !empty {
                crate::bail!(
                    State,
                    "restore_location {} is not empty and was not made by Cairn; refusing to clear it",
                    scratch.display()
                );
            }
            self.host.remove(&scratch).await?;
        }
        source.restore_to(&self.host, REPOSITORY, &scratch, false).await?;
        self.host
            .write_file(&scratch.join(SCRATCH_MARK), Vec::new(), 0o644)
            .await?;
        let repo = format!("{}-restore", self.repository());
        self.register(&http, &repo, &scratch, true).await?;
        let result = async {
            for index in &indices {
                if !self.index_exists(&http, index).await? {
                    continue;
                }
                let action = self.cfg.on_restore.unwrap_or(OnRestore::Delete);
                if ctx.mode == Mode::DisasterRecovery {
                    crate::bail!(
                        State,
                        "disaster recovery expects a fresh cluster, but index {index} exists"
                    );
                }
                ctx.log(format!(
                    "{} index {index}",
                    if action == OnRestore::Delete {
                        "deleting"
                    } else {
                        "closing"
                    }
                ));
                match action {
                    OnRestore::Delete => http.call("DELETE", &format!("/{}", segment(index)), None).await?,
                    OnRestore::Close => http.call("POST", &format!("/{}/_close", segment(index)), None).await?,
                };
            }
            ctx.log(format!("restoring {snap} ({} indices)", indices.len()));
            let r = http
                .call(
                    "POST",
                    &format!(
                        "/_snapshot/{}/{}/_restore?wait_for_completion=true",
                        segment(&repo),
                        segment(&snap)
                    ),
                    Some(json!({
                        "indices": indices.join(","),
                        "include_global_state": false,
                        "include_aliases": true,
                    })),
                )
                .await?;
            let shards = &r["snapshot"]["shards"];
            if shards["failed"].as_u64() != Some(0) {
                crate::bail!(Answer, "restore of {snap}: {} shards failed", shards["failed"]);
            }
            Ok(())
        }
        .await;
        let unregistered = http
            .call("DELETE", &format!("/_snapshot/{}", segment(&repo)), None)
            .await;
        let _ = self.host.remove(&scratch).await;
        result?;
        unregistered?;
        // The snapshot's state, not more: open indices of the backed-up patterns created since
        // go (the safety snapshot keeps them). Hidden (dot) indices are the cluster's own.
        if ctx.mode == Mode::Normal {
            for index in self.counts(&http).await?.keys() {
                if !indices.contains(index) {
                    http.call("DELETE", &format!("/{}", segment(index)), None).await?;
                    ctx.removed(format!("index {index}"));
                }
            }
        }
        Ok(())
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let http = self.client()?;
        let Facts {
            indices: want, exact, ..
        } = source.facts(REPOSITORY)?;
        let mut docs = 0;
        for (index, n) in &want {
            refresh(&http, index).await?;
            let now = self.count(&http, index).await?;
            if exact && now != *n {
                crate::bail!(Mismatch, "index {index} holds {now} documents; the snapshot had {n}");
            }
            docs += now;
        }
        Ok(format!(
            "{} indices, {docs} documents{}",
            want.len(),
            as_in_snapshot(exact)
        ))
    }

    async fn reindex(&self, ctx: &Ctx, only: &[String]) -> Result<Option<Vec<Reindexed>>> {
        let http = self.client()?;
        let names: Vec<&String> = if only.is_empty() {
            self.cfg.reindex.iter().collect()
        } else {
            only.iter().collect()
        };
        if names.is_empty() {
            crate::bail!(
                Selection,
                "nothing to reindex: list aliases or indices in [elasticsearch] reindex or give --index"
            );
        }
        let mut out = Vec::new();
        for n in names {
            out.push(self.reindex_one(ctx, &http, n).await?);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        toml::from_str(&format!(
            "url = \"http://127.0.0.1:9200\"\nlocation = \"/srv/es-repo\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn configuration_is_checked() {
        assert!(build("elasticsearch", &cfg(""), &Default::default()).is_ok());
        let e = build(
            "elasticsearch",
            &cfg("restore_location = \"/srv/es-repo\""),
            &Default::default(),
        )
        .err()
        .unwrap();
        assert!(e.contains("restore_location"), "{e}");
        let e = build("elasticsearch", &cfg("indices = [\"a,b\"]"), &Default::default())
            .err()
            .unwrap();
        assert!(e.contains("indices"), "{e}");
        let e = build("elasticsearch", &cfg("reindex = [\"_all\"]"), &Default::default())
            .err()
            .unwrap();
        assert!(e.contains("reindex"), "{e}");
        let bad: Result<Config, _> = toml::from_str("url = \"x\"\nlocation = \"/r\"\non_restore = \"drop\"");
        assert!(bad.is_err());
    }
}
