use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use cairn_store::RestoreOptions;

use crate::common::{bytes, GlobalOpts};

/// Restore a system snapshot onto the configured databases (in maintenance mode), or, with
/// --target, a snapshot's items into a directory.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot name, or `latest` (the newest complete snapshot that is not a safety snapshot).
    pub snapshot: String,
    /// Directory to restore items into; each lands in TARGET/<item name>.
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// Restore into a directory that is not empty.
    #[arg(long, requires = "target")]
    pub force: bool,
    /// Items to restore with --target (default: all).
    #[arg(requires = "target")]
    pub items: Vec<String>,
    /// Only these databases / plugins of the system snapshot (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "target")]
    pub db: Option<Vec<String>>,
    /// Rebuild onto fresh, empty nodes (skips the safety snapshot and checks of old nodes).
    #[arg(long, conflicts_with = "target")]
    pub disaster_recovery: bool,
    /// Do not back up what a restore overwrites first.
    #[arg(long, conflicts_with = "target")]
    pub no_safety_snapshot: bool,
    /// Show what would be restored onto which databases; change nothing.
    #[arg(long, conflicts_with = "target")]
    pub dry_run: bool,
    /// Do not ask before restoring onto live databases (asked only on a terminal).
    #[arg(long, short = 'y', conflicts_with = "target")]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "target")]
    pub json: bool,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let Some(target) = a.target else {
        let req = cairn_plugins::controller::RestoreRequest {
            snapshot: a.snapshot,
            plugins: a.db,
            mode: if a.disaster_recovery {
                cairn_plugins::plugin::Mode::DisasterRecovery
            } else {
                cairn_plugins::plugin::Mode::Normal
            },
            safety_snapshot: !a.no_safety_snapshot,
            progress: cairn_plugins::controller::Reporter(crate::progress::for_system(g.quiet)),
        };
        if a.dry_run || (!a.yes && std::io::IsTerminal::is_terminal(&std::io::stdin())) {
            let plan = super::system::restore_plan(g, &req)?;
            println!("{plan}");
            if a.dry_run {
                return Ok(ExitCode::SUCCESS);
            }
            eprint!("Restore onto these live databases? [y/N] ");
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
                eprintln!("nothing was restored");
                return Ok(ExitCode::FAILURE);
            }
        }
        return super::system::restore(g, req, a.json);
    };
    let repo = g.open()?;
    let opts = RestoreOptions {
        items: a.items,
        force: a.force,
    };
    let items = repo.restore(&a.snapshot, &target, &opts, g.progress().as_ref())?;
    let total: u64 = items.iter().map(|i| i.size).sum();
    println!(
        "restored {} item(s), {} into {}",
        items.len(),
        bytes(total),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}
