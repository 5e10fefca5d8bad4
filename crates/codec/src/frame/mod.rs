//! WebSocket frames (RFC 6455, section 5), read and written for either end
//! of a connection.
//!
//! A [`FrameBuffer`] is the receive buffer of one connection: the socket
//! reads into [`FrameBuffer::spare`], and [`FrameBuffer::next_frame`] hands
//! out each complete message as a slice of that buffer, so a message is
//! never copied between the socket and the decoder. Only a message split
//! over several frames is assembled in a second buffer. Its [`Role`] says
//! which end reads: a client refuses masked frames, a server refuses
//! unmasked ones and unmasks the rest where they were received.
//!
//! [`FrameHeader`] writes the header of any frame, masked or not, final or
//! not; [`encode_frame`] appends a whole frame, and [`encode_client_frame`]
//! the few frames a client sends.

use std::fmt;

mod buffer;
mod write;

pub use self::buffer::FrameBuffer;
pub use self::write::{ClientFrame, FrameHeader, encode_client_frame, encode_frame};

/// The opcodes RFC 6455 (section 5.2) defines.
pub mod opcode {
    /// The next fragment of a message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message, or its first fragment.
    pub const TEXT: u8 = 0x1;
    /// A binary message, or its first fragment.
    pub const BINARY: u8 = 0x2;
    /// A close.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// Which end of the connection reads (RFC 6455 5.1: a client masks every
/// frame it sends, a server masks none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A client, reading the server's frames: unmasked.
    Client,
    /// A server, reading the client's frames: masked, and unmasked in place.
    Server,
}

/// One thing the peer sent.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// A whole text or binary message.
    Message {
        /// Its bytes.
        payload: &'a [u8],
        /// Text or binary.
        kind: crate::MessageKind,
    },
    /// A ping; the reader answers with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// An unsolicited or answering pong.
    Pong(&'a [u8]),
    /// The peer's close frame.
    Close {
        /// The close code, when the frame had one.
        code: Option<u16>,
        /// The reason, as sent (meant to be UTF-8).
        reason: &'a [u8],
    },
}

/// A frame that breaks the protocol. The connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Reserved bits were set, and no extension was negotiated.
    ReservedBits,
    /// A frame from the server was masked (read in the client's role).
    Masked,
    /// A frame from the client was not masked (read in the server's role).
    Unmasked,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame longer than 125 bytes or split over several frames.
    InvalidControl,
    /// A close frame with a one-byte payload.
    InvalidClose,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new message began before the previous one's last frame.
    Interleaved,
    /// A message larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits => f.write_str("a frame set reserved bits"),
            Self::Masked => f.write_str("the server masked a frame"),
            Self::Unmasked => f.write_str("the client sent an unmasked frame"),
            Self::UnknownOpcode(opcode) => write!(f, "unknown frame opcode {opcode:#x}"),
            Self::InvalidControl => {
                f.write_str("a control frame was longer than 125 bytes or fragmented")
            }
            Self::InvalidClose => f.write_str("a close frame had a one-byte payload"),
            Self::UnexpectedContinuation => f.write_str("a continuation frame continued nothing"),
            Self::Interleaved => f.write_str("a new message began inside a fragmented one"),
            Self::TooLarge { limit } => write!(f, "a message was larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Whether RFC 6455 (section 7.4) lets an endpoint put `code` in a close
/// frame: 1000 to 1003 and 1007 to 1011 as it defines them, 1012 and 1013
/// as registered since, and 3000 to 4999 for libraries and applications
/// (Discord's 4000s among them). 1005, 1006 and 1015 stand for a missing
/// code or connection and are never sent.
#[must_use]
pub const fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// The payload of a close frame (RFC 6455 5.5.1): the code, big-endian,
/// then the reason; nothing without a code.
#[must_use]
pub fn close_payload(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    let Some(code) = code else {
        return Vec::new();
    };
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    payload
}

/// XORs `bytes` with the masking key `mask`, repeated (RFC 6455 5.3):
/// masking and unmasking alike.
pub(crate) fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut words = bytes.chunks_exact_mut(8);
    for word in &mut words {
        let mut value = [0; 8];
        value.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(value) ^ wide).to_ne_bytes());
    }
    for (byte, key) in words.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}
