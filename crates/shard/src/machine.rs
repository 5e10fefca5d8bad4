//! The sans-IO shard: one gateway connection's protocol, with no socket and
//! no clock. The driver feeds it what happened (`connect`,
//! `handle_connected`, `handle_message`, `handle_close`, `handle_timeout`,
//! `handle_identify_turn`) and carries out what it asks
//! (`poll_order`, `poll_transmit`), sleeping until `poll_timeout`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use shardwire_codec::{
    Command, Compression, ConnectionProperties, DEFAULT_PAYLOAD_LIMIT, Decoded, Decoder,
    EventFilter, Identify, MessageKind, Payload, Resume, Token, UpdatePresence,
};
use shardwire_heartbeat::{Due, Heartbeat, Jitter};
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::{DispatchEvent, EventType, GatewayEvent};

use crate::batch::{Batch, Queued};
use crate::{
    AfterClose, Backoff, CommandRateLimiter, Endpoint, FatalError, Json, RESUMABLE_CLOSE, Scheme,
    Session, UNDECODABLE_LIMIT, after_close,
};

/// How a shard connects. Build with [`ShardConfig::new`], then set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShardConfig {
    /// The bot token (redacted in `Debug`).
    pub token: Token,
    /// The gateway intents.
    pub intents: Intents,
    /// This shard's id.
    pub shard_id: u32,
    /// The total shard count.
    pub shard_count: u32,
    /// The gateway URL from `/gateway/bot`, like `wss://gateway.discord.gg`.
    pub gateway_url: String,
    /// Transport compression.
    pub compression: Compression,
    /// Payload compression (Identify `compress`); only without transport
    /// compression.
    pub payload_compression: bool,
    /// Identify `large_threshold` (50 to 250).
    pub large_threshold: u8,
    /// The presence to identify with.
    pub presence: Option<UpdatePresence>,
    /// Identify `properties`.
    pub properties: ConnectionProperties,
    /// How long connecting may take: TCP, TLS and the WebSocket handshake.
    pub connect_timeout: Duration,
    /// How long to wait for Hello after connecting.
    pub hello_timeout: Duration,
    /// How long to wait for READY or RESUMED after identifying or resuming.
    pub ready_timeout: Duration,
    /// First reconnect backoff.
    pub backoff_initial: Duration,
    /// Reconnect backoff cap.
    pub backoff_cap: Duration,
    /// The wait before identifying again after an Invalid Session `false`
    /// is drawn from this range.
    pub invalid_session_wait: (Duration, Duration),
    /// Seed of the heartbeat jitter, the backoff and the invalid-session wait.
    pub seed: u64,
    /// Commands held while the session is not ready, at most.
    pub max_queued_commands: usize,
    /// A session to resume instead of identifying (exported earlier).
    pub session: Option<Session>,
    /// Dispatches to deserialize into twilight-model types
    /// ([`ShardEvent::Dispatch`]'s `event`); the others stay raw JSON and
    /// cost no parsing. None by default.
    pub typed_events: EventFilter,
    /// Emit every payload received as a [`ShardEvent::Message`] (off by
    /// default: it copies each payload once more).
    pub raw_messages: bool,
    /// The tokio driver holds events for a consumer that lags up to this
    /// many bytes of JSON (and 100,000 events); past it, it stops reading
    /// until the consumer catches up. A consumer that stops for good then
    /// costs a zombie close and a resume, never an event. 64 MiB by default.
    pub max_pending_bytes: usize,
    /// After this long without a message, the connection's decompression
    /// state hibernates: on zlib-stream the inflate state (about 47 KiB) is
    /// freed and only its window is kept, compressed (a few KiB), and the
    /// tokio driver frees the receive buffer. The next message wakes it, at
    /// the cost of a decompression of at most 32 KiB. 10 s by default;
    /// `None` keeps it awake.
    pub hibernate_after: Option<Duration>,
    /// When a connection hibernates, the tokio driver asks the allocator to
    /// hand the freed memory back to the system (glibc's `malloc_trim`, at
    /// most once per 250 ms for the whole process, on tokio's blocking
    /// pool; nothing elsewhere). Without it, memory that idle connections
    /// freed stays in the process's heap until reused. On by default.
    pub release_memory: bool,
    /// The largest message the gateway may send, in bytes, both as
    /// WebSocket frames and decompressed: a larger one is refused before it
    /// is held in memory, and the shard resumes. 64 MiB by default
    /// ([`DEFAULT_PAYLOAD_LIMIT`]), room for the GUILD_CREATE of a
    /// 25,000-member guild several times over.
    pub max_payload_bytes: usize,
}

impl ShardConfig {
    /// A configuration with the defaults: zlib-stream, a large threshold of
    /// 50, a 10 s connect timeout, a 20 s Hello timeout, a 30 s Ready
    /// timeout, backoff from 1 s to 60 s, a 1 to 5 s wait after Invalid
    /// Session.
    #[must_use]
    pub fn new(
        token: Token,
        intents: Intents,
        shard_id: u32,
        shard_count: u32,
        gateway_url: impl Into<String>,
    ) -> Self {
        Self {
            token,
            intents,
            shard_id,
            shard_count,
            gateway_url: gateway_url.into(),
            compression: Compression::ZlibStream,
            payload_compression: false,
            large_threshold: 50,
            presence: None,
            properties: ConnectionProperties::default(),
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(20),
            ready_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            invalid_session_wait: (Duration::from_secs(1), Duration::from_secs(5)),
            seed: u64::from(shard_id).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed,
            max_queued_commands: 1000,
            session: None,
            typed_events: EventFilter::none(),
            raw_messages: false,
            max_pending_bytes: 64 * 1024 * 1024,
            hibernate_after: Some(Duration::from_secs(10)),
            release_memory: true,
            max_payload_bytes: DEFAULT_PAYLOAD_LIMIT,
        }
    }
}

