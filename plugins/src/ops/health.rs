//! The platform's health in one list: every database's healthcheck, the repository (reachable,
//! free space, who holds it), the age of the newest system snapshot against
//! `max_snapshot_age`, and maintenance mode left on by a run that is gone.

use cairn_store::{format_bytes, Repository};
use serde::Serialize;

use crate::config::Loaded;
use crate::controller::{self, PLUGINS_META};
use crate::error::Result;
use crate::ops::maintenance;
use crate::plugin::Health;

/// What `healthcheck` reports.
#[derive(Debug, Serialize)]
pub struct SystemHealth {
    /// (check, result), databases first.
    pub checks: Vec<(String, Health)>,
    pub newest_snapshot_age_secs: Option<i64>,
    /// Maintenance mode, when on.
    pub maintenance: Option<maintenance::Status>,
}

impl SystemHealth {
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|(_, h)| h.healthy)
    }
}

/// Checks the platform. `repo` is the repository, or why it could not be opened (reported as
/// an unhealthy check, not an error).
pub async fn system_health(loaded: &Loaded, repo: std::result::Result<Repository, String>) -> Result<SystemHealth> {
    let mut checks = controller::healthchecks(loaded, &loaded.plugins).await?;
    let mut newest_age = None;
    match repo {
        Ok(repo) => {
            checks.push(("repository".into(), repository_health(&repo)?));
            let (health, age) = newest_snapshot(&repo, loaded)?;
            newest_age = age;
            checks.push(("newest snapshot".into(), health));
        }
        Err(e) => checks.push(("repository".into(), Health::bad(e))),
    }
    let maint = maintenance::status(loaded)?;
    if let Some(s) = maint.as_ref().filter(|s| s.holder_gone()) {
        checks.push((
            "maintenance".into(),
            Health::bad(format!(
                "left on since {} by pid {} ({}), which is gone: the next backup or restore takes it over, \
                 or run `cairn maintenance off`",
                s.since, s.pid, s.reason
            )),
        ));
    }
    Ok(SystemHealth {
        checks,
        newest_snapshot_age_secs: newest_age,
        maintenance: maint,
    })
}

fn repository_health(repo: &Repository) -> Result<Health> {
    let live: Vec<String> = repo
        .locks()?
        .iter()
        .filter_map(|(_, l)| l.as_ref().ok())
        .filter(|l| !l.is_dead())
        .map(|l| l.describe())
        .collect();
    let free = repo.location().local_path().and_then(free_space);
    let mut detail = format!(
        "{} reachable, {} free",
        repo.location(),
        free.map(format_bytes).unwrap_or_else(|| "?".into())
    );
    if !live.is_empty() {
        detail.push_str(&format!("; in use: {}", live.join("; ")));
    }
    Ok(Health::ok(detail))
}

/// The newest complete system snapshot (safety snapshots aside) against `max_snapshot_age`.
fn newest_snapshot(repo: &Repository, loaded: &Loaded) -> Result<(Health, Option<i64>)> {
    let newest = repo
        .snapshots()?
        .into_iter()
        .flatten()
        .filter(|s| s.is_complete() && s.meta.contains_key(PLUGINS_META))
        .filter(|s| !s.tags.iter().any(|t| t == "safety"))
        .max_by_key(|s| s.time);
    let Some(s) = newest else {
        return Ok((Health::bad("no complete system snapshot yet"), None));
    };
    let age = cairn_store::now_unix() - s.time;
    let max_age = loaded
        .config
        .max_snapshot_age
        .as_deref()
        .and_then(|a| cairn_store::parse_duration(a).ok());
    let detail = format!("{} taken {} ago", s.name, human_age(age));
    let health = match max_age {
        Some(max) if age > max => Health::bad(format!("{detail}, more than max_snapshot_age ({})", human_age(max))),
        _ => Health::ok(detail),
    };
    Ok((health, Some(age)))
}

/// Free bytes on the filesystem holding `path`, from `df`.
fn free_space(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_an_operator_says_them() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 3600), "3h");
        assert_eq!(human_age(9 * 86_400), "9d");
        assert!(free_space(std::path::Path::new("/")).is_some_and(|b| b > 0));
    }
}
