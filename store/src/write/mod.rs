//! The write path: streams and file trees in, one snapshot out.
//!
//! ```text
//! item thread (one per item)                 encode workers (one per core)      chunk destination
//! read -> chunk -> hash -> dedup -> bases --jobs--> compress, seal, delta --blobs--> pack -> put -> index
//! chunker.rs         dedup.rs     base.rs            pipeline.rs                     destination.rs
//! ```
//!
//! Duplicates are dropped in the item's thread, before the costly stages: a chunk the
//! [`ChunkDestination`] holds or has on its way is only referenced. New chunks get candidate delta
//! bases from a [`BaseSelector`], are encoded by the workers and handed to the destination.
//! [`chunklist`] turns each item's chunk references into its content, [`tree`] walks directory
//! trees, [`commit`] writes the manifest.
//!
//! # Crash safety
//! The order of durable writes is what makes a backup killed at any moment harmless:
//! 1. Blobs are appended to a pack in memory. A crash here leaves nothing.
//! 2. A full pack gets its trailer and is put whole under `packs/xx/<id>` (the object store makes
//!    it visible only complete and durable, `storage/mod.rs`). From now on the pack is
//!    self-describing: any later `Index::sync` finds it.
//! 3. The pack's blobs are recorded in the index cache, and only then stop being "on their way"
//!    (`pending` in `destination.rs`). A crash between 2 and 3 is repaired by the next sync,
//!    which reads the pack's trailer.
//! 4. At commit, the pipeline is drained ([`ChunkDestination::flush`]): every blob the snapshot
//!    references is in a published pack (steps 2-3 done for all of them).
//! 5. Only then is the manifest written, atomically and under a name that must not exist yet.
//!    Without step 5 there is no snapshot, and the packs of steps 2-3 are reused by the next run.

mod base;
mod chunklist;
mod command;
mod commit;
mod dedup;
mod destination;
mod failure;
pub mod foreign;
mod pipeline;
mod similar;
pub mod source;
mod stats;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use base::BaseSelector;
pub use destination::{ChunkDestination, SealedBlob};

use base::PositionalSelector;
use chunklist::RefList;
use dedup::Sink;
use destination::LocalDestination;
use pipeline::Pipeline;
use similar::SimilarSelector;
use stats::Counters;

use crate::blob::BlobKind;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::lock::{LockGuard, LockMode};
use crate::progress::Progress;
use crate::repo::{Repository, Synced};
use crate::sketch::Sketcher;
use crate::snapshot::{ContentRef, Item, ItemKind, Stats};
use crate::trust::Trust;
use crate::util::{format_rfc3339, now_unix};

/// Options for one backup run.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Snapshot name; default: the start time as `YYYY-MM-DDTHH:MM:SSZ`.
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Recorded host; default: this host's name.
    pub host: Option<String>,
}

/// Checks a snapshot or item name.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} {name:?} must be 1-255 characters without control characters"
        )));
    }
    Ok(())
}

/// Checks an item name: a snapshot name's rules, and a relative `/`-separated path without
/// empty, `.` or `..` parts, so that no item can be restored outside its target.
pub fn validate_item_name(name: &str) -> Result<()> {
    validate_name("item name", name)?;
    // The rule a restore applies to every stored path, applied before anything is stored.
    crate::restore::fs::components(name.as_bytes()).map_err(|_| {
        Error::Invalid(format!(
            "item name {name:?} must be a relative path without empty, \".\" or \"..\" parts"
        ))
    })?;
    Ok(())
}

