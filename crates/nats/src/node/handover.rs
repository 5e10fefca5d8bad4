//! Handing a range over while the node keeps running, by the path a
//! graceful stop takes: its shards close resumably, what they delivered is
//! published, their sessions are stored, and the lease is released, so the
//! next owner resumes them with nothing lost and no identify.

use tokio::time::Instant;

use super::{HANDOVER_LIMIT, Runner};

impl Runner {
    /// Starts handing `range` over: its shards close, and the node keeps
    /// taking their last events until their tasks end.
    pub(super) fn begin_handover(&mut self, range: u32) {
        for shard in self.range_keys(range) {
            if let Some(slot) = self.slots.get_mut(&shard) {
                drop(slot.shard.take());
            }
        }
        self.handing_over
            .insert(range, Instant::now() + HANDOVER_LIMIT);
        tracing::info!(range, "handing a shard range over");
    }

    /// A shard's task has ended and its last event was taken.
    pub(super) fn on_ended(&mut self, key: u32, generation: u64) {
        if let Some(key) = self.slot_key(key, generation)
            && let Some(slot) = self.slots.get_mut(&key)
        {
            slot.ended = true;
        }
    }

    /// Ends each handover whose shards have closed with every event
    /// stored, or that has waited long enough.
    pub(super) async fn finish_handovers(&mut self) {
        let now = Instant::now();
        let done: Vec<u32> = self
            .handing_over
            .iter()
            .filter(|(range, deadline)| now >= **deadline || self.settled(**range))
            .map(|(range, _)| *range)
            .collect();
        for range in done {
            self.hand_over(range).await;
        }
    }

    /// Whether every shard of the range has ended and JetStream has all it
    /// delivered.
    fn settled(&self, range: u32) -> bool {
        self.range_keys(range).into_iter().all(|shard| {
            self.slots
                .get(&shard)
                .is_none_or(|slot| slot.ended && slot.in_flight.is_empty())
        })
    }

    /// Stores the range's sessions and releases its lease. A session that
    /// cannot be stored leaves an older one: the next owner resumes from
    /// there, and JetStream drops the copies the gateway replays.
    pub(super) async fn hand_over(&mut self, range: u32) {
        self.handing_over.remove(&range);
        // A merging range's new shards have no stored session: the next
        // holder starts them again.
        self.reshards.remove(&range);
        self.resharded.remove(&range);
        for shard in self.range_keys(range) {
            if self.slots.get(&shard).is_some_and(|slot| !slot.merged) {
                self.flush_session(shard).await;
            }
        }
        // Storing a session may have found the range fenced and lost it.
        if let Some(lease) = self.held.remove(&range) {
            match self.leases.release(lease).await {
                Ok(()) => self.metrics.handed_over(),
                Err(error) => {
                    tracing::warn!(range, %error, "cannot release a lease; it lapses by itself");
                }
            }
        }
        for shard in self.range_keys(range) {
            if let Some(slot) = self.slots.remove(&shard) {
                self.queued -= slot.in_flight.len();
            }
        }
        self.cooling
            .insert(range, Instant::now() + self.config.lease_ttl * 3);
        tracing::info!(range, "handed a shard range over");
        self.publish_owned();
    }
}
