//! A repository in a bucket of an S3-compatible object store (Garage, Ceph RGW, AWS S3, MinIO).
//!
//! Objects keep the repository's names under the location's prefix (`PREFIX/packs/ab/<id>`).
//! Requests go through the `object_store` crate (request signing, retries with backoff on
//! timeouts and 5xx, multipart uploads), on a runtime of this store's own: callers stay
//! synchronous.
//!
//! How it keeps the object-store contract (`storage/mod.rs`):
//! 1. A `PUT` makes an object visible whole or not at all; a pack (streamed in, named at the
//!    end) is held in memory until [`ObjectWriter::finish`] and then put, as a multipart upload
//!    of parts sent in parallel when it is large. An upload cut short is never visible (the
//!    store keeps its parts until the bucket's lifecycle rule for incomplete multipart uploads
//!    removes them; README says to set one).
//! 2. Names are put once (packs are content-named: a repeated put has the same bytes).
//! 3. **Put-if-absent without conditional writes.** Garage does not honour `If-None-Match` on
//!    `PUT`, so this store does not rely on it. A writer of `NAME` first puts a *claim*
//!    `claims/NAME/<random>`, then lists `claims/NAME/`: if it sees another live claim it takes
//!    its own back, waits a random moment and starts again (or gives up after
//!    [`CLAIM_TRIES`]); if it sees only its own, it checks that `NAME` is absent, puts it and
//!    removes its claim. Two writers cannot both see only their own claim: with read-after-write
//!    consistent listing (AWS S3; Garage in its default `consistency_mode = "consistent"`), the
//!    later of the two claims was put after the earlier writer's listing or before it; if
//!    after, the later writer's own listing (made after its claim) shows the earlier claim; if
//!    before, the earlier writer's listing shows it. So at most one of two racing writers puts
//!    `NAME`, and a writer that found `NAME` taken reports it taken. A claim older than
//!    [`CLAIM_STALE`] (by the store's clock: its listed time against the new claim's) is one a
//!    crashed writer left; it is removed and not counted. A writer that took longer than
//!    [`CLAIM_HOLD`] between its claim and its put (a stopped process) starts again rather than
//!    put on a claim others may now treat as stale.
//! 4. A `404` is [`Error::NotFound`]; every other failure (`403` wrong credentials, a missing
//!    bucket, a timeout after the retries) is an error that says what was asked and why.
//! 5. Deleting a missing object succeeds (S3's `DELETE` does).
//! 6. Listing is one paginated `ListObjectsV2` over the prefix, whatever its depth.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};

use super::{Location, ObjectInfo, ObjectReader, ObjectStore, ObjectWriter, S3Location};
use crate::error::{Error, Result};

mod windows;
use windows::{Name, Windows};

/// Objects at least this large are put as multipart uploads.
const MULTIPART_ABOVE: usize = 16 << 20;
/// Part size of a multipart upload, and how many parts are in flight at once.
const PART: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;
/// Packs a backup puts at once (each a multipart upload of its own).
const PACKS_IN_FLIGHT: usize = 2;
/// Retries of a request that timed out or got a 5xx, with backoff (see `connect`).
const RETRIES: usize = 10;
/// How often a writer of a name tries to be the only claimant before it gives up.
const CLAIM_TRIES: u32 = 20;
/// A claim this old (by the store's clock) was left by a writer that crashed.
const CLAIM_STALE: Duration = Duration::from_secs(600);
/// A writer that held its claim this long before putting starts again.
const CLAIM_HOLD: Duration = Duration::from_secs(60);

/// A bucket (and prefix) of an S3-compatible store.
pub struct S3Store {
    location: Location,
    s3: Arc<AmazonS3>,
    prefix: String,
    rt: Arc<tokio::runtime::Runtime>,
    /// Windows of packs being read, shared by every reader of this store (`windows.rs`).
    windows: Arc<Windows>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({})", self.location)
    }
}

/// Credentials: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, else the profile
/// (`AWS_PROFILE`, default `default`) of the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`).
fn credentials() -> Result<(String, String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok((id, secret, env("AWS_SESSION_TOKEN")));
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let missing = || {
        Error::Invalid(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in \
             ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE)"
                .into(),
        )
    };
    let Some(file) = file else {
        return Err(missing());
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(Error::Io { path: file, source: e }),
    };
    let section = parse_profile(&text, &profile);
    match (section.get("aws_access_key_id"), section.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok((id.clone(), secret.clone(), section.get("aws_session_token").cloned())),
        _ => Err(Error::Invalid(format!(
            "{}: no aws_access_key_id and aws_secret_access_key in profile [{profile}]",
            file.display()
        ))),
    }
}

