//! Key files: the repository's [`Secrets`] inside an age-encrypted file under `keys/`, one file per
//! way to unlock (a passphrase, or an age X25519 recipient). Adding or removing a key touches only
//! `keys/`; no data is re-encrypted, because the data key inside is the same in every key file.
//!
//! Plaintext of a key file (JSON):
//! `{"version":1,"repo_id":"<hex>","created":"<RFC 3339>","host":"...","label":"...","secrets":{...}}`.
//! A future write-only key file would carry `id_key`, `chunker_key` and a public key instead of
//! `data_key`; readers refuse a key file whose `version` they do not know.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::crypto::Secrets;
use crate::error::{Error, Result};
use crate::id::RepoId;
use crate::repo::Repository;
use crate::storage::ObjectStore;

const KEYFILE_VERSION: u32 = 1;
/// Highest scrypt work factor accepted when unlocking (age's own default ceiling is 22).
pub const MAX_WORK_FACTOR: u8 = 22;
/// Lowest work factor a new key file may have.
pub const MIN_WORK_FACTOR: u8 = 10;
/// The work factor of new passphrase key files: scrypt with N = 2^16 (r = 8) needs 64 MiB and
/// about 0.2 s, near restic's calibration (about 0.5 s within 60 MiB). age's own default
/// calibrates to one second, which is 2^20 and 1 GiB on current machines: every command would
/// spend that to unlock. Stronger factors stay available (`--scrypt-log-n` up to 22).
pub const DEFAULT_WORK_FACTOR: u8 = 16;

/// How to unlock a repository.
#[derive(Clone)]
pub enum Credentials {
    Passphrase(SecretString),
    /// Path to an age identity file (`AGE-SECRET-KEY-1...` lines).
    IdentityFile(PathBuf),
}

/// A way to unlock that a new key file is made for.
#[derive(Clone)]
pub enum NewKey {
    /// `log_n` overrides the scrypt work factor ([`DEFAULT_WORK_FACTOR`]; `MIN..=MAX_WORK_FACTOR`).
    Passphrase {
        passphrase: SecretString,
        log_n: Option<u8>,
    },
    /// An age X25519 recipient (`age1...`).
    Recipient(String),
}

impl NewKey {
    pub fn passphrase(p: &str) -> Self {
        NewKey::Passphrase {
            passphrase: SecretString::from(p.to_string()),
            log_n: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFileBody {
    version: u32,
    repo_id: RepoId,
    created: String,
    host: String,
    label: String,
    secrets: Secrets,
}

/// What `cairn key list` shows about a key file, readable without unlocking it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    /// `passphrase` or `x25519`, from the age header's recipient stanza.
    pub kind: String,
    pub current: bool,
}

pub(crate) fn write_key(
    store: &dyn ObjectStore,
    repo_id: &RepoId,
    secrets: &Secrets,
    new: &NewKey,
    label: &str,
) -> Result<String> {
    let body = KeyFileBody {
        version: KEYFILE_VERSION,
        repo_id: *repo_id,
        created: crate::util::format_rfc3339(crate::util::now_unix()),
        host: crate::util::hostname(),
        label: label.to_string(),
        secrets: secrets.clone(),
    };
    let plain = serde_json::to_vec(&body).expect("key file body serialises");
    let encryptor = match new {
        NewKey::Passphrase { passphrase, log_n } => {
            let n = log_n.unwrap_or(DEFAULT_WORK_FACTOR);
            if !(MIN_WORK_FACTOR..=MAX_WORK_FACTOR).contains(&n) {
                return Err(Error::Invalid(format!(
                    "scrypt work factor {n} is outside {MIN_WORK_FACTOR}..={MAX_WORK_FACTOR}"
                )));
            }
            let mut r = age::scrypt::Recipient::new(passphrase.clone());
            r.set_work_factor(n);
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        }
        NewKey::Recipient(s) => {
            let r: age::x25519::Recipient = s
                .trim()
                .parse()
                .map_err(|e| Error::Key(format!("not an age X25519 recipient ({s:?}): {e}")))?;
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        }
    }
    .map_err(|e| Error::Key(format!("cannot encrypt key file: {e}")))?;
    let mut out = Vec::new();
    let mut w = encryptor.wrap_output(&mut out).map_err(|e| Error::Key(e.to_string()))?;
    w.write_all(&plain)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| Error::Key(e.to_string()))?;
    let id = hex::encode(rand::random::<[u8; 8]>());
    store.put(&format!("keys/{id}"), &out)?;
    Ok(id)
}

fn identities(creds: &Credentials) -> Result<Vec<Box<dyn age::Identity>>> {
    Ok(match creds {
        Credentials::Passphrase(p) => {
            let mut id = age::scrypt::Identity::new(p.clone());
            id.set_max_work_factor(MAX_WORK_FACTOR);
            vec![Box::new(id)]
        }
        Credentials::IdentityFile(path) => load_identity_file(path)?,
    })
}

fn load_identity_file(path: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let mut out: Vec<Box<dyn age::Identity>> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let id: age::x25519::Identity = line
            .parse()
            .map_err(|e| Error::Key(format!("{}: not an age X25519 identity: {e}", path.display())))?;
        out.push(Box::new(id));
    }
    if out.is_empty() {
        return Err(Error::Key(format!("{}: no age identity in the file", path.display())));
    }
    Ok(out)
}

