use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Turn maintenance mode on or off (runs the configured commands), or show it.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_parser = ["on", "off", "status"])]
    pub action: String,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    super::system::maintenance_cmd(g, &a.action)
}
