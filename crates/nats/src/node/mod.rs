//! One gateway process of a cluster of nodes: [`Node`] and its task.
//!
//! - `config.rs`: [`NodeConfig`];
//! - `claim.rs`: leases (renewing, and claiming or handing over as
//!   `balance.rs` decides);
//! - `handover.rs`: a range handed over while the node runs;
//! - `publish.rs`: dispatches into JetStream, and the stored seq that
//!   follows their acknowledgements (`acks.rs`: JetStream's answers);
//! - `reshard.rs`: a reshard carried out for the ranges held.

mod acks;
mod balance;
mod claim;
mod config;
mod handover;
mod publish;
mod reshard;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SelectAll;
use futures_util::{FutureExt, StreamExt};
use shardwire_cluster::{Gateway, GatewayError};
use shardwire_shard::{
    EventSink, FatalError, IdentifyQueue, Session, Shard, ShardConfig, ShardEvent,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::NodeMetrics;
use crate::{Lease, Leases, Nats, NatsError, NatsQueue, Reshard, SessionStore};

use self::acks::Acks;
pub(crate) use self::config::DEFAULT_DEDUP_WINDOW;
pub use self::config::NodeConfig;
use self::publish::{Outgoing, Stored, Subjects, tag};

/// Publishes awaiting JetStream's acknowledgement, across the node's
/// shards; more stop the intake until acknowledgements come.
const MAX_IN_FLIGHT: usize = 4096;
/// Events (or acknowledgements) taken at once before the task looks at
/// its timers and commands again.
const DRAIN: usize = 64;
/// How long one publish may wait for room in the client's buffer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often acknowledged seqs are written to the session store.
const SESSION_FLUSH: Duration = Duration::from_millis(250);
/// Events a shard hands to the node before its reading pauses.
const SHARD_BUFFER: usize = 1024;
/// JSON a shard holds for the node beyond that while JetStream lags, before
/// it stops reading (a shard alone holds 64 MiB): past it the gateway's
/// socket holds the rest, and what a resume could replay is not kept twice.
const SHARD_PENDING_BYTES: usize = 4 * 1024 * 1024;
/// Set in the slot key of a new generation's shard while its range
/// merges, beside the old shard of the same id.
const NEXT: u32 = 1 << 31;
/// How long a handover waits for its shards to close and for JetStream to
/// take what they delivered.
const HANDOVER_LIMIT: Duration = Duration::from_secs(5);

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
    sessions: SessionStore,
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
        config.check()?;
        let nats = Nats::connect(&config.nats_url, config.layout.clone())
            .await?
            .with_replicas(config.replicas)?;
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
        let base = sessions.agree_base(total).await?;
        let range_shards = shards_per_range(config.range_size, base, total);
        if config.capacity < range_shards {
            return Err(NodeError::Invalid(format!(
                "a capacity of {} shards cannot hold one range of {range_shards} (the cluster runs {total}): \
                 raise the capacity",
                config.capacity
            )));
        }
        let capacity = capacity_ranges(config.capacity, config.range_size, base, total);
        let limit = &info.session_start_limit;
        let queue = nats
            .identify_queue(
                limit.max_concurrency.max(1),
                config.identify_window,
                &config.node_id,
            )
            .await?;
        queue.seed_limit(limit.remaining, limit.reset_after).await?;
        let leases = nats
            .leases(config.lease_ttl, &config.node_id)
            .await?
            .with_capacity(capacity);
        nats.events_stream(config.dedup_window).await?;
        let acks = Acks::subscribe(nats.client()).await?;
        let commands = nats
            .client()
            .subscribe(config.layout.commands_wildcard())
            .await
            .map_err(|error| NatsError::jetstream("subscribing to commands", error))?;
        let (stop, stop_rx) = watch::channel(false);
        let (owned_tx, owned) = watch::channel(Vec::new());
        let ranges = base.div_ceil(config.range_size);
        let node_id = config.node_id.clone();
        tracing::info!(
            node = %node_id,
            total,
            ranges,
            capacity = config.capacity,
            max_concurrency = limit.max_concurrency,
            "node started"
        );
        let queue = Arc::new(queue);
        let handle_sessions = sessions.clone();
        let runner = Runner {
            capacity_ranges: capacity,
            nats,
            queue: queue.clone(),
            leases,
            sessions,
            total,
            ranges,
            gateway_url: info.url.clone(),
            held: BTreeMap::new(),
            slots: HashMap::default(),
            next_generation: 0,
            events: SelectAll::new(),
            acks,
            queued: 0,
            unheld_ticks: HashMap::new(),
            handing_over: BTreeMap::new(),
            cooling: BTreeMap::new(),
            base,
            reshard: None,
            reshards: HashMap::new(),
            resharded: std::collections::BTreeSet::new(),
            unmarked: std::collections::BTreeSet::new(),
            owned_tx,
            gateway,
            limit_checked: Instant::now(),
            metrics: NodeMetrics::new(),
            config,
        };
        let task = tokio::spawn(runner.run(commands, stop_rx));
        Ok(Self {
            sessions: handle_sessions,
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

    /// Reshards the whole cluster to `to` shards with no downtime, through
    /// the sessions bucket: every node carries it out for the ranges it
    /// holds. A range starts its new shards beside the old ones, and merges
    /// each guild's two streams until its new shards are READY and the
    /// overlap window has passed. Then it closes the old shards. Each
    /// guild's events are stored once, in order, while its two streams are
    /// less than [`NodeConfig::reshard_overlap`] apart.
    ///
    /// `to` must be a multiple of the shard count, so that each guild's
    /// two streams reach the same node. It returns once the reshard is
    /// recorded; [`Node::shards`] follows it.
    ///
    /// [`SessionStore::request_reshard`] does the same without a node (the
    /// `shardwire reshard` command).
    ///
    /// # Errors
    ///
    /// [`NodeError::Nats`] with [`NatsError::Invalid`] for a count that is
    /// not a multiple of the current one, too few session starts left
    /// today, or a reshard already under way; [`NodeError::Nats`] when NATS
    /// does not answer.
    pub async fn reshard(&self, to: u32) -> Result<(), NodeError> {
        self.sessions.request_reshard(to).await?;
        Ok(())
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

/// One shard's events as `(shard, generation, event)`, then `None` for the
/// event once the shard's task has ended.
/// An event of slot key and generation; `None` once its shard has ended.
type TaggedEvent = (u32, u64, Option<ShardEvent>);
type ShardEvents = Pin<Box<dyn futures_util::Stream<Item = TaggedEvent> + Send>>;

/// One shard this node runs.
struct Slot {
    shard: Option<Shard>,
    generation: u64,
    /// The session the next dispatches belong to.
    session: Option<(Arc<str>, Arc<str>)>,
    /// The last dispatch JetStream acknowledged, with every earlier one.
    acked: Option<Stored>,
    /// The session store's revision this node last wrote.
    revision: u64,
    dirty: bool,
    /// Published, not yet acknowledged, in order.
    in_flight: VecDeque<Outgoing>,
    /// Events queued in it so far: the next one's `Outgoing::nth`.
    enqueued: u64,
    attempt: u32,
    needs_retry: bool,
    /// Its events JetStream stored.
    published: metrics::Counter,
    /// Its shard's task has ended and every event it delivered was taken.
    ended: bool,
    /// Its events go through a reshard's merge, out of their order: acks
    /// do not move the stored seq.
    merged: bool,
    /// The last dispatch it delivered.
    last_seq: u64,
    /// Its event subjects, by event name.
    subjects: Subjects,
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
    /// By slot key, hashed cheaply: they are looked up several times an
    /// event, and the node makes the keys itself.
    slots: HashMap<u32, Slot, BuildHasherDefault<SlotHasher>>,
    next_generation: u64,
    /// Every shard's events, tagged with its slot's generation: a stream
    /// ends when its shard's task has ended and delivered everything.
    events: SelectAll<ShardEvents>,
    /// Publishes waiting for JetStream's answer.
    acks: Acks,
    /// Events held in the slots until JetStream has them, across shards.
    queued: usize,
    unheld_ticks: HashMap<u32, u32>,
    /// Ranges being handed over, with when to give up waiting for their
    /// shards to close and their events to be stored.
    handing_over: BTreeMap<u32, Instant>,
    /// Ranges this node handed over, not to be claimed back before then.
    cooling: BTreeMap<u32, Instant>,
    /// The cluster's first shard count, which ranges divide.
    base: u32,
    /// The reshard under way, as this node follows it.
    reshard: Option<Reshard>,
    /// Held ranges merging their two generations.
    reshards: HashMap<u32, reshard::RangeReshard>,
    /// Held ranges that run the new generation alone, the reshard not over.
    resharded: std::collections::BTreeSet<u32>,
    /// Of those, the ones not marked resharded in the store yet.
    unmarked: std::collections::BTreeSet<u32>,
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
                Some(reply) = self.acks.replies.next() => self.on_replies(&reply),
                Some(first) = self.events.next(), if self.takes_events() => {
                    if let Err(error) = self.take_events(first).await {
                        break Err(error);
                    }
                }
                Some(message) = commands.next() => self.on_command(message),
            }
            if !self.handing_over.is_empty() {
                self.finish_handovers().await;
            }
        };
        self.stop().await;
        result
    }

    /// Takes `first` and the events ready behind it, up to [`DRAIN`], without
    /// a trip through the task's `select!` for each.
    async fn take_events(&mut self, first: TaggedEvent) -> Result<(), NodeError> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some((key, generation, event)) = next {
            match event {
                Some(event) => self.on_event(key, generation, event).await?,
                None => self.on_ended(key, generation),
            }
            taken += 1;
            next = if taken < DRAIN && self.takes_events() {
                // Polled with a waker that does nothing: the `select!` polls
                // the stream again with the task's own before it sleeps.
                self.events.next().now_or_never().flatten()
            } else {
                None
            };
        }
        Ok(())
    }

    /// Reads `first` and the answers ready behind it, up to [`DRAIN`].
    fn on_replies(&mut self, first: &async_nats::Message) {
        self.on_reply(first);
        for _ in 1..DRAIN {
            match self.acks.replies.next().now_or_never() {
                Some(Some(reply)) => self.on_reply(&reply),
                _ => break,
            }
        }
    }

    /// Starts shard `key` (less [`NEXT`]) of `total` under slot `key`.
    fn start_shard_of(&mut self, key: u32, total: u32, session: Option<Session>, revision: u64) {
        let id = key & !NEXT;
        let config = &self.config;
        let mut shard_config = ShardConfig::new(
            config.token.clone(),
            config.intents,
            id,
            total,
            self.gateway_url.clone(),
        );
        shard_config.compression = config.compression;
        shard_config.session = session.clone();
        shard_config.max_pending_bytes = SHARD_PENDING_BYTES;
        if let Some(configure) = &config.configure {
            configure(&mut shard_config);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let (sink, rx) = EventSink::channel(SHARD_BUFFER);
        let queue: Arc<dyn IdentifyQueue> = self.queue.clone();
        let shard = Shard::start_with_sink(shard_config, queue, sink);
        // Then one `None` once the shard's task has ended and every event
        // was taken.
        self.events.push(Box::pin(futures_util::stream::unfold(
            Some(rx),
            move |rx| async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some((_, event)) => Some(((key, generation, Some(event)), Some(rx))),
                    None => Some(((key, generation, None), None)),
                }
            },
        )));
        tracing::info!(
            shard = id,
            total,
            resume = session.is_some(),
            seq = session.as_ref().map(|s| s.seq),
            "starting shard"
        );
        self.slots.insert(
            key,
            Slot {
                shard: Some(shard),
                generation,
                session: session.as_ref().map(tag),
                acked: session.as_ref().map(Stored::of),
                revision,
                dirty: false,
                in_flight: VecDeque::new(),
                enqueued: 0,
                attempt: 0,
                needs_retry: false,
                published: crate::metrics::published(id),
                ended: false,
                merged: false,
                last_seq: 0,
                subjects: Subjects::default(),
            },
        );
    }

    /// Whether to take the next event: a shard is running, and JetStream
    /// has not fallen too far behind.
    fn takes_events(&self) -> bool {
        !self.events.is_empty() && self.queued < MAX_IN_FLIGHT
    }

    fn publish_owned(&self) {
        self.metrics.leases_held(self.held.len());
        let mut owned: Vec<u32> = self.slots.keys().map(|key| key & !NEXT).collect();
        owned.sort_unstable();
        owned.dedup();
        self.owned_tx.send_replace(owned);
    }

    async fn on_event(
        &mut self,
        key: u32,
        generation: u64,
        event: ShardEvent,
    ) -> Result<(), NodeError> {
        let Some(key) = self.slot_key(key, generation) else {
            return Ok(());
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return Ok(());
        };
        let shard = key & !NEXT;
        match event {
            ShardEvent::Ready { session } => {
                slot.session = Some(tag(&session));
                self.on_new_session(key);
            }
            ShardEvent::Dispatch {
                seq,
                ref event_type,
                ..
            } => {
                slot.last_seq = seq;
                let ready = &**event_type == "READY";
                if let Err(ShardEvent::Dispatch {
                    seq,
                    event_type,
                    json,
                    ..
                }) = self.merge(key, event).await
                {
                    self.enqueue(key, seq, &event_type, json, None, None).await;
                }
                // Once its READY is out (marked as the reshard's own), a
                // new shard counts as READY.
                if ready {
                    self.on_ready(key);
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

    /// Publishes a dispatch of slot `key`, in its order, as one of
    /// `session` (default: the slot's current one).
    async fn enqueue(
        &mut self,
        key: u32,
        seq: u64,
        event_type: &str,
        json: shardwire_shard::Json,
        from_reshard: Option<u32>,
        session: Option<(Arc<str>, Arc<str>)>,
    ) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let shard = key & !NEXT;
        let Some((session_id, resume_url)) = session.or_else(|| slot.session.clone()) else {
            tracing::warn!(shard, seq, "a dispatch before any session; not published");
            return;
        };
        let outgoing = Outgoing {
            nth: slot.enqueued,
            seq,
            session_id,
            resume_url,
            subject: slot.subjects.get(&self.config.layout, shard, event_type),
            // No copy: the bytes share the JSON's buffer.
            payload: Bytes::from_owner(json),
            acked: false,
            skipped: false,
            from_reshard,
        };
        slot.enqueued += 1;
        slot.in_flight.push_back(outgoing.clone());
        self.queued += 1;
        if !slot.needs_retry {
            let (generation, attempt) = (slot.generation, slot.attempt);
            self.send_event(key, generation, attempt, &outgoing).await;
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

    fn on_command(&self, message: async_nats::Message) {
        let shard = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u32>().ok());
        // While a range merges, a shard id names the old shard (workers
        // address shards by the stored count, which moves on at the end);
        // a new shard takes the ids the old count lacks.
        let Some(sender) = shard
            .and_then(|shard| {
                [shard, shard | NEXT]
                    .into_iter()
                    .find_map(|key| self.slots.get(&key).and_then(|slot| slot.shard.as_ref()))
            })
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

    /// Graceful stop: every range is handed over at once (shards closed
    /// resumably, what they delivered published, sessions stored, leases
    /// released), within a bound: what is not done by then lapses by
    /// itself.
    async fn stop(&mut self) {
        let ranges: Vec<u32> = self.held.keys().copied().collect();
        for range in ranges {
            self.begin_handover(range);
        }
        let deadline = Instant::now() + HANDOVER_LIMIT;
        loop {
            let settled = self.events.is_empty() && self.acks.is_empty();
            if settled || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                Some(reply) = self.acks.replies.next() => self.on_reply(&reply),
                Some((shard, generation, event)) = self.events.next(), if self.takes_events() => match event {
                    Some(event) => {
                        let _ = self.on_event(shard, generation, event).await;
                    }
                    None => self.on_ended(shard, generation),
                },
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        // With NATS away, each of these would wait for its own timeout:
        // bound them together. The node withdraws first, so the others
        // share its ranges out among themselves.
        let hand_over = async {
            let _ = self.leases.withdraw().await;
            let ranges: Vec<u32> = self.handing_over.keys().copied().collect();
            for range in ranges {
                self.hand_over(range).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), hand_over)
            .await
            .is_err()
        {
            tracing::warn!(
                "NATS did not answer while handing over; the leases lapse by themselves"
            );
        }
        self.held.clear();
        self.handing_over.clear();
        self.slots.clear();
        self.publish_owned();
        tracing::info!(node = %self.config.node_id, "node stopped");
    }
}

/// A hasher for slot keys: one multiply (Fibonacci hashing), which spreads
/// small consecutive keys over the whole word.
#[derive(Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, key: u32) {
        self.write_u64(u64::from(key));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How many ranges fit in `capacity` shards, a range holding `size` shards
/// of each multiple of `base` in `total`; at least one, so that a cluster
/// resharded past its nodes' capacities keeps running (it logs it).
fn capacity_ranges(capacity: u32, size: u32, base: u32, total: u32) -> u32 {
    (capacity / shards_per_range(size, base, total).max(1)).max(1)
}

/// The shards of one range, a range holding `size` shards of each multiple
/// of `base` in `total`.
fn shards_per_range(size: u32, base: u32, total: u32) -> u32 {
    size.saturating_mul((total / base.max(1)).max(1))
}
