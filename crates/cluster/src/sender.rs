//! Sends on a cluster's shards from any task, while another consumes the
//! events.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shardwire_codec::RequestGuildMembers;
use shardwire_shard::{Outgoing, Session, Shard, ShardSender};
use twilight_model::gateway::ShardId;
use twilight_model::id::Id;
use twilight_model::id::marker::GuildMarker;

use crate::chunks::{Chunks, GuildMembers};
use crate::reshard::ReshardControl;
use crate::{ClusterError, Gateway, ShardStatus};

/// One generation of shards: a total and the shards of it running here.
pub(crate) struct Generation {
    pub(crate) total: u32,
    pub(crate) shards: BTreeMap<u32, Shard>,
}

impl Generation {
    pub(crate) fn new(total: u32) -> Self {
        Self {
            total,
            shards: BTreeMap::new(),
        }
    }
}

/// What a [`Cluster`](crate::Cluster) and its senders share: the running
/// generation, the member requests waiting for chunks, and how to ask for
/// a reshard.
pub(crate) struct Shared {
    current: RwLock<Generation>,
    /// Also held by the shards' taps.
    pub(crate) chunks: Arc<Chunks>,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) control: ReshardControl,
}

impl Shared {
    pub(crate) fn new(total: u32, gateway: Arc<Gateway>, control: ReshardControl) -> Self {
        Self {
            current: RwLock::new(Generation::new(total)),
            chunks: Arc::default(),
            gateway,
            control,
        }
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Generation> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Generation> {
        self.current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sender(&self, shard: u32) -> Result<ShardSender, ClusterError> {
        self.read()
            .shards
            .get(&shard)
            .map(Shard::sender)
            .ok_or(ClusterError::UnknownShard(shard))
    }

    pub(crate) fn sessions(&self) -> BTreeMap<u32, Session> {
        self.read()
            .shards
            .iter()
            .filter_map(|(id, shard)| shard.session().map(|session| (*id, session)))
            .collect()
    }
}

/// Sends on a cluster's shards from any task: it is cheap to clone,
/// `Send` and `Sync`, and works while another task takes the events
/// ([`Cluster::sender`](crate::Cluster::sender)).
///
/// Every payload goes through its shard's queue (held until the session
/// is ready), rate limit and 4096-byte check; it takes shardwire's
/// `Command`, twilight-model's outgoing payloads and raw JSON (see
/// [`Outgoing`]). Once the cluster is dropped, sends fail with
/// [`ClusterError::UnknownShard`].
///
/// ```no_run
/// # async fn run(cluster: shardwire_cluster::Cluster) -> Result<(), shardwire_cluster::ClusterError> {
/// use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
/// use twilight_model::id::Id;
///
/// let sender = cluster.sender();
/// tokio::spawn(async move {
///     let guild = Id::new(81_384_788_765_712_384);
///     let join = UpdateVoiceState::new(guild, Some(Id::new(2)), true, false);
///     sender.send_to_guild(guild, join).await
/// });
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClusterSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSender")
            .field("total", &self.total())
            .field("shards", &self.shard_ids())
            .finish()
    }
}

