use std::process::ExitCode;

use anyhow::{bail, Result};
use cairn_store::{format_rfc3339, Decision, Policy, PruneOptions};

use crate::common::{print_table, GlobalOpts};

/// Remove snapshots: the named ones, or those a retention policy does not keep (failed
/// snapshots are never kept). Data goes with the next `prune` (or `--prune`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots to forget by name (instead of a policy).
    pub names: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Show what would go and why each kept snapshot is kept; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune right after forgetting.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: how long packs stay marked before a prune deletes them (see `cairn prune`).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = super::prune::parse_grace)]
    pub grace_period: std::time::Duration,
    /// Print the decisions as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot up to this much older than the newest (7d, 36h, 2w, 1y6m).
    #[arg(long, value_name = "DURATION", value_parser = parse_within)]
    pub keep_within: Option<i64>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
}

fn parse_within(s: &str) -> Result<i64, String> {
    cairn_store::parse_duration(s)
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: self.keep_tag.clone(),
        }
    }
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let policy = a.policy.policy();
    let decisions = if !a.names.is_empty() {
        if !policy.is_empty() {
            bail!("give snapshot names or keep rules, not both");
        }
        for n in &a.names {
            if !repo.snapshot_exists(n)? {
                bail!("no snapshot named {n:?}");
            }
        }
        if !a.dry_run {
            repo.forget(&a.names)?;
        }
        a.names
            .iter()
            .map(|n| Decision {
                name: n.clone(),
                time: 0,
                keep: false,
                reasons: vec!["named".into()],
            })
            .collect()
    } else {
        repo.forget_by_policy(&policy, a.dry_run, None)?
    };
    let forgotten = decisions.iter().filter(|d| !d.keep).count();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&decisions)?);
    } else {
        let rows: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    if d.time == 0 {
                        String::new()
                    } else {
                        format_rfc3339(d.time)
                    },
                    if d.keep { "keep" } else { "forget" }.into(),
                    d.reasons.join(", "),
                ]
            })
            .collect();
        print_table(&["snapshot", "time", "action", "why"], &rows);
        println!(
            "{} {forgotten} of {} snapshot(s)",
            if a.dry_run { "would forget" } else { "forgot" },
            decisions.len()
        );
    }
    if a.prune && !a.dry_run {
        let opts = PruneOptions {
            grace: a.grace_period,
            ..Default::default()
        };
        let r = repo.prune(&opts, g.progress().as_ref())?;
        if !a.json {
            super::prune::print(&r);
        }
    }
    Ok(ExitCode::SUCCESS)
}
