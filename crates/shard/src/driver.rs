//! The tokio driver: runs a [`ShardMachine`] on a real WebSocket.
//!
//! One task per shard owns the machine and the write half of the socket; a
//! reader task turns frames into messages on a channel (fastwebsockets'
//! `read_frame` is not cancel-safe, so it never races in a `select!`). The
//! task carries out the machine's orders and frames, sleeps until its
//! deadline, and forwards events to the [`Shard`] handle in order, with no
//! task spawned per event.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketWrite, handshake,
};
use http_body_util::Empty;
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use shardwire_codec::{Command, MessageKind};
use shardwire_heartbeat::Latency;
use tokio::io::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{
    IdentifyQueue, IdentifyRefused, Order, ResumeError, SendError, Session, ShardConfig,
    ShardEvent, ShardMachine, ShardState,
};

/// How long connecting (TCP, TLS and the WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message the gateway may send, decompressed or not: frames
/// above it are refused by the WebSocket layer.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The channel between the shard's task and its handle.
const EVENT_BUFFER: usize = 1024;
/// Events held for a consumer that lags. The shard keeps reading (it must
/// see heartbeat ACKs, or it would take its own connection for a zombie)
/// and holds events up to this many; past it, it stops reading until the
/// consumer catches up, which a consumer that stops for good turns into a
/// zombie connection and a resume.
const PENDING_LIMIT: usize = 100_000;

/// The one TLS configuration all shards share, made on first use.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|error| error.to_string())
        })
        .clone()
}

/// What the user asks of the shard task.
enum Control {
    Send(Command, tokio::sync::oneshot::Sender<Result<(), SendError>>),
    SendRaw(Vec<u8>, tokio::sync::oneshot::Sender<Result<(), SendError>>),
    Disconnect(u16),
    Reconnect,
    Reinstantiate,
    Identify,
    Resume(tokio::sync::oneshot::Sender<Result<(), ResumeError>>),
    Connect,
    Heartbeat,
}

/// What the user can see without asking the task.
#[derive(Debug)]
struct Status {
    state: ShardState,
    latency: Latency,
    session: Option<Session>,
    /// A copy of the machine's limiter, taken when a payload goes out.
    limiter: crate::CommandRateLimiter,
}

