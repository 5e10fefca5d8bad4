//! Leases: renewing those held, stopping the shards of one about to lapse,
//! and claiming or handing over ranges as `balance.rs` decides.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::balance::{Decision, Snapshot, decide};
use super::{NodeError, Runner};
use crate::NatsError;

impl Runner {
    /// Renews, announces, refreshes the session start limit, claims. The
    /// leases come first, each renewal bounded in time, so nothing else
    /// delays noticing one that is about to lapse.
    pub(super) async fn tick(&mut self) {
        // Before the renewals, which may wait on NATS.
        self.expire_acks();
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
        // The announcement and the listings below wait at most until the
        // first held lease needs its next renewal: a request sent while a
        // stream elects a new leader gets no answer and waits out its
        // timeout, and the tick holds the node's loop meanwhile.
        let answer_by =
            Instant::now() + store_budget(ttl, self.held.values().map(|l| l.renewed_at));
        match tokio::time::timeout_at(answer_by, self.leases.announce()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot announce the node"),
            Err(_) => tracing::warn!("no answer to the node's announcement in time"),
        }
        self.retry_publishes().await;
        self.refresh_limit().await;
        // Claims follow the stored count: not on a tick it was not read.
        if self.follow_reshard().await
            && let Err(error) = self.balance(answer_by).await
        {
            tracing::warn!(%error, "cannot share the shards out");
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

    /// Claims a range or hands one over, as [`balance`](super::balance)
    /// decides from the leases and the live nodes as they are now, listed
    /// by `answer_by`.
    pub(super) async fn balance(&mut self, answer_by: Instant) -> Result<(), NodeError> {
        let listing = async {
            let holders = self.leases.holders().await?;
            let live = self.leases.live_nodes().await?;
            Ok::<_, NatsError>((holders, live))
        };
        let (holders, live) =
            tokio::time::timeout_at(answer_by, listing)
                .await
                .map_err(|_| {
                    NatsError::jetstream(
                        "listing the leases and the live nodes",
                        "no answer before a held lease is due for renewal",
                    )
                })??;
        self.unheld_ticks
            .retain(|range, _| !holders.contains_key(range));
        for range in (0..self.ranges).filter(|range| !holders.contains_key(range)) {
            *self.unheld_ticks.entry(range).or_default() += 1;
        }
        let now = Instant::now();
        self.cooling.retain(|_, until| *until > now);
        let cooling: BTreeSet<u32> = self.cooling.keys().copied().collect();
        let givable: BTreeSet<u32> = self
            .held
            .keys()
            .copied()
            .filter(|range| !self.handing_over.contains_key(range) && self.resumable(*range))
            // No range moves while a reshard is under way.
            .filter(|_| self.reshard.is_none())
            .collect();
        let ranges = u64::from(self.ranges.max(1));
        let decision = decide(&Snapshot {
            me: &self.config.node_id,
            capacity: self.capacity_ranges,
            ranges: self.ranges,
            holders: &holders,
            live: &live,
            unheld_ticks: &self.unheld_ticks,
            cooling: &cooling,
            givable: &givable,
            handing_over: !self.handing_over.is_empty(),
            offset: u32::try_from(stable_hash(&self.config.node_id) % ranges).unwrap_or(0),
        });
        match decision {
            Decision::Claim(range) => self.claim(range).await,
            Decision::HandOver(range) => {
                self.begin_handover(range);
                Ok(())
            }
            Decision::Idle => Ok(()),
        }
    }

    /// Whether every shard of a range has a session JetStream has events
    /// of (stored as the handover ends), so whoever takes the range over
    /// resumes it.
    fn resumable(&self, range: u32) -> bool {
        self.range_shards(range).into_iter().all(|shard| {
            self.slots
                .get(&shard)
                .is_some_and(|slot| slot.acked.is_some())
        })
    }

    /// Claims `range` and starts its shards, each from its stored session.
    async fn claim(&mut self, range: u32) -> Result<(), NodeError> {
        let Some(lease) = self.leases.claim(range).await? else {
            return Ok(());
        };
        tracing::info!(range, revision = lease.revision, "claimed a shard range");
        self.held.insert(range, lease);
        // A reshard under way: the range's old shards, and its new ones
        // beside them, unless it is resharded already.
        let merging = match self.must_merge(range).await {
            Ok(merging) => merging,
            Err(error) => {
                tracing::warn!(range, %error, "cannot read the range's reshard; releasing it");
                if let Some(lease) = self.held.remove(&range) {
                    let _ = self.leases.release(lease).await;
                }
                return Err(error.into());
            }
        };
        let total = match self.reshard {
            Some(reshard) if self.resharded.contains(&range) => reshard.to,
            _ => self.total,
        };
        for shard in self.range_shards(range) {
            match self.sessions.take(shard).await {
                Ok((session, revision)) => self.start_shard_of(shard, total, session, revision),
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
        if merging {
            self.begin_range_reshard(range);
        }
        self.publish_owned();
        Ok(())
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
        self.handing_over.remove(&range);
        self.reshards.remove(&range);
        self.resharded.remove(&range);
        for shard in self.range_keys(range) {
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

/// How long the tick's store calls after the renewals may take: until the
/// first held lease (renewed at the instants given) must start its next
/// renewal, which takes up to a quarter of the TTL, to end before the
/// lease goes stale at three quarters of it. At most [`MAX_STORE_WAIT`]
/// when no lease is held, at least [`MIN_STORE_WAIT`].
fn store_budget(ttl: Duration, renewed: impl Iterator<Item = Instant>) -> Duration {
    renewed
        .map(|at| (ttl / 2).saturating_sub(at.elapsed()))
        .min()
        .unwrap_or(MAX_STORE_WAIT)
        .clamp(MIN_STORE_WAIT, MAX_STORE_WAIT)
}

/// The longest the tick waits on the store after its renewals.
const MAX_STORE_WAIT: Duration = Duration::from_secs(10);
/// The least: a store that answers at all answers within this.
const MIN_STORE_WAIT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_store_may_take_until_the_first_lease_needs_renewing() {
        let ttl = Duration::from_secs(30);
        let now = Instant::now();
        tokio::time::advance(Duration::from_secs(9)).await;
        // Renewed 9 s ago: 6 s until it must be renewed again (15 s).
        assert_eq!(store_budget(ttl, [now].into_iter()), Duration::from_secs(6));
        // The least fresh lease decides.
        let later = Instant::now();
        assert_eq!(
            store_budget(ttl, [later, now].into_iter()),
            Duration::from_secs(6)
        );
        // Past its renewal time: the floor.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(store_budget(ttl, [now].into_iter()), MIN_STORE_WAIT);
        // A fresh lease with a long TTL, or none: the ceiling.
        let fresh = Instant::now();
        assert_eq!(
            store_budget(Duration::from_secs(60), [fresh].into_iter()),
            MAX_STORE_WAIT
        );
        assert_eq!(store_budget(ttl, std::iter::empty()), MAX_STORE_WAIT);
    }
}
