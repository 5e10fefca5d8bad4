//! A gateway written by hand, byte by byte: it answers the upgrade itself
//! (or does not), writes whatever frames a test asks for, and reads the
//! client's masked frames back. It shares no code with shardwire-sim or
//! fastwebsockets, so the shard is tested against behaviour, not against
//! the habits of the code it was developed with.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use shardwire_corpus::server_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any one step may take before the test fails.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// A listener on loopback.
pub(crate) struct RawGateway {
    listener: TcpListener,
    url: String,
}

impl RawGateway {
    pub(crate) async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        Self { listener, url }
    }

    /// `ws://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The next connection, with its HTTP request head read.
    pub(crate) async fn accept(&self) -> Conn {
        let (stream, _) = tokio::time::timeout(STEP, self.listener.accept())
            .await
            .expect("no connection in time")
            .unwrap();
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            request: String::new(),
        };
        conn.request = conn.read_head().await;
        conn
    }

    /// Whether a connection comes within `wait`.
    pub(crate) async fn accept_within(&self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.listener.accept())
            .await
            .is_ok()
    }
}

/// One client connection.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// The HTTP request head.
    pub(crate) request: String,
}

/// What the client sent, as the server reads it.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientFrame {
    /// A text or binary message (whole, as the shard sends them).
    Message(Value),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Gone,
}

/// The accept key for a request's `Sec-WebSocket-Key` (RFC 6455, 4.2.2).
pub(crate) fn accept_key(request: &str) -> String {
    let key = request
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a Sec-WebSocket-Key");
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(hash.finalize())
}

impl Conn {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(STEP, self.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => false,
            Ok(Ok(read)) => {
                self.buf.extend_from_slice(&chunk[..read]);
                true
            }
            Err(_) => panic!("the client sent nothing in time"),
        }
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            assert!(self.buf.len() < 64 * 1024, "an endless request head");
            if !self.fill().await {
                return String::new();
            }
        }
    }

    /// Writes bytes as they are.
    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The right answer to the upgrade request.
    pub(crate) async fn accept_upgrade(&mut self) {
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&self.request)
        );
        self.write(answer.as_bytes()).await;
    }

    /// Sends one text message.
    pub(crate) async fn send(&mut self, payload: &Value) {
        let frame = server_frame(true, 1, payload.to_string().as_bytes());
        self.write(&frame).await;
    }

    /// Sends a dispatch.
    pub(crate) async fn dispatch(&mut self, seq: u64, t: &str, d: Value) {
        self.send(&json!({"t": t, "s": seq, "op": 0, "d": d})).await;
    }

    /// The client's next frame, unmasked.
    pub(crate) async fn read_frame(&mut self) -> ClientFrame {
        loop {
            if let Some(frame) = self.parse_frame() {
                return frame;
            }
            if !self.fill().await {
                return ClientFrame::Gone;
            }
        }
    }

    fn parse_frame(&mut self) -> Option<ClientFrame> {
        let buf = &self.buf;
        let (&first, &second) = (buf.first()?, buf.get(1)?);
        assert!(second & 0x80 != 0, "a client frame must be masked");
        let (len, mut at) = match second & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
                4,
            ),
            127 => (
                usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
                10,
            ),
            len => (usize::from(len), 2),
        };
        let mask: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        let payload: Vec<u8> = buf
            .get(at..at + len)?
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4])
            .collect();
        self.buf.drain(..at + len);
        assert!(first & 0x80 != 0, "the shard sends whole messages");
        Some(match first & 0x0f {
            1 | 2 => ClientFrame::Message(serde_json::from_slice(&payload).expect("JSON")),
            8 => ClientFrame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            10 => ClientFrame::Pong(payload),
            opcode => panic!("the client sent opcode {opcode}"),
        })
    }

    /// The client's next message (pongs skipped); panics on a close.
    pub(crate) async fn message(&mut self) -> Value {
        loop {
            match self.read_frame().await {
                ClientFrame::Message(value) => return value,
                ClientFrame::Pong(_) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The client's next message with this opcode (heartbeats skipped).
    pub(crate) async fn expect_op(&mut self, op: u64) -> Value {
        loop {
            let message = self.message().await;
            if message["op"] == op {
                return message;
            }
            assert_eq!(message["op"], 1, "unexpected {message}");
        }
    }

    /// Reads until the client closes; returns its close code, or `None`
    /// when it dropped the connection without a close frame.
    pub(crate) async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.read_frame().await {
                ClientFrame::Close(code) => return code,
                ClientFrame::Gone => return None,
                _ => {}
            }
        }
    }

    /// Upgrade, Hello, the client's Identify (returned), READY with
    /// `resume_url` and a session `s1`, then dispatches 2 to `last`.
    pub(crate) async fn start_session(&mut self, resume_url: &str, last: u64) -> Value {
        self.accept_upgrade().await;
        self.hello(41_250).await;
        let identify = self.expect_op(2).await;
        self.dispatch(
            1,
            "READY",
            json!({"session_id": "s1", "resume_gateway_url": resume_url, "v": 10}),
        )
        .await;
        for seq in 2..=last {
            self.dispatch(seq, "MESSAGE_CREATE", json!({"id": seq.to_string()}))
                .await;
        }
        identify
    }

    /// Upgrade, Hello, and the client's Resume (returned).
    pub(crate) async fn resume_session(&mut self) -> Value {
        self.accept_upgrade().await;
        self.hello(41_250).await;
        self.expect_op(6).await
    }

    pub(crate) async fn hello(&mut self, interval_ms: u64) {
        self.send(
            &json!({"t": null, "s": null, "op": 10, "d": {"heartbeat_interval": interval_ms}}),
        )
        .await;
    }
}
