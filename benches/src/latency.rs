//! `shardwire-bench latency`: K shards receive events the sim stamps at a
//! fixed rate per session; reports the delay from each stamp to the event
//! in the consumer's hands, over every shard's events together.

use std::sync::Arc;

use anyhow::{Result, bail};
use futures_core::Stream as _;
use serde_json::{Value, json};
use shardwire::shard::Unqueued;
use shardwire::{Shard, ShardConfig, ShardEvent, Token};
use tokio::task::JoinSet;
use twilight_model::gateway::Intents;

use crate::{Client, twilight_config};

/// Samples `events` stamped events over `shards` shards (each takes its
/// share) and reports their percentiles in µs.
pub(crate) async fn run(
    client: Client,
    gateway: &str,
    token: &str,
    shards: u32,
    events: usize,
) -> Result<Value> {
    let per_shard = events.div_ceil(shards.max(1) as usize);
    let mut tasks = JoinSet::new();
    for id in 0..shards {
        match client {
            Client::Shardwire => {
                let config =
                    ShardConfig::new(Token::new(token), Intents::GUILDS, id, shards, gateway);
                tasks.spawn(shardwire_shard(config, per_shard));
            }
            Client::Twilight => {
                tasks.spawn(twilight_shard(
                    twilight_config(gateway, token),
                    id,
                    shards,
                    per_shard,
                ));
            }
        }
    }
    let mut samples = Vec::with_capacity(per_shard * shards as usize);
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined??);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    Ok(json!({
        "client": format!("{client:?}").to_lowercase(),
        "shards": shards,
        "samples": samples.len(),
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "max_us": at(1.0),
    }))
}

/// The delay since the sim stamped this event, in nanoseconds.
fn delay_ns(json: &str) -> Option<u64> {
    const KEY: &str = "\"sent_at_ns\":";
    let start = json.find(KEY)? + KEY.len();
    let digits = json[start..].split(|c: char| !c.is_ascii_digit()).next()?;
    let sent: u64 = digits.parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    Some(now.saturating_sub(sent))
}

async fn shardwire_shard(config: ShardConfig, events: usize) -> Result<Vec<u64>> {
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    let mut samples = Vec::with_capacity(events);
    while samples.len() < events {
        match shard.next_event().await {
            Some(ShardEvent::Dispatch { json, .. }) => samples.extend(delay_ns(&json)),
            Some(ShardEvent::Fatal(error)) => bail!("{error}"),
            Some(_) => {}
            None => bail!("the shard stopped"),
        }
    }
    Ok(samples)
}

async fn twilight_shard(
    config: twilight_gateway::Config<crate::NoWait>,
    id: u32,
    shards: u32,
    events: usize,
) -> Result<Vec<u64>> {
    use twilight_gateway::{Message, Shard, ShardId};
    let mut shard = Shard::with_config(ShardId::new(id, shards), config);
    let mut samples = Vec::with_capacity(events);
    while samples.len() < events {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut shard).poll_next(cx)).await {
            Some(Ok(Message::Text(json))) => samples.extend(delay_ns(&json)),
            Some(Ok(Message::Close(_))) => {}
            Some(Err(error)) => bail!("{error}"),
            None => bail!("the shard stopped"),
        }
    }
    Ok(samples)
}
