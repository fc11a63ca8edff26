//! What a careful operator checks first: files Cairn creates are private whatever the umask, no
//! child process sees the passphrase, and printing into a closed pipe or a full disk is a clear
//! exit, never a panic.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use support::{stderr, Env, PASSWORD};

/// Every file and directory under `dir` with group or other permission bits.
fn not_private(dir: &std::path::Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.permissions().mode() & 0o077 != 0 {
                bad.push(format!("{:o} {}", md.permissions().mode() & 0o7777, p.display()));
            }
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    bad
}

/// Runs `cairn ARGS` through `sh` with umask 022, as a default shell has it.
fn with_umask(env: &Env, args: &str) -> std::process::Output {
    let c = env.cmd(&[]);
    let bin = support::cairn_bin();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!("umask 022; exec {} {args}", bin.display()));
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn everything_cairn_creates_is_private_whatever_the_umask() {
    let env = Env::empty();
    let src = env.path("src");
    support::write(&src.join("a.txt"), b"secret");
    for args in [
        "init --pack-size-mib 1".to_string(),
        format!("backup --name one {}", src.display()),
        "key generate-identity ".to_string() + env.path("id.txt").to_str().unwrap(),
        "check --read-data".into(),
    ] {
        let o = with_umask(&env, &args);
        assert!(o.status.success(), "{args}: {}", stderr(&o));
    }
    let o = with_umask(&env, &format!("key add --recipient {}", recipient(&env)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_dir(env.repo.join("keys")).unwrap().count() == 2);
    let mut bad = not_private(&env.repo);
    bad.extend(not_private(&env.cache));
    assert!(bad.is_empty(), "not private: {bad:#?}");
    assert_eq!(
        std::fs::metadata(env.path("id.txt")).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

fn recipient(env: &Env) -> String {
    let text = std::fs::read_to_string(env.path("id.txt")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string()
}

/// Children see the environment of their parent: dump tools, exec commands and commands whose
/// output is backed up must not find the passphrase there.
#[test]
fn no_child_process_inherits_the_passphrase() {
    let env = Env::new();
    // A command whose output is backed up: it stores its own environment.
    env.ok(&[
        "backup",
        "--name",
        "env",
        "--stdin-from-command",
        "environ",
        "--",
        "cat",
        "/proc/self/environ",
    ]);
    let environ = String::from_utf8_lossy(&env.dump("env", "environ")).into_owned();
    assert!(
        environ.contains("CAIRN_REPO="),
        "the child's environment was stored: {environ}"
    );
    assert!(!environ.contains("CAIRN_PASSWORD"), "{environ}");
    assert!(!environ.contains(PASSWORD), "{environ}");

    // An exec plugin's dump and verify commands in a system backup, with a password file too.
    let pw = env.path("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let seen = env.path("seen");
    let cfg = env.path("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "repository = \"{}\"\nwork_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [[exec]]\nname = \"db\"\ndump = \"cat /proc/$$/environ | tee {}\"\nrestore = \"cat >/dev/null\"\n",
            env.repo.display(),
            env.dir.path().display(),
            env.path("state").display(),
            seen.display()
        ),
    )
    .unwrap();
    for via_file in [false, true] {
        let name = format!("sys-{via_file}");
        let mut c = env.cmd(&["--config", cfg.to_str().unwrap(), "backup", "--system", "--name", &name]);
        if via_file {
            c.env_remove("CAIRN_PASSWORD").env("CAIRN_PASSWORD_FILE", &pw);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let environ = std::fs::read(&seen).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(environ.contains("CAIRN_REPO="), "{environ}");
        for secret in ["CAIRN_PASSWORD", PASSWORD] {
            assert!(!environ.contains(secret), "{secret} leaked: {environ}");
        }
    }
}

/// Standard output as a pipe whose reader is gone, or as a full disk.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

fn full_disk() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .into()
}

#[test]
fn printing_into_a_closed_pipe_or_a_full_disk_is_a_clear_exit() {
    let env = Env::new();
    env.backup_bytes("one", "db.sql", &support::dump_text(300_000, 1));
    let cfg = env.path("cairn.toml");
    std::fs::write(env.path("password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\ncache_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [[exec]]\nname = \"db\"\ndump = \"echo x\"\nrestore = \"cat\"\n",
            env.repo.display(),
            env.path("password").display(),
            env.cache.display(),
            env.path("state").display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["show", "one"],
        vec!["show", "one", "--json"],
        vec!["dump", "one", "db.sql"],
        vec!["check"],
        vec!["key", "list"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["unlock"],
        vec!["--config", c, "healthcheck"],
        vec!["--config", c, "maintenance", "status"],
        vec!["repair", "index"],
        vec!["snapshots", "--tag", "none"],
        vec!["--help"],
    ];
    let cso: Vec<Vec<&str>> = vec![vec!["-b", "listbackups"], vec!["-b", "backupdetails", "-s", "one"]];
    let cso_bin = support::cairn_bin().with_file_name("cso_backupnrestore");
    let runs = commands
        .iter()
        .map(|a| (env.cmd(a), a.join(" ")))
        .chain(cso.iter().map(|a| {
            let mut cmd = Command::new(&cso_bin);
            cmd.args(a)
                .env("CAIRN_CONFIG", &cfg)
                .env("CAIRN_SCRYPT_LOG_N", "10")
                .env_remove("CAIRN_PASSWORD")
                .stdin(Stdio::null());
            (cmd, format!("cso_backupnrestore {}", a.join(" ")))
        }))
        .collect::<Vec<_>>();
    for (mut cmd, what) in runs {
        let o = cmd.stdout(closed_pipe()).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(141), "{what} into a closed pipe: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        let o = cmd.stdout(full_disk()).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what} into a full disk: {err}");
        assert!(
            err.contains("No space left on device") && !err.contains("panicked"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_scrypt_work_factor_out_of_range_is_refused() {
    let env = Env::empty();
    for (flag, env_value) in [
        (Some("0"), None),
        (Some("64"), None),
        (None, Some("0")),
        (None, Some("64")),
    ] {
        let mut c = env.cmd(&["init"]);
        if let Some(f) = flag {
            c.args(["--scrypt-log-n", f]);
        }
        if let Some(v) = env_value {
            c.env("CAIRN_SCRYPT_LOG_N", v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag:?} {env_value:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("scrypt-log-n"), "{}", stderr(&o));
        assert!(!env.repo.exists());
    }
}
