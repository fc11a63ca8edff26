use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::common::GlobalOpts;

/// Write one item of a snapshot (a stream or a single file) to standard output.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub snapshot: String,
    pub item: String,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    repo.dump(&a.snapshot, &a.item, &mut out, &cairn_store::NoProgress)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