/// Where a shard is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardState {
    /// Not connected and not trying to.
    Disconnected,
    /// Waiting for the driver to open the connection.
    Connecting,
    /// Connected, waiting for Hello.
    WaitingForHello,
    /// Identify sent (or waiting for its turn), waiting for READY.
    Identifying,
    /// Resume sent, waiting for RESUMED.
    Resuming,
    /// Ready: events flow, commands go out.
    Active,
    /// Between connections, waiting to reconnect.
    Reconnecting,
    /// Stopped by a close no reconnect can fix.
    FatallyClosed,
}

/// What the shard asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Order {
    /// Open a WebSocket to this URL, then call `handle_connected` (or
    /// `handle_close(now, None)` if it fails).
    Connect {
        /// The full URL, query included.
        url: String,
    },
    /// Close the connection with this code, then call `handle_close`.
    Close {
        /// The close code.
        code: u16,
    },
    /// Wait for the identify queue's turn, then call `handle_identify_turn`.
    WaitIdentifyTurn,
}

/// What happened, for the user.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ShardEvent {
    /// The shard's first WebSocket opened.
    Connected,
    /// A later WebSocket opened, after a disconnection.
    Reconnected,
    /// The connection ended.
    Disconnected {
        /// The close code, `None` for a dropped connection.
        code: Option<u16>,
        /// The close frame's reason (empty if none).
        reason: String,
    },
    /// A heartbeat was acknowledged.
    Heartbeat {
        /// Its round trip.
        latency: Duration,
    },
    /// READY: a new session.
    Ready {
        /// The session.
        session: Session,
    },
    /// RESUMED: the session continues.
    Resumed,
    /// A dispatch (op 0): always raw, typed too when
    /// [`ShardConfig::typed_events`] asks for its type.
    Dispatch {
        /// Its sequence number.
        seq: u64,
        /// Its event name. Names Discord documents are borrowed from a
        /// static table; others are owned.
        event_type: Cow<'static, str>,
        /// The whole payload's JSON.
        json: Json,
        /// The typed event, if asked for and it deserialized (one that does
        /// not is logged and still comes out raw).
        event: Option<Box<DispatchEvent>>,
    },
    /// Any payload received, as JSON, when [`ShardConfig::raw_messages`]
    /// is on; it comes before the events derived from it.
    Message {
        /// The payload's JSON.
        json: Json,
    },
    /// A payload was handed to the connection.
    Sent {
        /// Its opcode (the payload itself is not repeated: Identify and
        /// Resume carry the token).
        opcode: u8,
    },
    /// The gateway refused a command for now (a RATE_LIMITED dispatch; it
    /// also comes out as a [`ShardEvent::Dispatch`]).
    RateLimited {
        /// The opcode of the refused command.
        opcode: u8,
        /// How long to wait before sending it again.
        retry_after: Duration,
    },
    /// The shard stopped for good.
    Fatal(FatalError),
}

/// A command the shard could not take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The command does not encode (too large, invalid field).
    #[error(transparent)]
    Codec(#[from] shardwire_codec::CodecError),
    /// Too many commands are already waiting for the session.
    #[error("{0} commands are already waiting for the session; this one was not queued")]
    QueueFull(usize),
    /// The shard stopped for good.
    #[error("the shard is fatally closed: {0}")]
    Fatal(FatalError),
    /// A raw payload that is not a JSON object with an integer `op`, or is
    /// over the gateway's 4096-byte limit.
    #[error("invalid raw payload: {0}")]
    InvalidRaw(String),
    /// The shard's task has ended (its handle's owner dropped it, or the
    /// runtime shut down).
    #[error("the shard has stopped")]
    Stopped,
}

/// Why a resume could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// There is no session: identify instead.
    #[error("there is no session to resume; identify instead")]
    NoSession,
    /// The shard stopped for good.
    #[error("the shard is fatally closed: {0}")]
    Fatal(FatalError),
    /// The shard's task has ended.
    #[error("the shard has stopped")]
    Stopped,
}

