//! Snapshots and what they reference.
//!
//! A snapshot manifest is small whatever it holds: each item's content is a [`ContentRef`], which
//! lists at most [`INLINE_MAX`] chunks. A longer chunk list is itself stored as a stream of `Meta`
//! blobs (36-byte records `id | length u32 LE`, cut by the same content-defined chunker, so an
//! unchanged region of a list deduplicates like data does), and the `ContentRef` points at that
//! list instead, one `depth` level up. Directory trees are stored the same way: the listing is a
//! `Meta` stream of JSON lines, one [`TreeEntry`] per line.
//!
//! Manifest file: `snapshots/<SnapshotId>`, a sealed object (associated data
//! `"cairn snapshot v1" | SnapshotId`) holding zstd-compressed JSON of [`Snapshot`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, SnapshotId};

/// Most chunk references kept inline in a `ContentRef`.
pub const INLINE_MAX: usize = 32;
/// Bytes per record in a stored chunk list.
pub const LIST_RECORD: usize = 36;
/// Manifest format version written by this code.
pub const MANIFEST_VERSION: u32 = 1;

/// One chunk: its id and plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef(pub ChunkId, pub u32);

/// The content of a stream or file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContentRef {
    /// Length of the content in bytes.
    pub size: u64,
    /// 0: `chunks` are the content's chunks; n > 0: `chunks` hold a chunk list of depth n - 1.
    pub depth: u8,
    pub chunks: Vec<ChunkRef>,
}

/// Whether a snapshot can be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    Complete,
    Failed { reason: String },
}

/// Storage accounting for one item or a whole snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Chunks read from the source.
    pub chunks: u64,
    /// Of those, chunks not already in the repository.
    pub chunks_new: u64,
    /// Of the new chunks, those stored as deltas against an earlier version.
    #[serde(default)]
    pub chunks_delta: u64,
    /// Plaintext bytes of the new chunks.
    pub bytes_new: u64,
    /// Bytes this item added to the repository (sealed, compressed blobs; metadata included).
    pub bytes_added: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.chunks += o.chunks;
        self.chunks_new += o.chunks_new;
        self.chunks_delta += o.chunks_delta;
        self.bytes_new += o.bytes_new;
        self.bytes_added += o.bytes_added;
    }
    /// Chunks that were exact duplicates of stored ones.
    pub fn chunks_dup(&self) -> u64 {
        self.chunks - self.chunks_new
    }
}

/// What an item holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemKind {
    /// A named byte stream (stdin, a command's output, a database dump).
    Stream { content: ContentRef },
    /// A directory tree (or a single file); `listing` is a Meta stream of JSON-lines TreeEntry.
    Tree {
        source: String,
        listing: ContentRef,
        files: u64,
        dirs: u64,
        symlinks: u64,
    },
}

/// One named thing in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub name: String,
    #[serde(flatten)]
    pub kind: ItemKind,
    /// Logical size: bytes of content.
    pub size: u64,
    pub stats: Stats,
    pub duration_secs: f64,
    /// Free-form facts a plugin records (checksums, row counts, revisions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// File type in a tree listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    Dir,
    File,
    Symlink,
}

/// One line of a tree listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Path relative to the tree's root, `/`-separated; `""` is the root itself.
    pub path: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentRef>,
    /// The path's bytes in hex when they are not UTF-8 (`path` then holds a lossy form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    /// The symlink target's bytes in hex when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_target: Option<String>,
    /// A hard link: the 0-based line, earlier in this listing, of the file whose data it shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u64>,
    /// Extended attributes (POSIX ACLs and SELinux labels are stored as such): name, hex value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(String, String)>,
}

/// Text for JSON, and the raw bytes in hex when they are not UTF-8.
pub(crate) fn text_and_raw(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), Some(hex::encode(bytes))),
    }
}

