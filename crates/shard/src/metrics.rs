//! A shard's metrics, recorded through the [`metrics`] facade: a bot
//! installs the recorder it likes (Prometheus, StatsD, …) before it starts
//! its shards; without one, recording costs next to nothing (a branch on
//! an empty handle, and a lookup of the event type's counter per dispatch).
//!
//! Every series carries a `shard` label (the shard id). A shard registers
//! its handles when it is made, so install the recorder first. The names
//! are the constants below; `docs/metrics.md` says what each means and
//! gives PromQL for the usual questions.
//!
//! Label values are bounded: event names twilight-model knows (any other
//! counts as `other`), gateway opcodes 0 to 15 (any other: `other`), and
//! close codes Discord or RFC 6455 define (any other: `other_code`).

use std::sync::Once;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use twilight_model::gateway::OpCode;

use crate::ShardState;

/// Dispatches received, by `event` (counter).
pub const DISPATCHES: &str = "shardwire_dispatches_total";
/// Gateway payloads received, by `opcode` (counter).
pub const PAYLOADS_RECEIVED: &str = "shardwire_payloads_received_total";
/// Gateway payloads sent, by `opcode` (counter).
pub const PAYLOADS_SENT: &str = "shardwire_payloads_sent_total";
/// Bytes of WebSocket messages received, as they came (compressed under
/// transport compression), without frame headers (counter).
pub const WIRE_BYTES: &str = "shardwire_wire_bytes_received_total";
/// Bytes of payload JSON received, after decompression (counter).
pub const PAYLOAD_BYTES: &str = "shardwire_payload_bytes_received_total";
/// Heartbeat round trips (histogram, seconds).
pub const HEARTBEAT_LATENCY: &str = "shardwire_heartbeat_latency_seconds";
/// The last heartbeat round trip (gauge, seconds).
pub const HEARTBEAT_LATENCY_LAST: &str = "shardwire_heartbeat_latency_last_seconds";
/// Connections closed because a heartbeat went unacknowledged (counter).
pub const ZOMBIES: &str = "shardwire_zombies_total";
/// The shard's state (gauge): 0 disconnected, 1 connecting, 2 waiting for
/// Hello, 3 identifying, 4 resuming, 5 active, 6 reconnecting, 7 fatally
/// closed, 8 stopped (its task has ended: this process no longer runs it).
pub const SHARD_STATE: &str = "shardwire_shard_state";
/// WebSocket connections opened (counter).
pub const CONNECTS: &str = "shardwire_connects_total";
/// Reconnections, by `cause` (counter): a close code (`4000`, …,
/// `other_code`), `op7`, `op9`, `zombie`, `transport`, `hello_timeout`,
/// `ready_timeout`, `bad_hello`, `bad_ready`, `undecodable` or `user`.
pub const RECONNECTS: &str = "shardwire_reconnects_total";
/// Sessions resumed: RESUMED received (counter).
pub const RESUMES: &str = "shardwire_resumes_total";
/// Identify payloads sent (counter).
pub const IDENTIFIES: &str = "shardwire_identifies_total";
/// Payloads that may be sent now under the outbound rate limit, as of the
/// last one sent (gauge).
pub const RATE_LIMIT_HEADROOM: &str = "shardwire_rate_limit_headroom";
/// Commands refused, by `reason`: `queue_full`, `invalid` or `fatal`
/// (counter).
pub const COMMANDS_REFUSED: &str = "shardwire_commands_refused_total";
/// Events the shard's task holds for a consumer that has not made room
/// for them (gauge; the channel's own few batches are not counted).
pub const HELD_EVENTS: &str = "shardwire_held_events";
/// The bytes of JSON those events hold (gauge).
pub const HELD_BYTES: &str = "shardwire_held_bytes";
/// Times the shard stopped reading because its consumer lagged (counter).
pub const READING_PAUSED: &str = "shardwire_reading_paused_total";

