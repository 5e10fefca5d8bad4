//! Resharding across nodes, range by range.
//!
//! A reshard recorded in the sessions bucket (`crate::reshard`) is carried
//! out by each range's holder: a range keeps a guild's lineage through a
//! multiple of the shard count, so the holder runs the range's shards of
//! both generations and merges each guild's two streams with the cluster's
//! [`Overlap`], as one process does:
//! 1. it starts the range's new shards beside the old ones (through the
//!    identify queue), under slot keys with [`NEXT`] set;
//! 2. once they are all READY, the range switches: each guild's events
//!    come from the new generation from its cut on;
//! 3. once the merge is done (the window has passed and nothing waits for
//!    its copy), the old shards close with 1000, the new ones take the
//!    plain keys and store their sessions, and the range is marked
//!    resharded;
//! 4. the node that sees every range resharded moves the shard count on
//!    and removes the record.
//!
//! While a range merges, its new shards' stored seq stays where it was
//! (their events come out of order), so a node that dies then leaves the
//! new shards to identify again under the next holder.

use std::collections::BTreeSet;

use shardwire_cluster::reshard::Overlap;
use shardwire_shard::{Session, ShardEvent};
use tokio::time::Instant;

use super::{HANDOVER_LIMIT, NEXT, Runner};
use crate::Reshard;
use crate::reshard::lineage;

/// Closes an old generation's session for good: its guilds are the new
/// generation's now.
const SESSION_ENDING_CLOSE: u16 = 1000;

/// One range's reshard on this node.
pub(super) struct RangeReshard {
    pub(super) overlap: Overlap,
    /// The new shards' slot keys, and those READY.
    new_keys: BTreeSet<u32>,
    ready: BTreeSet<u32>,
    started: Instant,
    /// Since when the old shards are closing.
    retiring: Option<Instant>,
}

impl Runner {
    /// The range a slot belongs to, in every generation.
    pub(super) fn range_of(&self, key: u32) -> u32 {
        ((key & !NEXT) % self.base.max(1)) / self.config.range_size.max(1)
    }

    /// The shards of a range in the generation it runs now (the old one
    /// while it merges).
    pub(super) fn range_shards(&self, range: u32) -> Vec<u32> {
        let total = match self.reshard {
            Some(reshard) if self.resharded.contains(&range) => reshard.to,
            _ => self.total,
        };
        lineage(range, self.config.range_size, self.base, total)
    }

    /// Every slot key of a range, of both generations.
    pub(super) fn range_keys(&self, range: u32) -> Vec<u32> {
        let mut keys: Vec<u32> = self
            .slots
            .keys()
            .copied()
            .filter(|key| self.range_of(*key) == range)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The key the slot of this generation lives under: `key`, or the
    /// other generation's key once a merge has ended and moved it.
    pub(super) fn slot_key(&self, key: u32, generation: u64) -> Option<u32> {
        [key, key ^ NEXT].into_iter().find(|key| {
            self.slots
                .get(key)
                .is_some_and(|s| s.generation == generation)
        })
    }

    /// Follows the reshard record: starts the merge of each held range
    /// when one appears, and takes the new shard count once it is gone.
    pub(super) async fn follow_reshard(&mut self) {
        let record = match self.sessions.reshard().await {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, "cannot read the reshard record");
                return;
            }
        };
        match (self.reshard, record) {
            (None, Some(reshard)) if reshard.from == self.total => {
                tracing::info!(from = reshard.from, to = reshard.to, "resharding");
                self.reshard = Some(reshard);
                let ranges: Vec<u32> = self
                    .held
                    .keys()
                    .copied()
                    .filter(|range| !self.handing_over.contains_key(range))
                    .collect();
                for range in ranges {
                    self.begin_range_reshard(range);
                }
            }
            (None, Some(reshard)) => {
                tracing::warn!(
                    from = reshard.from,
                    to = reshard.to,
                    total = self.total,
                    "a reshard that does not start from this node's shard count; ignored"
                );
            }
            (Some(reshard), None) => match self.sessions.total().await {
                Ok(Some(total)) if total == reshard.to => {
                    tracing::info!(total, "resharded");
                    self.total = total;
                    self.reshard = None;
                    self.resharded.clear();
                    let size = self.config.range_size;
                    self.capacity_ranges =
                        super::capacity_ranges(self.config.capacity, size, self.base, total);
                    if self.config.capacity < size * (total / self.base.max(1)) {
                        tracing::warn!(
                            capacity = self.config.capacity,
                            range_shards = size * (total / self.base.max(1)),
                            "a range now holds more shards than this node's capacity; raise it"
                        );
                    }
                    self.leases = self.leases.clone().with_capacity(self.capacity_ranges);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot read the shard count"),
            },
            _ => {}
        }
        self.advance_reshards().await;
    }

