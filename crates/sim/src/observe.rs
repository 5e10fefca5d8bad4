//! What the simulator saw, and the faults it can be told to inject.

use std::time::Duration;

use tokio::time::Instant;

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Listener {
    /// The gateway URL that `/gateway/bot` hands out.
    Main,
    /// The `resume_gateway_url` that READY hands out.
    Resume,
}

/// A WebSocket connection the simulator accepted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionSeen {
    /// The simulator's number for the connection.
    pub id: u64,
    /// Where it connected.
    pub listener: Listener,
    /// The `compress` query parameter, if any.
    pub compress: Option<String>,
    /// When it connected.
    pub at: Instant,
}

/// An Identify the simulator accepted or refused.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IdentifySeen {
    /// The connection it came on.
    pub connection: u64,
    /// `[shard_id, shard_count]` (`[0, 1]` when absent).
    pub shard: [u32; 2],
    /// The intents.
    pub intents: u64,
    /// Whether payload compression was asked for.
    pub compress: bool,
    /// When it arrived.
    pub at: Instant,
    /// Whether it started a session.
    pub accepted: bool,
}

/// A Resume the simulator handled.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ResumeSeen {
    /// The connection it came on.
    pub connection: u64,
    /// Where that connection arrived.
    pub listener: Listener,
    /// The session it named.
    pub session_id: String,
    /// The sequence it named.
    pub seq: u64,
    /// What came of it.
    pub outcome: ResumeOutcome,
    /// When it arrived.
    pub at: Instant,
}

/// What the simulator did with a Resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResumeOutcome {
    /// Replayed the missed events and sent RESUMED.
    Resumed {
        /// How many events were replayed.
        replayed: u64,
    },
    /// Unknown session (or a wrong token): op 9 `false`.
    InvalidSession,
    /// A `seq` ahead of the server's: closed with 4007.
    InvalidSeq,
}

/// A heartbeat the simulator received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HeartbeatSeen {
    /// The connection it came on.
    pub connection: u64,
    /// The shard of that connection, once identified or resumed.
    pub shard: Option<u32>,
    /// Its `d`: the client's last sequence number.
    pub seq: Option<u64>,
    /// When it arrived.
    pub at: Instant,
}

/// A command the simulator received on an identified session: op 3
/// (presence), 4 (voice state), 8 (member request), 31 (soundboard sounds)
/// or 43 (channel info).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CommandSeen {
    /// The connection it came on.
    pub connection: u64,
    /// The shard of that connection.
    pub shard: Option<u32>,
    /// Its opcode.
    pub op: u64,
    /// Its `d`.
    pub d: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
}

/// Who closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClosedBy {
    /// The client sent a close frame.
    Client,
    /// The simulator sent a close frame.
    Server,
    /// The TCP connection ended without a close frame (either side).
    Dropped,
}

/// A connection's end.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CloseSeen {
    /// The connection.
    pub connection: u64,
    /// Its shard, once identified or resumed.
    pub shard: Option<u32>,
    /// Who closed it.
    pub by: ClosedBy,
    /// The close code, if a close frame carried one.
    pub code: Option<u16>,
    /// When the simulator closed: whether the client answered with a close
    /// frame of its own, as RFC 6455 (5.5.1) requires. Set once the answer
    /// arrives, up to a second after the close is recorded.
    pub answered: bool,
    /// When.
    pub at: Instant,
}

/// A rule of the gateway a client broke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViolationKind {
    /// Identified before its bucket's 5-second window passed (answered with
    /// op 9). `bucket` is `shard_id % max_concurrency`.
    IdentifyTooFast {
        /// The rate-limit bucket.
        bucket: u32,
    },
    /// Identified with no daily session starts left.
    SessionStartLimit,
    /// Sent more than 120 payloads in 60 seconds (closed with 4008).
    RateLimited,
    /// Sent a payload over 4096 bytes (closed with 4002).
    PayloadTooLarge {
        /// Its size.
        size: usize,
    },
    /// Sent something that is not a JSON payload (closed with 4002).
    DecodeError,
    /// Sent an unknown opcode (closed with 4001).
    UnknownOpcode {
        /// The opcode.
        op: u64,
    },
    /// Sent a command before identifying (closed with 4003).
    NotAuthenticated,
    /// Identified twice on one connection (closed with 4005).
    AlreadyAuthenticated,
    /// Identified with a wrong token (closed with 4004).
    AuthenticationFailed,
    /// Identified with a shard outside its count (closed with 4010).
    InvalidShard,
    /// Identified with intents Discord does not define (closed with 4013).
    InvalidIntents {
        /// The unknown bits.
        bits: u64,
    },
    /// Identified with privileged intents not enabled (closed with 4014).
    DisallowedIntents {
        /// The disallowed bits asked for.
        bits: u64,
    },
    /// Identified a shard that would own more guilds than
    /// [`SimConfig::max_guilds_per_shard`](crate::SimConfig::max_guilds_per_shard)
    /// allows (closed with 4011).
    ShardingRequired {
        /// The guilds it would own.
        guilds: usize,
    },
    /// Stopped heartbeating (closed with 4009).
    MissedHeartbeat,
    /// Closed with 1000 or 1001, which ends the session.
    SessionEndingClose {
        /// The code.
        code: u16,
    },
}

