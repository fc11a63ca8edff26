//! Where a plugin's work runs: [`Host::Local`] (the controller's own host) or a named host
//! reached through its agent. Plugins run every command and touch every file of their
//! database through the [`Host`] of the instance, member or node it belongs to, so the same
//! plugin code backs up a database on this host or on another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::process::Command;

use super::client::Agent;
use super::msg::{Reply, Request, Stat};
use crate::error::{Error, Result};
use crate::process;

/// `[hosts.NAME]`: how the controller reaches a host's agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// SSH destination (`cairn@10.0.0.12`); the system `ssh` client runs
    /// `ssh -T -o BatchMode=yes [options] DESTINATION CAIRN agent`.
    pub ssh: Option<String>,
    pub port: Option<u16>,
    /// Private key for this host (`ssh -i`, with `IdentitiesOnly=yes`).
    pub identity_file: Option<PathBuf>,
    /// known_hosts file holding the host's key (`StrictHostKeyChecking=yes` with it).
    pub known_hosts: Option<PathBuf>,
    /// More `ssh` arguments, placed before the destination.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// The cairn binary on the host (default `cairn`, found on the host's PATH).
    pub cairn: Option<String>,
    /// Instead of `ssh`: the whole command that starts an agent on the host's stdin and
    /// stdout (`["kubectl", "exec", "-i", "db-0", "--", "cairn", "agent"]`, say).
    pub command: Option<Vec<String>>,
    /// A command run on the controller that installs this cairn binary on the host, reading
    /// it on its stdin (`["ssh", "admin@10.0.0.12", "sudo install -m 755 /dev/stdin
    /// /usr/local/bin/cairn"]`, say). Run when the host has no agent to start or one of
    /// another protocol; then the connection is tried once more. The agent's own key cannot do
    /// this (its forced command runs only `cairn agent`), so it is a separate, administrative
    /// way in, and nothing is installed unless it is configured.
    pub install: Option<Vec<String>>,
}

impl HostConfig {
    /// The transport's command line.
    pub fn argv(&self, name: &str) -> Result<Vec<String>, String> {
        match (&self.ssh, &self.command) {
            (Some(_), Some(_)) => Err(format!("hosts.{name}: give ssh or command, not both")),
            (None, None) => Err(format!("hosts.{name}: give ssh (a destination) or command")),
            (None, Some(c)) if c.is_empty() => Err(format!("hosts.{name}: command is empty")),
            (None, Some(c)) => Ok(c.clone()),
            (Some(dest), None) => {
                if dest.is_empty() || dest.starts_with('-') {
                    return Err(format!("hosts.{name}: ssh destination {dest:?} is not a destination"));
                }
                let mut a: Vec<String> = [
                    "ssh",
                    "-T",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ServerAliveInterval=10",
                    "-o",
                    "ServerAliveCountMax=3",
                ]
                .map(String::from)
                .to_vec();
                if let Some(p) = self.port {
                    a.extend(["-p".into(), p.to_string()]);
                }
                if let Some(i) = &self.identity_file {
                    a.extend([
                        "-i".into(),
                        i.display().to_string(),
                        "-o".into(),
                        "IdentitiesOnly=yes".into(),
                    ]);
                }
                if let Some(k) = &self.known_hosts {
                    a.extend([
                        "-o".into(),
                        format!("UserKnownHostsFile={}", k.display()),
                        "-o".into(),
                        "StrictHostKeyChecking=yes".into(),
                    ]);
                }
                a.extend(self.ssh_options.iter().cloned());
                a.extend([
                    dest.clone(),
                    "--".into(),
                    self.cairn.clone().unwrap_or_else(|| "cairn".into()),
                    "agent".into(),
                ]);
                Ok(a)
            }
        }
    }
}

/// The configured hosts by name, each connected on first use and then shared by every plugin
/// on it.
#[derive(Clone, Default)]
pub struct Hosts {
    by_name: BTreeMap<String, Host>,
}

impl Hosts {
    pub fn new(cfg: &BTreeMap<String, HostConfig>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for (name, c) in cfg {
            crate::db::common::plain_name("hosts", name)?;
            let argv = c.argv(name)?;
            if c.install.as_ref().is_some_and(|i| i.is_empty()) {
                return Err(format!("hosts.{name}: install is empty"));
            }
            by_name.insert(
                name.clone(),
                Host::Remote(Arc::new(Remote {
                    name: name.clone(),
                    argv,
                    install: c.install.clone(),
                    agent: tokio::sync::OnceCell::new(),
                })),
            );
        }
        Ok(Self { by_name })
    }

