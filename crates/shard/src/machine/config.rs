//! How a shard connects: [`ShardConfig`].

use std::time::Duration;

use shardwire_codec::{
    Compression, ConnectionProperties, DEFAULT_PAYLOAD_LIMIT, EventFilter, Token, UpdatePresence,
};
use twilight_model::gateway::Intents;

use crate::Session;

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
    /// Seed of the heartbeat jitter, the backoff and the invalid-session
    /// wait. Drawn from the system's random source by default, so shards
    /// and restarts do not beat in step; set a fixed one for a repeatable
    /// schedule (tests).
    pub seed: u64,
    /// Commands held while the session is not ready, at most.
    pub max_queued_commands: usize,
    /// A session to resume instead of identifying (exported earlier).
    pub session: Option<Session>,
    /// Dispatches to deserialize into twilight-model types
    /// ([`ShardEvent::Dispatch`](crate::ShardEvent::Dispatch)'s `event`); the others stay raw JSON and
    /// cost no parsing. None by default.
    pub typed_events: EventFilter,
    /// Emit every payload received as a [`ShardEvent::Message`](crate::ShardEvent::Message) (off by
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
    /// Reconnect when a connection ends (on by default). Off, a connection
    /// that ends for any reason but a fatal close (the gateway's close, a
    /// dropped connection, a zombie, op 7, a timeout, a failed connect)
    /// leaves the shard [`ShardState::Disconnected`](crate::ShardState)
    /// after its [`ShardEvent::Disconnected`](crate::ShardEvent) or
    /// [`ShardEvent::ConnectFailed`](crate::ShardEvent), with its session
    /// kept: [`ShardMachine::connect`](crate::ShardMachine::connect)
    /// resumes it. A reconnect the user asks for (`reconnect`, `resume`,
    /// `identify`, `reinstantiate`) still happens.
    pub reconnect: bool,
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
            seed: entropy_seed(),
            max_queued_commands: 1000,
            session: None,
            typed_events: EventFilter::none(),
            raw_messages: false,
            max_pending_bytes: 64 * 1024 * 1024,
            hibernate_after: Some(Duration::from_secs(10)),
            release_memory: true,
            max_payload_bytes: DEFAULT_PAYLOAD_LIMIT,
            reconnect: true,
        }
    }

    /// The reconnect backoff a shard with this configuration follows, from
    /// its first delay.
    #[must_use]
    pub fn backoff(&self) -> crate::Backoff {
        crate::Backoff::new(self.backoff_initial, self.backoff_cap, self.seed ^ 0xb0ff)
    }
}

/// A seed from the system's random source, or, should it fail, from the
/// process's hasher keys (themselves random) and the clock.
fn entropy_seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}
