//! A minimal bot: answers `!ping` with `pong`, as a reply, reading typed
//! events (twilight-model) from the cluster's stream.
//!
//! Run with `cargo run -p shardwire-examples --example bot_reply`. With
//! `DISCORD_TOKEN` set it runs on Discord until Ctrl-C (enable the Message
//! Content intent for the application in the Developer Portal); without,
//! it runs against shardwire-sim, which sends one `!ping`, and stops after
//! the reply.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports what it did on stdout"
)]

use anyhow::Result;
use serde_json::json;
use shardwire::cluster::{Cluster, api_request};
use shardwire::{EventFilter, ShardEvent};
use shardwire_corpus::EventGenerator;
use shardwire_examples::Target;
use shardwire_sim::Fault;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::{Event, EventType};

#[tokio::main]
async fn main() -> Result<()> {
    let target = Target::from_env(|sim| sim).await?;
    println!("bot_reply: connecting to {}", target.describe());
    let mut config = target.cluster_config(
        Intents::GUILD_MESSAGES | Intents::DIRECT_MESSAGES | Intents::MESSAGE_CONTENT,
    );
    // Only messages come out, typed; nothing else is even deserialized.
    config.events = EventFilter::only([EventType::MessageCreate]);
    config.typed = true;
    let mut cluster = Cluster::start(config).await?;

    while let Some((shard, event)) = cluster.next_event().await {
        match event {
            ShardEvent::Ready { .. } => {
                println!("shard {shard} ready");
                if let Some(sim) = &target.sim {
                    // Someone says !ping.
                    let mut message = EventGenerator::new(7, 1).message_create();
                    message["content"] = json!("!ping");
                    sim.inject(
                        Some(shard),
                        Fault::Dispatch {
                            event_type: "MESSAGE_CREATE".into(),
                            d: message,
                        },
                    );
                }
            }
            ShardEvent::Dispatch {
                event: Some(event), ..
            } => {
                let Event::MessageCreate(message) = *event else {
                    continue;
                };
                if message.author.bot || message.content != "!ping" {
                    continue;
                }
                let reply = json!({
                    "content": "pong",
                    "message_reference": {"message_id": message.id.to_string()},
                });
                let path = format!("/channels/{}/messages", message.channel_id);
                api_request(
                    &target.api_base,
                    &target.token,
                    "POST",
                    &path,
                    Some(reply.to_string()),
                )
                .await?;
                println!(
                    "shard {shard}: replied pong to {} in channel {}",
                    message.author.name, message.channel_id
                );
                if let Some(sim) = &target.sim {
                    let created = sim.observations().messages;
                    println!("the simulator received: {created:?}");
                    anyhow::ensure!(created.len() == 1 && created[0].content == "pong");
                    break;
                }
            }
            ShardEvent::Fatal(error) => anyhow::bail!("shard {shard}: {error}"),
            _ => {}
        }
    }
    Ok(())
}
