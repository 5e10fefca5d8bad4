//! A node's metrics, through the [`metrics`] facade: what it publishes to
//! JetStream and the leases it holds (its shards' own are in
//! [`shardwire_shard::metrics`], its identify queue's in
//! [`shardwire_cluster::metrics`]).

use metrics::{Counter, Gauge, Histogram, Unit};

/// Dispatches JetStream acknowledged as stored, by `shard` (counter).
pub const EVENTS_PUBLISHED: &str = "shardwire_nats_events_published_total";
/// Dispatches published again after a failed publish, by `shard`
/// (counter): each time one is handed to NATS again.
pub const PUBLISH_RETRIES: &str = "shardwire_nats_publish_retries_total";
/// From a publish to JetStream's acknowledgement (histogram, seconds).
pub const ACK_LATENCY: &str = "shardwire_nats_ack_latency_seconds";
/// Shard ranges this node holds a lease on (gauge).
pub const LEASES_HELD: &str = "shardwire_nats_leases_held";
/// Leases lost: fenced by another node (on renewal, or on storing a
/// session), or about to lapse unrenewed (counter).
pub const LEASE_LOSSES: &str = "shardwire_nats_lease_losses_total";
/// Leases handed over gracefully: sessions stored, lease released, on a
/// node's shutdown or to balance the cluster (counter).
pub const HANDOVERS: &str = "shardwire_nats_handovers_total";

/// One node's handles.
pub(crate) struct NodeMetrics {
    pub(crate) ack_latency: Histogram,
    leases_held: Gauge,
    lease_losses: Counter,
    handovers: Counter,
}

impl NodeMetrics {
    pub(crate) fn new() -> Self {
        describe();
        Self {
            ack_latency: metrics::histogram!(ACK_LATENCY),
            leases_held: metrics::gauge!(LEASES_HELD),
            lease_losses: metrics::counter!(LEASE_LOSSES),
            handovers: metrics::counter!(HANDOVERS),
        }
    }

    pub(crate) fn leases_held(&self, held: usize) {
        self.leases_held.set(held as f64);
    }

    pub(crate) fn lease_lost(&self) {
        self.lease_losses.increment(1);
    }

    pub(crate) fn handed_over(&self) {
        self.handovers.increment(1);
    }
}

/// A shard's counter of published events.
pub(crate) fn published(shard: u32) -> Counter {
    metrics::counter!(EVENTS_PUBLISHED, "shard" => shard.to_string())
}

/// Counts `events` published again for `shard`.
pub(crate) fn retried(shard: u32, events: usize) {
    metrics::counter!(PUBLISH_RETRIES, "shard" => shard.to_string()).increment(events as u64);
}

fn describe() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(EVENTS_PUBLISHED, "Dispatches JetStream stored, by shard");
        metrics::describe_counter!(
            PUBLISH_RETRIES,
            "Dispatches published again after a failed publish, by shard"
        );
        metrics::describe_histogram!(
            ACK_LATENCY,
            Unit::Seconds,
            "From a publish to JetStream's acknowledgement"
        );
        metrics::describe_gauge!(LEASES_HELD, "Shard ranges this node leases");
        metrics::describe_counter!(LEASE_LOSSES, "Leases lost to another node or to lapsing");
        metrics::describe_counter!(
            HANDOVERS,
            "Leases handed over gracefully, on shutdown or to balance the cluster"
        );
    });
}
