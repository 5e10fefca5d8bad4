//! Many Discord Gateway shards as one.
//!
//! - [`Gateway`]: `GET /gateway/bot` (URL, recommended shard count, session
//!   start limit), one shared instance per token.
//! - [`LocalQueue`]: the in-memory identify queue that honours
//!   `max_concurrency` (one identify per bucket `shard_id % max_concurrency`
//!   every 5 seconds, in order) and the day's session starts. It implements
//!   `shardwire_shard::IdentifyQueue`, so a multi-machine queue can replace
//!   it.
//! - [`Cluster`]: spawns the shards, merges their events into one stream
//!   (in order within each shard, tagged with the shard id, filtered per
//!   event type before anything is deserialized), and restarts, adds,
//!   removes and shuts down shards, exporting their sessions.
//! - [`ClusterSender`]: sends from any task while another takes the
//!   events: to a shard, to a guild's shard or to every shard, and member
//!   requests that resolve to their collected chunks.
//! - [`SessionStore`]: where sessions are kept between runs (loaded at
//!   start, saved as they change and at shutdown); [`FileSessionStore`]
//!   keeps them in a JSON file.
//! - `Voice` (feature `songbird`): joins voice channels with songbird's
//!   `Call`s, the sender being songbird's `GenericSharder`, and routes the
//!   voice events to them.
//!
//! ```no_run
//! # async fn run() -> Result<(), shardwire_cluster::ClusterError> {
//! use shardwire_cluster::{Cluster, ClusterConfig};
//! use shardwire_codec::Token;
//! use twilight_model::gateway::Intents;
//!
//! let config = ClusterConfig::new(Token::new("a token"), Intents::GUILD_MESSAGES);
//! let mut cluster = Cluster::start(config).await?;
//! let sender = cluster.sender();
//! while let Some((shard, event)) = cluster.next_event().await {
//!     // Typed events (`ClusterConfig::typed`) are twilight-model's `Event`:
//!     // `event.twilight()` feeds `InMemoryCache::update` as it is.
//!     let sender = sender.clone();
//!     tokio::spawn(async move {
//!         // Reply from another task, say.
//! #       let _ = (sender, shard, event);
//!     });
//! }
//! # Ok(())
//! # }
//! ```

mod chunks;
mod cluster;
mod gateway;
pub mod metrics;
mod queue;
pub mod reshard;
mod sender;
mod store;
#[cfg(feature = "songbird")]
mod voice;

pub use crate::chunks::GuildMembers;
pub use crate::cluster::{
    Cluster, ClusterConfig, ClusterError, Configure, ShardSpec, ShardStatus, Shutdown,
};
pub use crate::gateway::{
    DEFAULT_API_BASE, Gateway, GatewayError, GatewayInfo, MAX_RETRY_WAIT, SessionStartLimit,
    api_request,
};
pub use crate::queue::{IDENTIFY_WINDOW, LocalQueue, MAX_BUCKETS};
pub use crate::sender::ClusterSender;
pub use crate::store::{FileSessionStore, SessionStore, StoreError, StoreFuture};
#[cfg(feature = "songbird")]
pub use crate::voice::{SharedCall, Voice};
/// The songbird this crate's voice support is built on (feature
/// `songbird`): its `Call`, `ConnectionInfo`, `Config` and errors.
#[cfg(feature = "songbird")]
pub use songbird;
