//! Repository locks, so exclusive work (repair, prune's planning) never runs beside what it would
//! disturb.
//!
//! A lock is a sealed file `locks/<random>` (associated data `"cairn lock v1" | name`) holding
//! JSON `{host, pid, pidns, start, time, exclusive, mode, purpose}`. Taking a lock is: write
//! ours, list the others, and if one conflicts act on it (below) until the wait runs out. Two
//! racing takers may both back off, never both win, since each lists after writing its own.
//!
//! Modes ([`LockMode`]): *shared* (restore, dump, check, forget) and *backup* locks coexist;
//! *exclusive* (repair) conflicts with every other lock; *prune* conflicts with every lock but
//! backups. Prune does not need backups to stop: it deletes in two phases and a backup checks
//! its packs before it commits (`prune.rs`, `deletion.rs`), so backups never wait for a prune
//! and a prune never waits for backups.
//!
//! Fairness: a waiting exclusive or prune taker keeps its lock file while the only conflicts are
//! shared holders. New shared takers see it and back off, so the holders drain and the waiting
//! taker gets its turn however busy the repository is. Two exclusive takers that see each other
//! both back off for a random time and try again.
//!
//! A lock is *dead* only when its owner is proven gone: same host, same pid namespace, and that
//! pid is not running (or is a newer process that reused the pid: its start time differs). A
//! lock of another host or another pid namespace, or of a stopped process, is never dead,
//! whatever its age or the clocks say: only the operator removes it (`cairn unlock --all`).
//! Dead locks are ignored and removed by `cairn unlock`. Lock files are never refreshed: a name
//! stays the same for the life of its holder, which is what lets a deletion marker record it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::storage::ObjectStore;
use crate::util::{current_pidns, hostname, process_gone, process_start};
use crate::util::{format_rfc3339, now_unix};

/// What a lock allows beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Reading (restore, dump, check) or forgetting: coexists with shared and backup locks.
    Shared,
    /// A backup: coexists with shared, backup and prune locks.
    Backup,
    /// Prune: conflicts with everything but backups.
    Prune,
    /// Repair: conflicts with everything.
    Exclusive,
}

impl LockMode {
    fn is_exclusive(self) -> bool {
        matches!(self, LockMode::Prune | LockMode::Exclusive)
    }
}

/// What a lock file says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// The holder's pid namespace (`/proc/self/ns/pid`), so a pid is only judged in its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<String>,
    /// The holder's start time (clock ticks after boot), so a reused pid is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    pub time: i64,
    /// Kept for readers of the first lock format: true for prune and exclusive locks.
    pub exclusive: bool,
    /// Absent in locks written before modes: then `exclusive` decides (shared or exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    pub purpose: String,
}

impl LockInfo {
    pub fn mode(&self) -> LockMode {
        self.mode.unwrap_or(if self.exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        })
    }

    /// Whether the holder is proven gone (see the module documentation); never judged by age.
    pub fn is_dead(&self) -> bool {
        self.host == hostname() && process_gone(self.pid, self.pidns.as_deref(), self.start)
    }

    /// Whether a lock of `mode` must wait for this one.
    pub fn conflicts_with(&self, mode: LockMode) -> bool {
        conflict(self.mode(), mode)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock by pid {} on {} for {:?}, taken {}",
            format!("{:?}", self.mode()).to_lowercase(),
            self.pid,
            self.host,
            self.purpose,
            format_rfc3339(self.time)
        )
    }
}

