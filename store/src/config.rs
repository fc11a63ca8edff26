//! The repository's plaintext marker and its (sealed) config.
//!
//! `CAIRN` (plaintext, the only unencrypted file): `cairn repository\nformat 1\n`.
//! `config` (sealed, associated data `"cairn config v1"`): JSON of [`Config`].

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::id::RepoId;

/// Repository format version this code writes. It reads every version from
/// [`OLDEST_FORMAT`] up: format 2 added resemblance sketches to pack trailers (version 3
/// trailers), which a reader of format 1 would not know; a format 1 repository is written as
/// format 1 (no sketches) so that older readers keep reading it.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest repository format this code reads and writes.
pub const OLDEST_FORMAT: u32 = 1;
pub(crate) const MARKER_PATH: &str = "CAIRN";
pub(crate) const CONFIG_PATH: &str = "config";
pub(crate) const CONFIG_AAD: &[u8] = b"cairn config v1";

pub(crate) fn marker_text() -> String {
    format!("cairn repository\nformat {FORMAT_VERSION}\n")
}

/// Parses the marker; `None` if it is not a Cairn marker at all.
pub(crate) fn parse_marker(text: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "cairn repository" {
        return None;
    }
    lines.next()?.strip_prefix("format ")?.parse().ok()
}

/// Settings fixed when the repository is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub repo_id: RepoId,
    pub created: String,
    pub chunker: ChunkerParams,
    /// zstd level for new blobs (1..=19; 0 means zstd's default).
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u64,
    /// Delta encoding of changed chunks. Absent in configs written before it existed, which
    /// then get the defaults (on).
    #[serde(default)]
    pub delta: DeltaConfig,
}

impl Config {
    /// Whether backups record resemblance sketches of new chunks (format 2 on).
    pub fn sketches(&self) -> bool {
        self.version >= 2
    }
}

/// How changed chunks are delta-encoded against the previous version of their item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaConfig {
    pub enabled: bool,
    /// Longest chain of deltas a chunk may need to be read. A chunk whose chain would grow past
    /// its limit (between `max_depth / 2` and `max_depth`, fixed per chunk by its id so that
    /// chains restart on different days) is stored whole instead.
    pub max_depth: u8,
    /// zstd level for deltas.
    pub level: i32,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_depth: 16,
            level: 3,
        }
    }
}

/// zstd level 1: on sysbench dumps it is both 2.2x faster and 10% smaller than level 3
/// (docs/benchmarks.md).
pub const DEFAULT_COMPRESSION: i32 = 1;

/// Options for `cairn init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u64,
    pub delta: DeltaConfig,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            compression_level: DEFAULT_COMPRESSION,
            pack_size: 32 << 20,
            delta: DeltaConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn marker_round_trip() {
        assert_eq!(parse_marker(marker_text().as_bytes()), Some(FORMAT_VERSION));
        assert_eq!(parse_marker(b"something else"), None);
        assert_eq!(parse_marker(b"cairn repository\nformat 7\n"), Some(7));
    }
}
