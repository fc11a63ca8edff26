use std::process::ExitCode;

use anyhow::Result;
use cairn_store::{ChunkerParams, InitOptions, Repository};

use crate::common::GlobalOpts;

/// Create a new repository (the directory must be absent or empty).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Average chunk size in KiB (a power of two; min is a quarter, max four times it).
    #[arg(long, default_value_t = cairn_store::chunker::DEFAULT_AVG / 1024)]
    pub chunk_avg_kib: u32,
    /// zstd compression level for new data (1-22).
    #[arg(long, default_value_t = cairn_store::config::DEFAULT_COMPRESSION)]
    pub compression: i32,
    /// Pack files are closed at this size, in MiB.
    #[arg(long, default_value_t = 32.0)]
    pub pack_size_mib: f64,
    /// Store changed chunks whole instead of as deltas against their previous version.
    #[arg(long)]
    pub no_delta: bool,
    /// Longest delta chain a chunk may need to be read (1-32).
    #[arg(long, default_value_t = cairn_store::DeltaConfig::default().max_depth)]
    pub delta_max_depth: u8,
}

impl Args {
    pub fn init_options(&self) -> InitOptions {
        InitOptions {
            chunker: ChunkerParams::with_avg(self.chunk_avg_kib.saturating_mul(1024)),
            compression_level: self.compression,
            pack_size: (self.pack_size_mib * 1024.0 * 1024.0) as u64,
            delta: cairn_store::DeltaConfig {
                enabled: !self.no_delta,
                max_depth: self.delta_max_depth,
                ..Default::default()
            },
        }
    }
}

pub fn run(g: &GlobalOpts, a: Args) -> Result<ExitCode> {
    let g = &g.with_config(g.load_config()?.as_ref());
    let key = g.new_key()?;
    let repo = Repository::init(&g.repo_location()?, &key, &a.init_options(), g.open_options())?;
    let c = repo.config();
    println!(
        "created repository {} at {} (chunks {}/{}/{} B, zstd {}, packs {}, deltas {})",
        repo.id().short(),
        g.repo_location()?,
        c.chunker.min,
        c.chunker.avg,
        c.chunker.max,
        c.compression_level,
        crate::common::bytes(c.pack_size),
        if c.delta.enabled {
            format!("on, chains of at most {}", c.delta.max_depth)
        } else {
            "off".into()
        }
    );
    println!("keep the passphrase or identity safe: without it the backups cannot be read");
    Ok(ExitCode::SUCCESS)
}
