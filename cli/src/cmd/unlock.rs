use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Remove locks of processes of this host that are provably gone (or, with --all, every lock:
/// only when you know no cairn runs anywhere on this repository).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove all locks, also those of running processes. Only when you know none is running.
    #[arg(long)]
    pub all: bool,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let removed = repo.unlock(a.all)?;
    for r in &removed {
        println!("removed {r}");
    }
    println!("{} lock(s) removed", removed.len());
    Ok(ExitCode::SUCCESS)
}