/// Writes a new age X25519 identity to `path` (mode 0600, must not exist); returns its recipient.
pub fn generate_identity_file(path: &Path) -> Result<String> {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::OpenOptionsExt;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created by cairn {}\n# public key: {recipient}\n{}\n",
        crate::util::format_rfc3339(crate::util::now_unix()),
        id.to_string().expose_secret()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
    Ok(recipient)
}

/// The age recipient (`age1...`) for the identities in an identity file.
pub fn recipient_of_identity_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| Error::Key(format!("{}: no age identity in the file", path.display())))?;
    let id: age::x25519::Identity = line
        .parse()
        .map_err(|e| Error::Key(format!("{}: {e}", path.display())))?;
    Ok(id.to_public().to_string())
}

fn try_unlock(data: &[u8], ids: &[Box<dyn age::Identity>]) -> Option<KeyFileBody> {
    let decryptor = age::Decryptor::new(data).ok()?;
    let mut r = decryptor.decrypt(ids.iter().map(|i| i.as_ref())).ok()?;
    let mut plain = Vec::new();
    r.read_to_end(&mut plain).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// Tries every key file; returns the id of the one that opened, the repo id and the secrets.
pub(crate) fn unlock(store: &dyn ObjectStore, creds: &Credentials) -> Result<(String, RepoId, Secrets)> {
    let ids = identities(creds)?;
    let names = crate::storage::names_in(store, "keys")?;
    for name in &names {
        let data = store.get(&format!("keys/{name}"))?;
        // Skip files whose recipient type cannot match, to avoid a pointless scrypt run.
        let kind = stanza_kind(&data);
        let wanted = match creds {
            Credentials::Passphrase(_) => "scrypt",
            Credentials::IdentityFile(_) => "X25519",
        };
        if kind.as_deref() != Some(wanted) {
            continue;
        }
        if let Some(body) = try_unlock(&data, &ids) {
            if body.version != KEYFILE_VERSION {
                return Err(Error::Key(format!(
                    "key file {name} has version {}, this cairn reads {KEYFILE_VERSION}",
                    body.version
                )));
            }
            return Ok((name.clone(), body.repo_id, body.secrets));
        }
    }
    Err(Error::WrongKey {
        tried: names.len(),
        keys_dir: store.location().describe("keys"),
    })
}

/// The first recipient stanza's type in an age header (`scrypt`, `X25519`, ...).
fn stanza_kind(data: &[u8]) -> Option<String> {
    let head = &data[..data.len().min(512)];
    let text = String::from_utf8_lossy(head);
    let line = text.lines().find(|l| l.starts_with("-> "))?;
    line[3..].split_whitespace().next().map(str::to_string)
}

pub(crate) fn list(store: &dyn ObjectStore, current: &str) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for name in crate::storage::names_in(store, "keys")? {
        let data = store.get(&format!("keys/{name}"))?;
        let kind = match stanza_kind(&data).as_deref() {
            Some("scrypt") => "passphrase".to_string(),
            Some("X25519") => "x25519".to_string(),
            Some(other) => other.to_string(),
            None => "unknown".to_string(),
        };
        out.push(KeyInfo {
            current: name == current,
            id: name,
            kind,
        });
    }
    Ok(out)
}

impl Repository {
    /// Adds a key file that unlocks this repository.
    pub fn add_key(&self, key: &NewKey, label: &str) -> Result<String> {
        write_key(
            self.store.as_ref(),
            &self.config.repo_id,
            self.keys.secrets(),
            key,
            label,
        )
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        list(self.store.as_ref(), self.key_id())
    }

