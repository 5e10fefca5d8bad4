//! The decompressors behind [`Decoder`](crate::Decoder), one per transport.
//!
//! Each one appends a payload's decompressed bytes to a caller-owned `Vec`
//! and never lets it grow past `limit + 1` bytes: one byte over the limit is
//! how a too-large payload is detected without decompressing the rest.
//!
//! This file holds zlib-stream and zlib payloads; `window` the
//! hibernation of a zlib-stream, `zstd` zstd-stream.

use flate2::{Decompress, FlushDecompress, Status};

use self::window::{SavedWindow, give_back, load_window, save_window};
pub(crate) use self::zstd::ZstdStream;
use crate::{CodecError, Compression};

mod window;
mod zstd;

/// The four bytes of an empty stored deflate block that end every payload of a
/// zlib-stream connection (a `Z_SYNC_FLUSH`).
pub(crate) const ZLIB_SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How much output space to add when the buffer is full. Doubling from here
/// keeps the number of reallocations logarithmic in the payload size.
const MIN_GROW: usize = 16 * 1024;

/// Makes room for more output, never beyond `limit + 1` bytes in total.
/// Returns `false` when the buffer already holds more than `limit` bytes.
fn grow(out: &mut Vec<u8>, limit: usize) -> bool {
    let hard_cap = limit.saturating_add(1);
    if out.len() >= hard_cap {
        return false;
    }
    let spare = out.capacity() - out.len();
    if spare == 0 {
        let want = out.capacity().max(MIN_GROW);
        out.reserve_exact(want.min(hard_cap - out.len()));
    }
    true
}

fn too_large(limit: usize, reset_required: bool) -> CodecError {
    CodecError::PayloadTooLarge {
        limit,
        reset_required,
    }
}

/// How a run of the inflater over some input ended.
enum Drive {
    /// All input was taken and the inflater has no more output for it.
    NeedsInput,
    /// The deflate stream ended, with this many input bytes after its end.
    Ended { trailing: usize },
    /// Input was left, there was room to write, and nothing moved.
    Stuck,
}

/// Runs `inflater` over `input`, appending to `out`, which never holds more
/// than `limit + 1` bytes.
///
/// # Errors
///
/// `Err(None)` when the output passed `limit`; `Err(Some(detail))` when the
/// inflater reported corrupt data.
fn drive(
    inflater: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    flush: FlushDecompress,
) -> Result<Drive, Option<String>> {
    loop {
        if out.len() == out.capacity() && !grow(out, limit) {
            return Err(None);
        }
        let before_in = inflater.total_in();
        let before_out = out.len();
        let status = inflater
            .decompress_vec(input, out, flush)
            .map_err(|error| Some(error.to_string()))?;
        let consumed = (inflater.total_in() - before_in) as usize;
        input = &input[consumed..];
        if out.len() > limit {
            return Err(None);
        }
        if status == Status::StreamEnd {
            return Ok(Drive::Ended {
                trailing: input.len(),
            });
        }
        let out_full = out.len() == out.capacity();
        if input.is_empty() && !out_full {
            return Ok(Drive::NeedsInput);
        }
        if consumed == 0 && out.len() == before_out && !out_full {
            return Ok(Drive::Stuck);
        }
    }
}

/// The deflate window: how far back a zlib-stream payload may refer.
const WINDOW: usize = 32 * 1024;

/// zlib-stream: one inflate context for the whole connection, fed piece by
/// piece. A payload is complete when the bytes received since the previous
/// payload end with [`ZLIB_SUFFIX`]; that is checked on the accumulated bytes,
/// so a last piece of one to three bytes completes the payload too.
///
/// The two-byte zlib header is checked here and the rest inflated raw: the
/// stream never ends, so its Adler-32 trailer never comes, and computing the
/// checksum over every byte would be work for nothing.
///
/// Between payloads the context can [hibernate](Self::hibernate): the inflate
/// state (about 47 KiB with zlib-rs) is freed and only the window it needs,
/// compressed, is kept. The next push wakes it transparently.
pub(crate) struct ZlibStream {
    /// `None` while hibernating.
    inflater: Option<Decompress>,
    /// How many bytes of the zlib header were read (it has two).
    header_seen: u8,
    cmf: u8,
    /// The last (up to) four compressed bytes of the current payload, oldest
    /// first, and how many of them are real.
    tail: [u8; 4],
    tail_len: u8,
    /// Bytes decompressed on this connection (the window holds at most the
    /// last [`WINDOW`] of them).
    produced: u64,
    /// The first two bytes produced: a window that short cannot be read back
    /// with a back-reference (those copy three bytes at least).
    first: [u8; 2],
    /// While hibernating: the window, compressed.
    saved: Option<SavedWindow>,
}

impl ZlibStream {
    pub(crate) fn new() -> Self {
        Self {
            inflater: Some(Decompress::new(false)),
            header_seen: 0,
            cmf: 0,
            tail: [0; 4],
            tail_len: 0,
            produced: 0,
            first: [0; 2],
            saved: None,
        }
    }

    pub(crate) fn reset(&mut self) {
        match &mut self.inflater {
            Some(inflater) => inflater.reset(false),
            None => self.inflater = Some(Decompress::new(false)),
        }
        self.header_seen = 0;
        self.tail_len = 0;
        self.produced = 0;
        self.saved = None;
    }

    /// Whether the inflate state is freed until the next payload.
    pub(crate) fn is_hibernating(&self) -> bool {
        self.inflater.is_none()
    }

