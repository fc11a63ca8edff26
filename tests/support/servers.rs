//! Throwaway MariaDB, etcd and ZooKeeper servers on loopback, driven through the scripts in
//! `tests/servers/` (the same commands the test configurations give Cairn as start/stop).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/servers")
        .join(format!("{name}.sh"))
        .canonicalize()
        .unwrap()
}

/// A shell command line running `tests/servers/<name>.sh args...`.
pub fn line(name: &str, args: &[&str]) -> String {
    let mut s = format!("bash '{}'", script(name).display());
    for a in args {
        s.push_str(&format!(" '{a}'"));
    }
    s
}

/// Runs a command line, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} failed: {}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct MariaDb {
    pub dir: PathBuf,
}

impl MariaDb {
    pub fn start(dir: &Path) -> MariaDb {
        let m = MariaDb { dir: dir.to_path_buf() };
        sh(&m.start_line());
        m
    }
    pub fn start_line(&self) -> String {
        line("mariadb", &["start", &self.dir.to_string_lossy()])
    }
    pub fn stop_line(&self) -> String {
        line("mariadb", &["stop", &self.dir.to_string_lossy()])
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn stop(&self) {
        sh(&self.stop_line());
    }
    pub fn kill(&self) {
        sh(&line("mariadb", &["kill", &self.dir.to_string_lossy()]));
    }
    /// Runs SQL as root; returns tab-separated rows.
    pub fn sql(&self, q: &str) -> String {
        let o = self.run_sql(q, false);
        assert!(o.status.success(), "{q}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs every statement even after errors; returns rows and errors.
    pub fn sql_all(&self, q: &str) -> String {
        let o = self.run_sql(q, true);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn run_sql(&self, q: &str, force: bool) -> std::process::Output {
        let mut c = Command::new("mariadb");
        c.arg(format!("--socket={}", self.socket().display()))
            .args(["--batch", "--skip-column-names", "-e", q]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg("-c")
            .arg(line("mariadb", &["kill", &self.dir.to_string_lossy()]))
            .output();
    }
}

pub struct EtcdMember {
    pub name: String,
    pub dir: PathBuf,
    pub client: u16,
    pub peer: u16,
}

pub struct Etcd {
    pub members: Vec<EtcdMember>,
}

impl Etcd {
    /// Plans `n` members under `root` (nothing runs yet).
    pub fn plan(root: &Path, n: usize) -> Etcd {
        Etcd {
            members: (1..=n)
                .map(|i| EtcdMember {
                    name: format!("e{i}"),
                    dir: root.join(format!("e{i}.etcd")),
                    client: free_port(),
                    peer: free_port(),
                })
                .collect(),
        }
    }
    /// The same ports and names on other data directories (fresh nodes).
    pub fn moved_to(&self, root: &Path) -> Etcd {
        Etcd {
            members: self
                .members
                .iter()
                .map(|m| EtcdMember {
                    name: m.name.clone(),
                    dir: root.join(format!("{}.etcd", m.name)),
                    client: m.client,
                    peer: m.peer,
                })
                .collect(),
        }
    }
    pub fn cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn start_line(&self, m: &EtcdMember) -> String {
        line(
            "etcd",
            &[
                "start",
                &m.dir.to_string_lossy(),
                &m.name,
                &m.client.to_string(),
                &m.peer.to_string(),
                &self.cluster(),
            ],
        )
    }
    pub fn stop_line(&self, m: &EtcdMember) -> String {
        line("etcd", &["stop", &m.dir.to_string_lossy()])
    }
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn start(&self) {
        for m in &self.members {
            sh(&self.start_line(m));
        }
        sh(&line("etcd", &["wait", &self.endpoints()]));
    }
    pub fn stop(&self) {
        for m in &self.members {
            sh(&self.stop_line(m));
        }
    }
    pub fn etcdctl(&self, args: &str) -> String {
        sh(&format!(
            "ETCDCTL_API=3 etcdctl --endpoints={} {args}",
            self.endpoints()
        ))
    }
    /// Puts `n` keys `prefix<i>` = `value<i>` in transactions of 100.
    pub fn put_many(&self, prefix: &str, n: usize, value: &str) {
        for start in (0..n).step_by(100) {
            let ops: String = (start..n.min(start + 100))
                .map(|i| format!("put {prefix}{i:05} {value}{i}\n"))
                .collect();
            // compares, blank line, success ops, blank line, failure ops, blank line
            let input = format!("\n{ops}\n\n");
            let mut c = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoints()))
                .arg("txn")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            assert!(c.wait().unwrap().success());
        }
    }
    /// Every key and value, sorted.
    pub fn all(&self) -> String {
        self.etcdctl("get '' --prefix")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = Command::new("bash")
                .arg("-c")
                .arg(line("etcd", &["kill", &m.dir.to_string_lossy()]))
                .output();
        }
    }
}

pub struct ZkServer {
    pub id: u32,
    pub dir: PathBuf,
    pub client: u16,
    pub quorum: u16,
    pub election: u16,
}

pub struct ZooKeeper {
    pub servers: Vec<ZkServer>,
}

impl ZooKeeper {
    pub fn plan(root: &Path, n: usize) -> ZooKeeper {
        ZooKeeper {
            servers: (1..=n as u32)
                .map(|id| ZkServer {
                    id,
                    dir: root.join(format!("zk{id}")),
                    client: free_port(),
                    quorum: free_port(),
                    election: free_port(),
                })
                .collect(),
        }
    }
    pub fn moved_to(&self, root: &Path) -> ZooKeeper {
        ZooKeeper {
            servers: self
                .servers
                .iter()
                .map(|s| ZkServer {
                    id: s.id,
                    dir: root.join(format!("zk{}", s.id)),
                    client: s.client,
                    quorum: s.quorum,
                    election: s.election,
                })
                .collect(),
        }
    }
    fn ensemble(&self) -> String {
        if self.servers.len() == 1 {
            return String::new();
        }
        self.servers
            .iter()
            .map(|s| format!("{}=127.0.0.1:{}:{}", s.id, s.quorum, s.election))
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn start_line(&self, s: &ZkServer) -> String {
        line(
            "zookeeper",
            &[
                "start",
                &s.dir.to_string_lossy(),
                &s.id.to_string(),
                &s.client.to_string(),
                &self.ensemble(),
            ],
        )
    }
    pub fn stop_line(&self, s: &ZkServer) -> String {
        line("zookeeper", &["stop", &s.dir.to_string_lossy()])
    }
    pub fn address(&self, s: &ZkServer) -> String {
        format!("127.0.0.1:{}", s.client)
    }
    pub fn start(&self) {
        for s in &self.servers {
            sh(&self.start_line(s));
        }
        let addrs: Vec<String> = self.servers.iter().map(|s| self.address(s)).collect();
        let mut args = vec!["wait"];
        args.extend(addrs.iter().map(String::as_str));
        sh(&line("zookeeper", &args));
    }
    pub fn stop(&self) {
        for s in &self.servers {
            sh(&self.stop_line(s));
        }
    }
    /// Runs zkCli commands (one per line) against the first server.
    pub fn cli(&self, commands: &str) -> String {
        let mut c = Command::new("bash")
            .arg(script("zookeeper"))
            .arg("cli")
            .arg(self.address(&self.servers[0]))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{commands}\nquit\n").as_bytes())
            .unwrap();
        let o = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    pub fn four(&self, s: &ZkServer, word: &str) -> String {
        sh(&line("zookeeper", &["4lw", &self.address(s), word]))
    }
    pub fn znode_count(&self, s: &ZkServer) -> u64 {
        self.four(s, "mntr")
            .lines()
            .find_map(|l| l.strip_prefix("zk_znode_count"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        for s in &self.servers {
            let _ = Command::new("bash")
                .arg("-c")
                .arg(line("zookeeper", &["kill", &s.dir.to_string_lossy()]))
                .output();
        }
    }
}