    /// Starts the new generation's shards of a range beside the old ones.
    pub(super) fn begin_range_reshard(&mut self, range: u32) {
        let Some(reshard) = self.reshard else {
            return;
        };
        let new: Vec<u32> = lineage(range, self.config.range_size, self.base, reshard.to);
        let mut new_keys = BTreeSet::new();
        for shard in new {
            let key = shard | NEXT;
            self.start_shard_of(key, reshard.to, None, 0);
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.merged = true;
            }
            new_keys.insert(key);
        }
        tracing::info!(
            range,
            shards = new_keys.len(),
            "starting a range's new generation"
        );
        self.reshards.insert(
            range,
            RangeReshard {
                overlap: Overlap::new(reshard.from, reshard.to, self.config.reshard_overlap),
                new_keys,
                ready: BTreeSet::new(),
                started: Instant::now(),
                retiring: None,
            },
        );
        self.publish_owned();
    }

    /// A shard of a merging range is READY.
    pub(super) fn on_ready(&mut self, key: u32) {
        let range = self.range_of(key);
        let Some(merge) = self.reshards.get_mut(&range) else {
            return;
        };
        if !merge.new_keys.contains(&key) {
            return;
        }
        merge.ready.insert(key);
        if merge.ready.len() == merge.new_keys.len() && !merge.overlap.switched() {
            merge.overlap.switch(Instant::now());
            tracing::info!(
                range,
                took = ?merge.started.elapsed(),
                "a range's new generation is READY: switched"
            );
        }
    }

    /// Feeds a dispatch of a merging range to its merge, and publishes
    /// what comes out; the event back when its range is not merging.
    pub(super) async fn merge(&mut self, key: u32, event: ShardEvent) -> Result<(), ShardEvent> {
        let range = self.range_of(key);
        let Some(merge) = self.reshards.get_mut(&range) else {
            return Err(event);
        };
        if key & NEXT == 0 {
            merge.overlap.old(Instant::now(), key, event);
        } else {
            merge.overlap.new_event(key, event);
        }
        self.drain_merge(range).await;
        Ok(())
    }

    /// Publishes what a range's merge hands out.
    async fn drain_merge(&mut self, range: u32) {
        loop {
            let Some((key, event)) = self.reshards.get_mut(&range).and_then(|m| m.overlap.pop())
            else {
                return;
            };
            let (from_reshard, event) = match event {
                ShardEvent::FromReshard { total, event } => (Some(total), *event),
                event => (None, event),
            };
            if let ShardEvent::Dispatch {
                seq,
                event_type,
                json,
                ..
            } = event
            {
                self.enqueue(key, seq, &event_type, json, from_reshard)
                    .await;
            }
        }
    }

    /// Moves each merging range on: its merge's clock, then, once the
    /// merge is done, the old shards' close and the new ones' takeover.
    async fn advance_reshards(&mut self) {
        let now = Instant::now();
        let ranges: Vec<u32> = self.reshards.keys().copied().collect();
        for range in ranges {
            if let Some(merge) = self.reshards.get_mut(&range)
                && merge.overlap.poll_timeout().is_some_and(|at| at <= now)
            {
                merge.overlap.handle_timeout(now);
            }
            self.drain_merge(range).await;
            let Some(merge) = self.reshards.get(&range) else {
                continue;
            };
            let (retiring, done) = (merge.retiring, merge.overlap.is_done());
            match retiring {
                None if done => {
                    if let Some(merge) = self.reshards.get_mut(&range) {
                        merge.retiring = Some(now);
                    }
                    self.retire_old(range);
                }
                Some(since) if since + HANDOVER_LIMIT <= now || self.old_gone(range) => {
                    self.end_range_reshard(range).await;
                }
                _ => {}
            }
        }
        self.end_reshard_if_all_done().await;
    }

    /// Closes a range's old shards for good.
    fn retire_old(&mut self, range: u32) {
        for key in self.range_keys(range) {
            if key & NEXT != 0 {
                continue;
            }
            if let Some(slot) = self.slots.get_mut(&key)
                && let Some(shard) = slot.shard.take()
            {
                shard.disconnect(SESSION_ENDING_CLOSE);
            }
        }
        tracing::info!(range, "the merge is done; closing the range's old shards");
    }

    /// Whether a range's old shards have ended and given their last events.
    fn old_gone(&self, range: u32) -> bool {
        self.range_keys(range)
            .into_iter()
            .filter(|key| key & NEXT == 0)
            .all(|key| self.slots.get(&key).is_none_or(|slot| slot.ended))
    }

    /// The range runs the new generation alone: the new shards take the
    /// plain keys and store their sessions, and the range is marked
    /// resharded.
    async fn end_range_reshard(&mut self, range: u32) {
        let Some(merge) = self.reshards.remove(&range) else {
            return;
        };
        for key in self.range_keys(range) {
            if key & NEXT == 0
                && let Some(slot) = self.slots.remove(&key)
            {
                self.queued -= slot.in_flight.len();
            }
        }
        let mut stored = true;
        for key in merge.new_keys {
            let Some(mut slot) = self.slots.remove(&key) else {
                continue;
            };
            let shard = key & !NEXT;
            // Everything before the oldest event in flight is out (or was a
            // copy): resume from there.
            let seq = slot
                .in_flight
                .front()
                .map_or(slot.last_seq, |front| front.seq.saturating_sub(1));
            slot.merged = false;
            if let Some((session_id, resume_url)) = &slot.session {
                slot.acked = Some(Session {
                    session_id: session_id.to_string(),
                    seq,
                    resume_url: resume_url.to_string(),
                });
                slot.dirty = true;
            }
            match self.sessions.take(shard).await {
                Ok((_, revision)) => slot.revision = revision,
                Err(error) => {
                    tracing::warn!(shard, %error, "cannot take the new shard's session key");
                    stored = false;
                }
            }
            self.slots.insert(shard, slot);
            stored &= self.flush_session(shard).await;
        }
        self.resharded.insert(range);
        if stored && let Err(error) = self.sessions.range_resharded(range).await {
            tracing::warn!(range, %error, "cannot mark the range resharded");
        }
        tracing::info!(range, "the range runs the new generation alone");
        self.publish_owned();
    }

    /// Once every range is resharded, moves the shard count on.
    async fn end_reshard_if_all_done(&mut self) {
        let Some(reshard) = self.reshard else {
            return;
        };
        if !self.reshards.is_empty() || self.held.keys().any(|r| !self.resharded.contains(r)) {
            return;
        }
        match self.sessions.resharded_ranges(self.ranges).await {
            Ok(done) if done.len() == self.ranges as usize => {
                if let Err(error) = self.sessions.end_reshard(reshard, self.ranges).await {
                    tracing::warn!(%error, "cannot end the reshard");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the resharded ranges"),
        }
    }

    /// What the node should run for a range it just claimed while a
    /// reshard is recorded: `Some(to)` when the range was resharded
    /// already.
    pub(super) async fn claimed_during_reshard(&mut self, range: u32) -> Option<Reshard> {
        let reshard = self.reshard?;
        match self.sessions.resharded_ranges(self.ranges).await {
            Ok(done) if done.contains(&range) => {
                self.resharded.insert(range);
                None
            }
            _ => Some(reshard),
        }
    }
}
