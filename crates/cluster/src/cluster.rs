//! Many shards as one: spawning, one merged event stream, routing by guild,
//! member-chunk collection and lifecycle.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shardwire_codec::{
    Command, Compression, EventFilter, RequestGuildMembers, Token, UpdatePresence,
};
use shardwire_shard::{
    EventSink, IdentifyQueue, SendError, Session, Shard, ShardConfig, ShardEvent, ShardState,
    SinkEvents,
};
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::EventType;
use twilight_model::id::Id;
use twilight_model::id::marker::GuildMarker;

use crate::chunks::{Chunks, GuildMembers};
use crate::{DEFAULT_API_BASE, Gateway, GatewayError, IDENTIFY_WINDOW, LocalQueue};

/// Events waiting in the merged stream.
const EVENT_BUFFER: usize = 4096;

/// Which shards a cluster runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardSpec {
    /// All of the count `/gateway/bot` recommends.
    Recommended,
    /// Shards `0..count` of `count`.
    Count(u32),
    /// These shard ids out of `total` (a slice of a bot sharded across
    /// processes).
    Ids {
        /// The ids, each below `total`.
        ids: Vec<u32>,
        /// The bot's total shard count.
        total: u32,
    },
}

impl ShardSpec {
    /// The ids in `range` out of `total`.
    #[must_use]
    pub fn range(range: std::ops::Range<u32>, total: u32) -> Self {
        Self::Ids {
            ids: range.collect(),
            total,
        }
    }
}

/// Adjusts each shard's configuration before it starts.
pub type Configure = Arc<dyn Fn(&mut ShardConfig) + Send + Sync>;

/// How a cluster runs. Build with [`ClusterConfig::new`], then set fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The bot token (redacted in `Debug`).
    pub token: Token,
    /// The gateway intents.
    pub intents: Intents,
    /// The API base `/gateway/bot` is fetched from.
    pub api_base: String,
    /// Which shards.
    pub shards: ShardSpec,
    /// Transport compression.
    pub compression: Compression,
    /// The dispatches that come out of the stream at all; the others are
    /// dropped on the shard's task, never deserialized. All by default.
    pub events: EventFilter,
    /// Deserialize the dispatches [`ClusterConfig::events`] lets through
    /// into twilight-model types (`ShardEvent::Dispatch`'s `event`).
    pub typed: bool,
    /// The presence to identify with.
    pub presence: Option<UpdatePresence>,
    /// Identify `large_threshold`.
    pub large_threshold: u8,
    /// Sessions to resume, by shard id (exported by
    /// [`Cluster::shutdown`]); the other shards identify.
    pub sessions: HashMap<u32, Session>,
    /// The identify queue; by default an in-memory [`LocalQueue`] sized
    /// from `/gateway/bot`.
    pub queue: Option<Arc<dyn IdentifyQueue>>,
    /// The identify window of the default queue (5 s, as Discord; a
    /// simulator may use less).
    pub identify_window: Duration,
    /// Adjusts each shard's configuration (timeouts, backoff, …).
    pub configure: Option<Configure>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("token", &self.token)
            .field("intents", &self.intents)
            .field("api_base", &self.api_base)
            .field("shards", &self.shards)
            .field("compression", &self.compression)
            .field("events", &self.events)
            .field("typed", &self.typed)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The recommended shards on Discord's API, zlib-stream, every
    /// dispatch raw.
    #[must_use]
    pub fn new(token: Token, intents: Intents) -> Self {
        Self {
            token,
            intents,
            api_base: DEFAULT_API_BASE.to_owned(),
            shards: ShardSpec::Recommended,
            compression: Compression::ZlibStream,
            events: EventFilter::all(),
            typed: false,
            presence: None,
            large_threshold: 50,
            sessions: HashMap::new(),
            queue: None,
            identify_window: IDENTIFY_WINDOW,
            configure: None,
        }
    }
}

/// One shard's state, as [`Cluster::statuses`] reports it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard id.
    pub id: u32,
    /// Its state.
    pub state: ShardState,
    /// The last heartbeat round trip.
    pub latency: Option<Duration>,
    /// Its session, if it has one.
    pub session: Option<Session>,
}

