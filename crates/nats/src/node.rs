//! One gateway process of a cluster of nodes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{FuturesOrdered, SelectAll};
use shardwire_cluster::{Configure, DEFAULT_API_BASE, Gateway, GatewayError, IDENTIFY_WINDOW};
use shardwire_codec::{Compression, Token};
use shardwire_shard::{
    EventSink, FatalError, IdentifyQueue, Session, Shard, ShardConfig, ShardEvent,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::NodeMetrics;
use twilight_model::gateway::Intents;

use crate::{
    Layout, Lease, Leases, Nats, NatsError, NatsQueue, SessionStore, event_subject, message_id,
};

/// How long JetStream remembers message ids: a resume that replays events
/// published less than this long ago is deduplicated.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Publishes awaiting JetStream's acknowledgement, across the node's
/// shards; more stop the intake until acknowledgements come.
const MAX_IN_FLIGHT: usize = 4096;
/// How long one publish may wait for room in the client's buffer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often acknowledged seqs are written to the session store.
const SESSION_FLUSH: Duration = Duration::from_millis(250);
/// Events a shard hands to the node before its reading pauses.
const SHARD_BUFFER: usize = 1024;
/// How many ticks an unheld range waits for a node under its fair share
/// before a node at its fair share takes it.
const ORPHAN_TICKS: u32 = 3;

/// How a node runs. Build with [`NodeConfig::new`], then set fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The bot token (redacted in `Debug`).
    pub token: Token,
    /// The gateway intents.
    pub intents: Intents,
    /// The API base `/gateway/bot` is fetched from.
    pub api_base: String,
    /// The NATS server, like `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// Names of subjects, stream and buckets.
    pub layout: Layout,
    /// This node's name, unique in the cluster (default: host and process
    /// id).
    pub node_id: String,
    /// The most shards this node runs.
    pub capacity: u32,
    /// Shards per leased range. Every node of a cluster must use the same.
    pub range_size: u32,
    /// The bot's shard count (default: what `/gateway/bot` recommends; the
    /// first node stores it and every later node follows it).
    pub shards: Option<u32>,
    /// How long a lease lives without renewal; it is renewed every third
    /// of it. A dead node's shards are taken over about this long after it
    /// died.
    pub lease_ttl: Duration,
    /// The identify window per bucket (Discord: 5 s; a simulator may use
    /// less).
    pub identify_window: Duration,
    /// Transport compression.
    pub compression: Compression,
    /// Adjusts each shard's configuration before it starts.
    pub configure: Option<Configure>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("token", &self.token)
            .field("intents", &self.intents)
            .field("api_base", &self.api_base)
            .field("nats_url", &crate::redact_url(&self.nats_url))
            .field("layout", &self.layout)
            .field("node_id", &self.node_id)
            .field("capacity", &self.capacity)
            .field("range_size", &self.range_size)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .field("identify_window", &self.identify_window)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// A node on Discord's API and the NATS server at `nats_url`: up to 16
    /// shards in ranges of 4, leases of 10 s.
    #[must_use]
    pub fn new(token: Token, intents: Intents, nats_url: impl Into<String>) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            token,
            intents,
            api_base: DEFAULT_API_BASE.to_owned(),
            nats_url: nats_url.into(),
            layout: Layout::default(),
            node_id: format!("{host}-{}", std::process::id()),
            capacity: 16,
            range_size: 4,
            shards: None,
            lease_ttl: Duration::from_secs(10),
            identify_window: IDENTIFY_WINDOW,
            compression: Compression::ZlibStream,
            configure: None,
        }
    }
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// NATS refused or did not answer.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// `/gateway/bot` failed.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A setting that cannot work.
    #[error("invalid node setting: {0}")]
    Invalid(String),
    /// The node's task panicked (a bug: please report it).
    #[error("the node's task failed: {0}")]
    Crashed(String),
    /// A shard stopped for good (a refused token, invalid intents, …):
    /// every shard of the bot would, so the node stops.
    #[error("shard {shard} stopped for good: {error}")]
    Fatal {
        /// The shard.
        shard: u32,
        /// Why.
        error: FatalError,
    },
}