fn conflict(a: LockMode, b: LockMode) -> bool {
    use LockMode::*;
    match (a, b) {
        (Exclusive, _) | (_, Exclusive) => true,
        (Prune, Backup) | (Backup, Prune) => false,
        (Prune, _) | (_, Prune) => true,
        _ => false,
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = b"cairn lock v1".to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

fn write_lock(store: &dyn ObjectStore, keys: &Keys, mode: LockMode, purpose: &str) -> Result<String> {
    let name = hex::encode(rand::random::<[u8; 16]>());
    let pid = std::process::id();
    let info = LockInfo {
        host: hostname(),
        pid,
        pidns: current_pidns(),
        start: process_start(pid),
        time: now_unix(),
        exclusive: mode.is_exclusive(),
        mode: Some(mode),
        purpose: purpose.into(),
    };
    let sealed = keys.seal(&aad(&name), &serde_json::to_vec(&info).expect("lock serialises"));
    store.put(&format!("locks/{name}"), &sealed)?;
    Ok(name)
}

/// Every lock file with what it says (or why it could not be read).
pub fn list(store: &dyn ObjectStore, keys: &Keys) -> Result<Vec<(String, std::result::Result<LockInfo, String>)>> {
    let mut out = Vec::new();
    for name in crate::storage::names_in(store, "locks")? {
        let info = match store.get(&format!("locks/{name}")) {
            Ok(data) => keys
                .open(&format!("lock {name}"), &aad(&name), &data)
                .map_err(|e| e.to_string())
                .and_then(|p| serde_json::from_slice::<LockInfo>(&p).map_err(|e| e.to_string())),
            // Removed between list and read: its holder finished.
            Err(_) => continue,
        };
        out.push((name, info));
    }
    Ok(out)
}

/// A held lock; dropping it releases the lock.
pub struct LockGuard {
    store: Arc<dyn ObjectStore>,
    name: String,
}

/// What a taker found in the way.
enum Obstacle {
    None,
    /// Only shared holders: an exclusive taker keeps its file and waits for them to finish.
    Holders(String),
    /// Anything else: remove our file, back off, try again.
    Other(String),
}

fn obstacle(store: &dyn ObjectStore, keys: &Keys, ours: &str, mode: LockMode) -> Result<Obstacle> {
    let mut holders = None;
    for (name, info) in list(store, keys)? {
        if name == ours {
            continue;
        }
        match info {
            Ok(i) if i.is_dead() => {}
            Ok(i) if !i.conflicts_with(mode) => {}
            Ok(i) if mode.is_exclusive() && !i.mode().is_exclusive() => holders = Some(i.describe()),
            Ok(i) => return Ok(Obstacle::Other(i.describe())),
            Err(e) => {
                return Ok(Obstacle::Other(format!(
                    "unreadable lock file locks/{name} ({e}); remove it with `cairn unlock --all`"
                )))
            }
        }
    }
    Ok(holders.map_or(Obstacle::None, Obstacle::Holders))
}

impl LockGuard {
    /// Takes a lock, waiting up to `wait` for conflicting locks to go away.
    pub fn acquire(
        store: Arc<dyn ObjectStore>,
        keys: &Keys,
        mode: LockMode,
        purpose: &str,
        wait: Duration,
    ) -> Result<Self> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let ours = write_lock(store.as_ref(), keys, mode, purpose)?;
            let why = loop {
                match obstacle(store.as_ref(), keys, &ours, mode) {
                    Ok(Obstacle::None) => return Ok(Self { store, name: ours }),
                    Ok(Obstacle::Holders(_)) if start.elapsed() < wait => {
                        // Our file stays, so new shared takers back off while these finish.
                        std::thread::sleep(Duration::from_millis(100 + rand::random::<u64>() % 100));
                    }
                    Ok(Obstacle::Holders(why)) | Ok(Obstacle::Other(why)) => break why,
                    Err(e) => {
                        let _ = store.delete(&format!("locks/{ours}"));
                        return Err(e);
                    }
                }
            };
            store.delete(&format!("locks/{ours}"))?;
            if start.elapsed() >= wait {
                return Err(Error::Locked(format!(
                    "{why}; if that process is gone for good, `cairn unlock` removes locks of dead \
                     processes of this host, `cairn unlock --all` every lock"
                )));
            }
            std::thread::sleep(delay + Duration::from_millis(rand::random::<u64>() % 200));
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// The lock file's name (`locks/<name>`), stable while the lock is held.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.store.delete(&format!("locks/{}", self.name));
    }
}

/// Removes locks of dead processes (every lock with `all`); returns what was removed.
pub fn unlock(store: &dyn ObjectStore, keys: &Keys, all: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, info) in list(store, keys)? {
        let dead = match &info {
            Ok(i) => i.is_dead(),
            Err(_) => false,
        };
        if all || dead {
            store.delete(&format!("locks/{name}"))?;
            removed.push(match info {
                Ok(i) => i.describe(),
                Err(e) => format!("unreadable lock {name} ({e})"),
            });
        }
    }
    Ok(removed)
}

const EROFS: i32 = 30;
const EACCES: i32 = 13;
const ENOSPC: i32 = 28;

impl Repository {
    /// The locks held on the repository now (or why one could not be read).
    pub fn locks(&self) -> Result<Vec<(String, std::result::Result<LockInfo, String>)>> {
        list(self.store.as_ref(), &self.keys)
    }

    pub(crate) fn lock(&self, mode: LockMode, purpose: &str) -> Result<LockGuard> {
        LockGuard::acquire(self.store.clone(), &self.keys, mode, purpose, self.opts.lock_wait)
    }

    /// A shared lock for reading, or none on a repository that cannot be written (a read-only
    /// mount, such as a SAN snapshot mounted for disaster recovery): nothing can change what is
    /// read there through this mount, and reading must not need a write.
    pub(crate) fn read_lock(&self, purpose: &str) -> Result<Option<LockGuard>> {
        match self.lock(LockMode::Shared, purpose) {
            Err(Error::Io { source, path }) if matches!(source.raw_os_error(), Some(EROFS | EACCES)) => {
                eprintln!(
                    "warning: the repository cannot be written ({}: {source}); reading it without a lock",
                    path.display()
                );
                Ok(None)
            }
            r => r.map(Some),
        }
    }

    /// A lock for what frees space (forget, prune), or none when the repository's filesystem is
    /// full: then no backup can write either, and forget and prune are how space comes back.
    pub(crate) fn freeing_lock(&self, mode: LockMode, purpose: &str) -> Result<Option<LockGuard>> {
        match self.lock(mode, purpose) {
            Err(Error::Io { source, path }) if source.raw_os_error() == Some(ENOSPC) => {
                eprintln!(
                    "warning: the repository's filesystem is full ({}); {purpose} runs without a lock \
                     to free space: start no other prune or repair until it ends",
                    path.display()
                );
                Ok(None)
            }
            r => r.map(Some),
        }
    }

