//! What a shard machine tells its driver and its user: [`ShardState`],
//! [`Order`], [`ShardEvent`], and the errors of its commands.

use std::borrow::Cow;
use std::time::Duration;

use twilight_model::gateway::event::Event;

use crate::{FatalError, IdentifyRefused, Json, Session};

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
    /// `handle_connect_failed` if it fails). The machine's connect timeout
    /// may end the attempt first, with [`Order::Abandon`].
    Connect {
        /// The full URL, query included.
        url: String,
    },
    /// Close the connection with this code, then call `handle_close`.
    Close {
        /// The close code.
        code: u16,
    },
    /// Drop the connection, or the connection being opened, without a
    /// close frame and without calling `handle_close`: the machine has
    /// already counted it as ended (a connect that timed out).
    Abandon,
    /// Wait for the identify queue's turn, then call `handle_identify_turn`
    /// (or `handle_identify_refused`).
    WaitIdentifyTurn,
    /// The connection has been quiet for
    /// [`ShardConfig::hibernate_after`](crate::ShardConfig::hibernate_after)
    /// and its decompression state hibernates: free the receive buffer, and
    /// hand freed memory back to the system if
    /// [`ShardConfig::release_memory`](crate::ShardConfig::release_memory)
    /// asks for it.
    Hibernate,
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
    /// [`ShardConfig::typed_events`](crate::ShardConfig::typed_events) asks for its type.
    Dispatch {
        /// Its sequence number.
        seq: u64,
        /// Its event name. Names Discord documents are borrowed from a
        /// static table; others are owned.
        event_type: Cow<'static, str>,
        /// The whole payload's JSON.
        json: Json,
        /// The typed event, if asked for and it deserialized (one that does
        /// not is logged and still comes out raw): twilight-model's
        /// [`Event`], the type `twilight_cache_inmemory::InMemoryCache::update`
        /// takes (see [`ShardEvent::twilight`]).
        event: Option<Box<Event>>,
    },
    /// Any payload received, as JSON, when [`ShardConfig::raw_messages`](crate::ShardConfig::raw_messages)
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
    /// A connection could not be opened (refused, TLS, the handshake, or
    /// the connect timeout); the shard retries after its backoff.
    ConnectFailed {
        /// What went wrong, in one line.
        error: String,
    },
    /// The identify queue refused this shard its turn (the day's session
    /// starts are spent, or the queue shut down): the shard is
    /// [`ShardState::Disconnected`] until asked to connect again.
    IdentifyRefused(IdentifyRefused),
    /// The shard stopped for good.
    Fatal(FatalError),
    /// A cluster began resharding: a second generation of `to` shards
    /// identifies beside the running `from`, which keeps delivering. Only a
    /// cluster sends it, tagged with the lowest shard id it runs.
    Resharding {
        /// The running generation's shard count.
        from: u32,
        /// The new generation's.
        to: u32,
    },
    /// A cluster switched to its new generation: commands go to its `to`
    /// shards, and each guild's events come from them (tagged with their
    /// ids) as soon as the two generations' streams of that guild line up,
    /// within the cluster's overlap window; until then from the old shards,
    /// tagged with theirs. Only a cluster sends it, tagged as
    /// [`ShardEvent::Resharding`].
    Resharded {
        /// The old shard count.
        from: u32,
        /// The new one.
        to: u32,
        /// From [`ShardEvent::Resharding`] to the switch.
        took: Duration,
    },
    /// A cluster gave a reshard up before its switch: its new generation
    /// closed (its sessions ended), and the running `from` shards go on as
    /// before. Only a cluster sends it, tagged as
    /// [`ShardEvent::Resharding`].
    ReshardAbandoned {
        /// The running generation's shard count.
        from: u32,
        /// The count the reshard was to.
        to: u32,
        /// Why, in one line: a new shard that could not start, the
        /// deadline passed (naming the new shards not READY), a cancel or
        /// a shutdown.
        reason: String,
    },
    /// An event of a cluster's new generation that repeats what the bot
    /// has: its READY and lifecycle events before the switch, and the
    /// GUILD_CREATEs of the guilds its READYs listed (some may come after
    /// [`ShardEvent::Resharded`]), tagged with that shard's id out of
    /// `total`. Its guild events are not among them: those come once, from
    /// one generation. [`ShardEvent::twilight`] looks through it, so a
    /// cache refreshes from the new GUILD_CREATEs.
    FromReshard {
        /// The new generation's shard count.
        total: u32,
        /// The event.
        event: Box<ShardEvent>,
    },
}

impl ShardEvent {
    /// The typed dispatch as twilight-model's [`Event`], if it has one:
    /// `cache.update(event)` takes it as it is.
    #[must_use]
    pub fn twilight(&self) -> Option<&Event> {
        match self {
            Self::Dispatch {
                event: Some(event), ..
            } => Some(event),
            Self::FromReshard { event, .. } => event.twilight(),
            _ => None,
        }
    }
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
