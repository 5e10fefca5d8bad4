//! The reading half of one gateway connection: the client's frames, read
//! with the codec's server-role [`FrameBuffer`], handed to the session as
//! [`Inbound`] messages.
//!
//! It runs as a task of its own, so the client is read while the session
//! is blocked writing to it (Discord reads independently of writing), and
//! a slow reader ([`Fault::ReadSlowly`](crate::Fault::ReadSlowly)) holds
//! back only the messages it reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use shardwire_codec::MessageKind;
use shardwire_codec::frame::{
    Frame, FrameBuffer, FrameError, Role, close_code_allowed, close_payload, opcode,
};
use tokio::io::{AsyncReadExt, ReadHalf};
use tokio::sync::mpsc;
use tokio::time::sleep;

/// Messages larger than this are refused before they are buffered (and the
/// connection dropped); smaller ones are read whole, so the 4096-byte rule
/// closes them cleanly with 4002.
pub(crate) const MAX_FRAME: usize = 1024 * 1024;

/// What the reader hands the session.
pub(crate) enum Inbound {
    /// A whole text or binary message.
    Message(Vec<u8>),
    /// The client's close, with its code if any; nothing is read after it.
    Close(Option<u16>),
    /// A control frame the session must send back (RFC 6455 5.5): a
    /// ping's pong, a close's echo, or the 1002 close of a bad close code.
    Reply {
        /// [`opcode::PONG`] or [`opcode::CLOSE`].
        opcode: u8,
        /// The frame's payload.
        payload: Vec<u8>,
    },
    /// A message over [`MAX_FRAME`].
    TooLarge,
    /// The connection ended, or the client broke the protocol.
    Gone,
}

/// Reads the client's frames until the connection ends or the client
/// closes, pausing `delay` milliseconds before handing on each message.
pub(crate) async fn read_loop(
    mut read: ReadHalf<TokioIo<Upgraded>>,
    tx: mpsc::Sender<Inbound>,
    delay: Arc<AtomicU64>,
) {
    let mut frames = FrameBuffer::with_role(Role::Server, MAX_FRAME);
    loop {
        let message = match frames.next_frame() {
            Ok(Some(frame)) => match answer(frame) {
                Answer::Message(message) => message,
                Answer::Reply(reply) => {
                    let _ = tx.send(reply).await;
                    continue;
                }
                Answer::Last(reply, last) => {
                    if let Some(reply) = reply {
                        let _ = tx.send(reply).await;
                    }
                    let _ = tx.send(last).await;
                    return;
                }
                Answer::Nothing => continue,
            },
            Ok(None) => {
                match read.read(frames.spare()).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Inbound::Gone).await;
                        return;
                    }
                    Ok(read) => frames.filled(read),
                }
                continue;
            }
            Err(FrameError::TooLarge { .. }) => {
                let _ = tx.send(Inbound::TooLarge).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(Inbound::Gone).await;
                return;
            }
        };
        // A slow reader: hold each message before handing it on.
        let pause = delay.load(Ordering::Relaxed);
        if pause > 0 {
            sleep(Duration::from_millis(pause)).await;
        }
        if tx.send(message).await.is_err() {
            return;
        }
    }
}

/// What one frame asks of the reader.
enum Answer {
    /// A message to hand on.
    Message(Inbound),
    /// A frame to send back; reading goes on.
    Reply(Inbound),
    /// The end of reading: a frame to send back first, if any, then this.
    Last(Option<Inbound>, Inbound),
    /// Nothing (a pong).
    Nothing,
}

fn answer(frame: Frame<'_>) -> Answer {
    match frame {
        Frame::Message { payload, kind } => {
            // A text message must be UTF-8 (RFC 6455 8.1).
            if kind == MessageKind::Text && std::str::from_utf8(payload).is_err() {
                return Answer::Last(None, Inbound::Gone);
            }
            Answer::Message(Inbound::Message(payload.to_vec()))
        }
        Frame::Ping(payload) => Answer::Reply(Inbound::Reply {
            opcode: opcode::PONG,
            payload: payload.to_vec(),
        }),
        Frame::Close { code, reason } => {
            if std::str::from_utf8(reason).is_err() {
                return Answer::Last(None, Inbound::Gone);
            }
            match code {
                // RFC 6455 7.4: a code no endpoint may send fails the
                // connection with 1002.
                Some(code) if !close_code_allowed(code) => {
                    let reply = Inbound::Reply {
                        opcode: opcode::CLOSE,
                        payload: close_payload(Some(1002), reason),
                    };
                    Answer::Last(Some(reply), Inbound::Gone)
                }
                // The close echoed as it came.
                _ => {
                    let echo = Inbound::Reply {
                        opcode: opcode::CLOSE,
                        payload: close_payload(code, reason),
                    };
                    Answer::Last(Some(echo), Inbound::Close(code))
                }
            }
        }
        _ => Answer::Nothing,
    }
}
