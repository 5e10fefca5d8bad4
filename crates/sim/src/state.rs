//! State shared by the simulator's listeners and connections.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::SimConfig;
use crate::observe::{Fault, Observations, RestFault, Violation, ViolationKind};
use crate::pool::{Pool, SessionQueue};

/// How many dispatches a session keeps for replay on resume.
pub(crate) const REPLAY_LOG: usize = 50_000;

/// A session that can be resumed.
pub(crate) struct Session {
    pub(crate) shard: [u32; 2],
    pub(crate) seq: u64,
    /// The last dispatches, oldest first, as complete JSON payloads.
    pub(crate) log: VecDeque<(u64, Arc<[u8]>)>,
    pub(crate) guild_ids: Vec<String>,
    /// Pool events routed to it and not sent yet.
    pub(crate) pool: SessionQueue,
}

impl Session {
    /// Numbers a dispatch with the next sequence number and logs it for
    /// replay; returns the complete payload.
    pub(crate) fn log_dispatch(&mut self, name: &str, d: &[u8]) -> Arc<[u8]> {
        self.seq += 1;
        let mut payload = format!(r#"{{"t":"{name}","s":{},"op":0,"d":"#, self.seq).into_bytes();
        payload.extend_from_slice(d);
        payload.push(b'}');
        let payload: Arc<[u8]> = payload.into();
        self.log.push_back((self.seq, payload.clone()));
        if self.log.len() > REPLAY_LOG {
            self.log.pop_front();
        }
        payload
    }
}

pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) gateway_url: String,
    pub(crate) resume_url: String,
    next_connection: AtomicU64,
    next_session: AtomicU64,
    observations: Mutex<Observations>,
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    /// Last identify time per rate-limit bucket.
    buckets: Mutex<HashMap<u32, Instant>>,
    remaining: Mutex<u32>,
    /// Live connections, to inject faults into.
    live: Mutex<HashMap<u64, LiveConnection>>,
    /// Pre-encoded flood corpora by (first sequence number, count).
    floods: Mutex<HashMap<(u64, u64), Arc<Flood>>>,
    /// The scripted `/gateway/bot` faults not answered yet.
    gateway_bot_faults: Mutex<VecDeque<RestFault>>,
    /// The shard count `/gateway/bot` recommends.
    pub(crate) recommended_shards: AtomicU32,
    /// The most guilds a shard may own (0: no limit), else 4011.
    pub(crate) max_guilds_per_shard: AtomicU32,
    pub(crate) pool: Pool,
}

/// Events pre-encoded for [`Fault::Flood`](crate::Fault::Flood).
#[derive(Debug)]
#[non_exhaustive]
pub struct Flood {
    /// Complete JSON payloads, for the replay log and uncompressed sends.
    pub payloads: Vec<Arc<[u8]>>,
    /// The same payloads as one raw deflate stream, a sync flush after each:
    /// valid after any payload boundary of a zlib-stream connection.
    pub zlib: Vec<Vec<u8>>,
}

impl Flood {
    /// The flood a simulator seeded with `seed` sends: `count` dispatches
    /// numbered from `first`, cycling through 1,024 distinct generated
    /// events. Benchmarks rebuild it to measure the same bytes offline.
    #[must_use]
    pub fn new(seed: u64, first: u64, count: u64) -> Self {
        let mut generator = shardwire_corpus::EventGenerator::new(seed, 8);
        let distinct: Vec<(&'static str, Vec<u8>)> = (0..1024)
            .map(|_| {
                let (name, d) = generator.next_event();
                (name, serde_json::to_vec(&d).unwrap_or_default())
            })
            .collect();
        let mut encoder = shardwire_corpus::ZlibStreamEncoder::continuation();
        let mut payloads = Vec::with_capacity(count as usize);
        let mut zlib = Vec::with_capacity(count as usize);
        for index in 0..count {
            let (name, d) = &distinct[(index % distinct.len() as u64) as usize];
            let mut payload =
                format!(r#"{{"t":"{name}","s":{},"op":0,"d":"#, first + index).into_bytes();
            payload.extend_from_slice(d);
            payload.push(b'}');
            zlib.push(encoder.encode(&payload));
            payloads.push(Arc::from(payload));
        }
        Self { payloads, zlib }
    }
}

/// A live connection's shard (once known) and its fault channel.
type LiveConnection = (Option<u32>, mpsc::UnboundedSender<Fault>);

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the
/// simulator's state stays readable for the test that drives it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(config: SimConfig, gateway_url: String, resume_url: String) -> Self {
        let remaining = config.remaining;
        let gateway_bot_faults = Mutex::new(config.gateway_bot_faults.iter().cloned().collect());
        let pool = Pool::new(config.guild_pool, config.seed, config.guild_event_rate);
        Self {
            recommended_shards: AtomicU32::new(config.shards),
            max_guilds_per_shard: AtomicU32::new(config.max_guilds_per_shard),
            pool,
            config,
            gateway_url,
            resume_url,
            next_connection: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            observations: Mutex::new(Observations::default()),
            sessions: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            remaining: Mutex::new(remaining),
            live: Mutex::new(HashMap::new()),
            floods: Mutex::new(HashMap::new()),
            gateway_bot_faults,
        }
    }

