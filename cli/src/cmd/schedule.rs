use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_plugins::ops::schedule::{self, CronExpr, RunGuard};
use cairn_store::now_unix;

use crate::common::GlobalOpts;

/// Scheduled backups: the system cron entry, one scheduled run, or a foreground scheduler.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Install (or replace) the cron entry `/etc/cron.d/cairn` (`CAIRN_CRON_DIR` overrides).
    Install(When),
    /// Remove the cron entry.
    Remove,
    /// Print the cron entry, if any.
    Show,
    /// One scheduled run: back up everything as `DAILY/<UTC time>`, apply `[retention]`, log to
    /// `<state_dir>/schedule.log`. Skips (and logs) if the previous run is still going.
    Fire(FireArgs),
    /// Run in the foreground, firing on the cron expression (UTC), for hosts without cron.
    Run(When),
}

#[derive(clap::Args, Debug)]
pub struct When {
    /// Cron expression: `m h dom mon dow` (quoted) or `m-h-dom-mon-dow`.
    #[arg(long, value_parser = parse_cron)]
    pub cron: CronExpr,
    /// Scheduled runs put the platform in maintenance mode.
    #[arg(long)]
    pub maintenance: bool,
}

#[derive(clap::Args, Debug)]
pub struct FireArgs {
    /// Put the platform in maintenance mode during the backup.
    #[arg(long)]
    pub maintenance: bool,
}

pub fn parse_cron(s: &str) -> Result<CronExpr, String> {
    CronExpr::parse(s)
}

pub fn run(g: &GlobalOpts, c: Command) -> Result<ExitCode> {
    match c {
        Command::Install(w) => install(g, &w.cron, w.maintenance),
        Command::Remove => {
            let dir = schedule::cron_dir();
            if schedule::remove(&dir).with_context(|| format!("removing {}", schedule::cron_file(&dir).display()))? {
                println!("removed {}", schedule::cron_file(&dir).display());
            } else {
                println!(
                    "no scheduled backup installed ({} absent)",
                    schedule::cron_file(&dir).display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show => {
            let f = schedule::cron_file(&schedule::cron_dir());
            match std::fs::read_to_string(&f) {
                Ok(t) => print!("{t}"),
                Err(_) => println!("no scheduled backup installed ({} absent)", f.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fire(a) => fire(g, a.maintenance),
        Command::Run(w) => loop {
            let now = now_unix();
            let next = w
                .cron
                .next_after(now)
                .ok_or_else(|| anyhow::anyhow!("{} never fires", w.cron.crontab()))?;
            eprintln!(
                "cairn: next scheduled backup at {} ({})",
                cairn_store::format_rfc3339(next),
                w.cron.crontab()
            );
            std::thread::sleep(std::time::Duration::from_secs((next - now).max(0) as u64));
            let _ = fire(g, w.maintenance);
        },
    }
}

/// Whether a cron daemon process runs here (by the names of the common ones in `/proc`).
fn cron_daemon_runs() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true; // cannot tell: do not warn
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm"))
            .is_ok_and(|c| matches!(c.trim(), "cron" | "crond" | "cronie" | "busybox" | "fcron" | "dcron"))
    })
}

/// Writes the cron entry; the configuration must load (a schedule that cannot run is refused).
pub fn install(g: &GlobalOpts, cron: &CronExpr, maintenance: bool) -> Result<ExitCode> {
    let loaded = g.require_config()?;
    let config = std::fs::canonicalize(&loaded.path).unwrap_or(loaded.path.clone());
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    // The entry runs `cairn`, which sits beside `cso_backupnrestore`.
    let cairn: PathBuf = exe.with_file_name("cairn");
    if !cairn.is_file() {
        anyhow::bail!("{} not found: the cron entry would run nothing", cairn.display());
    }
    for p in [&cairn, &config] {
        if p.to_string_lossy().contains('%') {
            anyhow::bail!("{}: cron treats % as a newline; use a path without it", p.display());
        }
    }
    if !cron_daemon_runs() {
        eprintln!(
            "warning: no cron daemon (cron, crond, cronie, busybox crond) runs on this host: the entry \
             will not fire until one does (or run `cairn schedule run --cron EXPR` in the foreground)"
        );
    }
    let dir = schedule::cron_dir();
    let path = schedule::install(&dir, cron, &cairn, &config, maintenance)
        .with_context(|| format!("writing {}", schedule::cron_file(&dir).display()))?;
    println!(
        "scheduled backup installed in {}: `{}`{} (UTC on hosts without a time zone), named DAILY/<UTC time>; log: {}",
        path.display(),
        cron.crontab(),
        if maintenance { " in maintenance mode" } else { "" },
        loaded.state_dir().join("schedule.log").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// One scheduled run; every outcome goes to the schedule log.
pub fn fire(g: &GlobalOpts, maintenance: bool) -> Result<ExitCode> {
    let loaded = g.require_config()?;
    let state = loaded.state_dir();
    let log = |line: &str| {
        if let Err(e) = schedule::log(&state, line) {
            eprintln!("cairn: cannot write {}: {e}", state.join("schedule.log").display());
        }
        eprintln!("cairn: {line}");
    };
    let _guard = match RunGuard::acquire(&state).context("taking the scheduled-run slot")? {
        Ok(g) => g,
        Err(pid) => {
            log(&format!(
                "skipped: the previous scheduled run (pid {pid}) is still running"
            ));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let name = schedule::run_name(now_unix());
    log(&format!(
        "start {name}{}",
        if maintenance { " (maintenance mode)" } else { "" }
    ));
    let result = (|| -> Result<ExitCode> {
        let repo = g.with_config(Some(&loaded)).open_exact()?;
        let rt = super::system::runtime()?;
        let complete = schedule::run_once(&rt, &repo, &loaded, &name, maintenance, &log)?;
        Ok(if complete { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })();
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            log(&format!("FAILED {name}: {e:#}"));
            Err(e)
        }
    }
}