    /// Starts connecting every host's agent in the background (on the current runtime), so
    /// that plugins find them ready. A connection that fails here is tried again, and its error
    /// reported, where a plugin first uses the host; one still going when the runtime ends is
    /// dropped with it (its SSH process killed).
    pub fn connect_in_background(&self) {
        for host in self.by_name.values() {
            let host = host.clone();
            tokio::spawn(async move {
                let _ = host.agent().await;
            });
        }
    }

    /// The host a section names with `runs_on` (`None`: this one).
    pub fn get(&self, runs_on: Option<&str>) -> Result<Host, String> {
        match runs_on {
            None => Ok(Host::Local),
            Some(n) => self
                .by_name
                .get(n)
                .cloned()
                .ok_or_else(|| format!("runs_on: no [hosts.{n}] is configured")),
        }
    }
}

/// A host and how to reach it.
#[derive(Clone)]
pub enum Host {
    /// The host running the controller.
    Local,
    Remote(Arc<Remote>),
}

pub struct Remote {
    name: String,
    argv: Vec<String>,
    install: Option<Vec<String>>,
    agent: tokio::sync::OnceCell<Agent>,
}

impl Remote {
    /// Starts the host's agent; where it is missing or of another protocol and an `install`
    /// command is configured, installs this binary there and tries once more.
    async fn start(&self) -> std::result::Result<Agent, String> {
        let failed = match Agent::spawn(&self.name, &self.argv).await {
            Ok(a) => return Ok(a),
            Err(f) => f,
        };
        match (&self.install, failed.wrong_agent) {
            (Some(cmd), true) => {
                install(cmd)
                    .await
                    .map_err(|e| format!("{}; installing this cairn there failed: {e}", failed.message))?;
                Agent::spawn(&self.name, &self.argv)
                    .await
                    .map_err(|f| format!("{} (after installing this cairn there)", f.message))
            }
            (None, true) => Err(format!(
                "{} (set install in [hosts.{}] to copy this binary there)",
                failed.message, self.name
            )),
            _ => Err(failed.message),
        }
    }
}