    /// Frees the inflate state between payloads, keeping only the window the
    /// next payload may refer to, compressed. Returns whether the stream is
    /// now hibernating; it stays awake mid-payload, and when the window
    /// cannot be saved (no memory for a zstd context).
    pub(crate) fn hibernate(&mut self) -> bool {
        // Mid-payload (or mid-header) the inflater holds more than a window.
        if self.tail_len != 0 {
            return false;
        }
        let Some(inflater) = &mut self.inflater else {
            return true;
        };
        let len = usize::try_from(self.produced).map_or(WINDOW, |n| n.min(WINDOW));
        let saved = match len {
            0 => SavedWindow {
                compressed: Box::default(),
                len: 0,
            },
            // Kept as it is: too short to read back or to compress.
            1 | 2 => SavedWindow {
                compressed: self.first[..len].into(),
                len,
            },
            // If the window cannot be saved, reading it left the inflater
            // as it was (see `read_window`), so it simply stays awake.
            _ => match save_window(inflater, len) {
                Some(packed) => {
                    // Free the inflater first: the allocator can then put
                    // the (much smaller) saved window where it was.
                    self.inflater = None;
                    let compressed = packed.as_slice().into();
                    give_back(packed);
                    SavedWindow { compressed, len }
                }
                None => return false,
            },
        };
        self.inflater = None;
        self.saved = Some(saved);
        true
    }

    /// Makes a fresh inflater whose window is the saved one.
    fn wake(&mut self) -> Result<&mut Decompress, String> {
        let saved = self.saved.take();
        let inflater = self.inflater.insert(Decompress::new(false));
        if let Some(saved) = saved.filter(|saved| saved.len > 0) {
            load_window(inflater, &saved)?;
        }
        Ok(inflater)
    }

    /// Reads the zlib header off the front of `input`; returns the rest.
    fn take_header<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], String> {
        while self.header_seen < 2 {
            let Some((&byte, rest)) = input.split_first() else {
                break;
            };
            input = rest;
            if self.header_seen == 0 {
                if byte & 0x0f != 8 || byte >> 4 > 7 {
                    return Err(format!(
                        "not a zlib header: the first byte is {byte:#04x}, not deflate"
                    ));
                }
                self.cmf = byte;
            } else {
                if (u16::from(self.cmf) << 8 | u16::from(byte)) % 31 != 0 {
                    return Err("not a zlib header: its check bits are wrong".into());
                }
                if byte & 0x20 != 0 {
                    return Err("the zlib header asks for a preset dictionary".into());
                }
            }
            self.header_seen += 1;
        }
        Ok(input)
    }

    /// Remembers the last four bytes seen of the current payload.
    fn track_tail(&mut self, piece: &[u8]) {
        if piece.len() >= 4 {
            self.tail.copy_from_slice(&piece[piece.len() - 4..]);
            self.tail_len = 4;
        } else {
            for &byte in piece {
                self.tail.copy_within(1.., 0);
                self.tail[3] = byte;
            }
            self.tail_len = (self.tail_len + piece.len() as u8).min(4);
        }
    }

    /// Inflates one WebSocket message into `out`. Returns whether the payload
    /// is now complete.
    pub(crate) fn push(
        &mut self,
        piece: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, CodecError> {
        let corrupt = |detail: String| CodecError::CorruptStream {
            compression: Compression::ZlibStream,
            detail,
        };
        self.track_tail(piece);
        let input = self.take_header(piece).map_err(corrupt)?;
        let inflater = match &mut self.inflater {
            Some(inflater) => inflater,
            None => self.wake().map_err(corrupt)?,
        };
        let before = out.len();
        let driven = drive(inflater, input, out, limit, FlushDecompress::Sync);
        if self.produced < 2 {
            for (slot, &byte) in self.first[self.produced as usize..]
                .iter_mut()
                .zip(&out[before..])
            {
                *slot = byte;
            }
        }
        self.produced += (out.len() - before) as u64;
        match driven {
            Ok(Drive::NeedsInput) => {}
            // Discord never ends the deflate stream; bytes after its end
            // cannot be decoded with this context.
            Ok(Drive::Ended { .. }) => {
                return Err(corrupt(
                    "the deflate stream ended; zlib-stream never ends".into(),
                ));
            }
            // Dropping the rest would lose data silently: the stream is
            // unusable.
            Ok(Drive::Stuck) => {
                return Err(corrupt(
                    "the inflater made no progress on the remaining input".into(),
                ));
            }
            Err(None) => return Err(too_large(limit, true)),
            Err(Some(detail)) => return Err(corrupt(detail)),
        }
        let complete = self.tail_len == 4 && self.tail == ZLIB_SUFFIX;
        if complete {
            self.tail_len = 0;
        }
        Ok(complete)
    }
}

/// Payload compression: one binary message is one whole zlib stream.
///
/// Decoded with zlib-rs (through flate2), one context reset per message and
/// the decoder's output buffer reused. zune-inflate was the first choice; it
/// measured slower and cannot reuse buffers (see docs/benchmarks.md).
pub(crate) struct ZlibPayload {
    inflater: Decompress,
}

impl ZlibPayload {
    pub(crate) fn new() -> Self {
        Self {
            inflater: Decompress::new(true),
        }
    }

    pub(crate) fn push(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), CodecError> {
        let corrupt = |detail: String| CodecError::CorruptStream {
            compression: Compression::None,
            detail: format!("zlib payload: {detail}"),
        };
        self.inflater.reset(true);
        match drive(
            &mut self.inflater,
            message,
            out,
            limit,
            FlushDecompress::Finish,
        ) {
            Ok(Drive::Ended { trailing: 0 }) => Ok(()),
            Ok(Drive::Ended { trailing }) => Err(corrupt(format!(
                "{trailing} bytes after the end of the stream"
            ))),
            Ok(Drive::NeedsInput | Drive::Stuck) => Err(corrupt("the stream is truncated".into())),
            Err(None) => Err(too_large(limit, false)),
            Err(Some(detail)) => Err(corrupt(detail)),
        }
    }
}
