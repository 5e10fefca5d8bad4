//! shardwire keeps Discord bots connected to the Discord Gateway: one
//! WebSocket per shard, many shards per process.
//!
//! This facade re-exports the layers:
//! - [`codec`]: transport decompression (zlib-stream, zstd-stream), payload
//!   decompression, a lazy JSON scan, typed events through twilight-model,
//!   outgoing commands;
//! - [`heartbeat`]: the heartbeat scheduler;
//! - [`shard`]: one gateway connection, a sans-IO state machine and its
//!   tokio driver;
//! - [`cluster`]: many shards as one, with `/gateway/bot`, the identify
//!   queue, routing and lifecycle; with feature `songbird`, voice channels
//!   joined through songbird's gateway half (`cluster::Voice`);
//! - `nats` (feature `nats`): many processes on NATS JetStream: a shared
//!   identify queue, leased shard ranges, a session store, events published
//!   with deduplication, gateway nodes;
//! - `sim` (feature `sim`): a local Discord Gateway (WebSocket and REST)
//!   with scripted faults, to test a bot without a token or a network.
//!
//! The most used types are also at the top level. No feature is on by
//! default, and the crate holds nothing but these re-exports; the
//! `shardwire` command (`tail`, `demo`, `sim`, `node`) is the
//! `shardwire-cli` package.
//!
//! ```no_run
//! use shardwire::{Cluster, ClusterConfig, ShardEvent, Token};
//! use twilight_model::gateway::Intents;
//!
//! # async fn run() -> Result<(), shardwire::cluster::ClusterError> {
//! let token = Token::new(std::env::var("DISCORD_TOKEN").unwrap_or_default());
//! let mut cluster = Cluster::start(ClusterConfig::new(token, Intents::GUILD_MESSAGES)).await?;
//! while let Some((shard, event)) = cluster.next_event().await {
//!     if let ShardEvent::Dispatch { event_type, .. } = &event {
//!         println!("shard {shard}: {event_type}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub use shardwire_cluster as cluster;
pub use shardwire_codec as codec;
pub use shardwire_heartbeat as heartbeat;
#[cfg(feature = "nats")]
pub use shardwire_nats as nats;
pub use shardwire_shard as shard;
#[cfg(feature = "sim")]
pub use shardwire_sim as sim;

pub use shardwire_cluster::{
    Cluster, ClusterConfig, ClusterSender, FileSessionStore, SessionStore, ShardSpec,
};
pub use shardwire_codec::{Command, Compression, EventFilter, Token};
pub use shardwire_shard::{Json, Outgoing, Session, Shard, ShardConfig, ShardEvent, ShardState};
