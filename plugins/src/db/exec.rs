//! A database added by configuration alone: a dump command that writes to stdout and a restore
//! command that reads stdin (see `[[exec]]` in `examples/cairn.toml`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::plugin::{Ctx, Health, ItemSink, ItemSource, Plugin};
use crate::process;
use crate::remote::host::{Host, Hosts};

/// `[[exec]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    /// Writes a consistent dump to stdout.
    pub dump: String,
    /// Reads a dump from stdin and loads it.
    pub restore: String,
    /// Exits 0 when the database is healthy.
    pub healthcheck: Option<String>,
    /// Prints a fingerprint of the data (counts, checksums); recorded at backup and compared
    /// after a restore.
    pub verify: Option<String>,
    /// `KEY=value` lines passed as environment to every command (credentials belong here,
    /// in a file of mode 0600, not in the commands).
    pub env_file: Option<PathBuf>,
    /// The `[hosts.NAME]` the commands run on (and `env_file` is read on); default: this host.
    pub runs_on: Option<String>,
}

pub struct Exec {
    cfg: Config,
    host: Host,
}

pub fn build(cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    crate::db::common::plain_name("name", &cfg.name)?;
    if cfg.dump.trim().is_empty() || cfg.restore.trim().is_empty() {
        return Err(format!("{}: dump and restore must not be empty", cfg.name));
    }
    if let Some(f) = &cfg.env_file {
        crate::db::common::absolute("env_file", f)?;
    }
    Ok(Arc::new(Exec {
        cfg: cfg.clone(),
        host: hosts.get(cfg.runs_on.as_deref())?,
    }))
}

impl Exec {
    async fn env(&self) -> Result<BTreeMap<String, String>> {
        let Some(f) = &self.cfg.env_file else {
            return Ok(BTreeMap::new());
        };
        let text = self
            .host
            .read_file(f)
            .await
            .map_err(Error::context(format!("env_file {}", f.display())))?;
        let text = String::from_utf8_lossy(&text);
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.to_string()))
            .collect())
    }

    async fn cmd(&self, line: &str) -> Result<Command> {
        let mut c = process::shell(line);
        c.envs(self.env().await?);
        Ok(c)
    }

    async fn fingerprint(&self) -> Result<Option<String>> {
        match &self.cfg.verify {
            Some(v) => Ok(Some(
                self.host.output(&mut self.cmd(v).await?).await?.trim().to_string(),
            )),
            None => Ok(None),
        }
    }
}

/// What a backup with a verify command records.
#[derive(Debug, Serialize, Deserialize)]
struct Facts {
    /// The verify command's output before the dump.
    fingerprint: String,
    /// Whether it was the same after the dump, so it compares exactly.
    exact: bool,
}

#[async_trait]
impl Plugin for Exec {
    fn name(&self) -> &str {
        &self.cfg.name
    }
    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        let Some(h) = &self.cfg.healthcheck else {
            return Health::ok("no healthcheck configured");
        };
        match self.cmd(h).await {
            Ok(mut c) => match self.host.output(&mut c).await {
                Ok(out) => Health::ok(out.lines().next().unwrap_or("ok").to_string()),
                Err(e) => Health::bad(e.to_string()),
            },
            Err(e) => Health::bad(e.to_string()),
        }
    }

    async fn backup(&self, _ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        let before = self.fingerprint().await?;
        sink.command_output(&self.host, "dump", &mut self.cmd(&self.cfg.dump).await?)
            .await?;
        if let Some(b) = before {
            let same = self.fingerprint().await?.as_deref() == Some(b.as_str());
            sink.set_facts(
                "dump",
                &Facts {
                    fingerprint: b,
                    exact: same,
                },
            )?;
        }
        Ok(())
    }

    async fn restore(&self, _ctx: &Ctx, source: &ItemSource) -> Result<()> {
        source
            .pipe_to(&self.host, "dump", &mut self.cmd(&self.cfg.restore).await?)
            .await
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let Some(now) = self.fingerprint().await? else {
            return Ok("no verify command configured; restore command exited 0".into());
        };
        // Facts are recorded only by a backup that had a verify command.
        if source.meta("dump")?.is_empty() {
            return Ok(format!(
                "the backup ran without a verify command, so there is nothing to compare; now {now:?}"
            ));
        }
        let Facts {
            fingerprint: want,
            exact,
        } = source.facts("dump")?;
        if !exact {
            return Ok(format!("data changed during the backup; now {now:?}"));
        }
        if now != want {
            return Err(Error::Mismatch(format!(
                "fingerprint after restore {now:?} differs from the backup's {want:?}"
            )));
        }
        Ok(format!("fingerprint {now:?} equals the backup's"))
    }
}
