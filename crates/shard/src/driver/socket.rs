//! One WebSocket: opened (TCP, TLS, the handshake), read into the codec's
//! frame buffer, written through fastwebsockets.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use fastwebsockets::{Role, WebSocket, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use shardwire_codec::frame::FrameBuffer;
use tokio::io::{AsyncRead, ReadBuf, ReadHalf, WriteHalf};

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
    pub(super) writer: WebSocketWrite<WriteHalf<Io>>,
    /// `None` once the connection ended.
    pub(super) reader: Option<Reader>,
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
    Ok(split(
        WebSocket::after_handshake(io, Role::Client),
        max_message,
    ))
}

/// Keeps fastwebsockets' writing half; the reading half is the shard's own
/// (see [`Reader`]). fastwebsockets has read nothing yet at this point, so
/// no bytes are left behind in it.
pub(super) fn split(ws: WebSocket<Io>, max_message: usize) -> Socket {
    let read_half = std::cell::Cell::new(None);
    let (_unused, writer) = ws.split(|stream| {
        let (read, write) = tokio::io::split(stream);
        read_half.set(Some(read));
        (tokio::io::empty(), write)
    });
    Socket {
        writer,
        reader: read_half.into_inner().map(|io| Reader {
            io,
            frames: FrameBuffer::new(max_message),
        }),
    }
}
