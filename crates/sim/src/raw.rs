//! A minimal raw WebSocket client for driving the simulator in tests: it
//! speaks bytes and JSON, nothing of shardwire's shard. fastwebsockets
//! does its HTTP upgrade; the codec reads and writes its frames.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    reason = "test support shared by several test files"
)]

use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::handshake;
use http_body_util::Empty;
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use shardwire_codec::frame::{
    Frame, FrameBuffer, close_code_allowed, close_payload, encode_frame, opcode,
};
use shardwire_codec::{Compression, Decoder, MessageKind};
use shardwire_corpus::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single receive may take before the caller panics.
pub const STEP: Duration = Duration::from_secs(10);

/// What one receive got.
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// A decoded payload.
    Payload(Value),
    /// A close frame, with its code if any.
    Closed(Option<u16>),
    /// The connection ended without a close frame.
    Dropped,
    /// The codec refused the bytes.
    Undecodable(String),
}

/// The largest message the client reads.
const MAX_MESSAGE: usize = 64 << 20;

/// One raw gateway connection, decoding with shardwire-codec.
pub struct RawClient {
    io: TokioIo<Upgraded>,
    frames: FrameBuffer,
    decoder: Decoder,
    /// The masking keys: a test client's need not be unpredictable.
    masks: Rng,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl RawClient {
    /// Connects to `base` (`ws://host:port`) with `?v=10&encoding=json` and
    /// the given compression.
    pub async fn connect(base: &str, compression: Compression) -> Self {
        let mut query = "v=10&encoding=json".to_owned();
        if let Some(value) = compression.query_value() {
            query.push_str("&compress=");
            query.push_str(value);
        }
        Self::connect_query(base, &query, compression)
            .await
            .expect("connect")
    }

    /// Connects with a query string of the caller's choosing.
    ///
    /// # Errors
    ///
    /// When the TCP connection or the WebSocket handshake fails.
    pub async fn connect_query(
        base: &str,
        query: &str,
        compression: Compression,
    ) -> Result<Self, String> {
        let host = base.trim_start_matches("ws://").to_owned();
        let stream = TcpStream::connect(&host).await.map_err(|e| e.to_string())?;
        let request = Request::builder()
            .method("GET")
            .uri(format!("http://{host}/?{query}"))
            .header("Host", &host)
            .header(hyper::header::UPGRADE, "websocket")
            .header(hyper::header::CONNECTION, "upgrade")
            .header("Sec-WebSocket-Key", handshake::generate_key())
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let (ws, _) = handshake::client(&TokioExecutor::new(), request, stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            io: ws.into_inner(),
            frames: FrameBuffer::new(MAX_MESSAGE),
            decoder: Decoder::new(compression),
            masks: Rng::new(u64::from(std::process::id())),
        })
    }

    /// Sends a JSON payload as a text message.
    pub async fn send(&mut self, value: &Value) {
        let bytes = serde_json::to_vec(value).unwrap();
        self.send_raw(&bytes, MessageKind::Text).await;
    }

    /// Sends bytes as one message of the given kind.
    pub async fn send_raw(&mut self, bytes: &[u8], kind: MessageKind) {
        self.send_frame(kind.opcode(), bytes).await;
    }

    /// Sends a close frame with this code.
    pub async fn close(&mut self, code: u16) {
        self.send_frame(opcode::CLOSE, &code.to_be_bytes()).await;
    }