/// Runs `cmd` with this process's own binary on its stdin.
async fn install(cmd: &[String]) -> std::result::Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let bin = std::fs::File::open(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let (program, args) = cmd.split_first().ok_or("install is empty")?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(bin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{program} ended with {}: {}", out.status, err.trim()));
    }
    Ok(())
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A command's program, arguments, environment changes and directory, taken from a
/// [`Command`] a plugin built.
fn exec_request(cmd: &Command, stdin: bool) -> Request {
    let std = cmd.as_std();
    let s = |o: &std::ffi::OsStr| o.to_string_lossy().into_owned();
    Request::Exec {
        program: s(std.get_program()),
        args: std.get_args().map(s).collect(),
        env: std.get_envs().map(|(k, v)| (s(k), v.map(s))).collect(),
        cwd: std.get_current_dir().map(|d| d.to_string_lossy().into_owned()),
        stdin,
    }
}

/// A `ChunkStream` request for a command's output or a file.
fn chunk_request(
    cmd: Option<&Command>,
    path: Option<&Path>,
    keys: cairn_store::write::foreign::ChunkingKeys,
    cache: String,
) -> Request {
    let (program, args, env, cwd) = match cmd.map(|c| exec_request(c, false)) {
        Some(Request::Exec {
            program,
            args,
            env,
            cwd,
            ..
        }) => (Some(program), args, env, cwd),
        _ => (None, Vec::new(), Vec::new(), None),
    };
    Request::ChunkStream {
        program,
        args,
        env,
        cwd,
        path: path.map(path_str),
        keys,
        cache,
    }
}

impl Host {
    /// `local`, or the configured name.
    pub fn name(&self) -> &str {
        match self {
            Host::Local => "local",
            Host::Remote(r) => &r.name,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Host::Local)
    }

    fn fail(&self, msg: String) -> Error {
        Error::Host {
            host: self.name().to_string(),
            msg,
        }
    }

    /// The host's agent, connected on first use.
    async fn agent(&self) -> Result<Option<&Agent>> {
        match self {
            Host::Local => Ok(None),
            Host::Remote(r) => {
                let a = r
                    .agent
                    .get_or_try_init(|| r.start())
                    .await
                    .map_err(|m| self.agent_error(m))?;
                match a.lost() {
                    Some(why) => Err(self.agent_error(why)),
                    None => Ok(Some(a)),
                }
            }
        }
    }

    fn agent_error(&self, m: String) -> Error {
        let prefix = format!("host {}: ", self.name());
        self.fail(m.strip_prefix(&prefix).map(str::to_string).unwrap_or(m))
    }

    fn failed(&self, r: Reply, what: &str) -> Error {
        match r {
            Reply::Failed { error, .. } => self.fail(error),
            other => self.fail(format!("{what}: unexpected reply {other:?}")),
        }
    }

    /// A request's outcome as success: `Done`, else what the agent or the connection said.
    fn done(&self, r: std::result::Result<Reply, String>, what: &str) -> Result<()> {
        match r.map_err(|m| self.agent_error(m))? {
            Reply::Done => Ok(()),
            r => Err(self.failed(r, what)),
        }
    }

    /// Where a plugin stages files on this host: `local` here, the agent's own private
    /// directory elsewhere.
    pub async fn work_dir(&self, local: &Path) -> Result<PathBuf> {
        match self.agent().await? {
            None => Ok(local.to_path_buf()),
            Some(a) => a
                .work_dir()
                .map(PathBuf::from)
                .ok_or_else(|| self.fail("its agent has no work directory".into())),
        }
    }

    /// Runs a command to completion and returns its stdout; a non-zero exit is an error
    /// carrying the tail of its stderr ([`process::output`] on this host).
    pub async fn output(&self, cmd: &mut Command) -> Result<String> {
        let Some(agent) = self.agent().await? else {
            return process::output(cmd).await;
        };
        let what = process::describe(cmd);
        let mut out = Vec::new();
        let r = agent
            .fetch(exec_request(cmd, false), &mut out)
            .await
            .map_err(|m| self.agent_error(m))?;
        self.exit_status(&what, r, || {
            String::from_utf8_lossy(&out)
                .trim()
                .chars()
                .take(process::STDERR_TAIL)
                .collect()
        })?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// An `Exit` reply as success or [`Error::Command`].
    fn exit_status(&self, what: &str, r: Reply, stdout: impl FnOnce() -> String) -> Result<()> {
        match r {
            Reply::Exit { code: Some(0), .. } => Ok(()),
            Reply::Exit { code, signal, stderr } => Err(Error::Command {
                what: format!("{what} on host {}", self.name()),
                status: match (code, signal) {
                    (Some(c), _) => format!("exit status: {c}"),
                    (None, Some(s)) => format!("signal: {s}"),
                    _ => "no status".into(),
                },
                stderr: if stderr.is_empty() { stdout() } else { stderr },
            }),
            Reply::Failed { error, not_found } => Err(if not_found {
                self.fail(format!("cannot start {what}: not found"))
            } else {
                self.fail(error)
            }),
            other => Err(self.fail(format!("{what}: unexpected reply {other:?}"))),
        }
    }

    /// Runs a command to completion whatever its exit: (success, stdout, tail of stderr).
    /// Only a command that cannot be started (or a host that cannot be reached) is an error.
    pub async fn run(&self, cmd: &mut Command) -> Result<(bool, String, String)> {
        let what = process::describe(cmd);
        let Some(agent) = self.agent().await? else {
            let out = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .output()
                .await
                .map_err(Error::io(format!("cannot start {what}")))?;
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                err,
            ));
        };
        let mut out = Vec::new();
        match agent
            .fetch(exec_request(cmd, false), &mut out)
            .await
            .map_err(|m| self.agent_error(m))?
        {
            Reply::Exit { code, stderr, .. } => {
                Ok((code == Some(0), String::from_utf8_lossy(&out).into_owned(), stderr))
            }
            r => Err(self.failed(r, &what)),
        }
    }

    /// Streams a file of this host into `out`.
    pub async fn read_file_into(
        &self,
        path: &Path,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<()> {
        let Some(agent) = self.agent().await? else {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(Error::io(path.display().to_string()))?;
            tokio::io::copy(&mut f, out)
                .await
                .map_err(Error::io(path.display().to_string()))?;
            return Ok(());
        };
        let req = Request::ReadFile {
            path: path_str(path),
            tail: None,
        };
        self.done(agent.fetch(req, out).await, "read")
    }

    /// Writes `input` (to its end) into a file of this host; on a remote host atomically,
    /// and not at all if `input` fails.
    pub async fn write_file_from(
        &self,
        path: &Path,
        mode: u32,
        input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> Result<()> {
        let agent = self
            .agent()
            .await?
            .ok_or_else(|| self.fail("write_file_from is for remote hosts".into()))?;
        let req = Request::WriteFile {
            path: path_str(path),
            mode,
        };
        self.done(agent.feed(req, input, &mut tokio::io::sink()).await, "write")
    }

    /// The entries of the tree at `root` on this host, as a tree backup walks them.
    pub async fn walk(&self, root: &Path) -> Result<Vec<cairn_store::write::source::SourceEntry>> {
        let Some(agent) = self.agent().await? else {
            let root = root.to_path_buf();
            return tokio::task::spawn_blocking(move || {
                use cairn_store::write::source::{LocalTree, TreeSource};
                let all = |_: &Path| true;
                let entries = LocalTree.entries(&root, &all)?.collect::<cairn_store::Result<Vec<_>>>();
                entries
            })
            .await
            .map_err(|e| Error::Task(format!("walk thread failed: {e}")))?
            .map_err(Error::from);
        };
        let mut out = Vec::new();
        self.done(
            agent.fetch(Request::Walk { root: path_str(root) }, &mut out).await,
            "walk",
        )?;
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l)
                    .map_err(|e| self.fail(format!("walking {}: a bad entry: {e}", root.display())))
            })
            .collect()
    }

    /// Places an item placement stream (`cairn_store::Repository::item_stream`) at `dest` on
    /// this host.
    pub async fn place_tree(
        &self,
        dest: &Path,
        overwrite: bool,
        input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> Result<()> {
        let agent = self
            .agent()
            .await?
            .ok_or_else(|| self.fail("place_tree is for remote hosts".into()))?;
        let req = Request::PlaceTree {
            dest: path_str(dest),
            overwrite,
        };
        self.done(agent.feed(req, input, &mut tokio::io::sink()).await, "place")
    }

    /// Runs an operator-configured command line (`sh -c`); `None` or empty does nothing.
    pub async fn run_configured(&self, line: Option<&str>) -> Result<()> {
        match line.map(str::trim) {
            Some(l) if !l.is_empty() => self.output(&mut process::shell(l)).await.map(drop),
            _ => Ok(()),
        }
    }

    /// Has this host's agent cut a command's output (`cmd`) or a file (`path`) into chunks
    /// there, and `store` take them (see `chunked.rs`); `cache` names the stream in the agent's
    /// cache. Returns what `store` returned and the bytes the stream moved on the wire. A
    /// command that fails, an agent that fails and a connection that breaks are errors here
    /// even when `store` finished (its item must then be dropped).
    pub async fn chunk_stream<T: Send + 'static>(
        &self,
        cmd: Option<&Command>,
        path: Option<&Path>,
        keys: cairn_store::write::foreign::ChunkingKeys,
        cache: String,
        store: impl FnOnce(&mut dyn cairn_store::write::foreign::ForeignSource) -> cairn_store::Result<T> + Send + 'static,
    ) -> Result<(T, u64)> {
        let agent = self
            .agent()
            .await?
            .ok_or_else(|| self.fail("chunk_stream is for remote hosts".into()))?;
        let (what, req) = match (cmd, path) {
            (Some(cmd), None) => (process::describe(cmd), chunk_request(Some(cmd), None, keys, cache)),
            (None, Some(p)) => (p.display().to_string(), chunk_request(None, Some(p), keys, cache)),
            _ => return Err(self.fail("a chunk stream reads a command's output or a file".into())),
        };
        let (stored, reply, wire) = agent.chunk_stream(req, store).await;
        let reply = reply.map_err(|m| self.agent_error(m))?;
        let stored = match stored {
            Some(s) => s,
            None => return Err(self.fail(format!("{what}: the storing thread failed"))),
        };
        match reply {
            Reply::Done => {}
            r => self.exit_status(&what, r, String::new)?,
        }
        Ok((stored.map_err(Error::from)?, wire))
    }

    /// Starts this host's agent cutting the file `path` (see [`chunk_stream`](Self::chunk_stream)),
    /// for a caller that takes the chunks on a thread of its own from the returned source;
    /// [`chunk_stream_done`](Self::chunk_stream_done) then says how it ended.
    pub async fn open_file_stream(
        &self,
        path: &Path,
        keys: cairn_store::write::foreign::ChunkingKeys,
        cache: String,
    ) -> Result<(super::chunked::ChannelSource, super::chunked::Ended)> {
        let agent = self
            .agent()
            .await?
            .ok_or_else(|| self.fail("open_file_stream is for remote hosts".into()))?;
        let req = chunk_request(None, Some(path), keys, cache);
        agent.open_chunk_stream(req).await.map_err(|m| self.agent_error(m))
    }

    /// How a stream opened by [`open_file_stream`](Self::open_file_stream) ended: the bytes it
    /// moved, or why the agent failed.
    pub async fn chunk_stream_done(&self, path: &Path, ended: super::chunked::Ended) -> Result<u64> {
        let agent = self
            .agent()
            .await?
            .ok_or_else(|| self.fail("chunk_stream_done is for remote hosts".into()))?;
        let (reply, wire) = agent.ended(ended).await;
        match reply.map_err(|m| self.agent_error(m))? {
            Reply::Done => Ok(wire),
            r => Err(self.failed(r, &format!("reading {}", path.display()))),
        }
    }

    /// Runs `cmd` with `input` as its stdin (a restore's item stream).
    pub async fn stream_in(
        &self,
        cmd: &mut Command,
        input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> Result<()> {
        let agent = self
            .agent()
            .await?
            .ok_or_else(|| self.fail("stream_in is for remote hosts".into()))?;
        let what = process::describe(cmd);
        let r = agent
            .feed(exec_request(cmd, true), input, &mut tokio::io::sink())
            .await
            .map_err(|m| self.agent_error(m))?;
        self.exit_status(&what, r, String::new)
    }

    /// A path's type, size and mode, not following a final symlink; `None` if absent.
    pub async fn stat(&self, path: &Path) -> Result<Option<Stat>> {
        let Some(agent) = self.agent().await? else {
            return match std::fs::symlink_metadata(path) {
                Ok(m) => Ok(Some(Stat::of(&m))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(path.display().to_string())(e)),
            };
        };
        match agent
            .call(Request::Stat { path: path_str(path) })
            .await
            .map_err(|m| self.agent_error(m))?
        {
            Reply::Stat { stat } => Ok(stat),
            r => Err(self.failed(r, "stat")),
        }
    }

    /// A directory's entry names, sorted.
    pub async fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let Some(agent) = self.agent().await? else {
            let mut names = Vec::new();
            for e in std::fs::read_dir(path).map_err(Error::io(path.display().to_string()))? {
                let e = e.map_err(Error::io(path.display().to_string()))?;
                names.push(e.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            return Ok(names);
        };
        match agent
            .call(Request::ListDir { path: path_str(path) })
            .await
            .map_err(|m| self.agent_error(m))?
        {
            Reply::Names { names } => Ok(names),
            r => Err(self.failed(r, "list")),
        }
    }

    /// Whether `path` is a directory with something in it.
    pub async fn dir_has_entries(&self, path: &Path) -> Result<bool> {
        match self.stat(path).await? {
            Some(s) if s.kind == "dir" => Ok(!self.list_dir(path).await?.is_empty()),
            _ => Ok(false),
        }
    }

    /// Writes a whole file (atomically on a remote host: the old file or the new one).
    pub async fn write_file(&self, path: &Path, data: Vec<u8>, mode: u32) -> Result<()> {
        if self.is_local() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .map_err(Error::io(path.display().to_string()))?;
            return f.write_all(&data).map_err(Error::io(path.display().to_string()));
        };
        self.write_file_from(path, mode, std::io::Cursor::new(data)).await
    }

    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        if self.is_local() {
            return std::fs::read(path).map_err(Error::io(path.display().to_string()));
        }
        let mut out = Vec::new();
        self.read_file_into(path, &mut out).await?;
        Ok(out)
    }

    /// The last `n` bytes of a file (all of it if shorter).
    pub async fn read_tail(&self, path: &Path, n: u64) -> Result<Vec<u8>> {
        let Some(agent) = self.agent().await? else {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(path).map_err(Error::io(path.display().to_string()))?;
            let len = f.metadata().map_err(Error::io(path.display().to_string()))?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(n)))
                .map_err(Error::io(path.display().to_string()))?;
            let mut out = Vec::new();
            f.read_to_end(&mut out).map_err(Error::io(path.display().to_string()))?;
            return Ok(out);
        };
        let mut out = Vec::new();
        let req = Request::ReadFile {
            path: path_str(path),
            tail: Some(n),
        };
        self.done(agent.fetch(req, &mut out).await, "read")?;
        // An agent that does not know `tail` sent the whole file.
        Ok(out.split_off(out.len().saturating_sub(n as usize)))
    }

    /// Removes a file or a whole directory; absent is fine.
    pub async fn remove(&self, path: &Path) -> Result<()> {
        let Some(agent) = self.agent().await? else {
            return super::msg::remove_path(path).map_err(Error::io(format!("removing {}", path.display())));
        };
        self.done(agent.call(Request::Remove { path: path_str(path) }).await, "remove")
    }

    pub async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let Some(agent) = self.agent().await? else {
            return std::fs::rename(from, to).map_err(Error::io(format!(
                "moving {} to {}",
                from.display(),
                to.display()
            )));
        };
        let req = Request::Rename {
            from: path_str(from),
            to: path_str(to),
        };
        self.done(agent.call(req).await, "rename")
    }
}

