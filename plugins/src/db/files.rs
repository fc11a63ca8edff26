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
use crate::process;

/// `[files.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Absolute paths of files or directories.
    pub paths: Vec<PathBuf>,
    /// Shell command run after a restore (reload the services that use them, say).
    pub post_restore: Option<String>,
}

pub struct Files {
    name: String,
    cfg: Config,
}

pub fn build(name: &str, cfg: &Config) -> Result<Arc<dyn Plugin>, String> {
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
        let missing: Vec<String> = self
            .cfg
            .paths
            .iter()
            .filter(|p| std::fs::symlink_metadata(p).is_err())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Health::ok(format!("{} paths present", self.cfg.paths.len()))
        } else {
            Health::bad(format!("missing: {}", missing.join(", ")))
        }
    }

    async fn backup(&self, _ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        for p in &self.cfg.paths {
            sink.tree(&item_of(p), p, None).await?;
        }
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        for p in &self.cfg.paths {
            ctx.log(format!("restoring {}", p.display()));
            source
                .restore_to(&item_of(p), p, ctx.mode == Mode::Normal || p.exists())
                .await?;
            if !p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                continue;
            }
            // The snapshot's state, not more: files added since go (the safety snapshot has them).
            let mut known = std::collections::HashSet::new();
            for e in source.tree_entries(&item_of(p)).await? {
                let raw = e.path_bytes().map_err(Error::State)?;
                known.insert(p.join(std::ffi::OsStr::from_bytes(&raw)));
            }
            // Entries not in the snapshot, outermost only (a directory goes with what is in it).
            let mut extra: Vec<PathBuf> = Vec::new();
            let mut walk = walkdir::WalkDir::new(p).follow_links(false).into_iter();
            while let Some(e) = walk.next() {
                let Ok(e) = e else { continue };
                if !known.contains(e.path()) {
                    if e.file_type().is_dir() {
                        walk.skip_current_dir();
                    }
                    extra.push(e.into_path());
                }
            }
            for x in extra {
                let md = x.symlink_metadata().map_err(Error::io(x.display().to_string()))?;
                if md.is_dir() {
                    std::fs::remove_dir_all(&x)
                } else {
                    std::fs::remove_file(&x)
                }
                .map_err(Error::io(x.display().to_string()))?;
                ctx.removed(x.display().to_string());
            }
        }
        Ok(())
    }

    async fn post_restore(&self, _ctx: &Ctx) -> Result<()> {
        process::run_configured(self.cfg.post_restore.as_deref()).await
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let (mut checked, mut extra) = (0usize, 0usize);
        for p in &self.cfg.paths {
            let entries = source.tree_entries(&item_of(p)).await?;
            let mut known = std::collections::HashSet::new();
            for e in &entries {
                use std::os::unix::ffi::OsStrExt;
                let raw = e.path_bytes().map_err(Error::State)?;
                let path = if raw.is_empty() {
                    p.clone()
                } else {
                    p.join(std::ffi::OsStr::from_bytes(&raw))
                };
                known.insert(path.clone());
                let md = std::fs::symlink_metadata(&path).map_err(Error::io(format!("{}", path.display())))?;
                let want_type = match e.entry_type {
                    EntryType::Dir => md.is_dir(),
                    EntryType::File => md.is_file(),
                    EntryType::Symlink => md.file_type().is_symlink(),
                };
                // A hard link has the content of the entry it links to.
                let data = e.link.and_then(|i| entries.get(i as usize)).unwrap_or(e);
                let size = data.content.as_ref().map(|c| c.size).unwrap_or(0);
                let same = want_type
                    && (e.entry_type == EntryType::Symlink || md.mode() & 0o7777 == e.mode)
                    && (e.entry_type != EntryType::File || (md.len() == size && md.mtime() == e.mtime));
                if !same {
                    return Err(Error::Mismatch(format!(
                        "{} differs from the snapshot after restore",
                        path.display()
                    )));
                }
                checked += 1;
            }
            if p.is_dir() {
                for f in walkdir::WalkDir::new(p).into_iter().flatten() {
                    if !known.contains(f.path()) {
                        extra += 1;
                    }
                }
            }
        }
        let mut s = format!("{checked} entries match the snapshot (type, mode, size, mtime)");
        if extra > 0 {
            s.push_str(&format!("; {extra} entries not in the snapshot were left in place"));
        }
        Ok(s)
    }
}
