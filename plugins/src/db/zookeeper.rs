//! ZooKeeper: the newest complete snapshot plus the transaction logs after it.
//!
//! Backup copies, from one server's data directory (the leader when one answers), the newest
//! `version-2/snapshot.<zxid>` that is complete (ends with ZooKeeper's `/` seal) and every
//! `log.<zxid>` that can hold transactions after it, straight into the snapshot as one tree.
//! `mntr`/`srvr` before and after record the znode count and zxid; when they agree nothing was
//! written meanwhile and the restore is verified against them exactly. Restore stops every
//! server, rebuilds each data directory from those files (with its `myid`), starts them all and
//! waits for a serving ensemble. The four-letter words `ruok`, `srvr` and `mntr` must be allowed
//! (`4lw.commands.whitelist`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::common::absolute;
use crate::db::datadir::{self, Replaced};
use crate::error::{Error, Result};
use crate::plugin::{Ctx, Health, ItemSink, ItemSource, Keep, Mode, Plugin};
use crate::process;
use crate::remote::host::{Host, Hosts};

/// `[zookeeper]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every server of the ensemble (one for a standalone server).
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The server's `myid`.
    pub id: u32,
    /// Client address, `host:port`.
    pub address: String,
    /// `dataDir` (holds `myid` and `version-2/`).
    pub data_dir: PathBuf,
    /// `dataLogDir`, when the logs live apart from `dataDir`.
    pub data_log_dir: Option<PathBuf>,
    pub start: Option<String>,
    pub stop: Option<String>,
    /// The `[hosts.NAME]` this server runs on: its directories and start and stop commands
    /// are there (default: this host). `address` is reached from the controller.
    pub runs_on: Option<String>,
}

pub struct ZooKeeper {
    name: String,
    cfg: Config,
    /// Each server's host, in the order of `cfg.servers`.
    hosts: Vec<Host>,
}

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    if cfg.servers.is_empty() {
        return Err("servers must list every server ([[zookeeper.servers]])".into());
    }
    let mut ids = BTreeSet::new();
    for (i, s) in cfg.servers.iter().enumerate() {
        absolute(&format!("servers[{i}].data_dir"), &s.data_dir)?;
        if let Some(d) = &s.data_log_dir {
            absolute(&format!("servers[{i}].data_log_dir"), d)?;
        }
        if !s.address.contains(':') {
            return Err(format!("servers[{i}].address = {:?} must be host:port", s.address));
        }
        if !ids.insert(s.id) {
            return Err(format!("servers[{i}].id = {} is used twice", s.id));
        }
    }
    let hosts = cfg
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| hosts.get(s.runs_on.as_deref()).map_err(|e| format!("servers[{i}].{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(ZooKeeper {
        name: name.to_string(),
        cfg: cfg.clone(),
        hosts,
    }))
}

const DATA: &str = "data";
const LOGS: &str = "datalog";

/// Sends a four-letter word and returns the answer.
pub async fn four_letter(address: &str, word: &str) -> Result<String> {
    let io = |e| Error::Answer(format!("{address}: {word}: {e}"));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(address).await.map_err(io)?;
        s.write_all(word.as_bytes()).await.map_err(io)?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.map_err(io)?;
        Ok(out)
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .map_err(|_| Error::Unhealthy(format!("{address}: {word}: no answer in 10 s")))?
}

/// What a server reports: (mode, zxid, znode count).
async fn server_state(address: &str) -> Result<(String, u64, u64)> {
    let srvr = four_letter(address, "srvr").await?;
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .ok_or_else(|| Error::Answer(format!("{address}: no {key:?} in the answer (is the 4lw whitelisted?)")))
    };
    let mode = field(&srvr, "Mode:")?;
    let zxid = field(&srvr, "Zxid:")?;
    let zxid = u64::from_str_radix(zxid.trim_start_matches("0x"), 16)
        .map_err(|_| Error::Answer(format!("{address}: bad zxid {zxid:?}")))?;
    let mntr = four_letter(address, "mntr").await?;
    let nodes = field(&mntr, "zk_znode_count")?
        .parse()
        .map_err(|_| Error::Answer(format!("{address}: bad zk_znode_count")))?;
    Ok((mode, zxid, nodes))
}

/// The zxid in a `snapshot.<hex>` or `log.<hex>` file name.
fn zxid_of(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix).and_then(|h| u64::from_str_radix(h, 16).ok())
}

/// A snapshot file is complete once ZooKeeper has written its trailing seal: the string "/"
/// serialised as length 1 plus the byte.
async fn sealed(host: &Host, path: &Path) -> bool {
    host.read_tail(path, 5).await.is_ok_and(|t| t == [0, 0, 0, 1, b'/'])
}

