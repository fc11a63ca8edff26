//! Streams that the agent cuts and hashes on its host, sending only the chunks the controller
//! wants: both ends of a `ChunkStream` request. The exchange itself (messages, who decides
//! what, what is checked) is `cairn_store::write::foreign`; this file carries it over a channel.
//!
//! On the agent three parties run at once, so that reading, asking and sending overlap:
//! - a cutting thread reads the source, cuts, hashes and caches chunks, and offers them in
//!   batches of [`BATCH`], at most [`IN_FLIGHT`] batches unanswered;
//! - a sending thread takes the controller's answers, reads the wanted chunks back from the
//!   cache and compresses them (against their previous version when a delta is wanted);
//! - the request's task moves messages between those threads and the channel.
//!
//! On the controller the store's [`ForeignSource`] is fed from the channel, and the item is
//! stored by a blocking thread as a local backup's would be.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_store::write::foreign::{
    encode_message, ChunkingKeys, ForeignSource, HostChunker, Message, MessageBuffer, Offered, Place, Want,
};
use tokio::sync::{mpsc, Semaphore};

use super::conn::{Endpoint, Event};
use super::msg::Reply;
use super::wire::Kind;

/// Chunks per offer.
const BATCH: usize = 32;
/// Offers the agent may have unanswered: enough to cover a round trip at full speed.
const IN_FLIGHT: usize = 8;

/// Where an agent keeps the streams it sent: `CAIRN_AGENT_CACHE`, else
/// `$XDG_CACHE_HOME/cairn/agent`, else `~/.cache/cairn/agent`.
pub fn agent_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CAIRN_AGENT_CACHE").filter(|d| !d.is_empty()) {
        return Some(d.into());
    }
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("cairn").join("agent"))
}

/// What the cutting thread hands the sending thread.
enum Job {
    /// An offer just sent: its chunks and their offsets in the stream.
    Batch(Vec<(Offered, Place)>),
    /// The controller's answers to the oldest batch not answered.
    Wants(Vec<Want>),
    /// No more batches.
    Done,
}

fn failed(error: impl Into<String>) -> Reply {
    Reply::Failed {
        error: error.into(),
        not_found: false,
    }
}