impl ClusterSender {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The bot's total shard count (the new one from a reshard's switch).
    #[must_use]
    pub fn total(&self) -> u32 {
        self.shared.read().total
    }

    /// The ids of the shards running in the cluster.
    #[must_use]
    pub fn shard_ids(&self) -> Vec<u32> {
        self.shared.read().shards.keys().copied().collect()
    }

    /// twilight-model's id of shard `number` of this cluster's total (its
    /// [`ShardId::number`] gives the number back).
    ///
    /// # Panics
    ///
    /// When `number` is not below the total.
    #[must_use]
    pub fn shard_id(&self, number: u32) -> ShardId {
        ShardId::new(number, self.total())
    }

    /// The shard that owns a guild: `(guild_id >> 22) % total`.
    #[must_use]
    pub fn shard_for_guild(&self, guild_id: Id<GuildMarker>) -> u32 {
        u32::try_from((guild_id.get() >> 22) % u64::from(self.total())).unwrap_or(0)
    }

    /// One shard's status (`None` if it does not run here).
    #[must_use]
    pub fn status(&self, shard: u32) -> Option<ShardStatus> {
        self.shared
            .read()
            .shards
            .get(&shard)
            .map(|s| ShardStatus::of(shard, s))
    }

    /// Reshards to `to` shards without stopping: see
    /// [`Cluster::reshard`](crate::Cluster::reshard). The new generation
    /// starts as the cluster's events are next taken.
    ///
    /// # Errors
    ///
    /// As [`Cluster::reshard`](crate::Cluster::reshard).
    pub async fn reshard(&self, to: u32) -> Result<(), ClusterError> {
        crate::reshard::ask(&self.shared, to).await
    }

    /// Gives up the reshard under way if it has not switched: see
    /// [`Cluster::cancel_reshard`](crate::Cluster::cancel_reshard). The
    /// answer comes as the cluster's events are next taken.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Stopped`] when the cluster has been dropped.
    pub async fn cancel_reshard(&self) -> Result<bool, ClusterError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.shared
            .control
            .order(crate::reshard::Order::Cancel(answer));
        answered.await.map_err(|_| ClusterError::Stopped)
    }

    /// Sends a payload on one shard.
    ///
    /// # Errors
    ///
    /// [`ClusterError::UnknownShard`], or the shard's
    /// [`SendError`](shardwire_shard::SendError).
    pub async fn send(&self, shard: u32, payload: impl Into<Outgoing>) -> Result<(), ClusterError> {
        self.shared
            .sender(shard)?
            .send(payload)
            .await
            .map_err(|error| ClusterError::Send { shard, error })
    }

    /// Sends a payload on the shard that owns `guild_id`.
    ///
    /// # Errors
    ///
    /// As [`ClusterSender::send`]; [`ClusterError::UnknownShard`] when that
    /// shard runs in another process.
    pub async fn send_to_guild(
        &self,
        guild_id: Id<GuildMarker>,
        payload: impl Into<Outgoing>,
    ) -> Result<(), ClusterError> {
        self.send(self.shard_for_guild(guild_id), payload).await
    }

    /// Sends a payload on every shard (a presence, say).
    ///
    /// # Errors
    ///
    /// The first shard that refused (the others still got it).
    pub async fn send_to_all(&self, payload: impl Into<Outgoing>) -> Result<(), ClusterError> {
        let payload = payload.into();
        let senders: Vec<ShardSender> = self
            .shared
            .read()
            .shards
            .values()
            .map(Shard::sender)
            .collect();
        let mut first = None;
        for sender in senders {
            if let Err(error) = sender.send(payload.clone()).await {
                first.get_or_insert(ClusterError::Send {
                    shard: sender.id(),
                    error,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Requests guild members on the guild's shard and collects every
    /// GUILD_MEMBERS_CHUNK of the answer (matched by nonce; those chunks do
    /// not come out of the event stream). A nonce is made unless the
    /// request has one. Takes shardwire's request or twilight-model's.
    ///
    /// # Errors
    ///
    /// As [`ClusterSender::send_to_guild`]; [`ClusterError::Timeout`] when
    /// the chunks do not all come within `timeout`.
    pub async fn request_guild_members(
        &self,
        request: impl Into<RequestGuildMembers>,
        timeout: Duration,
    ) -> Result<GuildMembers, ClusterError> {
        let mut request = request.into();
        let chunks = &self.shared.chunks;
        let nonce = request.nonce.clone().unwrap_or_else(|| chunks.next_nonce());
        request.nonce = Some(nonce.clone());
        let answer = chunks.register(nonce.clone());
        let guild = request.guild_id;
        if let Err(error) = self
            .send_to_guild(
                guild,
                shardwire_codec::Command::RequestGuildMembers(request),
            )
            .await
        {
            chunks.cancel(&nonce);
            return Err(error);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(members)) => Ok(members),
            _ => {
                chunks.cancel(&nonce);
                Err(ClusterError::Timeout(timeout))
            }
        }
    }
}
