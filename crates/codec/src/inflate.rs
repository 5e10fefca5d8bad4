//! The decompressors behind [`Decoder`](crate::Decoder), one per transport.
//!
//! Each one appends a payload's decompressed bytes to a caller-owned `Vec`
//! and never lets it grow past `limit + 1` bytes: one byte over the limit is
//! how a too-large payload is detected without decompressing the rest.

use flate2::{Decompress, FlushDecompress, Status};

use crate::{CodecError, Compression};

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

/// zlib-stream: one inflate context for the whole connection, fed piece by
/// piece. A payload is complete when the bytes received since the previous
/// payload end with [`ZLIB_SUFFIX`]; that is checked on the accumulated bytes,
/// so a last piece of one to three bytes completes the payload too.
pub(crate) struct ZlibStream {
    inflater: Decompress,
    /// The last (up to) four compressed bytes of the current payload, oldest
    /// first, and how many of them are real.
    tail: [u8; 4],
    tail_len: u8,
}

impl ZlibStream {
    pub(crate) fn new() -> Self {
        Self {
            inflater: Decompress::new(true),
            tail: [0; 4],
            tail_len: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.inflater.reset(true);
        self.tail_len = 0;
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
        self.track_tail(piece);
        let corrupt = |detail: String| CodecError::CorruptStream {
            compression: Compression::ZlibStream,
            detail,
        };
        match drive(&mut self.inflater, piece, out, limit, FlushDecompress::Sync) {
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

/// zstd-stream: one decompression context for the whole connection. Every
/// message is one payload, but the frame never ends, so each message is
/// decompressed until the context has consumed all of it and holds no more
/// output.
pub(crate) struct ZstdStream {
    context: zstd::stream::raw::Decoder<'static>,
}

impl ZstdStream {
    pub(crate) fn new() -> Result<Self, CodecError> {
        let context = zstd::stream::raw::Decoder::new().map_err(|error| zstd_error(&error))?;
        Ok(Self { context })
    }

    pub(crate) fn reset(&mut self) -> Result<(), CodecError> {
        use zstd::stream::raw::Operation;
        self.context.reinit().map_err(|error| zstd_error(&error))
    }

    pub(crate) fn push(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), CodecError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(message);
        loop {
            if out.len() == out.capacity() && !grow(out, limit) {
                return Err(too_large(limit, true));
            }
            let start = out.len();
            let consumed_before = input.pos();
            let mut output = OutBuffer::around_pos(out, start);
            self.context
                .run(&mut input, &mut output)
                .map_err(|error| zstd_error(&error))?;
            let written = output.pos();
            // `OutBuffer` on a `Vec` sets its length to the bytes written.
            debug_assert_eq!(written, out.len());
            if out.len() > limit {
                return Err(too_large(limit, true));
            }
            // Done when all input is consumed and the last call left output
            // space unused: the context has nothing more buffered.
            let out_full = out.len() == out.capacity();
            if input.pos() == message.len() && !out_full {
                return Ok(());
            }
            if input.pos() == consumed_before && written == start && !out_full {
                return Err(CodecError::CorruptStream {
                    compression: Compression::ZstdStream,
                    detail: "the decompressor made no progress on the remaining input".into(),
                });
            }
        }
    }
}

fn zstd_error(error: &std::io::Error) -> CodecError {
    CodecError::CorruptStream {
        compression: Compression::ZstdStream,
        detail: error.to_string(),
    }
}

/// Payload compression: one binary message is one whole zlib stream.
///
/// Decoded with zlib-rs (through flate2), one context reset per message and
/// the decoder's output buffer reused. zune-inflate was the first choice; it
/// measured slower and cannot reuse buffers (see the README).
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
