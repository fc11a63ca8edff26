use std::process::ExitCode;

use anyhow::Result;
use cairn_store::Status;

use crate::common::{bytes, print_table, GlobalOpts};

/// List snapshots, oldest first.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots taken on this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut unreadable = 0;
    for s in repo.snapshots()? {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                eprintln!("warning: {e}");
                unreadable += 1;
                continue;
            }
        };
        if (!a.tags.is_empty() && !s.tags.iter().any(|t| a.tags.contains(t)))
            || (!a.hosts.is_empty() && !a.hosts.contains(&s.host))
        {
            continue;
        }
        let status = match &s.status {
            Status::Complete => "complete".to_string(),
            Status::Failed { .. } => "failed".to_string(),
        };
        rows.push(vec![
            s.name.clone(),
            cairn_store::format_rfc3339(s.time),
            s.host.clone(),
            status,
            s.items.len().to_string(),
            bytes(s.size()),
            bytes(s.stats.bytes_added),
            s.tags.join(","),
        ]);
        json.push(crate::cmd::backup::summary_json(&s));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_table(
            &["NAME", "TIME", "HOST", "STATUS", "ITEMS", "SIZE", "ADDED", "TAGS"],
            &rows,
        );
    }
    Ok(if unreadable > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
