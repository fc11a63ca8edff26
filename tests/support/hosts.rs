//! Several hosts on one machine, for the controller/agent tests: each host is a network
//! namespace of its own with an OpenSSH server; all of them and the controller (this
//! namespace) are joined by a bridge in a namespace of its own, on 10.231.N.0/24 (addresses
//! these tests assign to their own namespaces only; nothing is routed or forwarded), in a mount namespace of its
//! own where only its own files are visible. The controller runs in yet another mount namespace
//! where no host's files are, so a plugin that touches a database's files locally fails.
//!
//! Layout under the test's directory `T`:
//! - `T/hosts/NAME`: what host NAME sees of its own files (the test reaches them through
//!   `T/backing/NAME`, which neither hosts nor the controller see);
//! - `T/ctl`: the controller's SSH key and known_hosts (hidden from hosts);
//! - `T/ssh`: the hosts' sshd configuration and host keys.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::servers::sh;

/// A test host: `ns` is its network namespace, `addr` its address, `sshd` the pid of its
/// OpenSSH server (whose namespaces the test enters to act on the host as its operator).
pub struct Host {
    pub name: String,
    pub index: u32,
    pub ns: String,
    pub addr: String,
    pub sshd: Option<std::process::Child>,
    /// The host's files as the host sees them (`T/hosts/NAME`).
    pub dir: PathBuf,
    /// The same files as the test sees them.
    pub backing: PathBuf,
    root: PathBuf,
}

/// Whether these tests can run: root, `ip netns`, `unshare`, `sshd`.
pub fn available() -> Result<(), String> {
    if !super::is_root() {
        return Err("needs root (network and mount namespaces)".into());
    }
    for tool in ["ip", "unshare", "nsenter", "/usr/sbin/sshd", "ssh", "ssh-keygen"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("needs {tool} (Debian: iproute2, util-linux, openssh-server)"));
        }
    }
    Ok(())
}

/// A set of hosts and the controller's key for them.
pub struct Hosts {
    pub root: PathBuf,
    pub hosts: Vec<Host>,
    /// The network's number: 10.231.N.0/24, namespaces `cairn-tN*`.
    pub net: u32,
}

fn run(cmd: &str) -> Output {
    Command::new("bash").arg("-c").arg(cmd).output().unwrap()
}