/// A running node: it claims shard ranges up to its capacity, runs their
/// shards (resuming each from the session store), publishes their
/// dispatches to JetStream, and takes commands for them.
///
/// Dropping it stops it abruptly (like a crash: its leases lapse and other
/// nodes resume its shards); [`Node::shutdown`] hands its shards over at
/// once.
#[derive(Debug)]
pub struct Node {
    stop: watch::Sender<bool>,
    owned: watch::Receiver<Vec<u32>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
    node_id: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Node {
    /// Connects to NATS and `/gateway/bot`, agrees on the shard count, and
    /// starts claiming shards in the background.
    ///
    /// # Errors
    ///
    /// [`NodeError::Invalid`] for settings that cannot work;
    /// [`NodeError::Nats`] or [`NodeError::Gateway`] when a service fails.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        if config.range_size == 0 {
            return Err(NodeError::Invalid(
                "the range size must be at least 1".into(),
            ));
        }
        if config.capacity < config.range_size {
            return Err(NodeError::Invalid(format!(
                "a capacity of {} shards cannot hold one range of {}",
                config.capacity, config.range_size
            )));
        }
        if config.shards == Some(0) {
            return Err(NodeError::Invalid(
                "the shard count must be at least 1".into(),
            ));
        }
        let nats = Nats::connect(&config.nats_url, config.layout.clone()).await?;
        let gateway = Gateway::fetch_from(&config.api_base, &config.token).await?;
        let info = if gateway.age() > Duration::from_secs(5) {
            gateway.refresh().await?
        } else {
            gateway.info()
        };
        let sessions = nats.sessions().await?;
        let total = sessions
            .agree_total(config.shards.unwrap_or(info.shards).max(1))
            .await?;
        if let Some(asked) = config.shards
            && asked != total
        {
            return Err(NodeError::Invalid(format!(
                "this node was told {asked} shards, but the cluster runs {total}"
            )));
        }
        let limit = &info.session_start_limit;
        let queue = nats
            .identify_queue(
                limit.max_concurrency.max(1),
                config.identify_window,
                &config.node_id,
            )
            .await?;
        queue.seed_limit(limit.remaining, limit.reset_after).await?;
        let leases = nats.leases(config.lease_ttl, &config.node_id).await?;
        nats.events_stream(DUPLICATE_WINDOW).await?;
        let commands = nats
            .client()
            .subscribe(config.layout.commands_wildcard())
            .await
            .map_err(|error| NatsError::jetstream("subscribing to commands", error))?;
        let (stop, stop_rx) = watch::channel(false);
        let (owned_tx, owned) = watch::channel(Vec::new());
        let ranges = total.div_ceil(config.range_size);
        let node_id = config.node_id.clone();
        tracing::info!(
            node = %node_id,
            total,
            ranges,
            capacity = config.capacity,
            max_concurrency = limit.max_concurrency,
            "node started"
        );
        let runner = Runner {
            capacity_ranges: config.capacity / config.range_size,
            nats,
            queue: Arc::new(queue),
            leases,
            sessions,
            total,
            ranges,
            gateway_url: info.url.clone(),
            held: BTreeMap::new(),
            slots: HashMap::new(),
            next_generation: 0,
            events: SelectAll::new(),
            in_flight: FuturesOrdered::new(),
            queued: 0,
            unheld_ticks: HashMap::new(),
            owned_tx,
            gateway,
            limit_checked: Instant::now(),
            metrics: NodeMetrics::new(),
            config,
        };
        let task = tokio::spawn(runner.run(commands, stop_rx));
        Ok(Self {
            stop,
            owned,
            task: Some(task),
            node_id,
        })
    }

    /// This node's name.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.node_id
    }

    /// The shards this node runs now.
    #[must_use]
    pub fn shards(&self) -> Vec<u32> {
        self.owned.borrow().clone()
    }

    /// Waits until the set of shards this node runs changes; `false` once
    /// the node has stopped (then [`Node::wait`] tells why).
    pub async fn changed(&mut self) -> bool {
        self.owned.changed().await.is_ok()
    }

    /// Stops the node gracefully: closes its shards resumably, publishes
    /// what they delivered, stores their sessions and releases their
    /// leases, so other nodes resume them at once.
    ///
    /// # Errors
    ///
    /// Whatever stopped the node before it was asked to.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        self.wait_task().await
    }

    /// Waits until the node stops by itself (a fatal shard close), or
    /// forever.
    ///
    /// # Errors
    ///
    /// Why it stopped.
    pub async fn wait(mut self) -> Result<(), NodeError> {
        self.wait_task().await
    }

    async fn wait_task(&mut self) -> Result<(), NodeError> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(error) if error.is_cancelled() => Ok(()),
                Err(error) => Err(NodeError::Crashed(error.to_string())),
            },
            None => Ok(()),
        }
    }
}

