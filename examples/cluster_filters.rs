//! A cluster with event filters: only the dispatch types asked for come out
//! (typed), the others are dropped on the shards' tasks before anything is
//! deserialized. Prints what arrived per type and per shard.
//!
//! Run with `cargo run -p shardwire-examples --example cluster_filters [SECONDS]`
//! (5 by default). Without `DISCORD_TOKEN` it runs against shardwire-sim with
//! 4 shards generating traffic.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports what it did on stdout"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use shardwire::cluster::Cluster;
use shardwire::{EventFilter, ShardEvent};
use shardwire_examples::Target;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::EventType;

#[tokio::main]
async fn main() -> Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let target = Target::from_env(|sim| sim.shards(4).max_concurrency(2).event_rate(200.0)).await?;
    println!("cluster_filters: connecting to {}", target.describe());
    let mut config = target.cluster_config(Intents::GUILDS | Intents::GUILD_MESSAGES);
    config.events = EventFilter::only([
        EventType::MessageCreate,
        EventType::GuildCreate,
        EventType::TypingStart,
    ]);
    config.typed = true;
    let mut cluster = Cluster::start(config).await?;
    println!(
        "{} shards of {}; only MESSAGE_CREATE, GUILD_CREATE and TYPING_START come out",
        cluster.shard_ids().len(),
        cluster.total()
    );

    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_shard: BTreeMap<u32, u64> = BTreeMap::new();
    let mut untyped = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            next = cluster.next_event() => match next {
                Some((shard, ShardEvent::Dispatch { event_type, event, .. })) => {
                    *by_type.entry(event_type.into_owned()).or_default() += 1;
                    *by_shard.entry(shard).or_default() += 1;
                    if event.is_none() {
                        untyped += 1;
                    }
                }
                Some((shard, ShardEvent::Fatal(error))) => anyhow::bail!("shard {shard}: {error}"),
                Some(_) => {}
                None => break,
            },
        }
    }
    println!("after {seconds} s, by type: {by_type:?}");
    println!("by shard: {by_shard:?}");
    for status in cluster.statuses() {
        println!(
            "shard {}: {:?}, latency {:?}",
            status.id, status.state, status.latency
        );
    }
    anyhow::ensure!(
        untyped == 0,
        "{untyped} events of a wanted type did not deserialize"
    );
    anyhow::ensure!(
        by_type
            .keys()
            .all(|t| ["MESSAGE_CREATE", "GUILD_CREATE", "TYPING_START"].contains(&t.as_str())),
        "an unwanted type came through"
    );
    Ok(())
}