/// One gateway connection, running on its own tokio task.
///
/// Events come out in order through [`Shard::next_event`] (or the
/// [`futures_core::Stream`] impl); commands go in through [`Shard::send`].
/// Dropping the handle stops the task after closing the connection with a
/// resumable code.
pub struct Shard {
    control: mpsc::UnboundedSender<Control>,
    events: mpsc::Receiver<ShardEvent>,
    status: Arc<Mutex<Status>>,
    shard_id: u32,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard_id", &self.shard_id)
            .field("state", &self.status())
            .finish_non_exhaustive()
    }
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shard {
    /// Starts the shard's task and connects. Must be called inside a tokio
    /// runtime.
    #[must_use]
    pub fn start(config: ShardConfig, queue: Arc<dyn IdentifyQueue>) -> Self {
        let shard_id = config.shard_id;
        let (control, control_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let status = Arc::new(Mutex::new(Status {
            state: ShardState::Disconnected,
            latency: shardwire_heartbeat::Heartbeat::new().latency().clone(),
            session: config.session.clone(),
            limiter: crate::CommandRateLimiter::new(Duration::from_millis(41_250)),
        }));
        let span = tracing::info_span!("shard", id = config.shard_id, count = config.shard_count);
        let task = Task {
            machine: ShardMachine::new(config),
            queue,
            status: status.clone(),
            events: events_tx,
            socket: None,
            turn: None,
            pending: std::collections::VecDeque::new(),
        };
        tokio::spawn(tracing::Instrument::instrument(task.run(control_rx), span));
        Self {
            control,
            events,
            status,
            shard_id,
        }
    }

    /// The next event; `None` once the shard's task has ended.
    pub async fn next_event(&mut self) -> Option<ShardEvent> {
        self.events.recv().await
    }

    /// Sends a command: now if the session is ready and the rate limit
    /// allows, else when they do.
    ///
    /// # Errors
    ///
    /// [`SendError`] when the command does not encode, the queue is full,
    /// the shard is fatally closed or its task has ended.
    pub async fn send(&self, command: Command) -> Result<(), SendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.control.send(Control::Send(command, reply)).is_err() {
            return Err(SendError::Stopped);
        }
        answer.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Sends a raw JSON payload (`{"op": …, "d": …}`) for which the codec
    /// has no type, under the same queue and rate limit as commands.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidRaw`] when it is not a JSON object with an
    /// integer `op` or is over 4096 bytes; as [`Shard::send`] otherwise.
    pub async fn send_raw(&self, json: impl Into<Vec<u8>>) -> Result<(), SendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .control
            .send(Control::SendRaw(json.into(), reply))
            .is_err()
        {
            return Err(SendError::Stopped);
        }
        answer.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Connects again after a [`Shard::disconnect`].
    pub fn connect(&self) {
        let _ = self.control.send(Control::Connect);
    }

    /// Closes with `code` and stays disconnected.
    pub fn disconnect(&self, code: u16) {
        let _ = self.control.send(Control::Disconnect(code));
    }

    /// Closes with a resumable code and resumes on a new connection.
    pub fn reconnect(&self) {
        let _ = self.control.send(Control::Reconnect);
    }

    /// Drops the session and identifies anew on a fresh connection to the
    /// original URL. Events until the new READY are not recovered.
    pub fn reinstantiate(&self) {
        let _ = self.control.send(Control::Reinstantiate);
    }

    /// Starts a new session (see [`ShardMachine::identify`]): like
    /// [`Shard::reinstantiate`], but keeps a connection that has not
    /// authenticated yet, and connects a disconnected shard.
    pub fn identify(&self) {
        let _ = self.control.send(Control::Identify);
    }

    /// Resumes the session, connecting if disconnected (see
    /// [`ShardMachine::resume`]).
    ///
    /// # Errors
    ///
    /// [`ResumeError`] without a session, once fatally closed, or when the
    /// task has ended.
    pub async fn resume(&self) -> Result<(), ResumeError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.control.send(Control::Resume(reply)).is_err() {
            return Err(ResumeError::Stopped);
        }
        answer.await.unwrap_or(Err(ResumeError::Stopped))
    }

    /// Sends a heartbeat now.
    pub fn heartbeat(&self) {
        let _ = self.control.send(Control::Heartbeat);
    }

    /// The shard's state.
    #[must_use]
    pub fn status(&self) -> ShardState {
        lock(&self.status).state
    }

    /// Heartbeat round trips.
    #[must_use]
    pub fn latency(&self) -> Latency {
        lock(&self.status).latency.clone()
    }

    /// Commands that may be sent now without waiting for the rate limit
    /// (120 payloads a minute, less the room kept for heartbeats).
    #[must_use]
    pub fn available(&self) -> u32 {
        lock(&self.status).limiter.available(now())
    }

    /// When the next command may be sent: now if one may be sent now.
    #[must_use]
    pub fn next_available(&self) -> std::time::Instant {
        lock(&self.status).limiter.next_available(now())
    }

    /// The session, to export.
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        lock(&self.status).session.clone()
    }

    /// This shard's id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.shard_id
    }
}

impl futures_core::Stream for Shard {
    type Item = ShardEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ShardEvent>> {
        self.events.poll_recv(cx)
    }
}

type Io = TokioIo<Upgraded>;

enum Inbound {
    Message(Vec<u8>, MessageKind),
    Closed(Option<u16>, String),
    Pong(Vec<u8>),
}

struct Socket {
    writer: WebSocketWrite<WriteHalf<Io>>,
    inbound: mpsc::Receiver<Inbound>,
    reader: tokio::task::JoinHandle<()>,
}

type Turn = Pin<Box<dyn Future<Output = Result<(), IdentifyRefused>> + Send>>;

/// What woke the shard's task.
enum Wake {
    Delivered,
    ConsumerGone,
    Inbound(Option<Inbound>),
    Turn(Result<(), IdentifyRefused>),
    Timer,
    Control(Control),
}

