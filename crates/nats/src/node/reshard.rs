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
//!    its copy) the old shards close with 1000; once JetStream has all
//!    they published, the new shards take the plain keys and store their
//!    sessions, and the range is marked resharded;
//! 4. the node that finds every range marked moves the shard count on and
//!    removes the record; every node takes the new count from the store.
//!
//! While a range merges its new shards' stored seq stays put (their events
//! come out of order), and from the switch on its old shards' too: a node
//! that dies then leaves the next holder to resume the old shards from
//! there and identify the new ones again, which may store events of the
//! merge twice, never lose one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use shardwire_cluster::reshard::Overlap;
use shardwire_shard::ShardEvent;
use tokio::time::Instant;

use super::publish::Stored;
use super::{HANDOVER_LIMIT, NEXT, Runner};
use crate::reshard::lineage;

/// Closes an old generation's session for good: its guilds are the new
/// generation's now.
const SESSION_ENDING_CLOSE: u16 = 1000;

/// A session's id and resume URL, as each published event carries them.
type Tag = (Arc<str>, Arc<str>);

/// One range's reshard on this node.
pub(super) struct RangeReshard {
    overlap: Overlap,
    /// The new shards' slot keys, and those READY.
    new_keys: BTreeSet<u32>,
    ready: BTreeSet<u32>,
    /// The ids new-generation events are fed to the merge under, each
    /// standing for one slot and one of its sessions: an event the merge
    /// held comes out under the session it came on.
    feeds: HashMap<u32, (u32, Tag)>,
    /// Each new slot's feed id for its current session.
    feed_of: HashMap<u32, u32>,
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

