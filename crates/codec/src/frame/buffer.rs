//! Reading frames: the receive buffer of one connection, for either role.

use std::fmt;

use super::{Frame, FrameError, Role, apply_mask, opcode};
use crate::MessageKind;

/// The buffer's first size, and how much room a read gets at least.
const FIRST_READ: usize = 8 * 1024;

/// Reads grow the buffer while they fill it, up to this size; a larger frame
/// grows it as far as the frame needs.
const MAX_READ: usize = 64 * 1024;

/// A checked frame header.
struct Head {
    fin: bool,
    opcode: u8,
    /// The masking key, in the server's role.
    mask: Option<[u8; 4]>,
    /// Payload bytes.
    len: usize,
    /// Header and payload bytes.
    total: usize,
}

/// Where a parsed frame's bytes are, found before anything is borrowed.
enum Found {
    Whole(std::ops::Range<usize>, MessageKind),
    Assembled(MessageKind),
    Ping(std::ops::Range<usize>),
    Pong(std::ops::Range<usize>),
    Close(Option<u16>, std::ops::Range<usize>),
}

/// The receive buffer of one WebSocket connection; see the [module
/// docs](super).
pub struct FrameBuffer {
    /// Initialized memory; bytes `start..end` are received and not yet
    /// parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs in all, once its header is known.
    need: usize,
    /// The last read filled all the room it had: the next gets more.
    filled_up: bool,
    /// A fragmented message being assembled, and its kind.
    partial: Vec<u8>,
    partial_kind: Option<MessageKind>,
    max_message: usize,
    role: Role,
}

