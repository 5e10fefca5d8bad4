use std::sync::Arc;
use std::time::Duration;

use shardwire_shard::{IdentifyQueue, IdentifyRefused, WaitTurn};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::SessionStartLimit;
use crate::metrics::QueueMetrics;

/// How often one bucket may identify: Discord allows one identify per
/// bucket every 5 seconds.
pub const IDENTIFY_WINDOW: Duration = Duration::from_secs(5);

/// The in-memory identify queue of one process.
///
/// A shard's bucket is `shard_id % max_concurrency`; each bucket lets one
/// shard identify per [`IDENTIFY_WINDOW`], in the order they asked (a fair
/// lock per bucket). The gateway measures the window between identifies as
/// they arrive, which is later than the turn by however long the shard took
/// to send; so a bucket waits the window plus a margin of 1% (50 ms of
/// Discord's 5 s, at least 5 ms) before its next turn. Buckets run side by
/// side, so N shards at concurrency M finish in `(⌈N/M⌉ − 1) × 5.05 s` plus
/// network time.
///
/// Every turn given takes one of the day's session starts; when none is
/// left, turns are refused until the limit resets. At the reset the count
/// goes back to the day's total, and the next reset is a day later, as
/// Discord counts them.
#[derive(Clone, Debug)]
pub struct LocalQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The last identify of each bucket.
    buckets: Vec<Mutex<Option<Instant>>>,
    starts: std::sync::Mutex<Starts>,
    window: Duration,
    metrics: QueueMetrics,
}

/// The day's session starts.
#[derive(Debug)]
struct Starts {
    remaining: u32,
    total: u32,
    /// When `remaining` goes back to `total`; `None`: never.
    reset_at: Option<Instant>,
}

/// The most buckets a queue keeps. `max_concurrency` comes from the REST
/// API, which a proxy could make anything; past this, shards share
/// buckets (`shard_id % MAX_BUCKETS`), which waits longer than Discord
/// asks but never identifies too fast. Discord's largest bots have far
/// fewer buckets.
pub const MAX_BUCKETS: u32 = 1024;

/// How often Discord resets the session start limit.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl LocalQueue {
    /// A queue for the limit `/gateway/bot` reported: `max_concurrency`
    /// buckets (at least one, at most [`MAX_BUCKETS`]), `remaining` starts
    /// that go back to `total` after `reset_after`.
    #[must_use]
    pub fn new(limit: &SessionStartLimit) -> Self {
        Self::with_window(limit, IDENTIFY_WINDOW)
    }

    /// As [`LocalQueue::new`], with another window (for simulators that
    /// shorten it).
    #[must_use]
    pub fn with_window(limit: &SessionStartLimit, window: Duration) -> Self {
        let buckets = (0..limit.max_concurrency.clamp(1, MAX_BUCKETS))
            .map(|_| Mutex::new(None))
            .collect();
        let metrics = QueueMetrics::new(limit.max_concurrency);
        metrics.remaining(limit.remaining);
        Self {
            inner: Arc::new(Inner {
                buckets,
                starts: std::sync::Mutex::new(Starts {
                    remaining: limit.remaining,
                    total: limit.total.max(limit.remaining),
                    reset_at: Instant::now().checked_add(limit.reset_after),
                }),
                window,
                metrics,
            }),
        }
    }

    /// A queue with `max_concurrency` buckets and no daily limit (for
    /// tests and simulators).
    #[must_use]
    pub fn unlimited(max_concurrency: u32) -> Self {
        let limit = SessionStartLimit::new(u32::MAX, u32::MAX, DAY, max_concurrency);
        Self::new(&limit)
    }

    /// The number of buckets (`max_concurrency`, up to [`MAX_BUCKETS`]).
    #[must_use]
    pub fn max_concurrency(&self) -> u32 {
        self.inner.buckets.len() as u32
    }

    /// Session starts left today.
    #[must_use]
    pub fn remaining(&self) -> u32 {
        self.starts().remaining
    }

    /// The day's starts, refilled if the reset has passed.
    fn starts(&self) -> std::sync::MutexGuard<'_, Starts> {
        let mut starts = self
            .inner
            .starts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if let Some(mut reset_at) = starts.reset_at
            && now >= reset_at
        {
            while reset_at <= now {
                reset_at += DAY;
            }
            starts.reset_at = Some(reset_at);
            starts.remaining = starts.total;
            self.inner.metrics.remaining(starts.remaining);
        }
        starts
    }

    fn take_start(&self) -> Result<(), IdentifyRefused> {
        let mut starts = self.starts();
        if starts.remaining == 0 {
            return Err(IdentifyRefused::DailyLimitExhausted {
                reset_after: starts
                    .reset_at
                    .map(|at| at.saturating_duration_since(Instant::now())),
            });
        }
        starts.remaining -= 1;
        self.inner.metrics.remaining(starts.remaining);
        Ok(())
    }
}

impl IdentifyQueue for LocalQueue {
    fn wait_turn(&self, shard_id: u32) -> WaitTurn<'_> {
        Box::pin(async move {
            let bucket = &self.inner.buckets[(shard_id as usize) % self.inner.buckets.len()];
            let waiting = self.inner.metrics.waiting(shard_id);
            // The fair lock keeps the order the shards asked in.
            let mut last = bucket.lock().await;
            if let Some(last) = *last {
                tokio::time::sleep_until(last + self.inner.window + margin(self.inner.window))
                    .await;
            }
            self.take_start()?;
            *last = Some(Instant::now());
            waiting.turn();
            Ok(())
        })
    }
}

/// The margin a bucket adds to the window: 1%, and at least 5 ms (but never
/// over 5%, so a tiny test window keeps a tiny margin). It covers the time
/// from the turn to the identify's arrival, which differs between two
/// connections by the send and the network; twilight-gateway and
/// discord.js add none.
fn margin(window: Duration) -> Duration {
    (window / 100)
        .max(Duration::from_millis(5))
        .min(window / 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_one_percent_at_least_5_ms_at_most_five_percent() {
        let ms = Duration::from_millis;
        assert_eq!(margin(IDENTIFY_WINDOW), ms(50));
        assert_eq!(margin(ms(1000)), ms(10));
        assert_eq!(margin(ms(200)), ms(5));
        assert_eq!(margin(ms(40)), ms(2));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }
}
