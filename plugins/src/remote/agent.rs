//! `cairn agent`: the host side of the protocol, on stdin and stdout (started by the
//! controller over SSH). It holds no repository key and opens no repository: it runs the
//! commands and touches the files the controller's plugins ask for on this host, and nothing
//! else. Each request runs as its own task; the agent ends when its input ends, killing the
//! commands still running and removing its work directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::conn::{Conn, Endpoint, Event};
use super::msg::{Hello, Reply, Request, Stat, PROTOCOL};
use super::wire::{self, Kind, MAX_BODY};

/// Serves one connection on stdin/stdout until it ends.
pub async fn serve_stdio() -> Result<(), String> {
    serve(tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves one connection: hello, then requests until the input ends.
pub async fn serve(
    mut input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    output: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
) -> Result<(), String> {
    let first = wire::read_frame(&mut input)
        .await
        .map_err(|e| format!("reading the controller's hello: {e}"))?
        .ok_or("the controller closed the connection before its hello")?;
    let theirs: Hello = match first.kind {
        Kind::Hello => serde_json::from_slice(&first.body).map_err(|e| format!("the controller's hello: {e}"))?,
        k => return Err(format!("the controller's first frame is {k:?}, not a hello")),
    };
    let work = tempfile::Builder::new()
        .prefix("cairn-agent-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}"))?;
    let conn = Conn::start(output);
    let mut ours = Hello::ours();
    ours.work_dir = Some(work.path().to_string_lossy().into_owned());
    ours.hostname = hostname();
    let body = serde_json::to_vec(&ours).expect("hello serialises");
    conn.send(wire::Frame::new(Kind::Hello, 0, body)).await?;
    if theirs.protocol != PROTOCOL {
        return Err(format!(
            "the controller (cairn {}) speaks agent protocol {}, this agent (cairn {}) {PROTOCOL}",
            theirs.version,
            theirs.protocol,
            env!("CARGO_PKG_VERSION")
        ));
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Endpoint>();
    let reader = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.read_loop(input, Some(tx)).await })
    };
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(ep) = rx.recv().await {
        tasks.spawn(handle(ep));
        while tasks.try_join_next().is_some() {}
    }
    // The input ended: stop what still runs (children are killed as their tasks drop).
    tasks.shutdown().await;
    let _ = reader.await;
    drop(work);
    Ok(())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

async fn reply(ep: &Endpoint, r: Reply) {
    let _ = ep
        .send(Kind::Reply, serde_json::to_vec(&r).expect("reply serialises"))
        .await;
}

async fn handle(mut ep: Endpoint) {
    let req = match ep.recv().await {
        Event::Request(body) => serde_json::from_slice::<Request>(&body),
        _ => return,
    };
    let r = match req {
        Err(e) => Reply::Failed {
            error: format!("this agent (cairn {}) cannot do that: {e}", env!("CARGO_PKG_VERSION")),
            not_found: false,
        },
        Ok(Request::Exec {
            program,
            args,
            env,
            cwd,
            stdin,
        }) => exec(&mut ep, program, args, env, cwd, stdin).await,
        Ok(Request::ChunkStream {
            program,
            args,
            env,
            cwd,
            path,
            keys,
            cache,
        }) => chunk_stream(&mut ep, program.map(|p| (p, args, env, cwd)), path, keys, cache).await,
        Ok(Request::ReadFile { path, tail }) => read_file(&ep, &path, tail).await,
        Ok(Request::WriteFile { path, mode }) => write_file(&mut ep, &path, mode).await,
        Ok(Request::Stat { path }) => stat(&path),
        Ok(Request::ListDir { path }) => list_dir(&path),
        Ok(Request::Remove { path }) => remove(&path),
        Ok(Request::Rename { from, to }) => std::fs::rename(&from, &to).map_or_else(
            |e| Reply::failed(&format!("renaming {from} to {to}"), &e),
            |_| Reply::Done,
        ),
        Ok(Request::Walk { root }) => walk(&ep, root).await,
        Ok(Request::PlaceTree { dest, overwrite }) => place_tree(&mut ep, dest, overwrite).await,
    };
    reply(&ep, r).await;
}

/// A program with its output and stderr piped, killed if its request ends first.
fn command(
    program: &str,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    cwd: Option<String>,
    with_stdin: bool,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&args)
        .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd
}

fn exited(program: &str, status: std::io::Result<std::process::ExitStatus>, stderr: String) -> Reply {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => Reply::Exit {
            code: s.code(),
            signal: s.signal(),
            stderr,
        },
        Err(e) => Reply::failed(&format!("waiting for {program}"), &e),
    }
}

/// A program to run: its name, arguments, environment changes and directory.
type Program = (String, Vec<String>, Vec<(String, Option<String>)>, Option<String>);

