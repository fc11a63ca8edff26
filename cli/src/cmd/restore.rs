use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use cairn_store::RestoreOptions;

use crate::common::{bytes, GlobalOpts};

/// Restore a snapshot's items (all, or those named) into a directory.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub snapshot: String,
    /// Directory to restore into; each item lands in TARGET/<item name>.
    #[arg(long)]
    pub target: PathBuf,
    /// Restore into a directory that is not empty.
    #[arg(long)]
    pub force: bool,
    /// Items to restore (default: all).
    pub items: Vec<String>,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let opts = RestoreOptions {
        items: a.items,
        force: a.force,
    };
    let items = repo.restore(&a.snapshot, &a.target, &opts, g.progress().as_ref())?;
    let total: u64 = items.iter().map(|i| i.size).sum();
    println!(
        "restored {} item(s), {} into {}",
        items.len(),
        bytes(total),
        a.target.display()
    );
    Ok(ExitCode::SUCCESS)
}
