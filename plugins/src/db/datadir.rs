//! Replacing a server's data directories during a restore, with a way back. Each directory is
//! on the host of the member it belongs to.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plugin::Ctx;
use crate::remote::host::Host;

/// Fails unless every directory is absent or empty (disaster recovery targets fresh nodes).
pub async fn require_empty(dirs: &[(Host, PathBuf, String)]) -> Result<()> {
    for (h, d, owner) in dirs {
        if h.dir_has_entries(d).await? {
            return Err(Error::State(format!(
                "disaster recovery needs empty data directories; {} of {owner} is not empty{}",
                d.display(),
                if h.is_local() {
                    String::new()
                } else {
                    format!(" on host {}", h.name())
                }
            )));
        }
    }
    Ok(())
}

/// Data directories moved aside (to `<dir>.cairn-replaced`) while they are rebuilt.
#[derive(Default)]
pub struct Replaced {
    moved: Vec<(Host, PathBuf, PathBuf)>,
}

impl Replaced {
    /// Moves `dir` aside on `host` if it exists, so it can be rebuilt from scratch.
    pub async fn move_aside(&mut self, host: &Host, dir: &Path) -> Result<()> {
        if host.stat(dir).await?.is_none() {
            return Ok(());
        }
        let mut a = dir.as_os_str().to_owned();
        a.push(".cairn-replaced");
        let a = PathBuf::from(a);
        host.remove(&a).await?;
        host.rename(dir, &a).await?;
        self.moved.push((host.clone(), dir.to_path_buf(), a));
        Ok(())
    }

    /// Ends a rebuild: on success the old directories are removed; on failure the servers are
    /// stopped, the old directories put back and the servers started again, best effort.
    pub async fn finish(
        self,
        ctx: &Ctx,
        result: Result<()>,
        stop: &[(Host, Option<String>)],
        start: &[(Host, Option<String>)],
    ) -> Result<()> {
        match result {
            Ok(()) => {
                for (h, _, a) in self.moved {
                    let _ = h.remove(&a).await;
                }
                Ok(())
            }
            Err(e) if !self.moved.is_empty() => {
                ctx.log(format!("restore failed ({e}); putting the old data directories back"));
                for (h, s) in stop {
                    let _ = h.run_configured(s.as_deref()).await;
                }
                for (h, d, a) in &self.moved {
                    let _ = h.remove(d).await;
                    let _ = h.rename(a, d).await;
                }
                for (h, s) in start {
                    let _ = h.run_configured(s.as_deref()).await;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}
