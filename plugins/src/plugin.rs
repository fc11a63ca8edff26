//! The plugin standard: what a database plugin implements and what it is given.
//!
//! A plugin is one configured instance of a database (or of a set of files). The controller
//! calls it in this order, and calls `post_*` also after a failure of the step before it:
//!
//! ```text
//! backup:  healthcheck -> pre_backup -> backup(sink) -> post_backup
//! restore: pre_restore -> restore(source) -> post_restore -> verify(source)
//! ```
//!
//! `backup` streams one or more items into the snapshot through an [`ItemSink`] (item names are
//! prefixed with the plugin's name); `restore` reads them back through an [`ItemSource`]. Facts
//! to verify a restore against (row counts, checksums, revisions) go into item metadata at
//! backup time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_store::{Backup, Item, NoProgress, Repository, Snapshot};
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio::process::Command;
use tokio_util::io::SyncIoBridge;

use crate::error::{Error, Result};
use crate::process;
use crate::remote::host::{EndChecked, Host};

/// How a restore treats the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Restore onto the running (or stopped) nodes that the snapshot came from.
    Normal,
    /// Rebuild onto fresh, empty nodes; checks that need the old nodes are skipped.
    DisasterRecovery,
}

/// Result of a healthcheck.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// One line for the table ("ping ok, 12 tables", "leader 127.0.0.1:2181").
    pub detail: String,
}

impl Health {
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            healthy: true,
            detail: detail.into(),
        }
    }
    pub fn bad(detail: impl Into<String>) -> Self {
        Self {
            healthy: false,
            detail: detail.into(),
        }
    }
    /// Healthy with the check's detail, or unhealthy with its error.
    pub fn from_result(r: Result<String>) -> Self {
        match r {
            Ok(d) => Self::ok(d),
            Err(e) => Self::bad(e.to_string()),
        }
    }
}

/// What a plugin is given for each call.
pub struct Ctx {
    pub mode: Mode,
    /// A private directory (mode 0700) for anything that must be staged; removed afterwards.
    pub work_dir: PathBuf,
    name: String,
    removed: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    pub fn new(name: &str, mode: Mode, work_dir: PathBuf) -> Self {
        Self {
            mode,
            work_dir,
            name: name.to_string(),
            removed: Default::default(),
        }
    }

    /// Records something a restore removed because the snapshot does not have it (added since;
    /// the safety snapshot keeps it). The restore report lists these.
    pub fn removed(&self, what: impl Into<String>) {
        let what = what.into();
        self.log(format!("removed {what} (not in the snapshot)"));
        self.removed.lock().unwrap().push(what);
    }

    /// What [`Ctx::removed`] recorded.
    pub fn removed_list(&self) -> Vec<String> {
        self.removed.lock().unwrap().clone()
    }

    /// A progress line on stderr, prefixed with the plugin's name.
    pub fn log(&self, msg: impl AsRef<str>) {
        eprintln!("[{}] {}", self.name, msg.as_ref());
    }
}

/// A name for something a backup creates inside a database (a snapshot, a tag, an index):
/// `prefix` + Unix milliseconds, so that backups in the same second do not collide.
pub fn timestamped(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}{millis}")
}

/// How a verification qualifies its counts: exact when nothing changed while the backup ran.
pub fn as_in_snapshot(exact: bool) -> &'static str {
    if exact {
        ", as in the snapshot"
    } else {
        " (written to during the backup, so not compared exactly)"
    }
}

