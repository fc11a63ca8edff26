//! etcd (v3 API): a snapshot through the maintenance API, restored member by member.
//!
//! Backup: `etcdctl snapshot save` from one healthy endpoint (etcd cannot stream a snapshot to
//! stdout, so it is staged in the plugin's private work directory and streamed from there),
//! `etcdctl snapshot status` checks its integrity hash, and the key count at the snapshot's
//! revision is recorded. Restore: every configured member is stopped, its data directory moved
//! aside, rebuilt with `etcdctl snapshot restore` (same initial cluster for all), and started;
//! the moved-aside directories are put back if that fails and removed once it succeeded.
//! Disaster recovery does the same onto empty data directories and never touches old ones.
//! Credentials go through `ETCDCTL_USER` read from `credentials_file`, never a command line.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::db::common::absolute;
use crate::db::datadir::{self, Replaced};
use crate::error::{Error, Result};
use crate::plugin::{Ctx, Health, ItemSink, ItemSource, Mode, Plugin};
use crate::process;
use crate::remote::host::{Host, Hosts};

/// `[etcd]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File whose first line is `user:password` (mode 0600), when auth is on.
    pub credentials_file: Option<PathBuf>,
    /// TLS files for the client connection.
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Cluster token of a restored cluster (default `cairn-restore`).
    pub initial_cluster_token: Option<String>,
    /// Program (default `etcdctl`).
    pub etcdctl: Option<String>,
    /// Every member of the cluster.
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub start: Option<String>,
    pub stop: Option<String>,
    /// The `[hosts.NAME]` this member runs on: its data directory, start and stop commands,
    /// and the etcdctl that rebuilds it are there (default: this host).
    pub runs_on: Option<String>,
}

pub struct Etcd {
    name: String,
    cfg: Config,
    /// Each member's host, in the order of `cfg.members`.
    hosts: Vec<Host>,
}

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    if cfg.members.is_empty() {
        return Err("members must list every member of the cluster ([[etcd.members]])".into());
    }
    for (i, m) in cfg.members.iter().enumerate() {
        crate::db::common::plain_name(&format!("members[{i}].name"), &m.name)?;
        absolute(&format!("members[{i}].data_dir"), &m.data_dir)?;
        for (k, u) in [("client_url", &m.client_url), ("peer_url", &m.peer_url)] {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("members[{i}].{k} = {u:?} must be an http:// or https:// URL"));
            }
        }
    }
    for (k, p) in [
        ("credentials_file", &cfg.credentials_file),
        ("cacert", &cfg.cacert),
        ("cert", &cfg.cert),
        ("key", &cfg.key),
    ] {
        if let Some(p) = p {
            absolute(k, p)?;
        }
    }
    let hosts = cfg
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| hosts.get(m.runs_on.as_deref()).map_err(|e| format!("members[{i}].{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Etcd {
        name: name.to_string(),
        cfg: cfg.clone(),
        hosts,
    }))
}

const SNAPSHOT: &str = "snapshot.db";

