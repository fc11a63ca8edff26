//! What a new operator meets: maintenance mode left on by a killed run, restic's habits
//! (`latest`, filters), and a restore that asks before it overwrites live databases.

mod support;

use support::{stderr, stdout, Env, PASSWORD};

/// A configuration with one exec database and maintenance commands that log what they do.
fn config(env: &Env) -> String {
    config_with(env, "")
}

fn config_with(env: &Env, top: &str) -> String {
    let log = env.path("maint.log").display().to_string();
    write_config(
        env,
        top,
        &format!(
            "[maintenance]\nenter = \"echo enter >> {log}\"\nleave = \"echo leave >> {log}\"\n\
             [[exec]]\nname = \"db\"\ndump = \"echo rows\"\nrestore = \"cat > {out}\"\n",
            out = env.path("restored.txt").display(),
        ),
    )
}

/// Writes `cairn.toml` with this environment's repository, key, cache, state and work
/// directories, `top` before them and `rest` after; returns its path.
fn write_config(env: &Env, top: &str, rest: &str) -> String {
    let cfg = env.path("cairn.toml");
    std::fs::write(env.path("password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{top}repository = \"{}\"\npassword_file = \"{}\"\ncache_dir = \"{}\"\nstate_dir = \"{}\"\nwork_dir = \"{}\"\n{rest}",
            env.repo.display(),
            env.path("password").display(),
            env.cache.display(),
            env.path("state").display(),
            env.dir.path().display(),
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

fn maint_log(env: &Env) -> String {
    std::fs::read_to_string(env.path("maint.log")).unwrap_or_default()
}

#[test]
fn maintenance_left_on_by_a_killed_run_is_reported_and_taken_over() {
    let env = Env::new();
    let c = config(&env);
    // Off when off: nothing runs.
    let out = env.ok(&["--config", &c, "maintenance", "off"]);
    assert!(out.contains("was off"), "{out}");
    assert_eq!(maint_log(&env), "");
    // A run turns it on and is killed (its process is gone, the status file stays).
    let mut child = env.cmd(&["--config", &c, "maintenance", "on"]).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let status = env.path("state/maintenance.json");
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    // The `maintenance on` process has exited, like a killed run: its pid is gone.
    assert_eq!(s["pid"].as_u64().unwrap() as u32, child.id());
    s["reason"] = "backup".into();
    std::fs::write(&status, serde_json::to_vec(&s).unwrap()).unwrap();
    let st = env.ok(&["--config", &c, "maintenance", "status"]);
    assert!(st.contains("which is gone"), "{st}");
    let o = env.run(&["--config", &c, "healthcheck"]);
    assert!(!o.status.success(), "a dead holder's maintenance mode is unhealthy");
    assert!(stdout(&o).contains("which is gone"), "{}", stdout(&o));
    // The next run takes it over and leaves it.
    let o = env.run(&["--config", &c, "backup", "--system", "--maintenance", "--name", "next"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("taking it over"), "{}", stderr(&o));
    assert!(!status.exists(), "maintenance mode still on");
    assert_eq!(maint_log(&env), "enter\nleave\n");
    // A live holder (this test's own pid) is not taken over.
    let live = serde_json::json!({"since": "now", "reason": "operator", "pid": std::process::id(),
        "start": null, "pidns": std::fs::read_link("/proc/self/ns/pid").unwrap().to_string_lossy()});
    std::fs::write(&status, serde_json::to_vec(&live).unwrap()).unwrap();
    let o = env.run(&[
        "--config",
        &c,
        "backup",
        "--system",
        "--maintenance",
        "--name",
        "beside",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(status.exists(), "a live holder's maintenance mode was turned off");
}

/// Runs `cairn ARGS` on a pseudo-terminal (util-linux `script`), typing `input`.
fn on_terminal(env: &Env, args: &[&str], input: &str) -> std::process::Output {
    let base = env.cmd(args);
    let line = std::iter::once(base.get_program())
        .chain(base.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn latest_filters_and_a_restore_that_asks_first() {
    let env = Env::new();
    let c = config(&env);
    env.ok(&[
        "--config", &c, "backup", "--system", "--name", "first", "--tag", "daily",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.ok(&["--config", &c, "backup", "--system", "--name", "second"]);
    // `latest` is the newest complete snapshot.
    let show = env.ok(&["show", "latest", "--json"]);
    assert!(show.contains("\"second\""), "{show}");
    assert_eq!(env.dump("latest", "db/dump"), b"rows\n");
    // Filters.
    let tagged = env.ok(&["snapshots", "--tag", "daily"]);
    assert!(tagged.contains("first") && !tagged.contains("second"), "{tagged}");
    let host = env.ok(&["snapshots", "--host", "no-such-host"]);
    assert!(!host.contains("first"), "{host}");
    // A dry run changes nothing and says what would happen.
    let plan = env.ok(&["--config", &c, "restore", "latest", "--dry-run"]);
    assert!(plan.contains("snapshot second") && plan.contains("onto: db"), "{plan}");
    assert!(!env.path("restored.txt").exists());
    assert_eq!(maint_log(&env), "", "a dry run entered maintenance mode");
    // On a terminal, a restore asks; "n" restores nothing.
    let o = on_terminal(&env, &["--config", &c, "restore", "first"], "n\n");
    assert!(!o.status.success());
    assert!(stdout(&o).contains("live databases"), "{}", stdout(&o));
    assert!(!env.path("restored.txt").exists());
    let o = on_terminal(&env, &["--config", &c, "restore", "first"], "y\n");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(std::fs::read(env.path("restored.txt")).unwrap(), b"rows\n");
    // Without a terminal (cron, scripts) or with --yes, it does not ask.
    std::fs::remove_file(env.path("restored.txt")).unwrap();
    env.ok(&["--config", &c, "restore", "latest", "--yes", "--no-safety-snapshot"]);
    assert!(env.path("restored.txt").exists());
}

#[test]
fn the_healthcheck_holds_the_newest_snapshot_to_a_maximum_age() {
    let env = Env::new();
    let c = config_with(&env, "max_snapshot_age = \"1h\"\n");
    env.ok(&["--config", &c, "backup", "--system", "--name", "fresh"]);
    assert!(env.ok(&["--config", &c, "healthcheck"]).contains("fresh taken"));
    // Two hours later (a clock moved forward), it is too old; a safety snapshot does not count.
    let later = |args: &[&str]| env.cmd(args).env("CAIRN_TEST_CLOCK_OFFSET", "7200").output().unwrap();
    let o = later(&["--config", &c, "restore", "fresh", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(env.ok(&["snapshots", "--tag", "safety"]).contains("safety-"));
    let o = later(&["--config", &c, "healthcheck"]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("more than max_snapshot_age"), "{}", stdout(&o));
}

#[test]
fn a_name_held_only_by_a_failed_snapshot_can_be_reused() {
    let env = Env::new();
    let flag = env.path("db-up");
    let c = write_config(
        &env,
        "",
        &format!(
            "[[exec]]\nname = \"db\"\ndump = \"test -f {} && echo rows || exit 3\"\nrestore = \"cat >/dev/null\"\n",
            flag.display()
        ),
    );
    let o = env.run(&["--config", &c, "backup", "--system", "--name", "MAR09"]);
    assert!(!o.status.success());
    assert!(env.ok(&["snapshots"]).contains("failed"));
    std::fs::write(&flag, b"").unwrap();
    env.ok(&["--config", &c, "backup", "--system", "--name", "MAR09"]);
    let list = env.ok(&["snapshots"]);
    assert!(
        list.contains("MAR09") && list.contains("complete") && !list.contains("failed"),
        "{list}"
    );
    let err = env.fails(&["--config", &c, "backup", "--system", "--name", "MAR09"]);
    assert!(err.contains("already taken"), "{err}");
}

#[test]
fn system_backup_and_restore_report_progress_unless_quiet() {
    let env = Env::new();
    let c = write_config(
        &env,
        "",
        "[[exec]]\nname = \"db\"\ndump = \"for i in 1 2 3; do head -c 1000000 /dev/urandom; sleep 1; done\"\n\
         restore = \"sleep 2; cat > /dev/null\"\n",
    );
    let run = |args: &[&str]| {
        let o = env.cmd(args).env("CAIRN_PROGRESS_SECS", "1").output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = run(&["--config", &c, "backup", "--system", "--name", "one"]);
    assert!(
        err.contains("progress: [") && err.contains("db/dump") && err.contains("/s"),
        "{err}"
    );
    let err = run(&["--config", &c, "restore", "one", "--no-safety-snapshot"]);
    assert!(err.contains("progress: [") && err.contains("db/dump"), "{err}");
    let err = run(&["-q", "--config", &c, "backup", "--system", "--name", "two"]);
    assert!(!err.contains("progress:"), "{err}");
}

#[test]
fn safety_snapshots_are_kept_by_a_rule_of_their_own() {
    let env = Env::new();
    let c = config_with(&env, "");
    let text = std::fs::read_to_string(&c).unwrap();
    std::fs::write(
        &c,
        format!("{text}\n[retention]\nkeep_last = 5\nkeep_safety = 2\nprune = false\n"),
    )
    .unwrap();
    env.ok(&["--config", &c, "backup", "--system", "--name", "base"]);
    for _ in 0..3 {
        env.ok(&["--config", &c, "restore", "base", "--yes"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(env.ok(&["snapshots", "--tag", "safety"]).matches("safety-").count(), 3);
    let o = env.run(&["--config", &c, "schedule", "fire"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left = env.ok(&["snapshots", "--tag", "safety"]);
    assert_eq!(left.matches("safety-").count(), 2, "{left}");
    assert!(env.ok(&["snapshots"]).contains("base"));
    let log = std::fs::read_to_string(env.path("state/schedule.log")).unwrap();
    assert!(log.contains("safety snapshot(s) beyond the newest 2"), "{log}");
}