/// What went wrong in a cluster operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Gateway information could not be had, or forbids the start.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The shard ids asked for make no sense.
    #[error("invalid shards: {0}")]
    InvalidShards(String),
    /// No shard with this id runs here.
    #[error("shard {0} does not run in this cluster")]
    UnknownShard(u32),
    /// A shard refused a command.
    #[error("shard {shard}: {error}")]
    Send {
        /// The shard.
        shard: u32,
        /// Why.
        #[source]
        error: SendError,
    },
    /// No complete answer in time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// What [`Cluster::shutdown`] leaves.
#[derive(Debug)]
#[non_exhaustive]
pub struct Shutdown {
    /// Every shard's session, to pass to [`ClusterConfig::sessions`] on the
    /// next start.
    pub sessions: HashMap<u32, Session>,
    /// Events that came after the shutdown began, which the caller has not
    /// seen: handle them, or they are replayed by the next resume.
    pub events: Vec<(u32, ShardEvent)>,
}

/// Many shards as one: a merged event stream in order within each shard,
/// commands routed by guild, and lifecycle control.
pub struct Cluster {
    gateway: Arc<Gateway>,
    total: u32,
    gateway_url: String,
    shards: BTreeMap<u32, Shard>,
    sink: EventSink,
    events: SinkEvents,
    queue: Arc<dyn IdentifyQueue>,
    chunks: Arc<Chunks>,
    config: ClusterConfig,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("total", &self.total)
            .field("shards", &self.shards.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The shard ids and total a spec names, checked.
fn resolve(spec: &ShardSpec, recommended: u32) -> Result<(Vec<u32>, u32), ClusterError> {
    let (mut ids, total) = match spec {
        ShardSpec::Recommended => ((0..recommended.max(1)).collect(), recommended.max(1)),
        ShardSpec::Count(count) => ((0..*count).collect::<Vec<_>>(), *count),
        ShardSpec::Ids { ids, total } => (ids.clone(), *total),
    };
    if total == 0 {
        return Err(ClusterError::InvalidShards(
            "the shard count must be at least 1".into(),
        ));
    }
    if ids.is_empty() {
        return Err(ClusterError::InvalidShards("no shard ids".into()));
    }
    if let Some(id) = ids.iter().find(|id| **id >= total) {
        return Err(ClusterError::InvalidShards(format!(
            "shard id {id} is not below the shard count {total}"
        )));
    }
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(ClusterError::InvalidShards(format!(
            "shard id {} is listed twice",
            pair[0]
        )));
    }
    Ok((ids, total))
}

impl Cluster {
    /// Fetches the gateway information and starts the shards: the ones
    /// with a session in [`ClusterConfig::sessions`] resume, the others
    /// identify through the queue, bucket by bucket.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Gateway`] when `/gateway/bot` fails or fewer
    /// session starts remain than shards must identify;
    /// [`ClusterError::InvalidShards`] for ids out of range or repeated.
    pub async fn start(mut config: ClusterConfig) -> Result<Self, ClusterError> {
        let gateway = Gateway::fetch_from(&config.api_base, &config.token).await?;
        // A shared instance fetched a while ago is refreshed: the remaining
        // session starts matter now.
        let info = if gateway.age() > Duration::from_secs(5) {
            gateway.refresh().await?
        } else {
            gateway.info()
        };
        let (ids, total) = resolve(&config.shards, info.shards)?;
        let sessions = std::mem::take(&mut config.sessions);
        let identifying = ids.iter().filter(|id| !sessions.contains_key(id)).count();
        gateway.check_starts(u32::try_from(identifying).unwrap_or(u32::MAX))?;
        let limit = &info.session_start_limit;
        let queue = config
            .queue
            .clone()
            .unwrap_or_else(|| Arc::new(LocalQueue::with_window(limit, config.identify_window)));
        let (sink, events) = EventSink::channel(EVENT_BUFFER);
        let mut cluster = Self {
            gateway,
            total,
            gateway_url: info.url.clone(),
            shards: BTreeMap::new(),
            sink,
            events,
            queue,
            chunks: Arc::new(Chunks::default()),
            config,
        };
        let mut sessions = sessions;
        for id in ids {
            let session = sessions.remove(&id);
            cluster.spawn(id, session);
        }
        tracing::info!(
            shards = cluster.shards.len(),
            total,
            max_concurrency = limit.max_concurrency,
            "cluster started"
        );
        Ok(cluster)
    }

