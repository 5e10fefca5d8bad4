//! What the reshard test binaries share: the simulator with its guild pool,
//! the cluster's configuration, and reading the cluster's events.

#![allow(dead_code, reason = "each test binary uses its own part of it")]

use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::{Cluster, ClusterConfig, ShardSpec};
use shardwire_codec::Token;
use shardwire_shard::ShardEvent;
use shardwire_sim::Sim;
use tokio::time::Instant;
use twilight_model::gateway::Intents;

pub(crate) const WINDOW: Duration = Duration::from_millis(250);
pub(crate) const GUILDS: u32 = 64;
/// Pool events a second, across the 64 guilds.
pub(crate) const RATE: f64 = 400.0;

pub(crate) fn sim(shards: u32) -> shardwire_sim::SimBuilder {
    Sim::builder()
        .shards(shards)
        .max_concurrency(2)
        .identify_window(WINDOW)
        .guild_pool(GUILDS)
        .guild_event_rate(RATE)
}

pub(crate) fn config(sim: &Sim) -> ClusterConfig {
    let mut config = ClusterConfig::new(Token::new(sim.token()), Intents::GUILDS);
    config.api_base = sim.api_url().to_owned();
    config.shards = ShardSpec::Recommended;
    config.identify_window = WINDOW;
    config.configure = Some(Arc::new(|shard| {
        shard.backoff_initial = Duration::from_millis(10);
        shard.backoff_cap = Duration::from_millis(100);
    }));
    config
}

pub(crate) async fn next(cluster: &mut Cluster) -> (u32, ShardEvent) {
    tokio::time::timeout(Duration::from_secs(30), cluster.next_event())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// Events until `done` says so, all of them.
pub(crate) async fn read_until(
    cluster: &mut Cluster,
    seen: &mut Vec<(u32, ShardEvent)>,
    mut done: impl FnMut(&ShardEvent) -> bool,
) {
    loop {
        let (shard, event) = next(cluster).await;
        let stop = done(&event);
        seen.push((shard, event));
        if stop {
            return;
        }
    }
}

/// Events for `duration`.
pub(crate) async fn read_for(
    cluster: &mut Cluster,
    seen: &mut Vec<(u32, ShardEvent)>,
    duration: Duration,
) {
    let end = Instant::now() + duration;
    read_until(cluster, seen, |_| Instant::now() >= end).await;
}

/// Reads until `count` shards have been READY.
pub(crate) async fn until_ready(
    cluster: &mut Cluster,
    seen: &mut Vec<(u32, ShardEvent)>,
    count: usize,
) {
    let mut ready = 0;
    read_until(cluster, seen, |event| {
        ready += usize::from(matches!(event, ShardEvent::Ready { .. }));
        ready == count
    })
    .await;
}