impl Hosts {
    /// Creates `names.len()` hosts under `root` (the test's directory) and starts their sshd.
    pub fn start(root: &Path, names: &[&str]) -> Hosts {
        for d in ["hosts", "backing", "ctl", "ssh"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all("/run/sshd").unwrap();
        let ctl = root.join("ctl");
        sh(&format!(
            "ssh-keygen -q -t ed25519 -N '' -f {k} && chmod 600 {k}",
            k = ctl.join("id").display()
        ));
        let public = std::fs::read_to_string(ctl.join("id.pub")).unwrap();
        // The agent key can run `cairn agent` and nothing else: no shell, no forwarding.
        std::fs::write(
            root.join("ssh/authorized_keys"),
            format!("command=\"{} agent\",restrict {public}", super::cairn_bin().display()),
        )
        .unwrap();
        // The network: a bridge in a namespace of its own, this namespace on it as .1. Creating
        // the veth pair is the lock on the number.
        let net = (1..250u32)
            .find(|i| {
                run(&format!("ip link add cn{i}c type veth peer name cn{i}s"))
                    .status
                    .success()
            })
            .expect("a free network number");
        let sw = format!("cairn-t{net}");
        let _ = run(&format!("ip netns del {sw}"));
        sh(&format!(
            "ip netns add {sw} && ip netns exec {sw} ip link add br0 type bridge && \
             ip netns exec {sw} ip link set br0 up && ip link set cn{net}s netns {sw} && \
             ip netns exec {sw} ip link set cn{net}s master br0 && ip netns exec {sw} ip link set cn{net}s up && \
             ip addr add 10.231.{net}.1/24 dev cn{net}c && ip link set cn{net}c up"
        ));
        let mut hs = Hosts {
            root: root.to_path_buf(),
            hosts: Vec::new(),
            net,
        };
        std::fs::write(ctl.join("known_hosts"), "").unwrap();
        for name in names {
            hs.add_host(name);
        }
        hs
    }

    /// Starts one more host on the network (a fresh host: new address, new host key, empty
    /// files) and trusts its key.
    pub fn add_host(&mut self, name: &str) -> &Host {
        let index = self.hosts.iter().map(|h| h.index).max().unwrap_or(1) + 1;
        let h = self.add(name, index);
        let key = std::fs::read_to_string(self.root.join(format!("ssh/host_{name}.pub"))).unwrap();
        let kh = self.root.join("ctl/known_hosts");
        let mut known = std::fs::read_to_string(&kh).unwrap();
        known.push_str(&format!("{} {}", h.addr, key));
        std::fs::write(&kh, known).unwrap();
        self.hosts.push(h);
        self.hosts.last().unwrap()
    }

    /// Starts host `name` at 10.231.N.`index` on the network.
    fn add(&self, name: &str, index: u32) -> Host {
        let (net, sw) = (self.net, format!("cairn-t{}", self.net));
        let ns = format!("cairn-t{net}-{name}");
        let _ = run(&format!("ip netns del {ns}"));
        sh(&format!(
            "ip netns add {ns} && ip link add cn{net}h{index} type veth peer name cn{net}p{index} && \
             ip link set cn{net}h{index} netns {ns} && ip link set cn{net}p{index} netns {sw} && \
             ip netns exec {sw} ip link set cn{net}p{index} master br0 && ip netns exec {sw} ip link set cn{net}p{index} up && \
             ip netns exec {ns} ip addr add 10.231.{net}.{index}/24 dev cn{net}h{index} && \
             ip netns exec {ns} ip link set cn{net}h{index} up && ip netns exec {ns} ip link set lo up"
        ));
        let (dir, backing) = (self.root.join("hosts").join(name), self.root.join("backing").join(name));
        std::fs::create_dir_all(&dir).unwrap();
        // The host's own temporary directory (its agents' work directories), as private as
        // the rest of its files.
        std::fs::create_dir_all(backing.join("tmp")).unwrap();
        let ssh = self.root.join("ssh");
        let hostkey = ssh.join(format!("host_{name}"));
        sh(&format!("ssh-keygen -q -t ed25519 -N '' -f {}", hostkey.display()));
        let addr = format!("10.231.{net}.{index}");
        let cfg = ssh.join(format!("sshd_{name}.conf"));
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress {addr}\nPort 22\nHostKey {hk}\nAuthorizedKeysFile {ak}\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nPrintMotd no\nLogLevel ERROR\nPidFile {pid}\nSetEnv TMPDIR={tmp} XDG_CACHE_HOME={cache}\n",
                tmp = dir.join("tmp").display(),
                cache = dir.join("cache").display(),
                hk = hostkey.display(),
                ak = ssh.join("authorized_keys").display(),
                pid = ssh.join(format!("sshd_{name}.pid")).display(),
            ),
        )
        .unwrap();
        let mut h = Host {
            name: name.to_string(),
            index,
            ns,
            addr,
            sshd: None,
            dir,
            backing,
            root: self.root.clone(),
        };
        h.start_sshd();
        h
    }

    pub fn get(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).expect("a host of that name")
    }

    /// `[hosts.NAME]` sections for every host, with the controller's key and known_hosts.
    pub fn config(&self) -> String {
        let ctl = self.root.join("ctl");
        self.hosts
            .iter()
            .map(|h| {
                format!(
                    "[hosts.{}]\nssh = \"root@{}\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\ncairn = \"{}\"\n\n",
                    h.name,
                    h.addr,
                    ctl.join("id").display(),
                    ctl.join("known_hosts").display(),
                    super::cairn_bin().display()
                )
            })
            .collect()
    }

    /// `cmd` run as the controller: in a mount namespace of its own where no host's files are
    /// visible (`T/backing` and `T/hosts` are empty there).
    pub fn controller(&self, cmd: &Command) -> Command {
        let hide = format!(
            "mount -t tmpfs none '{}' && mount -t tmpfs none '{}' && exec \"$@\"",
            self.root.join("backing").display(),
            self.root.join("hosts").display()
        );
        super::wrapped(
            cmd,
            &["unshare", "-m", "--propagation", "private", "sh", "-c", &hide, "sh"],
        )
    }
}

impl Host {
    fn start_sshd(&mut self) {
        // The host's mount namespace: its own files at T/hosts/NAME, nobody else's, and not
        // the controller's (T/ctl) nor anything under T/backing.
        let script = format!(
            "mount -t tmpfs none '{hosts}' && mkdir '{dir}' && mount --bind '{backing}' '{dir}' && \
             mount -t tmpfs none '{ctl}' && mount -t tmpfs none '{all}' && \
             exec /usr/sbin/sshd -D -e -f '{cfg}'",
            hosts = self.root.join("hosts").display(),
            dir = self.dir.display(),
            backing = self.backing.display(),
            ctl = self.root.join("ctl").display(),
            all = self.root.join("backing").display(),
            cfg = self.root.join(format!("ssh/sshd_{}.conf", self.name)).display(),
        );
        let log = std::fs::File::create(self.root.join(format!("ssh/sshd_{}.log", self.name))).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.sshd = Some(child);
        // Wait until it listens.
        for _ in 0..100 {
            if run(&format!(
                "ip netns exec {} ss -ltn | grep -q '{}:22'",
                self.ns, self.addr
            ))
            .status
            .success()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "sshd of {} did not start: {}",
            self.name,
            std::fs::read_to_string(self.root.join(format!("ssh/sshd_{}.log", self.name))).unwrap_or_default()
        );
    }

    /// A command line run on the host as its operator (root, in its namespaces).
    pub fn sh(&self, cmd: &str) -> String {
        let pid = self.sshd.as_ref().expect("sshd running").id();
        sh(&format!("nsenter -t {pid} -m -n bash -c {}", shell_quote(cmd)))
    }

    /// The host goes down: its sshd and everything it started are killed.
    pub fn down(&mut self) {
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.ns));
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host comes back (same address and keys).
    pub fn up(&mut self) {
        self.start_sshd();
    }
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the other end.
        self.down();
        let _ = run(&format!("ip netns del {}", self.ns));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.hosts.clear();
        let _ = run(&format!("ip link del cn{}c", self.net));
        let _ = run(&format!("ip netns del cairn-t{}", self.net));
    }
}