/// A database (or file set) Cairn backs up and restores.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// The instance name: items are `<name>/...`, and `--db` selects by it.
    fn name(&self) -> &str;
    /// The plugin kind (`mariadb`, `etcd`, `files`, `exec`, ...).
    fn kind(&self) -> &'static str;

    /// Is the database reachable and healthy?
    async fn healthcheck(&self, ctx: &Ctx) -> Health;

    async fn pre_backup(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }
    /// Streams the database's dump(s) into the snapshot.
    async fn backup(&self, ctx: &Ctx, sink: &ItemSink) -> Result<()>;
    async fn post_backup(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    async fn pre_restore(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }
    /// Puts the snapshot's items back.
    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()>;
    /// The database's files on this host (data directories), which a restore copies cold into
    /// its safety snapshot when the database is down and cannot be dumped. Default: none.
    fn cold_paths(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    async fn post_restore(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }
    /// Proves the restored database equals what was backed up; returns what was compared.
    async fn verify(&self, ctx: &Ctx, source: &ItemSource) -> Result<String>;

    /// Rebuilds search indices in place (`cairn reindex`); `only` narrows the configured list.
    /// `None` when the database has no such thing.
    async fn reindex(&self, _ctx: &Ctx, _only: &[String]) -> Result<Option<Vec<Reindexed>>> {
        Ok(None)
    }
}

/// One index rebuilt by [`Plugin::reindex`].
#[derive(Debug, Clone, Serialize)]
pub struct Reindexed {
    /// The alias or index name the operator configured (it names the new index afterwards).
    pub name: String,
    /// The index the documents were read from (removed after the switch).
    pub from: String,
    /// The new index.
    pub to: String,
    /// Documents before and after.
    pub before: u64,
    pub after: u64,
}

/// Where a plugin's backup writes: items of one snapshot, named `<plugin>/<item>`.
#[derive(Clone)]
pub struct ItemSink {
    backup: Arc<Backup>,
    prefix: String,
}

impl ItemSink {
    pub fn new(backup: Arc<Backup>, plugin: &str) -> Self {
        Self {
            backup,
            prefix: plugin.to_string(),
        }
    }

    pub fn item_name(&self, item: &str) -> String {
        format!("{}/{}", self.prefix, item)
    }

    /// Stores a byte stream as it is produced (chunking runs on a blocking thread).
    pub async fn stream<R: AsyncRead + Unpin + Send + 'static>(&self, item: &str, reader: R) -> Result<Item> {
        let (backup, name) = (self.backup.clone(), self.item_name(item));
        let bridge = SyncIoBridge::new(reader);
        tokio::task::spawn_blocking(move || backup.add_stream(&name, bridge))
            .await
            .map_err(|e| Error::Task(format!("backup thread failed: {e}")))?
            .map_err(Error::from)
    }

    /// Streams a command's stdout, run on `host`, into the snapshot; a non-zero exit fails
    /// with its stderr and leaves no item.
    pub async fn command_output(&self, host: &Host, item: &str, cmd: &mut Command) -> Result<Item> {
        if !host.is_local() {
            return self.foreign(host, item, Some(cmd), None).await;
        }
        let what = process::describe(cmd);
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("cannot start {what}")))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = tokio::spawn(process::read_tail(child.stderr.take().expect("piped")));
        let stored = self.stream(item, stdout).await;
        let status = child.wait().await.map_err(Error::io(format!("waiting for {what}")));
        let stderr = stderr.await.unwrap_or_default();
        let status = status?;
        if !status.success() {
            self.backup.remove_item(&self.item_name(item));
            return Err(Error::Command {
                what,
                status: status.to_string(),
                stderr,
            });
        }
        stored
    }

    /// Stores one file of `host` as a stream item.
    pub async fn file(&self, host: &Host, item: &str, path: &Path) -> Result<Item> {
        if host.is_local() {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(Error::io(path.display().to_string()))?;
            return self.stream(item, f).await;
        }
        self.foreign(host, item, None, Some(path)).await
    }

    /// Stores as `item` a command's output or a file of another host, cut and hashed there by
    /// its agent, which sends only the chunks the repository wants from it
    /// (`cairn_store::write::foreign`). The item records the host and the bytes on the wire.
    /// If the command or the agent fails, no item is left.
    async fn foreign(&self, host: &Host, item: &str, cmd: Option<&Command>, path: Option<&Path>) -> Result<Item> {
        let name = self.item_name(item);
        let (backup, stored_name, host_name) = (self.backup.clone(), name.clone(), host.name().to_string());
        let keys = self.backup.chunking_keys();
        let cache = self.backup.agent_cache_name(&name);
        let r = host
            .chunk_stream(cmd, path, keys, cache, move |src| {
                backup.add_foreign_stream(&stored_name, &host_name, src)
            })
            .await;
        match r {
            Ok((stored, wire)) => {
                self.backup.set_item_meta(&name, WIRE_META, serde_json::json!(wire))?;
                Ok(stored)
            }
            Err(e) => {
                self.backup.remove_item(&name);
                Err(e)
            }
        }
    }

    /// Stores a file or directory tree of `host`; `keep(relative path)` chooses entries (all
    /// if `None`).
    pub async fn tree(&self, host: &Host, item: &str, path: &Path, keep: Option<Keep>) -> Result<Item> {
        let (backup, name, path) = (self.backup.clone(), self.item_name(item), path.to_path_buf());
        let wire: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let source: Box<dyn cairn_store::write::source::TreeSource> = match host {
            Host::Local => Box::new(cairn_store::write::source::LocalTree),
            remote => Box::new(crate::remote::tree::RemoteTree {
                host: remote.clone(),
                rt: tokio::runtime::Handle::current(),
                keys: self.backup.chunking_keys(),
                cache: self.backup.agent_cache_name(&name),
                wire: wire.clone(),
            }),
        };
        let stored_name = name.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let all = |_: &Path| true;
            let keep: &dyn Fn(&Path) -> bool = match &keep {
                Some(k) => &**k,
                None => &all,
            };
            backup.add_tree_from(&stored_name, source.as_ref(), &path, keep)
        })
        .await
        .map_err(|e| Error::Task(format!("backup thread failed: {e}")))?
        .map_err(Error::from)?;
        if !host.is_local() {
            let wire = wire.load(std::sync::atomic::Ordering::Relaxed);
            self.backup.set_item_meta(&name, WIRE_META, serde_json::json!(wire))?;
        }
        Ok(stored)
    }

    /// Records a fact about an item for the restore to verify against.
    /// Records what verify will compare against, one metadata key per field of `facts` (read
    /// back with [`ItemSource::facts`]).
    pub fn set_facts<T: Serialize>(&self, item: &str, facts: &T) -> Result<()> {
        let value = serde_json::to_value(facts).map_err(|e| Error::Task(format!("facts of {item}: {e}")))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(Error::Task(format!("facts of {item} are not a record")));
        };
        for (key, value) in fields {
            self.set_meta(item, &key, value)?;
        }
        Ok(())
    }

    pub fn set_meta(&self, item: &str, key: &str, value: serde_json::Value) -> Result<()> {
        Ok(self.backup.set_item_meta(&self.item_name(item), key, value)?)
    }

    pub fn warn(&self, msg: String) {
        self.backup.warn(format!("{}: {msg}", self.prefix));
    }
}

