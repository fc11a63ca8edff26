//! Opening and creating repositories.
//!
//! A [`Repository`] exists only unlocked: [`Repository::open`] has already found a key file the
//! credentials open, checked the format version and authenticated the config. Operations that need
//! the index ([`crate::Backup`], restore, check) open their own connection to the local cache and
//! sync it with the packs first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Config, InitOptions, CONFIG_AAD, CONFIG_PATH, FORMAT_VERSION, MARKER_PATH};
use crate::crypto::{Keys, Secrets};
use crate::error::{Error, Result};
use crate::id::RepoId;
use crate::index::Index;
use crate::keyfile::{self, Credentials, NewKey};
use crate::storage::{Location, ObjectStore};

/// Options that apply to every opened repository.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Where the local index cache lives (one subdirectory per repository id).
    pub cache_dir: PathBuf,
    /// How long to wait for a conflicting lock before giving up.
    pub lock_wait: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            lock_wait: Duration::from_secs(60),
        }
    }
}

/// `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`, else a temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_CACHE_DIR") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("cairn");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/cairn");
    }
    std::env::temp_dir().join("cairn-cache")
}

/// An unlocked repository.
#[derive(Clone)]
pub struct Repository {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) keys: Keys,
    pub(crate) config: Config,
    key_id: String,
    pub(crate) opts: OpenOptions,
}

impl Repository {
    /// Creates a repository at `location` (absent or empty) with one key.
    pub fn init(location: &Location, key: &NewKey, init: &InitOptions, opts: OpenOptions) -> Result<Self> {
        init.chunker.validate().map_err(Error::Invalid)?;
        if !(1..=22).contains(&init.compression_level) {
            return Err(Error::Invalid(format!(
                "compression level {} is not within 1..=22",
                init.compression_level
            )));
        }
        if init.delta.max_depth == 0 || init.delta.max_depth > 32 || !(1..=19).contains(&init.delta.level) {
            return Err(Error::Invalid(
                "delta max depth must be 1..=32 and its zstd level 1..=19".into(),
            ));
        }
        if init.pack_size < (64 << 10) || init.pack_size > (1 << 31) {
            return Err(Error::Invalid("pack size must be between 64 KiB and 2 GiB".into()));
        }
        let store = location.create()?;
        let secrets = Secrets::generate();
        let keys = Keys::new(secrets.clone());
        let config = Config {
            version: FORMAT_VERSION,
            repo_id: RepoId::random(),
            created: crate::util::format_rfc3339(crate::util::now_unix()),
            chunker: init.chunker,
            compression_level: init.compression_level,
            pack_size: init.pack_size,
            delta: init.delta.clone(),
        };
        // Key and config first, the marker last: a directory without the marker is no repository,
        // so an init that dies half-way never leaves something that looks usable.
        let key_id = keyfile::write_key(store.as_ref(), &config.repo_id, &secrets, key, "init")?;
        let sealed = keys.seal(CONFIG_AAD, &serde_json::to_vec(&config).expect("config serialises"));
        store.put(CONFIG_PATH, &sealed)?;
        store.put(MARKER_PATH, config::marker_text().as_bytes())?;
        Ok(Self {
            store,
            keys,
            config,
            key_id,
            opts,
        })
    }

    /// Opens and unlocks the repository at `location`.
    pub fn open(location: &Location, creds: &Credentials, opts: OpenOptions) -> Result<Self> {
        let store = location.open()?;
        let marker = match store.get(MARKER_PATH) {
            Ok(m) => m,
            Err(Error::NotFound(_)) => {
                let empty = store.list("")?.is_empty() && store.leftovers()?.is_empty();
                return Err(if empty {
                    Error::NoRepository(location.to_string())
                } else {
                    Error::ForeignRepository {
                        path: location.to_string(),
                        reason: "no CAIRN marker file".into(),
                    }
                });
            }
            Err(e) => return Err(e),
        };
        let version = config::parse_marker(&marker).ok_or_else(|| Error::ForeignRepository {
            path: location.to_string(),
            reason: "the CAIRN marker file is not Cairn's".into(),
        })?;
        if !(config::OLDEST_FORMAT..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let (key_id, repo_id, secrets) = keyfile::unlock(store.as_ref(), creds)?;
        let keys = Keys::new(secrets);
        let sealed = store.get(CONFIG_PATH)?;
        let config: Config = serde_json::from_slice(&keys.open("config", CONFIG_AAD, &sealed)?)
            .map_err(|e| crate::error::corrupt("config", e.to_string()))?;
        if config.repo_id != repo_id {
            return Err(Error::Key(format!("key file {key_id} belongs to another repository")));
        }
        if config.version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Self {
            store,
            keys,
            config,
            key_id,
            opts,
        })
    }

    /// Where the repository is.
    pub fn location(&self) -> &Location {
        self.store.location()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn id(&self) -> RepoId {
        self.config.repo_id
    }

    /// The key file that unlocked this repository.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Brings the index cache up to date with the packs (one listing) and returns the handle
    /// reading starts from, the connection that synced and what the sync found.
    pub(crate) fn sync_index(&self) -> Result<(Synced, Index, crate::index::SyncStats)> {
        let mut idx = Index::open(&self.opts.cache_dir, &self.config.repo_id)?;
        let stats = idx.sync(self.store.as_ref(), &self.keys)?;
        Ok((Synced { repo: self.clone() }, idx, stats))
    }

    /// [`Repository::sync_index`] without the sync's findings.
    pub(crate) fn synced(&self) -> Result<(Synced, Index)> {
        self.sync_index().map(|(s, idx, _)| (s, idx))
    }
}

/// A repository whose index cache this process has brought up to date with the packs: every
/// pack published before the sync is findable through it. Whatever reads blobs starts from one
/// (a [`crate::read::BlobReader`] is made only from a `Synced`), so no reader trusts a cache
/// nobody synced; a backup's own packs are indexed as it publishes them.
#[derive(Clone)]
pub(crate) struct Synced {
    repo: Repository,
}

impl Synced {
    /// Another connection to the synced cache (each thread has its own).
    pub fn index(&self) -> Result<Index> {
        Index::open(&self.repo.opts.cache_dir, &self.repo.config.repo_id)
    }
}

impl std::ops::Deref for Synced {
    type Target = Repository;

    fn deref(&self) -> &Repository {
        &self.repo
    }
}

/// A fresh repository in `dir/repo` (cache in `dir/cache`) with a cheap key, for unit tests.
#[cfg(test)]
pub(crate) fn test_repo(dir: &std::path::Path) -> Repository {
    let opts = OpenOptions {
        cache_dir: dir.join("cache"),
        ..Default::default()
    };
    let key = NewKey::Passphrase {
        passphrase: "pw".to_string().into(),
        log_n: Some(crate::keyfile::MIN_WORK_FACTOR),
    };
    let location = Location::Local(dir.join("repo"));
    Repository::init(&location, &key, &InitOptions::default(), opts.clone()).unwrap();
    Repository::open(&location, &Credentials::Passphrase("pw".to_string().into()), opts).unwrap()
}

/// A backup named `name` of a test repository, without progress.
#[cfg(test)]
pub(crate) fn test_backup(repo: &Repository, name: &str) -> crate::write::Backup {
    let opts = crate::write::BackupOptions {
        name: Some(name.into()),
        ..Default::default()
    };
    repo.backup(opts, std::sync::Arc::new(crate::NoProgress)).unwrap()
}