/// Cuts a program's output or a file into chunks on this host (`chunked.rs`).
async fn chunk_stream(
    ep: &mut Endpoint,
    program: Option<Program>,
    path: Option<String>,
    keys: cairn_store::write::foreign::ChunkingKeys,
    cache: String,
) -> Reply {
    match (program, path) {
        (Some((program, args, env, cwd)), None) => {
            let mut child = match command(&program, args, env, cwd, false).spawn() {
                Ok(c) => c,
                Err(e) => return Reply::failed(&format!("cannot start {program}"), &e),
            };
            let stdout = tokio_util::io::SyncIoBridge::new(child.stdout.take().expect("piped"));
            let stderr = tokio::spawn(crate::process::read_tail(child.stderr.take().expect("piped")));
            if let Err(r) = super::chunked::serve(ep, keys, cache, Box::new(stdout), program.clone()).await {
                let _ = child.kill().await;
                return r;
            }
            let status = child.wait().await;
            exited(&program, status, stderr.await.unwrap_or_default())
        }
        (None, Some(path)) => {
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => return Reply::failed(&format!("opening {path}"), &e),
            };
            match super::chunked::serve(ep, keys, cache, Box::new(f), path).await {
                Ok(()) => Reply::Done,
                Err(r) => r,
            }
        }
        _ => Reply::Failed {
            error: "a chunk stream reads a program's output or a file".into(),
            not_found: false,
        },
    }
}

async fn exec(
    ep: &mut Endpoint,
    program: String,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    cwd: Option<String>,
    with_stdin: bool,
) -> Reply {
    let mut child = match command(&program, args, env, cwd, with_stdin).spawn() {
        Ok(c) => c,
        Err(e) => return Reply::failed(&format!("cannot start {program}"), &e),
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = tokio::spawn(crate::process::read_tail(child.stderr.take().expect("piped")));
    // Output goes out from a task of its own while input comes in here: a command that writes
    // while its input is not consumed (or the reverse) never stalls the other direction.
    let tx = ep.sender();
    let mut pump = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_BODY];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => return tx.send(Kind::End, Vec::new()).await.is_ok(),
                Ok(n) => {
                    if tx.send_data(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
            }
        }
    });
    let (mut pumped, mut status) = (None, None);
    let cancelled = loop {
        if pumped.is_some() && status.is_some() {
            break pumped == Some(false);
        }
        tokio::select! {
            p = &mut pump, if pumped.is_none() => pumped = Some(p.unwrap_or(false)),
            s = child.wait(), if status.is_none() => status = Some(s),
            ev = ep.recv() => match ev {
                Event::Data(d) => {
                    // A command that stopped reading its input is not an error here; its exit
                    // status says what happened.
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&d).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Event::End => stdin = None,
                Event::Cancel | Event::Lost(_) => break true,
                Event::Request(_) | Event::Reply(_) => {}
            },
        }
    };
    drop(stdin);
    if cancelled {
        pump.abort();
        let _ = child.kill().await;
        return Reply::Failed {
            error: format!("{program} was stopped: the request was cancelled"),
            not_found: false,
        };
    }
    let stderr = stderr.await.unwrap_or_default();
    exited(&program, status.expect("the loop ends with a status"), stderr)
}

async fn read_file(ep: &Endpoint, path: &str, tail: Option<u64>) -> Reply {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return Reply::failed(&format!("opening {path}"), &e),
    };
    if let Some(n) = tail {
        use tokio::io::AsyncSeekExt;
        let len = match f.metadata().await {
            Ok(m) => m.len(),
            Err(e) => return Reply::failed(&format!("examining {path}"), &e),
        };
        if let Err(e) = f.seek(std::io::SeekFrom::Start(len.saturating_sub(n))).await {
            return Reply::failed(&format!("reading {path}"), &e);
        }
    }
    let mut buf = vec![0u8; MAX_BODY];
    loop {
        match f.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = ep.send_data(&buf[..n]).await {
                    return Reply::Failed {
                        error: e,
                        not_found: false,
                    };
                }
            }
            Err(e) => return Reply::failed(&format!("reading {path}"), &e),
        }
    }
    let _ = ep.send(Kind::End, Vec::new()).await;
    Reply::Done
}