struct Task {
    machine: ShardMachine,
    queue: Arc<dyn IdentifyQueue>,
    status: Arc<Mutex<Status>>,
    events: mpsc::Sender<ShardEvent>,
    socket: Option<Socket>,
    turn: Option<Turn>,
    /// Events the consumer has not taken yet, oldest first.
    pending: std::collections::VecDeque<ShardEvent>,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Task {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        self.machine.connect(now());
        loop {
            self.flush().await;
            let deadline = self.machine.poll_timeout().map(Instant::from_std);
            // Stop reading while the consumer is far behind; timers and
            // heartbeats go on.
            let reading = self.pending.len() < PENDING_LIMIT;
            let has_pending = !self.pending.is_empty();
            let wake = {
                let inbound = async {
                    match &mut self.socket {
                        Some(socket) => socket.inbound.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let turn = async {
                    match &mut self.turn {
                        Some(turn) => turn.await,
                        None => std::future::pending().await,
                    }
                };
                let pending = &mut self.pending;
                tokio::select! {
                    permit = self.events.reserve(), if has_pending => match permit {
                        Ok(permit) => {
                            if let Some(event) = pending.pop_front() {
                                permit.send(event);
                            }
                            Wake::Delivered
                        }
                        Err(_) => Wake::ConsumerGone,
                    },
                    message = inbound, if reading => Wake::Inbound(message),
                    result = turn => Wake::Turn(result),
                    () = sleep_until(deadline) => Wake::Timer,
                    request = control.recv() => match request {
                        Some(request) => Wake::Control(request),
                        None => Wake::ConsumerGone,
                    },
                }
            };
            match wake {
                Wake::Delivered => {
                    // Hand over what else fits without waiting.
                    while !self.pending.is_empty() {
                        let Ok(permit) = self.events.try_reserve() else {
                            break;
                        };
                        if let Some(event) = self.pending.pop_front() {
                            permit.send(event);
                        }
                    }
                }
                Wake::Inbound(Some(Inbound::Message(bytes, kind))) => {
                    self.machine.handle_message(now(), &bytes, kind)
                }
                Wake::Inbound(Some(Inbound::Pong(payload))) => {
                    self.write(Frame::pong(Payload::Owned(payload))).await
                }
                Wake::Inbound(Some(Inbound::Closed(code, reason))) => {
                    self.closed(code, &reason);
                }
                Wake::Inbound(None) => self.closed(None, ""),
                Wake::Turn(result) => {
                    self.turn = None;
                    match result {
                        Ok(()) => self.machine.handle_identify_turn(now()),
                        Err(refused) => {
                            tracing::warn!(%refused, "identify refused by the queue");
                            self.machine.disconnect(now(), crate::RESUMABLE_CLOSE);
                        }
                    }
                }
                Wake::Timer => self.machine.handle_timeout(now()),
                Wake::Control(request) => self.control(request),
                // The handle is gone: close resumably and stop.
                Wake::ConsumerGone => {
                    self.machine.disconnect(now(), crate::RESUMABLE_CLOSE);
                    self.flush().await;
                    break;
                }
            }
        }
        if let Some(socket) = self.socket.take() {
            socket.reader.abort();
        }
    }

    fn control(&mut self, request: Control) {
        let now = now();
        match request {
            Control::Send(command, reply) => {
                let _ = reply.send(self.machine.send(now, &command));
            }
            Control::SendRaw(bytes, reply) => {
                let _ = reply.send(self.machine.send_raw(now, bytes));
            }
            Control::Disconnect(code) => self.machine.disconnect(now, code),
            Control::Reconnect => self.machine.reconnect(now),
            Control::Reinstantiate => self.machine.reinstantiate(now),
            Control::Identify => self.machine.identify(now),
            Control::Resume(reply) => {
                let _ = reply.send(self.machine.resume(now));
            }
            Control::Connect => self.machine.connect(now),
            Control::Heartbeat => self.machine.request_heartbeat(now),
        }
    }

    fn closed(&mut self, code: Option<u16>, reason: &str) {
        if let Some(socket) = self.socket.take() {
            socket.reader.abort();
        }
        self.turn = None;
        self.machine.handle_close_with_reason(now(), code, reason);
    }

    /// Carries out orders, writes frames, queues events and updates the
    /// status.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(order) = self.machine.poll_order() {
                progressed = true;
                match order {
                    Order::Connect { url } => {
                        tracing::debug!(url = url.split('?').next().unwrap_or(""), "connecting");
                        match tokio::time::timeout(CONNECT_TIMEOUT, connect(&url)).await {
                            Ok(Ok(socket)) => {
                                self.socket = Some(socket);
                                self.machine.handle_connected(now());
                            }
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "connecting failed");
                                self.machine.handle_close(now(), None);
                            }
                            Err(_) => {
                                tracing::warn!("connecting timed out");
                                self.machine.handle_close(now(), None);
                            }
                        }
                    }
                    Order::Close { code } => {
                        self.write(Frame::close(code, b"")).await;
                        tracing::debug!(code, "closing");
                        self.closed(Some(code), "");
                    }
                    Order::WaitIdentifyTurn => {
                        let queue = self.queue.clone();
                        let shard = self.machine.shard_id();
                        self.turn = Some(Box::pin(async move { queue.wait_turn(shard).await }));
                    }
                }
            }
            let mut sent = false;
            while let Some(frame) = self.machine.poll_transmit() {
                progressed = true;
                sent = true;
                self.write(Frame::text(Payload::Owned(frame))).await;
            }
            {
                // Cheap per message: only `seq` moves; the latency history and
                // the session are cloned when they change.
                let mut status = lock(&self.status);
                status.state = self.machine.state();
                // A new connection resets the limiter; a payload takes a slot.
                if sent || status.state != ShardState::Active {
                    status.limiter.clone_from(self.machine.rate_limiter());
                }
                let latency = self.machine.latency();
                if latency.acknowledged() != status.latency.acknowledged() {
                    status.latency = latency.clone();
                }
                match (self.machine.session(), &mut status.session) {
                    (Some(current), Some(kept))
                        if kept.session_id == current.session_id
                            && kept.resume_url == current.resume_url =>
                    {
                        kept.seq = current.seq;
                    }
                    (current, kept) => *kept = current.cloned(),
                }
            }
            while let Some(event) = self.machine.poll_event() {
                progressed = true;
                self.pending.push_back(event);
            }
            if !progressed {
                return;
            }
        }
    }

    async fn write(&mut self, frame: Frame<'_>) {
        let Some(socket) = &mut self.socket else {
            return;
        };
        if let Err(error) = socket.writer.write_frame(frame).await {
            tracing::debug!(%error, "write failed");
            self.closed(None, "");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("invalid gateway URL `{0}`")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[from] fastwebsockets::WebSocketError),
    #[error("could not build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("TLS is not available: {0}")]
    Tls(String),
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// Opens a WebSocket to `url` (`ws://` or `wss://`).
async fn connect(url: &str) -> Result<Socket, ConnectError> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(ConnectError::Url(url.to_owned()));
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| ConnectError::Url(url.to_owned()))?,
        ),
        None => (authority, if secure { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(ConnectError::Url(url.to_owned()));
    }
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let request = Request::builder()
        .method("GET")
        .uri(format!("/{path}"))
        .header("Host", authority)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())?;
    let ws = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| ConnectError::Url(url.to_owned()))?;
        let config = tls_config().map_err(ConnectError::Tls)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        handshake::client(&SpawnExecutor, request, tls).await?.0
    } else {
        handshake::client(&SpawnExecutor, request, tcp).await?.0
    };
    Ok(split(ws))
}