/// The files a restore needs from `version-2` dirs on `host`: newest sealed snapshot and the
/// logs from the one that may hold its next transaction on.
pub async fn choose_files(host: &Host, snap_dir: &Path, log_dir: &Path) -> Result<(String, Vec<String>)> {
    let mut snaps: Vec<(u64, String)> = host
        .list_dir(snap_dir)
        .await?
        .into_iter()
        .filter_map(|n| zxid_of(&n, "snapshot.").map(|z| (z, n)))
        .collect();
    snaps.sort();
    let mut newest_sealed = None;
    for (z, n) in snaps.into_iter().rev() {
        if sealed(host, &snap_dir.join(&n)).await {
            newest_sealed = Some((z, n));
            break;
        }
    }
    let (snap_zxid, snap) =
        newest_sealed.ok_or_else(|| Error::State(format!("no complete snapshot in {}", snap_dir.display())))?;
    let mut logs: Vec<(u64, String)> = host
        .list_dir(log_dir)
        .await?
        .into_iter()
        .filter_map(|n| zxid_of(&n, "log.").map(|z| (z, n)))
        .collect();
    logs.sort();
    // The newest log starting at or before the snapshot may hold transactions after it.
    let first = logs.iter().rposition(|(z, _)| *z <= snap_zxid).unwrap_or(0);
    Ok((snap, logs.into_iter().skip(first).map(|(_, n)| n).collect()))
}

impl ZooKeeper {
    async fn wait_serving(&self) -> Result<()> {
        for s in &self.cfg.servers {
            process::wait_until(120, || async {
                let ok = four_letter(&s.address, "ruok").await?;
                let (mode, _, _) = server_state(&s.address).await?;
                if ok.trim() == "imok" && ["standalone", "leader", "follower"].contains(&mode.as_str()) {
                    Ok(())
                } else {
                    Err(Error::Unhealthy(format!("{} not serving yet", s.address)))
                }
            })
            .await?;
        }
        Ok(())
    }
}

fn keep_names(files: Vec<String>) -> Keep {
    let set: BTreeSet<String> = files.into_iter().collect();
    Arc::new(move |p: &Path| {
        let s = p.to_string_lossy();
        s == "version-2" || s.strip_prefix("version-2/").is_some_and(|f| set.contains(f))
    })
}

/// What a backup records, for the verification of a restore.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// The last transaction in the snapshot: a restored ensemble is at least this far.
    zxid: u64,
    znodes: u64,
    /// Whether nothing was written while the files were copied, so counts compare exactly.
    exact: bool,
    /// The snapshot file and transaction logs copied.
    snapshot: String,
    logs: Vec<String>,
}

