//! A tree on another host as a [`TreeSource`]: its agent walks it (the same walk a local
//! backup does) and sends each file's bytes when the backup asks. Used from the blocking
//! thread a tree backup runs on.

use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn_store::snapshot::ContentRef;
use cairn_store::write::foreign::{ChunkingKeys, ForeignSource};
use cairn_store::write::source::{SourceEntry, TreeSource};
use cairn_store::Error as StoreError;
use tokio::runtime::Handle;

use super::host::{EndChecked, Host};

pub struct RemoteTree {
    pub host: Host,
    pub rt: Handle,
    /// For files cut on the host: the repository's chunking keys and the item's cache name
    /// there (each file's is derived from it).
    pub keys: ChunkingKeys,
    pub cache: String,
    /// Bytes the files moved on the wire (chunk streams, and the smallest files whole).
    pub wire: Arc<AtomicU64>,
}

/// Counts a whole file's bytes as they come from the agent.
struct Counted<R> {
    inner: R,
    wire: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.wire.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Files at least this large are cut on their host and sent by what the repository lacks, and
/// kept in the agent's cache for deltas next time; smaller ones down to [`IDS_MIN`] are cut and
/// sent the same way but not kept (a cache per small file would cost more than its deltas save).
pub const FOREIGN_MIN: u64 = 1 << 20;
/// Files smaller than this come whole: their bytes cost less than an offer of their ids.
pub const IDS_MIN: u64 = 512;

fn source_err(host: &Host, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Source {
        path: format!("{} on host {}", path.display(), host.name()),
        reason: e.to_string(),
    }
}

impl TreeSource for RemoteTree {
    fn entries<'a>(
        &'a self,
        root: &Path,
        keep: &'a dyn Fn(&Path) -> bool,
    ) -> cairn_store::Result<Box<dyn Iterator<Item = cairn_store::Result<SourceEntry>> + 'a>> {
        let all = self
            .rt
            .block_on(self.host.walk(root))
            .map_err(|e| source_err(&self.host, root, e))?;
        // The agent walks everything; directories not kept are dropped here with what is in
        // them (the walk lists a directory before its contents).
        let mut dropped: Vec<PathBuf> = Vec::new();
        let kept = all.into_iter().filter(move |e| {
            let rel = PathBuf::from(&e.entry.path);
            if e.entry.path.is_empty() {
                return true;
            }
            if dropped.iter().any(|d| rel.starts_with(d)) {
                return false;
            }
            if !keep(&rel) {
                if e.entry.entry_type == cairn_store::snapshot::EntryType::Dir {
                    dropped.push(rel);
                }
                return false;
            }
            true
        });
        Ok(Box::new(kept.map(Ok)))
    }

    fn open(&self, root: &Path, rel: &[u8]) -> cairn_store::Result<Box<dyn Read + Send + '_>> {
        use std::os::unix::ffi::OsStrExt;
        let path = root.join(std::ffi::OsStr::from_bytes(rel));
        let (reader, w) = EndChecked::pipe();
        let host = self.host.clone();
        self.rt.spawn(async move {
            let mut pipe = w.pipe;
            let r = host.read_file_into(&path, &mut pipe).await;
            let _ = w.done.send(r.map_err(|e| e.to_string()));
        });
        Ok(Box::new(Counted {
            inner: tokio_util::io::SyncIoBridge::new_with_handle(reader, self.rt.clone()),
            wire: self.wire.clone(),
        }))
    }

    fn host(&self) -> Option<&str> {
        Some(self.host.name())
    }

    fn foreign(
        &self,
        root: &Path,
        rel: &[u8],
        len: u64,
        store: &mut dyn FnMut(&mut dyn ForeignSource) -> cairn_store::Result<ContentRef>,
    ) -> Option<cairn_store::Result<ContentRef>> {
        use std::os::unix::ffi::OsStrExt;
        if len < IDS_MIN {
            return None;
        }
        let path = root.join(std::ffi::OsStr::from_bytes(rel));
        // An empty cache name: cut and offered, not kept (`chunked.rs`).
        let cache = match len >= FOREIGN_MIN {
            true => cairn_store::write::foreign::file_cache_name(&self.cache, rel),
            false => String::new(),
        };
        let opened = self
            .rt
            .block_on(self.host.open_file_stream(&path, self.keys.clone(), cache));
        let (mut src, ended) = match opened {
            Ok(x) => x,
            Err(e) => return Some(Err(source_err(&self.host, &path, e))),
        };
        let stored = store(&mut src);
        drop(src);
        let done = self.rt.block_on(self.host.chunk_stream_done(&path, ended));
        Some(match (stored, done) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(source_err(&self.host, &path, e)),
            (Ok(c), Ok(wire)) => {
                self.wire.fetch_add(wire, Ordering::Relaxed);
                Ok(c)
            }
        })
    }
}
