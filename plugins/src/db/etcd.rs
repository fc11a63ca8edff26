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
}

pub struct Etcd {
    name: String,
    cfg: Config,
}

pub fn build(name: &str, cfg: &Config, _hosts: &crate::remote::host::Hosts) -> Result<Arc<dyn Plugin>, String> {
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
    Ok(Arc::new(Etcd {
        name: name.to_string(),
        cfg: cfg.clone(),
    }))
}

const SNAPSHOT: &str = "snapshot.db";

impl Etcd {
    fn etcdctl(&self, endpoints: &str, args: &[&str]) -> Result<Command> {
        let mut c = process::command(self.cfg.etcdctl.as_deref().unwrap_or("etcdctl"), &[]);
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args);
        if let Some(f) = &self.cfg.credentials_file {
            let text = std::fs::read_to_string(f).map_err(Error::io(format!("credentials_file {}", f.display())))?;
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

    async fn json(&self, endpoints: &str, args: &[&str]) -> Result<serde_json::Value> {
        let out = process::output(&mut self.etcdctl(endpoints, args)?).await?;
        serde_json::from_str(&out).map_err(|e| Error::Answer(format!("etcdctl {}: bad JSON: {e}", args.join(" "))))
    }

    async fn healthy_endpoint(&self) -> Result<String> {
        let mut last = None;
        for m in &self.cfg.members {
            match process::output(&mut self.etcdctl(&m.client_url, &["endpoint", "health"])?).await {
                Ok(_) => return Ok(m.client_url.clone()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unhealthy("no members".into())))
    }

    /// (revision, key count) as the cluster serves them now. etcdctl 3.4 has no `--count-only`;
    /// a range response's `count` is the whole range's even with `--limit=1`.
    async fn state(&self, endpoint: &str) -> Result<(u64, u64)> {
        let v = self
            .json(
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
        let eps = self.all_endpoints();
        process::wait_until(90, || async {
            process::output(&mut self.etcdctl(&eps, &["endpoint", "health"])?)
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
        self.cfg.members.iter().map(|m| m.data_dir.clone()).collect()
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        // `endpoint health -w json` prints every member's health on stdout, also when some are
        // down (then it exits 1); the plain form prints them on stderr in etcdctl 3.4.
        let health = async {
            let mut cmd = self.etcdctl(&self.all_endpoints(), &["endpoint", "health", "--write-out=json"])?;
            let out = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .output()
                .await
                .map_err(Error::io("cannot start etcdctl".to_string()))?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                Error::Answer(format!(
                    "etcdctl endpoint health: {e}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            })?;
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
                self.state(&self.all_endpoints())
                    .await
                    .map(|(rev, keys)| format!("{up} of {all} members healthy, revision {rev}, {keys} keys")),
            ),
        }
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let ep = self.healthy_endpoint().await?;
        let file = ctx.work_dir.join(SNAPSHOT);
        ctx.log(format!("snapshot from {ep}"));
        process::output(&mut self.etcdctl(&ep, &["snapshot", "save", &file.to_string_lossy()])?).await?;
        // `snapshot status` reads the whole file and checks its hash.
        let status = self
            .json(
                &ep,
                &["snapshot", "status", &file.to_string_lossy(), "--write-out=json"],
            )
            .await?;
        let rev = status["revision"]
            .as_u64()
            .ok_or_else(|| Error::Answer(format!("etcdctl snapshot status: no revision in {status}")))?;
        let count = self
            .json(
                &ep,
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
        let f = tokio::fs::File::open(&file)
            .await
            .map_err(Error::io(file.display().to_string()))?;
        sink.stream(SNAPSHOT, f).await?;
        tokio::fs::remove_file(&file)
            .await
            .map_err(Error::io(file.display().to_string()))?;
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
        let file = ctx.work_dir.join(SNAPSHOT);
        source.restore_to(SNAPSHOT, &file, false).await?;
        if ctx.mode == Mode::DisasterRecovery {
            datadir::require_empty(
                self.cfg
                    .members
                    .iter()
                    .map(|m| (m.data_dir.as_path(), format!("member {}", m.name))),
            )?;
        }
        if ctx.mode == Mode::Normal {
            for m in &self.cfg.members {
                ctx.log(format!("stopping {}", m.name));
                process::run_configured(m.stop.as_deref()).await?;
            }
        }
        let mut replaced = Replaced::default();
        let r = async {
            for m in &self.cfg.members {
                replaced.move_aside(&m.data_dir)?;
                ctx.log(format!("rebuilding {}", m.data_dir.display()));
                let token = self.cfg.initial_cluster_token.as_deref().unwrap_or("cairn-restore");
                process::output(&mut self.etcdctl(
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
                )?)
                .await?;
            }
            for m in &self.cfg.members {
                ctx.log(format!("starting {}", m.name));
                process::run_configured(m.start.as_deref()).await?;
            }
            self.wait_healthy().await
        }
        .await;
        let stop: Vec<_> = self.cfg.members.iter().map(|m| m.stop.clone()).collect();
        let start: Vec<_> = self.cfg.members.iter().map(|m| m.start.clone()).collect();
        replaced.finish(ctx, r, &stop, &start).await
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let facts: Facts = source.facts(SNAPSHOT)?;
        let want_rev = facts.revision;
        let mut seen = Vec::new();
        for m in &self.cfg.members {
            let (rev, keys) = self.state(&m.client_url).await?;
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