/// The `key = value` lines of `[profile]` in an INI-style AWS credentials file.
fn parse_profile(text: &str, profile: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

impl S3Store {
    /// The store at `loc`; the bucket must exist (a missing one is reported by the first
    /// request, which [`Self::open`] and [`Self::create`] make).
    fn connect(loc: &S3Location) -> Result<Self> {
        // Two TLS stacks are built in (ureq's and this one's): rustls then has no default and
        // must be told which to use. An error means one is installed already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (id, secret, token) = credentials()?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let mut client = object_store::ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        let ca_file = std::env::var_os("CAIRN_S3_CA_FILE").filter(|v| !v.is_empty());
        let bad_ca = |why: String| {
            let ca = ca_file.as_deref().unwrap_or_default().to_string_lossy();
            Error::Invalid(format!("CAIRN_S3_CA_FILE {ca}: {why}"))
        };
        if let Some(ca) = &ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::Io {
                path: ca.clone().into(),
                source: e,
            })?;
            let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| bad_ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad_ca("holds no PEM certificate".into()));
            }
            for c in certs {
                client = client.with_root_certificate(c);
            }
        }
        // Patient enough for a node of the cluster to restart and its peers to reconnect
        // (Garage: a few seconds): up to about a minute and a half of backoff (with jitter)
        // over ten retries.
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(250),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: RETRIES,
            retry_timeout: Duration::from_secs(180),
        };
        // Client options first: they carry allow_http, which a later call would reset.
        let mut b = AmazonS3Builder::new()
            .with_client_options(client)
            .with_endpoint(&loc.endpoint)
            .with_allow_http(loc.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&loc.bucket)
            .with_region(region)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_retry(retry);
        if let Some(t) = token {
            b = b.with_token(t);
        }
        let s3 = b.build().map_err(|e| match &ca_file {
            // The client is built here, and what fails to build it is a certificate.
            Some(_) => bad_ca(with_causes(&e)),
            None => Error::Invalid(format!("S3 location {}: {}", Location::S3(loc.clone()), explain(&e))),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                path: "tokio runtime".into(),
                source: e,
            })?;
        let s3 = Arc::new(s3);
        let prefix = loc.prefix.clone();
        let fetch: windows::Fetch = {
            let (s3, prefix) = (s3.clone(), prefix.clone());
            Arc::new(move |name: Name, r: Range<u64>| {
                let (s3, key) = (s3.clone(), key_of(&prefix, &name));
                Box::pin(async move {
                    let _t = Trace::new("get window", &name, r.end - r.start);
                    get_sized(&s3, &key, r.into()).await.ok()
                })
            })
        };
        Ok(Self {
            location: Location::S3(loc.clone()),
            windows: Windows::new(fetch, rt.handle().clone()),
            s3,
            prefix,
            rt: Arc::new(rt),
        })
    }

    /// The store of an existing repository: its `config` object must be there.
    pub fn open(loc: &S3Location) -> Result<Self> {
        let s = Self::connect(loc)?;
        match s.size("config") {
            Ok(_) => Ok(s),
            // A `HEAD` cannot tell a missing bucket from a missing object: a listing can.
            Err(Error::NotFound(_)) => match s.first_object() {
                Ok(_) => Err(Error::NoRepository(s.location.to_string())),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The store for a new repository: nothing may be under the prefix yet.
    pub fn create(loc: &S3Location) -> Result<Self> {
        let s = Self::connect(loc)?;
        match s.first_object()? {
            None => Ok(s),
            Some(_) => Err(Error::AlreadyExists(s.location.to_string())),
        }
    }

    /// Any one object under the prefix (an error if the bucket is missing).
    fn first_object(&self) -> Result<Option<object_store::ObjectMeta>> {
        let any = self.block(async {
            use futures::StreamExt;
            let p = self.path_prefix();
            let mut list = self.s3.list(p.as_ref());
            list.next().await.transpose()
        });
        any.map_err(|e| match e {
            // The bucket itself is missing (a 404 on a listing).
            object_store::Error::NotFound { .. } => Error::Remote {
                what: self.location.to_string(),
                reason: explain(&e),
            },
            e => self.err("", e),
        })
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn key(&self, name: &str) -> Path {
        key_of(&self.prefix, name)
    }

    fn path_prefix(&self) -> Option<Path> {
        (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()))
    }

    /// The repository's name of a listed key (without the prefix).
    fn name_of(&self, key: &Path) -> String {
        let k = key.as_ref();
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            k.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(k)
                .to_string()
        }
    }

    /// An error of the store on object `name`: absence is `NotFound` (contract 4).
    fn err(&self, name: &str, e: object_store::Error) -> Error {
        let what = self.location.describe(name);
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound(what),
            e => Error::Remote {
                what,
                reason: explain(&e),
            },
        }
    }

    fn range(&self, name: &str, r: Range<u64>) -> Result<Vec<u8>> {
        let _t = Trace::new("get range", name, r.end - r.start);
        let want = (r.end - r.start) as usize;
        let got = self.block(self.s3.get_range(&self.key(name), r.clone())).map_err(|e| {
            if past_the_end(&e) {
                eof(
                    &self.location.describe(name),
                    format!("bytes {}..{} asked, fewer there", r.start, r.end),
                )
            } else {
                self.err(name, e)
            }
        })?;
        if got.len() < want {
            return Err(eof(
                &self.location.describe(name),
                format!("bytes {}..{} asked, {} there", r.start, r.end, got.len()),
            ));
        }
        Ok(got.to_vec())
    }

    /// Puts `data` as `name`: one request, or a multipart upload when large (contract 1).
    fn put_bytes(&self, name: &str, data: Vec<u8>) -> Result<()> {
        let _t = Trace::new("put", name, data.len() as u64);
        let key = self.key(name);
        let r = self.block(async {
            if data.len() < MULTIPART_ABOVE {
                return self.s3.put(&key, PutPayload::from(data)).await.map(drop);
            }
            // Parts are slices of the one buffer (no copy), a few in flight at once; a failed
            // upload is aborted so its parts are not kept (the lifecycle rule is for crashes).
            use futures::{StreamExt, TryStreamExt};
            let data = bytes::Bytes::from(data);
            let mut upload = self.s3.put_multipart(&key).await?;
            let parts = (0..data.len())
                .step_by(PART)
                .map(|at| data.slice(at..(at + PART).min(data.len())));
            let sent = futures::stream::iter(parts.map(|p| upload.put_part(PutPayload::from(p))))
                .buffer_unordered(PARTS_IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await;
            match sent {
                Ok(_) => upload.complete().await.map(drop),
                Err(e) => {
                    let _ = upload.abort().await;
                    Err(e)
                }
            }
        });
        r.map_err(|e| self.err(name, e))
    }

    /// Every object under the directory `dir` (whole path segments; `""` for all), by one
    /// paginated listing.
    fn listed(&self, dir: &str) -> Result<Vec<object_store::ObjectMeta>> {
        let _t = Trace::new("list", dir, 0);
        let dir = dir.trim_end_matches('/');
        let key = if dir.is_empty() {
            self.path_prefix()
        } else {
            Some(self.key(dir))
        };
        let r: object_store::Result<Vec<object_store::ObjectMeta>> = self.block(async {
            use futures::TryStreamExt;
            self.s3.list(key.as_ref()).try_collect().await
        });
        r.map_err(|e| self.err(dir, e))
    }

    /// Every listed object under `dir` with its time (seconds, by the store's clock).
    fn list_timed(&self, dir: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .listed(dir)?
            .into_iter()
            .map(|m| (self.name_of(&m.location), m.last_modified.timestamp()))
            .collect())
    }

    fn size(&self, name: &str) -> Result<u64> {
        let _t = Trace::new("head", name, 0);
        self.block(self.s3.head(&self.key(name)))
            .map(|m| m.size)
            .map_err(|e| self.err(name, e))
    }
}

