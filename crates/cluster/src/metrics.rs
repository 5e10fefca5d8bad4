//! The identify queue's and resharding's metrics, through the [`metrics`]
//! facade (the shards' own are in [`shardwire_shard::metrics`]).
//! [`QueueMetrics`] records the queue's for [`LocalQueue`](crate::LocalQueue),
//! and for any other [`IdentifyQueue`](shardwire_shard::IdentifyQueue) that
//! wants the same series (the NATS queue uses it).

use std::sync::Arc;

use metrics::{Gauge, Histogram, Unit};
use tokio::time::Instant;

/// Session starts left today, as the queue counts them (gauge).
pub const SESSION_STARTS_REMAINING: &str = "shardwire_session_starts_remaining";
/// How long a shard waited for its identify turn, by `bucket` (histogram,
/// seconds).
pub const IDENTIFY_QUEUE_WAIT: &str = "shardwire_identify_queue_wait_seconds";
/// Shards waiting for their identify turn, by `bucket` (gauge).
pub const IDENTIFY_QUEUE_DEPTH: &str = "shardwire_identify_queue_depth";

/// Shards of each generation, `generation` `current` or `next` (the one a
/// reshard is starting; 0 when none is) (gauge).
pub const GENERATION_SHARDS: &str = "shardwire_generation_shards";
/// From a reshard's start to its switch (histogram, seconds).
pub const RESHARD_DURATION: &str = "shardwire_reshard_duration_seconds";
/// Events dropped around a reshard's switch because the other generation
/// delivered them, counted when the reshard ends (counter).
pub const RESHARD_COPIES_DROPPED: &str = "shardwire_reshard_copies_dropped_total";

/// An identify queue's series: the wait and the depth of each bucket
/// (`shard_id % max_concurrency`), and the session starts left.
#[derive(Clone)]
pub struct QueueMetrics {
    buckets: Arc<[Bucket]>,
    remaining: Gauge,
}

struct Bucket {
    depth: Gauge,
    wait: Histogram,
}

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMetrics")
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl QueueMetrics {
    /// The series of a queue with `max_concurrency` buckets (at least
    /// one, at most [`MAX_BUCKETS`](crate::MAX_BUCKETS), as the
    /// queue keeps), registered with the recorder installed now.
    #[must_use]
    pub fn new(max_concurrency: u32) -> Self {
        describe();
        let buckets = (0..max_concurrency.clamp(1, crate::queue::MAX_BUCKETS))
            .map(|bucket| {
                let labels = [("bucket", bucket.to_string())];
                Bucket {
                    depth: metrics::gauge!(IDENTIFY_QUEUE_DEPTH, &labels),
                    wait: metrics::histogram!(IDENTIFY_QUEUE_WAIT, &labels),
                }
            })
            .collect();
        Self {
            buckets,
            remaining: metrics::gauge!(SESSION_STARTS_REMAINING),
        }
    }

    /// `shard_id` starts waiting for its turn: it counts in its bucket's
    /// depth until the [`Waiting`] is dropped, and [`Waiting::turn`]
    /// records how long it waited.
    pub fn waiting(&self, shard_id: u32) -> Waiting<'_> {
        let bucket = &self.buckets[shard_id as usize % self.buckets.len()];
        bucket.depth.increment(1.0);
        Waiting {
            bucket,
            since: Instant::now(),
        }
    }

    /// The session starts left today.
    pub fn remaining(&self, remaining: u32) {
        self.remaining.set(remaining);
    }
}

/// A shard waiting for its identify turn (see [`QueueMetrics::waiting`]).
#[must_use = "dropping it ends the wait"]
pub struct Waiting<'a> {
    bucket: &'a Bucket,
    since: Instant,
}

impl std::fmt::Debug for Waiting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl Waiting<'_> {
    /// The shard has its turn: records the wait.
    pub fn turn(self) {
        self.bucket.wait.record(self.since.elapsed().as_secs_f64());
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.bucket.depth.decrement(1.0);
    }
}

/// The series of a cluster's generations.
pub(crate) struct ReshardMetrics {
    current: Gauge,
    next: Gauge,
    duration: Histogram,
    copies: metrics::Counter,
}

impl ReshardMetrics {
    pub(crate) fn new() -> Self {
        describe();
        Self {
            current: metrics::gauge!(GENERATION_SHARDS, "generation" => "current"),
            next: metrics::gauge!(GENERATION_SHARDS, "generation" => "next"),
            duration: metrics::histogram!(RESHARD_DURATION),
            copies: metrics::counter!(RESHARD_COPIES_DROPPED),
        }
    }

    /// The shard counts of the running generation and of the one starting.
    pub(crate) fn generations(&self, current: u32, next: u32) {
        self.current.set(current);
        self.next.set(next);
    }

    /// A reshard switched `took` after it started.
    pub(crate) fn switched(&self, took: std::time::Duration) {
        self.duration.record(took.as_secs_f64());
    }

    /// A reshard that ended dropped `copies`.
    pub(crate) fn copies(&self, copies: u64) {
        self.copies.increment(copies);
    }
}

fn describe() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_gauge!(SESSION_STARTS_REMAINING, "Session starts left today");
        metrics::describe_histogram!(
            IDENTIFY_QUEUE_WAIT,
            Unit::Seconds,
            "Time a shard waited for its identify turn, by bucket"
        );
        metrics::describe_gauge!(
            IDENTIFY_QUEUE_DEPTH,
            "Shards waiting for their identify turn, by bucket"
        );
        metrics::describe_gauge!(
            GENERATION_SHARDS,
            "Shards of the running generation and of the one a reshard starts"
        );
        metrics::describe_histogram!(
            RESHARD_DURATION,
            Unit::Seconds,
            "Time from a reshard's start to its switch"
        );
        metrics::describe_counter!(
            RESHARD_COPIES_DROPPED,
            "Events dropped around a reshard's switch as copies of the other generation's"
        );
    });
}