/// The protocol of one gateway connection, without I/O.
pub struct ShardMachine {
    config: ShardConfig,
    state: ShardState,
    decoder: Decoder,
    heartbeat: Heartbeat,
    jitter: Jitter,
    limiter: CommandRateLimiter,
    backoff: Backoff,
    session: Option<Session>,
    /// The current connection resumes (else it identifies).
    resuming: bool,
    /// What to do once the connection we asked to close has closed.
    after_our_close: Option<AfterClose>,
    /// The user asked to disconnect: do not reconnect.
    stopping: bool,
    hello_deadline: Option<Instant>,
    /// When the last message arrived, and when to check whether the decoder
    /// has been quiet for [`ShardConfig::hibernate_after`]. The check moves
    /// only when it runs, so a busy connection costs one timer a period.
    last_message_at: Option<Instant>,
    hibernate_check: Option<Instant>,
    names: Names,
    ready_deadline: Option<Instant>,
    reconnect_at: Option<Instant>,
    transmits: VecDeque<Vec<u8>>,
    orders: VecDeque<Order>,
    /// Events for the user. The JSON of queued dispatches is in `text`.
    events: VecDeque<Queued>,
    text: String,
    /// The size of the last batch taken (see [`ShardMachine::take_batch`]),
    /// to size the next one's buffers: events, and bytes of text.
    batch_hint: (usize, usize),
    /// Commands waiting for the session or the rate limit, with opcodes.
    queued: VecDeque<(u8, Vec<u8>)>,
    /// A connection has opened before (the next one is a reconnection).
    connected_before: bool,
    fatal: Option<FatalError>,
    /// After an Invalid Session `false`, wait before identifying again.
    wait_before_identify: bool,
    /// The connection being opened goes to the session's resume URL.
    to_resume_url: bool,
    /// The session's resume URL could not be connected to: resumes go to
    /// the gateway URL (Discord takes them there) until the next READY.
    resume_url_failed: bool,
    /// Undecodable messages and broken frames in a row (see
    /// [`UNDECODABLE_LIMIT`]).
    undecodable: u32,
    /// The next reconnect waits for the backoff even after an active
    /// connection: a gateway that breaks every connection is not retried
    /// flat out.
    back_off: bool,
    /// The time of the latest input: the machine never reads a clock.
    clock: Option<Instant>,
}

impl fmt::Debug for ShardMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardMachine")
            .field("shard", &[self.config.shard_id, self.config.shard_count])
            .field("state", &self.state)
            .field(
                "session",
                &self.session.as_ref().map(|s| (&s.session_id, s.seq)),
            )
            .finish_non_exhaustive()
    }
}

impl ShardMachine {
    /// A disconnected shard.
    #[must_use]
    pub fn new(config: ShardConfig) -> Self {
        let seed = config.seed;
        let session = config
            .session
            .clone()
            .filter(|session| session.check().is_ok());
        Self {
            decoder: Decoder::with_limit(config.compression, config.max_payload_bytes),
            heartbeat: Heartbeat::new(),
            jitter: Jitter::new(seed),
            limiter: CommandRateLimiter::new(Duration::from_secs(41)),
            backoff: Backoff::new(config.backoff_initial, config.backoff_cap, seed ^ 0xb0ff),
            session,
            resuming: false,
            after_our_close: None,
            stopping: false,
            hello_deadline: None,
            last_message_at: None,
            hibernate_check: None,
            names: Names::default(),
            ready_deadline: None,
            reconnect_at: None,
            transmits: VecDeque::new(),
            orders: VecDeque::new(),
            events: VecDeque::new(),
            text: String::new(),
            batch_hint: (0, 0),
            queued: VecDeque::new(),
            fatal: None,
            connected_before: false,
            wait_before_identify: false,
            to_resume_url: false,
            resume_url_failed: false,
            undecodable: 0,
            back_off: false,
            clock: None,
            state: ShardState::Disconnected,
            config,
        }
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> ShardState {
        self.state
    }

    /// The session, to export when the process stops.
    #[must_use]
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The heartbeat round trips.
    #[must_use]
    pub fn latency(&self) -> &shardwire_heartbeat::Latency {
        self.heartbeat.latency()
    }

    /// The outbound rate limiter of the current connection.
    #[must_use]
    pub fn rate_limiter(&self) -> &CommandRateLimiter {
        &self.limiter
    }

    /// Commands that may be sent now.
    #[must_use]
    pub fn available(&self, now: Instant) -> u32 {
        self.limiter.available(now)
    }

    /// When the next command may be sent.
    #[must_use]
    pub fn next_available(&self, now: Instant) -> Instant {
        self.limiter.next_available(now)
    }

    fn url(&self, base: &str) -> String {
        let mut url = format!("{}/?v=10&encoding=json", base.trim_end_matches('/'));
        if let Some(compress) = self.config.compression.query_value() {
            url.push_str("&compress=");
            url.push_str(compress);
        }
        url
    }

    /// Starts connecting (resuming an imported or kept session if there is
    /// one). Does nothing unless disconnected.
    pub fn connect(&mut self, now: Instant) {
        self.clock = Some(now);
        if matches!(
            self.state,
            ShardState::Disconnected | ShardState::Reconnecting
        ) {
            self.stopping = false;
            self.open();
        }
    }

    fn open(&mut self) {
        self.reconnect_at = None;
        self.resuming = self.session.is_some();
        // A session resumes on its resume URL, or on the gateway URL once
        // that failed; a new session starts on the gateway URL.
        let resume_url = self
            .session
            .as_ref()
            .filter(|_| !self.resume_url_failed)
            .map(|session| self.url(&session.resume_url))
            .filter(|url| Endpoint::parse(url, Scheme::WebSocket).is_ok());
        self.to_resume_url = resume_url.is_some();
        let url = match resume_url {
            Some(url) => url,
            None => {
                let url = self.url(&self.config.gateway_url);
                if let Err(error) = Endpoint::parse(&url, Scheme::WebSocket) {
                    self.stop_fatally(FatalError::InvalidGatewayUrl(error));
                    return;
                }
                url
            }
        };
        self.decoder.reset();
        self.state = ShardState::Connecting;
        self.orders.push_back(Order::Connect { url });
    }

    /// The driver opened the WebSocket.
    pub fn handle_connected(&mut self, now: Instant) {
        self.clock = Some(now);
        if self.state != ShardState::Connecting {
            return;
        }
        self.state = ShardState::WaitingForHello;
        self.hello_deadline = Some(now + self.config.hello_timeout);
        self.emit(if self.connected_before {
            ShardEvent::Reconnected
        } else {
            ShardEvent::Connected
        });
        self.connected_before = true;
    }

    /// The driver received one WebSocket message.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8], kind: MessageKind) {
        self.clock = Some(now);
        // Only an open connection has messages: one that straggles in after
        // the close (or before the open) is not acted on.
        if !self.connection_open() || self.state == ShardState::Connecting {
            return;
        }
        self.last_message_at = Some(now);
        if self.hibernate_check.is_none() {
            self.hibernate_check = self.config.hibernate_after.map(|after| now + after);
        }
        // The payload's JSON goes to the end of `text`; it stays there only
        // if it becomes a dispatch event.
        let start = self.text.len();
        let outcome = match self.decoder.push(bytes, kind) {
            Ok(Some(payload)) => {
                if self.config.raw_messages {
                    self.events.push_back(Queued::Event(ShardEvent::Message {
                        json: Json::from(payload.json()),
                    }));
                }
                let typed = typed(&self.config.typed_events, &payload);
                if self.text.capacity() == 0 && payload.op() == 0 {
                    self.text.reserve(with_headroom(self.batch_hint.1));
                }
                self.text.push_str(payload.json());
                Ok(Some(
                    Scanned::new(&payload, start, &mut self.names).with_typed(typed),
                ))
            }
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(Some(payload)) => {
                self.on_payload(now, payload);
                let kept = matches!(
                    self.events.back(),
                    Some(Queued::Dispatch { json, .. }) if json.start == start
                );
                if !kept {
                    self.text.truncate(start);
                }
            }
            Ok(None) => {}
            Err(error) => self.undecodable(&error.to_string()),
        }
    }

