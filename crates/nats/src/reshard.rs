//! What the nodes agree on to reshard, in the sessions bucket: the range
//! base, the reshard under way, and which ranges have finished it.
//!
//! Ranges follow a guild's lineage: with `base` the cluster's first shard
//! count, shard `s` of any later count belongs to range
//! `(s % base) / range_size`. A count that is a multiple of the one before
//! keeps every guild in its range (guild `g` is on shard `g % total`, and
//! `g % total % base == g % base`), so one node holds both of a guild's
//! streams while both generations run, and merges them.

use std::collections::BTreeSet;

use async_nats::jetstream::kv::UpdateErrorKind;

use crate::{NatsError, SessionStore};

/// The first shard count, which ranges divide.
const BASE_KEY: &str = "range-base";
/// The reshard under way: `{"from": 4, "to": 8}`.
const RESHARD_KEY: &str = "reshard";

/// The mark of a range done with the reshard to `reshard.to`: a later
/// reshard, to another count, has marks of its own.
fn done_key(reshard: Reshard, range: u32) -> String {
    format!("reshard-done-{}-{range}", reshard.to)
}

/// A reshard the nodes carry out together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Reshard {
    /// The shard count before.
    pub from: u32,
    /// The shard count after.
    pub to: u32,
}

/// The shards of `range` when the bot runs `total` shards, ranges of
/// `size` dividing `base`.
pub(crate) fn lineage(range: u32, size: u32, base: u32, total: u32) -> Vec<u32> {
    let start = range.saturating_mul(size);
    let end = start.saturating_add(size).min(base);
    let rounds = total.checked_div(base).unwrap_or(0);
    (0..rounds)
        .flat_map(|round| (start..end).map(move |shard| shard + round * base))
        .collect()
}

impl SessionStore {
    /// The range base, stored as `total` by the first node to ask.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer;
    /// [`NatsError::Corrupt`] for a stored value that is not a count.
    pub async fn agree_base(&self, total: u32) -> Result<u32, NatsError> {
        if self
            .bucket()
            .create(BASE_KEY, total.to_string().into())
            .await
            .is_ok()
        {
            return Ok(total);
        }
        self.stored_count(BASE_KEY).await
    }

