//! The agent protocol's frames: how requests, replies and streamed bytes share one pipe.
//!
//! A connection is the stdin and stdout of `cairn agent` (through `ssh`). Both sides write
//! frames:
//!
//! ```text
//! u32 length (of what follows: kind, channel, body) | u8 kind | u32 channel | body
//! ```
//!
//! integers little-endian, `length` at least 5 and at most `5 + MAX_BODY`. A request opens a
//! channel (numbered by the controller, never reused on one connection); everything about it
//! carries that channel, so many requests are in flight at once. Kinds:
//!
//! | kind | body | sent by |
//! |---|---|---|
//! | `Hello` (1) | JSON [`Hello`](super::msg::Hello), channel 0, first frame each way | both |
//! | `Request` (2) | JSON [`Request`](super::msg::Request) | controller |
//! | `Data` (3) | bytes of the channel's stream, at most `MAX_BODY` | both |
//! | `End` (4) | empty: the sender's stream on this channel is complete | both |
//! | `Ack` (5) | u32: how many `Data` frames of this channel the receiver consumed | both |
//! | `Reply` (6) | JSON [`Reply`](super::msg::Reply): the request is over | agent |
//! | `Cancel` (7) | empty: stop (kill the command, drop the file) | controller |
//!
//! Flow control: a sender has at most [`WINDOW`] unacknowledged `Data` frames on a channel, so
//! neither side holds more than `WINDOW * MAX_BODY` bytes of a stream it cannot pass on yet.
//! A frame that breaks these rules ends the connection: the peer is not a cairn agent of this
//! protocol, or the pipe was damaged.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest body of one frame.
pub const MAX_BODY: usize = 256 * 1024;
/// Unacknowledged `Data` frames a sender may have on one channel.
pub const WINDOW: usize = 16;
const HEAD: usize = 4 + 1 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Request = 2,
    Data = 3,
    End = 4,
    Ack = 5,
    Reply = 6,
    Cancel = 7,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Data,
            4 => Kind::End,
            5 => Kind::Ack,
            6 => Kind::Reply,
            7 => Kind::Cancel,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub channel: u32,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, channel: u32, body: Vec<u8>) -> Self {
        Self { kind, channel, body }
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.body.len() <= MAX_BODY, "frame body over MAX_BODY");
        out.extend_from_slice(&((5 + self.body.len()) as u32).to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.channel.to_le_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame length {0} out of range (5 to {max})", max = 5 + MAX_BODY)]
    Length(u32),
    #[error("unknown frame kind {0}")]
    Kind(u8),
}

/// The length field at the start of `b` (4 bytes), if in range: 5 to `5 + MAX_BODY`.
fn frame_len(b: &[u8]) -> Result<u32, WireError> {
    let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    if (5..=(5 + MAX_BODY) as u32).contains(&len) {
        Ok(len)
    } else {
        Err(WireError::Length(len))
    }
}

fn frame_kind(b: u8) -> Result<Kind, WireError> {
    Kind::from_byte(b).ok_or(WireError::Kind(b))
}

/// Parses one frame from the start of `buf`: `Ok(None)` when `buf` holds only part of one,
/// else the frame and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = frame_len(buf)?;
    if buf.len() < 4 + 1 {
        return Ok(None);
    }
    let kind = frame_kind(buf[4])?;
    let total = 4 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let channel = u32::from_le_bytes(buf[5..HEAD].try_into().expect("4 bytes"));
    Ok(Some((Frame::new(kind, channel, buf[HEAD..total].to_vec()), total)))
}

/// Reads one frame; `Ok(None)` at a clean end of the stream (between frames).
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; HEAD];
    let mut got = 0;
    while got < HEAD {
        let n = r.read(&mut head[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection ended inside a frame",
                ))
            };
        }
        got += n;
    }
    let bad = |e: WireError| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
    let len = frame_len(&head).map_err(bad)?;
    let kind = frame_kind(head[4]).map_err(bad)?;
    let channel = u32::from_le_bytes(head[5..].try_into().expect("4 bytes"));
    let mut body = vec![0u8; len as usize - 5];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame::new(kind, channel, body)))
}

/// Writes one frame (not flushed).
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), f: &Frame) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(HEAD + f.body.len());
    f.encode(&mut buf);
    w.write_all(&buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = Kind> {
        (1u8..=7).prop_map(|b| Kind::from_byte(b).unwrap())
    }

    proptest! {
        /// Encoded frames decode to themselves, from any split of the bytes.
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec((kind(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..600)), 1..8), cut in any::<prop::sample::Index>()) {
            let frames: Vec<Frame> = frames.into_iter().map(|(k, c, b)| Frame::new(k, c, b)).collect();
            let mut bytes = Vec::new();
            for f in &frames {
                f.encode(&mut bytes);
            }
            let cut = cut.index(bytes.len() + 1);
            // A prefix decodes to whole frames and then "need more", never to something else.
            let (mut at, mut n) = (0, 0);
            while let Some((f, used)) = decode(&bytes[at..cut]).unwrap() {
                prop_assert_eq!(&f, &frames[n]);
                at += used;
                n += 1;
            }
            let mut at = 0;
            for f in &frames {
                let (g, used) = decode(&bytes[at..]).unwrap().unwrap();
                prop_assert_eq!(&g, f);
                at += used;
            }
            prop_assert_eq!(at, bytes.len());
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let read: Vec<Frame> = rt.block_on(async {
                let mut r = &bytes[..];
                let mut out = Vec::new();
                while let Some(f) = read_frame(&mut r).await.unwrap() {
                    out.push(f);
                }
                out
            });
            prop_assert_eq!(read, frames);
        }

        /// Arbitrary bytes never panic the parser: a frame, "need more" or an error.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((f, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                let mut again = Vec::new();
                f.encode(&mut again);
                prop_assert_eq!(&again[..], &bytes[..used]);
            }
        }
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let mut b = ((5 + MAX_BODY + 1) as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&[3, 0, 0, 0, 0]);
        assert_eq!(decode(&b), Err(WireError::Length(5 + MAX_BODY as u32 + 1)));
        assert_eq!(decode(&[4, 0, 0, 0]), Err(WireError::Length(4)));
        assert_eq!(decode(&[5, 0, 0, 0, 9, 0, 0, 0, 0]), Err(WireError::Kind(9)));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let e = rt.block_on(read_frame(&mut &b[..])).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let e = rt.block_on(read_frame(&mut &[5u8, 0, 0][..])).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
