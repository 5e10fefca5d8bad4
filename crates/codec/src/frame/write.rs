//! Writing frames: one header writer for both ends, masked or not.

use super::{apply_mask, opcode};
use crate::MessageKind;

/// The longest header: two bytes, an eight-byte length, a four-byte mask.
const MAX_HEADER: usize = 14;

/// The header of one frame (RFC 6455 5.2), as it goes on the wire, with the
/// length in its shortest form.
///
/// Any frame can be written: a non-final fragment, a continuation, a
/// control frame, even an opcode RFC 6455 does not define (tests craft odd
/// frames with it). A server's frames have no mask; a client's must have
/// one, from a strong source of randomness, fresh for each frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl std::fmt::Debug for FrameHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FrameHeader")
            .field(&self.as_bytes())
            .finish()
    }
}

impl FrameHeader {
    /// The header of a frame with a payload of `payload_len` bytes. Only
    /// the low four bits of `opcode` are written (the others would be the
    /// reserved bits); the payload that follows must be masked with `mask`
    /// when there is one, as [`encode_frame`] does.
    #[must_use]
    pub fn new(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload_len: usize) -> Self {
        let mut bytes = [0; MAX_HEADER];
        bytes[0] = u8::from(fin) << 7 | opcode & 0x0f;
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        let mut len = match payload_len {
            0..=125 => {
                bytes[1] = mask_bit | payload_len as u8;
                2
            }
            126..=0xFFFF => {
                bytes[1] = mask_bit | 126;
                bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = mask_bit | 127;
                bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
                10
            }
        };
        if let Some(mask) = mask {
            bytes[len..len + 4].copy_from_slice(&mask);
            len += 4;
        }
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The header's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends one frame to `out`: its [`FrameHeader`], then `payload`, masked
/// with `mask` when there is one.
pub fn encode_frame(
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let header = FrameHeader::new(fin, opcode, mask, payload.len());
    out.reserve(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
}

impl MessageKind {
    /// The opcode of a message of this kind's first (or only) frame.
    #[must_use]
    pub const fn opcode(self) -> u8 {
        match self {
            Self::Text => opcode::TEXT,
            Self::Binary => opcode::BINARY,
        }
    }
}

/// A frame the client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientFrame<'a> {
    /// A whole text message (a gateway payload's JSON).
    Text(&'a [u8]),
    /// The answer to a ping, with the ping's bytes (at most 125).
    Pong(&'a [u8]),
    /// A close, with a code or without one.
    Close(Option<u16>),
}

/// Appends `frame` to `out` as one unfragmented client frame, masked with
/// `mask` as RFC 6455 5.3 requires of every frame a client sends. The mask
/// must come from a strong source of randomness, one per frame.
///
/// A control frame's payload is cut to the 125 bytes RFC 6455 allows.
pub fn encode_client_frame(frame: ClientFrame<'_>, mask: [u8; 4], out: &mut Vec<u8>) {
    let code_bytes;
    let (opcode, payload): (u8, &[u8]) = match frame {
        ClientFrame::Text(payload) => (opcode::TEXT, payload),
        ClientFrame::Pong(payload) => (opcode::PONG, &payload[..payload.len().min(125)]),
        ClientFrame::Close(code) => {
            code_bytes = code.map(u16::to_be_bytes);
            (
                opcode::CLOSE,
                code_bytes.as_ref().map_or(&[][..], |code| &code[..]),
            )
        }
    };
    encode_frame(true, opcode, Some(mask), payload, out);
}
