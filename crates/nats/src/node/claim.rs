//! Leases: renewing those held, stopping the shards of one about to lapse,
//! and claiming ranges up to the node's fair share.

use std::time::Duration;

use tokio::time::Instant;

use super::NodeError;
use super::{ORPHAN_TICKS, Runner};
use crate::NatsError;

impl Runner {
    /// Renews, announces, refreshes the session start limit, claims. The
    /// leases come first, each renewal bounded in time, so nothing else
    /// delays noticing one that is about to lapse.
    pub(super) async fn tick(&mut self) {
        self.drop_stale_leases();
        let ttl = self.config.lease_ttl;
        let ranges: Vec<u32> = self.held.keys().copied().collect();
        for range in ranges {
            let Some(mut lease) = self.held.get(&range).cloned() else {
                continue;
            };
            if lease.renewed_at.elapsed() < ttl / 3 {
                continue;
            }
            match tokio::time::timeout(ttl / 4, self.leases.renew(&mut lease)).await {
                Ok(Ok(())) => {
                    self.held.insert(range, lease);
                }
                Ok(Err(NatsError::Fenced { .. })) => {
                    tracing::warn!(range, "lease lost to another node");
                    self.lease_lost(range);
                }
                Ok(Err(error)) => tracing::warn!(range, %error, "cannot renew a lease"),
                Err(_) => tracing::warn!(range, "no answer to a lease renewal in time"),
            }
        }
        self.drop_stale_leases();
        if let Err(error) = self.leases.announce().await {
            tracing::warn!(%error, "cannot announce the node");
        }
        self.retry_publishes().await;
        self.refresh_limit().await;
        if let Err(error) = self.claim().await {
            tracing::warn!(%error, "cannot claim shards");
        }
    }

    /// Stops the shards of every lease that may lapse before it is renewed.
    pub(super) fn drop_stale_leases(&mut self) {
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, lease)| !self.leases.is_fresh(lease))
            .map(|(range, _)| *range)
            .collect();
        for range in stale {
            tracing::warn!(range, "lease about to lapse unrenewed; stopping its shards");
            self.lease_lost(range);
        }
    }

    /// Once a minute, stores the day's session starts anew if Discord's
    /// reset has passed.
    pub(super) async fn refresh_limit(&mut self) {
        if self.limit_checked.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.limit_checked = Instant::now();
        if !matches!(self.queue.remaining().await, Ok(None)) {
            return;
        }
        match self.gateway.refresh().await {
            Ok(info) => {
                let limit = &info.session_start_limit;
                if let Err(error) = self
                    .queue
                    .seed_limit(limit.remaining, limit.reset_after)
                    .await
                {
                    tracing::warn!(%error, "cannot store the session start limit");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot refresh /gateway/bot"),
        }
    }

    /// Claims unheld ranges up to this node's share.
    pub(super) async fn claim(&mut self) -> Result<(), NodeError> {
        let held_count = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
        if held_count >= self.capacity_ranges {
            return Ok(());
        }
        let holders = self.leases.holders().await?;
        let unheld: Vec<u32> = (0..self.ranges)
            .filter(|range| !holders.contains_key(range))
            .collect();
        self.unheld_ticks.retain(|range, _| unheld.contains(range));
        for range in &unheld {
            *self.unheld_ticks.entry(*range).or_default() += 1;
        }
        if unheld.is_empty() {
            return Ok(());
        }
        let live = u32::try_from(self.leases.live_holders().await?.len())
            .unwrap_or(1)
            .max(1);
        let share = self.ranges.div_ceil(live).min(self.capacity_ranges);
        // Start from a place of this node's own, so nodes claiming at once
        // tend to ask for different ranges.
        let offset = stable_hash(&self.config.node_id) % u64::from(self.ranges.max(1));
        let mut order = unheld;
        order.sort_by_key(|range| {
            (u64::from(*range) + u64::from(self.ranges) - offset) % u64::from(self.ranges)
        });
        // One range per tick: nodes take turns.
        let Some(range) = order.into_iter().find(|range| {
            held_count < share || self.unheld_ticks.get(range).copied().unwrap_or(0) > ORPHAN_TICKS
        }) else {
            return Ok(());
        };
        let Some(lease) = self.leases.claim(range).await? else {
            return Ok(());
        };
        tracing::info!(range, revision = lease.revision, "claimed a shard range");
        self.held.insert(range, lease);
        for shard in self.range_shards(range) {
            match self.sessions.take(shard).await {
                Ok((session, revision)) => self.start_shard(shard, session, revision),
                Err(error) => {
                    tracing::warn!(shard, %error, "cannot take the shard's session; releasing the range");
                    let lease = self.held.get(&range).cloned();
                    self.lose(range);
                    if let Some(lease) = lease {
                        let _ = self.leases.release(lease).await;
                    }
                    return Err(error.into());
                }
            }
        }
        self.publish_owned();
        Ok(())
    }

    pub(super) fn range_shards(&self, range: u32) -> std::ops::Range<u32> {
        let size = self.config.range_size;
        let start = range.saturating_mul(size);
        start..start.saturating_add(size).min(self.total)
    }

    /// A lease was lost (fenced by another node, or about to lapse):
    /// counts it, and stops the range's shards.
    pub(super) fn lease_lost(&mut self, range: u32) {
        self.metrics.lease_lost();
        self.lose(range);
    }

    /// Stops the shards of a range this node no longer holds. Their
    /// unacknowledged events are dropped: the next owner resumes from the
    /// stored seq and the gateway replays them.
    pub(super) fn lose(&mut self, range: u32) {
        self.held.remove(&range);
        for shard in self.range_shards(range) {
            if let Some(slot) = self.slots.remove(&shard) {
                self.queued -= slot.in_flight.len();
                drop(slot.shard);
            }
        }
        self.publish_owned();
    }
}

/// FNV-1a: a hash that is the same in every process.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
