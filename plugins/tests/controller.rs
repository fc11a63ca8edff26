//! The controller with plugins that are not databases: what it does with each plugin's success,
//! failure and health, without a server.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cairn_plugins::config::{Config, Loaded};
use cairn_plugins::controller::{self, BackupRequest, RestoreRequest, PLUGINS_META};
use cairn_plugins::plugin::{Ctx, Health, ItemSink, ItemSource, Mode, Plugin};
use cairn_plugins::{Error, Result};
use cairn_store::{Credentials, InitOptions, Location, NewKey, OpenOptions, Repository, Status};

/// A "database" that is a byte vector in memory.
struct Fake {
    name: String,
    data: Mutex<Vec<u8>>,
    healthy: Mutex<bool>,
    fail_backup: bool,
    /// Records no facts at backup time (as a plugin with a bug, or an older cairn, might).
    no_facts: bool,
    calls: Mutex<Vec<&'static str>>,
}

impl Fake {
    fn new(name: &str, data: &[u8]) -> Arc<Fake> {
        Arc::new(Fake {
            name: name.into(),
            data: Mutex::new(data.to_vec()),
            healthy: Mutex::new(true),
            fail_backup: false,
            no_facts: false,
            calls: Mutex::default(),
        })
    }

    fn call(&self, what: &'static str) {
        self.calls.lock().unwrap().push(what);
    }
}

