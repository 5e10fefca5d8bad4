//! Many shards as one: spawning, one merged event stream, routing by guild,
//! member-chunk collection and lifecycle.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shardwire_codec::{Compression, EventFilter, Token, UpdatePresence};
use shardwire_shard::{
    EventSink, IdentifyQueue, SendError, Session, Shard, ShardConfig, ShardEvent, ShardState,
    SinkEvents,
};
use twilight_model::gateway::event::EventType;
use twilight_model::gateway::{Intents, ShardId};

use crate::sender::{ClusterSender, Shared};
use crate::store::{SessionStore, StoreError, keep_saved};
use crate::{DEFAULT_API_BASE, Gateway, GatewayError, GatewayInfo, IDENTIFY_WINDOW, LocalQueue};

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
    /// Gateway information the bot already has from its own REST client
    /// (twilight-http's `gateway().authed()` converts with `into()`): the
    /// cluster then starts without a `GET /gateway/bot` of its own.
    pub gateway_info: Option<GatewayInfo>,
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
    /// [`Cluster::shutdown`]); the other shards identify. They come before
    /// those of [`ClusterConfig::session_store`].
    pub sessions: HashMap<u32, Session>,
    /// Where sessions are loaded from at start and saved to while the
    /// cluster runs and at shutdown (a [`FileSessionStore`](crate::FileSessionStore),
    /// say); none by default.
    pub session_store: Option<Arc<dyn SessionStore>>,
    /// How often moving sessions are saved to the store, besides when one
    /// starts or ends and at shutdown (10 s by default).
    pub session_save_interval: Duration,
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
            .field("gateway_info", &self.gateway_info)
            .field("shards", &self.shards)
            .field("compression", &self.compression)
            .field("events", &self.events)
            .field("typed", &self.typed)
            .field("sessions", &self.sessions.len())
            .field("session_store", &self.session_store.is_some())
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
            gateway_info: None,
            shards: ShardSpec::Recommended,
            compression: Compression::ZlibStream,
            events: EventFilter::all(),
            typed: false,
            presence: None,
            large_threshold: 50,
            sessions: HashMap::new(),
            session_store: None,
            session_save_interval: Duration::from_secs(10),
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

impl ShardStatus {
    pub(crate) fn of(id: u32, shard: &Shard) -> Self {
        Self {
            id,
            state: shard.status(),
            latency: shard.latency().last(),
            session: shard.session(),
        }
    }
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
    /// The session store could not load the sessions.
    #[error("loading the sessions: {0}")]
    SessionStore(StoreError),
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
    /// Why the session store did not take the sessions, if it did not.
    pub store_error: Option<StoreError>,
}