/// Why a connection was closed and a new one opened, as the `cause` label
/// of [`RECONNECTS`] has it (close codes are labelled by the gateway's
/// code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The gateway asked (op 7 Reconnect).
    Op7,
    /// The gateway refused the session (op 9 Invalid Session).
    Op9,
    /// A heartbeat went unacknowledged.
    Zombie,
    /// No Hello in time.
    HelloTimeout,
    /// No READY or RESUMED in time.
    ReadyTimeout,
    /// A Hello without a usable heartbeat interval.
    BadHello,
    /// A READY without a usable session.
    BadReady,
    /// A message that could not be decoded, or a broken frame.
    Undecodable,
    /// An Identify or Resume that does not encode. The shard stops, so
    /// this never labels a reconnection; it names the close in the logic.
    Configuration,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Self::Op7 => "op7",
            Self::Op9 => "op9",
            Self::Zombie => "zombie",
            Self::HelloTimeout => "hello_timeout",
            Self::ReadyTimeout => "ready_timeout",
            Self::BadHello => "bad_hello",
            Self::BadReady => "bad_ready",
            Self::Undecodable => "undecodable",
            Self::Configuration => "configuration",
        }
    }
}

/// Why a reconnection happened, for [`RECONNECTS`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReconnectCause {
    /// The machine closed the connection.
    Ours(Cause),
    /// The user asked.
    User,
    /// The gateway closed it with this code, or dropped it (`None`), or it
    /// could not be opened.
    Gateway(Option<u16>),
}

/// The gateway's opcodes get a series each; any other shares one.
const OPCODES: usize = 16;
/// Slots of the dispatch counters' table (see `ShardMetrics::dispatch`):
/// 2⁵, for the top 5 bits of a hash.
const NAME_SLOTS: usize = 32;

/// One shard's handles. Those of the hot path (every message) are made
/// when the shard is; labelled families as their values first come, so a
/// shard exports only the series it uses.
pub(crate) struct ShardMetrics {
    shard: String,
    wire_bytes: Counter,
    payload_bytes: Counter,
    received: [Option<Counter>; OPCODES + 1],
    sent: [Option<Counter>; OPCODES + 1],
    /// Dispatch counters by event name, and where each is in it by the
    /// address of its name (twilight-model's names are `'static`): a
    /// direct-mapped table, so a dispatch costs one comparison, not a scan.
    dispatches: Vec<(&'static str, Counter)>,
    by_address: [u8; NAME_SLOTS],
    other_dispatches: Option<Counter>,
    latency: Histogram,
    latency_last: Gauge,
    state: Gauge,
    connects: Counter,
    zombies: Counter,
    resumes: Counter,
    identifies: Counter,
    headroom: Gauge,
    held_events: Gauge,
    held_bytes: Gauge,
    reading_paused: Counter,
}

impl ShardMetrics {
    pub(crate) fn new(shard_id: u32) -> Self {
        describe_once();
        let shard = shard_id.to_string();
        let label = || [("shard", shard.clone())];
        Self {
            wire_bytes: metrics::counter!(WIRE_BYTES, &label()),
            payload_bytes: metrics::counter!(PAYLOAD_BYTES, &label()),
            received: Default::default(),
            sent: Default::default(),
            dispatches: Vec::new(),
            by_address: [u8::MAX; NAME_SLOTS],
            other_dispatches: None,
            latency: metrics::histogram!(HEARTBEAT_LATENCY, &label()),
            latency_last: metrics::gauge!(HEARTBEAT_LATENCY_LAST, &label()),
            state: metrics::gauge!(SHARD_STATE, &label()),
            connects: metrics::counter!(CONNECTS, &label()),
            zombies: metrics::counter!(ZOMBIES, &label()),
            resumes: metrics::counter!(RESUMES, &label()),
            identifies: metrics::counter!(IDENTIFIES, &label()),
            headroom: metrics::gauge!(RATE_LIMIT_HEADROOM, &label()),
            held_events: metrics::gauge!(HELD_EVENTS, &label()),
            held_bytes: metrics::gauge!(HELD_BYTES, &label()),
            reading_paused: metrics::counter!(READING_PAUSED, &label()),
            shard,
        }
    }