/// A backup in progress. Add items, then [`Backup::commit`]. Dropped without commit, it leaves
/// no snapshot; the packs it wrote are reused by the next backup.
///
/// Items may be added from several threads at once (a system snapshot streams every database's
/// dump concurrently): each item chunks in its caller's thread, and all of them feed the one
/// compress/pack pipeline.
pub struct Backup {
    repo: Repository,
    _lock: LockGuard,
    /// The repository with the index synced when the backup started: what delta bases are read
    /// through.
    synced: Synced,
    pipeline: Pipeline,
    chunker: Chunker,
    /// Where the repository keeps sketches (format 2 on), for the content-based selector.
    sketcher: Option<Sketcher>,
    name: String,
    opts: BackupOptions,
    time: i64,
    started: Instant,
    items: Mutex<Vec<(Item, Arc<Counters>)>>,
    /// Names of items being added right now.
    in_flight: Mutex<HashSet<String>>,
    /// The newest complete version of each item (read from the manifests on first use).
    previous: Mutex<Option<Latest>>,
    warnings: Arc<Mutex<Vec<String>>>,
    trust: Arc<Trust>,
    progress: Arc<dyn Progress>,
}

impl Repository {
    /// Starts a backup: takes a backup lock, syncs the index and starts the pipeline.
    pub fn backup(&self, opts: BackupOptions, progress: Arc<dyn Progress>) -> Result<Backup> {
        let time = now_unix();
        let name = opts.name.clone().unwrap_or_else(|| format_rfc3339(time));
        validate_name("snapshot name", &name)?;
        for t in &opts.tags {
            validate_name("tag", t)?;
        }
        // A name held only by a failed snapshot may be taken again (the failed one is replaced
        // at commit); a complete snapshot's name never.
        self.held_by_failed(&name)?;
        let lock = self.lock(LockMode::Backup, &format!("backup {name}"))?;
        self.store.clean_up()?;
        // Markers after the lock: a marker written later records this backup's lock.
        let marked = crate::deletion::marked_set(self.store.as_ref(), &self.keys)?;
        let (synced, index) = self.synced()?;
        let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
        let trust = Arc::new(Trust::new(
            self.store.clone(),
            self.keys.clone(),
            marked,
            crate::trust::load_damage(&self.opts.cache_dir, &self.config.repo_id),
            index.reopen()?,
            warnings.clone(),
        ));
        let dest = LocalDestination::start(
            self.store.clone(),
            self.keys.clone(),
            index.reopen()?,
            trust.clone(),
            self.config.pack_size,
            2 * pipeline::workers(),
        )?;
        let pipeline = Pipeline::start(&synced, Arc::new(dest))?;
        Ok(Backup {
            repo: self.clone(),
            _lock: lock,
            synced,
            pipeline,
            chunker: Chunker::new(self.config.chunker, self.keys.chunker_key()),
            sketcher: self.config.sketches().then(|| Sketcher::new(&self.keys.sketch_key())),
            name,
            opts,
            time,
            started: Instant::now(),
            items: Mutex::default(),
            in_flight: Mutex::default(),
            previous: Mutex::default(),
            warnings,
            trust,
            progress,
        })
    }
}

/// The newest complete version of each item, by the time of its snapshot.
#[derive(Default)]
struct Latest {
    /// Stream items by name: the bases for their deltas.
    streams: HashMap<String, ContentRef>,
    /// Items that came from another host's agent, by name and host (`foreign/`).
    hosted: HashMap<(String, String), ItemKind>,
}

/// Marks an item name as in flight until dropped.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.name);
    }
}

