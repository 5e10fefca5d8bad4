//! The sans-IO shard: one gateway connection's protocol, with no socket and
//! no clock. The driver feeds it what happened (`connect`,
//! `handle_connected`, `handle_connect_failed`, `handle_message`,
//! `handle_close`, `handle_timeout`, `handle_identify_turn`,
//! `handle_identify_refused`) and carries out what it asks (`poll_order`,
//! `poll_transmit`), sleeping until `poll_timeout`.
//!
//! The files: `config` (how a shard connects), `output` (the states,
//! orders, events and errors it hands out), this one (the machine's
//! `Phase` and the connection's lifecycle: open, close, reconnect, timers), `receive` (what each payload
//! does), `send` (commands out, under the rate limit), `events` (the user's
//! event queue and batches), `timer` (the deadline table), `body` (the
//! fields read from Hello, READY and RATE_LIMITED) and `scanned`.

mod body;
mod config;
mod events;
mod output;
mod receive;
mod scanned;
mod send;
mod timer;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use shardwire_codec::Decoder;
use shardwire_heartbeat::{Due, Heartbeat, Jitter};

pub use self::config::ShardConfig;
pub use self::output::{Order, ResumeError, SendError, ShardEvent, ShardState};
use self::scanned::Names;
pub(crate) use self::scanned::typed_json;
use self::timer::{Timer, TimerTable};
use crate::batch::Queued;
use crate::metrics::{Cause, ReconnectCause, ShardMetrics};
use crate::policy::{GOING_AWAY, NORMAL_CLOSE};
use crate::session::ResumePoint;
use crate::{
    AfterClose, Backoff, CommandRateLimiter, Endpoint, FatalError, RESUMABLE_CLOSE, Scheme,
    Session, after_close,
};

/// The protocol of one gateway connection, without I/O.
pub struct ShardMachine {
    config: ShardConfig,
    /// Where the machine is, with what belongs there.
    phase: Phase,
    timers: TimerTable,
    decoder: Decoder,
    heartbeat: Heartbeat,
    jitter: Jitter,
    limiter: CommandRateLimiter,
    backoff: Backoff,
    /// The session as received: a reconnection resumes it from here (what
    /// was received and not yet delivered is still held for the consumer).
    session: Option<Session>,
    /// The session as delivered: what [`ShardMachine::session`] exports.
    delivered: ResumePoint,
    /// When the last message arrived (see [`Timer::Hibernate`]).
    last_message_at: Option<Instant>,
    names: Names,
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
    /// The session's resume URL could not be connected to: resumes go to
    /// the gateway URL (Discord takes them there) until the next READY.
    resume_url_failed: bool,
    /// Undecodable messages and broken frames in a row (see
    /// [`UNDECODABLE_LIMIT`](crate::UNDECODABLE_LIMIT)).
    undecodable: u32,
    metrics: ShardMetrics,
}

/// Where a machine is. What belongs to one connection lives in its
/// [`Link`], made when it opens and gone when it closes; what outlives
/// connections (the session, the backoff) is the machine's.
#[derive(Debug)]
enum Phase {
    /// Not connected and not trying to.
    Disconnected,
    /// Between connections, until [`Timer::Reconnect`].
    Reconnecting,
    /// A connection, from its [`Order::Connect`] to its close.
    Open(Link),
    /// Stopped by a close no reconnect can fix.
    Fatal(FatalError),
}

/// How far a connection has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Connecting,
    WaitingForHello,
    Identifying,
    Resuming,
    Active,
}

/// One connection.
#[derive(Debug)]
struct Link {
    step: Step,
    /// This connection resumes (else it identifies).
    resuming: bool,
    /// It goes to the session's resume URL.
    to_resume_url: bool,
    /// The machine asked to close it: what to do once it has closed.
    closing: Option<Closing>,
    /// It broke (an undecodable message, a protocol error): the reconnect
    /// waits for the backoff even after an active session, so a gateway
    /// that breaks every connection is not retried flat out.
    broke: bool,
    /// An Invalid Session `false` ended it: wait before identifying again.
    wait_before_identify: bool,
    /// Dispatches received while resuming: the gateway's replay.
    replayed: u64,
    /// The span of the step under way (`connect`, `identify`, `resume`),
    /// the parent of its lifecycle events; none once active.
    span: tracing::Span,
}

