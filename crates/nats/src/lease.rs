use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::{Nats, NatsError};

/// A lease on one range of shards, held by this process.
///
/// Its `revision` is the fencing token: every renewal is a
/// compare-and-swap from the last revision, so once another process has
/// claimed the range (after this lease expired) the renewal fails and this
/// process knows it lost the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The range's number.
    pub range: u32,
    /// The KV revision of the last claim or renewal.
    pub revision: u64,
    /// When this process last claimed or renewed it (its own clock).
    pub renewed_at: Instant,
}

/// What a lease and a node's announcement carry: the holder's name and,
/// in an announcement, how many ranges it takes and when it joined.
#[derive(serde::Serialize, serde::Deserialize)]
struct Holder {
    holder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capacity: Option<u32>,
    #[serde(default)]
    joined_at_ms: u64,
}

/// A node announced in the last lease TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveNode {
    /// Its name.
    pub name: String,
    /// The most ranges it takes, when it said.
    pub capacity: Option<u32>,
    /// When it joined, in Unix milliseconds by its own clock (0 when it
    /// did not say).
    pub joined_at_ms: u64,
}

/// Leases on ranges of shards, in a KV bucket whose entries expire `ttl`
/// after their last write: a lease not renewed in time lapses, and another
/// process may claim the range.
///
/// Each lease carries its holder's name, so a claim or renewal whose answer
/// was lost is recognised as the holder's own: names must be unique among
/// live processes.
#[derive(Clone, Debug)]
pub struct Leases {
    store: Store,
    nodes: Store,
    ttl: Duration,
    holder: String,
    capacity: Option<u32>,
    joined_at_ms: u64,
}

