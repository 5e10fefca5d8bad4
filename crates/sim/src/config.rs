use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::observe::{PayloadStyle, RestFault};
use crate::state::Shared;
use crate::{Sim, SimError, server};

/// Intents Discord defines (bits 0 to 25 less the unused 17 to 19, 22, 23).
pub const KNOWN_INTENTS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 20)
    | (1 << 21)
    | (1 << 24)
    | (1 << 25);

/// The privileged intents: GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT.
pub const PRIVILEGED_INTENTS: u64 = (1 << 1) | (1 << 8) | (1 << 15);

/// How the simulator behaves. Built with [`Sim::builder`]. Its `Debug`
/// output leaves the token out.
#[derive(Clone)]
#[non_exhaustive]
pub struct SimConfig {
    /// The bot token it accepts (without `Bot `).
    pub token: String,
    /// The recommended shard count `/gateway/bot` answers (until
    /// [`Sim::set_recommended_shards`]).
    pub shards: u32,
    /// Guilds per shard, each sent as a GUILD_CREATE after READY.
    pub guilds_per_shard: u32,
    /// Members per generated guild.
    pub members_per_guild: usize,
    /// The `heartbeat_interval` of Hello.
    pub heartbeat_interval: Duration,
    /// How long past a heartbeat interval the simulator waits for a
    /// heartbeat before closing with 4009, as a fraction of the interval.
    pub heartbeat_grace: f64,
    /// `session_start_limit.max_concurrency`.
    pub max_concurrency: u32,
    /// `session_start_limit.total`.
    pub total: u32,
    /// `session_start_limit.remaining` at start; each identify takes one.
    pub remaining: u32,
    /// The identify window per bucket (Discord: 5 s).
    pub identify_window: Duration,
    /// Privileged intents the application may not use (4014 if asked for).
    pub disallowed_intents: u64,
    /// Generated events per second per session after READY (0: none).
    pub event_rate: f64,
    /// Events each new session receives flat out right after its READY and
    /// GUILD_CREATEs, from the pre-encoded flood corpus (0: none): what
    /// end-to-end benchmarks in another process start.
    pub flood_after_ready: u64,
    /// Add `"sent_at_ns"` (wall-clock nanoseconds when generated) to the
    /// `d` of each generated event, for latency measurements.
    pub stamp_events: bool,
    /// Split compressed payloads over several WebSocket messages at random
    /// points, including 1 to 3 byte tails.
    pub split_payloads: bool,
    /// Send messages as several WebSocket frames.
    pub fragment_frames: bool,
    /// How the JSON of every payload sent is written (field order,
    /// spacing, escapes).
    pub payload_style: PayloadStyle,
    /// Without transport compression, send JSON in binary frames instead of
    /// text frames.
    pub binary_json: bool,
    /// Answer the WebSocket upgrade with a `Sec-WebSocket-Accept` that does
    /// not match the client's key.
    pub wrong_accept_key: bool,
    /// What `GET /gateway/bot` answers to its first authorized requests,
    /// one fault each, before it answers normally.
    pub gateway_bot_faults: Vec<RestFault>,
    /// The gateway URL `/gateway/bot` hands out instead of the simulator's
    /// own (a URL that can never work, say).
    pub gateway_url_override: Option<String>,
    /// The `resume_gateway_url` READY hands out instead of the resume
    /// listener's (a closed port, or not a URL).
    pub resume_url_override: Option<String>,
    /// Size of the guild pool (0: none, each shard gets `guilds_per_shard`
    /// guilds of its own). With a pool, every session owns the pool guilds
    /// its `[shard_id, shard_count]` covers, whatever the count, so sessions
    /// of two shard counts share guilds and their events; pool guild `i`
    /// (from 0) has the id `((1_000_000_000_000 + i) << 22) | (seed &
    /// 0x3f_ffff)` and belongs to shard `i % shard_count` for any count that
    /// divides 4096.
    pub guild_pool: u32,
    /// Pool events per second over the whole pool (0: none); see
    /// [`Sim::set_guild_event_rate`].
    pub guild_event_rate: f64,
    /// The most guilds one shard may own (0: no limit): an Identify for a
    /// shard that would own more is closed with 4011 (until
    /// [`Sim::set_max_guilds_per_shard`]).
    pub max_guilds_per_shard: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Address of the main listener (port 0: any free port).
    pub bind: SocketAddr,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("token", &"<redacted>")
            .field("shards", &self.shards)
            .field("guilds_per_shard", &self.guilds_per_shard)
            .field("members_per_guild", &self.members_per_guild)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_grace", &self.heartbeat_grace)
            .field("max_concurrency", &self.max_concurrency)
            .field("total", &self.total)
            .field("remaining", &self.remaining)
            .field("identify_window", &self.identify_window)
            .field("disallowed_intents", &self.disallowed_intents)
            .field("event_rate", &self.event_rate)
            .field("flood_after_ready", &self.flood_after_ready)
            .field("stamp_events", &self.stamp_events)
            .field("split_payloads", &self.split_payloads)
            .field("fragment_frames", &self.fragment_frames)
            .field("payload_style", &self.payload_style)
            .field("binary_json", &self.binary_json)
            .field("wrong_accept_key", &self.wrong_accept_key)
            .field("gateway_bot_faults", &self.gateway_bot_faults)
            .field("gateway_url_override", &self.gateway_url_override)
            .field("resume_url_override", &self.resume_url_override)
            .field("guild_pool", &self.guild_pool)
            .field("guild_event_rate", &self.guild_event_rate)
            .field("max_guilds_per_shard", &self.max_guilds_per_shard)
            .field("seed", &self.seed)
            .field("bind", &self.bind)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            token: "sim-token".into(),
            shards: 1,
            guilds_per_shard: 2,
            members_per_guild: 5,
            heartbeat_interval: Duration::from_millis(41_250),
            heartbeat_grace: 0.5,
            max_concurrency: 1,
            total: 1000,
            remaining: 1000,
            identify_window: Duration::from_secs(5),
            disallowed_intents: 0,
            event_rate: 0.0,
            flood_after_ready: 0,
            stamp_events: false,
            split_payloads: false,
            fragment_frames: false,
            payload_style: PayloadStyle::default(),
            binary_json: false,
            wrong_accept_key: false,
            gateway_bot_faults: Vec::new(),
            gateway_url_override: None,
            resume_url_override: None,
            guild_pool: 0,
            guild_event_rate: 0.0,
            max_guilds_per_shard: 0,
            seed: 1,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Configures and starts a [`Sim`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct SimBuilder {
    config: SimConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value.into();
                self
            }
        )*
    };
}