/// Many shards as one: a merged event stream in order within each shard,
/// commands routed by guild, and lifecycle control.
///
/// Commands go through its [`ClusterSender`] ([`Cluster::sender`]), which
/// other tasks may hold while this one takes the events. Dropping the
/// cluster stops its shards (each closes resumably).
pub struct Cluster {
    gateway: Arc<Gateway>,
    gateway_url: String,
    shared: Arc<Shared>,
    sender: ClusterSender,
    sink: EventSink,
    events: SinkEvents,
    queue: Arc<dyn IdentifyQueue>,
    /// Told when a session starts or ends, for the session store.
    sessions_changed: Arc<tokio::sync::Notify>,
    config: ClusterConfig,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("total", &self.shared.total)
            .field("shards", &self.shard_ids())
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
    /// Fetches the gateway information (unless
    /// [`ClusterConfig::gateway_info`] has it) and starts the shards: the
    /// ones with a session in [`ClusterConfig::sessions`] or the session
    /// store resume, the others identify through the queue, bucket by
    /// bucket.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Gateway`] when `/gateway/bot` fails or fewer
    /// session starts remain than shards must identify;
    /// [`ClusterError::InvalidShards`] for ids out of range or repeated;
    /// [`ClusterError::SessionStore`] when the store cannot load.
    pub async fn start(mut config: ClusterConfig) -> Result<Self, ClusterError> {
        let (gateway, info) = match config.gateway_info.clone() {
            Some(info) => (
                Gateway::with_info(&config.api_base, &config.token, info.clone()),
                info,
            ),
            None => {
                let gateway = Gateway::fetch_from(&config.api_base, &config.token).await?;
                // A shared instance fetched a while ago is refreshed: the
                // remaining session starts matter now.
                let info = if gateway.age() > Duration::from_secs(5) {
                    gateway.refresh().await?
                } else {
                    gateway.info()
                };
                (gateway, info)
            }
        };
        let (ids, total) = resolve(&config.shards, info.shards)?;
        let mut sessions = std::mem::take(&mut config.sessions);
        if let Some(store) = &config.session_store {
            let stored = store.load(&ids).await.map_err(ClusterError::SessionStore)?;
            for (id, session) in stored {
                sessions.entry(id).or_insert(session);
            }
        }
        let identifying = ids.iter().filter(|id| !sessions.contains_key(id)).count();
        gateway.check_starts(u32::try_from(identifying).unwrap_or(u32::MAX))?;
        let limit = &info.session_start_limit;
        let queue = config
            .queue
            .clone()
            .unwrap_or_else(|| Arc::new(LocalQueue::with_window(limit, config.identify_window)));
        let (sink, events) = EventSink::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared::new(total));
        let mut cluster = Self {
            gateway,
            gateway_url: info.url.clone(),
            sender: ClusterSender::new(shared.clone()),
            shared,
            sink,
            events,
            queue,
            sessions_changed: Arc::default(),
            config,
        };
        // The sessions the shards resume: what later saves are measured from.
        let resumed: std::collections::BTreeMap<u32, Session> = ids
            .iter()
            .filter_map(|id| Some((*id, sessions.remove(id)?)))
            .collect();
        for id in ids {
            cluster.spawn(id, resumed.get(&id).cloned());
        }
        if let Some(store) = cluster.config.session_store.clone() {
            tokio::spawn(keep_saved(
                Arc::downgrade(&cluster.shared),
                store,
                cluster.sessions_changed.clone(),
                cluster.config.session_save_interval,
                resumed,
            ));
        }
        tracing::info!(
            shards = cluster.shard_ids().len(),
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
            self.shared.total,
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
        let chunks = self.shared.chunks.clone();
        let filter = config.events.clone();
        let changed = self.sessions_changed.clone();
        let tap: shardwire_shard::Tap = Arc::new(move |_shard, event| {
            if matches!(event, ShardEvent::Ready { .. } | ShardEvent::Fatal(_)) {
                changed.notify_one();
            }
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
        self.shared.write().insert(id, shard);
    }

    /// The next event of any shard, tagged with its id; in order within
    /// each shard. It waits while the cluster runs (`None` never comes
    /// while the cluster is alive).
    pub async fn next_event(&mut self) -> Option<(u32, ShardEvent)> {
        self.events.recv().await
    }

    /// Sends on this cluster's shards, from this task or any other (see
    /// [`ClusterSender`]).
    #[must_use]
    pub fn sender(&self) -> ClusterSender {
        self.sender.clone()
    }

    /// The gateway information this cluster started from.
    #[must_use]
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The bot's total shard count.
    #[must_use]
    pub fn total(&self) -> u32 {
        self.shared.total
    }

    /// twilight-model's id of shard `number` of this cluster's total (its
    /// [`ShardId::number`] gives the number back).
    ///
    /// # Panics
    ///
    /// When `number` is not below the total.
    #[must_use]
    pub fn shard_id(&self, number: u32) -> ShardId {
        self.sender.shard_id(number)
    }

    /// The ids of the shards running here.
    #[must_use]
    pub fn shard_ids(&self) -> Vec<u32> {
        self.sender.shard_ids()
    }

    /// One shard's status.
    #[must_use]
    pub fn status(&self, shard: u32) -> Option<ShardStatus> {
        self.sender.status(shard)
    }

    /// Every shard's status, by id.
    #[must_use]
    pub fn statuses(&self) -> Vec<ShardStatus> {
        self.shared
            .read()
            .iter()
            .map(|(id, shard)| ShardStatus::of(*id, shard))
            .collect()
    }

    /// Every shard's session (its seq is that of the last event put in the
    /// stream).
    #[must_use]
    pub fn sessions(&self) -> HashMap<u32, Session> {
        self.shared.sessions().into_iter().collect()
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
            .shared
            .write()
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
        if shard >= self.shared.total {
            return Err(ClusterError::InvalidShards(format!(
                "shard id {shard} is not below the shard count {}",
                self.shared.total
            )));
        }
        if self.shared.read().contains_key(&shard) {
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
            .shared
            .write()
            .remove(&shard)
            .ok_or(ClusterError::UnknownShard(shard))?;
        Ok(old.session())
    }

    /// Closes every shard with a resumable code, collects the events that
    /// were still on their way (until every shard is disconnected and the
    /// stream has been quiet for 100 ms, at most `timeout`), and exports
    /// every session (to the session store too, if there is one).
    pub async fn shutdown(mut self, timeout: Duration) -> Shutdown {
        for shard in self.shared.read().values() {
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
                    let stopped = self.shared.read().values().all(|shard| {
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
        let sessions = self.sessions();
        let mut store_error = None;
        if let Some(store) = &self.config.session_store {
            let ids = self.shard_ids();
            let changes: Vec<(u32, Option<Session>)> = ids
                .iter()
                .map(|id| (*id, sessions.get(id).cloned()))
                .collect();
            if let Err(error) = store.save(&changes).await {
                tracing::warn!(%error, "the session store did not take the sessions");
                store_error = Some(error);
            }
        }
        Shutdown {
            sessions,
            events,
            store_error,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The senders may outlive the cluster; the shards do not.
        self.shared.write().clear();
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
