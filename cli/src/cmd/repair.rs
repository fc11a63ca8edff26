use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Repair commands (each takes an exclusive lock). After `cairn check` reports damage: `repair
/// packs`, then `repair snapshots`, then a backup stores again what was lost.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Rebuild the local index cache from the pack files, without opening the old cache.
    Index,
    /// Read every pack; delete packs whose trailer is unreadable and rewrite packs with damaged
    /// blobs without them, so the next backup stores those blobs again.
    Packs(Opts),
    /// Delete unreadable manifests and deletion markers; write snapshots that need lost data
    /// again without the lost items (named in the snapshot's `repaired` meta).
    Snapshots(Opts),
}

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalOpts, c: Command) -> Result<ExitCode> {
    let repo = g.open()?;
    match c {
        Command::Index => {
            let stats = repo.repair_index()?;
            println!("index rebuilt from {} pack(s)", stats.packs_added);
            for (id, e) in &stats.unreadable {
                println!("error: pack {id} left out: {e} (`cairn repair packs` removes it)");
            }
            Ok(if stats.unreadable.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Packs(o) => {
            let r = repo.repair_packs(o.dry_run, g.progress().as_ref())?;
            if o.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verb = if o.dry_run { "would remove" } else { "removed" };
                for p in &r.packs_removed {
                    println!("{verb} {p}");
                }
                println!(
                    "read {} pack(s); {verb} {} pack(s) and {} damaged blob(s), copied {} intact blob(s) into {} new pack(s)",
                    r.packs_read,
                    r.packs_removed.len(),
                    r.blobs_removed,
                    r.blobs_copied,
                    r.packs_written
                );
                if !r.damaged_snapshots.is_empty() {
                    println!(
                        "snapshots that still need lost data: {} (a backup of the same data stores it again; \
                         `cairn repair snapshots` cuts what is lost)",
                        r.damaged_snapshots.join(", ")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots(o) => {
            let r = repo.repair_snapshots(o.dry_run)?;
            if o.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verb = if o.dry_run { "would remove" } else { "removed" };
                for m in &r.manifests_removed {
                    println!("{verb} unreadable manifest snapshots/{m}");
                }
                for m in &r.markers_removed {
                    println!("{verb} unreadable deletion marker deletions/{m}");
                }
                for (name, lost) in &r.snapshots_cut {
                    println!(
                        "{} {name:?} without its lost item(s): {}",
                        if o.dry_run { "would write" } else { "wrote" },
                        lost.join(", ")
                    );
                }
                if r.manifests_removed.is_empty() && r.markers_removed.is_empty() && r.snapshots_cut.is_empty() {
                    println!("nothing to repair");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
