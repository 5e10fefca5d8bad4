//! The guild pool: a fixed set of guilds shared by every session, and one
//! stream of events for them, generated once and fanned out to each session
//! that owns the event's guild (as Discord sends a guild's events to every
//! session whose `[shard_id, shard_count]` covers it). Two generations of
//! shards running side by side thus see the same events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shardwire_corpus::EventGenerator;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until};

use crate::state::{Shared, lock};

/// The snowflake timestamp of pool guild 0; guild `i` has this plus `i`.
const FIRST_TIMESTAMP: u64 = 1_000_000_000_000;
/// Pool events a session holds for sending at most; past it the oldest go.
pub(crate) const SESSION_QUEUE: usize = 100_000;
/// Pool events [`Pool`] records at most.
pub(crate) const RECORD_LIMIT: usize = 1_000_000;
/// The most the emitter catches up after a stall: a second's worth.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// A pool event the simulator sent, as [`Sim::pool_events`](crate::Sim::pool_events)
/// lists it: once however many sessions it went to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolEvent {
    /// The guild it happened in (its `d`'s `guild_id`).
    pub guild_id: String,
    /// Its event name, like `MESSAGE_CREATE`.
    pub name: String,
    /// The JSON of its `d`, byte for byte as every session was sent it
    /// (with the default [`PayloadStyle`](crate::PayloadStyle); another
    /// style rewrites the payloads it sends).
    pub d: Vec<u8>,
}

/// A pool event waiting in one session's queue.
pub(crate) struct Queued {
    pub(crate) name: &'static str,
    pub(crate) d: Arc<[u8]>,
    /// When it may be sent: generated plus the session's generation delay.
    pub(crate) due: Instant,
    /// Its place in [`Record::events`] (none once the record is full).
    pub(crate) recorded: Option<usize>,
}

/// One session's pool events not sent yet, oldest first.
#[derive(Default)]
pub(crate) struct SessionQueue {
    pub(crate) events: VecDeque<Queued>,
    /// Wakes the connection serving the session when an event is queued.
    pub(crate) queued: Arc<Notify>,
}

impl SessionQueue {
    /// Queues an event, dropping the oldest past `limit`; whether it did.
    fn push(&mut self, event: Queued, limit: usize) -> bool {
        self.events.push_back(event);
        let dropped = self.events.len() > limit;
        if dropped {
            self.events.pop_front();
        }
        self.queued.notify_one();
        dropped
    }

    /// The oldest event if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Queued> {
        if self.events.front()?.due <= now {
            self.events.pop_front()
        } else {
            None
        }
    }
}

/// What was sent, bounded.
#[derive(Default)]
struct Record {
    events: Vec<Recorded>,
    overflowed: bool,
}

/// A recorded pool event, and whether a client could still get it.
struct Recorded {
    event: PoolEvent,
    /// Session queues it was put in, less those that sent it or ended (one
    /// that dropped it as full still counts: that loss is the client's).
    queued: usize,
    /// It was written to a session.
    sent: bool,
    /// Every session it was queued for ended for good before sending it.
    withdrawn: bool,
}

/// The pool's state in [`Shared`].
pub(crate) struct Pool {
    /// Guild ids, index `i` for pool guild `i` (empty: no pool).
    guild_ids: Vec<String>,
    /// Events per second over the whole pool.
    rate: watch::Sender<f64>,
    /// The send delay of the sessions of each shard count.
    delays: Mutex<HashMap<u32, Duration>>,
    record: Mutex<Record>,
    dropped: AtomicU64,
}