/// A close the machine asked for: what to do once it has closed.
#[derive(Debug)]
enum Closing {
    /// The machine's own (a timeout, a zombie, Hello or READY unusable),
    /// for this cause: then this, if [`ShardConfig::reconnect`] allows.
    Ours(AfterClose, Cause),
    /// The user's (`reconnect`, `resume`, `identify`, …): then this, even
    /// with [`ShardConfig::reconnect`] off.
    Users(AfterClose),
    /// The user's `disconnect`: stay disconnected.
    Stop,
}

impl fmt::Debug for ShardMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardMachine")
            .field("shard", &[self.config.shard_id, self.config.shard_count])
            .field("state", &self.state())
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
            phase: Phase::Disconnected,
            timers: TimerTable::default(),
            decoder: Decoder::with_limit(config.compression, config.max_payload_bytes),
            heartbeat: Heartbeat::new(),
            jitter: Jitter::new(seed),
            limiter: CommandRateLimiter::new(Duration::from_secs(41)),
            backoff: config.backoff(),
            delivered: ResumePoint::new(session.clone()),
            session,
            last_message_at: None,
            names: Names::default(),
            transmits: VecDeque::new(),
            orders: VecDeque::new(),
            events: VecDeque::new(),
            text: String::new(),
            batch_hint: (0, 0),
            queued: VecDeque::new(),
            connected_before: false,
            resume_url_failed: false,
            undecodable: 0,
            metrics: ShardMetrics::new(config.shard_id),
            config,
        }
    }

    /// How this shard connects.
    #[must_use]
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> ShardState {
        match &self.phase {
            Phase::Disconnected => ShardState::Disconnected,
            Phase::Reconnecting => ShardState::Reconnecting,
            Phase::Open(link) => match link.step {
                Step::Connecting => ShardState::Connecting,
                Step::WaitingForHello => ShardState::WaitingForHello,
                Step::Identifying => ShardState::Identifying,
                Step::Resuming => ShardState::Resuming,
                Step::Active => ShardState::Active,
            },
            Phase::Fatal(_) => ShardState::FatallyClosed,
        }
    }

    /// How far the open connection has come; `None` without one.
    fn step(&self) -> Option<Step> {
        match &self.phase {
            Phase::Open(link) => Some(link.step),
            _ => None,
        }
    }

    /// The open connection.
    fn link_mut(&mut self) -> Option<&mut Link> {
        match &mut self.phase {
            Phase::Open(link) => Some(link),
            _ => None,
        }
    }

    /// Moves the open connection on to `step`.
    fn set_step(&mut self, step: Step) {
        if let Some(link) = self.link_mut() {
            link.step = step;
        }
    }

    /// Ends the open connection's step span and starts `span`.
    fn set_span(&mut self, span: tracing::Span) {
        if let Some(link) = self.link_mut() {
            link.span = span;
        }
    }

    /// The session to export (when the process stops, or to hand a shard
    /// to another): as of the last event delivered, so a resume from it
    /// replays exactly what the consumer has not had. An event counts as
    /// delivered once [`poll_event`](Self::poll_event) returns it (or the
    /// driver hands its batch over). `None` when there is nothing to resume.
    #[must_use]
    pub fn session(&self) -> Option<&Session> {
        self.delivered.session()
    }

    /// The resume point of what was delivered (see [`ShardMachine::session`]).
    pub(crate) fn delivered(&self) -> &ResumePoint {
        &self.delivered
    }

    /// Runs `log` in the span of the step under way, if there is one (its
    /// lifecycle events belong to it), else in the shard's.
    fn in_step(&self, log: impl FnOnce()) {
        match &self.phase {
            Phase::Open(link) => link.span.in_scope(log),
            _ => log(),
        }
    }

    /// The span of the open connection's step under way (`connect`,
    /// `identify`, `resume`); none without one.
    pub(crate) fn step_span(&self) -> tracing::Span {
        match &self.phase {
            Phase::Open(link) => link.span.clone(),
            _ => tracing::Span::none(),
        }
    }

    /// This shard's metric handles.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.metrics
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

    /// This shard's id.
    #[must_use]
    pub fn shard_id(&self) -> u32 {
        self.config.shard_id
    }

    /// Whether the connection's decompression state is hibernating (see
    /// [`ShardConfig::hibernate_after`]).
    #[must_use]
    pub fn is_hibernating(&self) -> bool {
        self.decoder.is_hibernating()
    }

    /// Whether the driver may stop reading for a while (for a consumer
    /// that lags): only an active session may. A connection still being
    /// set up must read its Hello and start heartbeating, or the gateway
    /// would end the session (4009) instead of letting it resume.
    #[must_use]
    pub fn may_pause_reading(&self) -> bool {
        self.step() == Some(Step::Active)
    }

    /// The next deadline: call [`ShardMachine::handle_timeout`] then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next frame to send (JSON text).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next order for the driver.
    pub fn poll_order(&mut self) -> Option<Order> {
        self.orders.pop_front()
    }

    /// Starts connecting (resuming an imported or kept session if there is
    /// one). Does nothing unless disconnected.
    pub fn connect(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Disconnected | Phase::Reconnecting) {
            self.open(now);
        }
        self.settle(now);
    }

    /// Sends a heartbeat now, out of schedule.
    pub fn request_heartbeat(&mut self, now: Instant) {
        self.heartbeat.on_request(now);
        self.settle(now);
    }

    /// Closes the connection with a resumable code and resumes on a new one.
    pub fn reconnect(&mut self, now: Instant) {
        if self.connection_open() {
            self.close_by_user(AfterClose::Resume);
        }
        self.settle(now);
    }

    /// Drops the session and identifies anew on the original URL.
    pub fn reinstantiate(&mut self, now: Instant) {
        self.session = None;
        if self.connection_open() {
            self.close_by_user(AfterClose::Identify);
        } else if matches!(self.phase, Phase::Reconnecting) {
            self.open(now);
        }
        self.settle(now);
    }

    /// Starts a new session: forgets the current one and identifies,
    /// through the identify queue. A connection to the original URL that
    /// has not authenticated yet identifies on it; otherwise the connection
    /// is closed resumably and a fresh one identifies (a connection
    /// identifies only once). A disconnected shard connects.
    pub fn identify(&mut self, now: Instant) {
        self.session = None;
        match &self.phase {
            Phase::Disconnected | Phase::Reconnecting => self.open(now),
            Phase::Open(Link {
                step: Step::Connecting | Step::WaitingForHello,
                resuming: false,
                ..
            })
            | Phase::Open(Link {
                step: Step::Identifying,
                ..
            })
            | Phase::Fatal(_) => {}
            Phase::Open(_) => self.close_by_user(AfterClose::Identify),
        }
        self.settle(now);
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
        if let Phase::Fatal(fatal) = &self.phase {
            return Err(ResumeError::Fatal(fatal.clone()));
        }
        if self.session.is_none() {
            return Err(ResumeError::NoSession);
        }
        match &self.phase {
            Phase::Disconnected | Phase::Reconnecting => self.open(now),
            Phase::Open(Link {
                step: Step::Connecting | Step::WaitingForHello,
                resuming: true,
                ..
            })
            | Phase::Open(Link {
                step: Step::Resuming,
                ..
            }) => {}
            _ => self.close_by_user(AfterClose::Resume),
        }
        self.settle(now);
        Ok(())
    }

    /// Closes with `code` and stays disconnected. 1000 and 1001 end the
    /// session on Discord's side, so the session is dropped with them.
    pub fn disconnect(&mut self, now: Instant, code: u16) {
        if matches!(code, NORMAL_CLOSE | GOING_AWAY) {
            self.session = None;
        }
        self.timers.stop(Timer::Reconnect);
        match &mut self.phase {
            Phase::Open(link) => {
                link.closing = Some(Closing::Stop);
                self.orders.push_back(Order::Close { code });
            }
            Phase::Reconnecting => self.phase = Phase::Disconnected,
            Phase::Disconnected | Phase::Fatal(_) => {}
        }
        self.settle(now);
    }

    /// The driver opened the WebSocket.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.step() == Some(Step::Connecting) {
            self.set_step(Step::WaitingForHello);
            self.timers.stop(Timer::Connect);
            self.timers
                .set(Timer::Hello, now + self.config.hello_timeout);
            self.metrics.connected();
            self.set_span(tracing::Span::none());
            self.emit(if self.connected_before {
                ShardEvent::Reconnected
            } else {
                ShardEvent::Connected
            });
            self.connected_before = true;
        }
        self.settle(now);
    }

    /// The driver could not open the WebSocket (`error`: why, in one line,
    /// for [`ShardEvent::ConnectFailed`]).
    pub fn handle_connect_failed(&mut self, now: Instant, error: &str) {
        if self.step() == Some(Step::Connecting) {
            self.connect_failed(now, error.to_owned());
        }
        self.settle(now);
    }

    /// The connection ended, with the close code if a close frame carried
    /// one (`None` also when connecting failed).
    pub fn handle_close(&mut self, now: Instant, code: Option<u16>) {
        self.handle_close_with_reason(now, code, "");
    }

    /// As [`ShardMachine::handle_close`], with the close frame's reason.
    pub fn handle_close_with_reason(&mut self, now: Instant, code: Option<u16>, reason: &str) {
        self.on_close(now, code, reason);
        self.settle(now);
    }

    /// A deadline from [`ShardMachine::poll_timeout`] passed: handles every
    /// timer due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in Timer::ALL {
            if self.timers.take_expired(timer, now) {
                self.on_timer(now, timer);
            }
        }
        self.settle(now);
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Hibernate => self.hibernate_if_quiet(now),
            Timer::Reconnect => self.open(now),
            Timer::Connect => {
                if self.step() == Some(Step::Connecting) {
                    self.orders.push_back(Order::Abandon);
                    let error = format!(
                        "connecting took longer than ShardConfig::connect_timeout ({:?})",
                        self.config.connect_timeout
                    );
                    self.connect_failed(now, error);
                }
            }
            Timer::Hello => self.close_ourselves(AfterClose::Resume, Cause::HelloTimeout),
            Timer::Ready => self.close_ourselves(AfterClose::Resume, Cause::ReadyTimeout),
            Timer::Heartbeat => match self.heartbeat.handle_timeout(now) {
                Some(Due::Beat) => self.beat(now),
                Some(Due::Zombie) => {
                    tracing::warn!(
                        "no heartbeat ACK came: the connection is a zombie; reconnecting"
                    );
                    self.metrics.zombie();
                    self.close_ourselves(AfterClose::Resume, Cause::Zombie);
                }
                _ => {}
            },
            Timer::CommandSlot => self.flush_queued(now),
        }
    }

    /// Hibernates the decoder if no message came for
    /// [`ShardConfig::hibernate_after`], else checks again when that much
    /// time will have passed since the last one.
    fn hibernate_if_quiet(&mut self, now: Instant) {
        let (Some(after), Some(last)) = (self.config.hibernate_after, self.last_message_at) else {
            return;
        };
        if now.saturating_duration_since(last) >= after {
            self.decoder.hibernate();
            self.free_event_buffers();
            self.orders.push_back(Order::Hibernate);
        } else {
            self.timers.set(Timer::Hibernate, last + after);
        }
    }

    /// Brings the timers that follow other state up to date: the
    /// heartbeat's schedule and the first queued command's rate-limit slot.
    /// Every input ends here.
    fn settle(&mut self, now: Instant) {
        // A session dropped is dropped for the export too; the next one
        // shows once its READY is delivered.
        if self.session.is_none() {
            self.delivered.forget();
        }
        self.timers
            .set_or_stop(Timer::Heartbeat, self.heartbeat.poll_timeout());
        let slot = (self.step() == Some(Step::Active) && !self.queued.is_empty())
            .then(|| self.limiter.next_available(now));
        self.timers.set_or_stop(Timer::CommandSlot, slot);
        self.metrics.state(self.state());
    }

    fn url(&self, base: &str) -> String {
        let mut url = format!("{}/?v=10&encoding=json", base.trim_end_matches('/'));
        if let Some(compress) = self.config.compression.query_value() {
            url.push_str("&compress=");
            url.push_str(compress);
        }
        url
    }

    /// Opens a connection: to the session's resume URL if there is a
    /// session (or to the gateway URL once that failed), else to the
    /// gateway URL to identify.
    fn open(&mut self, now: Instant) {
        self.timers.stop(Timer::Reconnect);
        let resume_url = self
            .session
            .as_ref()
            .filter(|_| !self.resume_url_failed)
            .map(|session| self.url(&session.resume_url))
            .filter(|url| Endpoint::parse(url, Scheme::WebSocket).is_ok());
        let link = Link {
            step: Step::Connecting,
            resuming: self.session.is_some(),
            to_resume_url: resume_url.is_some(),
            closing: None,
            broke: false,
            wait_before_identify: false,
            replayed: 0,
            span: tracing::info_span!("connect"),
        };
        let url = match resume_url {
            Some(url) => url,
            None => {
                let url = self.url(&self.config.gateway_url);
                if let Err(error) = Endpoint::parse(&url, Scheme::WebSocket) {
                    return self.stop_fatally(FatalError::InvalidGatewayUrl(error));
                }
                url
            }
        };
        self.decoder.reset();
        self.phase = Phase::Open(link);
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        self.orders.push_back(Order::Connect { url });
    }

    fn connect_failed(&mut self, now: Instant, error: String) {
        self.in_step(|| tracing::warn!(error, "connecting failed"));
        self.emit(ShardEvent::ConnectFailed { error });
        self.on_close(now, None, "");
    }

    fn connection_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Asks the driver to close with a resumable code, then do `then`.
    fn close_ourselves(&mut self, then: AfterClose, cause: Cause) {
        self.close(Closing::Ours(then, cause));
    }

    /// As [`ShardMachine::close_ourselves`], for a close the user asked for.
    fn close_by_user(&mut self, then: AfterClose) {
        self.close(Closing::Users(then));
    }

    fn close(&mut self, closing: Closing) {
        // A connection being closed waits for nothing more, even when a
        // close is already on its way.
        self.heartbeat.stop();
        self.timers.stop(Timer::Hello);
        self.timers.stop(Timer::Ready);
        let Some(link) = self.link_mut() else { return };
        if link.closing.is_some() {
            return;
        }
        link.closing = Some(closing);
        self.orders.push_back(Order::Close {
            code: RESUMABLE_CLOSE,
        });
    }

    fn on_close(&mut self, now: Instant, code: Option<u16>, reason: &str) {
        // The phase after the close is set below; until then, the link is
        // taken out (no connection, nothing to close).
        let link = match std::mem::replace(&mut self.phase, Phase::Disconnected) {
            Phase::Open(link) => link,
            other => {
                self.phase = other;
                return;
            }
        };
        let was_connecting = link.step == Step::Connecting;
        // An active connection is reconnected at once, unless it broke.
        let reconnect_at_once = link.step == Step::Active && !link.broke;
        self.heartbeat.stop();
        self.timers.stop_connection();
        if !was_connecting {
            self.emit(ShardEvent::Disconnected {
                code,
                reason: reason.to_owned(),
            });
        }
        let by = match link.closing {
            Some(Closing::Ours(..) | Closing::Stop) => "us",
            Some(Closing::Users(_)) => "the user",
            None => "the gateway",
        };
        tracing::info!(
            code,
            meaning = crate::close_code_meaning(code),
            by,
            "connection closed"
        );
        let (next, cause) = match link.closing {
            Some(Closing::Stop) => return,
            Some(Closing::Users(then)) => (then, ReconnectCause::User),
            Some(Closing::Ours(then, cause)) => (then, ReconnectCause::Ours(cause)),
            None => (
                after_close(code, self.config.intents),
                ReconnectCause::Gateway(code),
            ),
        };
        let by_user = matches!(cause, ReconnectCause::User);
        let mut delay = if reconnect_at_once {
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        match next {
            AfterClose::Fatal(error) => return self.stop_fatally(error),
            AfterClose::Identify => {
                self.session = None;
                // After an Invalid Session `false`, a short randomised wait;
                // 4007 and 4009 start a new session directly.
                if link.wait_before_identify {
                    let (low, high) = self.config.invalid_session_wait;
                    let spread = high.saturating_sub(low).mul_f64(self.jitter.next_jitter());
                    delay = delay.max(low + spread);
                }
            }
            AfterClose::Resume => {
                // The resume URL could not even be opened: the session
                // resumes on the gateway URL instead, and is dropped only
                // when the gateway refuses it (op 9, 4007, 4009).
                if was_connecting && link.to_resume_url {
                    tracing::warn!("the resume URL cannot be reached; resuming on the gateway URL");
                    self.resume_url_failed = true;
                }
            }
        }
        if !self.config.reconnect && !by_user {
            return;
        }
        tracing::info!(
            wait = ?delay,
            then = if self.session.is_some() { "resume" } else { "identify" },
            "reconnecting"
        );
        self.metrics.reconnecting(cause);
        self.phase = Phase::Reconnecting;
        self.timers.set(Timer::Reconnect, now + delay);
    }

    fn stop_fatally(&mut self, error: FatalError) {
        self.phase = Phase::Fatal(error.clone());
        self.timers.stop(Timer::Reconnect);
        self.heartbeat.stop();
        self.queued.clear();
        self.emit(ShardEvent::Fatal(error));
    }
}