fn raw_or_text(text: &str, raw: &Option<String>) -> Result<Vec<u8>, String> {
    match raw {
        Some(h) => hex::decode(h).map_err(|e| format!("bad raw name {h:?}: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

impl TreeEntry {
    /// The path's bytes as they were on the source filesystem.
    pub fn path_bytes(&self) -> Result<Vec<u8>, String> {
        raw_or_text(&self.path, &self.raw_path)
    }

    /// The symlink target's bytes, if a symlink.
    pub fn target_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        match &self.target {
            None => Ok(None),
            Some(t) => raw_or_text(t, &self.raw_target).map(Some),
        }
    }
}

/// A snapshot manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub name: String,
    /// Start time, Unix seconds (UTC).
    pub time: i64,
    pub host: String,
    pub tags: Vec<String>,
    pub status: Status,
    pub duration_secs: f64,
    pub items: Vec<Item>,
    /// Totals over items plus metadata written at commit.
    pub stats: Stats,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
}

impl Snapshot {
    pub fn size(&self) -> u64 {
        self.items.iter().map(|i| i.size).sum()
    }
    pub fn is_complete(&self) -> bool {
        self.status == Status::Complete
    }
    pub fn item(&self, name: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.name == name)
    }
    /// Logical bytes per stored byte added (how much deduplication and compression saved).
    pub fn dedup_ratio(&self) -> f64 {
        if self.stats.bytes_added == 0 {
            f64::INFINITY
        } else {
            self.size() as f64 / self.stats.bytes_added as f64
        }
    }
}

pub(crate) fn manifest_aad(id: &SnapshotId) -> [u8; 49] {
    let mut a = [0u8; 49];
    a[..17].copy_from_slice(b"cairn snapshot v1");
    a[17..].copy_from_slice(id.as_bytes());
    a
}

pub(crate) fn manifest_path(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// Parses stored chunk-list records, carrying a split record over to the next call.
pub(crate) fn parse_records(carry: &mut Vec<u8>, bytes: &[u8], out: &mut Vec<ChunkRef>) {
    carry.extend_from_slice(bytes);
    let whole = carry.len() / LIST_RECORD * LIST_RECORD;
    for r in carry[..whole].chunks_exact(LIST_RECORD) {
        out.push(ChunkRef(
            ChunkId::from_slice(&r[..32]).unwrap(),
            u32::from_le_bytes(r[32..].try_into().unwrap()),
        ));
    }
    carry.drain(..whole);
}

pub(crate) fn encode_record(r: &ChunkRef, out: &mut Vec<u8>) {
    out.extend_from_slice(r.0.as_bytes());
    out.extend_from_slice(&r.1.to_le_bytes());
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Chunk-list records split at any point parse back to what was encoded.
        #[test]
        fn records_round_trip_whatever_the_split(ids in proptest::collection::vec((any::<[u8; 32]>(), any::<u32>()), 0..50),
                                                 cut in any::<prop::sample::Index>()) {
            let refs: Vec<ChunkRef> = ids.iter().map(|(i, l)| ChunkRef(ChunkId(*i), *l)).collect();
            let mut bytes = Vec::new();
            for r in &refs {
                encode_record(r, &mut bytes);
            }
            let at = if bytes.is_empty() { 0 } else { cut.index(bytes.len() + 1) };
            let (mut carry, mut out) = (Vec::new(), Vec::new());
            parse_records(&mut carry, &bytes[..at], &mut out);
            parse_records(&mut carry, &bytes[at..], &mut out);
            prop_assert!(carry.is_empty());
            prop_assert_eq!(out, refs);
        }

        /// Random bytes as records: never a panic; what is not a whole record is carried.
        #[test]
        fn random_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            let (mut carry, mut out) = (Vec::new(), Vec::new());
            parse_records(&mut carry, &bytes, &mut out);
            prop_assert_eq!(out.len(), bytes.len() / LIST_RECORD);
            prop_assert_eq!(carry.len(), bytes.len() % LIST_RECORD);
        }

        /// Manifests and tree listing lines: mutated JSON is an error or a value, never a panic,
        /// and the raw name fields never panic either.
        #[test]
        fn mutated_manifests_and_listings_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                                      raw in "[0-9a-fz]{0,12}") {
            let entry = TreeEntry {
                path: "a/b".into(), entry_type: EntryType::File, mode: 0o644, uid: 0, gid: 0, mtime: 1,
                mtime_nsec: 0, target: None, content: None, raw_path: Some(raw.clone()),
                raw_target: Some(raw), link: Some(0), xattrs: vec![("user.a".into(), "00".into())],
            };
            let mut line = serde_json::to_vec(&entry).unwrap();
            let i = at.index(line.len());
            line[i] = byte;
            if let Ok(e) = serde_json::from_slice::<TreeEntry>(&line) {
                let _ = e.path_bytes();
                let _ = e.target_bytes();
            }
            let snap = Snapshot {
                version: 1, name: "n".into(), time: 0, host: "h".into(), tags: vec![], status: Status::Complete,
                duration_secs: 0.0, items: vec![], stats: Stats::default(), meta: BTreeMap::new(),
            };
            let mut json = serde_json::to_vec(&snap).unwrap();
            let j = at.index(json.len());
            json[j] = byte;
            let _ = serde_json::from_slice::<Snapshot>(&json);
        }
    }
}