/// A range of an object and the object's whole size, in one request.
async fn get_sized(
    s3: &AmazonS3,
    key: &Path,
    range: object_store::GetRange,
) -> object_store::Result<(bytes::Bytes, u64)> {
    let got = s3
        .get_opts(key, object_store::GetOptions::new().with_range(Some(range)))
        .await?;
    let size = got.meta.size;
    Ok((got.bytes().await?, size))
}

/// Whether a ranged read failed for starting past the object's end (S3's `InvalidRange`,
/// status 416): a short read, not a failure of the store.
fn past_the_end(e: &object_store::Error) -> bool {
    let text = with_causes(e);
    text.contains("InvalidRange") || text.contains("416 Range Not Satisfiable")
}

/// The key of repository object `name` under `prefix`.
fn key_of(prefix: &str, name: &str) -> Path {
    if prefix.is_empty() {
        Path::from(name)
    } else {
        Path::from(format!("{prefix}/{name}"))
    }
}

/// An error's text with its causes' (the HTTP client's own error says what went wrong on the
/// connection).
fn with_causes(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// What an operator needs from an S3 error: the status and the store's message, with a hint
/// for the usual causes.
fn explain(e: &object_store::Error) -> String {
    let text = with_causes(e);
    // By the status line and the store's error code, not a bare number: the text also holds
    // the request's duration ("in 667.403µs").
    let denied = [
        "403 Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
    ];
    let hint = if text.contains("NoSuchBucket") {
        " (the bucket does not exist: create it first)"
    } else if text.contains("invalid peer certificate") {
        " (the store's certificate is not trusted here: if a private CA signed it, set CAIRN_S3_CA_FILE to that CA's PEM file)"
    } else if denied.iter().any(|d| text.contains(d)) {
        " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION, which must be the store's region)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// A short read: an `UnexpectedEof` I/O error (the object-store contract's "beyond the end").
fn eof(what: &str, why: String) -> Error {
    Error::Io {
        path: what.into(),
        source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why),
    }
}

/// An object open for ranged reads: through the store's shared windows when the reads run on
/// through it, else one request per read. Opening asks nothing of the store (a missing object
/// is found by its first read).
struct S3Reader {
    store: Arc<S3Store>,
    name: Name,
}

impl ObjectReader for S3Reader {
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self.store.windows.read(&self.name, offset, len) {
            Ok(data) => Ok(data),
            Err(windows::Direct) => self.store.range(&self.name, offset..offset + len as u64),
        }
    }
}

/// An object streamed in: held in memory and put whole by `finish` (contract 1).
struct S3Writer {
    store: Arc<S3Store>,
    data: Vec<u8>,
}

impl ObjectWriter for S3Writer {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn finish(self: Box<Self>, name: &str) -> Result<()> {
        let S3Writer { store, data } = *self;
        store.put_bytes(name, data)
    }
}

/// A handle to one shared store, for readers and writers that outlive a borrow.
pub struct SharedS3(pub Arc<S3Store>);

impl ObjectStore for SharedS3 {
    fn location(&self) -> &Location {
        &self.0.location
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.0.put_bytes(name, data.to_vec())
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            store: self.0.clone(),
            data: Vec::new(),
        }))
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        let s = &self.0;
        let dir = format!("claims/{name}/");
        for attempt in 0..CLAIM_TRIES {
            let mine = format!("{dir}{:016x}", rand::random::<u64>());
            let taken = Instant::now();
            s.put_bytes(&mine, Vec::new())?;
            let claims = s.list_timed(&dir)?;
            let my_time = claims.iter().find(|(n, _)| *n == mine).map(|c| c.1);
            let Some(my_time) = my_time else {
                // Our own claim not listed: the listing is not read-after-write consistent,
                // and the argument above does not hold. Refuse rather than guess.
                let _ = self.delete(&mine);
                return Err(Error::Concurrent(format!(
                    "{}: a claim just put is not listed; this store's listing is not consistent \
                     enough to decide a name (Garage: consistency_mode = \"consistent\")",
                    s.location
                )));
            };
            let mut others = 0;
            for (n, t) in &claims {
                if *n == mine {
                    continue;
                }
                if my_time - *t > CLAIM_STALE.as_secs() as i64 {
                    self.delete(n)?;
                } else {
                    others += 1;
                }
            }
            if others == 0 && taken.elapsed() < CLAIM_HOLD {
                let r = match self.exists(name) {
                    Ok(true) => Ok(false),
                    Ok(false) => self.put(name, data).map(|()| true),
                    Err(e) => Err(e),
                };
                self.delete(&mine)?;
                return r;
            }
            self.delete(&mine)?;
            let wait = 50 + rand::random::<u64>() % (100 << attempt.min(5));
            std::thread::sleep(Duration::from_millis(wait));
        }
        Err(Error::Concurrent(format!(
            "{}: another writer kept claiming {name}; try again",
            s.location
        )))
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let _t = Trace::new("get", name, 0);
        let s = &self.0;
        let r = s.block(async {
            let got = s.s3.get(&s.key(name)).await?;
            got.bytes().await
        });
        r.map(|b| b.to_vec()).map_err(|e| s.err(name, e))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.0.range(name, offset..offset + len as u64)
    }

    fn open(&self, name: &str) -> Result<Box<dyn ObjectReader>> {
        Ok(Box::new(S3Reader {
            store: self.0.clone(),
            name: Name::from(name),
        }))
    }

    fn size(&self, name: &str) -> Result<u64> {
        self.0.size(name)
    }

    fn puts_in_flight(&self) -> usize {
        PACKS_IN_FLIGHT
    }

    fn get_tail(&self, name: &str, len: usize) -> Result<(u64, Vec<u8>)> {
        let s = &self.0;
        if len == 0 {
            return Ok((s.size(name)?, Vec::new()));
        }
        let _t = Trace::new("get tail", name, len as u64);
        match s.block(get_sized(
            &s.s3,
            &s.key(name),
            object_store::GetRange::Suffix(len as u64),
        )) {
            Ok((b, size)) => Ok((size, b.to_vec())),
            // An empty object has no suffix to give: its size is all there is to know.
            Err(e) if past_the_end(&e) => Ok((s.size(name)?, Vec::new())),
            Err(e) => Err(s.err(name, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let s = &self.0;
        // The listing is by whole path segments: list the directory part, filter the rest.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut out: Vec<ObjectInfo> = s
            .listed(dir)?
            .into_iter()
            .map(|m| ObjectInfo {
                name: s.name_of(&m.location),
                size: m.size,
            })
            .filter(|o| o.name.starts_with(prefix) && !o.name.starts_with("claims/"))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let s = &self.0;
        let _t = Trace::new("delete", name, 0);
        match s.block(s.s3.delete(&s.key(name))) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s.err(name, e)),
        }
    }
}