    /// The next scripted `/gateway/bot` fault, if any is left.
    pub(crate) fn next_gateway_bot_fault(&self) -> Option<RestFault> {
        lock(&self.gateway_bot_faults).pop_front()
    }

    /// The flood corpus of `count` events numbered from `first`, built on
    /// first use (a few distinct events repeated, as a benchmark wants).
    pub(crate) fn flood(&self, first: u64, count: u64) -> Arc<Flood> {
        if let Some(flood) = lock(&self.floods).get(&(first, count)) {
            return flood.clone();
        }
        let flood = Arc::new(Flood::new(self.config.seed, first, count));
        lock(&self.floods).insert((first, count), flood.clone());
        flood
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn new_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("sim{n:08x}{:08x}", self.config.seed as u32)
    }

    pub(crate) fn observe<R>(&self, f: impl FnOnce(&mut Observations) -> R) -> R {
        f(&mut lock(&self.observations))
    }

    pub(crate) fn snapshot(&self) -> Observations {
        lock(&self.observations).clone()
    }

    pub(crate) fn violation(&self, connection: u64, shard: Option<u32>, kind: ViolationKind) {
        tracing::debug!(connection, ?shard, ?kind, "client broke a gateway rule");
        self.observe(|o| {
            o.violations.push(Violation {
                connection,
                shard,
                kind,
                at: Instant::now(),
            });
        });
    }

    /// Takes an identify slot for `shard_id`: `Ok` if its bucket's window has
    /// passed, `Err(bucket)` if it is identifying too fast.
    pub(crate) fn take_identify_slot(&self, shard_id: u32) -> Result<(), u32> {
        let bucket = shard_id % self.config.max_concurrency.max(1);
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if let Some(last) = buckets.get(&bucket)
            && now.duration_since(*last) < self.config.identify_window
        {
            return Err(bucket);
        }
        buckets.insert(bucket, now);
        Ok(())
    }

    /// How many guilds a session of `shard` would own: its pool guilds, or
    /// `guilds_per_shard` without a pool.
    pub(crate) fn guilds_owned(&self, shard: [u32; 2]) -> usize {
        if self.pool.is_on() {
            self.pool.owned_count(shard)
        } else {
            self.config.guilds_per_shard as usize
        }
    }

    /// Takes one daily session start; `false` when none is left.
    pub(crate) fn take_session_start(&self) -> bool {
        let mut remaining = lock(&self.remaining);
        if *remaining == 0 {
            return false;
        }
        *remaining -= 1;
        true
    }

    pub(crate) fn remaining(&self) -> u32 {
        *lock(&self.remaining)
    }

    pub(crate) fn register(&self, connection: u64, faults: mpsc::UnboundedSender<Fault>) {
        lock(&self.live).insert(connection, (None, faults));
    }

    pub(crate) fn set_shard(&self, connection: u64, shard: u32) {
        if let Some(entry) = lock(&self.live).get_mut(&connection) {
            entry.0 = Some(shard);
        }
    }

    pub(crate) fn unregister(&self, connection: u64) {
        lock(&self.live).remove(&connection);
    }

    /// Sends a fault to every live connection of `shard` (all connections
    /// when `None`); returns how many got it.
    pub(crate) fn inject(&self, shard: Option<u32>, fault: &Fault) -> usize {
        lock(&self.live)
            .values()
            .filter(|(live_shard, _)| shard.is_none() || *live_shard == shard)
            .filter(|(_, faults)| faults.send(fault.clone()).is_ok())
            .count()
    }
}
