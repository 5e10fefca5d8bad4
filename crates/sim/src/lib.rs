//! A real local Discord Gateway for tests, benchmarks and the demo.
//!
//! [`Sim`] serves, on loopback, what Discord serves: REST
//! `GET /api/v10/gateway/bot` and the gateway WebSocket (`/?v=10&encoding=json
//! &compress=…`), plus a second listener that READY hands out as
//! `resume_gateway_url`. It validates Identify and Resume, sends READY and
//! GUILD_CREATEs, replays on resume, answers commands, enforces the gateway's
//! limits (recording every broken rule as a [`Violation`]) and injects
//! [`Fault`]s on demand. [`MetricsRecorder`] is the client's side of a
//! test: a `metrics` recorder whose values a test reads back.
//!
//! For resharding tests, a guild pool ([`SimConfig::guild_pool`]) gives
//! sessions of different shard counts the same guilds, and one stream of
//! events ([`SimConfig::guild_event_rate`]) sends each guild's events to
//! every session that owns it, to the sessions of one shard count later
//! than to the others' if asked ([`Sim::set_event_delay`]);
//! [`Sim::pool_events`] records what was sent.
//!
//! ```no_run
//! # async fn run() -> Result<(), shardwire_sim::SimError> {
//! use shardwire_sim::{Fault, Sim};
//!
//! let sim = Sim::builder().shards(2).max_concurrency(1).start().await?;
//! println!("REST at {}, gateway at {}", sim.api_url(), sim.gateway_url());
//! // … connect a client, then:
//! sim.inject(Some(0), Fault::Reconnect);
//! assert!(sim.observations().violations.is_empty());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod inbound;
mod metrics;
mod observe;
mod outbound;
mod pool;
pub mod raw;
mod rest;
mod server;
mod session;
mod state;
mod style;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::config::{KNOWN_INTENTS, PRIVILEGED_INTENTS, SimBuilder, SimConfig};
pub use crate::metrics::MetricsRecorder;
pub use crate::observe::{
    CloseSeen, ClosedBy, CommandSeen, ConnectionSeen, Fault, FieldOrder, HeartbeatSeen,
    IdentifySeen, Listener, MessageSeen, Observations, PayloadStyle, RestFault, RestSeen,
    ResumeOutcome, ResumeSeen, Violation, ViolationKind,
};
pub use crate::pool::PoolEvent;
pub use crate::state::Flood;

/// A session the simulator holds, as [`Sim::sessions`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Its id.
    pub session_id: String,
    /// Its shard id.
    pub shard: u32,
    /// The last sequence number sent on it (every dispatch from 1 to this
    /// one was sent, some perhaps twice by a replay).
    pub seq: u64,
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A listener could not be bound.
    #[error("could not bind a listener: {0}")]
    Bind(#[source] std::io::Error),
}

/// A running simulator. Dropping it stops its listeners; live connections
/// end when their clients go.
pub struct Sim {
    shared: Arc<state::Shared>,
    api_url: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("api_url", &self.api_url)
            .field("gateway_url", &self.shared.gateway_url)
            .field("resume_gateway_url", &self.shared.resume_url)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A builder with Discord's defaults and one shard.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The REST base, like `https://discord.com/api/v10`:
    /// `{api_url}/gateway/bot` answers.
    #[must_use]
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The gateway URL that `/gateway/bot` hands out.
    #[must_use]
    pub fn gateway_url(&self) -> &str {
        &self.shared.gateway_url
    }

    /// The `resume_gateway_url` that READY hands out.
    #[must_use]
    pub fn resume_gateway_url(&self) -> &str {
        &self.shared.resume_url
    }

    /// The token the simulator accepts.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    /// The configuration it runs with.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Daily session starts left.
    #[must_use]
    pub fn remaining(&self) -> u32 {
        self.shared.remaining()
    }

    /// Injects a fault into every live connection of `shard` (of every shard
    /// when `None`). Returns how many connections it reached.
    pub fn inject(&self, shard: Option<u32>, fault: Fault) -> usize {
        self.shared.inject(shard, &fault)
    }

    /// A copy of everything seen so far.
    #[must_use]
    pub fn observations(&self) -> Observations {
        self.shared.snapshot()
    }

    /// The sessions the simulator holds, which a client can still resume,
    /// each with the last sequence number it sent.
    #[must_use]
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = state::lock(&self.shared.sessions)
            .iter()
            .map(|(id, session)| SessionInfo {
                session_id: id.clone(),
                shard: session.shard[0],
                seq: session.seq,
            })
            .collect();
        sessions.sort_by(|a, b| (a.shard, &a.session_id).cmp(&(b.shard, &b.session_id)));
        sessions
    }

    /// Sets the pool's event rate, in events per second over the whole pool
    /// ([`SimConfig::guild_event_rate`]); 0 stops the stream, and events
    /// already queued are still sent.
    pub fn set_guild_event_rate(&self, per_second: f64) {
        self.shared.pool.set_rate(per_second);
    }

    /// Delays the pool events of the sessions of `shard_count` shards: each
    /// is sent `delay` after it was generated (from the next event on;
    /// none by default). A session's events keep their order.
    pub fn set_event_delay(&self, shard_count: u32, delay: Duration) {
        self.shared.pool.set_delay(shard_count, delay);
    }

    /// The pool's guild ids, pool guild 0 first (empty without a pool).
    #[must_use]
    pub fn pool_guild_ids(&self) -> Vec<String> {
        self.shared.pool.guild_ids().to_vec()
    }

    /// Every pool event routed to at least one session, once each, in the
    /// order they were generated: what a client compares, guild by guild,
    /// with what it received. Events no session owned are not in it, nor
    /// events whose every session ended for good (a close Discord ends a
    /// session with, a refused resume) before sending them: no client could
    /// get those. It holds the first 1,000,000 events (see
    /// [`Sim::pool_events_overflowed`]).
    #[must_use]
    pub fn pool_events(&self) -> Vec<PoolEvent> {
        self.shared.pool.events()
    }

    /// Whether pool events were routed after [`Sim::pool_events`] was full.
    #[must_use]
    pub fn pool_events_overflowed(&self) -> bool {
        self.shared.pool.overflowed()
    }

    /// How many pool events were dropped, over all sessions, because a
    /// session already had 100,000 waiting (its oldest goes first).
    #[must_use]
    pub fn pool_events_dropped(&self) -> u64 {
        self.shared.pool.dropped()
    }

    /// Sets [`SimConfig::max_guilds_per_shard`] for the Identifies from now
    /// on (0: no limit).
    pub fn set_max_guilds_per_shard(&self, max: u32) {
        self.shared
            .max_guilds_per_shard
            .store(max, Ordering::Relaxed);
    }

    /// Sets the shard count `GET /gateway/bot` recommends from now on
    /// (at start, [`SimConfig::shards`]).
    pub fn set_recommended_shards(&self, shards: u32) {
        self.shared
            .recommended_shards
            .store(shards, Ordering::Relaxed);
    }

    /// The broken rules seen so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.snapshot().violations
    }

    /// Stops accepting connections and waits for the listeners to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