/// `CAIRN_S3_TRACE=1`: every request to the store, as it ends, on stderr (what, object, bytes,
/// milliseconds), to see where a slow store spends a command's time.
static TRACE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CAIRN_S3_TRACE").is_some_and(|v| !v.is_empty() && v != "0"));

/// One request, logged when it ends (if [`TRACE`] is on).
struct Trace {
    what: &'static str,
    name: String,
    bytes: u64,
    start: Instant,
}

impl Trace {
    fn new(what: &'static str, name: &str, bytes: u64) -> Option<Self> {
        TRACE.then(|| Trace {
            what,
            name: name.to_string(),
            bytes,
            start: Instant::now(),
        })
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        eprintln!(
            "s3: {} {} {} B {:.1} ms",
            self.what,
            self.name,
            self.bytes,
            self.start.elapsed().as_secs_f64() * 1e3
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_get_the_hint_of_their_cause_not_of_a_number_in_their_timing() {
        let e = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.into(),
        };
        let missing = explain(&e("GET /b in 667.403µs - 404 Not Found: <Code>NoSuchBucket</Code>"));
        assert!(
            missing.ends_with("(the bucket does not exist: create it first)"),
            "{missing}"
        );
        let denied = explain(&e("HEAD /b/config in 2ms - 403 Forbidden: <Code>AccessDenied</Code>"));
        assert!(denied.contains("check AWS_ACCESS_KEY_ID"), "{denied}");
        let other = explain(&e("GET /b in 1.403s - 503 Service Unavailable"));
        assert!(!other.contains(" (check") && !other.contains(" (the bucket"), "{other}");
    }

    #[test]
    fn credentials_files_are_read_by_profile() {
        let text = "# comment\n[default]\naws_access_key_id = AK1\naws_secret_access_key=SK1\n\n\
                    [backup]\nAWS_ACCESS_KEY_ID = AK2\naws_secret_access_key = SK2\naws_session_token = T\n";
        let d = parse_profile(text, "default");
        assert_eq!(d.get("aws_access_key_id").map(String::as_str), Some("AK1"));
        assert_eq!(d.get("aws_secret_access_key").map(String::as_str), Some("SK1"));
        let b = parse_profile(text, "backup");
        assert_eq!(b.get("aws_access_key_id").map(String::as_str), Some("AK2"));
        assert_eq!(b.get("aws_session_token").map(String::as_str), Some("T"));
        assert!(parse_profile(text, "none").is_empty());
    }
}
