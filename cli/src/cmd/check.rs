use std::process::ExitCode;

use anyhow::{bail, Result};
use cairn_store::{CheckOptions, ReadData};

use crate::common::GlobalOpts;

/// Verify the repository: packs, index and every snapshot's references; optionally all data.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read and verify every blob of every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify a random share of the packs, e.g. `10%`.
    #[arg(long, value_name = "N%")]
    pub read_data_subset: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("--read-data-subset {s:?}: expected a percentage like 10%"))?;
    if !(v > 0.0 && v <= 100.0) {
        bail!("--read-data-subset {s:?}: must be more than 0% and at most 100%");
    }
    Ok(v)
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::Subset(parse_percent(s)?),
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = g.open()?;
    let report = repo.check(&CheckOptions { read_data }, g.progress().as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            println!("error: {e}");
        }
        println!(
            "checked {} snapshot(s), {} pack(s); read {} pack(s), verified {} blob(s); deepest delta chain {}",
            report.snapshots, report.packs, report.packs_read, report.blobs_verified, report.deepest_delta_chain
        );
        if report.ok() {
            println!("no errors found");
        } else {
            println!(
                "{} error(s); damaged snapshots: {}",
                report.errors.len(),
                report.damaged_snapshots.join(", ")
            );
            println!(
                "to repair: `cairn repair packs` takes damaged data out (the next backup stores it \
                 again), then `cairn repair snapshots` cuts what is lost out of the snapshots"
            );
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages() {
        assert_eq!(super::parse_percent("10%").unwrap(), 10.0);
        assert!(super::parse_percent("0%").is_err());
        assert!(super::parse_percent("150").is_err());
        assert!(super::parse_percent("x").is_err());
    }
}