    /// A message could not be decoded, or a frame broke the protocol. The
    /// message may have been a dispatch: a fresh connection resumes, so the
    /// gateway sends it again (and the compression context starts anew).
    /// After [`UNDECODABLE_LIMIT`] in a row, the shard stops.
    fn undecodable(&mut self, error: &str) {
        self.undecodable += 1;
        self.back_off = true;
        if self.undecodable >= UNDECODABLE_LIMIT {
            tracing::error!(
                error,
                "the gateway keeps sending what cannot be decoded; stopping"
            );
            let fatal = FatalError::Undecodable(error.to_owned());
            self.close_ourselves(AfterClose::Fatal(fatal));
        } else {
            tracing::warn!(
                error,
                "a message from the gateway cannot be decoded; reconnecting to resume, so that the gateway sends it again"
            );
            self.close_ourselves(AfterClose::Resume);
        }
    }

    /// The driver found a frame that breaks the WebSocket protocol, and
    /// closed the connection. It counts as an undecodable message.
    pub fn handle_protocol_error(&mut self, now: Instant, error: &str) {
        self.clock = Some(now);
        if !self.connection_open() || self.state == ShardState::Connecting {
            return;
        }
        self.undecodable(error);
        // The connection is gone already: no close to wait for.
        self.orders
            .retain(|order| !matches!(order, Order::Close { .. }));
        self.handle_close(now, None);
    }

    /// Queues an event for the user.
    fn emit(&mut self, event: ShardEvent) {
        self.queue(Queued::Event(event));
    }

    fn queue(&mut self, event: Queued) {
        if self.events.capacity() == 0 {
            self.events.reserve(with_headroom(self.batch_hint.0));
        }
        self.events.push_back(event);
    }

    fn on_payload(&mut self, now: Instant, payload: Scanned) {
        match payload.op {
            0 => self.on_dispatch(now, payload),
            1 => self.heartbeat.on_request(now),
            7 => self.close_ourselves(AfterClose::Resume),
            9 => {
                if payload.data(&self.text).trim() == "true" {
                    self.close_ourselves(AfterClose::Resume);
                } else {
                    self.session = None;
                    self.wait_before_identify = true;
                    self.close_ourselves(AfterClose::Identify);
                }
            }
            10 => {
                let interval = serde_json::from_str::<serde_json::Value>(payload.data(&self.text))
                    .ok()
                    .and_then(|d| {
                        d.get("heartbeat_interval")
                            .and_then(serde_json::Value::as_u64)
                    })
                    .map(Duration::from_millis);
                self.on_hello(now, interval);
            }
            11 => {
                self.heartbeat.on_ack(now);
                if let Some(latency) = self.heartbeat.latency().last() {
                    self.emit(ShardEvent::Heartbeat { latency });
                }
            }
            _ => {}
        }
    }

    fn on_hello(&mut self, now: Instant, interval: Option<Duration>) {
        if self.state != ShardState::WaitingForHello {
            return;
        }
        self.hello_deadline = None;
        let jitter = self.jitter.next_jitter();
        // A Hello without a usable interval: try a fresh connection.
        let Some(interval) = interval else {
            self.close_ourselves(AfterClose::Resume);
            return;
        };
        if self.heartbeat.on_hello(interval, now, jitter).is_err() {
            self.close_ourselves(AfterClose::Resume);
            return;
        }
        self.limiter.reset(interval);
        self.ready_deadline = Some(now + self.config.ready_timeout);
        if let (true, Some(session)) = (self.resuming, self.session.clone()) {
            self.state = ShardState::Resuming;
            let resume = Command::Resume(Resume {
                token: self.config.token.clone(),
                session_id: session.session_id,
                seq: session.seq,
            });
            self.transmit_command(now, &resume);
        } else {
            self.state = ShardState::Identifying;
            self.orders.push_back(Order::WaitIdentifyTurn);
        }
    }

