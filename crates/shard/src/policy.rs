use std::fmt;
use std::time::Duration;

use twilight_model::gateway::{CloseCode, Intents};

/// What a shard does after its connection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterClose {
    /// Reconnect and resume the session (if there is one; identify
    /// otherwise).
    Resume,
    /// Reconnect and identify: the session is gone, resuming would only
    /// waste a round trip.
    Identify,
    /// Stop: nothing a reconnect can fix.
    Fatal(FatalError),
}

/// A close that no reconnect can fix, with what the user must change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FatalError {
    /// 4004: the token was refused.
    #[error(
        "closed with 4004 (authentication failed): the bot token was refused; copy a fresh one from the Developer Portal (Bot → Reset Token)"
    )]
    AuthenticationFailed,
    /// 4010: the shard id or count is invalid.
    #[error(
        "closed with 4010 (invalid shard): the shard id must be below the shard count; check the shard configuration"
    )]
    InvalidShard,
    /// 4011: the bot is in too many guilds for its shard count.
    #[error(
        "closed with 4011 (sharding required): the bot needs more shards; call Cluster::reshard with the count GET /gateway/bot recommends, or set ClusterConfig::auto_reshard"
    )]
    ShardingRequired,
    /// 4012: the gateway version is not supported.
    #[error("closed with 4012 (invalid API version): connect with v=10")]
    InvalidApiVersion,
    /// 4013: the intents include bits Discord does not define (these).
    #[error(
        "closed with 4013 (invalid intents): bits {0:#x} of the intents are not intents Discord defines; remove them"
    )]
    InvalidIntents(u64),
    /// 4014: privileged intents not enabled for the application.
    #[error(
        "closed with 4014 (disallowed intents): enable {} for this application in the Developer Portal (Bot → Privileged Gateway Intents), or stop requesting them",
        PrivilegedNames(*.0)
    )]
    DisallowedIntents(Intents),
    /// The shard's own configuration cannot make a valid Identify or
    /// Resume (an empty token, a large threshold outside 50 to 250, …).
    #[error("the shard cannot identify: {0}; fix the shard configuration")]
    InvalidConfiguration(String),
    /// The gateway URL (from `GET /gateway/bot`, or
    /// [`ShardConfig::gateway_url`](crate::ShardConfig::gateway_url)) can
    /// never be connected to.
    #[error(
        "the gateway URL {0}; it comes from GET /gateway/bot or ShardConfig::gateway_url: check the API base, or any proxy in between"
    )]
    InvalidGatewayUrl(crate::InvalidUrl),
    /// The gateway sent messages the shard could not decode, again and
    /// again, even right after resuming: a resume cannot recover them.
    #[error(
        "the gateway sent {UNDECODABLE_LIMIT} messages in a row that cannot be decoded, even after resuming (the last: {0}); if they are too large, raise ShardConfig::max_payload_bytes, else check any proxy between the bot and Discord"
    )]
    Undecodable(String),
}

/// Messages that cannot be decoded (or WebSocket protocol errors) the shard
/// meets in a row, resuming after each, before it stops with
/// [`FatalError::Undecodable`]. A dispatch read in between (other than READY
/// or RESUMED) starts the count again.
pub const UNDECODABLE_LIMIT: u32 = 5;

impl FatalError {
    /// The close code that caused it, if a close did.
    #[must_use]
    pub fn code(&self) -> Option<u16> {
        let code = match self {
            Self::AuthenticationFailed => CloseCode::AuthenticationFailed,
            Self::InvalidShard => CloseCode::InvalidShard,
            Self::ShardingRequired => CloseCode::ShardingRequired,
            Self::InvalidApiVersion => CloseCode::InvalidApiVersion,
            Self::InvalidIntents(_) => CloseCode::InvalidIntents,
            Self::DisallowedIntents(_) => CloseCode::DisallowedIntents,
            Self::InvalidConfiguration(_) | Self::InvalidGatewayUrl(_) | Self::Undecodable(_) => {
                return None;
            }
        };
        Some(code as u16)
    }
}

/// Lists the privileged intents among a set, by their Developer Portal names.
struct PrivilegedNames(Intents);

impl fmt::Display for PrivilegedNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (
                Intents::GUILD_PRESENCES,
                "the Presence Intent (GUILD_PRESENCES)",
            ),
            (
                Intents::GUILD_MEMBERS,
                "the Server Members Intent (GUILD_MEMBERS)",
            ),
            (
                Intents::MESSAGE_CONTENT,
                "the Message Content Intent (MESSAGE_CONTENT)",
            ),
        ]
        .into_iter()
        .filter(|(intent, _)| self.0.contains(*intent))
        .map(|(_, name)| name)
        .collect();
        if names.is_empty() {
            f.write_str("the privileged intents requested")
        } else {
            f.write_str(&names.join(" and "))
        }
    }
}