impl Etcd {
    /// etcdctl against `endpoints`, to run on `host` (credentials and TLS files are read
    /// there).
    async fn etcdctl(&self, host: &Host, endpoints: &str, args: &[&str]) -> Result<Command> {
        let mut c = process::command(self.cfg.etcdctl.as_deref().unwrap_or("etcdctl"), &[]);
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args);
        if let Some(f) = &self.cfg.credentials_file {
            let text = host
                .read_file(f)
                .await
                .map_err(Error::context(format!("credentials_file {}", f.display())))?;
            let text = String::from_utf8_lossy(&text);
            c.env("ETCDCTL_USER", text.lines().next().unwrap_or("").trim());
        }
        for (var, p) in [
            ("ETCDCTL_CACERT", &self.cfg.cacert),
            ("ETCDCTL_CERT", &self.cfg.cert),
            ("ETCDCTL_KEY", &self.cfg.key),
        ] {
            if let Some(p) = p {
                c.env(var, p);
            }
        }
        Ok(c)
    }

    fn all_endpoints(&self) -> String {
        self.cfg
            .members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The host for questions to the whole cluster: the first member's.
    fn any_host(&self) -> &Host {
        &self.hosts[0]
    }

    async fn json(&self, host: &Host, endpoints: &str, args: &[&str]) -> Result<serde_json::Value> {
        let out = host.output(&mut self.etcdctl(host, endpoints, args).await?).await?;
        serde_json::from_str(&out).map_err(|e| Error::Answer(format!("etcdctl {}: bad JSON: {e}", args.join(" "))))
    }

    /// The first member that answers healthy (asked on its own host): its index.
    async fn healthy_member(&self) -> Result<usize> {
        let mut last = None;
        for (i, m) in self.cfg.members.iter().enumerate() {
            let h = &self.hosts[i];
            let asked = async {
                h.output(&mut self.etcdctl(h, &m.client_url, &["endpoint", "health"]).await?)
                    .await
            };
            match asked.await {
                Ok(_) => return Ok(i),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unhealthy("no members".into())))
    }

    /// (revision, key count) as the cluster serves them now. etcdctl 3.4 has no `--count-only`;
    /// a range response's `count` is the whole range's even with `--limit=1`.
    async fn state(&self, host: &Host, endpoint: &str) -> Result<(u64, u64)> {
        let v = self
            .json(
                host,
                endpoint,
                &["get", "", "--prefix", "--keys-only", "--limit=1", "--write-out=json"],
            )
            .await?;
        let revision = v["header"]["revision"]
            .as_u64()
            .ok_or_else(|| Error::Answer(format!("etcdctl get at {endpoint}: no revision in {v}")))?;
        // etcd's JSON leaves zero values out: no `count` is an empty key space.
        Ok((revision, v["count"].as_u64().unwrap_or(0)))
    }

    fn initial_cluster(&self) -> String {
        self.cfg
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn wait_healthy(&self) -> Result<()> {
        let (eps, host) = (self.all_endpoints(), self.any_host());
        process::wait_until(90, || async {
            host.output(&mut self.etcdctl(host, &eps, &["endpoint", "health"]).await?)
                .await
                .map(drop)
        })
        .await
    }
}

/// What a backup records, for the verification of a restore.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// The snapshot's revision: a restored member is at least this far.
    revision: u64,
    /// The member's hash at the snapshot, as etcd reported it.
    hash: serde_json::Value,
    /// Keys at the revision (null when etcd did not tell: then only revisions are compared).
    keys: Option<u64>,
    members: usize,
}