/// A publish JetStream has yet to acknowledge.
#[derive(Clone)]
struct Outgoing {
    seq: u64,
    session_id: Arc<str>,
    resume_url: Arc<str>,
    subject: String,
    payload: Bytes,
    /// JetStream can never take it (over the server's `max_payload`): it is
    /// logged and passed over.
    skipped: bool,
}

impl Outgoing {
    /// The session to resume from once this event is stored.
    fn session(&self) -> Session {
        Session {
            session_id: self.session_id.to_string(),
            seq: self.seq,
            resume_url: self.resume_url.to_string(),
        }
    }
}

/// Why a publish did not go through.
enum Failure {
    /// NATS is away or slow: publish again.
    Retry(String),
    /// It can never be stored.
    Permanent(String),
}

/// What an acknowledgement future resolves to.
struct Acked {
    shard: u32,
    generation: u64,
    attempt: u32,
    seq: u64,
    outcome: Result<(), Failure>,
}

type AckFuture = Pin<Box<dyn Future<Output = Acked> + Send>>;

/// One shard's events as `(shard, generation, event)`.
type ShardEvents = Pin<Box<dyn futures_util::Stream<Item = (u32, u64, ShardEvent)> + Send>>;

/// One shard this node runs.
struct Slot {
    shard: Option<Shard>,
    generation: u64,
    /// The session the next dispatches belong to.
    session: Option<(Arc<str>, Arc<str>)>,
    /// The last dispatch JetStream acknowledged, with every earlier one.
    acked: Option<Session>,
    /// The session store's revision this node last wrote.
    revision: u64,
    dirty: bool,
    /// Published, not yet acknowledged, in order.
    in_flight: VecDeque<Outgoing>,
    attempt: u32,
    needs_retry: bool,
    /// Its events JetStream stored.
    published: metrics::Counter,
}

struct Runner {
    config: NodeConfig,
    nats: Nats,
    queue: Arc<NatsQueue>,
    leases: Leases,
    sessions: SessionStore,
    total: u32,
    ranges: u32,
    capacity_ranges: u32,
    gateway_url: String,
    held: BTreeMap<u32, Lease>,
    slots: HashMap<u32, Slot>,
    next_generation: u64,
    /// Every shard's events, tagged with its slot's generation: a stream
    /// ends when its shard's task has ended and delivered everything.
    events: SelectAll<ShardEvents>,
    in_flight: FuturesOrdered<AckFuture>,
    /// Events held in the slots until JetStream has them, across shards.
    queued: usize,
    unheld_ticks: HashMap<u32, u32>,
    owned_tx: watch::Sender<Vec<u32>>,
    gateway: Arc<Gateway>,
    limit_checked: Instant,
    metrics: NodeMetrics,
}