    /// Removes a key file. The key in use and the last key cannot be removed.
    pub fn remove_key(&self, id: &str) -> Result<()> {
        let keys = self.list_keys()?;
        if !keys.iter().any(|k| k.id == id) {
            return Err(Error::Key(format!("no key {id:?} in this repository")));
        }
        if id == self.key_id() {
            return Err(Error::Key(
                "refusing to remove the key that unlocked this session; unlock with another key first".into(),
            ));
        }
        if keys.len() == 1 {
            return Err(Error::Key("refusing to remove the last key".into()));
        }
        self.store.delete(&format!("keys/{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    fn setup() -> (tempfile::TempDir, LocalStore, RepoId, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(&dir.path().join("repo")).unwrap();
        (dir, store, RepoId([3; 32]), Secrets::generate())
    }

    fn pass(p: &str) -> NewKey {
        NewKey::Passphrase {
            passphrase: p.to_string().into(),
            log_n: Some(MIN_WORK_FACTOR),
        }
    }

    #[test]
    fn passphrase_and_identity_key_files_unlock_the_same_secrets() {
        let (dir, store, repo, secrets) = setup();
        let by_pass = write_key(&store, &repo, &secrets, &pass("pw"), "init").unwrap();
        let idfile = dir.path().join("id.txt");
        let recipient = generate_identity_file(&idfile).unwrap();
        assert_eq!(recipient_of_identity_file(&idfile).unwrap(), recipient);
        let by_id = write_key(&store, &repo, &secrets, &NewKey::Recipient(recipient), "ops").unwrap();

        let (id, r, s) = unlock(&store, &Credentials::Passphrase("pw".to_string().into())).unwrap();
        assert_eq!((id.as_str(), r), (by_pass.as_str(), repo));
        assert_eq!(s.data_key, secrets.data_key);
        let (id, _, s) = unlock(&store, &Credentials::IdentityFile(idfile)).unwrap();
        assert_eq!(id, by_id);
        assert_eq!(s.chunker_key, secrets.chunker_key);

        let mut kinds: Vec<(String, bool)> = list(&store, &by_pass)
            .unwrap()
            .into_iter()
            .map(|k| (k.kind, k.current))
            .collect();
        kinds.sort();
        assert_eq!(kinds, vec![("passphrase".into(), true), ("x25519".into(), false)]);
    }

    #[test]
    fn wrong_credentials_bad_work_factors_and_future_versions_are_refused() {
        let (dir, store, repo, secrets) = setup();
        write_key(&store, &repo, &secrets, &pass("pw"), "init").unwrap();
        let e = unlock(&store, &Credentials::Passphrase("nope".to_string().into())).unwrap_err();
        assert!(matches!(e, Error::WrongKey { tried: 1, .. }), "{e}");
        let other = dir.path().join("other.txt");
        generate_identity_file(&other).unwrap();
        assert!(matches!(
            unlock(&store, &Credentials::IdentityFile(other)),
            Err(Error::WrongKey { .. })
        ));
        for n in [MIN_WORK_FACTOR - 1, MAX_WORK_FACTOR + 1] {
            let k = NewKey::Passphrase {
                passphrase: "pw".to_string().into(),
                log_n: Some(n),
            };
            assert!(matches!(
                write_key(&store, &repo, &secrets, &k, "x"),
                Err(Error::Invalid(_))
            ));
        }
        assert!(matches!(
            write_key(&store, &repo, &secrets, &NewKey::Recipient("age1nonsense".into()), "x"),
            Err(Error::Key(_))
        ));
        // A key file from a newer cairn (another version of the body) is named, not misread.
        let (_d2, store2, ..) = setup();
        let body = serde_json::json!({"version": 2, "repo_id": repo, "created": "", "host": "", "label": "",
            "secrets": secrets});
        let r = age::scrypt::Recipient::new("pw".to_string().into());
        let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(&serde_json::to_vec(&body).unwrap()).unwrap();
        w.finish().unwrap();
        store2.put("keys/future", &out).unwrap();
        let e = unlock(&store2, &Credentials::Passphrase("pw".to_string().into())).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn identity_key_file() -> (Vec<u8>, age::x25519::Identity) {
            let id = age::x25519::Identity::generate();
            let (_d, store, repo, secrets) = setup();
            let name = write_key(
                &store,
                &repo,
                &secrets,
                &NewKey::Recipient(id.to_public().to_string()),
                "p",
            )
            .unwrap();
            (store.get(&format!("keys/{name}")).unwrap(), id)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Random bytes as a key file: never a panic, never a key.
            #[test]
            fn random_key_files_are_refused(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
                let _ = stanza_kind(&data);
                let id: Box<dyn age::Identity> = Box::new(age::x25519::Identity::generate());
                prop_assert!(try_unlock(&data, &[id]).is_none());
            }

            /// A real key file with bytes changed, cut or appended: it opens only if unchanged,
            /// and never panics.
            #[test]
            fn mutated_key_files_never_open(pos in any::<prop::sample::Index>(), byte in any::<u8>(),
                                            cut in any::<bool>(), extra in proptest::collection::vec(any::<u8>(), 0..8)) {
                let (mut data, id) = identity_key_file();
                let i = pos.index(data.len());
                let original = data.clone();
                if cut {
                    data.truncate(i);
                } else {
                    data[i] ^= byte.max(1);
                }
                data.extend_from_slice(&extra);
                let _ = stanza_kind(&data);
                let opened = try_unlock(&data, &[Box::new(id) as Box<dyn age::Identity>]);
                prop_assert!(opened.is_none() || data == original);
            }
        }
    }
}
