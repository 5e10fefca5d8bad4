//! The heartbeat scheduler of shardwire: when to send a Discord Gateway
//! heartbeat, whether the connection has turned zombie, and how long round
//! trips take.
//!
//! [`Heartbeat`] is a deadline table with no clock and no I/O: every input
//! carries `now`, and the driver sleeps until [`Heartbeat::poll_timeout`],
//! then calls [`Heartbeat::handle_timeout`], which says [`Due::Beat`] (send
//! one) or [`Due::Zombie`] (the last one was never acknowledged: close with a
//! resumable code and resume). The first beat's jitter is passed in, so tests
//! and simulations are deterministic; [`Jitter`] makes seedable values.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shardwire_heartbeat::{Due, Heartbeat};
//!
//! let start = Instant::now();
//! let interval = Duration::from_millis(41_250);
//! let mut heartbeat = Heartbeat::new();
//! heartbeat.on_hello(interval, start, 0.5)?;
//! // The first beat is due at interval × jitter.
//! let first = heartbeat.poll_timeout().unwrap();
//! assert_eq!(first - start, interval / 2);
//! assert_eq!(heartbeat.handle_timeout(first), Some(Due::Beat));
//! heartbeat.on_sent(first);
//! heartbeat.on_ack(first + Duration::from_millis(40));
//! assert_eq!(heartbeat.latency().last(), Some(Duration::from_millis(40)));
//! // The next is due one interval after the last was sent.
//! assert_eq!(heartbeat.poll_timeout(), Some(first + interval));
//! # Ok::<(), shardwire_heartbeat::HeartbeatError>(())
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a deadline that has passed asks the driver to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Due {
    /// Send a heartbeat, then call [`Heartbeat::on_sent`].
    Beat,
    /// A beat fell due while the previous one is still unacknowledged: the
    /// connection is a zombie. Close it with a code other than 1000 or 1001
    /// and resume.
    Zombie,
}

/// A Hello the scheduler cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// `heartbeat_interval` was zero: heartbeating would never stop.
    #[error("the gateway sent a heartbeat interval of zero")]
    ZeroInterval,
}

/// The default number of round trips [`Latency`] keeps.
pub const DEFAULT_SAMPLES: usize = 16;

/// Heartbeat round trips: the last, the mean of the recent ones, and the
/// recent ones themselves (oldest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latency {
    recent: VecDeque<Duration>,
    capacity: usize,
    acknowledged: u64,
}

impl Latency {
    fn new(capacity: usize) -> Self {
        Self {
            recent: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            acknowledged: 0,
        }
    }

    fn record(&mut self, sample: Duration) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(sample);
        self.acknowledged += 1;
    }

    /// The last round trip, if any beat was acknowledged.
    #[must_use]
    pub fn last(&self) -> Option<Duration> {
        self.recent.back().copied()
    }

    /// The mean of the recent round trips (a moving average).
    #[must_use]
    pub fn average(&self) -> Option<Duration> {
        let count = u32::try_from(self.recent.len()).ok().filter(|n| *n > 0)?;
        Some(self.recent.iter().sum::<Duration>() / count)
    }

    /// The recent round trips, oldest first.
    pub fn recent(&self) -> impl ExactSizeIterator<Item = Duration> + '_ {
        self.recent.iter().copied()
    }

    /// How many beats were acknowledged since the scheduler was made.
    #[must_use]
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }
}

/// The heartbeat deadline table of one connection.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    interval: Option<Duration>,
    /// When the next beat is due.
    next: Option<Instant>,
    /// When the unacknowledged beat was sent.
    unacknowledged: Option<Instant>,
    /// The server asked for a beat (op 1): it is due now, whatever the
    /// acknowledgement state.
    requested: bool,
    latency: Latency,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A scheduler keeping [`DEFAULT_SAMPLES`] latency samples.
    #[must_use]
    pub fn new() -> Self {
        Self::with_samples(DEFAULT_SAMPLES)
    }

    /// A scheduler keeping the last `samples` round trips (at least one).
    #[must_use]
    pub fn with_samples(samples: usize) -> Self {
        Self {
            interval: None,
            next: None,
            unacknowledged: None,
            requested: false,
            latency: Latency::new(samples),
        }
    }

    /// Starts the schedule of a new connection: the first beat is due at
    /// `now + interval × jitter`. `jitter` is clamped into `[0, 1)`; a NaN
    /// counts as 0.
    ///
    /// # Errors
    ///
    /// [`HeartbeatError::ZeroInterval`] for a zero interval; the schedule is
    /// then left stopped.
    pub fn on_hello(
        &mut self,
        interval: Duration,
        now: Instant,
        jitter: f64,
    ) -> Result<(), HeartbeatError> {
        self.stop();
        if interval.is_zero() {
            return Err(HeartbeatError::ZeroInterval);
        }
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0 - f64::EPSILON)
        };
        // Nanosecond rounding could turn a jitter just under 1 into a whole
        // interval; the first beat stays strictly inside the first interval.
        let delay = interval
            .mul_f64(jitter)
            .min(interval.saturating_sub(Duration::from_nanos(1)));
        self.interval = Some(interval);
        self.next = Some(now + delay);
        Ok(())
    }

    /// A heartbeat was sent at `now` (scheduled or requested): it awaits its
    /// acknowledgement, and the next is due one interval later.
    pub fn on_sent(&mut self, now: Instant) {
        let Some(interval) = self.interval else {
            return;
        };
        self.unacknowledged = Some(now);
        self.requested = false;
        self.next = Some(now + interval);
    }

    /// The gateway acknowledged the last heartbeat (op 11). An ACK with no
    /// beat outstanding is ignored.
    pub fn on_ack(&mut self, now: Instant) {
        if let Some(sent) = self.unacknowledged.take() {
            self.latency.record(now.saturating_duration_since(sent));
        }
    }

    /// The gateway asked for a heartbeat (op 1): one is due now.
    pub fn on_request(&mut self, now: Instant) {
        if self.interval.is_none() {
            return;
        }
        self.requested = true;
        self.next = Some(self.next.map_or(now, |next| next.min(now)));
    }

    /// When the driver must next call [`Heartbeat::handle_timeout`]; `None`
    /// before Hello and after [`Heartbeat::stop`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// What is due at `now`, if anything.
    ///
    /// A requested beat is always a [`Due::Beat`]. A scheduled one is a
    /// [`Due::Zombie`] when the previous beat is still unacknowledged; the
    /// schedule then stops, since the connection is to be closed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Due> {
        let next = self.next?;
        if now < next {
            return None;
        }
        if self.requested {
            return Some(Due::Beat);
        }
        if self.unacknowledged.is_some() {
            self.stop();
            return Some(Due::Zombie);
        }
        Some(Due::Beat)
    }

    /// Stops the schedule (the connection ended). Latency history is kept.
    pub fn stop(&mut self) {
        self.interval = None;
        self.next = None;
        self.unacknowledged = None;
        self.requested = false;
    }

    /// The interval from the last Hello, while running.
    #[must_use]
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether a sent beat awaits its acknowledgement.
    #[must_use]
    pub fn awaiting_ack(&self) -> bool {
        self.unacknowledged.is_some()
    }

    /// The round trips measured so far.
    #[must_use]
    pub fn latency(&self) -> &Latency {
        &self.latency
    }
}

/// A seedable source of first-beat jitter in `[0, 1)` (SplitMix64), so a
/// process's shards do not all beat at once and tests can fix the values.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A source from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value in `[0, 1)`.
    pub fn next_jitter(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
