//! Runs the configured plugins together: one snapshot for the whole system, one restore.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cairn_store::{BackupOptions, NoProgress, Repository, Snapshot, Status};
use serde::Serialize;
use serde_json::json;

use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::ops::maintenance;
use crate::plugin::{Ctx, Health, ItemSink, ItemSource, Mode, Plugin, Reindexed};

/// Snapshot metadata key that lists the plugins of a system snapshot.
pub const PLUGINS_META: &str = "plugins";

/// What happened to one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub plugin: String,
    pub kind: String,
    pub ok: bool,
    pub error: Option<String>,
    pub detail: Option<String>,
    pub duration_secs: f64,
}

/// The plugins named in `selection` (all configured ones if `None`).
pub fn select(loaded: &Loaded, selection: Option<&[String]>) -> Result<Vec<Arc<dyn Plugin>>> {
    let Some(names) = selection else {
        return Ok(loaded.plugins.clone());
    };
    names
        .iter()
        .map(|n| {
            loaded.plugin(n).cloned().ok_or_else(|| {
                let known: Vec<&str> = loaded.plugins.iter().map(|p| p.name()).collect();
                Error::Selection(format!(
                    "{n:?} is not configured in {} (configured: {})",
                    loaded.path.display(),
                    known.join(", ")
                ))
            })
        })
        .collect()
}

fn work_dir(loaded: &Loaded, plugin: &str) -> Result<tempfile::TempDir> {
    let base = loaded.work_dir();
    std::fs::create_dir_all(&base).map_err(Error::io(base.display().to_string()))?;
    // tempfile creates the directory with mode 0700.
    tempfile::Builder::new()
        .prefix(&format!("cairn-{plugin}-"))
        .tempdir_in(&base)
        .map_err(Error::io(format!("creating a work directory in {}", base.display())))
}

/// Where a system backup or restore reports progress (bytes per item, from the store).
#[derive(Clone)]
pub struct Reporter(pub Arc<dyn cairn_store::Progress>);

impl Default for Reporter {
    fn default() -> Self {
        Reporter(Arc::new(NoProgress))
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

/// Options of a system backup.
#[derive(Debug, Clone, Default)]
pub struct BackupRequest {
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Plugin names (all configured if `None`).
    pub plugins: Option<Vec<String>>,
    /// Enter maintenance mode for the backup.
    pub maintenance: bool,
    pub progress: Reporter,
}

/// Backs up the selected plugins concurrently into one snapshot. The snapshot is written also
/// when a plugin fails, as a failed snapshot naming the plugin and its error; the caller turns
/// that into a non-zero exit.
pub async fn backup(repo: &Repository, loaded: &Loaded, req: &BackupRequest) -> Result<(Snapshot, Vec<Outcome>)> {
    let plugins = select(loaded, req.plugins.as_deref())?;
    if plugins.is_empty() {
        return Err(Error::Selection(format!(
            "{} configures no database or files to back up",
            loaded.path.display()
        )));
    }
    let entered = if req.maintenance {
        maintenance::enter(loaded, "backup").await?
    } else {
        false
    };
    let result = backup_inner(repo, loaded, req, plugins).await;
    if entered {
        maintenance::leave(loaded).await?;
    }
    result
}

async fn backup_inner(
    repo: &Repository,
    loaded: &Loaded,
    req: &BackupRequest,
    plugins: Vec<Arc<dyn Plugin>>,
) -> Result<(Snapshot, Vec<Outcome>)> {
    let opts = BackupOptions {
        name: req.name.clone(),
        tags: req.tags.clone(),
        host: None,
    };
    let repo2 = repo.clone();
    let progress = req.progress.0.clone();
    let backup = tokio::task::spawn_blocking(move || repo2.backup(opts, progress))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    let backup = Arc::new(backup);
    let results = each_plugin(loaded, &plugins, Mode::Normal, |p, ctx| {
        let sink = ItemSink::new(backup.clone(), p.name());
        async move { backup_one(&*p, &ctx, &sink).await.map(|()| None) }
    })
    .await?;
    let outcomes: Vec<Outcome> = results.into_iter().map(outcome).collect();
    let backup = Arc::try_unwrap(backup).map_err(|_| Error::Task("a plugin still holds the backup".into()))?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("plugin {} failed: {e}", o.plugin)))
        .collect();
    let status = if failed.is_empty() {
        Status::Complete
    } else {
        Status::Failed {
            reason: failed.join("; "),
        }
    };
    let mut meta = BTreeMap::new();
    let plugins_meta: BTreeMap<&str, serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            (
                o.plugin.as_str(),
                json!({"kind": o.kind, "ok": o.ok, "error": o.error, "duration_secs": o.duration_secs}),
            )
        })
        .collect();
    meta.insert(PLUGINS_META.to_string(), json!(plugins_meta));
    let warnings = backup.warnings();
    if !warnings.is_empty() {
        meta.insert("warnings".to_string(), json!(warnings));
    }
    let snap = tokio::task::spawn_blocking(move || backup.commit_with(status, meta))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    Ok((snap, outcomes))
}