    /// The identify queue gave this shard its turn.
    pub fn handle_identify_turn(&mut self, now: Instant) {
        self.clock = Some(now);
        if self.state != ShardState::Identifying {
            return;
        }
        let identify = Command::Identify(Identify {
            token: self.config.token.clone(),
            properties: self.config.properties.clone(),
            intents: self.config.intents,
            compress: self.config.payload_compression
                && self.config.compression == Compression::None,
            large_threshold: self.config.large_threshold,
            shard: Some([self.config.shard_id, self.config.shard_count]),
            presence: self.config.presence.clone(),
        });
        self.ready_deadline = Some(now + self.config.ready_timeout);
        self.transmit_command(now, &identify);
    }

    /// Sends Identify or Resume: they count against the rate limit but may
    /// use the heartbeat reserve, since nothing else is sent yet.
    fn transmit_command(&mut self, now: Instant, command: &Command) {
        match command.encode() {
            Ok(bytes) => {
                let _ = self.limiter.acquire_heartbeat(now);
                self.transmit(command.opcode(), bytes);
            }
            // Identify and Resume come from the configuration; one that does
            // not encode can never work.
            Err(error) => self.stop_fatally(FatalError::InvalidConfiguration(error.to_string())),
        }
    }

    fn on_dispatch(&mut self, now: Instant, payload: Scanned) {
        let Some(seq) = payload.seq else { return };
        if let Some(session) = &mut self.session {
            session.seq = session.seq.max(seq);
        }
        if !matches!(payload.event_type.as_deref(), Some("READY" | "RESUMED")) {
            self.undecodable = 0;
        }
        match payload.event_type.as_deref() {
            Some("READY") => {
                let d: serde_json::Value =
                    serde_json::from_str(payload.data(&self.text)).unwrap_or_default();
                let session_id = d
                    .get("session_id")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("");
                let mut resume_url = d
                    .get("resume_gateway_url")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                // A resume URL that can never be connected to: resumes go
                // to the gateway URL, which Discord accepts them on.
                if let Err(error) = Endpoint::parse(&resume_url, Scheme::WebSocket) {
                    tracing::warn!(%error, "READY's resume_gateway_url is unusable; resuming on the gateway URL instead");
                    resume_url.clone_from(&self.config.gateway_url);
                }
                self.resume_url_failed = false;
                match Session::new(session_id.to_owned(), seq, resume_url) {
                    Ok(session) => {
                        self.session = Some(session.clone());
                        self.become_active(now);
                        self.emit(ShardEvent::Ready { session });
                    }
                    // A READY without a usable session: start over.
                    Err(_) => self.close_ourselves(AfterClose::Identify),
                }
            }
            Some("RESUMED") => {
                self.become_active(now);
                self.emit(ShardEvent::Resumed);
            }
            Some("RATE_LIMITED") => {
                let d: serde_json::Value =
                    serde_json::from_str(payload.data(&self.text)).unwrap_or_default();
                let opcode = d.get("opcode").and_then(serde_json::Value::as_u64);
                let retry_after = d.get("retry_after").and_then(serde_json::Value::as_f64);
                if let (Some(opcode), Some(retry_after)) = (opcode, retry_after)
                    && let Ok(opcode) = u8::try_from(opcode)
                    && retry_after.is_finite()
                    && retry_after >= 0.0
                {
                    self.emit(ShardEvent::RateLimited {
                        opcode,
                        retry_after: Duration::from_secs_f64(retry_after),
                    });
                }
            }
            _ => {}
        }
        self.queue(Queued::Dispatch {
            seq,
            event_type: payload.event_type.unwrap_or_default(),
            json: payload.json,
            event: payload.typed,
        });
    }

    fn become_active(&mut self, now: Instant) {
        self.state = ShardState::Active;
        self.ready_deadline = None;
        self.backoff.reset();
        self.flush_queued(now);
    }

    fn flush_queued(&mut self, now: Instant) {
        while self.state == ShardState::Active && !self.queued.is_empty() {
            if !self.limiter.try_acquire_command(now) {
                return;
            }
            if let Some((opcode, bytes)) = self.queued.pop_front() {
                self.transmit(opcode, bytes);
            }
        }
    }

    /// Sends a command now if the session is ready and the rate limit
    /// allows, else queues it until then.
    ///
    /// # Errors
    ///
    /// [`SendError`] when it does not encode, the queue is full or the shard
    /// is fatally closed.
    pub fn send(&mut self, now: Instant, command: &Command) -> Result<(), SendError> {
        self.clock = Some(now);
        if let Some(fatal) = &self.fatal {
            return Err(SendError::Fatal(fatal.clone()));
        }
        let bytes = command.encode()?;
        self.enqueue(now, command.opcode(), bytes)
    }

    fn enqueue(&mut self, now: Instant, opcode: u8, bytes: Vec<u8>) -> Result<(), SendError> {
        if self.state == ShardState::Active
            && self.queued.is_empty()
            && self.limiter.try_acquire_command(now)
        {
            self.transmit(opcode, bytes);
            return Ok(());
        }
        if self.queued.len() >= self.config.max_queued_commands {
            return Err(SendError::QueueFull(self.queued.len()));
        }
        self.queued.push_back((opcode, bytes));
        Ok(())
    }

    /// Hands a frame to the driver and tells the user.
    fn transmit(&mut self, opcode: u8, bytes: Vec<u8>) {
        self.transmits.push_back(bytes);
        self.emit(ShardEvent::Sent { opcode });
    }