    fn spawn(&mut self, id: u32, session: Option<Session>) {
        let config = &self.config;
        let mut shard_config = ShardConfig::new(
            config.token.clone(),
            config.intents,
            id,
            self.total,
            self.gateway_url.clone(),
        );
        shard_config.compression = config.compression;
        shard_config.large_threshold = config.large_threshold;
        shard_config.presence = config.presence.clone();
        shard_config.session = session;
        if config.typed {
            shard_config.typed_events = config.events.clone();
        }
        if let Some(configure) = &config.configure {
            configure(&mut shard_config);
        }
        let chunks = self.chunks.clone();
        let filter = config.events.clone();
        let tap: shardwire_shard::Tap = Arc::new(move |_shard, event| {
            let event = chunks.tap(event)?;
            if let ShardEvent::Dispatch { event_type, .. } = &event
                && !wants(&filter, event_type)
            {
                return None;
            }
            Some(event)
        });
        let sink = self.sink.clone().with_tap(tap);
        let shard = Shard::start_with_sink(shard_config, self.queue.clone(), sink);
        self.shards.insert(id, shard);
    }

    /// The next event of any shard, tagged with its id; in order within
    /// each shard. It waits while the cluster runs (`None` never comes
    /// while the cluster is alive).
    pub async fn next_event(&mut self) -> Option<(u32, ShardEvent)> {
        self.events.recv().await
    }

    /// The gateway information this cluster started from.
    #[must_use]
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The bot's total shard count.
    #[must_use]
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The ids of the shards running here.
    #[must_use]
    pub fn shard_ids(&self) -> Vec<u32> {
        self.shards.keys().copied().collect()
    }

    /// The shard that owns a guild: `(guild_id >> 22) % total`.
    #[must_use]
    pub fn shard_for_guild(&self, guild_id: Id<GuildMarker>) -> u32 {
        u32::try_from((guild_id.get() >> 22) % u64::from(self.total)).unwrap_or(0)
    }

    fn shard(&self, id: u32) -> Result<&Shard, ClusterError> {
        self.shards.get(&id).ok_or(ClusterError::UnknownShard(id))
    }

    /// Sends a command on one shard (queued until its session is ready,
    /// under its rate limit).
    ///
    /// # Errors
    ///
    /// [`ClusterError::UnknownShard`], or the shard's [`SendError`].
    pub async fn send(&self, shard: u32, command: Command) -> Result<(), ClusterError> {
        self.shard(shard)?
            .send(command)
            .await
            .map_err(|error| ClusterError::Send { shard, error })
    }

    /// Sends a command on the shard that owns `guild_id`.
    ///
    /// # Errors
    ///
    /// As [`Cluster::send`]; [`ClusterError::UnknownShard`] when that shard
    /// runs in another process.
    pub async fn send_to_guild(
        &self,
        guild_id: Id<GuildMarker>,
        command: Command,
    ) -> Result<(), ClusterError> {
        self.send(self.shard_for_guild(guild_id), command).await
    }