    /// A WebSocket message of `wire` bytes, whether it decodes or not.
    pub(crate) fn message(&self, wire: usize) {
        self.wire_bytes.increment(wire as u64);
    }

    /// A payload decoded, of `json` bytes.
    pub(crate) fn payload(&mut self, opcode: u8, json: usize) {
        self.payload_bytes.increment(json as u64);
        opcode_counter(&mut self.received, PAYLOADS_RECEIVED, &self.shard, opcode).increment(1);
    }

    /// A payload sent, and the rate limit's headroom after it.
    pub(crate) fn sent(&mut self, opcode: u8, headroom: u32) {
        opcode_counter(&mut self.sent, PAYLOADS_SENT, &self.shard, opcode).increment(1);
        if opcode == OpCode::Identify as u8 {
            self.identifies.increment(1);
        }
        self.headroom.set(headroom);
    }

    /// A dispatch; `known` is its name if twilight-model knows it.
    pub(crate) fn dispatch(&mut self, known: Option<&'static str>) {
        let Some(name) = known else {
            let shard = &self.shard;
            return self
                .other_dispatches
                .get_or_insert_with(|| dispatch_counter(shard, "other"))
                .increment(1);
        };
        // Fibonacci hashing of the address: its top bits pick the slot.
        let slot = ((name.as_ptr() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize;
        if let Some((known, counter)) = self.dispatches.get(usize::from(self.by_address[slot]))
            && std::ptr::eq(*known, name)
        {
            return counter.increment(1);
        }
        // Not in its slot: find it (or register it), and put it there.
        let at = match self.dispatches.iter().position(|(known, _)| *known == name) {
            Some(at) => at,
            None => {
                self.dispatches
                    .push((name, dispatch_counter(&self.shard, name)));
                self.dispatches.len() - 1
            }
        };
        if let Ok(index) = u8::try_from(at) {
            self.by_address[slot] = index;
        }
        self.dispatches[at].1.increment(1);
    }

    pub(crate) fn heartbeat(&self, latency: Duration) {
        self.latency.record(latency.as_secs_f64());
        self.latency_last.set(latency.as_secs_f64());
    }

    /// Sets the state gauge. On every input, not only when it moves: a
    /// shard started again in the same process shares the series, and the
    /// old task's last word must not stand.
    pub(crate) fn state(&self, state: ShardState) {
        self.state.set(state_value(state));
    }

    /// The shard's task has ended: it no longer holds events, and its
    /// state is [`STOPPED`].
    pub(crate) fn stopped(&self) {
        self.state.set(STOPPED);
        self.held(0, 0);
    }

    /// A heartbeat went unacknowledged: the connection is a zombie.
    pub(crate) fn zombie(&self) {
        self.zombies.increment(1);
    }

    pub(crate) fn connected(&self) {
        self.connects.increment(1);
    }

    pub(crate) fn resumed(&self) {
        self.resumes.increment(1);
    }

    pub(crate) fn reconnecting(&self, cause: ReconnectCause) {
        let label = match cause {
            ReconnectCause::Ours(cause) => std::borrow::Cow::Borrowed(cause.label()),
            ReconnectCause::User => "user".into(),
            ReconnectCause::Gateway(None) => "transport".into(),
            ReconnectCause::Gateway(Some(code)) => close_code_label(code),
        };
        let labels = [("shard", self.shard.clone()), ("cause", label.into_owned())];
        metrics::counter!(RECONNECTS, &labels).increment(1);
    }

    /// A command refused, for `reason` (see [`COMMANDS_REFUSED`]).
    pub(crate) fn refused(&self, reason: &'static str) {
        let labels = [("shard", self.shard.clone()), ("reason", reason.to_owned())];
        metrics::counter!(COMMANDS_REFUSED, &labels).increment(1);
    }

    /// What the consumer has not taken yet.
    pub(crate) fn held(&self, events: usize, bytes: usize) {
        self.held_events.set(events as f64);
        self.held_bytes.set(bytes as f64);
    }

    pub(crate) fn reading_paused(&self) {
        self.reading_paused.increment(1);
    }
}

fn dispatch_counter(shard: &str, event: &'static str) -> Counter {
    let labels = [("shard", shard.to_owned()), ("event", event.to_owned())];
    metrics::counter!(DISPATCHES, &labels)
}

fn opcode_counter<'a>(
    counters: &'a mut [Option<Counter>; OPCODES + 1],
    name: &'static str,
    shard: &str,
    opcode: u8,
) -> &'a Counter {
    let at = usize::from(opcode).min(OPCODES);
    counters[at].get_or_insert_with(|| {
        let opcode = if at < OPCODES {
            opcode.to_string()
        } else {
            "other".to_owned()
        };
        let labels = [("shard", shard.to_owned()), ("opcode", opcode)];
        metrics::counter!(name, &labels)
    })
}

/// The `cause` label of a close code: the code, if Discord or RFC 6455
/// defines it (as its meaning in the logs does).
fn close_code_label(code: u16) -> std::borrow::Cow<'static, str> {
    match crate::policy::defined_close_code(code) {
        Some(_) => code.to_string().into(),
        None => "other_code".into(),
    }
}

