//! A tree on another host as a [`TreeSource`]: its agent walks it (the same walk a local
//! backup does) and sends each file's bytes when the backup asks. Used from the blocking
//! thread a tree backup runs on.

use std::io::Read;
use std::path::{Path, PathBuf};

use cairn_store::write::source::{SourceEntry, TreeSource};
use cairn_store::Error as StoreError;
use tokio::runtime::Handle;

use super::host::{EndChecked, Host};

pub struct RemoteTree {
    pub host: Host,
    pub rt: Handle,
}

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
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            reader,
            self.rt.clone(),
        )))
    }
}