/// A broken rule, where and when.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Violation {
    /// The connection.
    pub connection: u64,
    /// Its shard, if known.
    pub shard: Option<u32>,
    /// The rule.
    pub kind: ViolationKind,
    /// When.
    pub at: Instant,
}

/// Everything the simulator saw, in order of arrival.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Observations {
    /// Accepted WebSocket connections.
    pub connections: Vec<ConnectionSeen>,
    /// Identifies, accepted or not.
    pub identifies: Vec<IdentifySeen>,
    /// Resumes.
    pub resumes: Vec<ResumeSeen>,
    /// Heartbeats.
    pub heartbeats: Vec<HeartbeatSeen>,
    /// Commands of an identified session (presence, voice state, member
    /// requests, …), accepted ones only.
    pub commands: Vec<CommandSeen>,
    /// Ends of connections.
    pub closes: Vec<CloseSeen>,
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// REST requests to `/gateway/bot`.
    pub gateway_bot_requests: Vec<RestSeen>,
    /// Messages created through `POST /channels/{id}/messages`.
    pub messages: Vec<MessageSeen>,
}

/// A REST request the simulator answered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestSeen {
    /// Whether it carried the right token.
    pub authorized: bool,
    /// The HTTP status of the answer.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// A faulty answer of `GET /gateway/bot` (see
/// [`SimConfig::gateway_bot_faults`](crate::SimConfig::gateway_bot_faults)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestFault {
    /// HTTP 429 with a `Retry-After` header (whole seconds, rounded up),
    /// and `retry_after` in the JSON body too when `in_body`.
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
        /// Whether the body says so too (in fractional seconds).
        in_body: bool,
    },
    /// This HTTP status, with a short JSON body.
    Status(u16),
    /// HTTP 200 with a body of this many bytes of white space.
    Oversized(usize),
    /// HTTP 200 with a body that never ends: a byte every `every`, or
    /// flat out when `None`.
    Endless {
        /// The pause between bytes.
        every: Option<Duration>,
    },
}

/// How the simulator writes the JSON of the payloads it sends: all valid
/// JSON, none of it as Discord writes it. The pre-encoded flood corpus
/// ([`Fault::Flood`]) is sent as it was encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PayloadStyle {
    /// The order of `t`, `s`, `op` and `d`.
    pub order: FieldOrder,
    /// Pretty-printed: CRLF line breaks and tabs between every token of
    /// the envelope and of `d`.
    pub pretty: bool,
    /// Field names of the envelope and the value of `t` written entirely
    /// in `\u` escapes (`"\u006f\u0070"` for `op`).
    pub escaped_names: bool,
}

/// The order of a payload's envelope fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldOrder {
    /// `t`, `s`, `op`, `d`, as Discord sends them.
    #[default]
    Discord,
    /// `d` first, then `op`, `s`, `t`.
    DataFirst,
    /// `op`, `d`, `t`, `s`: `d` neither first nor last.
    DataInside,
}

/// A message a client created through the REST API.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageSeen {
    /// The channel.
    pub channel_id: String,
    /// Its content.
    pub content: String,
    /// The message it replies to, if any.
    pub reply_to: Option<String>,
}

/// A fault to inject into a shard's live connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Send op 7 Reconnect.
    Reconnect,
    /// Send op 9 Invalid Session.
    InvalidSession {
        /// Its `d`: whether the session may be resumed.
        resumable: bool,
    },
    /// Send a server op 1, asking for a heartbeat now.
    RequestHeartbeat,
    /// Close the connection with this code. The codes after which Discord
    /// does not let a session resume (4004, 4007, 4009 to 4014) also end
    /// the session; others (4000, say) leave it resumable.
    Close(u16),
    /// Stop acknowledging heartbeats (the connection turns zombie).
    Zombie,
    /// Send compressed bytes that cannot be decompressed (or, without
    /// transport compression, a text message that is not JSON).
    CorruptCompressed,
    /// Drop the TCP connection without a close frame.
    DropTcp,
    /// Send a GUILD_CREATE for a guild with this many members.
    HugeGuildCreate {
        /// The member count.
        members: usize,
    },
    /// Read the client's frames slowly: wait this long before each one.
    ReadSlowly(Duration),
    /// Send this many generated events, each built and compressed as it
    /// goes. Like Discord, the simulator keeps reading and acknowledging
    /// heartbeats in between; faults injected meanwhile wait their turn.
    /// The burst belongs to the connection it was sent on: if that
    /// connection ends, the rest is never sent (a resume replays only what
    /// was).
    Burst(u64),
    /// Send this many events flat out from a pre-encoded corpus, built once
    /// per simulator and shared by every connection: for throughput
    /// benchmarks. On zstd-stream the events are compressed as they go.
    Flood(u64),
    /// Send this dispatch now, with the session's next seq (as a user's
    /// action would cause one).
    Dispatch {
        /// Its event name, like `MESSAGE_CREATE`.
        event_type: String,
        /// Its `d`.
        d: serde_json::Value,
    },
    /// Send a dispatch whose `d` is this text, JSON or not (a hostile
    /// gateway's: nested 100,000 deep, unclosed, …), with the session's
    /// next seq. It is logged for replay like any dispatch.
    RawDispatch {
        /// Its event name, written as is between quotes.
        event_type: String,
        /// The text of `d`.
        d: String,
    },
}