fn split(mut ws: WebSocket<Io>) -> Socket {
    ws.set_max_message_size(MAX_MESSAGE);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    let (read, writer) = ws.split(tokio::io::split);
    let (tx, inbound) = mpsc::channel(256);
    let reader = tokio::spawn(read_loop(FragmentCollectorRead::new(read), tx));
    Socket {
        writer,
        inbound,
        reader,
    }
}

async fn read_loop(
    mut read: FragmentCollectorRead<tokio::io::ReadHalf<Io>>,
    tx: mpsc::Sender<Inbound>,
) {
    // With auto-close and auto-pong off, fastwebsockets asks for nothing to
    // be sent on our behalf.
    let mut nothing = |_frame: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
    loop {
        let inbound = match read.read_frame(&mut nothing).await {
            Ok(frame) => match frame.opcode {
                OpCode::Text => Inbound::Message(frame.payload.to_vec(), MessageKind::Text),
                OpCode::Binary => Inbound::Message(frame.payload.to_vec(), MessageKind::Binary),
                OpCode::Ping => Inbound::Pong(frame.payload.to_vec()),
                OpCode::Close => {
                    let code = (frame.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    let reason = frame
                        .payload
                        .get(2..)
                        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                        .unwrap_or_default();
                    let _ = tx.send(Inbound::Closed(code, reason)).await;
                    return;
                }
                _ => continue,
            },
            Err(_) => {
                let _ = tx.send(Inbound::Closed(None, String::new())).await;
                return;
            }
        };
        if tx.send(inbound).await.is_err() {
            return;
        }
    }
}