async fn backup_one(p: &dyn Plugin, ctx: &Ctx, sink: &ItemSink) -> Result<()> {
    let h = p.healthcheck(ctx).await;
    if !h.healthy {
        return Err(Error::Unhealthy(format!("unhealthy before backup: {}", h.detail)));
    }
    p.pre_backup(ctx).await?;
    let r = p.backup(ctx, sink).await;
    let post = p.post_backup(ctx).await;
    r.and(post)
}

/// The plugins a system snapshot holds (name -> kind).
pub fn snapshot_plugins(snap: &Snapshot) -> Result<BTreeMap<String, String>> {
    let map = snap
        .meta
        .get(PLUGINS_META)
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::Selection(format!(
                "snapshot {} is not a system snapshot (taken without --system); restore its items with `cairn restore --target`",
                snap.name
            ))
        })?;
    Ok(map
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Options of a system restore.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub snapshot: String,
    /// Plugin names (all in the snapshot if `None`).
    pub plugins: Option<Vec<String>>,
    pub mode: Mode,
    /// Back up what a normal restore overwrites first.
    pub safety_snapshot: bool,
    pub progress: Reporter,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub mode: Mode,
    pub safety_snapshot: Option<String>,
    pub warnings: Vec<String>,
    pub before: Vec<(String, Health)>,
    pub outcomes: Vec<Outcome>,
    pub after: Vec<(String, Health)>,
    /// What was sent to other hosts' agents, item by item.
    pub transfers: Vec<crate::plugin::Transfer>,
}

impl RestoreReport {
    pub fn ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.ok) && self.after.iter().all(|(_, h)| h.healthy)
    }
}

