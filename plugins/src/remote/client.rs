//! The controller's side of an agent connection: starts the transport (`ssh ... cairn agent`),
//! says hello, and runs requests on channels of their own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::conn::{Conn, Endpoint, Event};
use super::msg::{Hello, Reply, Request, PROTOCOL};
use super::wire::{self, Kind, MAX_BODY};

/// How long an agent may take to say hello (SSH connection and authentication included).
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected agent.
pub struct Agent {
    host: String,
    conn: Arc<Conn>,
    next: AtomicU32,
    hello: Hello,
    /// The transport process (`ssh`); killed when the agent is dropped.
    child: Mutex<Option<tokio::process::Child>>,
    /// The tail of the transport's stderr (ssh's own messages), for errors.
    stderr: Arc<Mutex<String>>,
}

/// What an [`Agent`] call failed with: the message names the host.
pub type Failure = String;

/// Why an agent could not be started.
#[derive(Debug)]
pub struct SpawnFailure {
    pub message: Failure,
    /// The host has no agent to start (the command was not found or not executable there) or
    /// one that speaks another protocol: installing this cairn there would help.
    pub wrong_agent: bool,
}

impl Agent {
    /// Starts `argv` (the transport: `ssh ... cairn agent`, or `cairn agent` itself) and
    /// connects to the agent on its stdin and stdout.
    pub async fn spawn(host: &str, argv: &[String]) -> Result<Agent, SpawnFailure> {
        let other = |message: Failure| SpawnFailure {
            message,
            wrong_agent: false,
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| other(format!("host {host}: no command to reach it")))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| other(format!("host {host}: cannot start {program}: {e}")))?;
        let stderr: Arc<Mutex<String>> = Arc::default();
        {
            let (mut err, tail) = (child.stderr.take().expect("piped"), stderr.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap();
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if t.len() > crate::process::STDERR_TAIL {
                        let cut = t.len() - crate::process::STDERR_TAIL;
                        let cut = (cut..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            });
        }
        let (r, w) = (child.stdout.take().expect("piped"), child.stdin.take().expect("piped"));
        let connected = Self::connect_checked(host, r, w).await;
        match connected {
            Ok(mut a) => {
                a.child = Mutex::new(Some(child));
                a.stderr = stderr;
                Ok(a)
            }
            Err((e, mismatch)) => {
                // Whatever ssh said (host key, permission, no such command) is the reason.
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let said = stderr.lock().unwrap().trim().to_string();
                // 127 and 126: the shell on the host found no such command, or cannot run it.
                let missing = matches!(status, Ok(Ok(s)) if matches!(s.code(), Some(126 | 127)));
                Err(SpawnFailure {
                    message: if said.is_empty() { e } else { format!("{e}: {said}") },
                    wrong_agent: mismatch || missing,
                })
            }
        }
    }

    /// Says hello over an established pipe to an agent.
    pub async fn connect(
        host: &str,
        r: impl AsyncRead + Unpin + Send + 'static,
        w: impl AsyncWrite + Unpin + Send + 'static,
    ) -> Result<Agent, Failure> {
        Self::connect_checked(host, r, w).await.map_err(|(e, _)| e)
    }

