use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Payloads the gateway accepts per connection in one [`WINDOW`].
pub const LIMIT: u32 = 120;

/// The gateway's rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The outbound rate limit of one connection: at most [`LIMIT`] payloads in
/// any [`WINDOW`], with room kept for heartbeats.
///
/// Heartbeats count against the limit too; a client that spends the whole
/// budget on commands would have to skip a heartbeat or be closed with
/// 4008. So commands may use all but a reserve sized for the heartbeats a
/// window can hold (`⌈60 s / interval⌉ + 1`, the extra one for a server's
/// op 1), while heartbeats may use the whole budget.
///
/// Clock-free: every call takes `now`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use shardwire_shard::CommandRateLimiter;
///
/// let now = Instant::now();
/// let mut limiter = CommandRateLimiter::new(Duration::from_millis(41_250));
/// assert_eq!(limiter.available(now), 117); // 120 less 3 kept for heartbeats
/// assert!(limiter.try_acquire_command(now));
/// assert_eq!(limiter.available(now), 116);
/// ```
#[derive(Clone, Debug)]
pub struct CommandRateLimiter {
    /// When each payload of the current window was sent, oldest first.
    sent: VecDeque<Instant>,
    reserve: u32,
}

impl CommandRateLimiter {
    /// A limiter for a connection whose heartbeat interval is `interval`.
    #[must_use]
    pub fn new(heartbeat_interval: Duration) -> Self {
        Self {
            sent: VecDeque::with_capacity(LIMIT as usize),
            reserve: reserve_for(heartbeat_interval),
        }
    }

    /// The payloads kept for heartbeats.
    #[must_use]
    pub fn reserve(&self) -> u32 {
        self.reserve
    }

    fn expire(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|sent| now.saturating_duration_since(*sent) >= WINDOW)
        {
            self.sent.pop_front();
        }
    }

    fn used(&self, now: Instant) -> u32 {
        let live = self
            .sent
            .iter()
            .filter(|sent| now.saturating_duration_since(**sent) < WINDOW)
            .count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }

    /// How many commands may be sent at `now`.
    #[must_use]
    pub fn available(&self, now: Instant) -> u32 {
        (LIMIT - self.reserve).saturating_sub(self.used(now))
    }

    /// When the next command may be sent: `now` if one may be sent now.
    #[must_use]
    pub fn next_available(&self, now: Instant) -> Instant {
        self.next_slot(now, LIMIT - self.reserve)
    }

    /// The instant at which fewer than `budget` payloads are in the window.
    fn next_slot(&self, now: Instant, budget: u32) -> Instant {
        let used = self.used(now);
        if used < budget {
            return now;
        }
        // The window must lose `used - budget + 1` payloads, oldest first.
        let live: Vec<&Instant> = self
            .sent
            .iter()
            .filter(|sent| now.saturating_duration_since(**sent) < WINDOW)
            .collect();
        let index = (used - budget) as usize;
        live.get(index).map_or(now, |sent| **sent + WINDOW)
    }

    /// Takes a slot for a command, if one is free at `now`.
    pub fn try_acquire_command(&mut self, now: Instant) -> bool {
        self.expire(now);
        if self.available(now) == 0 {
            return false;
        }
        self.sent.push_back(now);
        true
    }

    /// Takes a slot for a heartbeat, which may use the reserve.
    ///
    /// A heartbeat is never held back: a skipped one costs the session
    /// (4009), an excess one at worst a resumable 4008. So it is always
    /// counted, and the result says whether it fitted the budget: `false`
    /// only when the window was already full, which the reserve is sized to
    /// prevent at any interval above half a second.
    pub fn acquire_heartbeat(&mut self, now: Instant) -> bool {
        self.expire(now);
        let fits = self.used(now) < LIMIT;
        self.sent.push_back(now);
        fits
    }

    /// Forgets the window: a new connection has a fresh budget.
    pub fn reset(&mut self, heartbeat_interval: Duration) {
        self.sent.clear();
        self.reserve = reserve_for(heartbeat_interval);
    }
}

/// `⌈60 s / interval⌉ + 1`, at least 2 and at most half the budget.
fn reserve_for(interval: Duration) -> u32 {
    if interval.is_zero() {
        return LIMIT / 2;
    }
    let per_window = WINDOW.as_nanos().div_ceil(interval.as_nanos());
    let reserve = u32::try_from(per_window)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    reserve.clamp(2, LIMIT / 2)
}
