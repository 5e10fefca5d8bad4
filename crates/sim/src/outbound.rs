//! The writing half of one gateway connection: server frames, unmasked,
//! with the codec's [`FrameHeader`], through a write buffer.

use std::io;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use shardwire_codec::frame::{FrameHeader, close_payload, opcode};
use tokio::io::{AsyncWriteExt, BufWriter, WriteHalf};

/// The write buffer under the frame writer.
const WRITE_BUFFER: usize = 64 * 1024;

/// Writes the server's frames. Ordinary sends flush after each message, a
/// flood only when the buffer fills, so it is not a syscall per event.
pub(crate) struct FrameWriter {
    io: BufWriter<WriteHalf<TokioIo<Upgraded>>>,
    /// A close frame was written: RFC 6455 5.5.1 allows no data after it.
    closed: bool,
}

impl FrameWriter {
    pub(crate) fn new(io: WriteHalf<TokioIo<Upgraded>>) -> Self {
        Self {
            io: BufWriter::with_capacity(WRITE_BUFFER, io),
            closed: false,
        }
    }

    /// Writes one frame into the buffer.
    ///
    /// # Errors
    ///
    /// When the socket fails, or a frame other than a close follows a close.
    pub(crate) async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
        if opcode == opcode::CLOSE {
            self.closed = true;
        } else if self.closed {
            return Err(io::Error::other("a frame after the close frame"));
        }
        let header = FrameHeader::new(fin, opcode, None, payload.len());
        self.io.write_all(header.as_bytes()).await?;
        self.io.write_all(payload).await
    }

    /// Writes a close frame with `code` and `reason` into the buffer.
    pub(crate) async fn close(&mut self, code: u16, reason: &[u8]) -> io::Result<()> {
        let payload = close_payload(Some(code), reason);
        self.frame(true, opcode::CLOSE, &payload).await
    }

    /// Sends what the buffer holds.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.io.flush().await
    }
}