impl Pool {
    pub(crate) fn new(guilds: u32, seed: u64, rate: f64) -> Self {
        Self {
            guild_ids: (0..u64::from(guilds))
                .map(|index| guild_id(index, seed).to_string())
                .collect(),
            rate: watch::Sender::new(sanitize(rate)),
            delays: Mutex::new(HashMap::new()),
            record: Mutex::new(Record::default()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether there is a pool.
    pub(crate) fn is_on(&self) -> bool {
        !self.guild_ids.is_empty()
    }

    pub(crate) fn guild_ids(&self) -> &[String] {
        &self.guild_ids
    }

    /// The pool guilds `[shard_id, shard_count]` owns, in pool order.
    pub(crate) fn owned_by(&self, shard: [u32; 2]) -> Vec<String> {
        self.guild_ids
            .iter()
            .enumerate()
            .filter(|(index, _)| owns(shard, *index))
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// How many pool guilds `[shard_id, shard_count]` owns.
    pub(crate) fn owned_count(&self, shard: [u32; 2]) -> usize {
        (0..self.guild_ids.len())
            .filter(|index| owns(shard, *index))
            .count()
    }

    pub(crate) fn set_rate(&self, rate: f64) {
        self.rate.send_replace(sanitize(rate));
    }

    pub(crate) fn set_delay(&self, shard_count: u32, delay: Duration) {
        lock(&self.delays).insert(shard_count, delay);
    }

    fn delay(&self, shard_count: u32) -> Duration {
        lock(&self.delays)
            .get(&shard_count)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn events(&self) -> Vec<PoolEvent> {
        lock(&self.record)
            .events
            .iter()
            .filter(|recorded| !recorded.withdrawn)
            .map(|recorded| recorded.event.clone())
            .collect()
    }

    /// A session took `event` from its queue to send it.
    pub(crate) fn sent(&self, event: &Queued) {
        let mut record = lock(&self.record);
        if let Some(recorded) = event.recorded.and_then(|at| record.events.get_mut(at)) {
            recorded.queued = recorded.queued.saturating_sub(1);
            recorded.sent = true;
        }
    }

    /// A session ended for good with `queue` unsent: an event no other
    /// session sent or holds is withdrawn from the record, since no client
    /// could get it (Discord's events for a session it ended are gone).
    pub(crate) fn withdraw(&self, queue: &SessionQueue) {
        let mut record = lock(&self.record);
        for event in &queue.events {
            if let Some(recorded) = event.recorded.and_then(|at| record.events.get_mut(at)) {
                recorded.queued = recorded.queued.saturating_sub(1);
                recorded.withdrawn |= recorded.queued == 0 && !recorded.sent;
            }
        }
    }

    pub(crate) fn overflowed(&self) -> bool {
        lock(&self.record).overflowed
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Pool guild `index`'s id: its snowflake timestamp routes it to shard
/// `index % count` for every count that divides 2^12.
fn guild_id(index: u64, seed: u64) -> u64 {
    ((FIRST_TIMESTAMP + index) << 22) | (seed & 0x3f_ffff)
}

/// Whether `[shard_id, shard_count]` owns pool guild `index`, by
/// `(id >> 22) % shard_count == shard_id`.
fn owns([shard_id, shard_count]: [u32; 2], index: usize) -> bool {
    shard_count > 0
        && (FIRST_TIMESTAMP + index as u64) % u64::from(shard_count) == u64::from(shard_id)
}

/// A rate to run at: anything not a positive finite number stops the stream.
fn sanitize(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        0.0
    }
}

/// Generates the pool's events at its current rate, guilds taken in turn,
/// until `stop`.
pub(crate) async fn emit(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let pool = &shared.pool;
    let mut rate = pool.rate.subscribe();
    // Seeded apart from the sessions' own generators.
    let mut generator =
        EventGenerator::with_guild_ids(shared.config.seed ^ 0x9001, pool.guild_ids.clone());
    let mut next_guild = 0;
    let mut next_event: Option<Instant> = None;
    loop {
        let every = Duration::try_from_secs_f64(1.0 / *rate.borrow_and_update())
            .ok()
            .filter(|every| !every.is_zero() && *every < Duration::from_secs(86_400));
        let due = every.map(|every| *next_event.get_or_insert_with(|| Instant::now() + every));
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = rate.changed() => next_event = None,
            () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let every = every.unwrap_or(MAX_CATCH_UP);
                let now = Instant::now();
                let floor = now.checked_sub(MAX_CATCH_UP).unwrap_or(now);
                next_event = due.map(|due| (due + every).max(floor));
                let index = next_guild % pool.guild_ids.len();
                next_guild += 1;
                route(&shared, index, &mut generator, now);
            }
        }
    }
}

/// Generates one event in pool guild `index` and queues it for every session
/// that owns the guild; records it if any does.
fn route(shared: &Shared, index: usize, generator: &mut EventGenerator, now: Instant) {
    let pool = &shared.pool;
    let guild_id = &pool.guild_ids[index];
    let (name, mut d) = generator.next_event();
    d["guild_id"] = Value::from(guild_id.as_str());
    if shared.config.stamp_events {
        crate::session::stamp(&mut d);
    }
    let d: Arc<[u8]> = serde_json::to_vec(&d).unwrap_or_default().into();
    let mut sessions = lock(&shared.sessions);
    let owners = sessions.values().filter(|s| owns(s.shard, index)).count();
    if owners == 0 {
        return;
    }
    // Under the sessions' lock: whoever sees an event queued sees it
    // recorded.
    let recorded = {
        let mut record = lock(&pool.record);
        if record.events.len() < RECORD_LIMIT {
            record.events.push(Recorded {
                event: PoolEvent {
                    guild_id: guild_id.clone(),
                    name: name.to_owned(),
                    d: d.to_vec(),
                },
                queued: owners,
                sent: false,
                withdrawn: false,
            });
            Some(record.events.len() - 1)
        } else {
            record.overflowed = true;
            None
        }
    };
    for session in sessions.values_mut().filter(|s| owns(s.shard, index)) {
        let due = now + pool.delay(session.shard[1]);
        let event = Queued {
            name,
            d: d.clone(),
            due,
            recorded,
        };
        if session.pool.push(event, SESSION_QUEUE) {
            pool.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guild_i_routes_to_shard_i_mod_total() {
        let pool = Pool::new(16, 7, 0.0);
        for total in [1, 2, 4, 8, 16] {
            for (index, id) in pool.guild_ids().iter().enumerate() {
                let id: u64 = id.parse().unwrap();
                assert_eq!(id & 0x3f_ffff, 7);
                assert_eq!((id >> 22) % total, index as u64 % total);
                assert!(owns([(index as u64 % total) as u32, total as u32], index));
            }
        }
        assert_eq!(pool.owned_count([1, 4]), 4);
        assert_eq!(
            pool.owned_by([3, 8]),
            vec![pool.guild_ids()[3].clone(), pool.guild_ids()[11].clone()]
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest_event() {
        let mut queue = SessionQueue::default();
        let now = Instant::now();
        let event = |name| Queued {
            name,
            d: Arc::from(&b"{}"[..]),
            due: now,
            recorded: None,
        };
        assert!(!queue.push(event("A"), 2));
        assert!(!queue.push(event("B"), 2));
        assert!(queue.push(event("C"), 2));
        let names: Vec<_> = queue.events.iter().map(|e| e.name).collect();
        assert_eq!(names, ["B", "C"]);
        assert_eq!(queue.pop_due(now).map(|e| e.name), Some("B"));
        assert!(
            queue
                .pop_due(now.checked_sub(Duration::from_millis(1)).unwrap())
                .is_none()
        );
    }
}