#[async_trait]
impl Plugin for ZooKeeper {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "zookeeper"
    }

    fn cold_paths(&self) -> Vec<std::path::PathBuf> {
        // Copied cold by the controller, so only where it can see them.
        (self.cfg.servers.iter().zip(&self.hosts))
            .filter(|(_, h)| h.is_local())
            .flat_map(|(s, _)| std::iter::once(s.data_dir.clone()).chain(s.data_log_dir.clone()))
            .collect()
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        let mut parts = Vec::new();
        let mut healthy = true;
        for s in &self.cfg.servers {
            let ok = four_letter(&s.address, "ruok").await;
            match (ok, server_state(&s.address).await) {
                (Ok(a), Ok((mode, zxid, nodes))) if a.trim() == "imok" => {
                    parts.push(format!("{} {mode} zxid {zxid:#x} {nodes} znodes", s.address))
                }
                (_, Err(e)) | (Err(e), _) => {
                    healthy = false;
                    parts.push(e.to_string());
                }
                (Ok(a), _) => {
                    healthy = false;
                    parts.push(format!("{}: ruok answered {a:?}", s.address));
                }
            }
        }
        Health {
            healthy,
            detail: parts.join("; "),
        }
    }

    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        // The leader has every committed transaction; a follower may lag.
        let mut chosen = None;
        for (s, h) in self.cfg.servers.iter().zip(&self.hosts) {
            if let Ok((mode, _, _)) = server_state(&s.address).await {
                let readable = h
                    .stat(&s.data_dir.join("version-2"))
                    .await
                    .is_ok_and(|st| st.is_some_and(|st| st.kind == "dir"));
                if readable && (chosen.is_none() || mode == "leader") {
                    chosen = Some((s.clone(), h.clone()));
                }
            }
        }
        let (s, host) =
            chosen.ok_or_else(|| Error::Unhealthy("no server answers with a readable data directory".into()))?;
        let (_, zxid, nodes) = server_state(&s.address).await?;
        let snap_root = s.data_dir.clone();
        let log_root = s.data_log_dir.clone().unwrap_or_else(|| s.data_dir.clone());
        let (snap, logs) = choose_files(&host, &snap_root.join("version-2"), &log_root.join("version-2")).await?;
        ctx.log(format!("copying {snap} and {} logs from server {}", logs.len(), s.id));
        if log_root == snap_root {
            let mut all = logs.clone();
            all.push(snap.clone());
            sink.tree(&host, DATA, &snap_root, Some(keep_names(all))).await?;
        } else {
            sink.tree(&host, DATA, &snap_root, Some(keep_names(vec![snap.clone()])))
                .await?;
            sink.tree(&host, LOGS, &log_root, Some(keep_names(logs.clone())))
                .await?;
        }
        let (_, zxid_after, nodes_after) = server_state(&s.address).await?;
        let exact = zxid == zxid_after && nodes == nodes_after;
        if !exact {
            sink.warn(format!(
                "written to during the backup (zxid {zxid:#x} -> {zxid_after:#x})"
            ));
        }
        let facts = Facts {
            zxid,
            znodes: nodes,
            exact,
            snapshot: snap,
            logs,
        };
        sink.set_facts(DATA, &facts)?;
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        let separate_logs = source.item(LOGS).is_ok();
        let servers: Vec<(&Server, &Host)> = self.cfg.servers.iter().zip(&self.hosts).collect();
        let dirs = |s: &Server| {
            let mut d = vec![s.data_dir.clone()];
            if let Some(l) = s.data_log_dir.as_ref().filter(|l| **l != s.data_dir) {
                d.push(l.clone());
            }
            d
        };
        if ctx.mode == Mode::DisasterRecovery {
            let all: Vec<(Host, PathBuf, String)> = servers
                .iter()
                .flat_map(|(s, h)| {
                    dirs(s)
                        .into_iter()
                        .map(move |d| ((*h).clone(), d, format!("server {}", s.id)))
                })
                .collect();
            datadir::require_empty(&all).await?;
        } else {
            for (s, h) in &servers {
                ctx.log(format!("stopping server {}", s.id));
                h.run_configured(s.stop.as_deref()).await?;
            }
        }
        let mut replaced = Replaced::default();
        let r = async {
            for (s, h) in &servers {
                for d in dirs(s) {
                    replaced.move_aside(h, &d).await?;
                }
                ctx.log(format!("rebuilding {}", s.data_dir.display()));
                source.restore_to(h, DATA, &s.data_dir, false).await?;
                if separate_logs {
                    let l = s.data_log_dir.clone().unwrap_or_else(|| s.data_dir.clone());
                    source.restore_to(h, LOGS, &l, true).await?;
                }
                h.write_file(&s.data_dir.join("myid"), format!("{}\n", s.id).into_bytes(), 0o644)
                    .await?;
            }
            for (s, h) in &servers {
                ctx.log(format!("starting server {}", s.id));
                h.run_configured(s.start.as_deref()).await?;
            }
            self.wait_serving().await
        }
        .await;
        let stop: Vec<_> = servers.iter().map(|(s, h)| ((*h).clone(), s.stop.clone())).collect();
        let start: Vec<_> = servers.iter().map(|(s, h)| ((*h).clone(), s.start.clone())).collect();
        replaced.finish(ctx, r, &stop, &start).await
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let Facts {
            zxid: want_zxid,
            znodes: want_nodes,
            exact,
            ..
        } = source.facts(DATA)?;
        let mut counts = Vec::new();
        for s in &self.cfg.servers {
            let (_, zxid, nodes) = server_state(&s.address).await?;
            // A restarted ensemble elects a new epoch, so its zxid can only be higher.
            if zxid < want_zxid {
                return Err(Error::Mismatch(format!(
                    "server {} is at zxid {zxid:#x}, older than the backup's {want_zxid:#x}",
                    s.id
                )));
            }
            if exact && nodes != want_nodes {
                return Err(Error::Mismatch(format!(
                    "server {} holds {nodes} znodes; the backup had {want_nodes}",
                    s.id
                )));
            }
            counts.push(nodes);
        }
        Ok(format!(
            "{} servers serving, {} znodes each (backup: {want_nodes}), zxid >= {want_zxid:#x}",
            counts.len(),
            counts.first().copied().unwrap_or(0)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chooses_the_newest_sealed_snapshot_and_the_logs_after_it() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path();
        let seal = |n: &str| std::fs::write(v.join(n), [b"data".as_slice(), &[0, 0, 0, 1, b'/']].concat()).unwrap();
        seal("snapshot.0");
        seal("snapshot.200");
        std::fs::write(v.join("snapshot.300"), b"half written").unwrap();
        for l in ["log.1", "log.150", "log.250", "log.301"] {
            std::fs::write(v.join(l), b"txns").unwrap();
        }
        let (snap, logs) = choose_files(&Host::Local, v, v).await.unwrap();
        assert_eq!(snap, "snapshot.200");
        assert_eq!(logs, vec!["log.150", "log.250", "log.301"]);
        std::fs::remove_file(v.join("snapshot.0")).unwrap();
        std::fs::remove_file(v.join("snapshot.200")).unwrap();
        assert!(choose_files(&Host::Local, v, v)
            .await
            .unwrap_err()
            .to_string()
            .contains("no complete snapshot"));
    }
}
