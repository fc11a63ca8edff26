use std::process::ExitCode;

use anyhow::Result;
use cairn_store::{ItemKind, Status};

use crate::common::{bytes, print_table, GlobalOpts};

/// Show one snapshot: its items, sizes, what it added and how well it deduplicated.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub snapshot: String,
    /// Print the whole manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let s = repo.snapshot(&a.snapshot)?;
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["summary"] = crate::cmd::backup::summary_json(&s);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshot   {}", s.name);
    println!("time       {}", cairn_store::format_rfc3339(s.time));
    println!("host       {}", s.host);
    if !s.tags.is_empty() {
        println!("tags       {}", s.tags.join(", "));
    }
    match &s.status {
        Status::Complete => println!("status     complete"),
        Status::Failed { reason } => println!("status     FAILED: {reason}"),
    }
    println!("duration   {:.1} s", s.duration_secs);
    println!("size       {}", bytes(s.size()));
    println!("added      {}", bytes(s.stats.bytes_added));
    println!(
        "chunks     {} total: {} stored whole, {} as deltas, {} exact duplicates",
        s.stats.chunks,
        s.stats.chunks_new - s.stats.chunks_delta,
        s.stats.chunks_delta,
        s.stats.chunks_dup()
    );
    println!("dedup      {:.1}x (logical size / bytes added)", s.dedup_ratio());
    println!();
    let rows: Vec<Vec<String>> = s
        .items
        .iter()
        .map(|i| {
            let kind = match &i.kind {
                ItemKind::Stream { .. } => "stream".to_string(),
                ItemKind::Tree {
                    files, dirs, symlinks, ..
                } => format!("tree ({files} files, {dirs} dirs, {symlinks} links)"),
            };
            vec![
                i.name.clone(),
                kind,
                bytes(i.size),
                bytes(i.stats.bytes_added),
                format!(
                    "{}/{}/{}",
                    i.stats.chunks_new - i.stats.chunks_delta,
                    i.stats.chunks_delta,
                    i.stats.chunks
                ),
                format!("{:.1} s", i.duration_secs),
            ]
        })
        .collect();
    print_table(
        &["ITEM", "KIND", "SIZE", "ADDED", "WHOLE/DELTA/CHUNKS", "DURATION"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