/// The agent's side: cuts `source` (a program's output or a file, `what` in messages) and
/// sends what the controller wants. On an error the caller kills the program; the threads
/// then end on their own, as their source and channels are gone.
pub(super) async fn serve(
    ep: &mut Endpoint,
    keys: ChunkingKeys,
    cache: String,
    source: Box<dyn std::io::Read + Send>,
    what: String,
) -> Result<(), Reply> {
    let dir = agent_cache_dir().ok_or_else(|| failed("no cache directory: set HOME or CAIRN_AGENT_CACHE"))?;
    let chunker = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            match cache.is_empty() {
                // A small file of a tree: cut and offered, not kept (see `HostChunker::transient`).
                true => HostChunker::transient(&dir, keys),
                false => HostChunker::open(&dir, &cache, keys),
            }
        }
    })
    .await
    .map_err(|e| failed(format!("the cutting thread failed: {e}")))?
    .map_err(|e| failed(format!("the agent's cache {}: {e}", dir.display())))?;
    let reader = chunker
        .reader()
        .map_err(|e| failed(format!("the agent's cache {}: {e}", dir.display())))?;

    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(2 * IN_FLIGHT);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
    let credits = Arc::new(Semaphore::new(IN_FLIGHT));

    let cutter = {
        let (out_tx, job_tx, credits) = (out_tx.clone(), job_tx.clone(), credits.clone());
        let rt = tokio::runtime::Handle::current();
        let what = what.clone();
        tokio::task::spawn_blocking(move || {
            let mut chunker = chunker;
            let mut batch = Vec::new();
            let offer = |batch: &mut Vec<(Offered, Place)>| -> std::io::Result<()> {
                let gone = || std::io::Error::other("the request ended");
                rt.block_on(credits.acquire()).map_err(|_| gone())?.forget();
                let mut bytes = Vec::new();
                encode_message(
                    &Message::Offer(batch.iter().map(|(o, _)| o.clone()).collect()),
                    &mut bytes,
                );
                job_tx.send(Job::Batch(std::mem::take(batch))).map_err(|_| gone())?;
                out_tx.blocking_send(bytes).map_err(|_| gone())
            };
            let r = chunker.run(source, |o, at| {
                batch.push((o, at));
                if batch.len() >= BATCH {
                    offer(&mut batch)?;
                }
                Ok(())
            });
            let r = r.and_then(|()| if batch.is_empty() { Ok(()) } else { offer(&mut batch) });
            let _ = job_tx.send(Job::Done);
            r.map(|()| chunker).map_err(|e| format!("reading {what}: {e}"))
        })
    };

    let sender = {
        let (out_tx, credits) = (out_tx.clone(), credits.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut batches: VecDeque<Vec<(Offered, Place)>> = VecDeque::new();
            let mut done = false;
            while !(done && batches.is_empty()) {
                match job_rx.recv() {
                    Ok(Job::Batch(b)) => batches.push_back(b),
                    Ok(Job::Done) => done = true,
                    Ok(Job::Wants(wants)) => {
                        let batch = batches.pop_front().ok_or("the controller answered an offer not made")?;
                        if batch.len() != wants.len() {
                            return Err(format!("{} answers to an offer of {}", wants.len(), batch.len()));
                        }
                        for ((o, at), w) in batch.iter().zip(wants) {
                            if w == Want::Have {
                                continue;
                            }
                            let m = reader
                                .message(*at, o, w == Want::Delta)
                                .map_err(|e| format!("reading back chunk {}: {e}", o.id))?;
                            let mut bytes = Vec::new();
                            encode_message(&m, &mut bytes);
                            out_tx.blocking_send(bytes).map_err(|_| "the request ended")?;
                        }
                        credits.add_permits(1);
                    }
                    Err(_) => return Err("the request ended".into()),
                }
            }
            Ok(())
        })
    };
    drop(out_tx);

    let mut inbound = MessageBuffer::default();
    let result: Result<(), Reply> = 'exchange: loop {
        tokio::select! {
            bytes = out_rx.recv() => match bytes {
                Some(b) => {
                    if let Err(e) = ep.send_data(&b).await {
                        break Err(failed(e));
                    }
                }
                // Both threads ended: everything wanted was sent, or one failed.
                None => break Ok(()),
            },
            ev = ep.recv() => match ev {
                Event::Data(d) => {
                    inbound.push(&d);
                    loop {
                        match inbound.next_message() {
                            Ok(Some(Message::Wants(w))) => {
                                if job_tx.send(Job::Wants(w)).is_err() {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Ok(Some(_)) => break 'exchange Err(failed("the controller sent an agent's message")),
                            Err(e) => break 'exchange Err(failed(e.to_string())),
                        }
                    }
                }
                Event::Cancel | Event::Lost(_) => break Err(failed(format!("{what} was stopped: the request was cancelled"))),
                Event::End | Event::Request(_) | Event::Reply(_) => {}
            },
        }
    };
    drop(job_tx);
    credits.close();
    drop(out_rx);
    // Not waiting for the threads on an error: the cutting one may be blocked reading a
    // program that only the caller's kill ends.
    result?;
    let cut = cutter
        .await
        .map_err(|e| failed(format!("the cutting thread failed: {e}")))?;
    let sent = sender
        .await
        .map_err(|e| failed(format!("the sending thread failed: {e}")))?;
    let chunker = cut.map_err(failed)?;
    sent.map_err(failed)?;
    let _ = ep.send(Kind::End, Vec::new()).await;
    // Kept only once all of it went out: the next run's deltas are against what was sent.
    tokio::task::spawn_blocking(move || chunker.finish())
        .await
        .map_err(|e| failed(format!("the cutting thread failed: {e}")))?
        .map_err(|e| failed(format!("keeping the stream in the agent's cache: {e}")))?;
    Ok(())
}

/// The store's side of the exchange, fed from a channel by [`exchange`]'s task.
pub struct ChannelSource {
    rx: mpsc::Receiver<Result<Message, String>>,
    tx: mpsc::UnboundedSender<Vec<Want>>,
}