/// Writes to a temporary file beside `path`, syncs it and renames it over `path`: a reader
/// sees the old file or the complete new one, never a part.
async fn write_file(ep: &mut Endpoint, path: &str, mode: u32) -> Reply {
    let target = PathBuf::from(path);
    let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Reply::Failed {
            error: format!("{path} is not an absolute file path"),
            not_found: false,
        };
    };
    let tmp = match tempfile::Builder::new().prefix(".cairn-").tempfile_in(dir) {
        Ok(t) => t,
        Err(e) => return Reply::failed(&format!("creating a file in {}", dir.display()), &e),
    };
    let mut f = tokio::fs::File::from_std(tmp.reopen().expect("reopen a tempfile"));
    loop {
        match ep.recv().await {
            Event::Data(d) => {
                if let Err(e) = f.write_all(&d).await {
                    return Reply::failed(&format!("writing {path}"), &e);
                }
            }
            Event::End => break,
            Event::Cancel | Event::Lost(_) => {
                return Reply::Failed {
                    error: format!("writing {path} was cancelled"),
                    not_found: false,
                }
            }
            Event::Request(_) | Event::Reply(_) => {}
        }
    }
    let done = async {
        f.flush().await?;
        f.sync_all().await?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
        tmp.persist(&target).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    };
    match done.await {
        Ok(()) => Reply::Done,
        Err(e) => Reply::failed(&format!("writing {path}"), &e),
    }
}

/// Walks on a blocking thread (the same walk a local backup does) and streams the entries.
async fn walk(ep: &Endpoint, root: String) -> Reply {
    let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, String>>(64);
    let walker = tokio::task::spawn_blocking(move || {
        use cairn_store::write::source::{LocalTree, TreeSource};
        let keep_all = |_: &Path| true;
        let entries = match LocalTree.entries(Path::new(&root), &keep_all) {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.to_string()));
                return;
            }
        };
        let mut batch = Vec::new();
        for e in entries {
            match e {
                Ok(e) => {
                    serde_json::to_writer(&mut batch, &e).expect("entry serialises");
                    batch.push(b'\n');
                    if batch.len() >= MAX_BODY / 2 && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                    return;
                }
            }
        }
        let _ = tx.blocking_send(Ok(batch));
    });
    while let Some(part) = rx.recv().await {
        match part {
            Ok(bytes) => {
                if let Err(e) = ep.send_data(&bytes).await {
                    return Reply::Failed {
                        error: e,
                        not_found: false,
                    };
                }
            }
            Err(e) => {
                return Reply::Failed {
                    error: e,
                    not_found: false,
                }
            }
        }
    }
    let _ = walker.await;
    let _ = ep.send(Kind::End, Vec::new()).await;
    Reply::Done
}

/// Feeds the channel's bytes to a [`cairn_store::TreePlacer`] on a blocking thread. A stream
/// that stops early (the controller cancelled, the connection broke) lacks its end marker, so
/// the placer fails instead of finishing.
async fn place_tree(ep: &mut Endpoint, dest: String, overwrite: bool) -> Reply {
    let (r, mut w) = tokio::io::duplex(2 * MAX_BODY);
    let placer = tokio::task::spawn_blocking(move || {
        let mut input = tokio_util::io::SyncIoBridge::new(r);
        cairn_store::TreePlacer::new(Path::new(&dest), overwrite).and_then(|p| p.place_all(&mut input))
    });
    loop {
        match ep.recv().await {
            Event::Data(d) => {
                if w.write_all(&d).await.is_err() {
                    break; // the placer stopped: its error says why
                }
            }
            Event::End | Event::Cancel | Event::Lost(_) => break,
            Event::Request(_) | Event::Reply(_) => {}
        }
    }
    drop(w);
    match placer.await {
        Ok(Ok(_)) => Reply::Done,
        Ok(Err(e)) => Reply::Failed {
            error: e.to_string(),
            not_found: false,
        },
        Err(e) => Reply::Failed {
            error: format!("the placing thread failed: {e}"),
            not_found: false,
        },
    }
}

fn stat(path: &str) -> Reply {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Reply::Stat {
            stat: Some(Stat::of(&m)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Reply::Stat { stat: None },
        Err(e) => Reply::failed(&format!("examining {path}"), &e),
    }
}

fn list_dir(path: &str) -> Reply {
    let rd = match std::fs::read_dir(path) {
        Ok(r) => r,
        Err(e) => return Reply::failed(&format!("listing {path}"), &e),
    };
    let mut names = Vec::new();
    for e in rd {
        match e {
            Ok(e) => match e.file_name().into_string() {
                Ok(n) => names.push(n),
                Err(n) => {
                    return Reply::Failed {
                        error: format!("{path} holds a name that is not UTF-8: {n:?}"),
                        not_found: false,
                    }
                }
            },
            Err(e) => return Reply::failed(&format!("listing {path}"), &e),
        }
    }
    names.sort();
    Reply::Names { names }
}

fn remove(path: &str) -> Reply {
    super::msg::remove_path(Path::new(path))
        .map_or_else(|e| Reply::failed(&format!("removing {path}"), &e), |_| Reply::Done)
}
