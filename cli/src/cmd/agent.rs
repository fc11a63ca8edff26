use std::process::ExitCode;

use anyhow::{anyhow, Result};

use crate::common::GlobalOpts;

/// Serve a controller on stdin and stdout (started by the controller over SSH; see README,
/// "Several hosts"). Opens no repository and needs no key: it runs the commands and touches
/// the files of this host that the controller's plugins ask for.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_g: &GlobalOpts, _a: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(cairn_plugins::remote::agent::serve_stdio())
        .map_err(|e| anyhow!("agent: {e}"))?;
    // Children still running were killed with their tasks; do not wait for stray blocking
    // reads of stdin.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
