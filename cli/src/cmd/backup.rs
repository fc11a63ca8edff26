use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use cairn_store::{BackupOptions, Snapshot};

use crate::common::{bytes, GlobalOpts};

/// Back up files and directories, standard input, or a command's output into a new snapshot.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot name (default: the UTC start time, e.g. 2026-11-22T18:38:43Z).
    #[arg(long)]
    pub name: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Back up standard input as an item with this name.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["paths", "stdin_from_command"])]
    pub stdin: Option<String>,
    /// Back up the standard output of the command after `--` as an item with this name.
    #[arg(long, value_name = "NAME", requires = "command", conflicts_with = "paths")]
    pub stdin_from_command: Option<String>,
    /// Keep an empty stream (--stdin, --stdin-from-command). Without it an empty stream is
    /// refused: it is what a dump that failed in a pipe leaves.
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the snapshot summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Back up every database and file set in the configuration as one system snapshot.
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "paths"])]
    pub system: bool,
    /// With --system: only these configured plugins (comma-separated names).
    #[arg(long, value_delimiter = ',', requires = "system")]
    pub db: Option<Vec<String>>,
    /// With --system: run in maintenance mode.
    #[arg(long, requires = "system")]
    pub maintenance: bool,
    /// Files or directories to back up.
    pub paths: Vec<PathBuf>,
    /// The command for --stdin-from-command.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// The item name for a path: the path without leading `./` or `/` (`root` for `/`); a path that
/// climbs (`../x`) is named by its absolute form, so no item name can point outside a target.
pub fn item_name(p: &Path) -> String {
    let s = p.to_string_lossy();
    let t = s.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/');
    if t.split('/').any(|c| c == ".." || c == ".") {
        if let Ok(abs) = p.canonicalize() {
            return item_name(&abs);
        }
    }
    if t.is_empty() || t == "." {
        p.canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "root".into())
    } else {
        t.to_string()
    }
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    if a.system {
        let req = cairn_plugins::controller::BackupRequest {
            name: a.name,
            tags: a.tags,
            plugins: a.db,
            maintenance: a.maintenance,
            progress: cairn_plugins::controller::Reporter(crate::progress::for_system(g.quiet)),
        };
        return super::system::backup(g, req, a.json);
    }
    if a.stdin.is_none() && a.stdin_from_command.is_none() && a.paths.is_empty() {
        bail!("nothing to back up: give PATHs, --stdin NAME, --stdin-from-command NAME -- CMD... or --system");
    }
    if !a.command.is_empty() && a.stdin_from_command.is_none() {
        bail!("a command after `--` needs --stdin-from-command NAME");
    }
    for p in &a.paths {
        if std::fs::symlink_metadata(p).is_err() {
            bail!("source {}: no such file or directory", p.display());
        }
    }
    let repo = g.open()?;
    let opts = BackupOptions {
        name: a.name.clone(),
        tags: a.tags.clone(),
        host: None,
    };
    let backup = repo.backup(opts, g.progress())?;
    let empty = |name: &str, what: &str| {
        anyhow::anyhow!(
            "{what} was empty, so nothing was committed (a dump that failed in a pipe looks like \
             this); pass --allow-empty to keep an empty item {name:?}"
        )
    };
    if let Some(name) = &a.stdin {
        let item = backup.add_stream(name, std::io::stdin().lock())?;
        if item.size == 0 && !a.allow_empty {
            return Err(empty(name, "standard input"));
        }
    } else if let Some(name) = &a.stdin_from_command {
        let item = backup.add_command_output(name, &a.command)?;
        if item.size == 0 && !a.allow_empty {
            return Err(empty(name, "the command's output"));
        }
    } else {
        for p in &a.paths {
            backup.add_tree(&item_name(p), p)?;
        }
    }
    for w in backup.warnings() {
        eprintln!("warning: {w}");
    }
    let snap = backup.commit()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary_json(&snap))?);
    } else {
        println!(
            "snapshot {:?}: {} item(s), {} read, {} added ({} new of {} chunks, {} as deltas), {:.1} s",
            snap.name,
            snap.items.len(),
            bytes(snap.size()),
            bytes(snap.stats.bytes_added),
            snap.stats.chunks_new,
            snap.stats.chunks,
            snap.stats.chunks_delta,
            snap.duration_secs
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn summary_json(s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "time": cairn_store::format_rfc3339(s.time),
        "host": s.host,
        "tags": s.tags,
        "status": s.status,
        "items": s.items.iter().map(|i| serde_json::json!({
            "name": i.name, "size": i.size, "stats": i.stats, "duration_secs": i.duration_secs,
        })).collect::<Vec<_>>(),
        "size": s.size(),
        "bytes_added": s.stats.bytes_added,
        "chunks": s.stats.chunks,
        "chunks_new": s.stats.chunks_new,
        "chunks_delta": s.stats.chunks_delta,
        "chunks_dup": s.stats.chunks_dup(),
        "duration_secs": s.duration_secs,
    })
}
