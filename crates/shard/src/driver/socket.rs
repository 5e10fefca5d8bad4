//! One WebSocket: opened (TCP, TLS, the shard's own handshake), read into
//! the codec's frame buffer, written as the codec encodes client frames.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use shardwire_codec::frame::{ClientFrame, Frame, FrameBuffer, encode_client_frame};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};

use crate::Endpoint;

/// The first read of a connection that holds no receive buffer: enough for
/// a Hello or a heartbeat ACK, and the rest waits for the next read.
const QUIET_READ: usize = 1024;

pub(super) type Io = TokioIo<Upgraded>;

/// The read half of a connection and its receive buffer.
pub(super) struct Reader {
    pub(super) io: ReadHalf<Io>,
    pub(super) frames: FrameBuffer,
}

impl Reader {
    /// Ready when a whole frame is buffered (at once, without reading) or
    /// when a read brought bytes in; `Ok(false)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.frames.has_frame() {
            return Poll::Ready(Ok(true));
        }
        // A connection that holds no receive buffer (a new or hibernating
        // one) waits with a small one on the stack, and takes a buffer only
        // when bytes come: an idle shard holds none.
        if self.frames.capacity() == 0 {
            let mut first = [0u8; QUIET_READ];
            let mut buf = ReadBuf::new(&mut first);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            self.frames.extend_from_slice(buf.filled());
            return Poll::Ready(Ok(!buf.filled().is_empty()));
        }
        let mut buf = ReadBuf::new(self.frames.spare());
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        self.frames.filled(read);
        Poll::Ready(Ok(read > 0))
    }
}

pub(super) struct Socket {
    pub(super) writer: Writer,
    /// `None` once the connection ended.
    pub(super) reader: Option<Reader>,
}

/// How long a connection we closed waits for the gateway's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

impl Socket {
    /// After our close frame: reads what still comes (and drops it) until
    /// the gateway's close frame or the end of the stream, at most
    /// [`CLOSE_LINGER`]. RFC 6455 (7.1.1) has the server end the TCP
    /// connection first; one the client drops at once answers the
    /// gateway's writes in flight with a reset, which can discard the
    /// close frame unread, and with it the session's end.
    pub(super) async fn linger(mut self) {
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        let read_to_close = async {
            loop {
                loop {
                    match reader.frames.next_frame() {
                        Ok(Some(Frame::Close { .. })) | Err(_) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                    }
                }
                if !matches!(
                    std::future::poll_fn(|cx| reader.poll_fill(cx)).await,
                    Ok(true)
                ) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, read_to_close).await;
    }
}

/// The write half of a connection.
pub(super) struct Writer {
    io: WriteHalf<Io>,
    /// The frame being written; payloads are small (4096 bytes at most).
    frame: Vec<u8>,
    random: SystemRandom,
}

impl Writer {
    /// Writes one frame, masked with a fresh key from the system's random
    /// source (RFC 6455 5.3), and flushes it.
    pub(super) async fn send(&mut self, frame: ClientFrame<'_>) -> std::io::Result<()> {
        let mut mask = [0u8; 4];
        self.random
            .fill(&mut mask)
            .map_err(|_| std::io::Error::other("the system's random source failed"))?;
        self.frame.clear();
        encode_client_frame(frame, mask, &mut self.frame);
        self.io.write_all(&self.frame).await?;
        self.io.flush().await
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error(transparent)]
    Url(#[from] crate::InvalidUrl),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket handshake refused: {0}")]
    Handshake(#[from] crate::handshake::HandshakeError),
}

/// Opens a WebSocket to `url` (`ws://` or `wss://`).
pub(super) async fn connect(url: &str, max_message: usize) -> Result<Socket, ConnectError> {
    let endpoint = Endpoint::parse(url, crate::Scheme::WebSocket)?;
    let stream = endpoint.open().await?;
    let io = crate::handshake::upgrade(&endpoint, stream).await?;
    let (read, write) = tokio::io::split(io);
    Ok(Socket {
        writer: Writer {
            io: write,
            frame: Vec::new(),
            random: SystemRandom::new(),
        },
        reader: Some(Reader {
            io: read,
            frames: FrameBuffer::new(max_message),
        }),
    })
}