    /// Sends a raw JSON payload under the same queue and rate limit as
    /// commands.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidRaw`] for anything but a JSON object with an
    /// integer `op` of at most 4096 bytes; as [`ShardMachine::send`] otherwise.
    pub fn send_raw(&mut self, now: Instant, bytes: Vec<u8>) -> Result<(), SendError> {
        self.clock = Some(now);
        if let Some(fatal) = &self.fatal {
            return Err(SendError::Fatal(fatal.clone()));
        }
        if bytes.len() > shardwire_codec::MAX_COMMAND_SIZE {
            return Err(SendError::InvalidRaw(format!(
                "{} bytes, over 4096",
                bytes.len()
            )));
        }
        let opcode = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| value.get("op").and_then(serde_json::Value::as_u64))
            .and_then(|op| u8::try_from(op).ok());
        let Some(opcode) = opcode else {
            return Err(SendError::InvalidRaw(
                "not a JSON object with an integer `op` from 0 to 255".into(),
            ));
        };
        self.enqueue(now, opcode, bytes)
    }

    /// Sends a heartbeat now, out of schedule.
    pub fn request_heartbeat(&mut self, now: Instant) {
        self.clock = Some(now);
        self.heartbeat.on_request(now);
    }

    /// This shard's id.
    #[must_use]
    pub fn shard_id(&self) -> u32 {
        self.config.shard_id
    }

    /// Closes the connection with a resumable code and resumes on a new one.
    pub fn reconnect(&mut self, now: Instant) {
        self.clock = Some(now);
        if self.connection_open() {
            self.close_ourselves(AfterClose::Resume);
        }
    }

    /// Drops the session and identifies anew on the original URL.
    pub fn reinstantiate(&mut self, now: Instant) {
        self.clock = Some(now);
        self.session = None;
        if self.connection_open() {
            self.close_ourselves(AfterClose::Identify);
        } else if self.state == ShardState::Reconnecting {
            self.reconnect_at = None;
            self.open();
        }
    }

    /// Starts a new session: forgets the current one and identifies,
    /// through the identify queue. A connection to the original URL that
    /// has not authenticated yet identifies on it; otherwise the connection
    /// is closed resumably and a fresh one identifies (a connection
    /// identifies only once). A disconnected shard connects.
    pub fn identify(&mut self, now: Instant) {
        self.clock = Some(now);
        self.session = None;
        match self.state {
            ShardState::Disconnected | ShardState::Reconnecting => {
                self.stopping = false;
                self.open();
            }
            ShardState::Connecting | ShardState::WaitingForHello if !self.resuming => {}
            ShardState::Identifying => {}
            ShardState::Connecting
            | ShardState::WaitingForHello
            | ShardState::Resuming
            | ShardState::Active => self.close_ourselves(AfterClose::Identify),
            ShardState::FatallyClosed => {}
        }
    }

    /// Resumes the session: a disconnected shard connects to the resume
    /// URL; a connected one closes resumably and resumes on a new
    /// connection. Nothing changes while a resume is already under way.
    ///
    /// # Errors
    ///
    /// [`ResumeError::NoSession`] without a session,
    /// [`ResumeError::Fatal`] once fatally closed.
    pub fn resume(&mut self, now: Instant) -> Result<(), ResumeError> {
        self.clock = Some(now);
        if let Some(fatal) = &self.fatal {
            return Err(ResumeError::Fatal(fatal.clone()));
        }
        if self.session.is_none() {
            return Err(ResumeError::NoSession);
        }
        match self.state {
            ShardState::Disconnected | ShardState::Reconnecting => {
                self.stopping = false;
                self.open();
            }
            ShardState::Connecting | ShardState::WaitingForHello if self.resuming => {}
            ShardState::Resuming => {}
            _ => self.close_ourselves(AfterClose::Resume),
        }
        Ok(())
    }

    /// Closes with `code` and stays disconnected. 1000 and 1001 end the
    /// session on Discord's side, so the session is dropped with them.
    pub fn disconnect(&mut self, now: Instant, code: u16) {
        self.clock = Some(now);
        self.stopping = true;
        if matches!(code, 1000 | 1001) {
            self.session = None;
        }
        self.reconnect_at = None;
        if self.connection_open() {
            self.after_our_close = Some(AfterClose::Resume);
            self.orders.push_back(Order::Close { code });
        } else if self.state != ShardState::FatallyClosed {
            self.state = ShardState::Disconnected;
        }
    }

    fn connection_open(&self) -> bool {
        matches!(
            self.state,
            ShardState::Connecting
                | ShardState::WaitingForHello
                | ShardState::Identifying
                | ShardState::Resuming
                | ShardState::Active
        )
    }

    /// Asks the driver to close with a resumable code, then do `next`.
    fn close_ourselves(&mut self, next: AfterClose) {
        // A connection being closed waits for nothing more, even when a
        // close is already on its way: a deadline left in the past would
        // make the driver's timer fire without end.
        self.heartbeat.stop();
        self.hello_deadline = None;
        self.ready_deadline = None;
        if self.after_our_close.is_some() {
            return;
        }
        self.after_our_close = Some(next);
        self.orders.push_back(Order::Close {
            code: RESUMABLE_CLOSE,
        });
    }

    /// The connection ended, with the close code if a close frame carried
    /// one (`None` also when connecting failed).
    pub fn handle_close(&mut self, now: Instant, code: Option<u16>) {
        self.handle_close_with_reason(now, code, "");
    }

    /// As [`ShardMachine::handle_close`], with the close frame's reason.
    pub fn handle_close_with_reason(&mut self, now: Instant, code: Option<u16>, reason: &str) {
        self.clock = Some(now);
        if matches!(
            self.state,
            ShardState::Disconnected | ShardState::FatallyClosed | ShardState::Reconnecting
        ) {
            // No connection to close: a close we asked for is moot, and
            // must not hold up the next connection's own.
            self.after_our_close = None;
            return;
        }
        let was_connecting = self.state == ShardState::Connecting;
        // An active connection is reconnected at once, unless it broke.
        let broke = std::mem::take(&mut self.back_off);
        let reconnect_at_once = self.state == ShardState::Active && !broke;
        self.heartbeat.stop();
        self.hello_deadline = None;
        self.ready_deadline = None;
        if !was_connecting {
            self.emit(ShardEvent::Disconnected {
                code,
                reason: reason.to_owned(),
            });
        }
        let ours = self.after_our_close.take();
        if self.stopping {
            self.state = ShardState::Disconnected;
            return;
        }
        let next = ours.unwrap_or_else(|| after_close(code, self.config.intents));
        let mut delay = if reconnect_at_once {
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        match next {
            AfterClose::Fatal(error) => {
                self.stop_fatally(error);
                return;
            }
            AfterClose::Identify => {
                self.session = None;
                // After an Invalid Session `false`, a short randomised wait;
                // 4007 and 4009 start a new session directly.
                if std::mem::take(&mut self.wait_before_identify) {
                    let (low, high) = self.config.invalid_session_wait;
                    let spread = high.saturating_sub(low).mul_f64(self.jitter.next_jitter());
                    delay = delay.max(low + spread);
                }
            }
            AfterClose::Resume => {
                // The resume URL could not even be opened: the session
                // resumes on the gateway URL instead, and is dropped only
                // when the gateway refuses it (op 9, 4007, 4009).
                if was_connecting && self.to_resume_url {
                    tracing::warn!("the resume URL cannot be reached; resuming on the gateway URL");
                    self.resume_url_failed = true;
                }
            }
        }
        self.state = ShardState::Reconnecting;
        self.reconnect_at = Some(now + delay);
    }

    fn stop_fatally(&mut self, error: FatalError) {
        self.state = ShardState::FatallyClosed;
        self.reconnect_at = None;
        self.heartbeat.stop();
        self.queued.clear();
        self.fatal = Some(error.clone());
        self.emit(ShardEvent::Fatal(error));
    }

    /// A deadline from [`ShardMachine::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        if self.hibernate_check.is_some_and(|at| now >= at) {
            self.hibernate_check = None;
            if let (Some(after), Some(last)) = (self.config.hibernate_after, self.last_message_at) {
                if now.saturating_duration_since(last) >= after {
                    self.decoder.hibernate();
                    if self.events.is_empty() {
                        self.text = String::new();
                        self.events = VecDeque::new();
                    }
                } else {
                    self.hibernate_check = Some(last + after);
                }
            }
        }
        if self.reconnect_at.is_some_and(|at| now >= at) {
            self.open();
            return;
        }
        if self.hello_deadline.is_some_and(|at| now >= at)
            || self.ready_deadline.is_some_and(|at| now >= at)
        {
            self.close_ourselves(AfterClose::Resume);
            return;
        }
        match self.heartbeat.handle_timeout(now) {
            Some(Due::Beat) => {
                let seq = self.session.as_ref().map(|s| s.seq);
                if !self.limiter.acquire_heartbeat(now) {
                    tracing::warn!(
                        "a heartbeat goes out over the 120-per-minute limit: the heartbeat interval is too short for it"
                    );
                }
                // A heartbeat always encodes (no field can be invalid); it is
                // marked sent regardless, so a beat is never due twice.
                if let Ok(bytes) = (Command::Heartbeat { seq }).encode() {
                    self.transmit(1, bytes);
                }
                self.heartbeat.on_sent(now);
            }
            Some(Due::Zombie) => self.close_ourselves(AfterClose::Resume),
            _ => {}
        }
        self.flush_queued(now);
    }

    /// The next deadline: a heartbeat, a timeout, a reconnect, or a queued
    /// command's rate-limit slot.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let queued = (self.state == ShardState::Active && !self.queued.is_empty())
            .then_some(self.clock)
            .flatten()
            .map(|now| self.limiter.next_available(now));
        [
            self.reconnect_at,
            self.hello_deadline,
            self.ready_deadline,
            self.hibernate_check,
            self.heartbeat.poll_timeout(),
            queued,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the connection's decompression state is hibernating (see
    /// [`ShardConfig::hibernate_after`]).
    #[must_use]
    pub fn is_hibernating(&self) -> bool {
        self.decoder.is_hibernating()
    }

    /// The next frame to send (JSON text).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next order for the driver.
    pub fn poll_order(&mut self) -> Option<Order> {
        self.orders.pop_front()
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        let event = self.events.pop_front()?.into_copied_event(&self.text);
        if self.events.is_empty() {
            // Nothing points into the text any more.
            self.text.clear();
            if self.text.capacity() > RETAINED_TEXT {
                self.text = String::new();
            }
        } else {
            self.compact();
        }
        Some(event)
    }

    /// Drops the JSON of dispatches already taken once it is most of the
    /// text, so that a queue which never quite empties (a driver that takes
    /// events a little slower than they come) does not keep all of it.
    fn compact(&mut self) {
        let taken = self
            .events
            .iter()
            .find_map(|event| match event {
                Queued::Dispatch { json, .. } => Some(json.start),
                Queued::Event(_) => None,
            })
            .unwrap_or(self.text.len());
        if taken < RETAINED_TEXT || taken * 2 < self.text.len() {
            return;
        }
        self.text.drain(..taken);
        for event in &mut self.events {
            if let Queued::Dispatch { json, .. } = event {
                *json = json.start - taken..json.end - taken;
            }
        }
    }

    /// Events queued for the user, and the bytes of JSON held for them: that
    /// of their dispatches, plus that of dispatches already taken by
    /// [`poll_event`](Self::poll_event) while others stayed queued (see
    /// `compact`).
    pub(crate) fn queued(&self) -> (usize, usize) {
        (self.events.len(), self.text.len())
    }

    /// The room of the text buffer, for tests of its sizing.
    #[cfg(test)]
    pub(crate) fn text_capacity(&self) -> usize {
        self.text.capacity()
    }

    /// Every queued event at once, with the JSON of their dispatches in one
    /// buffer (see [`Batch`]); `None` when there is none. The machine keeps
    /// no buffer afterwards until the next event.
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        if self.events.is_empty() {
            return None;
        }
        let events = std::mem::take(&mut self.events);
        let mut text = std::mem::take(&mut self.text);
        // A batch taken early (a quiet moment) holds little of the room
        // reserved for it; a consumer that lags may keep many such.
        if text.capacity() > 2 * text.len() + 1024 {
            text.shrink_to_fit();
        }
        self.batch_hint = (
            events.len().min(MAX_BATCH_HINT.0),
            text.len().min(MAX_BATCH_HINT.1),
        );
        Some(Batch::new(text, events))
    }
}