impl SimBuilder {
    setters! {
        /// The token to accept.
        token: &str;
        /// The recommended shard count.
        shards: u32;
        /// Guilds per shard.
        guilds_per_shard: u32;
        /// Members per generated guild.
        members_per_guild: usize;
        /// Hello's heartbeat interval.
        heartbeat_interval: Duration;
        /// `max_concurrency`.
        max_concurrency: u32;
        /// Daily session starts left.
        remaining: u32;
        /// Daily session starts allowed (`session_start_limit.total`).
        total: u32;
        /// The identify window per bucket.
        identify_window: Duration;
        /// Privileged intents refused with 4014.
        disallowed_intents: u64;
        /// Generated events per second per session.
        event_rate: f64;
        /// Events flooded to each new session right after READY.
        flood_after_ready: u64;
        /// Stamp generated events with the time they were generated.
        stamp_events: bool;
        /// Split compressed payloads over several messages.
        split_payloads: bool;
        /// Fragment WebSocket messages into several frames.
        fragment_frames: bool;
        /// How the JSON of every payload is written.
        payload_style: PayloadStyle;
        /// JSON in binary frames without transport compression.
        binary_json: bool;
        /// A wrong `Sec-WebSocket-Accept` in the upgrade's answer.
        wrong_accept_key: bool;
        /// Faulty answers of `/gateway/bot`, one per request, first.
        gateway_bot_faults: Vec<RestFault>;
        /// Guilds in the shared guild pool (0: none).
        guild_pool: u32;
        /// Pool events per second over the whole pool.
        guild_event_rate: f64;
        /// The most guilds a shard may own before 4011 (0: no limit).
        max_guilds_per_shard: u32;
        /// Seed of random choices.
        seed: u64;
        /// Main listener address.
        bind: SocketAddr;
    }

    /// The gateway URL `/gateway/bot` hands out.
    pub fn gateway_url_override(mut self, url: impl Into<String>) -> Self {
        self.config.gateway_url_override = Some(url.into());
        self
    }

    /// The `resume_gateway_url` READY hands out.
    pub fn resume_url_override(mut self, url: impl Into<String>) -> Self {
        self.config.resume_url_override = Some(url.into());
        self
    }

    /// The whole configuration at once.
    pub fn config(mut self, config: SimConfig) -> Self {
        self.config = config;
        self
    }

    /// Binds both listeners and starts serving.
    ///
    /// # Errors
    ///
    /// [`SimError::Bind`] when a listener cannot be bound.
    pub async fn start(self) -> Result<Sim, SimError> {
        let config = self.config;
        let main = TcpListener::bind(config.bind)
            .await
            .map_err(SimError::Bind)?;
        let resume_bind = SocketAddr::new(config.bind.ip(), 0);
        let resume = TcpListener::bind(resume_bind)
            .await
            .map_err(SimError::Bind)?;
        let main_addr = main.local_addr().map_err(SimError::Bind)?;
        let resume_addr = resume.local_addr().map_err(SimError::Bind)?;
        let gateway_url = format!("ws://{main_addr}");
        let resume_url = format!("ws://{resume_addr}");
        let api_url = format!("http://{main_addr}/api/v10");
        let shared = Arc::new(Shared::new(config, gateway_url, resume_url));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(server::serve(
                main,
                crate::Listener::Main,
                shared.clone(),
                stopped.clone(),
            )),
            tokio::spawn(server::serve(
                resume,
                crate::Listener::Resume,
                shared.clone(),
                stopped.clone(),
            )),
        ];
        if shared.pool.is_on() {
            tasks.push(tokio::spawn(crate::pool::emit(shared.clone(), stopped)));
        }
        Ok(Sim {
            shared,
            api_url,
            stop,
            tasks,
        })
    }
}
