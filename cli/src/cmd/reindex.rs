use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Rebuild the configured Elasticsearch indices: `_reindex` into fresh indices, compare
/// document counts, then switch the aliases over.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Aliases or indices to rebuild (default: `reindex` in the configuration).
    #[arg(long, value_delimiter = ',')]
    pub index: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    super::system::reindex(g, &a.index, a.json)
}