    /// Updates the presence on every shard.
    ///
    /// # Errors
    ///
    /// The first shard that refused (the others still got it).
    pub async fn update_presence(&self, presence: UpdatePresence) -> Result<(), ClusterError> {
        let mut first = None;
        for (id, shard) in &self.shards {
            if let Err(error) = shard.send(Command::UpdatePresence(presence.clone())).await {
                first.get_or_insert(ClusterError::Send { shard: *id, error });
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Requests guild members on the guild's shard and collects every
    /// GUILD_MEMBERS_CHUNK of the answer (matched by nonce; those chunks do
    /// not come out of the stream). A nonce is made unless the request has
    /// one.
    ///
    /// # Errors
    ///
    /// As [`Cluster::send_to_guild`]; [`ClusterError::Timeout`] when the
    /// chunks do not all come within `timeout`.
    pub async fn request_guild_members(
        &self,
        mut request: RequestGuildMembers,
        timeout: Duration,
    ) -> Result<GuildMembers, ClusterError> {
        let nonce = request
            .nonce
            .clone()
            .unwrap_or_else(|| self.chunks.next_nonce());
        request.nonce = Some(nonce.clone());
        let answer = self.chunks.register(nonce.clone());
        let guild = request.guild_id;
        if let Err(error) = self
            .send_to_guild(guild, Command::RequestGuildMembers(request))
            .await
        {
            self.chunks.cancel(&nonce);
            return Err(error);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(members)) => Ok(members),
            _ => {
                self.chunks.cancel(&nonce);
                Err(ClusterError::Timeout(timeout))
            }
        }
    }

    fn status_of(id: u32, shard: &Shard) -> ShardStatus {
        ShardStatus {
            id,
            state: shard.status(),
            latency: shard.latency().last(),
            session: shard.session(),
        }
    }

    /// One shard's status.
    #[must_use]
    pub fn status(&self, shard: u32) -> Option<ShardStatus> {
        self.shards.get(&shard).map(|s| Self::status_of(shard, s))
    }

    /// Every shard's status, by id.
    #[must_use]
    pub fn statuses(&self) -> Vec<ShardStatus> {
        self.shards
            .iter()
            .map(|(id, shard)| Self::status_of(*id, shard))
            .collect()
    }

    /// Every shard's session (its seq is that of the last event put in the
    /// stream).
    #[must_use]
    pub fn sessions(&self) -> HashMap<u32, Session> {
        self.shards
            .iter()
            .filter_map(|(id, shard)| shard.session().map(|session| (*id, session)))
            .collect()
    }

    /// Restarts one shard: a new task and connection that resumes the
    /// session (identifies if there is none, as after a fatal close).
    /// Events the old task still held are replayed by the resume.
    ///
    /// # Errors
    ///
    /// [`ClusterError::UnknownShard`].
    pub fn restart(&mut self, shard: u32) -> Result<(), ClusterError> {
        let old = self
            .shards
            .remove(&shard)
            .ok_or(ClusterError::UnknownShard(shard))?;
        let session = old.session();
        drop(old);
        self.spawn(shard, session);
        Ok(())
    }

    /// Starts one more shard (below the total), resuming `session` if
    /// given.
    ///
    /// # Errors
    ///
    /// [`ClusterError::InvalidShards`] for an id out of range or already
    /// running.
    pub fn add(&mut self, shard: u32, session: Option<Session>) -> Result<(), ClusterError> {
        if shard >= self.total {
            return Err(ClusterError::InvalidShards(format!(
                "shard id {shard} is not below the shard count {}",
                self.total
            )));
        }
        if self.shards.contains_key(&shard) {
            return Err(ClusterError::InvalidShards(format!(
                "shard {shard} already runs"
            )));
        }
        self.spawn(shard, session);
        Ok(())
    }

    /// Stops one shard with a resumable close and returns its session, to
    /// resume it elsewhere. Its events already in the stream stay there.
    ///
    /// # Errors
    ///
    /// [`ClusterError::UnknownShard`].
    pub fn remove(&mut self, shard: u32) -> Result<Option<Session>, ClusterError> {
        let old = self
            .shards
            .remove(&shard)
            .ok_or(ClusterError::UnknownShard(shard))?;
        Ok(old.session())
    }

    /// Closes every shard with a resumable code, collects the events that
    /// were still on their way (until every shard is disconnected and the
    /// stream has been quiet for 100 ms, at most `timeout`), and exports
    /// every session.
    pub async fn shutdown(mut self, timeout: Duration) -> Shutdown {
        for shard in self.shards.values() {
            shard.disconnect(shardwire_shard::RESUMABLE_CLOSE);
        }
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let quiet = Duration::from_millis(100);
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(_) => {
                    let stopped = self.shards.values().all(|shard| {
                        matches!(
                            shard.status(),
                            ShardState::Disconnected | ShardState::FatallyClosed
                        )
                    });
                    if stopped || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        // Whatever is still in the channel was delivered as well.
        while let Some(event) = self.events.try_recv() {
            events.push(event);
        }
        Shutdown {
            sessions: self.sessions(),
            events,
        }
    }
}

impl futures_core::Stream for Cluster {
    type Item = (u32, ShardEvent);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

/// Whether the filter lets a dispatch of this name through; unknown names
/// pass only when everything does.
fn wants(filter: &EventFilter, event_type: &str) -> bool {
    filter.is_all() || EventType::try_from(event_type).is_ok_and(|t| filter.wants(t))
}
