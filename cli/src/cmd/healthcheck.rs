use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Check every configured database, the repository, the newest snapshot's age and maintenance
/// mode; exits non-zero when anything is unhealthy.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    super::system::healthcheck(g, a.json)
}
