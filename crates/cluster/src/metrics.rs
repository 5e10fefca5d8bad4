//! The identify queue's metrics, through the [`metrics`] facade (the
//! shards' own are in [`shardwire_shard::metrics`]). [`QueueMetrics`]
//! records them for [`LocalQueue`](crate::LocalQueue), and for any other
//! [`IdentifyQueue`](shardwire_shard::IdentifyQueue) that wants the same
//! series (the NATS queue uses it).

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
    });
}
