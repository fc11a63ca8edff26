//! Shared helpers of the benchmark tools. The benchmarks themselves: `benches/store.rs`
//! (criterion), `src/bin/chunk-sizes.rs`, `src/bin/delta-sim.rs` and `compare.sh` (Cairn beside
//! restic and borg).

use std::path::{Path, PathBuf};

/// The `dayN.EXT` files of a dump series (`.sql` dumps, `.db` snapshots...), in day order.
pub fn dump_days(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let day = |p: &Path| -> Option<u32> {
        let stem = p.file_stem()?.to_str()?;
        p.extension()?;
        stem.strip_prefix("day")?.parse().ok()
    };
    let mut days: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| day(&p).map(|d| (d, p)))
        .collect();
    days.sort();
    Ok(days.into_iter().map(|(_, p)| p).collect())
}