/// Restores a system snapshot (or some of its plugins) in maintenance mode, which it always
/// leaves again. A normal restore first takes a safety snapshot of what it will overwrite.
pub async fn restore(repo: &Repository, loaded: &Loaded, req: &RestoreRequest) -> Result<RestoreReport> {
    let repo2 = repo.clone();
    let name = req.snapshot.clone();
    let snap = tokio::task::spawn_blocking(move || repo2.restorable_snapshot(&name))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    let in_snapshot = snapshot_plugins(&snap)?;
    let names: Vec<String> = match &req.plugins {
        None => in_snapshot.keys().cloned().collect(),
        Some(list) => {
            for n in list {
                if !in_snapshot.contains_key(n) {
                    return Err(Error::Selection(format!(
                        "snapshot {} holds no {n:?} (it holds: {})",
                        snap.name,
                        in_snapshot.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            list.clone()
        }
    };
    let plugins = select(loaded, Some(&names))?;
    for p in &plugins {
        if in_snapshot.get(p.name()).map(String::as_str) != Some(p.kind()) {
            return Err(Error::Selection(format!(
                "{} is a {} in the snapshot but configured as {}",
                p.name(),
                in_snapshot.get(p.name()).map(String::as_str).unwrap_or("?"),
                p.kind()
            )));
        }
    }
    let mut warnings = Vec::new();
    if names.len() < in_snapshot.len() {
        warnings.push(format!(
            "restoring only {} of the {} parts of system snapshot {}: they may not be in step with the parts not restored ({})",
            names.join(", "),
            in_snapshot.len(),
            snap.name,
            in_snapshot.keys().filter(|k| !names.contains(k)).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let entered = maintenance::enter(loaded, &format!("restore of {}", snap.name)).await?;
    let result = restore_inner(repo, loaded, req, Arc::new(snap), plugins, warnings).await;
    let left = if entered {
        maintenance::leave(loaded).await
    } else {
        Ok(())
    };
    let report = result?;
    left?;
    Ok(report)
}

/// Copies the data directories of plugins that are down, as they are on disk, into a snapshot
/// `<name>-cold` tagged `safety`; returns its name, what was saved per plugin and the plugins
/// with nothing to copy.
async fn cold_safety_copy(
    repo: &Repository,
    name: &str,
    down: &[&Arc<dyn Plugin>],
) -> Result<(String, Vec<(String, Vec<String>)>, Vec<String>)> {
    let cold_name = format!("{name}-cold");
    let mut saved = Vec::new();
    let mut unsaved = Vec::new();
    let mut work: Vec<(String, std::path::PathBuf)> = Vec::new();
    for p in down {
        let paths: Vec<std::path::PathBuf> = p.cold_paths().into_iter().filter(|d| d.exists()).collect();
        if paths.is_empty() {
            unsaved.push(p.name().to_string());
            continue;
        }
        saved.push((
            p.name().to_string(),
            paths.iter().map(|d| d.display().to_string()).collect(),
        ));
        for d in paths {
            let rel = d.display().to_string().trim_start_matches('/').to_string();
            work.push((format!("{}/cold/{rel}", p.name()), d));
        }
    }
    if work.is_empty() {
        return Ok((cold_name, saved, unsaved));
    }
    let (repo, n) = (repo.clone(), cold_name.clone());
    tokio::task::spawn_blocking(move || -> cairn_store::Result<()> {
        let opts = cairn_store::BackupOptions {
            name: Some(n),
            tags: vec!["safety".into(), "cold".into()],
            host: None,
        };
        let b = repo.backup(opts, Arc::new(cairn_store::NoProgress))?;
        for (item, dir) in &work {
            b.add_tree(item, dir)?;
        }
        b.commit().map(drop)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
    .map_err(|e| Error::context("the cold safety copy failed, so nothing was restored")(e.into()))?;
    Ok((cold_name, saved, unsaved))
}

async fn restore_inner(
    repo: &Repository,
    loaded: &Loaded,
    req: &RestoreRequest,
    snap: Arc<Snapshot>,
    plugins: Vec<Arc<dyn Plugin>>,
    warnings: Vec<String>,
) -> Result<RestoreReport> {
    let before = if req.mode == Mode::Normal {
        healthchecks(loaded, &plugins).await?
    } else {
        Vec::new()
    };
    let mut safety = None;
    let mut warnings = warnings;
    if req.mode == Mode::Normal && req.safety_snapshot {
        let name = format!(
            "safety-{}-before-restore-of-{}",
            cairn_store::format_rfc3339(cairn_store::now_unix()),
            snap.name.replace('/', "_")
        );
        // A database that is down cannot be dumped: what it has on disk is copied cold instead.
        let down: Vec<&Arc<dyn Plugin>> = plugins
            .iter()
            .filter(|p| before.iter().any(|(n, h)| n == p.name() && !h.healthy))
            .collect();
        let live: Vec<String> = plugins
            .iter()
            .filter(|p| !down.iter().any(|d| d.name() == p.name()))
            .map(|p| p.name().to_string())
            .collect();
        if !live.is_empty() {
            let breq = BackupRequest {
                name: Some(name.clone()),
                tags: vec!["safety".into()],
                plugins: Some(live),
                maintenance: false,
                progress: req.progress.clone(),
            };
            let (s, _) = backup(repo, loaded, &breq).await?;
            if let Status::Failed { reason } = &s.status {
                return Err(Error::State(format!(
                    "the safety snapshot of what the restore would overwrite failed, so nothing was restored: {reason}"
                )));
            }
            safety = Some(name.clone());
        }
        if !down.is_empty() {
            let (cold_name, saved, unsaved) = cold_safety_copy(repo, &name, &down).await?;
            for (plugin, paths) in &saved {
                warnings.push(format!(
                    "{plugin} is down and could not be dumped: its data directory ({}) as it is on disk is \
                     kept in safety snapshot {cold_name}",
                    paths.join(", ")
                ));
            }
            for plugin in &unsaved {
                warnings.push(format!(
                    "{plugin} is down and could not be dumped, and it has no data directory here to copy: \
                     nothing of what the restore replaces in it was saved"
                ));
            }
            if !saved.is_empty() && safety.is_none() {
                safety = Some(cold_name);
            }
        }
    }
    let transfers: crate::plugin::Transfers = Arc::default();
    let results = each_plugin(loaded, &plugins, req.mode, |p, ctx| {
        let source = ItemSource::new(repo.clone(), snap.clone(), p.name())
            .with_progress(req.progress.0.clone())
            .with_transfers(transfers.clone());
        async move { restore_one(&*p, &ctx, &source).await.map(Some) }
    })
    .await?;
    let outcomes: Vec<Outcome> = results.into_iter().map(outcome).collect();
    let after = healthchecks(loaded, &plugins).await?;
    let sent = std::mem::take(&mut *transfers.lock().unwrap());
    Ok(RestoreReport {
        snapshot: snap.name.clone(),
        mode: req.mode,
        safety_snapshot: safety,
        warnings,
        before,
        outcomes,
        after,
        transfers: sent,
    })
}

async fn restore_one(p: &dyn Plugin, ctx: &Ctx, source: &ItemSource) -> Result<String> {
    ctx.log("restoring");
    p.pre_restore(ctx).await?;
    let r = p.restore(ctx, source).await;
    let post = p.post_restore(ctx).await;
    r.and(post)?;
    let mut v = p.verify(ctx, source).await?;
    ctx.log(format!("verified: {v}"));
    let removed = ctx.removed_list();
    if !removed.is_empty() {
        v.push_str(&format!("; removed, not in the snapshot: {}", removed.join(", ")));
    }
    Ok(v)
}

/// Runs every plugin's healthcheck concurrently.
pub async fn healthchecks(loaded: &Loaded, plugins: &[Arc<dyn Plugin>]) -> Result<Vec<(String, Health)>> {
    each_plugin(loaded, plugins, Mode::Normal, |p, ctx| async move {
        Ok(p.healthcheck(&ctx).await)
    })
    .await?
    .into_iter()
    .map(|(p, h, _)| Ok((p.name().to_string(), h?)))
    .collect()
}

/// Rebuilds the search indices of every plugin that has them (`cairn reindex`); `only` names
/// indices or aliases (default: each plugin's configured list). Plugins without indices are
/// skipped; it is an error when none has any.
pub async fn reindex(loaded: &Loaded, only: &[String]) -> Result<Vec<(String, Result<Vec<Reindexed>>)>> {
    let only = Arc::new(only.to_vec());
    let results = each_plugin(loaded, &loaded.plugins, Mode::Normal, |p, ctx| {
        let only = only.clone();
        async move { p.reindex(&ctx, &only).await }
    })
    .await?;
    let out: Vec<_> = results
        .into_iter()
        .filter_map(|(p, r, _)| match r {
            Ok(None) => None,
            Ok(Some(v)) => Some((p.name().to_string(), Ok(v))),
            Err(e) => Some((p.name().to_string(), Err(e))),
        })
        .collect();
    if out.is_empty() {
        crate::bail!(
            Selection,
            "no configured database has indices to rebuild (configure [elasticsearch])"
        );
    }
    Ok(out)
}

/// Runs `work` for every plugin concurrently, each in its own task with a [`Ctx`] whose private
/// work directory is removed when the work ends. Returns each plugin's result and seconds taken,
/// in the plugins' order; a task that panicked counts as that plugin's error.
async fn each_plugin<T, F, Fut>(
    loaded: &Loaded,
    plugins: &[Arc<dyn Plugin>],
    mode: Mode,
    work: F,
) -> Result<Vec<(Arc<dyn Plugin>, Result<T>, f64)>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Plugin>, Ctx) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for p in plugins {
        let dir = work_dir(loaded, p.name())?;
        let fut = work(p.clone(), Ctx::new(p.name(), mode, dir.path().to_path_buf()));
        tasks.push((
            p.clone(),
            tokio::spawn(async move {
                let start = Instant::now();
                let r = fut.await;
                drop(dir);
                (r, start.elapsed().as_secs_f64())
            }),
        ));
    }
    let mut out = Vec::new();
    for (p, t) in tasks {
        let (r, secs) = t
            .await
            .unwrap_or_else(|e| (Err(Error::Task(format!("plugin task failed: {e}"))), 0.0));
        out.push((p, r, secs));
    }
    Ok(out)
}

/// A plugin's result as reported: `detail` is what a restore verified.
fn outcome((p, r, secs): (Arc<dyn Plugin>, Result<Option<String>>, f64)) -> Outcome {
    let (ok, error, detail) = match r {
        Ok(d) => (true, None, d),
        Err(e) => (false, Some(e.to_string()), None),
    };
    Outcome {
        plugin: p.name().to_string(),
        kind: p.kind().to_string(),
        ok,
        error,
        detail,
        duration_secs: secs,
    }
}
