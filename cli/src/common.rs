//! What every subcommand shares: global options, unlocking, and formatting.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_plugins::config::Loaded;
use cairn_store::{Credentials, Location, NewKey, OpenOptions, Progress, Repository};
use clap::Args;

fn no_passphrase() -> &'static str {
    if crate::is_cso() {
        "no passphrase: set password_file (or identity_file) in the configuration, or CAIRN_PASSWORD, or run on a terminal"
    } else {
        "no passphrase: set CAIRN_PASSWORD, pass --password-file or --identity, or run on a terminal"
    }
}

/// Options that apply to every subcommand (listed after the subcommand's own in `--help`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOpts {
    /// Repository path [default: the configuration's `repository`, else /backups].
    #[arg(long, short = 'r', global = true, env = "CAIRN_REPO")]
    pub repo: Option<PathBuf>,
    /// Configuration file (databases, key, maintenance commands) [default: /etc/cairn/cairn.toml
    /// when it exists].
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read the passphrase from this file (first line). Otherwise CAIRN_PASSWORD, else a prompt.
    #[arg(long, global = true, env = "CAIRN_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Unlock with this age X25519 identity file instead of a passphrase.
    #[arg(long, global = true, env = "CAIRN_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Directory for the local index cache.
    #[arg(long, global = true, env = "CAIRN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Seconds to wait for a conflicting lock before giving up.
    #[arg(long, global = true, default_value_t = 60)]
    pub lock_wait: u64,
    /// scrypt work factor (log2 N, 10-22) for new passphrase key files; default 16 (64 MiB,
    /// about 0.2 s); each step up doubles memory and time.
    #[arg(long, global = true, env = "CAIRN_SCRYPT_LOG_N", hide_short_help = true,
          value_parser = clap::value_parser!(u8).range(10..=22))]
    pub scrypt_log_n: Option<u8>,
    /// No progress output.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

impl GlobalOpts {
    /// The configuration: `--config`/`CAIRN_CONFIG` (must exist), else the default file if it
    /// exists, else none.
    pub fn load_config(&self) -> Result<Option<Loaded>> {
        match &self.config {
            Some(p) => Ok(Some(cairn_plugins::config::load(p)?)),
            None => {
                let p = std::path::Path::new(cairn_plugins::config::DEFAULT_PATH);
                Ok(if p.exists() {
                    Some(cairn_plugins::config::load(p)?)
                } else {
                    None
                })
            }
        }
    }

    /// The configuration, which system operations need.
    pub fn require_config(&self) -> Result<Loaded> {
        self.load_config()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no configuration: write {} (see examples/cairn.toml) or {}",
                cairn_plugins::config::DEFAULT_PATH,
                if crate::is_cso() {
                    "set CAIRN_CONFIG to its path"
                } else {
                    "pass --config FILE"
                }
            )
        })
    }

    /// Options given on the command line win over the configuration file.
    pub fn with_config(&self, loaded: Option<&Loaded>) -> GlobalOpts {
        let mut g = self.clone();
        if let Some(l) = loaded {
            let c = &l.config;
            g.repo = g.repo.or_else(|| c.repository.clone());
            if g.password_file.is_none() && g.identity.is_none() && crate::secrets::password().is_none() {
                g.password_file = c.password_file.clone();
                g.identity = c.identity_file.clone();
            }
            g.cache_dir = g.cache_dir.or_else(|| c.cache_dir.clone());
        }
        g
    }

    /// The repository's location: `--repo`, `CAIRN_REPO` or the configuration, else `/backups`.
    pub fn repo_location(&self) -> Result<Location> {
        let repo = self.repo.clone().unwrap_or_else(|| PathBuf::from("/backups"));
        let text = repo
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("repository location {} is not UTF-8", repo.display()))?;
        Ok(Location::parse(text)?)
    }

    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            cache_dir: self.cache_dir.clone().unwrap_or_else(cairn_store::default_cache_dir),
            lock_wait: Duration::from_secs(self.lock_wait),
        }
    }

    /// The passphrase from --password-file or CAIRN_PASSWORD, if given.
    fn given_passphrase(&self) -> Result<Option<String>> {
        if let Some(f) = &self.password_file {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading password file {}", f.display()))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                bail!("password file {} is empty", f.display());
            }
            return Ok(Some(line));
        }
        Ok(crate::secrets::password())
    }

    pub fn credentials(&self) -> Result<Credentials> {
        if let Some(id) = &self.identity {
            return Ok(Credentials::IdentityFile(id.clone()));
        }
        if let Some(p) = self.given_passphrase()? {
            return Ok(Credentials::Passphrase(p.into()));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("repository passphrase: ")?;
            return Ok(Credentials::Passphrase(p.into()));
        }
        bail!("{}", no_passphrase())
    }

    /// The key for a new repository: the identity's recipient, or a passphrase.
    pub fn new_key(&self) -> Result<NewKey> {
        if let Some(id) = &self.identity {
            return Ok(NewKey::Recipient(cairn_store::recipient_of_identity_file(id)?));
        }
        let passphrase = match self.given_passphrase()? {
            Some(p) => p,
            None if std::io::stdin().is_terminal() => {
                let a = rpassword::prompt_password("new repository passphrase: ")?;
                let b = rpassword::prompt_password("again: ")?;
                if a != b {
                    bail!("the passphrases differ");
                }
                a
            }
            None => bail!("{}", no_passphrase()),
        };
        if passphrase.is_empty() {
            bail!("an empty passphrase is not allowed");
        }
        Ok(NewKey::Passphrase {
            passphrase: passphrase.into(),
            log_n: self.scrypt_log_n,
        })
    }

    /// Opens the repository, taking what the command line leaves open from the configuration.
    pub fn open(&self) -> Result<Repository> {
        let loaded = if self.repo.is_some() && (self.password_file.is_some() || self.identity.is_some()) {
            None
        } else {
            self.load_config()?
        };
        self.with_config(loaded.as_ref()).open_exact()
    }

    /// Opens the repository from these options alone.
    pub fn open_exact(&self) -> Result<Repository> {
        Ok(Repository::open(
            &self.repo_location()?,
            &self.credentials()?,
            self.open_options(),
        )?)
    }

    pub fn progress(&self) -> Arc<dyn Progress> {
        crate::progress::for_terminal(self.quiet)
    }
}

/// `1.5 GiB`
pub fn bytes(n: u64) -> String {
    cairn_store::format_bytes(n)
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<cairn_store::Error>(),
                Some(cairn_store::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_units() {
        assert_eq!(super::bytes(12), "12 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