/// The room given up front to a batch like the last one: half again as
/// much, since a batch is cut only once it has passed its limit, and one
/// that outgrows its room copies everything it holds to grow.
fn with_headroom(last: usize) -> usize {
    last.saturating_add(last / 2)
}

/// The text [`ShardMachine::poll_event`] keeps for the next events once all
/// are taken: a burst's worth of small ones.
const RETAINED_TEXT: usize = 64 * 1024;
/// The largest buffers a batch is given up front (events, bytes of text);
/// a larger one grows as it fills.
const MAX_BATCH_HINT: (usize, usize) = (256, 256 * 1024);

/// What the machine keeps of a scanned payload, whose JSON was copied to
/// the end of the machine's `text`: `json` is its range there, and `d` a
/// range within it (`None`: absent).
struct Scanned {
    op: u8,
    seq: Option<u64>,
    event_type: Option<Cow<'static, str>>,
    data: Option<Range<usize>>,
    json: Range<usize>,
    typed: Option<Box<DispatchEvent>>,
}

/// The typed dispatch of a payload's JSON, if the filter asks for it and it
/// deserializes.
pub(crate) fn typed_json(filter: &EventFilter, json: &str) -> Option<Box<DispatchEvent>> {
    let payload = Payload::scan(json.as_bytes()).ok()?;
    typed(filter, &payload)
}