impl Backup {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Warnings so far (an empty command output, say).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap().clone()
    }

    /// Adds a warning to report with the snapshot.
    pub fn warn(&self, warning: String) {
        self.warnings.lock().unwrap().push(warning);
    }

    fn begin_item(&self, name: &str) -> Result<(Arc<Counters>, InFlight<'_>)> {
        validate_item_name(name)?;
        let twice = || Error::Invalid(format!("item name {name:?} is used twice in this snapshot"));
        if self.items.lock().unwrap().iter().any(|(i, _)| i.name == name) {
            return Err(twice());
        }
        if !self.in_flight.lock().unwrap().insert(name.to_string()) {
            return Err(twice());
        }
        let guard = InFlight {
            set: &self.in_flight,
            name: name.to_string(),
        };
        Ok((Arc::default(), guard))
    }

    fn finish_item(&self, item: Item, counters: Arc<Counters>) -> Item {
        self.items.lock().unwrap().push((item.clone(), counters));
        item
    }

    fn sink(&self, counters: &Arc<Counters>, selector: Option<Box<dyn BaseSelector>>) -> Sink<'_> {
        let has_selector = selector.is_some();
        Sink {
            keys: &self.repo.keys,
            max_depth: self.repo.config.delta.max_depth,
            offset: 0,
            selector,
            pipeline: &self.pipeline,
            chunker: &self.chunker,
            sketcher: self.sketcher.as_ref().filter(|_| has_selector),
            counters: counters.clone(),
            progress: self.progress.as_ref(),
            sent: None,
        }
    }

    /// The base selector for a stream item: none without delta encoding. Where the repository
    /// keeps sketches and holds some, the content-based one (which follows the previous version
    /// too); otherwise the positional one, if the item has a previous version.
    fn selector_for(&self, name: &str) -> Result<Option<Box<dyn BaseSelector>>> {
        if !self.repo.config.delta.enabled {
            return Ok(None);
        }
        let positional = match self.previous_version(name)? {
            Some(previous) => Some(PositionalSelector::start(&self.synced, previous)?),
            None => None,
        };
        if self.sketcher.is_some() {
            let index = self.synced.index()?;
            if index.has_sketches()? {
                return Ok(Some(Box::new(SimilarSelector::new(positional, index))));
            }
        }
        Ok(positional.map(|p| Box::new(p) as Box<dyn BaseSelector>))
    }

    /// The content of the newest complete snapshot's stream item with this name, the base for
    /// this item's deltas.
    fn previous_version(&self, name: &str) -> Result<Option<ContentRef>> {
        self.with_latest(|l| l.streams.get(name).cloned())
    }

    /// Runs `f` on the newest complete version of each item. Manifests are read once per backup.
    fn with_latest<T>(&self, f: impl FnOnce(&Latest) -> T) -> Result<T> {
        let mut previous = self.previous.lock().unwrap();
        if previous.is_none() {
            let (mut streams, mut hosted) = (HashMap::new(), HashMap::new());
            for snap in self.repo.snapshots()?.into_iter().flatten().filter(|s| s.is_complete()) {
                for item in snap.items {
                    let host = item.meta.get(foreign::HOST_META).and_then(|h| h.as_str());
                    if let Some(host) = host {
                        let key = (item.name.clone(), host.to_string());
                        if hosted.get(&key).is_none_or(|(t, _)| *t <= snap.time) {
                            hosted.insert(key, (snap.time, item.kind.clone()));
                        }
                    }
                    if let ItemKind::Stream { content } = item.kind {
                        if streams.get(&item.name).is_none_or(|(t, _)| *t <= snap.time) {
                            streams.insert(item.name, (snap.time, content));
                        }
                    }
                }
            }
            *previous = Some(Latest {
                streams: streams.into_iter().map(|(k, (_, c))| (k, c)).collect(),
                hosted: hosted.into_iter().map(|(k, (_, c))| (k, c)).collect(),
            });
        }
        Ok(f(previous.as_ref().expect("just loaded")))
    }

    /// Surfaces the pipeline's own error in place of the "stopped" a sender sees.
    fn with_cause<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| match e {
            Error::Pipeline(_) => self.pipeline.take_failure().unwrap_or(e),
            e => e,
        })
    }

    pub(super) fn store_reader(&self, sink: &mut Sink, reader: impl Read, source: &str) -> Result<ContentRef> {
        let mut refs = RefList::default();
        let mut size = 0u64;
        self.chunker.for_each_chunk(
            reader,
            |chunk| {
                size += chunk.len() as u64;
                let r = sink.store(BlobKind::Data, chunk)?;
                refs.push(r, sink)
            },
            |e| Error::Source {
                path: source.to_string(),
                reason: format!("read failed: {e}"),
            },
        )?;
        refs.finish(size, sink)
    }

    /// Adds a named stream read to its end.
    pub fn add_stream(&self, name: &str, reader: impl Read) -> Result<Item> {
        self.add_stream_with(name, &format!("backup {name}"), BTreeMap::new(), |counters| {
            let mut sink = self.sink(counters, self.selector_for(name)?);
            self.store_reader(&mut sink, reader, name)
        })
    }

    /// Adds stream item `name` whose content `store` writes with the item's counters; progress
    /// shows `label`.
    fn add_stream_with(
        &self,
        name: &str,
        label: &str,
        meta: BTreeMap<String, serde_json::Value>,
        store: impl FnOnce(&Arc<Counters>) -> Result<ContentRef>,
    ) -> Result<Item> {
        let (counters, _guard) = self.begin_item(name)?;
        let start = Instant::now();
        self.progress.start(label, None);
        let r = store(&counters);
        self.progress.finish();
        let content = self.with_cause(r)?;
        let item = Item {
            name: name.to_string(),
            size: content.size,
            kind: ItemKind::Stream { content },
            stats: Stats::default(),
            duration_secs: start.elapsed().as_secs_f64(),
            meta,
        };
        Ok(self.finish_item(item, counters))
    }

    /// Drops an added item from the snapshot (its chunks stay stored for the next backup).
    pub fn remove_item(&self, name: &str) {
        self.items.lock().unwrap().retain(|(i, _)| i.name != name);
    }

    /// Adds a file or directory tree (modes, owners, mtimes and symlinks are kept).
    pub fn add_tree(&self, name: &str, path: &Path) -> Result<Item> {
        self.add_tree_filtered(name, path, &|_| true)
    }

    /// Adds the part of a tree for which `keep(relative path)` holds (directories that are not
    /// kept are not descended into; the root is always kept).
    pub fn add_tree_filtered(&self, name: &str, path: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Item> {
        self.add_tree_from(name, &source::LocalTree, path, keep)
    }

    /// Adds the tree at `path` of `source` (another host's, say), as
    /// [`add_tree_filtered`](Self::add_tree_filtered) does for this one's.
    pub fn add_tree_from(
        &self,
        name: &str,
        source: &dyn source::TreeSource,
        path: &Path,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<Item> {
        let (counters, _guard) = self.begin_item(name)?;
        let start = Instant::now();
        let mut receiver = source.host().map(|h| self.receiver(name, h)).transpose()?;
        let from = source.host().map(|h| format!(" from {h}")).unwrap_or_default();
        self.progress.start(&format!("backup {}{from}", path.display()), None);
        let mut sink = self.sink(&counters, None);
        let r = self.store_tree(&mut sink, source, path, keep, receiver.as_mut());
        self.progress.finish();
        let (listing, size, files, dirs, symlinks) = self.with_cause(r)?;
        let mut meta = BTreeMap::new();
        if let (Some(h), Some(r)) = (source.host(), receiver) {
            meta.insert(foreign::HOST_META.to_string(), serde_json::json!(h));
            let counts = serde_json::to_value(r.finish()).expect("counts serialise");
            meta.insert(foreign::WIRE_CHUNKS_META.to_string(), counts);
        }
        let item = Item {
            name: name.to_string(),
            size,
            kind: ItemKind::Tree {
                source: path.display().to_string(),
                listing,
                files,
                dirs,
                symlinks,
            },
            stats: Stats::default(),
            duration_secs: start.elapsed().as_secs_f64(),
            meta,
        };
        Ok(self.finish_item(item, counters))
    }

    /// Sets plugin metadata on an added item.
    pub fn set_item_meta(&self, item: &str, key: &str, value: serde_json::Value) -> Result<()> {
        let mut items = self.items.lock().unwrap();
        let (item, _) = items
            .iter_mut()
            .find(|(i, _)| i.name == item)
            .ok_or_else(|| Error::UnknownItem(self.name.clone(), item.to_string()))?;
        item.meta.insert(key.to_string(), value);
        Ok(())
    }
}
