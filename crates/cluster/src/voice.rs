//! Voice through songbird's gateway half (feature `songbird`).
//!
//! songbird joins a voice channel by sending a voice state update (op 4) on
//! the guild's shard, then waits for the VOICE_STATE_UPDATE and
//! VOICE_SERVER_UPDATE that Discord answers with; together they make the
//! [`ConnectionInfo`] its driver (or any voice client) connects with.
//!
//! - [`ClusterSender`] is songbird's [`GenericSharder`]: the shard handles it
//!   gives send twilight-model's `UpdateVoiceState` through the cluster.
//! - [`Voice`] holds the bot's [`Call`]s by guild, joins and leaves, and
//!   routes the two voice events to the right call
//!   ([`Voice::process`]). songbird's own manager, `Songbird`, cannot be
//!   built on a generic sharder without its serenity or twilight
//!   integration (the latter wants twilight-model 0.17; shardwire uses
//!   0.18), so `Voice` does its part.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use songbird::error::{JoinError, JoinResult};
use songbird::id::{ChannelId, GuildId, UserId};
use songbird::shards::{GenericSharder, Shard, VoiceUpdate};
use songbird::{Call, Config, ConnectionInfo};
use twilight_model::gateway::event::Event;
use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
use twilight_model::id::Id;
use twilight_model::id::marker::{ChannelMarker, GuildMarker, UserMarker};

use crate::{ClusterError, ClusterSender};

/// A call, shared by the task that joins and the one that processes the
/// events.
pub type SharedCall = Arc<tokio::sync::Mutex<Call>>;

/// songbird's shard handles from a cluster: shard `shard_id` of the
/// cluster's total, whether it runs now or is restarted later (the handle
/// looks the shard up on each send).
impl GenericSharder for ClusterSender {
    fn get_shard(&self, shard_id: u64) -> Option<Arc<dyn VoiceUpdate + Send + Sync>> {
        let shard = u32::try_from(shard_id)
            .ok()
            .filter(|shard| *shard < self.total())?;
        Some(Arc::new(VoiceShard {
            sender: self.clone(),
            shard,
        }))
    }
}

/// Sends songbird's voice state updates on one shard of a cluster.
struct VoiceShard {
    sender: ClusterSender,
    shard: u32,
}

#[async_trait::async_trait]
impl VoiceUpdate for VoiceShard {
    async fn update_voice_state(
        &self,
        guild_id: GuildId,
        channel_id: Option<ChannelId>,
        self_deaf: bool,
        self_mute: bool,
    ) -> JoinResult<()> {
        let update = UpdateVoiceState::new(
            Id::<GuildMarker>::from(guild_id.0),
            channel_id.map(|channel| Id::<ChannelMarker>::from(channel.0)),
            self_deaf,
            self_mute,
        );
        self.sender
            .send(self.shard, update)
            .await
            .map_err(join_error)
    }
}

/// songbird's error for a send the cluster refused; songbird's error cannot
/// carry ours, so it is logged.
///
/// - no such shard here, or one that has stopped: no gateway to send on
///   ([`JoinError::NoSender`]);
/// - a full queue or a payload the shard refused: the request was dropped
///   ([`JoinError::Dropped`]).
fn join_error(error: ClusterError) -> JoinError {
    tracing::warn!(%error, "the voice state update was not sent");
    match error {
        ClusterError::UnknownShard(_)
        | ClusterError::Send {
            error: shardwire_shard::SendError::Fatal(_) | shardwire_shard::SendError::Stopped,
            ..
        } => JoinError::NoSender,
        _ => JoinError::Dropped,
    }
}

/// The bot's voice calls on a cluster: joins and leaves voice channels with
/// songbird's [`Call`], and feeds each call the voice events it needs.
///
/// songbird's [`Call::join_gateway`] sends the voice state update and
/// returns a future that completes only once the call has been given
/// Discord's VOICE_STATE_UPDATE (for the bot's own user) and
/// VOICE_SERVER_UPDATE. Those come out of the cluster's event stream, so
/// **[`Voice::process`] must run on another task than the one awaiting
/// [`Voice::join`]**: a task that awaits `join` between two
/// `next_event` calls never sees the answer, and the join times out
/// (songbird's `Config::gateway_timeout`, 10 s by default).
///
/// The cluster must deliver those events typed: set
/// [`ClusterConfig::typed`](crate::ClusterConfig::typed), let
/// `VOICE_STATE_UPDATE` and `VOICE_SERVER_UPDATE` through
/// [`ClusterConfig::events`](crate::ClusterConfig::events), and identify
/// with the `GUILD_VOICE_STATES` intent (Discord sends no voice states
/// without it).
///
/// `Voice` is cheap to clone; clones share the calls. The voice connection
/// itself (UDP, encryption, audio) is songbird's driver's: connect it with
/// the [`ConnectionInfo`] that `join` returns.
///
/// ```no_run
/// # async fn run(mut cluster: shardwire_cluster::Cluster) -> Result<(), Box<dyn std::error::Error>> {
/// use shardwire_cluster::Voice;
/// use twilight_model::id::Id;
///
/// // The bot's user id, from READY (or the REST API's current user).
/// let voice = Voice::new(cluster.sender(), Id::new(1_000_000_000_000_000_001));
///
/// // The join waits for the events the loop below processes.
/// let joining = voice.clone();
/// let join = tokio::spawn(async move {
///     joining
///         .join(Id::new(81_384_788_765_712_384), Id::new(81_384_788_765_712_385))
///         .await
/// });
///
/// while let Some((_shard, event)) = cluster.next_event().await {
///     if let Some(event) = event.twilight() {
///         voice.process(event).await;
///     }
///     // (A bot goes on; this example stops once joined.)
///     if join.is_finished() {
///         break;
///     }
/// }
/// let info = join.await??;
/// println!("connect the voice driver to {}", info.endpoint);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Voice {
    inner: Arc<Inner>,
}