    /// Sends one final frame, masked; a failed write shows in what is read
    /// next.
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = (self.masks.next_u64() as u32).to_be_bytes();
        let mut frame = Vec::new();
        encode_frame(true, opcode, Some(mask), payload, &mut frame);
        let _ = self.io.write_all(&frame).await;
    }

    /// The next payload or the end of the connection.
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(STEP, self.recv_inner())
            .await
            .expect("nothing received in time")
    }

    async fn recv_inner(&mut self) -> Received {
        match self.next_json().await {
            Ok(json) => Received::Payload(serde_json::from_str(&json).unwrap()),
            Err(end) => end,
        }
    }

    /// The next payload's JSON as it arrived, or what came instead.
    async fn next_json(&mut self) -> Result<String, Received> {
        loop {
            let (payload, kind) = match self.frames.next_frame() {
                Ok(Some(Frame::Message { payload, kind })) => {
                    // A text message must be UTF-8 (RFC 6455 8.1).
                    if kind == MessageKind::Text && std::str::from_utf8(payload).is_err() {
                        return Err(Received::Dropped);
                    }
                    (payload, kind)
                }
                Ok(Some(Frame::Ping(payload))) => {
                    let payload = payload.to_vec();
                    self.send_frame(opcode::PONG, &payload).await;
                    continue;
                }
                Ok(Some(Frame::Close { code, reason })) => {
                    // Answered as it came (RFC 6455 5.5.1), or with 1002 for
                    // a code no endpoint may send (7.4).
                    if code.is_some_and(|code| !close_code_allowed(code)) {
                        let refusal = close_payload(Some(1002), reason);
                        self.send_frame(opcode::CLOSE, &refusal).await;
                        return Err(Received::Dropped);
                    }
                    let echo = close_payload(code, reason);
                    self.send_frame(opcode::CLOSE, &echo).await;
                    return Err(Received::Closed(code));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    match self.io.read(self.frames.spare()).await {
                        Ok(0) | Err(_) => return Err(Received::Dropped),
                        Ok(read) => self.frames.filled(read),
                    }
                    continue;
                }
                Err(_) => return Err(Received::Dropped),
            };
            match self.decoder.push(payload, kind) {
                Ok(Some(payload)) => return Ok(payload.json().to_owned()),
                Ok(None) => {}
                Err(error) => return Err(Received::Undecodable(error.to_string())),
            }
        }
    }

    /// The next payload; fails the test on anything else.
    pub async fn payload(&mut self) -> Value {
        match self.recv().await {
            Received::Payload(value) => value,
            other => panic!("expected a payload, got {other:?}"),
        }
    }

    /// The next payload's JSON exactly as it arrived (decompressed), or
    /// what came instead.
    pub async fn recv_text(&mut self) -> Result<String, Received> {
        tokio::time::timeout(STEP, self.next_json())
            .await
            .expect("nothing received in time")
    }

    /// The next payload's JSON exactly as it arrived; fails the test on
    /// anything else.
    pub async fn text(&mut self) -> String {
        match self.recv_text().await {
            Ok(json) => json,
            Err(other) => panic!("expected a payload, got {other:?}"),
        }
    }

    /// Receives until a payload with this opcode (and, for dispatches, this
    /// event name) arrives; returns it.
    pub async fn until(&mut self, op: u64, t: Option<&str>) -> Value {
        loop {
            let payload = self.payload().await;
            if payload["op"] == op && t.is_none_or(|t| payload["t"] == t) {
                return payload;
            }
        }
    }

    /// Receives until the connection closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Received::Closed(code) => return code,
                Received::Dropped => panic!("dropped without a close frame"),
                Received::Payload(_) | Received::Undecodable(_) => {}
            }
        }
    }

    /// Receives Hello; returns its heartbeat interval.
    pub async fn hello(&mut self) -> u64 {
        let hello = self.payload().await;
        assert_eq!(hello["op"], 10, "{hello}");
        hello["d"]["heartbeat_interval"].as_u64().unwrap()
    }

    /// Sends an Identify.
    pub async fn identify(&mut self, token: &str, shard: [u32; 2], intents: u64) {
        self.send(&identify(token, shard, intents, false)).await;
    }

    /// Hello, Identify and READY; returns READY's `d`.
    pub async fn start(&mut self, token: &str, shard: [u32; 2]) -> Value {
        self.hello().await;
        self.identify(token, shard, 1).await;
        self.until(0, Some("READY")).await["d"].clone()
    }

    /// The connection's byte stream, for reading the server's frames raw
    /// (as a measurement that must not parse them does). Bytes already read
    /// and not yet handed out stay behind.
    pub fn into_stream(self) -> TokioIo<Upgraded> {
        self.io
    }
}

/// An Identify payload.
pub fn identify(token: &str, shard: [u32; 2], intents: u64, compress: bool) -> Value {
    json!({"op": 2, "d": {
        "token": token, "intents": intents, "shard": shard, "compress": compress,
        "properties": {"os": "linux", "browser": "test", "device": "test"},
    }})
}