    /// Follows the store: the shard count, and the reshard record (a merge
    /// for each held range when one appears). `false` when the store did
    /// not answer: nothing should be claimed on what this node believed.
    pub(super) async fn follow_reshard(&mut self) -> bool {
        let (record, total) = match (self.sessions.reshard().await, self.sessions.total().await) {
            (Ok(record), Ok(total)) => (record, total),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot read the shard count or the reshard record");
                return false;
            }
        };
        // The count moved on: as a reshard ended, or while this node was
        // away or starting.
        if let Some(total) = total
            && total != self.total
            && self.reshards.is_empty()
            && record.is_none_or(|r| r.from == total)
        {
            self.adopt_total(total);
        }
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
            (Some(reshard), None) if total != Some(reshard.to) => {
                tracing::error!(
                    from = reshard.from,
                    to = reshard.to,
                    "the reshard record was removed before the count moved; the ranges still \
                     merging keep their old shards"
                );
                self.give_up_merges();
            }
            _ => {}
        }
        self.advance_reshards().await;
        true
    }

    /// Takes the stored shard count. A held range running shards of
    /// another count is handed over, to be claimed again with this one.
    fn adopt_total(&mut self, total: u32) {
        tracing::info!(
            from = self.total,
            to = total,
            "the cluster's shard count moved on"
        );
        let stale: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|range| {
                !self.resharded.contains(range) && !self.handing_over.contains_key(range)
            })
            .collect();
        self.total = total;
        self.reshard = None;
        self.resharded.clear();
        self.unmarked.clear();
        for range in stale {
            self.begin_handover(range);
        }
        let size = self.config.range_size;
        let range_shards = super::shards_per_range(size, self.base, total);
        if self.config.capacity < range_shards {
            tracing::warn!(
                capacity = self.config.capacity,
                range_shards,
                "a range now holds more shards than this node's capacity; raise it"
            );
        }
        self.capacity_ranges = super::capacity_ranges(self.config.capacity, size, self.base, total);
        self.leases = self.leases.clone().with_capacity(self.capacity_ranges);
    }

    /// Stops the new shards of every range still merging; the old ones go
    /// on as if nothing had started.
    fn give_up_merges(&mut self) {
        let merges: Vec<(u32, RangeReshard)> = self.reshards.drain().collect();
        for (_, merge) in merges {
            for key in merge.new_keys {
                if let Some(slot) = self.slots.remove(&key) {
                    self.queued -= slot.in_flight.len();
                    if let Some(shard) = slot.shard {
                        shard.disconnect(SESSION_ENDING_CLOSE);
                    }
                }
            }
        }
        for slot in self.slots.values_mut() {
            slot.merged = false;
        }
        self.reshard = None;
        self.publish_owned();
    }

    /// Starts the new generation's shards of a range beside the old ones.
    pub(super) fn begin_range_reshard(&mut self, range: u32) {
        let Some(reshard) = self.reshard else {
            return;
        };
        if self.reshards.contains_key(&range) || self.resharded.contains(&range) {
            return;
        }
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
                feeds: HashMap::new(),
                feed_of: HashMap::new(),
                started: Instant::now(),
                retiring: None,
            },
        );
        self.publish_owned();
    }

    /// A new shard of a merging range started a session: its events are
    /// fed to the merge under an id of their own.
    pub(super) fn on_new_session(&mut self, key: u32) {
        let range = self.range_of(key);
        let Some(tag) = self.slots.get(&key).and_then(|slot| slot.session.clone()) else {
            return;
        };
        let Some(merge) = self.reshards.get_mut(&range) else {
            return;
        };
        if !merge.new_keys.contains(&key) {
            return;
        }
        let feed = NEXT | u32::try_from(merge.feeds.len()).unwrap_or(u32::MAX >> 1);
        merge.feeds.insert(feed, (key, tag));
        merge.feed_of.insert(key, feed);
    }

    /// A shard of a merging range handed out its READY: once every new one
    /// has, the range switches.
    pub(super) fn on_ready(&mut self, key: u32) {
        let range = self.range_of(key);
        let Some(merge) = self.reshards.get_mut(&range) else {
            return;
        };
        if !merge.new_keys.contains(&key) {
            return;
        }
        merge.ready.insert(key);
        if merge.ready.len() < merge.new_keys.len() || merge.overlap.switched() {
            return;
        }
        merge.overlap.switch(Instant::now());
        tracing::info!(
            range,
            took = ?merge.started.elapsed(),
            "a range's new generation is READY: switched"
        );
        // From the cut on, an old event may be dropped for a copy still on
        // its way to JetStream: the old shards' stored seq stays here.
        for key in self.range_keys(range) {
            if key & NEXT == 0
                && let Some(slot) = self.slots.get_mut(&key)
            {
                slot.merged = true;
            }
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
            let Some(feed) = merge.feed_of.get(&key).copied() else {
                // No session yet: nothing can be published for it.
                return Err(event);
            };
            merge.overlap.new_event(feed, event);
        }
        self.drain_merge(range).await;
        Ok(())
    }

    /// Publishes what a range's merge hands out.
    async fn drain_merge(&mut self, range: u32) {
        loop {
            let Some(merge) = self.reshards.get_mut(&range) else {
                return;
            };
            let Some((id, event)) = merge.overlap.pop() else {
                return;
            };
            let (key, tag) = if id & NEXT == 0 {
                (id, None)
            } else {
                match merge.feeds.get(&id) {
                    Some((key, tag)) => (*key, Some(tag.clone())),
                    None => continue,
                }
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
                self.enqueue(key, seq, &event_type, json, from_reshard, tag)
                    .await;
            }
        }
    }

    /// Moves each merging range on (its merge's clock, then, once the merge
    /// is done, the old shards' close and the new ones' takeover), marks
    /// the ranges whose new sessions are stored, and ends the reshard once
    /// every range is marked.
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
                Some(since) if self.old_gone(range, since + HANDOVER_LIMIT <= now) => {
                    self.end_range_reshard(range).await;
                }
                _ => {}
            }
        }
        self.mark_resharded().await;
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

    /// Whether a range's old shards have ended (or `waited` long enough for
    /// them) and JetStream has everything they published.
    fn old_gone(&self, range: u32, waited: bool) -> bool {
        self.range_keys(range)
            .into_iter()
            .filter(|key| key & NEXT == 0)
            .all(|key| {
                self.slots
                    .get(&key)
                    .is_none_or(|slot| (slot.ended || waited) && slot.in_flight.is_empty())
            })
    }

    /// The range runs the new generation alone: the new shards take the
    /// plain keys, their sessions to be stored from where every earlier
    /// event is in JetStream. Left for the next tick when JetStream still
    /// holds held events of theirs out of order, or the store does not
    /// answer.
    async fn end_range_reshard(&mut self, range: u32) {
        let Some(merge) = self.reshards.get(&range) else {
            return;
        };
        let new_keys: Vec<u32> = merge.new_keys.iter().copied().collect();
        let in_order = new_keys.iter().all(|key| {
            self.slots.get(key).is_none_or(|slot| {
                slot.in_flight
                    .iter()
                    .zip(slot.in_flight.iter().skip(1))
                    .all(|(a, b)| a.seq < b.seq)
            })
        });
        if !in_order {
            return;
        }
        let mut revisions = HashMap::new();
        for key in &new_keys {
            let shard = key & !NEXT;
            match self.sessions.take(shard).await {
                Ok((_, revision)) => {
                    revisions.insert(*key, revision);
                }
                Err(error) => {
                    tracing::warn!(shard, %error, "cannot take the new shard's session key; trying again");
                    return;
                }
            }
        }
        self.reshards.remove(&range);
        for key in self.range_keys(range) {
            if key & NEXT == 0
                && let Some(slot) = self.slots.remove(&key)
            {
                self.queued -= slot.in_flight.len();
            }
        }
        for key in new_keys {
            let Some(mut slot) = self.slots.remove(&key) else {
                continue;
            };
            // Everything before the oldest event in flight is in JetStream
            // (or was a copy): resume from there.
            let seq = slot
                .in_flight
                .front()
                .map_or(slot.last_seq, |front| front.seq.saturating_sub(1));
            slot.merged = false;
            slot.revision = revisions.get(&key).copied().unwrap_or(0);
            if let Some(tag) = &slot.session {
                slot.acked = Some(Stored::new(seq, tag));
                slot.dirty = true;
            }
            self.slots.insert(key & !NEXT, slot);
        }
        self.resharded.insert(range);
        self.unmarked.insert(range);
        tracing::info!(range, "the range runs the new generation alone");
        self.publish_owned();
    }

    /// Stores the new sessions of each resharded range not marked yet, and
    /// marks those stored.
    async fn mark_resharded(&mut self) {
        let (Some(reshard), false) = (self.reshard, self.unmarked.is_empty()) else {
            return;
        };
        let ranges: Vec<u32> = self.unmarked.iter().copied().collect();
        for range in ranges {
            // Stored now (a slot written since is fine: it was stored once).
            let mut stored = true;
            for key in self.range_keys(range) {
                stored &= self.flush_session(key).await;
            }
            if !stored {
                continue;
            }
            match self.sessions.range_resharded(reshard, range).await {
                Ok(()) => {
                    self.unmarked.remove(&range);
                }
                Err(error) => tracing::warn!(range, %error, "cannot mark the range resharded"),
            }
        }
    }

    /// Once every range is marked, moves the shard count on.
    async fn end_reshard_if_all_done(&mut self) {
        let Some(reshard) = self.reshard else {
            return;
        };
        let mine_done = self.reshards.is_empty()
            && self.unmarked.is_empty()
            && self.held.keys().all(|range| self.resharded.contains(range));
        if !mine_done {
            return;
        }
        match self.sessions.resharded_ranges(reshard, self.ranges).await {
            Ok(done) if done.len() == self.ranges as usize => {
                if let Err(error) = self.sessions.end_reshard(reshard, self.ranges).await {
                    tracing::warn!(%error, "cannot end the reshard");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the resharded ranges"),
        }
    }

    /// Whether a range just claimed while a reshard is recorded must merge
    /// (`true`), or runs the new generation alone, marked resharded by its
    /// last holder (`false`, and noted).
    pub(super) async fn must_merge(&mut self, range: u32) -> Result<bool, crate::NatsError> {
        let Some(reshard) = self.reshard else {
            return Ok(false);
        };
        if self.sessions.is_range_resharded(reshard, range).await? {
            self.resharded.insert(range);
            Ok(false)
        } else {
            Ok(true)
        }
    }
}