struct Inner {
    user_id: UserId,
    sender: ClusterSender,
    config: Config,
    calls: Mutex<HashMap<GuildId, SharedCall>>,
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice")
            .field("user_id", &self.inner.user_id)
            .field("sender", &self.inner.sender)
            .field("calls", &self.lock().len())
            .finish_non_exhaustive()
    }
}

fn guild(id: Id<GuildMarker>) -> GuildId {
    GuildId(id.into_nonzero())
}

fn channel(id: Id<ChannelMarker>) -> ChannelId {
    ChannelId(id.into_nonzero())
}

impl Voice {
    /// The calls of the bot `user_id`, sending on `sender`'s cluster, with
    /// songbird's default configuration.
    #[must_use]
    pub fn new(sender: ClusterSender, user_id: Id<UserMarker>) -> Self {
        Self::with_config(sender, user_id, Config::default())
    }

    /// As [`Voice::new`], with this configuration for the new calls (its
    /// `gateway_timeout` bounds how long a join waits for Discord).
    #[must_use]
    pub fn with_config(sender: ClusterSender, user_id: Id<UserMarker>, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                user_id: UserId(user_id.into_nonzero()),
                sender,
                config,
                calls: Mutex::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GuildId, SharedCall>> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The call in this guild, if there is one.
    #[must_use]
    pub fn get(&self, guild_id: Id<GuildMarker>) -> Option<SharedCall> {
        self.lock().get(&guild(guild_id)).cloned()
    }

    /// The call in this guild, made (not joined) if there is none: it sends
    /// on the shard that owns the guild.
    #[must_use]
    pub fn get_or_insert(&self, guild_id: Id<GuildMarker>) -> SharedCall {
        let inner = &self.inner;
        self.lock()
            .entry(guild(guild_id))
            .or_insert_with(|| {
                let handle = Shard::Generic(Arc::new(VoiceShard {
                    sender: inner.sender.clone(),
                    shard: inner.sender.shard_for_guild(guild_id),
                }));
                let call =
                    Call::from_config(guild(guild_id), handle, inner.user_id, inner.config.clone());
                Arc::new(tokio::sync::Mutex::new(call))
            })
            .clone()
    }

    /// Joins a voice channel: sends the voice state update on the guild's
    /// shard and waits until [`Voice::process`], on another task, has fed
    /// the call Discord's answer. Joining the channel the call is already
    /// in returns at once.
    ///
    /// # Errors
    ///
    /// songbird's [`JoinError`]: [`JoinError::NoSender`] when the guild's
    /// shard does not run here or has stopped, [`JoinError::Dropped`] when
    /// it refused the update or the join was replaced by another,
    /// [`JoinError::TimedOut`] when the answer did not come in time.
    pub async fn join(
        &self,
        guild_id: Id<GuildMarker>,
        channel_id: Id<ChannelMarker>,
    ) -> JoinResult<ConnectionInfo> {
        let call = self.get_or_insert(guild_id);
        // The call is unlocked before the wait, so that `process` can feed it.
        let waiting = call.lock().await.join_gateway(channel(channel_id)).await?;
        waiting.await
    }

    /// Leaves the guild's voice channel (the call stays, to join again).
    ///
    /// # Errors
    ///
    /// [`JoinError::NoCall`] when there is no call in this guild; as
    /// [`Voice::join`] when the update is not sent.
    pub async fn leave(&self, guild_id: Id<GuildMarker>) -> JoinResult<()> {
        let call = self.get(guild_id).ok_or(JoinError::NoCall)?;
        call.lock().await.leave().await
    }

    /// Leaves the guild's voice channel and forgets its call.
    ///
    /// # Errors
    ///
    /// As [`Voice::leave`]; the call is forgotten only when it left.
    pub async fn remove(&self, guild_id: Id<GuildMarker>) -> JoinResult<()> {
        self.leave(guild_id).await?;
        self.lock().remove(&guild(guild_id));
        Ok(())
    }

    /// Feeds a voice event to its guild's call, as songbird's manager does
    /// with twilight's events: VOICE_STATE_UPDATE when it is the bot's own
    /// user (the session id and channel; no channel means the bot was
    /// disconnected), VOICE_SERVER_UPDATE (the endpoint and token; one
    /// without an endpoint is ignored, a new one follows). Other events,
    /// and events for guilds without a call, are ignored.
    pub async fn process(&self, event: &Event) {
        match event {
            Event::VoiceStateUpdate(update) => {
                let state = &update.0;
                if state.user_id.into_nonzero() != self.inner.user_id.0 {
                    return;
                }
                let Some(call) = state.guild_id.and_then(|guild| self.get(guild)) else {
                    return;
                };
                call.lock()
                    .await
                    .update_state(state.session_id.clone(), state.channel_id.map(channel));
            }
            Event::VoiceServerUpdate(update) => {
                let (Some(endpoint), Some(call)) = (&update.endpoint, self.get(update.guild_id))
                else {
                    return;
                };
                call.lock()
                    .await
                    .update_server(endpoint.clone(), update.token.clone());
            }
            _ => {}
        }
    }

    /// The bot's user id, whose voice states are processed.
    #[must_use]
    pub fn user_id(&self) -> Id<UserMarker> {
        Id::from(self.inner.user_id.0)
    }
}
