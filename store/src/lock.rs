//! Repository locks, so an exclusive operation (repair, prune) never runs beside a backup.
//!
//! A lock is a sealed file `locks/<random>` (associated data `"cairn lock v1" | name`) holding
//! JSON `{host, pid, time, exclusive, purpose}`. Backups take shared locks and run side by side;
//! an exclusive lock needs no other lock present. Taking a lock is: write ours, list the others,
//! and if one conflicts remove ours and retry until the wait runs out. Two racing takers may both
//! back off, never both win.
//!
//! A lock is *stale* when its process is gone (same host, no such pid) or when it has not been
//! refreshed for [`STALE_AFTER`] (a holder rewrites its lock every [`REFRESH_EVERY`]). Stale locks
//! are ignored; `cairn unlock` deletes them, `cairn unlock --all` deletes every lock.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{hostname, pid_alive, Backend};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::util::{format_rfc3339, now_unix};

pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// What a lock file says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub time: i64,
    pub exclusive: bool,
    pub purpose: String,
}

impl LockInfo {
    pub fn is_stale(&self) -> bool {
        if self.host == hostname() && !pid_alive(self.pid) {
            return true;
        }
        now_unix() - self.time > STALE_AFTER.as_secs() as i64
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock by pid {} on {} for {:?}, taken {}",
            if self.exclusive { "exclusive" } else { "shared" },
            self.pid,
            self.host,
            self.purpose,
            format_rfc3339(self.time)
        )
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = b"cairn lock v1".to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

fn write_lock(backend: &dyn Backend, keys: &Keys, exclusive: bool, purpose: &str) -> Result<String> {
    let name = hex::encode(rand::random::<[u8; 16]>());
    let info = LockInfo {
        host: hostname(),
        pid: std::process::id(),
        time: now_unix(),
        exclusive,
        purpose: purpose.into(),
    };
    let sealed = keys.seal(&aad(&name), &serde_json::to_vec(&info).expect("lock serialises"));
    backend.write_new(&format!("locks/{name}"), &sealed)?;
    Ok(name)
}

/// Every lock file with what it says (or why it could not be read).
pub fn list(backend: &dyn Backend, keys: &Keys) -> Result<Vec<(String, std::result::Result<LockInfo, String>)>> {
    let mut out = Vec::new();
    for name in backend.list("locks")? {
        let info = match backend.read(&format!("locks/{name}")) {
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
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a lock, waiting up to `wait` for conflicting locks to go away.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        keys: &Keys,
        exclusive: bool,
        purpose: &str,
        wait: Duration,
    ) -> Result<Self> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let ours = write_lock(backend.as_ref(), keys, exclusive, purpose)?;
            let mut conflict = None;
            for (name, info) in list(backend.as_ref(), keys)? {
                if name == ours {
                    continue;
                }
                match info {
                    Ok(i) if i.is_stale() => {}
                    Ok(i) if exclusive || i.exclusive => conflict = Some(i.describe()),
                    Ok(_) => {}
                    Err(e) => {
                        conflict = Some(format!(
                            "unreadable lock file locks/{name} ({e}); remove it with `cairn unlock --all`"
                        ))
                    }
                }
            }
            let Some(why) = conflict else {
                return Ok(Self::hold(backend, keys.clone(), ours, exclusive, purpose.to_string()));
            };
            backend.remove(&format!("locks/{ours}"))?;
            if start.elapsed() >= wait {
                return Err(Error::Locked(format!(
                    "{why}; if that process is gone, run `cairn unlock` to remove stale locks"
                )));
            }
            std::thread::sleep(delay + Duration::from_millis(rand::random::<u64>() % 200));
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn hold(backend: Arc<dyn Backend>, keys: Keys, name: String, exclusive: bool, purpose: String) -> Self {
        let name = Arc::new(Mutex::new(name));
        let (tx, rx) = mpsc::channel::<()>();
        let (b, n) = (backend.clone(), name.clone());
        let refresher = std::thread::spawn(move || {
            // Refresh: write a new lock file, then delete the old one (never rewrite in place).
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH_EVERY) {
                if let Ok(new) = write_lock(b.as_ref(), &keys, exclusive, &purpose) {
                    let mut cur = n.lock().unwrap();
                    let _ = b.remove(&format!("locks/{}", *cur));
                    *cur = new;
                }
            }
        });
        Self {
            backend,
            name,
            stop: Some(tx),
            refresher: Some(refresher),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.name.lock().unwrap().clone();
        let _ = self.backend.remove(&format!("locks/{name}"));
    }
}

/// Removes stale locks (all locks with `all`); returns what was removed.
pub fn unlock(backend: &dyn Backend, keys: &Keys, all: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, info) in list(backend, keys)? {
        let stale = match &info {
            Ok(i) => i.is_stale(),
            Err(_) => false,
        };
        if all || stale {
            backend.remove(&format!("locks/{name}"))?;
            removed.push(match info {
                Ok(i) => i.describe(),
                Err(e) => format!("unreadable lock {name} ({e})"),
            });
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::crypto::Secrets;

    #[test]
    fn shared_locks_coexist_exclusive_waits_and_stale_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let be: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let keys = Keys::new(Secrets::generate());
        let a = LockGuard::acquire(be.clone(), &keys, false, "backup", Duration::ZERO).unwrap();
        let b = LockGuard::acquire(be.clone(), &keys, false, "backup", Duration::ZERO).unwrap();
        let e = LockGuard::acquire(be.clone(), &keys, true, "repair", Duration::ZERO);
        assert!(matches!(e, Err(Error::Locked(_))));
        drop(a);
        drop(b);
        assert!(be.list("locks").unwrap().is_empty());
        let x = LockGuard::acquire(be.clone(), &keys, true, "repair", Duration::ZERO).unwrap();
        assert!(LockGuard::acquire(be.clone(), &keys, false, "backup", Duration::ZERO).is_err());
        drop(x);
        // A lock of a dead process on this host is stale: ignored, and removed by unlock.
        let info = LockInfo {
            host: hostname(),
            pid: 999_999_999,
            time: now_unix(),
            exclusive: true,
            purpose: "x".into(),
        };
        let name = "deadbeef";
        be.write_new(
            &format!("locks/{name}"),
            &keys.seal(&aad(name), &serde_json::to_vec(&info).unwrap()),
        )
        .unwrap();
        let g = LockGuard::acquire(be.clone(), &keys, false, "backup", Duration::ZERO).unwrap();
        drop(g);
        assert_eq!(unlock(be.as_ref(), &keys, false).unwrap().len(), 1);
        assert!(be.list("locks").unwrap().is_empty());
    }
}
