//! zstd-stream: one zstd frame for the whole connection.

use super::{grow, too_large};
use crate::{CodecError, Compression};

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
