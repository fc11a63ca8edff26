//! Maintenance mode: the operator's enter/leave commands plus a status file the healthcheck
//! reports (`<state_dir>/maintenance.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::process;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub since: String,
    pub reason: String,
    pub pid: u32,
    /// The holder's start time and pid namespace, so a dead holder is told from a live one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<String>,
}

impl Status {
    fn ours(reason: &str) -> Self {
        let pid = std::process::id();
        Status {
            since: cairn_store::format_rfc3339(cairn_store::now_unix()),
            reason: reason.to_string(),
            pid,
            start: cairn_store::process_start(pid),
            pidns: cairn_store::current_pidns(),
        }
    }

    /// Whether the run that turned maintenance mode on is proven gone (killed, crashed): then
    /// nobody will turn it off, and the next run takes it over.
    pub fn holder_gone(&self) -> bool {
        cairn_store::process_gone(self.pid, self.pidns.as_deref(), self.start)
    }
}

fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("maintenance.json")
}

/// The current state: `Some` while in maintenance mode.
pub fn status(loaded: &Loaded) -> Result<Option<Status>> {
    let p = status_path(&loaded.state_dir());
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State(format!("{} is damaged: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p.display().to_string())(e)),
    }
}

/// Enters maintenance mode: runs the enter command, then writes the status file. Returns false
/// if it was already on (then whoever turned it on also turns it off).
pub async fn enter(loaded: &Loaded, reason: &str) -> Result<bool> {
    if let Some(s) = status(loaded)? {
        if !s.holder_gone() {
            return Ok(false);
        }
        // Left on by a run that died: the platform is still in maintenance mode (its enter
        // command ran); this run takes it over and turns it off when done.
        eprintln!(
            "warning: maintenance mode was left on by pid {} ({}, since {}), which is gone; taking it over",
            s.pid, s.reason, s.since
        );
        write_status(loaded, &Status::ours(reason))?;
        return Ok(true);
    }
    let dir = loaded.state_dir();
    cairn_store::create_private_dir(&dir)?;
    process::run_configured(loaded.config.maintenance.enter.as_deref())
        .await
        .map_err(Error::context("entering maintenance mode"))?;
    write_status(loaded, &Status::ours(reason))?;
    Ok(true)
}

fn write_status(loaded: &Loaded, s: &Status) -> Result<()> {
    let p = status_path(&loaded.state_dir());
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).expect("serialises"))
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(Error::io(p.display().to_string()))
}

/// Leaves maintenance mode: runs the leave command, then removes the status file (kept if the
/// command fails, so the healthcheck still says so).
pub async fn leave(loaded: &Loaded) -> Result<()> {
    if status(loaded)?.is_none() {
        return Ok(());
    }
    process::run_configured(loaded.config.maintenance.leave.as_deref())
        .await
        .map_err(Error::context("leaving maintenance mode"))?;
    let p = status_path(&loaded.state_dir());
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p.display().to_string())(e)),
        _ => Ok(()),
    }
}
