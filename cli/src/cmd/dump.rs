use std::io::Write;
use std::os::fd::AsFd;
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
    // Straight to descriptor 1: content comes in segments of megabytes, written with one
    // `writev` each; Rust's stdout would look for line ends in them and copy the tails.
    let stdout = std::io::stdout().lock();
    let mut out = std::fs::File::from(stdout.as_fd().try_clone_to_owned()?);
    repo.dump(&a.snapshot, &a.item, &mut out, &cairn_store::NoProgress)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
