//! Whole-platform operations over the configured plugins: system backup and restore,
//! healthcheck and maintenance mode. `cairn` and `cso_backupnrestore` both call these.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_plugins::config::Loaded;
use cairn_plugins::controller::{self, BackupRequest, RestoreRequest};
use cairn_plugins::ops::{health, maintenance};
use cairn_plugins::plugin::Mode;
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

/// [`open`] for a run that uses the hosts: their agents are connected in the background on
/// `rt` while the repository is unlocked (its key derivation takes a good part of a second;
/// so does an SSH handshake).
fn open_connecting(g: &GlobalOpts, rt: &tokio::runtime::Runtime) -> Result<(Loaded, Repository)> {
    let loaded = g.require_config()?;
    {
        let _in = rt.enter();
        loaded.hosts.connect_in_background();
    }
    let repo = g.with_config(Some(&loaded)).open_exact()?;
    Ok((loaded, repo))
}

/// The host whose agent sent an item (none for this host).
fn item_host(i: &cairn_store::Item) -> Option<&str> {
    i.meta
        .get(cairn_store::write::foreign::HOST_META)
        .and_then(|h| h.as_str())
}

/// `cairn backup --system`: every configured plugin (or `dbs`) into one snapshot.
pub fn backup(g: &GlobalOpts, req: BackupRequest, json_out: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    let (loaded, repo) = open_connecting(g, &rt)?;
    let (snap, outcomes) = rt.block_on(controller::backup(&repo, &loaded, &req))?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"snapshot": snap, "plugins": outcomes})).expect("serialises")
        );
    } else {
        // Per plugin and host: what was read, what went over the wire from the host's agent
        // (none for this host), what was stored, and the rate.
        let mut rows: Vec<Vec<String>> = Vec::new();
        for o in &outcomes {
            let prefix = format!("{}/", o.plugin);
            let items: Vec<_> = snap.items.iter().filter(|i| i.name.starts_with(&prefix)).collect();
            // Items a plugin stored from the controller (a query's result, say) count under
            // its host when it has one; under "local" when it runs here.
            let mut hosts: Vec<&str> = items.iter().filter_map(|i| item_host(i)).collect();
            hosts.sort();
            hosts.dedup();
            let fallback = match hosts.as_slice() {
                [one] => *one,
                _ => "local",
            };
            let mut by_host: std::collections::BTreeMap<&str, Vec<&cairn_store::Item>> = Default::default();
            for i in &items {
                by_host.entry(item_host(i).unwrap_or(fallback)).or_default().push(i);
            }
            if by_host.is_empty() {
                by_host.insert("-", Vec::new());
            }
            for (h, on) in by_host {
                let size: u64 = on.iter().map(|i| i.size).sum();
                let wire: Option<u64> = on
                    .iter()
                    .filter_map(|i| i.meta.get(cairn_plugins::plugin::WIRE_META).and_then(|w| w.as_u64()))
                    .reduce(|a, b| a + b);
                let secs: f64 = on.iter().map(|i| i.duration_secs).sum();
                rows.push(vec![
                    o.plugin.clone(),
                    o.kind.clone(),
                    if o.ok { "ok".into() } else { "FAILED".into() },
                    h.to_string(),
                    bytes(size),
                    wire.map_or("-".into(), bytes),
                    bytes(on.iter().map(|i| i.stats.bytes_added).sum()),
                    format!("{:.1}s", o.duration_secs),
                    if secs > 0.0 {
                        format!("{}/s", bytes((size as f64 / secs) as u64))
                    } else {
                        "-".into()
                    },
                ]);
            }
        }
        print_table(
            &[
                "plugin", "kind", "status", "host", "size", "sent", "added", "time", "rate",
            ],
            &rows,
        );
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
    let rt = runtime()?;
    let (loaded, repo) = open_connecting(g, &rt)?;
    let report = rt.block_on(controller::restore(&repo, &loaded, &req))?;
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
        if !report.transfers.is_empty() {
            // Per host and item: what went to its agent, and how fast.
            let rows: Vec<Vec<String>> = report
                .transfers
                .iter()
                .map(|t| {
                    vec![
                        t.host.clone(),
                        t.item.clone(),
                        bytes(t.bytes),
                        format!("{:.1}s", t.secs),
                        format!("{}/s", bytes((t.bytes as f64 / t.secs.max(1e-3)) as u64)),
                    ]
                })
                .collect();
            print_table(&["host", "item", "sent", "time", "rate"], &rows);
        }
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

/// `cairn healthcheck`: databases, repository, newest snapshot, maintenance mode.
pub fn healthcheck(g: &GlobalOpts, json_out: bool) -> Result<ExitCode> {
    let loaded = g.require_config()?;
    let repo = g.with_config(Some(&loaded)).open_exact().map_err(|e| format!("{e:#}"));
    let health = runtime()?.block_on(health::system_health(&loaded, repo))?;
    let healthy = health.healthy();
    if json_out {
        let v = json!({
            "healthy": healthy,
            "checks": health.checks.iter().map(|(n, h)| json!({"name": n, "healthy": h.healthy, "detail": h.detail})).collect::<Vec<_>>(),
            "newest_snapshot_age_secs": health.newest_snapshot_age_secs,
            "maintenance": health.maintenance,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        let mut rows: Vec<Vec<String>> = health
            .checks
            .iter()
            .map(|(n, h)| {
                vec![
                    n.clone(),
                    if h.healthy { "ok" } else { "UNHEALTHY" }.into(),
                    h.detail.clone(),
                ]
            })
            .collect();
        let maint = match &health.maintenance {
            Some(s) => format!("ON since {} ({})", s.since, s.reason),
            None => "off".into(),
        };
        rows.push(vec!["maintenance mode".into(), "-".into(), maint]);
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
