use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Repair commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Rebuild the local index cache from the pack files (takes an exclusive lock).
    Index,
}

pub fn run(g: &GlobalOpts, c: Command) -> Result<ExitCode> {
    match c {
        Command::Index => {
            let repo = g.open()?;
            let stats = repo.repair_index()?;
            println!("index rebuilt from {} pack(s)", stats.packs_added);
            for (id, e) in &stats.unreadable {
                println!("error: pack {id} left out: {e}");
            }
            Ok(if stats.unreadable.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