impl fmt::Debug for FrameBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuffer")
            .field("buffered", &(self.end - self.start))
            .field("capacity", &self.buf.len())
            .field("max_message", &self.max_message)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl FrameBuffer {
    /// An empty client's buffer (for the server's frames) for messages of
    /// at most `max_message` bytes: [`with_role`](Self::with_role) with
    /// [`Role::Client`].
    #[must_use]
    pub fn new(max_message: usize) -> Self {
        Self::with_role(Role::Client, max_message)
    }

    /// An empty buffer for the end `role` says, for messages of at most
    /// `max_message` bytes. It allocates on the first read.
    #[must_use]
    pub fn with_role(role: Role, max_message: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            need: 0,
            filled_up: false,
            partial: Vec::new(),
            partial_kind: None,
            max_message,
            role,
        }
    }

    /// Bytes received and not yet handed out.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The memory the buffer holds, in bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity() + self.partial.capacity()
    }

    /// Frees the memory of an idle connection: everything, when nothing is
    /// buffered or being assembled.
    pub fn shrink(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.filled_up = false;
        }
        if self.partial_kind.is_none() {
            self.partial = Vec::new();
        }
    }

    /// Appends bytes that were read elsewhere (a quiet connection's reader
    /// reads into a small buffer of its own, so that it holds no receive
    /// buffer while it waits), growing as [`spare`](Self::spare) does.
    pub fn extend_from_slice(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// Room to read into, at the end of the received bytes. Report what was
    /// read with [`filled`](Self::filled).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // The memory of one very large frame is not kept.
            if self.buf.len() > MAX_READ && self.need == 0 {
                self.buf = vec![0; MAX_READ];
            }
        }
        let held = self.end - self.start;
        // The size the buffer should have: larger while reads fill it, and
        // for a large frame, all of that frame.
        let size = if self.filled_up {
            (self.buf.len() * 2).clamp(FIRST_READ, MAX_READ)
        } else {
            self.buf.len().max(FIRST_READ)
        }
        .max(self.need)
        .max(held + 1);
        // Too little room after the held bytes (or for the frame in
        // progress): move them to the front, then grow if still short.
        let short =
            self.buf.len() - self.end < FIRST_READ / 8 || self.start + self.need > self.buf.len();
        if short || size > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = held;
            if size > self.buf.len() {
                self.buf.resize(size, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `read` bytes were read into [`spare`](Self::spare).
    pub fn filled(&mut self, read: usize) {
        let room = self.buf.len() - self.end;
        let read = read.min(room);
        self.filled_up = read == room;
        self.end += read;
    }

    /// Whether a whole frame is buffered, so that [`next_frame`](Self::next_frame)
    /// returns something (a frame or an error) without another read.
    #[must_use]
    pub fn has_frame(&self) -> bool {
        match self.head() {
            Ok(Some(head)) => self.end - self.start >= head.total,
            Ok(None) => false,
            // Errors show from the header alone.
            Err(_) => true,
        }
    }

    /// The header of the frame at `start`, checked; `None` while it is
    /// incomplete.
    #[inline]
    fn head(&self) -> Result<Option<Head>, FrameError> {
        let held = &self.buf[self.start..self.end];
        let Some((len, length_end)) = header(held) else {
            return Ok(None);
        };
        let (first, second) = (held[0], held[1]);
        if first & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let masked = second & 0x80 != 0;
        match (self.role, masked) {
            (Role::Client, true) => return Err(FrameError::Masked),
            (Role::Server, false) => return Err(FrameError::Unmasked),
            _ => {}
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        if opcode >= 8 && (!fin || len > 125) {
            return Err(FrameError::InvalidControl);
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.max_message)
            .ok_or(FrameError::TooLarge {
                limit: self.max_message,
            })?;
        // Checked before the masking key is in: errors show from the rest.
        let (mask, header_len) = if masked {
            let Some(key) = held.get(length_end..length_end + 4) else {
                return Ok(None);
            };
            (Some([key[0], key[1], key[2], key[3]]), length_end + 4)
        } else {
            (None, length_end)
        };
        Ok(Some(Head {
            fin,
            opcode,
            mask,
            len,
            total: header_len + len,
        }))
    }

    /// The next complete message, ping, pong or close, or `None` when more
    /// bytes must be read first. Continuation frames are assembled into
    /// whole messages.
    ///
    /// # Errors
    ///
    /// A [`FrameError`] when the peer broke the protocol; the connection
    /// cannot go on.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let found = loop {
            let Some(Head {
                fin,
                opcode,
                mask,
                len,
                total,
            }) = self.head()?
            else {
                return Ok(None);
            };
            if self.end - self.start < total {
                self.need = total;
                return Ok(None);
            }
            self.need = 0;
            let payload = self.start + total - len..self.start + total;
            self.start += total;
            if let Some(mask) = mask {
                apply_mask(&mut self.buf[payload.clone()], mask);
            }
            match opcode {
                opcode::CONTINUATION => {
                    let Some(kind) = self.partial_kind else {
                        return Err(FrameError::UnexpectedContinuation);
                    };
                    if self.partial.len() + len > self.max_message {
                        return Err(FrameError::TooLarge {
                            limit: self.max_message,
                        });
                    }
                    self.partial.extend_from_slice(&self.buf[payload]);
                    if fin {
                        self.partial_kind = None;
                        break Found::Assembled(kind);
                    }
                }
                opcode::TEXT | opcode::BINARY => {
                    if self.partial_kind.is_some() {
                        return Err(FrameError::Interleaved);
                    }
                    let kind = if opcode == opcode::TEXT {
                        MessageKind::Text
                    } else {
                        MessageKind::Binary
                    };
                    if fin {
                        break Found::Whole(payload, kind);
                    }
                    self.partial.clear();
                    self.partial.extend_from_slice(&self.buf[payload]);
                    self.partial_kind = Some(kind);
                }
                opcode::CLOSE => {
                    break match len {
                        0 => Found::Close(None, payload),
                        1 => return Err(FrameError::InvalidClose),
                        _ => {
                            let code = u16::from_be_bytes([
                                self.buf[payload.start],
                                self.buf[payload.start + 1],
                            ]);
                            Found::Close(Some(code), payload.start + 2..payload.end)
                        }
                    };
                }
                opcode::PING => break Found::Ping(payload),
                opcode::PONG => break Found::Pong(payload),
                other => return Err(FrameError::UnknownOpcode(other)),
            }
        };
        Ok(Some(match found {
            Found::Whole(range, kind) => Frame::Message {
                payload: &self.buf[range],
                kind,
            },
            Found::Assembled(kind) => Frame::Message {
                payload: &self.partial,
                kind,
            },
            Found::Ping(range) => Frame::Ping(&self.buf[range]),
            Found::Pong(range) => Frame::Pong(&self.buf[range]),
            Found::Close(code, range) => Frame::Close {
                code,
                reason: &self.buf[range],
            },
        }))
    }
}

/// The payload length of the frame `held` starts with, and where its length
/// ends (and its masking key, if any, begins), once the length is in.
fn header(held: &[u8]) -> Option<(u64, usize)> {
    let second = *held.get(1)?;
    match second & 0x7f {
        126 => {
            let bytes = held.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4))
        }
        127 => {
            let bytes: [u8; 8] = held.get(2..10)?.try_into().ok()?;
            Some((u64::from_be_bytes(bytes), 10))
        }
        len => Some((u64::from(len), 2)),
    }
}