/// What a shard does after a close, by the close code: Discord's table of
/// Gateway close event codes, plus 1000 and 1001, which end the session.
///
/// `code` is `None` when the connection ended without a close frame (a
/// dropped TCP connection, 1006). `intents` are the ones identified with,
/// named in the 4013 and 4014 errors.
#[must_use]
pub fn after_close(code: Option<u16>, intents: Intents) -> AfterClose {
    // 1000 and 1001 end the session on Discord's side.
    if matches!(code, Some(NORMAL_CLOSE | GOING_AWAY)) {
        return AfterClose::Identify;
    }
    let Some(code) = code.and_then(|code| CloseCode::try_from(code).ok()) else {
        // No close frame, or a code Discord does not define: resume.
        return AfterClose::Resume;
    };
    match code {
        // Invalid seq, session timed out: a new session, directly.
        CloseCode::InvalidSequence | CloseCode::SessionTimedOut => AfterClose::Identify,
        CloseCode::AuthenticationFailed => AfterClose::Fatal(FatalError::AuthenticationFailed),
        CloseCode::InvalidShard => AfterClose::Fatal(FatalError::InvalidShard),
        CloseCode::ShardingRequired => AfterClose::Fatal(FatalError::ShardingRequired),
        CloseCode::InvalidApiVersion => AfterClose::Fatal(FatalError::InvalidApiVersion),
        CloseCode::InvalidIntents => {
            // The bits twilight-model does not know; all of them if it knows
            // every one (Discord may have retired an intent since).
            let unknown = intents.bits() & !Intents::all().bits();
            let named = if unknown == 0 {
                intents.bits()
            } else {
                unknown
            };
            AfterClose::Fatal(FatalError::InvalidIntents(named))
        }
        CloseCode::DisallowedIntents => {
            let privileged =
                Intents::GUILD_MEMBERS | Intents::GUILD_PRESENCES | Intents::MESSAGE_CONTENT;
            AfterClose::Fatal(FatalError::DisallowedIntents(intents & privileged))
        }
        // 4000 to 4003, 4005, 4008, and any code twilight-model adds later.
        _ => AfterClose::Resume,
    }
}

/// What a close code means, in a few words, for logs: Discord's gateway
/// codes and the RFC 6455 codes a gateway or proxy may send.
#[must_use]
pub fn close_code_meaning(code: Option<u16>) -> &'static str {
    match code {
        None => "connection dropped without a close frame",
        Some(code) => defined_close_code(code).unwrap_or("a code Discord does not define"),
    }
}

/// What a close code Discord or RFC 6455 (with IANA's registry) defines
/// means; `None` for any other.
pub(crate) fn defined_close_code(code: u16) -> Option<&'static str> {
    Some(match code {
        1000 => "normal closure (ends the session)",
        1001 => "going away (ends the session)",
        1002 => "WebSocket protocol error",
        1003 => "unacceptable data",
        1005 => "no status code",
        1006 => "abnormal closure",
        1007 => "invalid UTF-8",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "an extension the client needs is missing",
        1011 => "server error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        1015 => "TLS handshake failed",
        4000 => "unknown error (resumable)",
        4001 => "unknown opcode",
        4002 => "decode error",
        4003 => "not authenticated",
        4004 => "authentication failed",
        4005 => "already authenticated",
        4007 => "invalid seq",
        4008 => "rate limited",
        4009 => "session timed out",
        4010 => "invalid shard",
        4011 => "sharding required",
        4012 => "invalid API version",
        4013 => "invalid intents",
        4014 => "disallowed intents",
        _ => return None,
    })
}

/// RFC 6455's normal closure: it ends the session on Discord's side.
pub(crate) const NORMAL_CLOSE: u16 = 1000;
/// RFC 6455's "going away": it ends the session on Discord's side too.
pub(crate) const GOING_AWAY: u16 = 1001;
/// RFC 6455's protocol error: the answer to a frame that breaks it.
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// RFC 6455's "message too big".
pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;

/// The close code shardwire uses when it closes a connection it means to
/// resume: 4000-range codes keep the session, 1000 and 1001 would end it.
pub const RESUMABLE_CLOSE: u16 = CloseCode::UnknownError as u16;

/// Exponential reconnect backoff with jitter and a cap.
///
/// The n-th consecutive failure waits `min(cap, initial × 2ⁿ)` scaled by a
/// factor in `[0.5, 1)` drawn from a seeded generator, so many shards that
/// failed together do not retry together. A success resets it.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    failures: u32,
    jitter: shardwire_heartbeat::Jitter,
}

impl Backoff {
    /// A backoff from `initial` up to `cap`, its jitter seeded by `seed`.
    #[must_use]
    pub fn new(initial: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            initial,
            cap: cap.max(initial),
            failures: 0,
            jitter: shardwire_heartbeat::Jitter::new(seed),
        }
    }

    /// The wait before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.cap);
        base.mul_f64(0.5 + 0.5 * self.jitter.next_jitter())
    }

    /// A connection succeeded: the next failure starts from `initial`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
