//! zstd-stream: one zstd frame for the whole connection.

use super::{grow, too_large};
use crate::{CodecError, Compression};

/// The largest window a zstd-stream frame may ask for: 2^23 bytes (8 MiB),
/// what RFC 8878 (3.1.1.1.2) asks every decoder to support and every
/// encoder to stay within. zstd's own default is 2^27 (128 MiB): a gateway
/// could make each shard's context reserve that much, and fill it. zstd's
/// level 3, which the simulator uses, asks for 2^21.
pub(crate) const MAX_WINDOW_LOG: u32 = 23;

/// zstd-stream: one decompression context for the whole connection. Every
/// message is one payload, but the frame never ends, so each message is
/// decompressed until the context has consumed all of it and holds no more
/// output.
///
/// The context cannot hibernate: it holds the last window of output (up to
/// [`MAX_WINDOW_LOG`]), and the frame's later blocks may also reuse its
/// entropy tables and repeat offsets, which zstd's API neither exposes nor
/// takes back, so unlike zlib-stream's it cannot be rebuilt from a saved
/// window.
pub(crate) struct ZstdStream {
    context: zstd::stream::raw::Decoder<'static>,
}

impl ZstdStream {
    pub(crate) fn new() -> Result<Self, CodecError> {
        let mut context = zstd::stream::raw::Decoder::new().map_err(|error| zstd_error(&error))?;
        // Kept across `reset`, which resets the session only.
        context
            .set_parameter(zstd::stream::raw::DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(|error| zstd_error(&error))?;
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
