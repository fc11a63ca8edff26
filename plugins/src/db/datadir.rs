//! Replacing a server's data directories during a restore, with a way back.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plugin::Ctx;
use crate::process;

/// Fails unless every directory is absent or empty (disaster recovery targets fresh nodes).
pub fn require_empty<'a>(dirs: impl IntoIterator<Item = (&'a Path, String)>) -> Result<()> {
    for (d, owner) in dirs {
        if std::fs::read_dir(d).map(|mut r| r.next().is_some()).unwrap_or(false) {
            return Err(Error::State(format!(
                "disaster recovery needs empty data directories; {} of {owner} is not empty",
                d.display()
            )));
        }
    }
    Ok(())
}

/// Data directories moved aside (to `<dir>.cairn-replaced`) while they are rebuilt.
#[derive(Default)]
pub struct Replaced {
    moved: Vec<(PathBuf, PathBuf)>,
}

impl Replaced {
    /// Moves `dir` aside if it exists, so it can be rebuilt from scratch.
    pub fn move_aside(&mut self, dir: &Path) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        let mut a = dir.as_os_str().to_owned();
        a.push(".cairn-replaced");
        let a = PathBuf::from(a);
        let _ = std::fs::remove_dir_all(&a);
        std::fs::rename(dir, &a).map_err(Error::io(format!("moving {} aside", dir.display())))?;
        self.moved.push((dir.to_path_buf(), a));
        Ok(())
    }

    /// Ends a rebuild: on success the old directories are removed; on failure the servers are
    /// stopped, the old directories put back and the servers started again, best effort.
    pub async fn finish(
        self,
        ctx: &Ctx,
        result: Result<()>,
        stop: &[Option<String>],
        start: &[Option<String>],
    ) -> Result<()> {
        match result {
            Ok(()) => {
                for (_, a) in self.moved {
                    let _ = std::fs::remove_dir_all(&a);
                }
                Ok(())
            }
            Err(e) if !self.moved.is_empty() => {
                ctx.log(format!("restore failed ({e}); putting the old data directories back"));
                for s in stop {
                    let _ = process::run_configured(s.as_deref()).await;
                }
                for (d, a) in &self.moved {
                    let _ = std::fs::remove_dir_all(d);
                    let _ = std::fs::rename(a, d);
                }
                for s in start {
                    let _ = process::run_configured(s.as_deref()).await;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}
