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
    /// Pre-encoded flood corpora by (first sequence number, count, whether
    /// for zstd-stream).
    floods: Mutex<HashMap<(u64, u64, bool), Arc<Flood>>>,
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
    /// valid after any payload boundary of a zlib-stream connection. Empty
    /// in a [`zstd_stream`](Self::zstd_stream) flood.
    pub zlib: Vec<Vec<u8>>,
    /// The same payloads as one zstd frame of their own, flushed after each:
    /// the first message starts the frame and the last one ends it, so the
    /// flood goes between the end of a zstd-stream connection's frame and
    /// the start of its next. Empty in a [`new`](Self::new) flood.
    pub zstd: Vec<Vec<u8>>,
}

/// Distinct events in a zlib-stream flood: 32 times the 32 KiB window, so
/// no event finds its earlier copy in it.
const ZLIB_DISTINCT: usize = 1024;

/// Distinct events in a zstd-stream flood: about 4 MiB, twice the 2 MiB
/// window of zstd's level 3 (what the simulator compresses with), for the
/// same reason. With 1,024 the whole cycle would fit in the window and each
/// event would compress to a few back-references, as no real traffic does.
const ZSTD_DISTINCT: usize = 4096;

impl Flood {
    /// The flood a simulator seeded with `seed` sends on zlib-stream and
    /// without transport compression: `count` dispatches numbered from
    /// `first`, cycling through 1,024 distinct generated events. Benchmarks
    /// rebuild it to measure the same bytes offline.
    #[must_use]
    pub fn new(seed: u64, first: u64, count: u64) -> Self {
        let mut encoder = shardwire_corpus::ZlibStreamEncoder::continuation();
        let payloads = Self::payloads(seed, first, count, ZLIB_DISTINCT);
        let zlib = payloads.iter().map(|p| encoder.encode(p)).collect();
        Self {
            payloads,
            zlib,
            zstd: Vec::new(),
        }
    }

    /// The flood a simulator seeded with `seed` sends on zstd-stream: as
    /// [`new`](Self::new), cycling through 4,096 distinct events (the first
    /// 1,024 are `new`'s), compressed at zstd's level 3 as one frame.
    ///
    /// # Errors
    ///
    /// When zstd cannot allocate its context.
    pub fn zstd_stream(seed: u64, first: u64, count: u64) -> std::io::Result<Self> {
        let mut encoder = shardwire_corpus::ZstdStreamEncoder::new()?;
        let payloads = Self::payloads(seed, first, count, ZSTD_DISTINCT);
        let mut zstd = payloads
            .iter()
            .map(|p| encoder.encode(p))
            .collect::<std::io::Result<Vec<_>>>()?;
        let end = encoder.end_frame()?;
        match zstd.last_mut() {
            Some(last) => last.extend_from_slice(&end),
            None => zstd.push(end),
        }
        Ok(Self {
            payloads,
            zlib: Vec::new(),
            zstd,
        })
    }

    fn payloads(seed: u64, first: u64, count: u64, distinct: usize) -> Vec<Arc<[u8]>> {
        let mut generator = shardwire_corpus::EventGenerator::new(seed, 8);
        let distinct: Vec<(&'static str, Vec<u8>)> = (0..distinct)
            .map(|_| {
                let (name, d) = generator.next_event();
                (name, serde_json::to_vec(&d).unwrap_or_default())
            })
            .collect();
        (0..count)
            .map(|index| {
                let (name, d) = &distinct[(index % distinct.len() as u64) as usize];
                let mut payload =
                    format!(r#"{{"t":"{name}","s":{},"op":0,"d":"#, first + index).into_bytes();
                payload.extend_from_slice(d);
                payload.push(b'}');
                Arc::from(payload)
            })
            .collect()
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

    /// The flood corpus of `count` events numbered from `first`, for
    /// zstd-stream or not, built on first use (a few distinct events
    /// repeated, as a benchmark wants). `None` when zstd cannot allocate.
    pub(crate) fn flood(&self, first: u64, count: u64, zstd: bool) -> Option<Arc<Flood>> {
        let key = (first, count, zstd);
        if let Some(flood) = lock(&self.floods).get(&key) {
            return Some(flood.clone());
        }
        let seed = self.config.seed;
        let flood = Arc::new(if zstd {
            Flood::zstd_stream(seed, first, count).ok()?
        } else {
            Flood::new(seed, first, count)
        });
        lock(&self.floods).insert(key, flood.clone());
        Some(flood)
    }

    /// Ends a session for good: it cannot be resumed, and the pool events
    /// it had still to send are gone with it.
    pub(crate) fn end_session(&self, session_id: &str) {
        let mut sessions = lock(&self.sessions);
        if let Some(session) = sessions.remove(session_id) {
            self.pool.withdraw(&session.pool);
        }
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
