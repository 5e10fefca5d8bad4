use std::collections::HashMap;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use shardwire_shard::Session;

use crate::queue::SessionsBucket;
use crate::{Nats, NatsError};

/// The key of the cluster's shard count, in the sessions bucket.
pub(crate) const TOTAL_KEY: &str = "shard-count";

/// Sessions by shard, `{session_id, seq, resume_url}` as JSON, in a KV
/// bucket. Writes are compare-and-swap from the revision the writer last
/// saw, so two processes never both believe they own a shard's session:
/// the one that did not write last is refused with [`NatsError::Fenced`].
///
/// It is also a [`shardwire_cluster::SessionStore`], for a
/// [`Cluster`](shardwire_cluster::Cluster) of one process that keeps its
/// sessions in JetStream: its `load` [`take`](SessionStore::take)s each
/// shard's session over, and its `save` writes over the revisions it last
/// read or wrote (a session another process took since is refused with
/// [`NatsError::Fenced`]).
#[derive(Clone, Debug)]
pub struct SessionStore {
    store: Store,
    /// The revision to write over next, by shard, for the cluster trait.
    revisions: std::sync::Arc<std::sync::Mutex<HashMap<u32, u64>>>,
}

impl SessionStore {
    pub(crate) async fn open(nats: &Nats) -> Result<Self, NatsError> {
        Ok(Self {
            store: SessionsBucket::open(nats).await?,
            revisions: std::sync::Arc::default(),
        })
    }

    /// The KV bucket itself.
    pub(crate) fn bucket(&self) -> &Store {
        &self.store
    }