impl ForeignSource for ChannelSource {
    fn next(&mut self) -> cairn_store::Result<Option<Message>> {
        match self.rx.blocking_recv() {
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => Err(cairn_store::Error::Pipeline(e)),
            None => Ok(None),
        }
    }

    fn answer(&mut self, wants: Vec<Want>) -> cairn_store::Result<()> {
        self.tx
            .send(wants)
            .map_err(|_| cairn_store::Error::Pipeline("the agent's channel closed".into()))
    }
}

/// What an exchange's task ends with: the request's reply and the bytes the stream moved.
pub type Ended = tokio::task::JoinHandle<(Result<Reply, String>, u64)>;

/// The controller's side: a task moves the messages of `ep` to the returned source (for the
/// store, on a blocking thread) and its answers back, until the request's reply, which the
/// task returns with the bytes the stream moved on the wire. A stream that ends badly (a lost
/// connection, a cancel) reaches the source as an error, never as an early end.
pub(super) fn exchange(mut ep: Endpoint, host: String) -> (ChannelSource, Ended) {
    let (msg_tx, msg_rx) = mpsc::channel::<Result<Message, String>>(64);
    let (want_tx, mut want_rx) = mpsc::unbounded_channel::<Vec<Want>>();
    let task = tokio::spawn(async move {
        let host = host.as_str();
        // Bytes this stream moved, counted as frames on the wire (header and body).
        let frames = |n: usize| (n + n.div_ceil(super::wire::MAX_BODY) * 9) as u64;
        let mut wire = 0u64;
        let mut msg_tx = Some(msg_tx);
        let mut inbound = MessageBuffer::default();
        let mut wants_open = true;
        let reply = loop {
            tokio::select! {
                biased;
                w = want_rx.recv(), if wants_open => if let Some(w) = w {
                    let mut bytes = Vec::new();
                    encode_message(&Message::Wants(w), &mut bytes);
                    wire += frames(bytes.len());
                    if let Err(e) = ep.send_data(&bytes).await {
                        break Err(format!("host {host}: {e}"));
                    }
                } else {
                    // The store is done; it answers nothing more.
                    wants_open = false;
                },
                ev = ep.recv() => match ev {
                    Event::Data(d) => {
                        wire += frames(d.len());
                        inbound.push(&d);
                        let mut stopped = false;
                        loop {
                            let m = match inbound.next_message() {
                                Ok(Some(m)) => Ok(m),
                                Ok(None) => break,
                                Err(e) => Err(format!("host {host}: {e}")),
                            };
                            let bad = m.is_err();
                            let delivered = match &msg_tx {
                                Some(tx) => tx.send(m).await.is_ok(),
                                None => false,
                            };
                            if bad || !delivered {
                                stopped = true;
                                break;
                            }
                        }
                        if stopped {
                            // The store stopped (its error is the one to report) or the stream is bad.
                            let _ = ep.send(Kind::Cancel, Vec::new()).await;
                            msg_tx = None;
                        }
                    }
                    Event::End => {
                        if !inbound.is_empty() {
                            if let Some(tx) = &msg_tx {
                                let _ = tx.send(Err(format!("host {host}: the stream ended inside a message"))).await;
                            }
                        }
                        msg_tx = None;
                    }
                    Event::Reply(body) => {
                        break serde_json::from_slice::<Reply>(&body).map_err(|e| format!("host {host}: a reply: {e}"));
                    }
                    Event::Lost(why) => break Err(format!("host {host}: {why}")),
                    Event::Cancel | Event::Request(_) => {}
                },
            }
        };
        // A stream that did not end with `End` must not look complete to the store.
        if let Some(tx) = msg_tx.take() {
            let why = match &reply {
                Ok(r) => format!("host {host}: the stream stopped before its end ({r:?})"),
                Err(e) => e.clone(),
            };
            let _ = tx.send(Err(why)).await;
        }
        (reply, wire)
    });
    (
        ChannelSource {
            rx: msg_rx,
            tx: want_tx,
        },
        task,
    )
}