/// A pipe's reading end whose end of stream is an error when its writer failed: what a
/// remote command reads ends in a cancel (the command is killed), not in a clean end of input
/// that would let it finish on a truncated item.
pub struct EndChecked {
    inner: tokio::io::DuplexStream,
    done: Option<tokio::sync::oneshot::Receiver<std::result::Result<(), String>>>,
}

/// The writer's side of an [`EndChecked`] pipe: the bytes, then how writing them ended.
pub struct EndWriter {
    pub pipe: tokio::io::DuplexStream,
    pub done: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
}

impl EndChecked {
    /// A pipe (1 MiB buffered) whose reader sees the writer's error instead of a clean end.
    pub fn pipe() -> (EndChecked, EndWriter) {
        let (r, w) = tokio::io::duplex(1 << 20);
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            EndChecked {
                inner: r,
                done: Some(rx),
            },
            EndWriter { pipe: w, done: tx },
        )
    }
}

impl tokio::io::AsyncRead for EndChecked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {}
            other => return other,
        }
        // The end of the pipe: did the writer finish?
        let Some(done) = self.done.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match std::future::Future::poll(std::pin::Pin::new(done), cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.done = None;
                match r {
                    Ok(Ok(())) => Poll::Ready(Ok(())),
                    Ok(Err(e)) => Poll::Ready(Err(std::io::Error::other(e))),
                    Err(_) => Poll::Ready(Err(std::io::Error::other("the item's reader stopped"))),
                }
            }
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_lines() {
        let c = HostConfig {
            ssh: Some("cairn@10.0.0.12".into()),
            port: Some(2222),
            identity_file: Some("/etc/cairn/agent_key".into()),
            known_hosts: Some("/etc/cairn/known_hosts".into()),
            cairn: Some("/usr/local/bin/cairn".into()),
            ..Default::default()
        };
        let a = c.argv("db1").unwrap().join(" ");
        assert!(a.starts_with("ssh -T -o BatchMode=yes"), "{a}");
        assert!(
            a.contains("-p 2222 -i /etc/cairn/agent_key -o IdentitiesOnly=yes"),
            "{a}"
        );
        assert!(
            a.contains("UserKnownHostsFile=/etc/cairn/known_hosts -o StrictHostKeyChecking=yes"),
            "{a}"
        );
        assert!(a.ends_with("cairn@10.0.0.12 -- /usr/local/bin/cairn agent"), "{a}");
        let bad = HostConfig {
            ssh: Some("-oProxyCommand=x".into()),
            ..Default::default()
        };
        assert!(bad.argv("x").unwrap_err().contains("not a destination"));
        assert!(HostConfig::default().argv("x").unwrap_err().contains("give ssh"));
    }
}