impl Runner {
    async fn run(
        mut self,
        mut commands: async_nats::Subscriber,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let tick_every = (self.config.lease_ttl / 6).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(SESSION_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Announce first and claim one tick later, so nodes started together
        // see each other before they divide the shards.
        if let Err(error) = self.leases.announce().await {
            tracing::warn!(%error, "cannot announce the node");
        }
        tick.tick().await;
        let result = loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break Ok(());
                    }
                }
                _ = tick.tick() => self.tick().await,
                _ = flush.tick() => self.flush_sessions().await,
                Some(acked) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_acked(acked),
                Some((shard, generation, event)) = self.events.next(), if self.takes_events() => {
                    if let Err(error) = self.on_event(shard, generation, event).await {
                        break Err(error);
                    }
                }
                Some(message) = commands.next() => self.on_command(message),
            }
        };
        self.stop().await;
        result
    }

    /// Renews, announces, refreshes the session start limit, claims. The
    /// leases come first, each renewal bounded in time, so nothing else
    /// delays noticing one that is about to lapse.
    async fn tick(&mut self) {
        self.drop_stale_leases();
        let ttl = self.config.lease_ttl;
        let ranges: Vec<u32> = self.held.keys().copied().collect();
        for range in ranges {
            let Some(mut lease) = self.held.get(&range).cloned() else {
                continue;
            };
            if lease.renewed_at.elapsed() < ttl / 3 {
                continue;
            }
            match tokio::time::timeout(ttl / 4, self.leases.renew(&mut lease)).await {
                Ok(Ok(())) => {
                    self.held.insert(range, lease);
                }
                Ok(Err(NatsError::Fenced { .. })) => {
                    tracing::warn!(range, "lease lost to another node");
                    self.lease_lost(range);
                }
                Ok(Err(error)) => tracing::warn!(range, %error, "cannot renew a lease"),
                Err(_) => tracing::warn!(range, "no answer to a lease renewal in time"),
            }
        }
        self.drop_stale_leases();
        if let Err(error) = self.leases.announce().await {
            tracing::warn!(%error, "cannot announce the node");
        }
        self.retry_publishes().await;
        self.refresh_limit().await;
        if let Err(error) = self.claim().await {
            tracing::warn!(%error, "cannot claim shards");
        }
    }

    /// Stops the shards of every lease that may lapse before it is renewed.
    fn drop_stale_leases(&mut self) {
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, lease)| !self.leases.is_fresh(lease))
            .map(|(range, _)| *range)
            .collect();
        for range in stale {
            tracing::warn!(range, "lease about to lapse unrenewed; stopping its shards");
            self.lease_lost(range);
        }
    }

    /// Once a minute, stores the day's session starts anew if Discord's
    /// reset has passed.
    async fn refresh_limit(&mut self) {
        if self.limit_checked.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.limit_checked = Instant::now();
        if !matches!(self.queue.remaining().await, Ok(None)) {
            return;
        }
        match self.gateway.refresh().await {
            Ok(info) => {
                let limit = &info.session_start_limit;
                if let Err(error) = self
                    .queue
                    .seed_limit(limit.remaining, limit.reset_after)
                    .await
                {
                    tracing::warn!(%error, "cannot store the session start limit");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot refresh /gateway/bot"),
        }
    }

    /// Claims unheld ranges up to this node's share.
    async fn claim(&mut self) -> Result<(), NodeError> {
        let held_count = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
        if held_count >= self.capacity_ranges {
            return Ok(());
        }
        let holders = self.leases.holders().await?;
        let unheld: Vec<u32> = (0..self.ranges)
            .filter(|range| !holders.contains_key(range))
            .collect();
        self.unheld_ticks.retain(|range, _| unheld.contains(range));
        for range in &unheld {
            *self.unheld_ticks.entry(*range).or_default() += 1;
        }
        if unheld.is_empty() {
            return Ok(());
        }
        let live = u32::try_from(self.leases.live_holders().await?.len())
            .unwrap_or(1)
            .max(1);
        let share = self.ranges.div_ceil(live).min(self.capacity_ranges);
        // Start from a place of this node's own, so nodes claiming at once
        // tend to ask for different ranges.
        let offset = stable_hash(&self.config.node_id) % u64::from(self.ranges.max(1));
        let mut order = unheld;
        order.sort_by_key(|range| {
            (u64::from(*range) + u64::from(self.ranges) - offset) % u64::from(self.ranges)
        });
        // One range per tick: nodes take turns.
        let Some(range) = order.into_iter().find(|range| {
            held_count < share || self.unheld_ticks.get(range).copied().unwrap_or(0) > ORPHAN_TICKS
        }) else {
            return Ok(());
        };
        let Some(lease) = self.leases.claim(range).await? else {
            return Ok(());
        };
        tracing::info!(range, revision = lease.revision, "claimed a shard range");
        self.held.insert(range, lease);
        for shard in self.range_shards(range) {
            match self.sessions.take(shard).await {
                Ok((session, revision)) => self.start_shard(shard, session, revision),
                Err(error) => {
                    tracing::warn!(shard, %error, "cannot take the shard's session; releasing the range");
                    let lease = self.held.get(&range).cloned();
                    self.lose(range);
                    if let Some(lease) = lease {
                        let _ = self.leases.release(lease).await;
                    }
                    return Err(error.into());
                }
            }
        }
        self.publish_owned();
        Ok(())
    }

    fn range_shards(&self, range: u32) -> std::ops::Range<u32> {
        let size = self.config.range_size;
        let start = range.saturating_mul(size);
        start..start.saturating_add(size).min(self.total)
    }

    fn start_shard(&mut self, id: u32, session: Option<Session>, revision: u64) {
        let config = &self.config;
        let mut shard_config = ShardConfig::new(
            config.token.clone(),
            config.intents,
            id,
            self.total,
            self.gateway_url.clone(),
        );
        shard_config.compression = config.compression;
        shard_config.session = session.clone();
        if let Some(configure) = &config.configure {
            configure(&mut shard_config);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let (sink, rx) = EventSink::channel(SHARD_BUFFER);
        let queue: Arc<dyn IdentifyQueue> = self.queue.clone();
        let shard = Shard::start_with_sink(shard_config, queue, sink);
        self.events.push(Box::pin(futures_util::stream::unfold(
            rx,
            move |mut rx| async move {
                let (id, event) = rx.recv().await?;
                Some(((id, generation, event), rx))
            },
        )));
        tracing::info!(
            shard = id,
            resume = session.is_some(),
            seq = session.as_ref().map(|s| s.seq),
            "starting shard"
        );
        self.slots.insert(
            id,
            Slot {
                shard: Some(shard),
                generation,
                session: session.as_ref().map(tag),
                acked: session,
                revision,
                dirty: false,
                in_flight: VecDeque::new(),
                attempt: 0,
                needs_retry: false,
                published: crate::metrics::published(id),
            },
        );
    }

    /// A lease was lost (fenced by another node, or about to lapse):
    /// counts it, and stops the range's shards.
    fn lease_lost(&mut self, range: u32) {
        self.metrics.lease_lost();
        self.lose(range);
    }

    /// Stops the shards of a range this node no longer holds. Their
    /// unacknowledged events are dropped: the next owner resumes from the
    /// stored seq and the gateway replays them.
    fn lose(&mut self, range: u32) {
        self.held.remove(&range);
        for shard in self.range_shards(range) {
            if let Some(slot) = self.slots.remove(&shard) {
                self.queued -= slot.in_flight.len();
                drop(slot.shard);
            }
        }
        self.publish_owned();
    }

    /// Whether to take the next event: a shard is running, and JetStream
    /// has not fallen too far behind.
    fn takes_events(&self) -> bool {
        !self.events.is_empty() && self.queued < MAX_IN_FLIGHT
    }

    fn publish_owned(&self) {
        self.metrics.leases_held(self.held.len());
        let mut owned: Vec<u32> = self.slots.keys().copied().collect();
        owned.sort_unstable();
        self.owned_tx.send_replace(owned);
    }

    async fn on_event(
        &mut self,
        shard: u32,
        generation: u64,
        event: ShardEvent,
    ) -> Result<(), NodeError> {
        let Some(slot) = self
            .slots
            .get_mut(&shard)
            .filter(|s| s.generation == generation)
        else {
            return Ok(());
        };
        match event {
            ShardEvent::Ready { session } => slot.session = Some(tag(&session)),
            ShardEvent::Dispatch {
                seq,
                event_type,
                json,
                ..
            } => {
                let Some((session_id, resume_url)) = slot.session.clone() else {
                    tracing::warn!(shard, seq, "a dispatch before any session; not published");
                    return Ok(());
                };
                let outgoing = Outgoing {
                    seq,
                    session_id,
                    resume_url,
                    subject: event_subject(&self.config.layout, shard, &event_type),
                    // No copy: the bytes share the JSON's buffer.
                    payload: Bytes::from_owner(json),
                    skipped: false,
                };
                slot.in_flight.push_back(outgoing.clone());
                self.queued += 1;
                if !slot.needs_retry {
                    let (generation, attempt) = (slot.generation, slot.attempt);
                    self.send_event(shard, generation, attempt, &outgoing).await;
                }
            }
            ShardEvent::Fatal(error) => {
                tracing::error!(shard, %error, "shard stopped for good");
                return Err(NodeError::Fatal { shard, error });
            }
            ShardEvent::Resumed => tracing::info!(shard, "resumed"),
            _ => {}
        }
        Ok(())
    }

    fn on_acked(&mut self, acked: Acked) {
        let Some(slot) = self
            .slots
            .get_mut(&acked.shard)
            .filter(|s| s.generation == acked.generation)
        else {
            return;
        };
        match acked.outcome {
            // Stored, whichever attempt published it: if it is the oldest
            // one waiting, the stored seq moves on.
            Ok(()) => {
                if slot
                    .in_flight
                    .front()
                    .is_some_and(|front| front.seq == acked.seq)
                {
                    if let Some(done) = slot.in_flight.pop_front() {
                        self.queued -= 1;
                        slot.published.increment(1);
                        slot.acked = Some(done.session());
                        slot.dirty = true;
                    }
                    self.settle(acked.shard);
                }
            }
            Err(failure) if acked.attempt == slot.attempt => {
                self.failed(acked.shard, acked.seq, failure);
            }
            Err(_) => {}
        }
    }

    /// A publish failed: a permanent failure passes the event over, any
    /// other has everything in flight published again on the next tick.
    fn failed(&mut self, shard: u32, seq: u64, failure: Failure) {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return;
        };
        match failure {
            Failure::Retry(reason) => {
                if !slot.needs_retry {
                    tracing::warn!(shard, seq, %reason, "publish failed; retrying");
                }
                slot.needs_retry = true;
            }
            Failure::Permanent(reason) => {
                tracing::error!(shard, seq, %reason, "JetStream cannot take this event; it is skipped");
                if let Some(item) = slot.in_flight.iter_mut().find(|item| item.seq == seq) {
                    item.skipped = true;
                }
                self.settle(shard);
            }
        }
    }

    /// Passes over the skipped events at the front, as if stored.
    fn settle(&mut self, shard: u32) {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return;
        };
        while slot.in_flight.front().is_some_and(|front| front.skipped) {
            if let Some(item) = slot.in_flight.pop_front() {
                self.queued -= 1;
                slot.acked = Some(item.session());
                slot.dirty = true;
            }
        }
    }

    /// Publishes one event and queues its acknowledgement; `false` when the
    /// shard must publish again later (the failure is recorded).
    async fn send_event(
        &mut self,
        shard: u32,
        generation: u64,
        attempt: u32,
        item: &Outgoing,
    ) -> bool {
        let sent_at = Instant::now();
        match publish(&self.nats, item).await {
            Ok(ack) => {
                let latency = self.metrics.ack_latency.clone();
                let ack = ack_future(shard, generation, attempt, item.seq, ack, sent_at, latency);
                self.in_flight.push_back(ack);
                true
            }
            Err(failure) => {
                let retry = matches!(failure, Failure::Retry(_));
                self.failed(shard, item.seq, failure);
                !retry
            }
        }
    }

    /// The ids of the shards whose slot is in this state.
    fn shards_where(&self, state: impl Fn(&Slot) -> bool) -> Vec<u32> {
        self.slots
            .iter()
            .filter(|(_, slot)| state(slot))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Publishes again, in order, everything a shard has in flight after a
    /// publish failed (JetStream drops what it already stored).
    async fn retry_publishes(&mut self) {
        for shard in self.shards_where(|slot| slot.needs_retry) {
            let Some(slot) = self.slots.get_mut(&shard) else {
                continue;
            };
            slot.attempt += 1;
            slot.needs_retry = false;
            let (generation, attempt) = (slot.generation, slot.attempt);
            let outgoing: Vec<Outgoing> = slot
                .in_flight
                .iter()
                .filter(|item| !item.skipped)
                .cloned()
                .collect();
            let mut sent = 0;
            for item in outgoing {
                if !self.send_event(shard, generation, attempt, &item).await {
                    break;
                }
                sent += 1;
            }
            crate::metrics::retried(shard, sent);
        }
    }

    /// Writes the acknowledged seqs to the session store.
    async fn flush_sessions(&mut self) {
        for shard in self.shards_where(|slot| slot.dirty) {
            let Some(slot) = self.slots.get_mut(&shard) else {
                continue;
            };
            let Some(session) = slot.acked.clone() else {
                continue;
            };
            match self.sessions.store(shard, &session, slot.revision).await {
                Ok(revision) => {
                    slot.revision = revision;
                    slot.dirty = false;
                }
                Err(NatsError::Fenced { .. }) => {
                    tracing::warn!(
                        shard,
                        "another node wrote this shard's session; stopping it"
                    );
                    let range = shard / self.config.range_size;
                    self.lease_lost(range);
                }
                Err(error) => tracing::warn!(shard, %error, "cannot store the session"),
            }
        }
    }

    fn on_command(&self, message: async_nats::Message) {
        let shard = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u32>().ok());
        let Some(sender) = shard
            .and_then(|shard| self.slots.get(&shard))
            .and_then(|slot| slot.shard.as_ref())
            .map(Shard::sender)
        else {
            return;
        };
        let client = self.nats.client().clone();
        tokio::spawn(async move {
            let answer = match sender
                .send(shardwire_shard::Outgoing::json(message.payload.to_vec()))
                .await
            {
                Ok(()) => Bytes::from_static(b"ok"),
                Err(error) => Bytes::from(format!("error: {error}")),
            };
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, answer).await;
            }
        });
    }

    /// Graceful stop: closes the shards resumably, publishes what they had
    /// delivered, stores the sessions, releases the leases.
    async fn stop(&mut self) {
        for slot in self.slots.values_mut() {
            drop(slot.shard.take());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let settled = self.events.is_empty() && self.in_flight.is_empty();
            if settled || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                Some(acked) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_acked(acked),
                Some((shard, generation, event)) = self.events.next(), if self.takes_events() => {
                    let _ = self.on_event(shard, generation, event).await;
                }
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        // With NATS away, each of these would wait for its own timeout:
        // bound them together. What is not done lapses by itself.
        let hand_over = async {
            self.flush_sessions().await;
            let held = std::mem::take(&mut self.held);
            for (_, lease) in held {
                match self.leases.release(lease).await {
                    Ok(_) => self.metrics.handed_over(),
                    Err(error) => {
                        tracing::warn!(%error, "cannot release a lease; it lapses by itself");
                    }
                }
            }
            let _ = self.leases.withdraw().await;
        };
        if tokio::time::timeout(Duration::from_secs(10), hand_over)
            .await
            .is_err()
        {
            tracing::warn!(
                "NATS did not answer while handing over; the leases lapse by themselves"
            );
        }
        self.slots.clear();
        self.publish_owned();
        tracing::info!(node = %self.config.node_id, "node stopped");
    }
}