/// Item metadata: the bytes a remote item's stream moved between its host's agent and the
/// controller (the host is `cairn_store::write::foreign::HOST_META`).
pub const WIRE_META: &str = "wire_bytes";

/// Chooses tree entries by their path relative to the tree's root.
pub type Keep = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// Where a plugin's restore reads: its items of one snapshot.
#[derive(Clone)]
pub struct ItemSource {
    repo: Repository,
    snapshot: Arc<Snapshot>,
    prefix: String,
    progress: Arc<dyn cairn_store::Progress>,
    transfers: Transfers,
}

/// What a restore sent to another host's agent: one item.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub host: String,
    pub item: String,
    /// Bytes of the item stream sent to the agent.
    pub bytes: u64,
    pub secs: f64,
}

/// Writes an item of a snapshot into a pipe (a dump of its bytes, or its placement stream).
type WriteItem =
    fn(&Repository, &str, &str, &mut dyn std::io::Write, &dyn cairn_store::Progress) -> cairn_store::Result<()>;

/// The transfers of a restore, shared by its plugins.
pub type Transfers = Arc<std::sync::Mutex<Vec<Transfer>>>;

/// Progress of what goes to another host: its phases name the host.
struct ToHost {
    inner: Arc<dyn cairn_store::Progress>,
    host: String,
}

