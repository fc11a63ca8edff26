//! Shared helpers for the end-to-end tests: a temp directory with a repository path and a cache,
//! and a way to run the real `cairn` binary against them.
#![allow(dead_code)]

pub mod hosts;
pub mod servers;
pub mod standins;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Whether the tests run as root (CI does; some tests need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
}

pub fn cairn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

impl Env {
    /// A fresh temp dir with an initialised repository (small packs so tests see several).
    pub fn new() -> Env {
        let e = Env::empty();
        e.ok(&["init", "--pack-size-mib", "1"]);
        e
    }

    /// A fresh temp dir, no repository yet.
    pub fn empty() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env { dir, repo, cache }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A `cairn` command with this env's repository, cache and password.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cairn_bin());
        c.args(args)
            .env("CAIRN_REPO", &self.repo)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_SCRYPT_LOG_N", "10")
            .env_remove("CAIRN_IDENTITY")
            .env_remove("CAIRN_PASSWORD_FILE")
            .stdin(Stdio::null());
        c
    }

    /// A backup of item `db.sql` from the output of the `sh -c` script `script`.
    pub fn backup_of_script(&self, name: &str, script: &str) -> Command {
        self.cmd(&[
            "backup",
            "--name",
            name,
            "--stdin-from-command",
            "db.sql",
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "cairn {args:?} failed: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        stdout(&o)
    }

    /// Runs and asserts failure; returns stderr + stdout.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "cairn {args:?} should have failed:\n{}",
            stdout(&o)
        );
        format!("{}{}", stderr(&o), stdout(&o))
    }

    /// Backs up `data` from stdin as item `item` in snapshot `name`; returns the JSON summary.
    pub fn backup_bytes(&self, name: &str, item: &str, data: &[u8]) -> serde_json::Value {
        let mut c = self.cmd(&["backup", "--name", name, "--json", "--stdin", item]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let w = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&data).unwrap();
        });
        let o = child.wait_with_output().unwrap();
        w.join().unwrap();
        assert!(o.status.success(), "backup failed: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn dump(&self, name: &str, item: &str) -> Vec<u8> {
        let o = self.run(&["dump", name, item]);
        assert!(o.status.success(), "dump failed: {}", stderr(&o));
        o.stdout
    }

    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(self.repo.join("packs")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
        out.sort();
        out
    }
}

/// `prefix... PROGRAM ARGS...` with `base`'s program, arguments and environment: runs a command
/// under a wrapper (strace, unshare, script, sh).
pub fn wrapped(base: &Command, prefix: &[&str]) -> Command {
    let (prog, rest) = prefix.split_first().expect("a wrapper program");
    let mut c = Command::new(prog);
    c.args(rest).arg(base.get_program()).args(base.get_args());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// SQL-dump-like text of about `n` bytes; `variant` changes a few rows.
pub fn dump_text(n: usize, variant: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 200);
    let mut id = 0u64;
    while out.len() < n {
        let v = if variant > 0 && id % 5000 == variant % 5000 {
            variant
        } else {
            0
        };
        let r = random_bytes(40, id * 7 + v + 1);
        out.extend_from_slice(format!("INSERT INTO t VALUES ({id},'{}');\n", hex(&r)).as_bytes());
        id += 1;
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// Item names of a snapshot as `backup --json` prints it.
pub fn item_names(backup_json: &serde_json::Value) -> Vec<String> {
    backup_json["snapshot"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect()
}