async fn publish(nats: &Nats, outgoing: &Outgoing) -> Result<PublishAckFuture, Failure> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message_id(&outgoing.session_id, outgoing.seq).as_str(),
    );
    let send = nats.jetstream().publish_with_headers(
        outgoing.subject.clone(),
        headers,
        outgoing.payload.clone(),
    );
    // While NATS is away the client's buffer fills; the node must not
    // wait on it forever (its leases need attention meanwhile).
    match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
        Ok(sent) => sent.map_err(classify),
        Err(_) => Err(Failure::Retry(format!(
            "not sent within {PUBLISH_TIMEOUT:?}"
        ))),
    }
}

fn classify(error: async_nats::jetstream::context::PublishError) -> Failure {
    use async_nats::jetstream::context::PublishErrorKind;
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Failure::Permanent(error.to_string()),
        _ => Failure::Retry(error.to_string()),
    }
}

fn ack_future(
    shard: u32,
    generation: u64,
    attempt: u32,
    seq: u64,
    ack: PublishAckFuture,
    sent_at: Instant,
    latency: metrics::Histogram,
) -> AckFuture {
    Box::pin(async move {
        let outcome = ack.await.map(|_| ()).map_err(classify);
        if outcome.is_ok() {
            latency.record(sent_at.elapsed().as_secs_f64());
        }
        Acked {
            shard,
            generation,
            attempt,
            seq,
            outcome,
        }
    })
}

/// What each published event carries of its session: the id (for the
/// message id) and the resume URL (for the stored session).
fn tag(session: &Session) -> (Arc<str>, Arc<str>) {
    (
        Arc::from(session.session_id.as_str()),
        Arc::from(session.resume_url.as_str()),
    )
}

/// FNV-1a: a hash that is the same in every process.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
