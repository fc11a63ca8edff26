//! Whole-platform operations over the configured plugins: system backup and restore,
//! healthcheck and maintenance mode. `cairn` and `cso_backupnrestore` both call these.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_plugins::config::Loaded;
use cairn_plugins::controller::{self, BackupRequest, RestoreRequest};
use cairn_plugins::ops::maintenance;
use cairn_plugins::plugin::{Health, Mode};
use cairn_store::{Repository, Status};
use serde_json::json;

use crate::common::{bytes, print_table, GlobalOpts};

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn open(g: &GlobalOpts) -> Result<(Loaded, Repository)> {
    let loaded = g.require_config()?;
    let repo = g.with_config(Some(&loaded)).open_exact()?;
    Ok((loaded, repo))
}

/// `cairn backup --system`: every configured plugin (or `dbs`) into one snapshot.
pub fn backup(g: &GlobalOpts, req: BackupRequest, json_out: bool) -> Result<ExitCode> {
    let (loaded, repo) = open(g)?;
    let (snap, outcomes) = runtime()?.block_on(controller::backup(&repo, &loaded, &req))?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"snapshot": snap, "plugins": outcomes})).expect("serialises")
        );
    } else {
        let rows: Vec<Vec<String>> = outcomes
            .iter()
            .map(|o| {
                let prefix = format!("{}/", o.plugin);
                let items: Vec<_> = snap.items.iter().filter(|i| i.name.starts_with(&prefix)).collect();
                vec![
                    o.plugin.clone(),
                    o.kind.clone(),
                    if o.ok { "ok".into() } else { "FAILED".into() },
                    bytes(items.iter().map(|i| i.size).sum()),
                    bytes(items.iter().map(|i| i.stats.bytes_added).sum()),
                    format!("{:.1}s", o.duration_secs),
                ]
            })
            .collect();
        print_table(&["plugin", "kind", "status", "size", "added", "time"], &rows);
        println!(
            "snapshot {}: {}, {} logical, {} added",
            snap.name,
            if snap.is_complete() { "complete" } else { "FAILED" },
            bytes(snap.size()),
            bytes(snap.stats.bytes_added)
        );
    }
    if let Some(w) = snap.meta.get("warnings").and_then(|w| w.as_array()) {
        for w in w {
            eprintln!("warning: {}", w.as_str().unwrap_or_default());
        }
    }
    if let Status::Failed { reason } = &snap.status {
        eprintln!(
            "error: system backup {} failed and is kept as failed (never offered for restore): {reason}",
            snap.name
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn restore SNAPSHOT` without `--target`: the databases themselves.
/// What a system restore would do, in words: the snapshot, the databases and how.
pub fn restore_plan(g: &GlobalOpts, req: &RestoreRequest) -> Result<String> {
    let (loaded, repo) = open(g)?;
    let snap = repo.restorable_snapshot(&req.snapshot)?;
    let in_snapshot: Vec<String> = snap
        .meta
        .get("plugins")
        .and_then(|p| p.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let chosen: Vec<String> = match &req.plugins {
        Some(p) => p.clone(),
        None => loaded
            .plugins
            .iter()
            .map(|p| p.name().to_string())
            .filter(|n| in_snapshot.contains(n))
            .collect(),
    };
    let mut out = format!(
        "snapshot {} (taken {} on {}) onto: {}",
        snap.name,
        cairn_store::format_rfc3339(snap.time),
        snap.host,
        chosen.join(", ")
    );
    match req.mode {
        cairn_plugins::plugin::Mode::DisasterRecovery => {
            out.push_str("\ndisaster recovery: rebuilds them on fresh, empty nodes")
        }
        _ => {
            out.push_str(
                "\nin maintenance mode; what is there now is replaced, and what was added since the snapshot is lost",
            );
            if req.safety_snapshot {
                out.push_str("\nunless kept by the safety snapshot taken first");
            } else {
                out.push_str("\nno safety snapshot is taken (--no-safety-snapshot)");
            }
        }
    }
    Ok(out)
}

pub fn restore(g: &GlobalOpts, req: RestoreRequest, json_out: bool) -> Result<ExitCode> {
    let (loaded, repo) = open(g)?;
    let report = runtime()?.block_on(controller::restore(&repo, &loaded, &req))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
    } else {
        if let Some(s) = &report.safety_snapshot {
            println!("safety snapshot of what was replaced: {s}");
        }
        let rows: Vec<Vec<String>> = report
            .outcomes
            .iter()
            .map(|o| {
                vec![
                    o.plugin.clone(),
                    if o.ok { "restored".into() } else { "FAILED".into() },
                    o.detail.clone().or_else(|| o.error.clone()).unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["plugin", "status", "verification"], &rows);
        for (name, h) in &report.after {
            if !h.healthy {
                println!("after restore, {name} is unhealthy: {}", h.detail);
            }
        }
    }
    if !report.ok() {
        for o in report.outcomes.iter().filter(|o| !o.ok) {
            eprintln!(
                "error: restore of {} failed: {}",
                o.plugin,
                o.error.as_deref().unwrap_or("unhealthy")
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    // With --json, stdout holds the report alone; the summary line goes to stderr.
    let say = |line: String| {
        if json_out {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    say(format!(
        "restored {} from snapshot {}{}",
        report
            .outcomes
            .iter()
            .map(|o| o.plugin.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        report.snapshot,
        if req.mode == Mode::DisasterRecovery {
            " (disaster recovery)"
        } else {
            ""
        }
    ));
    Ok(ExitCode::SUCCESS)
}

/// Free bytes on the filesystem holding `path`, from `df`.
fn free_space(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// `cairn healthcheck`: databases, repository, newest snapshot, maintenance mode.
pub fn healthcheck(g: &GlobalOpts, json_out: bool) -> Result<ExitCode> {
    let loaded = g.require_config()?;
    let g2 = g.with_config(Some(&loaded));
    let rt = runtime()?;
    let mut checks: Vec<(String, Health)> = rt.block_on(controller::healthchecks(&loaded, &loaded.plugins))?;
    let mut newest_age = None;
    match g2.open_exact() {
        Ok(repo) => {
            let locks = repo.locks()?;
            let live: Vec<String> = locks
                .iter()
                .filter_map(|(_, l)| l.as_ref().ok())
                .filter(|l| !l.is_dead())
                .map(|l| l.describe())
                .collect();
            let free = repo.location().local_path().and_then(free_space);
            let mut detail = format!(
                "{} reachable, {} free",
                repo.location(),
                free.map(bytes).unwrap_or_else(|| "?".into())
            );
            if !live.is_empty() {
                detail.push_str(&format!("; in use: {}", live.join("; ")));
            }
            checks.push(("repository".into(), Health::ok(detail)));
            let now = cairn_store::now_unix();
            let newest = repo
                .snapshots()?
                .into_iter()
                .flatten()
                .filter(|s| s.is_complete() && s.meta.contains_key(controller::PLUGINS_META))
                .filter(|s| !s.tags.iter().any(|t| t == "safety"))
                .max_by_key(|s| s.time);
            let max_age = loaded
                .config
                .max_snapshot_age
                .as_deref()
                .and_then(|a| cairn_store::parse_duration(a).ok());
            match newest {
                Some(s) => {
                    let age = now - s.time;
                    newest_age = Some(age);
                    let detail = format!("{} taken {} ago", s.name, human_age(age));
                    checks.push((
                        "newest snapshot".into(),
                        match max_age {
                            Some(max) if age > max => {
                                Health::bad(format!("{detail}, more than max_snapshot_age ({})", human_age(max)))
                            }
                            _ => Health::ok(detail),
                        },
                    ));
                }
                None => checks.push(("newest snapshot".into(), Health::bad("no complete system snapshot yet"))),
            }
        }
        Err(e) => checks.push(("repository".into(), Health::bad(format!("{e:#}")))),
    }
    let maint = maintenance::status(&loaded)?;
    let maint_detail = match &maint {
        Some(s) => format!("ON since {} ({})", s.since, s.reason),
        None => "off".into(),
    };
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
    let healthy = checks.iter().all(|(_, h)| h.healthy);
    if json_out {
        let v = json!({
            "healthy": healthy,
            "checks": checks.iter().map(|(n, h)| json!({"name": n, "healthy": h.healthy, "detail": h.detail})).collect::<Vec<_>>(),
            "newest_snapshot_age_secs": newest_age,
            "maintenance": maint,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        let mut rows: Vec<Vec<String>> = checks
            .iter()
            .map(|(n, h)| {
                vec![
                    n.clone(),
                    if h.healthy { "ok" } else { "UNHEALTHY" }.into(),
                    h.detail.clone(),
                ]
            })
            .collect();
        rows.push(vec!["maintenance mode".into(), "-".into(), maint_detail]);
        print_table(&["check", "status", "detail"], &rows);
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `cairn reindex`: rebuild search indices and report document counts before and after.
pub fn reindex(g: &GlobalOpts, only: &[String], json_out: bool) -> Result<ExitCode> {
    let loaded = g.require_config()?;
    let results = runtime()?.block_on(controller::reindex(&loaded, only))?;
    let ok = results.iter().all(|(_, r)| r.is_ok());
    if json_out {
        let v: Vec<_> = results
            .iter()
            .map(|(p, r)| match r {
                Ok(v) => json!({"plugin": p, "ok": true, "indices": v}),
                Err(e) => json!({"plugin": p, "ok": false, "error": e.to_string()}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": ok, "plugins": v})).expect("serialises")
        );
    } else {
        let mut rows = Vec::new();
        for (p, r) in &results {
            match r {
                Ok(v) => rows.extend(v.iter().map(|x| {
                    vec![
                        p.clone(),
                        x.name.clone(),
                        format!("{} -> {}", x.from, x.to),
                        x.before.to_string(),
                        x.after.to_string(),
                    ]
                })),
                Err(e) => eprintln!("cairn: {p}: reindex failed: {e}"),
            }
        }
        if !rows.is_empty() {
            print_table(&["plugin", "name", "index", "docs before", "docs after"], &rows);
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `cairn maintenance on|off|status`.
pub fn maintenance_cmd(g: &GlobalOpts, action: &str) -> Result<ExitCode> {
    let loaded = g.require_config()?;
    let rt = runtime()?;
    match action {
        "on" => {
            if !rt.block_on(maintenance::enter(&loaded, "operator"))? {
                println!("maintenance mode was already on");
            } else {
                println!("maintenance mode on");
            }
        }
        "off" => {
            if maintenance::status(&loaded)?.is_none() {
                println!("maintenance mode was off; nothing to do");
            } else {
                rt.block_on(maintenance::leave(&loaded))?;
                println!("maintenance mode off");
            }
        }
        _ => match maintenance::status(&loaded)? {
            Some(s) if s.holder_gone() => println!(
                "maintenance mode ON since {} ({}), left by pid {}, which is gone",
                s.since, s.reason, s.pid
            ),
            Some(s) => println!("maintenance mode ON since {} ({}, pid {})", s.since, s.reason, s.pid),
            None => println!("maintenance mode off"),
        },
    }
    Ok(ExitCode::SUCCESS)
}
