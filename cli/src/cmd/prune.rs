use std::process::ExitCode;

use anyhow::{bail, Result};
use cairn_store::{PruneOptions, PruneReport};

use crate::common::{bytes, GlobalOpts};

/// Delete data no snapshot needs: removes failed snapshots, deletes packs with nothing live and
/// repacks packs that are mostly dead. Runs alone (backups wait for it).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a pack when less than this share of it is live (0-100).
    #[arg(long, value_name = "PERCENT", default_value_t = 50.0)]
    pub repack_below: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
        "{verb} delete {} pack(s), repack {} pack(s) ({} copied into {} new), leaving {}",
        r.packs_deleted,
        r.packs_repacked,
        bytes(r.bytes_copied),
        r.packs_written,
        bytes(r.bytes_after)
    );
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    if !(0.0..=100.0).contains(&a.repack_below) {
        bail!("--repack-below {}: must be between 0 and 100", a.repack_below);
    }
    let repo = g.open()?;
    let opts = PruneOptions {
        dry_run: a.dry_run,
        repack_below: a.repack_below / 100.0,
    };
    let r = repo.prune(&opts, g.progress().as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print(&r);
    }
    Ok(ExitCode::SUCCESS)
}