    /// Removes locks of dead processes (every lock with `all`).
    pub fn unlock(&self, all: bool) -> Result<Vec<String>> {
        unlock(self.store.as_ref(), &self.keys, all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secrets;
    use crate::storage::LocalStore;

    fn setup() -> (tempfile::TempDir, Arc<dyn ObjectStore>, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let be: Arc<dyn ObjectStore> = Arc::new(LocalStore::create(dir.path()).unwrap());
        (dir, be, Keys::new(Secrets::generate()))
    }

    fn plant(be: &dyn ObjectStore, keys: &Keys, name: &str, info: &LockInfo) {
        be.put(
            &format!("locks/{name}"),
            &keys.seal(&aad(name), &serde_json::to_vec(info).unwrap()),
        )
        .unwrap();
    }

    fn info(host: String, pid: u32, pidns: Option<String>) -> LockInfo {
        LockInfo {
            host,
            pid,
            pidns,
            start: None,
            time: 0,
            exclusive: true,
            mode: Some(LockMode::Exclusive),
            purpose: "x".into(),
        }
    }

    #[test]
    fn modes_coexist_as_documented() {
        let (_d, be, keys) = setup();
        let take = |m| LockGuard::acquire(be.clone(), &keys, m, "t", Duration::ZERO);
        let a = take(LockMode::Shared).unwrap();
        let b = take(LockMode::Backup).unwrap();
        assert!(matches!(take(LockMode::Exclusive), Err(Error::Locked(_))));
        assert!(take(LockMode::Prune).is_err(), "prune waits for a shared lock");
        drop(a);
        let p = take(LockMode::Prune).expect("prune runs beside a backup");
        assert!(take(LockMode::Backup).is_ok(), "a backup runs beside prune");
        assert!(take(LockMode::Shared).is_err());
        assert!(take(LockMode::Prune).is_err());
        drop((b, p));
        assert!(crate::storage::names_in(be.as_ref(), "locks").unwrap().is_empty());
        let x = take(LockMode::Exclusive).unwrap();
        assert!(take(LockMode::Backup).is_err());
        drop(x);
    }

    #[test]
    fn only_a_provably_dead_owner_makes_a_lock_dead() {
        let (_d, be, keys) = setup();
        let ns = current_pidns();
        assert!(ns.is_some());
        // Same host and pid namespace, no such process: dead, ignored and removed by unlock.
        let dead = info(hostname(), 999_999_999, ns.clone());
        assert!(dead.is_dead());
        // A live pid whose start time differs is a reused pid: dead.
        let mut reused = info(hostname(), std::process::id(), ns.clone());
        reused.start = Some(process_start(std::process::id()).unwrap() + 1);
        assert!(reused.is_dead());
        // Never dead, whatever their age: this very process, another pid namespace, another
        // host, a lock of the first format (no namespace recorded).
        let mut alive = info(hostname(), std::process::id(), ns.clone());
        alive.start = process_start(std::process::id());
        let other_ns = info(hostname(), 999_999_999, Some("pid:[1]".into()));
        let other_host = info("elsewhere".into(), 999_999_999, ns.clone());
        let old_format = info(hostname(), 999_999_999, None);
        for i in [&alive, &other_ns, &other_host, &old_format] {
            assert!(!i.is_dead(), "{i:?}");
        }
        plant(be.as_ref(), &keys, "dead", &dead);
        plant(be.as_ref(), &keys, "otherns", &other_ns);
        let g = LockGuard::acquire(be.clone(), &keys, LockMode::Backup, "b", Duration::ZERO);
        assert!(
            matches!(g, Err(Error::Locked(ref m)) if m.contains("pid 999999999")),
            "other namespace blocks"
        );
        let removed = unlock(be.as_ref(), &keys, false).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(
            crate::storage::names_in(be.as_ref(), "locks").unwrap(),
            vec!["otherns".to_string()]
        );
        assert_eq!(unlock(be.as_ref(), &keys, true).unwrap().len(), 1);
    }

    #[test]
    fn a_waiting_exclusive_taker_is_not_starved_by_overlapping_shared_locks() {
        let (_d, be, keys) = setup();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Two threads take overlapping shared locks back to back: there is never a moment
        // without one, so a taker that backs off whenever it sees one never gets in.
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (be, keys, stop, taken) = (be.clone(), keys.clone(), stop.clone(), taken.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(60 * i));
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(g) = LockGuard::acquire(be.clone(), &keys, LockMode::Shared, "s", Duration::ZERO) {
                            taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(120));
                            drop(g);
                        }
                    }
                })
            })
            .collect();
        while taken.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let x = LockGuard::acquire(
            be.clone(),
            &keys,
            LockMode::Exclusive,
            "repair",
            Duration::from_secs(20),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert!(x.is_ok(), "{:?}", x.err());
    }
}