/// The typed dispatch, if the filter asks for it and it deserializes.
fn typed(filter: &EventFilter, payload: &Payload<'_>) -> Option<Box<DispatchEvent>> {
    if payload.op() != 0 || !filter.wants_any() {
        return None;
    }
    match payload.decode(filter) {
        Decoded::Event(GatewayEvent::Dispatch(_, event)) => Some(Box::new(event)),
        Decoded::Failed(error) => {
            tracing::warn!(%error, "a dispatch did not deserialize; it comes out raw only");
            None
        }
        _ => None,
    }
}

impl Scanned {
    fn with_typed(mut self, typed: Option<Box<DispatchEvent>>) -> Self {
        self.typed = typed;
        self
    }

    /// The raw JSON of `d` (`null` when absent), as [`Payload::data`], out
    /// of the machine's `text`.
    fn data<'t>(&self, text: &'t str) -> &'t str {
        self.data
            .clone()
            .and_then(|range| text.get(range))
            .unwrap_or("null")
    }
}

/// Event names, without an allocation for the ones twilight-model knows.
/// The last few names seen are checked first: a connection's traffic is
/// mostly a handful of event types.
#[derive(Default)]
struct Names {
    recent: [Option<&'static str>; 4],
    next: usize,
}

impl Names {
    fn get(&mut self, name: &str) -> Cow<'static, str> {
        if let Some(known) = self.recent.iter().flatten().find(|known| **known == name) {
            return Cow::Borrowed(known);
        }
        match EventType::try_from(name).ok().and_then(EventType::name) {
            Some(known) if known == name => {
                self.recent[self.next] = Some(known);
                self.next = (self.next + 1) % self.recent.len();
                Cow::Borrowed(known)
            }
            _ => Cow::Owned(name.to_owned()),
        }
    }
}

impl Scanned {
    /// `at`: where the payload's JSON starts in the machine's `text`.
    fn new(payload: &Payload<'_>, at: usize, names: &mut Names) -> Self {
        let json = payload.json();
        let data = payload.data();
        // `d` is a slice of the payload unless it was absent.
        let start = (data.as_ptr() as usize).checked_sub(json.as_ptr() as usize);
        let data = start
            .filter(|start| start + data.len() <= json.len())
            .map(|start| at + start..at + start + data.len());
        Self {
            op: payload.op(),
            seq: payload.seq(),
            event_type: payload.event_type().map(|name| names.get(name)),
            data,
            json: at..at + json.len(),
            typed: None,
        }
    }
}