impl Leases {
    pub(crate) async fn open(nats: &Nats, ttl: Duration, holder: &str) -> Result<Self, NatsError> {
        if ttl < Duration::from_secs(1) {
            return Err(NatsError::Invalid(
                "a lease must live at least 1 s (JetStream expires entries by the second)".into(),
            ));
        }
        if holder.is_empty() || holder.contains(['.', '*', '>', ' ']) {
            return Err(NatsError::Invalid(format!(
                "the holder name `{holder}` must be non-empty, without `.`, `*`, `>` or spaces"
            )));
        }
        let store = nats
            .bucket(
                nats.layout().bucket("leases"),
                ttl,
                "shardwire: shard range leases",
            )
            .await?;
        let nodes = nats
            .bucket(
                nats.layout().bucket("nodes"),
                ttl,
                "shardwire: live gateway nodes",
            )
            .await?;
        Ok(Self {
            store,
            nodes,
            ttl,
            holder: holder.to_owned(),
            capacity: None,
            joined_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                }),
        })
    }

    /// Announces `ranges` as the most ranges this holder takes, so others
    /// share the shards out with it in mind.
    #[must_use]
    pub fn with_capacity(mut self, ranges: u32) -> Self {
        self.capacity = Some(ranges);
        self
    }

    /// How long a lease lives without renewal.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// This holder's name.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn value(&self) -> bytes::Bytes {
        serde_json::to_vec(&Holder {
            holder: self.holder.clone(),
            capacity: None,
            joined_at_ms: 0,
        })
        .unwrap_or_default()
        .into()
    }

    fn announcement(&self) -> bytes::Bytes {
        serde_json::to_vec(&Holder {
            holder: self.holder.clone(),
            capacity: self.capacity,
            joined_at_ms: self.joined_at_ms,
        })
        .unwrap_or_default()
        .into()
    }

    /// Claims `range`; `Ok(None)` while another process holds it.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn claim(&self, range: u32) -> Result<Option<Lease>, NatsError> {
        let renewed_at = Instant::now();
        match self.store.create(key(range), self.value()).await {
            Ok(revision) => Ok(Some(Lease {
                range,
                revision,
                renewed_at,
            })),
            // Perhaps ours: a claim whose answer was lost on the way.
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
                Ok(self.own_revision(range).await?.map(|revision| Lease {
                    range,
                    revision,
                    renewed_at,
                }))
            }
            Err(error) => Err(NatsError::jetstream("claiming a lease", error)),
        }
    }

    /// The lease's revision if this holder wrote it last.
    async fn own_revision(&self, range: u32) -> Result<Option<u64>, NatsError> {
        let entry = self
            .store
            .entry(key(range))
            .await
            .map_err(|error| NatsError::jetstream("reading a lease", error))?;
        Ok(entry
            .filter(|entry| matches!(entry.operation, Operation::Put))
            .filter(|entry| {
                serde_json::from_slice::<Holder>(&entry.value)
                    .is_ok_and(|holder| holder.holder == self.holder)
            })
            .map(|entry| entry.revision))
    }

    /// Renews a lease by compare-and-swap from its revision.
    ///
    /// # Errors
    ///
    /// [`NatsError::Fenced`] when the lease is lost (it lapsed and perhaps
    /// another process claimed it); [`NatsError::JetStream`] when the store
    /// does not answer (the lease may still be held: try again before it
    /// lapses).
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), NatsError> {
        let renewed_at = Instant::now();
        match self
            .store
            .update(key(lease.range), self.value(), lease.revision)
            .await
        {
            Ok(revision) => {
                lease.revision = revision;
                lease.renewed_at = renewed_at;
                Ok(())
            }
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                // A renewal whose answer was lost moved the revision on: the
                // lease is still ours if our name is on it.
                match self.own_revision(lease.range).await? {
                    Some(revision) => {
                        lease.revision = revision;
                        lease.renewed_at = renewed_at;
                        Ok(())
                    }
                    None => Err(NatsError::Fenced {
                        key: key(lease.range),
                        expected: lease.revision,
                    }),
                }
            }
            Err(error) => Err(NatsError::jetstream("renewing a lease", error)),
        }
    }

    /// Whether a lease may still be used: renewed less than 75% of the TTL
    /// ago by this process's clock, so a holder that checks at least every
    /// sixth of the TTL stops using it before the server lets it lapse.
    #[must_use]
    pub fn is_fresh(&self, lease: &Lease) -> bool {
        lease.renewed_at.elapsed() < self.ttl.mul_f64(0.75)
    }

    /// Gives a lease up at once, so another process can claim the range
    /// without waiting for it to lapse. A lease already lost is left alone.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer (the lease
    /// then lapses by itself).
    pub async fn release(&self, lease: Lease) -> Result<(), NatsError> {
        match self
            .store
            .delete_expect_revision(key(lease.range), Some(lease.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::kv::DeleteErrorKind::WrongLastRevision =>
            {
                Ok(())
            }
            Err(error) => Err(NatsError::jetstream("releasing a lease", error)),
        }
    }

    /// Who holds each held range.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn holders(&self) -> Result<BTreeMap<u32, String>, NatsError> {
        let mut holders = BTreeMap::new();
        for (name, value) in entries(&self.store).await? {
            if let Some(range) = name.strip_prefix("range-").and_then(|r| r.parse().ok()) {
                let holder = serde_json::from_slice::<Holder>(&value)
                    .map_or_else(|_| String::from("?"), |h| h.holder);
                holders.insert(range, holder);
            }
        }
        Ok(holders)
    }

    /// Announces this holder as alive for one TTL, with its capacity and
    /// when it joined.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn announce(&self) -> Result<(), NatsError> {
        self.nodes
            .put(&self.holder, self.announcement())
            .await
            .map(|_| ())
            .map_err(|error| NatsError::jetstream("announcing the node", error))
    }

    /// Withdraws this holder's announcement.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn withdraw(&self) -> Result<(), NatsError> {
        self.nodes
            .delete(&self.holder)
            .await
            .map_err(|error| NatsError::jetstream("withdrawing the node", error))
    }

    /// The holders announced in the last TTL.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn live_holders(&self) -> Result<Vec<String>, NatsError> {
        Ok(self
            .live_nodes()
            .await?
            .into_iter()
            .map(|node| node.name)
            .collect())
    }

    /// The nodes announced in the last TTL, with what they announced.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn live_nodes(&self) -> Result<Vec<LiveNode>, NatsError> {
        Ok(entries(&self.nodes)
            .await?
            .into_iter()
            .map(|(name, value)| {
                let said = serde_json::from_slice::<Holder>(&value).ok();
                LiveNode {
                    name,
                    capacity: said.as_ref().and_then(|h| h.capacity),
                    joined_at_ms: said.map_or(0, |h| h.joined_at_ms),
                }
            })
            .collect())
    }
}

fn key(range: u32) -> String {
    format!("range-{range}")
}

/// Every live entry of a bucket (deleted, purged and lapsed keys left out).
async fn entries(store: &Store) -> Result<Vec<(String, bytes::Bytes)>, NatsError> {
    let listing = async {
        let mut keys = store.keys().await.map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        while let Some(name) = keys.next().await {
            names.push(name.map_err(|e| e.to_string())?);
        }
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            // A key may lapse between the listing and the read.
            if let Some(value) = store.get(name.as_str()).await.map_err(|e| e.to_string())? {
                found.push((name, value));
            }
        }
        Ok::<_, String>(found)
    };
    match tokio::time::timeout(Duration::from_secs(10), listing).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(error)) => Err(NatsError::jetstream("listing a KV bucket", error)),
        Err(_) => Err(NatsError::jetstream(
            "listing a KV bucket",
            "no answer within 10 s",
        )),
    }
}
