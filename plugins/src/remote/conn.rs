//! One end of an agent connection: frames in and out, routed to channels (see `wire.rs`).
//!
//! A writer task owns the outgoing pipe and a reader task the incoming one; each open channel
//! has an [`Endpoint`] that receives its frames in order and sends on it, waiting for the
//! peer's acknowledgements when its window is full. When the connection ends, every open
//! endpoint receives [`Event::Lost`] with the reason, so no request waits forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Semaphore};

use super::wire::{self, Frame, Kind, MAX_BODY, WINDOW};

/// What arrives on a channel.
#[derive(Debug)]
pub enum Event {
    /// A request (only the agent receives these; the endpoint is new).
    Request(Vec<u8>),
    Data(Vec<u8>),
    End,
    Reply(Vec<u8>),
    Cancel,
    /// The connection ended; why.
    Lost(String),
}

struct Chan {
    inbound: mpsc::UnboundedSender<Event>,
    credits: Arc<Semaphore>,
}

/// The shared state of one connection.
pub struct Conn {
    out: mpsc::Sender<Frame>,
    chans: Mutex<HashMap<u32, Chan>>,
    /// Why the connection ended, once it has.
    lost: Mutex<Option<String>>,
}

impl Conn {
    /// Starts the writer task on `w`; frames are written in the order they are sent.
    pub fn start(w: impl AsyncWrite + Unpin + Send + 'static) -> Arc<Conn> {
        let (out, mut rx) = mpsc::channel::<Frame>(64);
        let conn = Arc::new(Conn {
            out,
            chans: Mutex::default(),
            lost: Mutex::default(),
        });
        tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(MAX_BODY + 64, w);
            while let Some(f) = rx.recv().await {
                if wire::write_frame(&mut w, &f).await.is_err() {
                    break;
                }
                // Flush when nothing else is queued, so a lone reply is not held back.
                if rx.is_empty() && w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        conn
    }

    /// Sends a frame (queued for the writer); an error once the connection is gone.
    pub async fn send(&self, f: Frame) -> Result<(), String> {
        self.out.send(f).await.map_err(|_| self.why_lost())
    }

    fn why_lost(&self) -> String {
        self.lost
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "the connection is closed".into())
    }

    /// Opens channel `id` for frames from the peer.
    pub fn open(self: &Arc<Self>, id: u32) -> Endpoint {
        let (tx, rx) = mpsc::unbounded_channel();
        let credits = Arc::new(Semaphore::new(WINDOW));
        let lost = self.lost.lock().unwrap().clone();
        match lost {
            Some(why) => {
                let _ = tx.send(Event::Lost(why));
            }
            None => {
                self.chans.lock().unwrap().insert(
                    id,
                    Chan {
                        inbound: tx,
                        credits: credits.clone(),
                    },
                );
            }
        }
        Endpoint {
            tx: Sender {
                conn: self.clone(),
                id,
                credits,
            },
            rx,
        }
    }

    /// Routes one frame from the peer. `Hello` frames after the first are refused by the
    /// caller; a frame for a channel that is closed is dropped (its request already ended).
    pub fn route(self: &Arc<Self>, f: Frame) -> Option<Endpoint> {
        let mut new = None;
        let event = match f.kind {
            Kind::Ack => {
                let n = f
                    .body
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
                if let Some(c) = self.chans.lock().unwrap().get(&f.channel) {
                    c.credits.add_permits((n as usize).min(WINDOW));
                }
                return None;
            }
            Kind::Request => {
                let ep = self.open(f.channel);
                new = Some(ep);
                Event::Request(f.body)
            }
            Kind::Data => Event::Data(f.body),
            Kind::End => Event::End,
            Kind::Reply => Event::Reply(f.body),
            Kind::Cancel => Event::Cancel,
            Kind::Hello => Event::Lost("a second hello on the connection".into()),
        };
        if let Some(c) = self.chans.lock().unwrap().get(&f.channel) {
            let _ = c.inbound.send(event);
        }
        new
    }

    /// The connection ended: every open channel learns why.
    pub fn lose(&self, why: String) {
        let mut lost = self.lost.lock().unwrap();
        if lost.is_none() {
            *lost = Some(why.clone());
        }
        for (_, c) in self.chans.lock().unwrap().drain() {
            let _ = c.inbound.send(Event::Lost(why.clone()));
            c.credits.close();
        }
    }

    pub fn is_lost(&self) -> Option<String> {
        self.lost.lock().unwrap().clone()
    }

    /// Reads frames from `r` and routes them until the stream ends; new requests go to
    /// `requests` (the agent's side). Returns why the connection ended.
    pub async fn read_loop(
        self: &Arc<Self>,
        mut r: impl AsyncRead + Unpin,
        requests: Option<mpsc::UnboundedSender<Endpoint>>,
    ) -> String {
        let why = loop {
            match wire::read_frame(&mut r).await {
                Ok(Some(f)) => {
                    if f.kind == Kind::Request && requests.is_none() {
                        break "the peer sent a request; agents do not".to_string();
                    }
                    if let Some(ep) = self.route(f) {
                        if let Some(tx) = &requests {
                            let _ = tx.send(ep);
                        }
                    }
                }
                Ok(None) => break "the connection closed".to_string(),
                Err(e) => break format!("the connection broke: {e}"),
            }
        };
        self.lose(why.clone());
        why
    }
}

/// The sending half of a channel, which several tasks may hold.
#[derive(Clone)]
pub struct Sender {
    conn: Arc<Conn>,
    id: u32,
    credits: Arc<Semaphore>,
}

impl Sender {
    /// Sends a control frame (`Request`, `End`, `Reply`, `Cancel`).
    pub async fn send(&self, kind: Kind, body: Vec<u8>) -> Result<(), String> {
        self.conn.send(Frame::new(kind, self.id, body)).await
    }

    /// Sends stream bytes, split into frames, each once the window has room.
    pub async fn send_data(&self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            let n = bytes.len().min(MAX_BODY);
            match self.credits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return Err(self.conn.why_lost()),
            }
            self.send(Kind::Data, bytes[..n].to_vec()).await?;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// One channel of a connection: its events in order, and a [`Sender`].
pub struct Endpoint {
    tx: Sender,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Endpoint {
    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    pub async fn send(&self, kind: Kind, body: Vec<u8>) -> Result<(), String> {
        self.tx.send(kind, body).await
    }

    pub async fn send_data(&self, bytes: &[u8]) -> Result<(), String> {
        self.tx.send_data(bytes).await
    }

    /// The next event; `Data` is acknowledged as it is taken.
    pub async fn recv(&mut self) -> Event {
        match self.rx.recv().await {
            Some(Event::Data(d)) => {
                let _ = self.tx.send(Kind::Ack, 1u32.to_le_bytes().to_vec()).await;
                Event::Data(d)
            }
            Some(e) => e,
            None => Event::Lost(self.tx.conn.why_lost()),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.tx.conn.chans.lock().unwrap().remove(&self.tx.id);
    }
}