    /// The reshard under way, if any.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer;
    /// [`NatsError::Corrupt`] for a record that does not parse.
    pub async fn reshard(&self) -> Result<Option<Reshard>, NatsError> {
        let Some(value) = self
            .bucket()
            .get(RESHARD_KEY)
            .await
            .map_err(|error| NatsError::jetstream("reading the reshard", error))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|error| NatsError::Corrupt {
                key: RESHARD_KEY.into(),
                reason: error.to_string(),
            })
    }

    /// Asks the cluster's nodes to reshard to `to` shards: checks it, and
    /// records it for every node to carry out ([`crate::Node::reshard`]
    /// says how).
    ///
    /// # Errors
    ///
    /// [`NatsError::Invalid`] for a count that is not a multiple of the
    /// current one, too few session starts left today, or a reshard under
    /// way already; [`NatsError::JetStream`] when the store does not answer.
    pub async fn request_reshard(&self, to: u32) -> Result<Reshard, NatsError> {
        let from = self.total().await?.unwrap_or(0);
        if from == 0 {
            return Err(NatsError::Invalid(
                "no node has agreed on a shard count yet: start the nodes first".into(),
            ));
        }
        if to <= from || !to.is_multiple_of(from) {
            return Err(NatsError::Invalid(format!(
                "a cluster of nodes reshards to a multiple of its {from} shards, not to {to}: \
                 a guild's two streams must reach the same node"
            )));
        }
        if let Some(remaining) = crate::queue::remaining_in(self.bucket()).await?
            && remaining < to
        {
            return Err(NatsError::Invalid(format!(
                "resharding to {to} shards takes {to} session starts, but {remaining} remain \
                 until Discord's daily reset: reshard after it"
            )));
        }
        let reshard = Reshard { from, to };
        self.begin_reshard(reshard).await?;
        tracing::info!(from, to, "reshard recorded");
        Ok(reshard)
    }

    /// Records a reshard for every node to carry out.
    async fn begin_reshard(&self, reshard: Reshard) -> Result<(), NatsError> {
        let value = serde_json::to_vec(&reshard).unwrap_or_default();
        match self.bucket().create(RESHARD_KEY, value.into()).await {
            Ok(_) => Ok(()),
            Err(error)
                if error.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists =>
            {
                let under_way = self.reshard().await?.map_or_else(
                    || "another".to_owned(),
                    |r| format!("the one from {} to {}", r.from, r.to),
                );
                Err(NatsError::Invalid(format!(
                    "a reshard is under way ({under_way}): wait for it to end"
                )))
            }
            Err(error) => Err(NatsError::jetstream("recording a reshard", error)),
        }
    }

    /// Records that `range` runs the new generation alone, its sessions
    /// stored.
    pub(crate) async fn range_resharded(
        &self,
        reshard: Reshard,
        range: u32,
    ) -> Result<(), NatsError> {
        self.bucket()
            .put(done_key(reshard, range), "done".into())
            .await
            .map(|_| ())
            .map_err(|error| NatsError::jetstream("recording a resharded range", error))
    }

    /// Whether `range` is marked done with the reshard.
    pub(crate) async fn is_range_resharded(
        &self,
        reshard: Reshard,
        range: u32,
    ) -> Result<bool, NatsError> {
        self.bucket()
            .get(done_key(reshard, range))
            .await
            .map(|value| value.is_some())
            .map_err(|error| NatsError::jetstream("reading a resharded range", error))
    }

    /// Which of `ranges` are marked done with the reshard.
    pub(crate) async fn resharded_ranges(
        &self,
        reshard: Reshard,
        ranges: u32,
    ) -> Result<BTreeSet<u32>, NatsError> {
        let mut done = BTreeSet::new();
        for range in 0..ranges {
            if self.is_range_resharded(reshard, range).await? {
                done.insert(range);
            }
        }
        Ok(done)
    }

    /// Every range runs the new generation: the shard count becomes
    /// `reshard.to` (compare-and-swap from `reshard.from`), then the record
    /// goes (if it is still this reshard's), then the marks. Any node may
    /// call it; a second call finds it done.
    pub(crate) async fn end_reshard(&self, reshard: Reshard, ranges: u32) -> Result<(), NatsError> {
        let total = self
            .bucket()
            .entry(super::sessions::TOTAL_KEY)
            .await
            .map_err(|error| NatsError::jetstream("reading the shard count", error))?;
        if let Some(entry) = total
            && entry.value.as_ref() == reshard.from.to_string().as_bytes()
        {
            match self
                .bucket()
                .update(
                    super::sessions::TOTAL_KEY,
                    reshard.to.to_string().into(),
                    entry.revision,
                )
                .await
            {
                Ok(_) => {}
                // Another node moved it on first.
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(error) => {
                    return Err(NatsError::jetstream("writing the shard count", error));
                }
            }
        }
        let record = self
            .bucket()
            .entry(RESHARD_KEY)
            .await
            .map_err(|error| NatsError::jetstream("reading the reshard", error))?;
        if let Some(entry) = record
            && matches!(entry.operation, async_nats::jetstream::kv::Operation::Put)
            && serde_json::from_slice::<Reshard>(&entry.value).ok() == Some(reshard)
        {
            self.bucket()
                .delete_expect_revision(RESHARD_KEY, Some(entry.revision))
                .await
                .map_err(|error| NatsError::jetstream("ending the reshard", error))?;
        }
        for range in 0..ranges {
            let _ = self.bucket().delete(done_key(reshard, range)).await;
        }
        Ok(())
    }

    /// The shard count as stored now (`None` before any node agreed on
    /// one).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn total(&self) -> Result<Option<u32>, NatsError> {
        let value = self
            .bucket()
            .get(super::sessions::TOTAL_KEY)
            .await
            .map_err(|error| NatsError::jetstream("reading the shard count", error))?;
        Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::lineage;

    #[test]
    fn a_range_keeps_its_guilds_lineage_through_multiples() {
        // 4 shards in ranges of 2.
        assert_eq!(lineage(0, 2, 4, 4), [0, 1]);
        assert_eq!(lineage(1, 2, 4, 4), [2, 3]);
        // 8: shard s holds the guilds of old shard s % 4.
        assert_eq!(lineage(0, 2, 4, 8), [0, 1, 4, 5]);
        assert_eq!(lineage(1, 2, 4, 8), [2, 3, 6, 7]);
        // A last short range.
        assert_eq!(lineage(2, 4, 10, 10), [8, 9]);
        assert_eq!(lineage(2, 4, 10, 20), [8, 9, 18, 19]);
        for guild in [0u64, 1 << 22, 7 << 22, 123_456_789 << 22] {
            let shard = |total: u64| u32::try_from((guild >> 22) % total).unwrap();
            let range_of = |total| {
                (0..2).find(|r| lineage(*r, 2, 4, total).contains(&shard(u64::from(total))))
            };
            assert_eq!(range_of(4), range_of(8), "guild {guild}");
            assert_eq!(range_of(4), range_of(16), "guild {guild}");
        }
    }
}
