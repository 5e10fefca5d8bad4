use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use shardwire_cluster::metrics::QueueMetrics;
use shardwire_shard::{IdentifyQueue, IdentifyRefused, WaitTurn};

use crate::{Nats, NatsError};

/// How often a waiting shard looks at its bucket's key again.
const POLL: Duration = Duration::from_millis(100);
/// The longest wait between retries while NATS does not answer.
const MAX_RETRY: Duration = Duration::from_secs(2);
/// The key of the day's session starts, in the sessions bucket.
pub(crate) const LIMIT_KEY: &str = "session-start-limit";

/// The day's session starts, as the cluster shares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Limit {
    remaining: u32,
    /// When Discord resets the count, in Unix milliseconds.
    reset_at_ms: u64,
}

/// The identify queue of a cluster of processes, on JetStream KV.
///
/// Each rate-limit bucket (`shard_id % max_concurrency`) is one key of a KV
/// bucket whose entries expire after the identify window plus 5%. A shard
/// may identify once it has *created* its bucket's key; creating fails while
/// the key exists, so at most one shard per bucket identifies per window,
/// whichever process it runs in. The key is created just before the
/// Identify is sent, so the gateway sees identifies of one bucket at least
/// a window apart.
///
/// Each turn first takes one of the day's session starts from a shared
/// counter (compare-and-swap); when none is left, turns are refused with
/// [`IdentifyRefused::DailyLimitExhausted`] until Discord's reset. After the
/// reset time the stored count no longer guards until a node stores the
/// new one ([`NatsQueue::seed_limit`]; a [`crate::Node`] does so on its
/// next tick).
///
/// While NATS does not answer, a waiting shard keeps waiting (retrying with
/// a backoff): it never identifies unguarded.
#[derive(Clone, Debug)]
pub struct NatsQueue {
    buckets: Store,
    limits: Store,
    max_concurrency: u32,
    holder: String,
    metrics: QueueMetrics,
}

impl NatsQueue {
    pub(crate) async fn open(
        nats: &Nats,
        max_concurrency: u32,
        window: Duration,
        holder: &str,
    ) -> Result<Self, NatsError> {
        if max_concurrency == 0 {
            return Err(NatsError::Invalid(
                "max_concurrency must be at least 1".into(),
            ));
        }
        if window.is_zero() {
            return Err(NatsError::Invalid(
                "the identify window must not be zero".into(),
            ));
        }
        let buckets = nats
            .bucket(
                nats.layout().bucket("identify"),
                window + window / 20,
                "shardwire: one key per identify bucket, alive for one window",
            )
            .await?;
        let limits = SessionsBucket::open(nats).await?;
        Ok(Self {
            buckets,
            limits,
            max_concurrency,
            holder: holder.to_owned(),
            metrics: QueueMetrics::new(max_concurrency),
        })
    }

    /// The number of rate-limit buckets.
    #[must_use]
    pub fn max_concurrency(&self) -> u32 {
        self.max_concurrency
    }