/// [`SHARD_STATE`] once the shard's task has ended.
const STOPPED: f64 = 8.0;

/// The value of [`SHARD_STATE`] for a state.
fn state_value(state: ShardState) -> f64 {
    match state {
        ShardState::Disconnected => 0.0,
        ShardState::Connecting => 1.0,
        ShardState::WaitingForHello => 2.0,
        ShardState::Identifying => 3.0,
        ShardState::Resuming => 4.0,
        ShardState::Active => 5.0,
        ShardState::Reconnecting => 6.0,
        ShardState::FatallyClosed => 7.0,
    }
}

/// Describes the metrics (units, help) to the recorder installed when the
/// first shard is made.
fn describe_once() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_counter!(DISPATCHES, "Dispatches received, by event type");
        describe_counter!(PAYLOADS_RECEIVED, "Gateway payloads received, by opcode");
        describe_counter!(PAYLOADS_SENT, "Gateway payloads sent, by opcode");
        describe_counter!(
            WIRE_BYTES,
            Unit::Bytes,
            "Bytes of WebSocket messages received, as they came"
        );
        describe_counter!(
            PAYLOAD_BYTES,
            Unit::Bytes,
            "Bytes of payload JSON received, after decompression"
        );
        describe_histogram!(
            HEARTBEAT_LATENCY,
            Unit::Seconds,
            "Heartbeat round trips"
        );
        describe_gauge!(
            HEARTBEAT_LATENCY_LAST,
            Unit::Seconds,
            "The last heartbeat round trip"
        );
        describe_counter!(ZOMBIES, "Connections closed for a missed heartbeat ACK");
        describe_gauge!(
            SHARD_STATE,
            "Shard state: 0 disconnected, 1 connecting, 2 waiting for Hello, 3 identifying, 4 resuming, 5 active, 6 reconnecting, 7 fatally closed, 8 stopped"
        );
        describe_counter!(CONNECTS, "WebSocket connections opened");
        describe_counter!(RECONNECTS, "Reconnections, by cause");
        describe_counter!(RESUMES, "Sessions resumed (RESUMED received)");
        describe_counter!(IDENTIFIES, "Identify payloads sent");
        describe_gauge!(
            RATE_LIMIT_HEADROOM,
            "Payloads that may be sent now under the 120-per-minute limit, less the heartbeats' reserve, as of the last payload sent"
        );
        describe_counter!(COMMANDS_REFUSED, "Commands refused, by reason");
        describe_gauge!(HELD_EVENTS, "Events held for a consumer that lags");
        describe_gauge!(HELD_BYTES, Unit::Bytes, "Bytes of JSON in the held events");
        describe_counter!(READING_PAUSED, "Times reading paused for a lagging consumer");
    });
}