#[async_trait]
impl Plugin for Etcd {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn cold_paths(&self) -> Vec<std::path::PathBuf> {
        // Copied cold by the controller, so only where it can see them.
        (self.cfg.members.iter().zip(&self.hosts))
            .filter(|(_, h)| h.is_local())
            .map(|(m, _)| m.data_dir.clone())
            .collect()
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        // `endpoint health -w json` prints every member's health on stdout, also when some are
        // down (then it exits 1); the plain form prints them on stderr in etcdctl 3.4.
        let health = async {
            let host = self.any_host();
            let mut cmd = self
                .etcdctl(host, &self.all_endpoints(), &["endpoint", "health", "--write-out=json"])
                .await?;
            let (_, stdout, stderr) = host.run(&mut cmd).await?;
            let v: serde_json::Value = serde_json::from_str(&stdout)
                .map_err(|e| Error::Answer(format!("etcdctl endpoint health: {e}; stderr: {stderr}")))?;
            let members = v.as_array().cloned().unwrap_or_default();
            let down: Vec<String> = members
                .iter()
                .filter(|m| m["health"].as_bool() != Some(true))
                .map(|m| m["endpoint"].as_str().unwrap_or("?").to_string())
                .collect();
            Ok::<_, Error>((members.len() - down.len(), self.cfg.members.len(), down))
        };
        match health.await {
            Err(e) => Health::bad(e.to_string()),
            Ok((up, all, down)) if up < all => Health::bad(format!(
                "{up} of {all} members healthy; down: {}",
                if down.is_empty() {
                    "not reported".to_string()
                } else {
                    down.join(", ")
                }
            )),
            Ok((up, all, _)) => Health::from_result(
                self.state(self.any_host(), &self.all_endpoints())
                    .await
                    .map(|(rev, keys)| format!("{up} of {all} members healthy, revision {rev}, {keys} keys")),
            ),
        }
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let i = self.healthy_member().await?;
        let (ep, host) = (self.cfg.members[i].client_url.as_str(), &self.hosts[i]);
        // Staged on the member's host, in a name of this plugin's own.
        let file = host
            .work_dir(&ctx.work_dir)
            .await?
            .join(format!("{}-{SNAPSHOT}", self.name));
        ctx.log(format!("snapshot from {ep} on host {}", host.name()));
        host.output(
            &mut self
                .etcdctl(host, ep, &["snapshot", "save", &file.to_string_lossy()])
                .await?,
        )
        .await?;
        // `snapshot status` reads the whole file and checks its hash.
        let status = self
            .json(
                host,
                ep,
                &["snapshot", "status", &file.to_string_lossy(), "--write-out=json"],
            )
            .await?;
        let rev = status["revision"]
            .as_u64()
            .ok_or_else(|| Error::Answer(format!("etcdctl snapshot status: no revision in {status}")))?;
        let count = self
            .json(
                host,
                ep,
                &[
                    "get",
                    "",
                    "--prefix",
                    "--keys-only",
                    "--limit=1",
                    &format!("--rev={rev}"),
                    "--write-out=json",
                ],
            )
            .await
            .ok()
            .and_then(|v| v["count"].as_u64());
        let stored = sink.file(host, SNAPSHOT, &file).await;
        host.remove(&file).await?;
        stored?;
        let facts = Facts {
            revision: rev,
            hash: status["hash"].clone(),
            keys: count,
            members: self.cfg.members.len(),
        };
        sink.set_facts(SNAPSHOT, &facts)?;
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        // The snapshot goes to each member's host once.
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for h in &self.hosts {
            if files.iter().any(|(n, _)| n == h.name()) {
                continue;
            }
            let file = h
                .work_dir(&ctx.work_dir)
                .await?
                .join(format!("{}-{SNAPSHOT}", self.name));
            source.restore_to(h, SNAPSHOT, &file, false).await?;
            files.push((h.name().to_string(), file));
        }
        let file_on = |h: &Host| files.iter().find(|(n, _)| n == h.name()).expect("sent").1.clone();
        let members: Vec<(&Member, &Host)> = self.cfg.members.iter().zip(&self.hosts).collect();
        if ctx.mode == Mode::DisasterRecovery {
            let dirs: Vec<_> = members
                .iter()
                .map(|(m, h)| ((*h).clone(), m.data_dir.clone(), format!("member {}", m.name)))
                .collect();
            datadir::require_empty(&dirs).await?;
        }
        if ctx.mode == Mode::Normal {
            for (m, h) in &members {
                ctx.log(format!("stopping {}", m.name));
                h.run_configured(m.stop.as_deref()).await?;
            }
        }
        let mut replaced = Replaced::default();
        let r = async {
            for (m, h) in &members {
                replaced.move_aside(h, &m.data_dir).await?;
                ctx.log(format!("rebuilding {} on host {}", m.data_dir.display(), h.name()));
                let token = self.cfg.initial_cluster_token.as_deref().unwrap_or("cairn-restore");
                let file = file_on(h);
                h.output(
                    &mut self
                        .etcdctl(
                            h,
                            &m.client_url,
                            &[
                                "snapshot",
                                "restore",
                                &file.to_string_lossy(),
                                &format!("--name={}", m.name),
                                &format!("--data-dir={}", m.data_dir.display()),
                                &format!("--initial-cluster={}", self.initial_cluster()),
                                &format!("--initial-advertise-peer-urls={}", m.peer_url),
                                &format!("--initial-cluster-token={token}"),
                            ],
                        )
                        .await?,
                )
                .await?;
            }
            for (m, h) in &members {
                ctx.log(format!("starting {}", m.name));
                h.run_configured(m.start.as_deref()).await?;
            }
            self.wait_healthy().await
        }
        .await;
        let stop: Vec<_> = members.iter().map(|(m, h)| ((*h).clone(), m.stop.clone())).collect();
        let start: Vec<_> = members.iter().map(|(m, h)| ((*h).clone(), m.start.clone())).collect();
        let r = replaced.finish(ctx, r, &stop, &start).await;
        for (n, f) in &files {
            if let Some(h) = self.hosts.iter().find(|h| h.name() == n) {
                let _ = h.remove(f).await;
            }
        }
        r
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let facts: Facts = source.facts(SNAPSHOT)?;
        let want_rev = facts.revision;
        let mut seen = Vec::new();
        for (m, h) in self.cfg.members.iter().zip(&self.hosts) {
            let (rev, keys) = self.state(h, &m.client_url).await?;
            if rev < want_rev {
                return Err(Error::Mismatch(format!(
                    "member {} is at revision {rev}, older than the snapshot's {want_rev}",
                    m.name
                )));
            }
            if let Some(want) = facts.keys {
                if keys != want {
                    return Err(Error::Mismatch(format!(
                        "member {} holds {keys} keys; the snapshot had {want}",
                        m.name
                    )));
                }
            }
            seen.push(keys);
        }
        Ok(format!(
            "{} members at revision >= {want_rev}, {} keys each, as in the snapshot",
            seen.len(),
            seen.first().copied().unwrap_or(0)
        ))
    }
}
