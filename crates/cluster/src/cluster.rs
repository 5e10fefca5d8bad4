//! Many shards as one: spawning, one merged event stream, routing by guild,
//! member-chunk collection and lifecycle.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shardwire_codec::{Compression, EventFilter, Token, UpdatePresence};
use shardwire_shard::{
    EventSink, IdentifyQueue, SendError, Session, Shard, ShardConfig, ShardEvent, ShardState,
    SinkEvents,
};
use tokio::time::Instant;
use twilight_model::gateway::event::EventType;
use twilight_model::gateway::{Intents, ShardId};

use crate::metrics::ReshardMetrics;
use crate::reshard::{Order, Reshard, ReshardControl, Step};
use crate::sender::{ClusterSender, Generation, Shared};
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
    /// Reshard without being asked (see [`Cluster::reshard`]) when a shard
    /// is closed with 4011, when a READY lists more than
    /// [`ClusterConfig::reshard_guild_threshold`] guilds, or when the
    /// periodic check ([`ClusterConfig::reshard_check_interval`]) finds
    /// `/gateway/bot` recommending more shards than run: to the recommended
    /// count (at least one more than now for a 4011, enough for 1,000
    /// guilds a shard for a crowded READY), rounded up to a multiple of
    /// `max_concurrency` when that is over 1. Off by default: a 4011 is
    /// then fatal to its shard.
    pub auto_reshard: bool,
    /// The guilds in one shard's READY past which
    /// [`ClusterConfig::auto_reshard`] reshards (2,000: 80% of Discord's
    /// 2,500 a shard).
    pub reshard_guild_threshold: u32,
    /// How often [`ClusterConfig::auto_reshard`] checks `/gateway/bot`'s
    /// recommendation; never by default.
    pub reshard_check_interval: Option<Duration>,
    /// How long after a reshard's switch both generations' copies of an
    /// event are matched (5 s): longer than the skew between the two
    /// generations' streams may be. The old generation closes when it has
    /// passed.
    pub reshard_overlap: Duration,
    /// How long a reshard may take to switch (every new shard READY) before
    /// it is given up as by [`Cluster::cancel_reshard`]: its new shards
    /// close, the running generation goes on, and the stream shows
    /// [`ShardEvent::ReshardAbandoned`] naming the shards not READY. By
    /// default (`None`) twice the new generation's identify rounds plus a
    /// minute: `2 × ceil(to / max_concurrency) × identify_window + 60 s`
    /// (100 s for 8 shards at `max_concurrency` 2, some 12 minutes for 1,000
    /// at 16). `Some(Duration::MAX)` waits for ever.
    pub reshard_deadline: Option<Duration>,
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
            .field("auto_reshard", &self.auto_reshard)
            .field("reshard_deadline", &self.reshard_deadline)
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
            auto_reshard: false,
            reshard_guild_threshold: 2_000,
            reshard_check_interval: None,
            reshard_overlap: Duration::from_secs(5),
            reshard_deadline: None,
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
    /// A reshard is already under way; wait for its `Resharded`, or
    /// cancel it ([`Cluster::cancel_reshard`]).
    #[error("a reshard is already under way; wait for it to switch, or cancel it")]
    ReshardUnderWay,
    /// The cluster has been dropped.
    #[error("the cluster has stopped")]
    Stopped,
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
    gateway_url: String,
    shared: Arc<Shared>,
    sender: ClusterSender,
    sink: EventSink,
    events: SinkEvents,
    queue: Arc<dyn IdentifyQueue>,
    /// Told when a session starts or ends, for the session store.
    sessions_changed: Arc<tokio::sync::Notify>,
    config: ClusterConfig,
    /// Reshards asked for by the senders and the shards' taps.
    orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    reshard: Option<Box<Reshard>>,
    /// Events a reshard that ended left to hand out.
    leftover: VecDeque<(u32, ShardEvent)>,
    metrics: ReshardMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("total", &self.total())
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
        let whole = ids.len() == total as usize;
        let (control, orders) = ReshardControl::new(whole);
        let shared = Arc::new(Shared::new(total, gateway, control));
        let metrics = ReshardMetrics::new();
        metrics.generations(total, 0);
        let mut cluster = Self {
            gateway_url: info.url.clone(),
            sender: ClusterSender::new(shared.clone()),
            shared,
            sink,
            events,
            queue,
            sessions_changed: Arc::default(),
            config,
            orders,
            reshard: None,
            leftover: VecDeque::new(),
            metrics,
        };
        // The sessions the shards resume: what later saves are measured from.
        let resumed: std::collections::BTreeMap<u32, Session> = ids
            .iter()
            .filter_map(|id| Some((*id, sessions.remove(id)?)))
            .collect();
        for id in ids {
            cluster.spawn(id, resumed.get(&id).cloned());
        }
        if cluster.config.auto_reshard
            && let Some(interval) = cluster.config.reshard_check_interval
        {
            tokio::spawn(crate::reshard::keep_checking(
                Arc::downgrade(&cluster.shared),
                interval,
            ));
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

    /// Starts a shard of the running generation.
    fn spawn(&mut self, id: u32, session: Option<Session>) {
        let total = self.total();
        let shard = self.start_shard(id, total, session, &self.sink);
        self.shared.write().shards.insert(id, shard);
    }

    /// Starts shard `id` of `total`, sending into `sink`.
    fn start_shard(
        &self,
        id: u32,
        total: u32,
        session: Option<Session>,
        sink: &EventSink,
    ) -> Shard {
        let config = &self.config;
        let mut shard_config = ShardConfig::new(
            config.token.clone(),
            config.intents,
            id,
            total,
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
        let auto = config
            .auto_reshard
            .then(|| (Arc::downgrade(&self.shared), config.reshard_guild_threshold));
        let tap: shardwire_shard::Tap = Arc::new(move |_shard, event| {
            if matches!(event, ShardEvent::Ready { .. } | ShardEvent::Fatal(_)) {
                changed.notify_one();
            }
            if let Some((shared, threshold)) = &auto
                && let Some(trigger) = crate::reshard::trigger_of(total, *threshold, &event)
                && let Some(shared) = shared.upgrade()
            {
                shared.control.order(Order::Auto(trigger));
            }
            let event = chunks.tap(event)?;
            if let ShardEvent::Dispatch { event_type, .. } = &event
                && !wants(&filter, event_type)
            {
                return None;
            }
            Some(event)
        });
        let sink = sink.clone().with_tap(tap);
        Shard::start_with_sink(shard_config, self.queue.clone(), sink)
    }

    /// The next event of any shard, tagged with its id; in order within
    /// each shard. It waits while the cluster runs (`None` never comes
    /// while the cluster is alive).
    ///
    /// During a reshard it also starts the new generation, switches to it
    /// and merges the two streams around the switch (see
    /// [`Cluster::reshard`]), so keep taking events.
    pub async fn next_event(&mut self) -> Option<(u32, ShardEvent)> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u32, ShardEvent)>> {
        loop {
            while let Poll::Ready(Some(order)) = self.orders.poll_recv(cx) {
                self.obey(order);
            }
            if let Some(event) = self.leftover.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.reshard.is_none() {
                return self.events.poll_recv(cx);
            }
            match self.poll_reshard(cx) {
                Poll::Ready(Some(event)) => return Poll::Ready(Some(event)),
                // The reshard ended: on with the one generation.
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Both generations' events through the overlap; `Ready(None)` once the
    /// reshard has ended.
    fn poll_reshard(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u32, ShardEvent)>> {
        loop {
            let Some(reshard) = self.reshard.as_deref_mut() else {
                return Poll::Ready(None);
            };
            if let Some(event) = reshard.overlap.pop() {
                return Poll::Ready(Some(event));
            }
            let now = Instant::now();
            reshard.overlap.handle_timeout(now);
            if reshard.overlap.is_done() {
                let _ = self.end_overlap(Duration::MAX);
                return Poll::Ready(None);
            }
            if let Some(reason) = reshard.overdue(now) {
                let _ = self.abandon(Duration::MAX, reason);
                return Poll::Ready(None);
            }
            let switched = reshard.overlap.switched();
            let mut step = Step::Go;
            let mut moved = false;
            // Before the switch the cluster's own stream is the old
            // generation's; after it, the new one's.
            if let Poll::Ready(Some((shard, event))) = self.events.poll_recv(cx) {
                moved = true;
                if switched {
                    step = reshard.on_new(shard, event);
                } else {
                    reshard.overlap.old(now, shard, event);
                }
            }
            if let Poll::Ready(Some((shard, event))) = reshard.other_events.poll_recv(cx) {
                moved = true;
                if switched {
                    reshard.overlap.old(now, shard, event);
                } else {
                    step = reshard.on_new(shard, event);
                }
            }
            match step {
                Step::Go => {}
                Step::Switch => self.switch(),
                Step::Fail(reason) => {
                    let _ = self.abandon(Duration::MAX, reason);
                }
            }
            if moved {
                continue;
            }
            let Some(reshard) = self.reshard.as_deref_mut() else {
                return Poll::Ready(None);
            };
            match reshard.next_wake() {
                Some(at) if at <= now => continue,
                Some(at) => {
                    reshard.timer.as_mut().reset(at);
                    if reshard.timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
                None => return Poll::Pending,
            }
        }
    }

    fn obey(&mut self, order: Order) {
        match order {
            Order::Start(to) => self.begin(to),
            Order::Auto(trigger) => {
                if self.config.auto_reshard && self.reshard.is_none() {
                    tokio::spawn(crate::reshard::auto(self.shared.clone(), trigger));
                }
            }
            Order::Cancel(answer) => {
                let _ = answer.send(self.cancel());
            }
        }
    }

    /// Gives up a reshard that has not switched; whether there was one.
    fn cancel(&mut self) -> bool {
        if self
            .reshard
            .as_deref()
            .is_none_or(|reshard| reshard.overlap.switched())
        {
            return false;
        }
        let _ = self.abandon(Duration::MAX, "cancelled".into());
        true
    }

    /// Starts the new generation of a reshard asked for and checked.
    fn begin(&mut self, to: u32) {
        if self.reshard.is_some() {
            return;
        }
        let from = self.total();
        let (sink, events) = EventSink::channel(EVENT_BUFFER);
        let mut next = Generation::new(to);
        for id in 0..to {
            let shard = self.start_shard(id, to, None, &sink);
            next.shards.insert(id, shard);
        }
        self.metrics.generations(from, to);
        tracing::info!(
            from,
            to,
            "resharding: a new generation identifies beside the running one"
        );
        let window = self.config.reshard_overlap;
        let deadline = self.config.reshard_deadline.unwrap_or_else(|| {
            let max_concurrency = self
                .shared
                .gateway
                .info()
                .session_start_limit
                .max_concurrency;
            crate::reshard::default_deadline(to, max_concurrency, self.config.identify_window)
        });
        let mut reshard = Reshard::new(from, next, events, sink, window, deadline);
        // A shard already stopped (the 4011 that started this, say) sends
        // nothing more: its guilds come from the new generation at once.
        let running = self.shared.read();
        for id in 0..from {
            let stopped = running
                .shards
                .get(&id)
                .is_none_or(|shard| shard.status() == ShardState::FatallyClosed);
            if stopped {
                reshard.overlap.old_shard_stopped(id);
            }
        }
        drop(running);
        self.reshard = Some(Box::new(reshard));
    }

    /// Every new shard is READY: the generations trade places.
    fn switch(&mut self) {
        let Some(reshard) = self.reshard.as_deref_mut() else {
            return;
        };
        let now = Instant::now();
        let (from, to) = (reshard.from, reshard.to);
        let took = now.saturating_duration_since(reshard.started);
        reshard
            .overlap
            .push(0, ShardEvent::Resharded { from, to, took });
        std::mem::swap(&mut *self.shared.write(), &mut reshard.other);
        std::mem::swap(&mut self.events, &mut reshard.other_events);
        std::mem::swap(&mut self.sink, &mut reshard.other_sink);
        reshard.overlap.switch(now);
        self.metrics.switched(took);
        self.metrics.generations(to, 0);
        self.sessions_changed.notify_one();
        tracing::info!(from, to, ?took, "resharded: the new generation delivers");
    }

    /// The overlap is over: the old generation closes, its sessions ended.
    fn end_overlap(&mut self, grace: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let reshard = self.reshard.take()?;
        let stats = reshard.overlap.stats();
        tracing::info!(
            from = reshard.from,
            to = reshard.to,
            from_old = stats.from_old,
            from_new = stats.from_new,
            copies = stats.copies,
            cut_by_window = stats.cut_by_window,
            untracked = stats.untracked,
            "the old generation closes"
        );
        Some(self.wind_up(reshard, grace))
    }

    /// Gives a reshard up before its switch, for `reason`: the new
    /// generation closes and the running one goes on as if nothing had
    /// happened; the stream shows [`ShardEvent::ReshardAbandoned`].
    fn abandon(&mut self, grace: Duration, reason: String) -> Option<tokio::task::JoinHandle<()>> {
        let reshard = self.reshard.take()?;
        let (from, to) = (reshard.from, reshard.to);
        tracing::warn!(from, to, %reason, "the reshard is given up; the running generation stays");
        self.metrics.generations(from, 0);
        // What it held came from the old stream as well.
        let retiring = self.wind_up(reshard, grace);
        self.leftover
            .push_back((0, ShardEvent::ReshardAbandoned { from, to, reason }));
        Some(retiring)
    }

    /// Ends a reshard taken out of the cluster: what its overlap still has
    /// to hand out goes first, its copies are counted, and the generation
    /// not kept closes (within `grace`).
    fn wind_up(
        &mut self,
        mut reshard: Box<Reshard>,
        grace: Duration,
    ) -> tokio::task::JoinHandle<()> {
        self.leftover
            .extend(std::iter::from_fn(|| reshard.overlap.pop()));
        self.metrics.copies(reshard.overlap.stats().copies);
        self.shared.control.release();
        crate::reshard::retire(reshard.other, reshard.other_events, grace)
    }

    /// Reshards to `to` shards while the bot keeps running: a second
    /// generation of `to` shards identifies through the identify queue
    /// beside the running one, which keeps delivering; once every new shard
    /// is READY the cluster switches: commands go to the new generation,
    /// and each guild's events come from it as soon as the two
    /// generations' streams of that guild line up. The old generation
    /// closes (its sessions ended) once [`ClusterConfig::reshard_overlap`]
    /// has passed.
    ///
    /// The stream shows it as [`ShardEvent::Resharding`], then
    /// [`ShardEvent::Resharded`] at the switch; the new generation's READYs,
    /// GUILD_CREATEs and (before the switch) lifecycle events come as
    /// [`ShardEvent::FromReshard`].
    ///
    /// **Nothing is lost or doubled**: each guild's events come from the
    /// old generation until its two streams line up and from the new one
    /// after, and an event both deliver (the same name and `d` bytes, or
    /// the same `d.id` for a create such as MESSAGE_CREATE; in order) comes
    /// out once, as long as the two generations' streams are
    /// less than [`ClusterConfig::reshard_overlap`] apart. Events are in
    /// order per guild; across guilds of one shard, not around the switch.
    ///
    /// A reshard that cannot finish (a new shard's identify refused or
    /// fatal, or no switch within [`ClusterConfig::reshard_deadline`])
    /// closes the new generation and leaves the running one, and the stream
    /// shows [`ShardEvent::ReshardAbandoned`] with the reason; so do
    /// [`Cluster::cancel_reshard`], and [`Cluster::shutdown`] before the
    /// switch, which then exports the running generation's sessions.
    ///
    /// A session belongs to its shard count: once switched, start the next
    /// run with the new count ([`ShardSpec::Recommended`] follows Discord)
    /// for the new generation's sessions to resume.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Gateway`] when fewer session starts remain than `to`
    /// (with the figures; nothing starts) or `/gateway/bot` fails;
    /// [`ClusterError::InvalidShards`] for a count of 0 or the current one,
    /// or a cluster that runs only some of the bot's shards;
    /// [`ClusterError::ReshardUnderWay`].
    pub async fn reshard(&mut self, to: u32) -> Result<(), ClusterError> {
        crate::reshard::ask(&self.shared, to).await?;
        while let Ok(order) = self.orders.try_recv() {
            self.obey(order);
        }
        Ok(())
    }

    /// Gives up the reshard under way if it has not switched yet: its new
    /// shards close with 1000 (their sessions ended), the running
    /// generation goes on, and the stream shows
    /// [`ShardEvent::ReshardAbandoned`]; another reshard may then start.
    /// Returns whether there was one to give up: after the switch it does
    /// nothing and returns false (the old generation closes by itself once
    /// the overlap has passed). A reshard asked for through a sender whose
    /// checks are still running (its `reshard` has not returned) is not
    /// under way yet.
    pub fn cancel_reshard(&mut self) -> bool {
        while let Ok(order) = self.orders.try_recv() {
            self.obey(order);
        }
        self.cancel()
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
        &self.shared.gateway
    }

    /// The bot's total shard count (the new one from a reshard's switch).
    #[must_use]
    pub fn total(&self) -> u32 {
        self.shared.read().total
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
            .shards
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
        let total = self.total();
        if shard >= total {
            return Err(ClusterError::InvalidShards(format!(
                "shard id {shard} is not below the shard count {total}"
            )));
        }
        if self.shared.read().shards.contains_key(&shard) {
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
            .shards
            .remove(&shard)
            .ok_or(ClusterError::UnknownShard(shard))?;
        Ok(old.session())
    }

    /// Closes every shard with a resumable code, collects the events that
    /// were still on their way (until every shard is disconnected and the
    /// stream has been quiet for 100 ms, at most `timeout`), and exports
    /// every session (to the session store too, if there is one).
    ///
    /// A reshard before its switch is given up (the new generation's
    /// sessions end); after it, the old generation closes at once.
    pub async fn shutdown(mut self, timeout: Duration) -> Shutdown {
        let retiring = match self.reshard.as_deref_mut() {
            Some(reshard) if reshard.overlap.switched() => {
                reshard.overlap.finish();
                self.end_overlap(timeout)
            }
            Some(_) => self.abandon(timeout, "the cluster shuts down".into()),
            None => None,
        };
        if let Some(retiring) = retiring {
            let _ = retiring.await;
        }
        for shard in self.shared.read().shards.values() {
            shard.disconnect(shardwire_shard::RESUMABLE_CLOSE);
        }
        let mut events: Vec<(u32, ShardEvent)> = self.leftover.drain(..).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let quiet = Duration::from_millis(100);
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(_) => {
                    let stopped = self.shared.read().shards.values().all(|shard| {
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
        self.shared.write().shards.clear();
    }
}

impl futures_core::Stream for Cluster {
    type Item = (u32, ShardEvent);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_event(cx)
    }
}

/// Whether the filter lets a dispatch of this name through; unknown names
/// pass only when everything does.
fn wants(filter: &EventFilter, event_type: &str) -> bool {
    filter.is_all() || EventType::try_from(event_type).is_ok_and(|t| filter.wants(t))
}