#[async_trait]
impl Plugin for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn healthcheck(&self, _ctx: &Ctx) -> Health {
        if *self.healthy.lock().unwrap() {
            Health::ok("fine")
        } else {
            Health::bad("down")
        }
    }

    async fn backup(&self, _ctx: &Ctx, sink: &ItemSink) -> Result<()> {
        self.call("backup");
        if self.fail_backup {
            return Err(Error::Command {
                what: "fake-dump".into(),
                status: "exit status: 1".into(),
                stderr: "the dump tool crashed".into(),
            });
        }
        let data = self.data.lock().unwrap().clone();
        sink.stream("dump", std::io::Cursor::new(data.clone())).await?;
        if self.no_facts {
            return Ok(());
        }
        sink.set_facts("dump", &FakeFacts { len: data.len() as u64 })
    }

    async fn post_backup(&self, _ctx: &Ctx) -> Result<()> {
        self.call("post_backup");
        Ok(())
    }

    async fn restore(&self, ctx: &Ctx, source: &ItemSource) -> Result<()> {
        self.call("restore");
        let file = ctx.work_dir.join("dump");
        source
            .restore_to(&cairn_plugins::remote::host::Host::Local, "dump", &file, false)
            .await?;
        *self.data.lock().unwrap() = std::fs::read(&file).map_err(Error::io("reading the restored dump"))?;
        Ok(())
    }

    async fn verify(&self, _ctx: &Ctx, source: &ItemSource) -> Result<String> {
        self.call("verify");
        let FakeFacts { len: want } = source.facts("dump")?;
        let have = self.data.lock().unwrap().len() as u64;
        if want != have {
            return Err(Error::Mismatch(format!("length {have}, snapshot says {want}")));
        }
        Ok(format!("{have} bytes"))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FakeFacts {
    len: u64,
}

struct Setup {
    _dir: tempfile::TempDir,
    repo: Repository,
    loaded: Loaded,
    rt: tokio::runtime::Runtime,
}

fn setup(plugins: Vec<Arc<Fake>>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        cache_dir: dir.path().join("cache"),
        ..Default::default()
    };
    let location = Location::Local(dir.path().join("repo"));
    let key = NewKey::Passphrase {
        passphrase: "pw".to_string().into(),
        log_n: Some(10),
    };
    Repository::init(&location, &key, &InitOptions::default(), opts.clone()).unwrap();
    let repo = Repository::open(&location, &Credentials::Passphrase("pw".to_string().into()), opts).unwrap();
    let config = Config {
        state_dir: Some(dir.path().join("state")),
        work_dir: Some(dir.path().join("work")),
        ..Default::default()
    };
    let loaded = Loaded {
        path: dir.path().join("cairn.toml"),
        config,
        plugins: plugins.into_iter().map(|p| p as Arc<dyn Plugin>).collect(),
        hosts: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    Setup {
        _dir: dir,
        repo,
        loaded,
        rt,
    }
}

fn request(name: &str) -> BackupRequest {
    BackupRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}

#[test]
fn a_system_backup_holds_every_plugin_and_a_restore_puts_each_back_and_verifies_it() {
    let (a, b) = (Fake::new("a", b"alpha data"), Fake::new("b", &[7u8; 100_000]));
    let s = setup(vec![a.clone(), b.clone()]);
    let (snap, outcomes) =
        s.rt.block_on(controller::backup(&s.repo, &s.loaded, &request("one")))
            .unwrap();
    assert_eq!(snap.status, Status::Complete);
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    let mut items: Vec<&str> = snap.items.iter().map(|i| i.name.as_str()).collect();
    items.sort();
    assert_eq!(items, vec!["a/dump", "b/dump"]);
    let meta = snap.meta[PLUGINS_META].as_object().unwrap();
    assert_eq!(meta["a"]["kind"], "fake");
    assert_eq!(controller::snapshot_plugins(&snap).unwrap().len(), 2);

    *a.data.lock().unwrap() = b"changed since".to_vec();
    let req = RestoreRequest {
        snapshot: "one".into(),
        plugins: None,
        mode: Mode::Normal,
        safety_snapshot: true,
        progress: Default::default(),
    };
    let report = s.rt.block_on(controller::restore(&s.repo, &s.loaded, &req)).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(*a.data.lock().unwrap(), b"alpha data");
    assert_eq!(*b.data.lock().unwrap(), vec![7u8; 100_000]);
    assert_eq!(
        *a.calls.lock().unwrap(),
        vec!["backup", "post_backup", "backup", "post_backup", "restore", "verify"]
    );
    // What the restore overwrote is in the safety snapshot.
    let safety = report.safety_snapshot.expect("a safety snapshot");
    let mut out = Vec::new();
    s.repo
        .dump(&safety, "a/dump", &mut out, &cairn_store::NoProgress)
        .unwrap();
    assert_eq!(out, b"changed since");
    assert!(s.repo.snapshot(&safety).unwrap().tags.contains(&"safety".to_string()));
}

#[test]
fn a_failing_or_unhealthy_plugin_fails_the_snapshot_by_name_and_spares_the_others() {
    let good = Fake::new("good", b"ok");
    let mut bad = Fake::new("bad", b"x");
    Arc::get_mut(&mut bad).unwrap().fail_backup = true;
    let down = Fake::new("down", b"y");
    *down.healthy.lock().unwrap() = false;
    let s = setup(vec![good.clone(), bad, down.clone()]);
    let (snap, outcomes) =
        s.rt.block_on(controller::backup(&s.repo, &s.loaded, &request("two")))
            .unwrap();
    let Status::Failed { reason } = &snap.status else {
        panic!("a snapshot with a failed plugin is marked failed");
    };
    assert!(
        reason.contains("plugin bad failed: fake-dump failed (exit status: 1): the dump tool crashed"),
        "{reason}"
    );
    assert!(
        reason.contains("plugin down failed: unhealthy before backup: down"),
        "{reason}"
    );
    assert!(!reason.contains("plugin good"), "{reason}");
    assert!(outcomes.iter().any(|o| o.plugin == "good" && o.ok));
    assert!(snap.item("good/dump").is_some(), "the healthy plugin's dump is kept");
    assert!(
        down.calls.lock().unwrap().is_empty(),
        "an unhealthy database is not dumped"
    );
    // A failed snapshot is never restored.
    let req = RestoreRequest {
        snapshot: "two".into(),
        plugins: None,
        mode: Mode::Normal,
        safety_snapshot: false,
        progress: Default::default(),
    };
    let e =
        s.rt.block_on(controller::restore(&s.repo, &s.loaded, &req))
            .unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
}

#[test]
fn restoring_a_plugin_the_snapshot_lacks_or_selecting_an_unknown_one_is_refused() {
    let a = Fake::new("a", b"1");
    let s = setup(vec![a]);
    s.rt.block_on(controller::backup(&s.repo, &s.loaded, &request("three")))
        .unwrap();
    let req = RestoreRequest {
        snapshot: "three".into(),
        plugins: Some(vec!["zz".into()]),
        mode: Mode::DisasterRecovery,
        safety_snapshot: false,
        progress: Default::default(),
    };
    let e =
        s.rt.block_on(controller::restore(&s.repo, &s.loaded, &req))
            .unwrap_err();
    assert!(e.to_string().contains("holds no \"zz\""), "{e}");
    let mut r = request("four");
    r.plugins = Some(vec!["nope".into()]);
    let e = s.rt.block_on(controller::backup(&s.repo, &s.loaded, &r)).unwrap_err();
    assert!(e.to_string().contains("\"nope\" is not configured"), "{e}");
}

#[test]
fn a_fact_the_snapshot_lacks_fails_the_verification_by_name() {
    let mut a = Fake::new("a", b"data");
    Arc::get_mut(&mut a).unwrap().no_facts = true;
    let s = setup(vec![a.clone()]);
    s.rt.block_on(controller::backup(&s.repo, &s.loaded, &request("five")))
        .unwrap();
    let req = RestoreRequest {
        snapshot: "five".into(),
        plugins: None,
        mode: Mode::DisasterRecovery,
        safety_snapshot: false,
        progress: Default::default(),
    };
    let report = s.rt.block_on(controller::restore(&s.repo, &s.loaded, &req)).unwrap();
    assert!(
        !report.ok(),
        "a restore that cannot be verified is not reported as good"
    );
    let error = report.outcomes[0].error.clone().unwrap_or_default();
    assert!(error.contains("snapshot item a/dump: missing field `len`"), "{error}");
}