    /// Records the day's session starts as `/gateway/bot` reports them,
    /// unless a count for the current day is already stored (the stored one
    /// has been counting down; a later report may lag behind it).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn seed_limit(&self, remaining: u32, reset_after: Duration) -> Result<(), NatsError> {
        let fresh = Limit {
            remaining,
            reset_at_ms: now_ms().saturating_add(millis(reset_after)),
        };
        loop {
            let (revision, current) = self.read_limit().await?;
            if let Some(current) = current
                && current.reset_at_ms > now_ms()
            {
                self.metrics.remaining(current.remaining);
                return Ok(());
            }
            if self.write_limit(&fresh, revision).await? {
                self.metrics.remaining(fresh.remaining);
                return Ok(());
            }
        }
    }

    /// The stored count and its revision: `(0, None)` when there is none,
    /// `(revision, None)` when it does not parse.
    async fn read_limit(&self) -> Result<(u64, Option<Limit>), NatsError> {
        let entry = self
            .limits
            .entry(LIMIT_KEY)
            .await
            .map_err(|e| NatsError::jetstream("reading the session start limit", e))?;
        Ok(match entry {
            Some(entry) => (entry.revision, parse_limit(&entry.value)),
            None => (0, None),
        })
    }

    /// Writes the count over `revision`; `Ok(false)` when another node
    /// wrote first.
    async fn write_limit(&self, limit: &Limit, revision: u64) -> Result<bool, NatsError> {
        let value = serde_json::to_vec(limit).unwrap_or_default();
        match self.limits.update(LIMIT_KEY, value.into(), revision).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(error) => Err(NatsError::jetstream(
                "writing the session start limit",
                error,
            )),
        }
    }

    /// The session starts left today, as stored (`None` before any node
    /// seeded it, or after the reset).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn remaining(&self) -> Result<Option<u32>, NatsError> {
        remaining_in(&self.limits).await
    }

    /// Takes the bucket's key; `Ok(false)` while another holds it.
    async fn try_bucket(&self, bucket: u32) -> Result<bool, NatsError> {
        match self
            .buckets
            .create(format!("bucket-{bucket}"), self.holder.clone().into())
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(NatsError::jetstream("taking an identify bucket", error)),
        }
    }

    /// Takes one session start.
    async fn take_start(&self) -> Result<Result<(), IdentifyRefused>, NatsError> {
        loop {
            let (revision, limit) = self.read_limit().await?;
            if revision == 0 {
                // No node seeded a count: nothing to guard.
                return Ok(Ok(()));
            }
            let Some(limit) = limit else {
                // Deleted or unreadable: the next node to read
                // `/gateway/bot` stores a count again.
                tracing::warn!("the stored session start limit is unreadable; not counting");
                return Ok(Ok(()));
            };
            let now = now_ms();
            if limit.reset_at_ms <= now {
                // Discord has reset the count since it was stored; the next
                // node to read `/gateway/bot` stores the new one.
                return Ok(Ok(()));
            }
            if limit.remaining == 0 {
                return Ok(Err(IdentifyRefused::DailyLimitExhausted {
                    reset_after: Some(Duration::from_millis(limit.reset_at_ms - now)),
                }));
            }
            let next = Limit {
                remaining: limit.remaining - 1,
                ..limit
            };
            if self.write_limit(&next, revision).await? {
                self.metrics.remaining(next.remaining);
                return Ok(Ok(()));
            }
        }
    }

    async fn turn(&self, shard_id: u32) -> Result<(), IdentifyRefused> {
        let waiting = self.metrics.waiting(shard_id);
        // The session start first: the bucket's key, taken last, times the
        // window from just before the Identify goes out.
        let mut retry = POLL;
        loop {
            match self.take_start().await {
                Ok(Ok(())) => break,
                Ok(Err(refused)) => return Err(refused),
                Err(error) => {
                    tracing::warn!(shard = shard_id, %error, "identify queue: cannot count the session start; waiting");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
        let bucket = shard_id % self.max_concurrency;
        let mut retry = POLL;
        loop {
            match self.try_bucket(bucket).await {
                Ok(true) => {
                    waiting.turn();
                    return Ok(());
                }
                Ok(false) => tokio::time::sleep(POLL).await,
                Err(error) => {
                    tracing::warn!(shard = shard_id, %error, "identify queue: NATS did not answer; waiting");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

impl IdentifyQueue for NatsQueue {
    fn wait_turn(&self, shard_id: u32) -> WaitTurn<'_> {
        Box::pin(self.turn(shard_id))
    }
}

/// The KV bucket of sessions and cluster-wide settings.
pub(crate) struct SessionsBucket;

impl SessionsBucket {
    pub(crate) async fn open(nats: &Nats) -> Result<Store, NatsError> {
        nats.bucket(
            nats.layout().bucket("sessions"),
            Duration::ZERO,
            "shardwire: sessions per shard, the day's session starts, the shard count",
        )
        .await
    }
}

fn parse_limit(value: &[u8]) -> Option<Limit> {
    serde_json::from_slice(value).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The session starts left today as stored in the sessions bucket (`None`
/// before any node seeded it, or after the reset).
pub(crate) async fn remaining_in(limits: &Store) -> Result<Option<u32>, NatsError> {
    let value = limits
        .get(LIMIT_KEY)
        .await
        .map_err(|e| NatsError::jetstream("reading the session start limit", e))?;
    Ok(value
        .as_deref()
        .and_then(parse_limit)
        .filter(|limit| limit.reset_at_ms > now_ms())
        .map(|limit| limit.remaining))
}
