//! Certificates, encrypted passwords and other files: configured paths carried exactly.
//!
//! Each path is one tree item, streamed straight into the encrypted repository (never staged).
//! A restore puts every entry back with its bytes, mode, owner and mtime; files that appeared
//! since the snapshot are left in place and reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_store::snapshot::EntryType;
use serde::Deserialize;

use crate::db::common::absolute;
use crate::error::{Error, Result};
use crate::plugin::{Ctx, Health, ItemSink, ItemSource, Mode, Plugin};
use crate::remote::host::{Host, Hosts};

/// `[files.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Absolute paths of files or directories.
    pub paths: Vec<PathBuf>,
    /// Shell command run after a restore (reload the services that use them, say).
    pub post_restore: Option<String>,
    /// The `[hosts.NAME]` the paths are on (and `post_restore` runs on); default: this host.
    pub runs_on: Option<String>,
}

pub struct Files {
    name: String,
    cfg: Config,
    host: Host,
}

pub fn build(name: &str, cfg: &Config, hosts: &Hosts) -> Result<Arc<dyn Plugin>, String> {
    crate::db::common::plain_name("name", name)?;
    if cfg.paths.is_empty() {
        return Err("paths must list at least one file or directory".into());
    }
    for p in &cfg.paths {
        absolute("paths", p)?;
    }
    Ok(Arc::new(Files {
        name: name.to_string(),
        cfg: cfg.clone(),
        host: hosts.get(cfg.runs_on.as_deref())?,
    }))
}

/// Item name of a configured path: the path without its leading `/`.
fn item_of(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_string()
}

#[async_trait]
impl Plugin for Files {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "files"
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        let mut missing = Vec::new();
        for p in &self.cfg.paths {
            match self.host.stat(p).await {
                Ok(Some(_)) => {}
                Ok(None) => missing.push(p.display().to_string()),
                Err(e) => return Health::bad(e.to_string()),
            }
        }
        if missing.is_empty() {
            Health::ok(format!("{} paths present", self.cfg.paths.len()))
        } else {
            Health::bad(format!("missing: {}", missing.join(", ")))
        }
    }

    async fn backup(&self, _ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        for p in &self.cfg.paths {
            sink.tree(&self.host, &item_of(p), p, None).await?;
        }
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        for p in &self.cfg.paths {
            ctx.log(format!("restoring {}", p.display()));
            let exists = self.host.stat(p).await?.is_some();
            source
                .restore_to(&self.host, &item_of(p), p, ctx.mode == Mode::Normal || exists)
                .await?;
            if self.host.stat(p).await?.is_none_or(|s| s.kind != "dir") {
                continue;
            }
            // The snapshot's state, not more: files added since go (the safety snapshot has them).
            let known = snapshot_paths(source, p).await?;
            // Entries not in the snapshot, outermost only (a directory goes with what is in it).
            let mut extra: Vec<PathBuf> = Vec::new();
            for e in self.host.walk(p).await? {
                let path = entry_path(p, &e.entry)?;
                if !known.contains(&path) && !extra.iter().any(|x| path.starts_with(x)) {
                    extra.push(path);
                }
            }
            for x in extra {
                self.host.remove(&x).await?;
                ctx.removed(x.display().to_string());
            }
        }
        Ok(())
    }

    async fn post_restore(&self, _ctx: &Ctx) -> Result<()> {
        self.host.run_configured(self.cfg.post_restore.as_deref()).await
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        let (mut checked, mut extra) = (0usize, 0usize);
        for p in &self.cfg.paths {
            let entries = source.tree_entries(&item_of(p)).await?;
            // What is there now, as a backup would see it.
            let now: std::collections::HashMap<PathBuf, cairn_store::write::source::SourceEntry> = self
                .host
                .walk(p)
                .await?
                .into_iter()
                .map(|e| Ok((entry_path(p, &e.entry)?, e)))
                .collect::<Result<_>>()?;
            let mut known = std::collections::HashSet::new();
            for e in &entries {
                let path = entry_path(p, e)?;
                known.insert(path.clone());
                let found = now.get(&path);
                // A hard link has the content of the entry it links to.
                let data = e.link.and_then(|i| entries.get(i as usize)).unwrap_or(e);
                let size = data.content.as_ref().map(|c| c.size).unwrap_or(0);
                let same = found.is_some_and(|n| {
                    n.entry.entry_type == e.entry_type
                        && (e.entry_type == EntryType::Symlink || n.entry.mode == e.mode)
                        && (e.entry_type != EntryType::File || (n.len == size && n.entry.mtime == e.mtime))
                });
                if !same {
                    return Err(Error::Mismatch(format!(
                        "{} differs from the snapshot after restore",
                        path.display()
                    )));
                }
                checked += 1;
            }
            extra += now.keys().filter(|k| !known.contains(*k)).count();
        }
        let mut s = format!("{checked} entries match the snapshot (type, mode, size, mtime)");
        if extra > 0 {
            s.push_str(&format!("; {extra} entries not in the snapshot were left in place"));
        }
        Ok(s)
    }
}

/// Where a listing entry of the tree at `root` is.
fn entry_path(root: &Path, e: &cairn_store::snapshot::TreeEntry) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let raw = e.path_bytes().map_err(Error::State)?;
    Ok(if raw.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(&raw))
    })
}

/// Every path the snapshot's tree item for `root` holds.
async fn snapshot_paths(source: &ItemSource, root: &Path) -> Result<std::collections::HashSet<PathBuf>> {
    source
        .tree_entries(&item_of(root))
        .await?
        .iter()
        .map(|e| entry_path(root, e))
        .collect()
}