    /// [`connect`](Self::connect); the error says whether the agent speaks another protocol.
    async fn connect_checked(
        host: &str,
        mut r: impl AsyncRead + Unpin + Send + 'static,
        w: impl AsyncWrite + Unpin + Send + 'static,
    ) -> Result<Agent, (Failure, bool)> {
        let conn = Conn::start(w);
        let hello = serde_json::to_vec(&Hello::ours()).expect("hello serialises");
        let plain = |e: String| (e, false);
        conn.send(wire::Frame::new(Kind::Hello, 0, hello))
            .await
            .map_err(|e| plain(format!("host {host}: {e}")))?;
        let first = tokio::time::timeout(HELLO_TIMEOUT, wire::read_frame(&mut r))
            .await
            .map_err(|_| {
                plain(format!(
                    "host {host}: no hello from its agent in {} s",
                    HELLO_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| plain(format!("host {host}: reading its agent's hello: {e}")))?
            .ok_or_else(|| {
                plain(format!(
                    "host {host}: the connection closed before the agent said hello"
                ))
            })?;
        let hello: Hello = match first.kind {
            Kind::Hello => serde_json::from_slice(&first.body)
                .map_err(|e| plain(format!("host {host}: its agent's hello: {e}")))?,
            k => {
                return Err(plain(format!(
                    "host {host}: the agent's first frame is {k:?}, not a hello"
                )))
            }
        };
        if hello.protocol != PROTOCOL {
            return Err((
                format!(
                "host {host}: its agent (cairn {}) speaks agent protocol {}, this controller (cairn {}) {PROTOCOL}: \
                 install cairn {} there",
                hello.version,
                hello.protocol,
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_VERSION")
            ),
                true,
            ));
        }
        let reader = conn.clone();
        tokio::spawn(async move { reader.read_loop(r, None).await });
        Ok(Agent {
            host: host.to_string(),
            conn,
            next: AtomicU32::new(1),
            hello,
            child: Mutex::new(None),
            stderr: Arc::default(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The agent's own private directory on its host.
    pub fn work_dir(&self) -> Option<&str> {
        self.hello.work_dir.as_deref()
    }

    /// Whether the connection has ended, and why.
    pub fn lost(&self) -> Option<String> {
        self.conn.is_lost().map(|why| self.explain(why))
    }

    fn explain(&self, why: String) -> String {
        let said = self.stderr.lock().unwrap().trim().to_string();
        if said.is_empty() {
            format!("host {}: {why}", self.host)
        } else {
            format!("host {}: {why} ({said})", self.host)
        }
    }

    async fn open(&self, req: &Request) -> Result<Endpoint, Failure> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let ep = self.conn.open(id);
        let body = serde_json::to_vec(req).expect("request serialises");
        ep.send(Kind::Request, body).await.map_err(|e| self.explain(e))?;
        Ok(ep)
    }

    /// Waits for the reply, taking stream bytes into `out` (if any come).
    async fn finish(
        &self,
        ep: &mut Endpoint,
        mut out: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
    ) -> Result<Reply, Failure> {
        loop {
            match ep.recv().await {
                Event::Data(d) => {
                    if let Some(o) = out.as_mut() {
                        if let Err(e) = o.write_all(&d).await {
                            let _ = ep.send(Kind::Cancel, Vec::new()).await;
                            return Err(format!("host {}: taking its output: {e}", self.host));
                        }
                    }
                }
                Event::End => {
                    if let Some(o) = out.as_mut() {
                        let _ = o.flush().await;
                    }
                }
                Event::Reply(body) => {
                    return serde_json::from_slice(&body).map_err(|e| format!("host {}: a reply: {e}", self.host));
                }
                Event::Lost(why) => return Err(self.explain(why)),
                Event::Cancel | Event::Request(_) => {}
            }
        }
    }

    /// A `ChunkStream` request: `store` (on a blocking thread) takes the agent's chunks and
    /// answers its offers (`chunked.rs`). Returns what `store` returned, if it ran to its end,
    /// the reply and the bytes the stream moved on the wire.
    pub async fn chunk_stream<T: Send + 'static>(
        &self,
        req: Request,
        store: impl FnOnce(&mut dyn cairn_store::write::foreign::ForeignSource) -> T + Send + 'static,
    ) -> (Option<T>, Result<Reply, Failure>, u64) {
        let (mut src, ended) = match self.open_chunk_stream(req).await {
            Ok(x) => x,
            Err(e) => return (None, Err(e), 0),
        };
        let stored = tokio::task::spawn_blocking(move || store(&mut src)).await.ok();
        let (reply, wire) = self.ended(ended).await;
        (stored, reply, wire)
    }

    /// Starts a `ChunkStream` request: the store's end of it, and its task (see
    /// [`ended`](Self::ended)).
    pub async fn open_chunk_stream(
        &self,
        req: Request,
    ) -> Result<(super::chunked::ChannelSource, super::chunked::Ended), Failure> {
        let ep = self.open(&req).await?;
        Ok(super::chunked::exchange(ep, self.host.clone()))
    }

    /// The reply of a `ChunkStream` request and the bytes it moved, once its task ended.
    pub async fn ended(&self, ended: super::chunked::Ended) -> (Result<Reply, Failure>, u64) {
        match ended.await {
            Ok((reply, wire)) => (reply.map_err(|e| self.explain(e)), wire),
            Err(e) => (Err(format!("host {}: the stream's task failed: {e}", self.host)), 0),
        }
    }

    /// A request without streams.
    pub async fn call(&self, req: Request) -> Result<Reply, Failure> {
        let mut ep = self.open(&req).await?;
        self.finish(&mut ep, None).await
    }

    /// A request whose stream comes back into `out`.
    pub async fn fetch(&self, req: Request, out: &mut (dyn AsyncWrite + Unpin + Send)) -> Result<Reply, Failure> {
        let mut ep = self.open(&req).await?;
        self.finish(&mut ep, Some(out)).await
    }

    /// A request fed from `input` (to its end) while its own stream comes back into `out`.
    /// If `input` fails, the request is cancelled (a command is killed, a file is not
    /// written) and the input's error is returned.
    pub async fn feed(
        &self,
        req: Request,
        mut input: impl AsyncRead + Unpin + Send + 'static,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<Reply, Failure> {
        let mut ep = self.open(&req).await?;
        let tx = ep.sender();
        let host = self.host.clone();
        let feeder = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_BODY];
            let r: Result<(), Failure> = async {
                loop {
                    let n = input
                        .read(&mut buf)
                        .await
                        .map_err(|e| format!("reading what goes to host {host}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    tx.send_data(&buf[..n]).await.map_err(|e| format!("host {host}: {e}"))?;
                }
                tx.send(Kind::End, Vec::new())
                    .await
                    .map_err(|e| format!("host {host}: {e}"))
            }
            .await;
            if r.is_err() {
                // The agent kills the command or drops the file, and replies.
                let _ = tx.send(Kind::Cancel, Vec::new()).await;
            }
            r
        });
        let reply = self.finish(&mut ep, Some(out)).await;
        // A request may end before its input does (a command that exited early): the rest
        // of the input is not wanted. A feeder that failed cancelled the request first.
        feeder.abort();
        match feeder.await {
            Ok(Err(e)) => Err(e),
            _ => reply,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.start_kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunk_streams_send_the_data_once_then_little_more_than_ids() {
        use cairn_store::{Credentials, InitOptions, Location, NoProgress, OpenOptions, Repository};
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("CAIRN_AGENT_CACHE", dir.path().join("agent-cache"));
        let opts = OpenOptions {
            cache_dir: dir.path().join("cache"),
            ..Default::default()
        };
        let location = Location::Local(dir.path().join("repo"));
        let key = cairn_store::NewKey::Passphrase {
            passphrase: "pw".to_string().into(),
            log_n: Some(10),
        };
        Repository::init(&location, &key, &InitOptions::default(), opts.clone()).unwrap();
        let repo = Repository::open(&location, &Credentials::Passphrase("pw".to_string().into()), opts).unwrap();
        let file = dir.path().join("dump.sql");
        let rows: String = (0..150_000u32)
            .map(|i| format!("({i},{},'row {i}'),\n", i.wrapping_mul(2654435761) % 99991))
            .collect();
        std::fs::write(&file, &rows).unwrap();
        let size = rows.len() as u64;
        let agent = local_agent().await;
        let runs = std::sync::atomic::AtomicU32::new(0);
        let run = |program: Option<(&str, Vec<String>)>, path: Option<&std::path::Path>| {
            let repo = repo.clone();
            let opts = cairn_store::BackupOptions {
                name: Some(format!("s{}", runs.fetch_add(1, Ordering::Relaxed))),
                ..Default::default()
            };
            let (program, args) = program.map_or((None, Vec::new()), |(p, a)| (Some(p.to_string()), a));
            let path = path.map(|p| p.to_string_lossy().into_owned());
            let agent = &agent;
            async move {
                let b = std::sync::Arc::new(repo.backup(opts, std::sync::Arc::new(NoProgress)).unwrap());
                let req = Request::ChunkStream {
                    program,
                    args,
                    env: Vec::new(),
                    cwd: None,
                    path,
                    keys: b.chunking_keys(),
                    cache: b.agent_cache_name("db"),
                };
                let b2 = b.clone();
                let (stored, reply, wire) = agent
                    .chunk_stream(req, move |src| b2.add_foreign_stream("db", "test", src))
                    .await;
                let item = stored.unwrap();
                let reply = reply.unwrap();
                let complete = matches!(reply, Reply::Done | Reply::Exit { code: Some(0), .. });
                let b = std::sync::Arc::try_unwrap(b).ok().unwrap();
                if complete {
                    item.unwrap();
                    b.commit().unwrap();
                }
                (reply, wire)
            }
        };
        let cat = || Some(("cat", vec![file.to_string_lossy().into_owned()]));
        let (reply, first) = run(cat(), None).await;
        assert!(matches!(reply, Reply::Exit { code: Some(0), .. }), "{reply:?}");
        assert!(first > size / 20, "the first run sends the data: {first} of {size}");
        let (_, second) = run(cat(), None).await;
        assert!(second * 100 < size, "unchanged: {second} bytes on the wire for {size}");
        let (reply, third) = run(None, Some(&file)).await;
        assert_eq!(reply, Reply::Done);
        assert!(third * 100 < size, "the same bytes as a file: {third}");
        // A command that fails is reported as such, whatever it wrote.
        let script = format!("head -c 100000 {}; exit 3", file.display());
        let (reply, _) = run(Some(("sh", vec!["-c".into(), script])), None).await;
        assert!(matches!(reply, Reply::Exit { code: Some(3), .. }), "{reply:?}");
        let mut back = Vec::new();
        let latest = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|s| s.name)
            .max()
            .unwrap();
        repo.dump(&latest, "db", &mut back, &NoProgress).unwrap();
        assert!(back == rows.as_bytes());
    }

    /// An agent served in this process over an in-memory pipe.
    async fn local_agent() -> Agent {
        let (a, b) = tokio::io::duplex(4 * MAX_BODY);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        tokio::spawn(async move { super::super::agent::serve(br, bw).await });
        Agent::connect("test", ar, aw).await.unwrap()
    }

    fn exec(program: &str, args: &[&str], stdin: bool) -> Request {
        Request::Exec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("CAIRN_T".into(), Some("v".into()))],
            cwd: None,
            stdin,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_stream_both_ways_and_report_their_exit() {
        let agent = local_agent().await;
        assert!(agent.work_dir().is_some_and(|d| std::path::Path::new(d).is_dir()));
        // 8 MiB through `cat`: more than both windows, in and out at once.
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut out = Vec::new();
        let r = agent
            .feed(exec("cat", &[], true), std::io::Cursor::new(data.clone()), &mut out)
            .await
            .unwrap();
        assert_eq!(
            r,
            Reply::Exit {
                code: Some(0),
                signal: None,
                stderr: String::new()
            }
        );
        assert!(out == data, "cat returned {} bytes of {}", out.len(), data.len());
        let mut out = Vec::new();
        let r = agent
            .fetch(
                exec("sh", &["-c", "echo $CAIRN_T; echo oops >&2; exit 3"], false),
                &mut out,
            )
            .await
            .unwrap();
        assert_eq!(out, b"v\n");
        assert_eq!(
            r,
            Reply::Exit {
                code: Some(3),
                signal: None,
                stderr: "oops".into()
            }
        );
        let r = agent.call(exec("/no/such/program", &[], false)).await.unwrap();
        assert!(matches!(r, Reply::Failed { not_found: true, .. }), "{r:?}");
        // Many requests in flight at once on one connection.
        let agent = Arc::new(agent);
        let mut all = Vec::new();
        for i in 0..20 {
            let a = agent.clone();
            all.push(tokio::spawn(async move {
                let mut out = Vec::new();
                a.fetch(
                    exec("sh", &["-c", &format!("head -c {} /dev/zero", i * 100_000)], false),
                    &mut out,
                )
                .await
                .unwrap();
                out.len()
            }));
        }
        for (i, h) in all.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), i * 100_000);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_are_written_whole_or_not_at_all() {
        let agent = local_agent().await;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f").to_string_lossy().into_owned();
        let req = || Request::WriteFile {
            path: p.clone(),
            mode: 0o600,
        };
        let r = agent
            .feed(req(), std::io::Cursor::new(b"one".to_vec()), &mut tokio::io::sink())
            .await
            .unwrap();
        assert_eq!(r, Reply::Done);
        // Input that fails half way: the old file stays, nothing is left beside it.
        struct Broken(usize);
        impl AsyncRead for Broken {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if self.0 == 0 {
                    return std::task::Poll::Ready(Err(std::io::Error::other("the repository broke")));
                }
                self.0 -= 1;
                buf.put_slice(&[b'x'; 1000]);
                std::task::Poll::Ready(Ok(()))
            }
        }
        let e = agent.feed(req(), Broken(50), &mut tokio::io::sink()).await.unwrap_err();
        assert!(e.contains("the repository broke"), "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let names = match agent
            .call(Request::ListDir {
                path: dir.path().to_string_lossy().into(),
            })
            .await
            .unwrap()
        {
            Reply::Names { names } => names,
            r => panic!("{r:?}"),
        };
        assert_eq!(names, vec!["f".to_string()]);
        let r = agent.call(Request::Stat { path: p.clone() }).await.unwrap();
        assert!(
            matches!(&r, Reply::Stat { stat: Some(s) } if s.kind == "file" && s.len == 3 && s.mode == 0o600),
            "{r:?}"
        );
        let mut out = Vec::new();
        agent
            .fetch(
                Request::ReadFile {
                    path: p.clone(),
                    tail: None,
                },
                &mut out,
            )
            .await
            .unwrap();
        assert_eq!(out, b"one");
        assert_eq!(
            agent.call(Request::Remove { path: p.clone() }).await.unwrap(),
            Reply::Done
        );
        assert_eq!(
            agent.call(Request::Stat { path: p.clone() }).await.unwrap(),
            Reply::Stat { stat: None }
        );
    }

    /// An agent cannot make the controller do anything: a request from its side ends the
    /// connection, and what was in flight fails with the reason.
    #[tokio::test]
    async fn an_agent_sending_a_request_is_cut_off() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        tokio::spawn(async move {
            let _ = wire::read_frame(&mut br).await;
            let hello = serde_json::to_vec(&Hello::ours()).unwrap();
            wire::write_frame(&mut bw, &wire::Frame::new(Kind::Hello, 0, hello))
                .await
                .unwrap();
            // Wait for the controller's request, then ask it to read a file instead of answering.
            let f = wire::read_frame(&mut br).await.unwrap().unwrap();
            assert_eq!(f.kind, Kind::Request);
            let evil = serde_json::to_vec(&Request::ReadFile {
                path: "/etc/cairn/repository.pass".into(),
                tail: None,
            })
            .unwrap();
            wire::write_frame(&mut bw, &wire::Frame::new(Kind::Request, 1000, evil))
                .await
                .unwrap();
            bw.flush().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let agent = Agent::connect("db1", ar, aw).await.unwrap();
        let e = agent.call(Request::Stat { path: "/".into() }).await.unwrap_err();
        assert!(e.contains("host db1") && e.contains("sent a request"), "{e}");
        assert!(agent.lost().is_some());
    }

    #[tokio::test]
    async fn a_peer_of_another_protocol_is_refused_by_name() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        tokio::spawn(async move {
            let _ = wire::read_frame(&mut br).await;
            let mut h = Hello::ours();
            h.protocol = 99;
            h.version = "9.0.0".into();
            let f = wire::Frame::new(Kind::Hello, 0, serde_json::to_vec(&h).unwrap());
            wire::write_frame(&mut bw, &f).await.unwrap();
            bw.flush().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let e = Agent::connect("db1", ar, aw).await.err().unwrap();
        assert!(
            e.contains("host db1") && e.contains("protocol 99") && e.contains("install cairn"),
            "{e}"
        );
    }
}
