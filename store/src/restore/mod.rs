//! Restoring snapshots into a filesystem: items under a target directory, or one item to an
//! exact path. Everything below the target is opened relative to its parent without following
//! symlinks (`fs.rs`), trees are placed by a pool of workers (`tree.rs`); content comes through
//! the read path (`read/`).

pub(crate) mod fs;
pub mod place;
mod tree;

use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::Item;

/// Options for `cairn restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only these items (all when empty).
    pub items: Vec<String>,
    /// Restore into a non-empty target directory.
    pub force: bool,
}

impl Repository {
    /// Restores items of a snapshot under `target/<item name>`.
    pub fn restore(
        &self,
        snapshot: &str,
        target: &Path,
        opts: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<Item>> {
        let _lock = self.read_lock(&format!("restore {snapshot}"))?;
        let snap = self.restorable_snapshot(snapshot)?;
        for name in &opts.items {
            if snap.item(name).is_none() {
                return Err(Error::UnknownItem(snapshot.into(), name.clone()));
            }
        }
        if target.exists() && !opts.force && std::fs::read_dir(target).at(target)?.next().is_some() {
            return Err(Error::TargetNotEmpty(target.into()));
        }
        let target_fd = crate::restore::fs::open_trusted_dir(target)?;
        let (synced, _) = self.synced()?;
        let chosen: Vec<Item> = snap
            .items
            .iter()
            .filter(|i| opts.items.is_empty() || opts.items.contains(&i.name))
            .cloned()
            .collect();
        progress.start("restore", Some(chosen.iter().map(|i| i.size).sum()));
        for item in &chosen {
            let comps = crate::restore::fs::components(item.name.as_bytes())?;
            let (name, parents) = comps
                .split_last()
                .ok_or_else(|| Error::Invalid("an item without a name".into()))?;
            let dest = target.join(&item.name);
            let parent = crate::restore::fs::open_dir(target_fd.as_fd(), parents).map_err(|e| Error::Io {
                path: dest.clone(),
                source: e.into(),
            })?;
            synced.place_item(&item.kind, parent.as_fd(), name, &dest, progress)?;
        }
        progress.finish();
        Ok(chosen)
    }

    /// Restores one item to exactly `dest`: a tree's root directory (or single file), or a
    /// stream's file. Unless `overwrite`, `dest` must be absent or an empty directory; with it,
    /// entries of the item replace what is there and other files are left alone.
    pub fn restore_item_to(
        &self,
        snapshot: &str,
        item: &str,
        dest: &Path,
        overwrite: bool,
        progress: &dyn Progress,
    ) -> Result<Item> {
        let _lock = self.read_lock(&format!("restore {snapshot}"))?;
        let it = self.restorable_item(snapshot, item)?;
        check_target(dest, overwrite)?;
        let (synced, _) = self.synced()?;
        progress.start(&format!("restore {item}"), Some(it.size));
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file or directory name", dest.display())))?;
        let parent = crate::restore::fs::open_trusted_dir(dest.parent().unwrap_or(Path::new(".")))?;
        synced.place_item(&it.kind, parent.as_fd(), name, dest, progress)?;
        progress.finish();
        Ok(it)
    }
}

impl Repository {
    /// An item of a snapshot that may be restored.
    pub(crate) fn restorable_item(&self, snapshot: &str, item: &str) -> Result<Item> {
        let snap = self.restorable_snapshot(snapshot)?;
        snap.item(item)
            .cloned()
            .ok_or_else(|| Error::UnknownItem(snapshot.into(), item.into()))
    }
}

/// Unless `overwrite`, `dest` must be absent or an empty directory.
pub(crate) fn check_target(dest: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && dest.is_dir() && std::fs::read_dir(dest).at(dest)?.next().is_some() {
        return Err(Error::TargetNotEmpty(dest.into()));
    }
    if !overwrite && dest.is_file() {
        return Err(Error::TargetNotEmpty(dest.into()));
    }
    Ok(())
}