    fn revision(&self, shard: u32) -> Option<u64> {
        self.revisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&shard)
            .copied()
    }

    fn note_revision(&self, shard: u32, revision: u64) {
        self.revisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(shard, revision);
    }

    /// Writes one shard's session (or a deletion marker) over the revision
    /// last seen, and notes the new one.
    async fn save_one(&self, shard: u32, session: Option<&Session>) -> Result<(), NatsError> {
        let revision = match self.revision(shard) {
            Some(revision) => revision,
            // Never read here: take it over first.
            None => self.take(shard).await?.1,
        };
        let revision = match session {
            Some(session) => self.store(shard, session, revision).await?,
            None => {
                self.mark_empty(shard, revision).await?;
                self.read(shard).await?.1
            }
        };
        self.note_revision(shard, revision);
        Ok(())
    }

    /// A shard's stored session and the revision to write over (0 when the
    /// shard never had one).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer;
    /// [`NatsError::Corrupt`] for a value that is not a resumable session.
    pub async fn load(&self, shard: u32) -> Result<(Option<Session>, u64), NatsError> {
        let (session, revision) = self.read(shard).await?;
        Ok((
            session.map_err(|error| NatsError::Corrupt {
                key: key(shard),
                reason: error.to_string(),
            })?,
            revision,
        ))
    }

    /// The stored session (or why it is unusable) and its revision.
    async fn read(
        &self,
        shard: u32,
    ) -> Result<(Result<Option<Session>, StoredSessionError>, u64), NatsError> {
        let entry = self
            .store
            .entry(key(shard))
            .await
            .map_err(|error| NatsError::jetstream("reading a session", error))?;
        let Some(entry) = entry else {
            return Ok((Ok(None), 0));
        };
        if matches!(entry.operation, Operation::Delete | Operation::Purge) {
            return Ok((Ok(None), entry.revision));
        }
        Ok((parse_session(&entry.value).map(Some), entry.revision))
    }

    /// Takes a shard's session over: reads it and writes it back (or, when
    /// there is none, a deletion marker), so every earlier writer is fenced
    /// out. Returns the session and the revision to write over next. A
    /// stored value that is not a resumable session is logged and replaced:
    /// the shard then identifies.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer or another
    /// writer keeps writing.
    pub async fn take(&self, shard: u32) -> Result<(Option<Session>, u64), NatsError> {
        for _ in 0..10 {
            let (session, revision) = self.read(shard).await?;
            let session = session.unwrap_or_else(|reason| {
                tracing::warn!(shard, %reason, "the stored session is unusable; the shard identifies");
                None
            });
            let written = match &session {
                Some(session) => self.store(shard, session, revision).await.map(Some),
                None => self.mark_empty(shard, revision).await.map(|()| None),
            };
            match written {
                Ok(Some(revision)) => return Ok((session, revision)),
                Ok(None) => {
                    // The marker's revision is what to write over next.
                    let (_, revision) = self.read(shard).await?;
                    return Ok((None, revision));
                }
                // The last owner wrote meanwhile: read its newer value.
                Err(NatsError::Fenced { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Err(NatsError::jetstream(
            format!("taking the session of shard {shard}"),
            "another writer kept writing it",
        ))
    }

    /// Writes a deletion marker over `revision`.
    async fn mark_empty(&self, shard: u32, revision: u64) -> Result<(), NatsError> {
        match self
            .store
            .delete_expect_revision(key(shard), Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::kv::DeleteErrorKind::WrongLastRevision =>
            {
                Err(NatsError::Fenced {
                    key: key(shard),
                    expected: revision,
                })
            }
            Err(error) => Err(NatsError::jetstream("fencing a session", error)),
        }
    }

    /// Writes a shard's session over `revision`; returns the new revision.
    ///
    /// # Errors
    ///
    /// [`NatsError::Fenced`] when another process wrote it since;
    /// [`NatsError::JetStream`] when the store does not answer.
    pub async fn store(
        &self,
        shard: u32,
        session: &Session,
        revision: u64,
    ) -> Result<u64, NatsError> {
        let value = serde_json::to_vec(session).unwrap_or_default();
        match self.store.update(key(shard), value.into(), revision).await {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(NatsError::Fenced {
                    key: key(shard),
                    expected: revision,
                })
            }
            Err(error) => Err(NatsError::jetstream("writing a session", error)),
        }
    }

    /// Agrees on the bot's shard count: stores `total` unless one is stored,
    /// and returns the stored one.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the store does not answer;
    /// [`NatsError::Corrupt`] for a stored count that does not parse.
    pub async fn agree_total(&self, total: u32) -> Result<u32, NatsError> {
        if self
            .store
            .create(TOTAL_KEY, total.to_string().into())
            .await
            .is_ok()
        {
            return Ok(total);
        }
        self.stored_count(TOTAL_KEY).await
    }

    /// A shard count stored under `key`, created by another node.
    pub(crate) async fn stored_count(&self, key: &str) -> Result<u32, NatsError> {
        let stored = self
            .store
            .get(key)
            .await
            .map_err(|error| NatsError::jetstream(format!("reading `{key}`"), error))?
            .ok_or_else(|| NatsError::jetstream(format!("reading `{key}`"), "it vanished"))?;
        std::str::from_utf8(&stored)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|count: &u32| *count > 0)
            .ok_or_else(|| NatsError::Corrupt {
                key: key.into(),
                reason: "not a shard count".into(),
            })
    }
}

/// A stored session, read back: the JSON [`SessionStore`] writes, checked
/// to be resumable.
///
/// # Errors
///
/// Why it is not a resumable session.
pub fn parse_session(value: &[u8]) -> Result<Session, StoredSessionError> {
    let session: Session = serde_json::from_slice(value)
        .map_err(|error| StoredSessionError::NotASession(error.to_string()))?;
    session.check()?;
    Ok(session)
}

/// Why a stored value is not a resumable session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoredSessionError {
    /// It is not the JSON of a session.
    #[error("not a stored session: {0}")]
    NotASession(String),
    /// It is a session, but not one that can be resumed.
    #[error(transparent)]
    Unresumable(#[from] shardwire_shard::SessionError),
}

impl shardwire_cluster::SessionStore for SessionStore {
    fn load<'a>(
        &'a self,
        shards: &'a [u32],
    ) -> shardwire_cluster::StoreFuture<'a, HashMap<u32, Session>> {
        Box::pin(async move {
            let mut found = HashMap::new();
            for shard in shards {
                let (session, revision) = self.take(*shard).await?;
                self.note_revision(*shard, revision);
                if let Some(session) = session {
                    found.insert(*shard, session);
                }
            }
            Ok(found)
        })
    }

    fn save<'a>(
        &'a self,
        changes: &'a [(u32, Option<Session>)],
    ) -> shardwire_cluster::StoreFuture<'a, ()> {
        Box::pin(async move {
            for (shard, session) in changes {
                self.save_one(*shard, session.as_ref()).await?;
            }
            Ok(())
        })
    }
}

fn key(shard: u32) -> String {
    format!("shard-{shard}")
}