impl cairn_store::Progress for ToHost {
    fn start(&self, what: &str, total: Option<u64>) {
        self.inner.start(&format!("{what} to {}", self.host), total);
    }
    fn advance(&self, bytes: u64) {
        self.inner.advance(bytes);
    }
    fn totals(&self, sent: Option<u64>, stored: u64) {
        self.inner.totals(sent, stored);
    }
    fn finish(&self) {
        self.inner.finish();
    }
}

/// Counts what passes through.
struct CountingWriter<W> {
    inner: W,
    n: Arc<std::sync::atomic::AtomicU64>,
}

impl<W: std::io::Write> std::io::Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ItemSource {
    pub fn new(repo: Repository, snapshot: Arc<Snapshot>, plugin: &str) -> Self {
        Self {
            repo,
            snapshot,
            prefix: plugin.to_string(),
            progress: Arc::new(NoProgress),
            transfers: Arc::default(),
        }
    }

    /// Records what is sent to other hosts in `transfers`.
    pub fn with_transfers(mut self, transfers: Transfers) -> Self {
        self.transfers = transfers;
        self
    }

    /// Streams `item` (as `write` writes it) to what `send` passes it to on `host`'s agent,
    /// and records the transfer.
    async fn send_to<F, Fut>(&self, host: &Host, item: &str, write: WriteItem, send: F) -> Result<()>
    where
        F: FnOnce(EndChecked) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let start = std::time::Instant::now();
        let (input, fed, n) = self.reader(item, write, host.name())?;
        let sent = send(input).await;
        fed.await
            .map_err(|e| Error::Task(format!("restore thread failed: {e}")))??;
        sent?;
        self.transfers.lock().unwrap().push(Transfer {
            host: host.name().to_string(),
            item: self.item(item)?.name.clone(),
            bytes: n.load(std::sync::atomic::Ordering::Relaxed),
            secs: start.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    /// Reports the bytes restored to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn cairn_store::Progress>) -> Self {
        self.progress = progress;
        self
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The facts a plugin recorded for `item` at backup time ([`ItemSink::set_facts`]), as
    /// the plugin's own type: a fact the snapshot lacks, or holds in another form, is an error
    /// naming the item and the fact, never a silent default.
    pub fn facts<T: serde::de::DeserializeOwned>(&self, item: &str) -> Result<T> {
        let meta = self.meta(item)?;
        let object: serde_json::Map<String, serde_json::Value> =
            meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| Error::Facts {
            item: format!("{}/{item}", self.prefix),
            reason: format!("{e} in snapshot {}", self.snapshot.name),
        })
    }

    /// This plugin's item `item`, or an error naming what the snapshot lacks.
    pub fn item(&self, item: &str) -> Result<&Item> {
        let name = format!("{}/{}", self.prefix, item);
        self.snapshot.item(&name).ok_or_else(|| Error::Facts {
            reason: format!("not in snapshot {}", self.snapshot.name),
            item: name,
        })
    }

    /// This plugin's items, names without the prefix.
    pub fn items(&self) -> Vec<(String, &Item)> {
        let p = format!("{}/", self.prefix);
        self.snapshot
            .items
            .iter()
            .filter_map(|i| i.name.strip_prefix(&p).map(|n| (n.to_string(), i)))
            .collect()
    }

    pub fn meta(&self, item: &str) -> Result<&BTreeMap<String, serde_json::Value>> {
        Ok(&self.item(item)?.meta)
    }

    /// Feeds an item to a command's stdin on `host`; a non-zero exit fails with its stderr.
    /// If reading the item fails, a remote command is killed before its input ends.
    pub async fn pipe_to(&self, host: &Host, item: &str, cmd: &mut Command) -> Result<()> {
        if !host.is_local() {
            let write: WriteItem = |repo, snap, item, out, progress| repo.dump(snap, item, out, progress).map(drop);
            return self
                .send_to(
                    host,
                    item,
                    write,
                    |input| async move { host.stream_in(cmd, input).await },
                )
                .await;
        }
        let full = self.item(item)?.name.clone();
        let (repo, snap, progress) = (self.repo.clone(), self.snapshot.name.clone(), self.progress.clone());
        let what = process::describe(cmd);
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("cannot start {what}")))?;
        let stdin = SyncIoBridge::new(child.stdin.take().expect("piped"));
        let stderr = tokio::spawn(process::read_tail(child.stderr.take().expect("piped")));
        let fed = tokio::task::spawn_blocking(move || {
            let mut stdin = stdin;
            let r = repo.dump(&snap, &full, &mut stdin, progress.as_ref());
            drop(stdin); // end of input
            r
        })
        .await
        .map_err(|e| Error::Task(format!("restore thread failed: {e}")))?;
        let status = child.wait().await.map_err(Error::io(format!("waiting for {what}")))?;
        let stderr = stderr.await.unwrap_or_default();
        if !status.success() {
            return Err(Error::Command {
                what,
                status: status.to_string(),
                stderr,
            });
        }
        fed?;
        Ok(())
    }

    /// An item as an async reader for `host` (an error instead of its end if reading it
    /// fails), written by `write` on a blocking thread, and that thread; its progress names
    /// the host.
    #[allow(clippy::type_complexity)]
    fn reader(
        &self,
        item: &str,
        write: WriteItem,
        host: &str,
    ) -> Result<(
        EndChecked,
        tokio::task::JoinHandle<cairn_store::Result<()>>,
        Arc<std::sync::atomic::AtomicU64>,
    )> {
        let full = self.item(item)?.name.clone();
        let (repo, snap) = (self.repo.clone(), self.snapshot.name.clone());
        let progress = ToHost {
            inner: self.progress.clone(),
            host: host.to_string(),
        };
        let (reader, w) = EndChecked::pipe();
        let n: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let counted = n.clone();
        let fed = tokio::task::spawn_blocking(move || {
            let mut out = CountingWriter {
                inner: SyncIoBridge::new(w.pipe),
                n: counted,
            };
            let r = write(&repo, &snap, &full, &mut out, &progress);
            let _ = w.done.send(r.as_ref().map(drop).map_err(|e| e.to_string()));
            r
        });
        Ok((reader, fed, n))
    }

    /// The entries of a tree item as the snapshot recorded them.
    pub async fn tree_entries(&self, item: &str) -> Result<Vec<cairn_store::snapshot::TreeEntry>> {
        let listing = match &self.item(item)?.kind {
            cairn_store::ItemKind::Tree { listing, .. } => listing.clone(),
            _ => {
                return Err(Error::Facts {
                    item: format!("{}/{item}", self.prefix),
                    reason: "not a file tree".into(),
                })
            }
        };
        let repo = self.repo.clone();
        Ok(tokio::task::spawn_blocking(move || repo.tree_entries(&listing))
            .await
            .map_err(|e| Error::Task(format!("restore thread failed: {e}")))??)
    }

    /// Restores an item (tree or stream) to exactly `dest` on `host`; see
    /// [`Repository::restore_item_to`]. On another host the item is streamed to its agent,
    /// which places it with the same guarantees ([`cairn_store::TreePlacer`]).
    pub async fn restore_to(&self, host: &Host, item: &str, dest: &Path, overwrite: bool) -> Result<()> {
        if !host.is_local() {
            let write: WriteItem = |repo, snap, item, out, _| repo.item_stream(snap, item, out);
            return self
                .send_to(host, item, write, |input| async move {
                    host.place_tree(dest, overwrite, input).await
                })
                .await;
        }
        let full = self.item(item)?.name.clone();
        let (repo, snap, dest) = (self.repo.clone(), self.snapshot.name.clone(), dest.to_path_buf());
        let progress = self.progress.clone();
        tokio::task::spawn_blocking(move || repo.restore_item_to(&snap, &full, &dest, overwrite, progress.as_ref()))
            .await
            .map_err(|e| Error::Task(format!("restore thread failed: {e}")))??;
        Ok(())
    }
}
