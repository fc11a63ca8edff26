use std::process::ExitCode;

use anyhow::{bail, Result};
use cairn_store::{PruneOptions, PruneReport};

use crate::common::{bytes, GlobalOpts};

/// Delete data no snapshot needs: removes failed snapshots, marks packs with nothing live (and
/// repacks packs that are mostly dead), and deletes packs marked by an earlier prune once the
/// grace period has passed and no backup running at marking time is still running. Runs beside
/// backups; restores, checks and other prunes wait for it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a pack when less than this share of it is live (0-100).
    #[arg(long, value_name = "PERCENT", default_value_t = 50.0)]
    pub repack_below: f64,
    /// How long a pack stays marked before a later prune deletes it (`0` deletes in this run
    /// what no running backup may need); e.g. 30m, 1h, 2d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_grace)]
    pub grace_period: std::time::Duration,
    /// Leave delta chains as backups wrote them. By default prune stores the newest version of
    /// each item without deltas (keyframes) and older versions as deltas against newer ones, so
    /// the newest restores fastest.
    #[arg(long)]
    pub no_keyframes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `0`, or a number with `s`, `m` (minutes), `h` or `d`.
pub fn parse_grace(s: &str) -> std::result::Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a grace period like 0, 90s, 30m, 1h or 2d");
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).map(std::time::Duration::from_secs).ok_or_else(bad)
}

pub fn print(r: &PruneReport) {
    let verb = if r.dry_run { "would" } else { "did" };
    if !r.failed_snapshots.is_empty() {
        println!(
            "failed snapshots removed{}: {}",
            if r.dry_run { " (planned)" } else { "" },
            r.failed_snapshots.join(", ")
        );
    }
    println!(
        "{} snapshot(s) kept, {} live blob(s); {} pack(s), {} before",
        r.snapshots_kept,
        r.live_blobs,
        r.packs_before,
        bytes(r.bytes_before)
    );
    println!(
        "{verb} delete {} pack(s) ({}), mark {} pack(s) ({}) for a later prune, repack {} pack(s) ({} copied into {} new), leaving {}",
        r.packs_deleted,
        bytes(r.bytes_deleted),
        r.packs_marked,
        bytes(r.bytes_marked),
        r.packs_repacked,
        bytes(r.bytes_copied),
        r.packs_written,
        bytes(r.bytes_after)
    );
    if r.keyframes + r.reverse_deltas > 0 {
        println!(
            "{verb} store {} chunk(s) of the newest versions whole and {} older one(s) as reverse deltas ({})",
            r.keyframes,
            r.reverse_deltas,
            bytes(r.bytes_rewritten)
        );
    }
    if r.packs_waiting > 0 {
        println!(
            "{} marked pack(s) ({}) wait: {}",
            r.packs_waiting,
            bytes(r.bytes_waiting),
            r.waiting.join("; ")
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    if !(0.0..=100.0).contains(&a.repack_below) {
        bail!("--repack-below {}: must be between 0 and 100", a.repack_below);
    }
    let repo = g.open()?;
    let opts = PruneOptions {
        dry_run: a.dry_run,
        repack_below: a.repack_below / 100.0,
        grace: a.grace_period,
        keyframes: !a.no_keyframes,
    };
    let r = repo.prune(&opts, g.progress().as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print(&r);
    }
    Ok(ExitCode::SUCCESS)
}
