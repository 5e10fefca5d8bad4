//! Encoders that compress payloads the way Discord does: zlib-stream and
//! zstd-stream transport compression, and zlib payload compression.

use flate2::{Compress, Compression as Level, FlushCompress};

/// Compresses payloads as a zlib-stream connection does: one deflate stream,
/// a sync flush after each payload.
#[derive(Debug)]
pub struct ZlibStreamEncoder {
    compress: Compress,
}

impl Default for ZlibStreamEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZlibStreamEncoder {
    /// A new stream (a new connection), at the default compression level.
    #[must_use]
    pub fn new() -> Self {
        Self {
            compress: Compress::new(Level::default(), true),
        }
    }

    /// A raw deflate stream (no zlib header) that continues a zlib-stream
    /// connection after a sync flush. It starts with no history, so its
    /// output is valid after any payload boundary of any stream: how
    /// pre-compressed traffic is spliced into a live connection.
    #[must_use]
    pub fn continuation() -> Self {
        Self {
            compress: Compress::new(Level::default(), false),
        }
    }

    /// The compressed bytes of one payload; they end with `00 00 ff ff`.
    /// An empty payload right after another one compresses to no bytes.
    pub fn encode(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.compress.total_in() - before) as usize..];
            // A sync flush is complete once all input is taken and the output
            // was not filled up.
            if status.is_err() || (input.is_empty() && out.capacity() - out.len() >= 64) {
                break;
            }
        }
        out
    }
}

/// Compresses payloads as a zstd-stream connection does: one frame that never
/// ends, flushed after each payload.
pub struct ZstdStreamEncoder {
    encoder: zstd::stream::raw::Encoder<'static>,
}

impl std::fmt::Debug for ZstdStreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ZstdStreamEncoder")
    }
}

impl ZstdStreamEncoder {
    /// A new stream (a new connection).
    ///
    /// # Errors
    ///
    /// When zstd cannot allocate its context.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            encoder: zstd::stream::raw::Encoder::new(3)?,
        })
    }

    /// The compressed bytes of one payload.
    ///
    /// # Errors
    ///
    /// When zstd reports an error.
    pub fn encode(&mut self, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut out: Vec<u8> = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = InBuffer::around(payload);
        while input.pos() < payload.len() {
            if out.capacity() == out.len() {
                out.reserve(out.capacity().max(1024));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            self.encoder.run(&mut input, &mut output)?;
        }
        loop {
            if out.capacity() == out.len() {
                out.reserve(out.capacity().max(1024));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let remaining = self.encoder.flush(&mut output)?;
            if remaining == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Ends the frame: the bytes that close it (a last, empty block). The
    /// next [`encode`](Self::encode) starts a new frame, with no history, so
    /// another encoder's frame can be sent in between: how a simulator
    /// splices pre-compressed traffic into a live connection. (Discord's
    /// connection never ends its frame; a decoder reads a new frame after
    /// the end of one as zstd's streaming API does.)
    ///
    /// # Errors
    ///
    /// When zstd reports an error.
    pub fn end_frame(&mut self) -> std::io::Result<Vec<u8>> {
        use zstd::stream::raw::{Operation, OutBuffer};
        let mut out: Vec<u8> = Vec::with_capacity(64);
        loop {
            if out.capacity() == out.len() {
                out.reserve(out.capacity().max(64));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            if self.encoder.finish(&mut output, true)? == 0 {
                break;
            }
        }
        self.encoder.reinit()?;
        Ok(out)
    }
}

/// One payload compressed as a whole zlib stream, as payload compression
/// (Identify `compress: true`) sends it.
#[must_use]
pub fn zlib_payload(payload: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Level::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(payload);
    encoder.finish().unwrap_or_default()
}
