//! A bot on twilight's crates with shardwire's gateway: twilight-http for
//! REST (the gateway information, the replies), twilight-cache-inmemory
//! fed the cluster's typed events as they are. It answers `!ping` with what
//! its cache holds about the guild.
//!
//! Run with `cargo run -p shardwire-examples --example twilight_bot`. With
//! `DISCORD_TOKEN` set it runs on Discord until Ctrl-C (enable the Server
//! Members and Message Content intents for the application in the
//! Developer Portal); without, it runs against shardwire-sim in this
//! process (twilight-http in proxy mode, plain HTTP on loopback), which
//! sends one `!ping` once the guilds are cached, and it stops after the
//! reply, checking what the simulator saw.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports what it did on stdout"
)]

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::json;
use shardwire::ShardEvent;
use shardwire::cluster::Cluster;
use shardwire_corpus::EventGenerator;
use shardwire_examples::Target;
use shardwire_sim::{Fault, Sim};
use twilight_cache_inmemory::DefaultInMemoryCache;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::Event;

#[tokio::main]
async fn main() -> Result<()> {
    let target = Target::from_env(|sim| sim.shards(2).max_concurrency(2)).await?;
    println!("twilight_bot: connecting to {}", target.describe());

    // twilight-http: on Discord as it comes; on the simulator in proxy
    // mode, which speaks plain HTTP to `host:port`.
    let mut http = twilight_http::Client::builder().token(target.token.expose().to_owned());
    if let Some(sim) = &target.sim {
        http = http.proxy(rest_host(sim)?, true);
    }
    let http = http.build();

    // The gateway information comes from twilight-http: the cluster makes
    // no `GET /gateway/bot` of its own.
    let info = http.gateway().authed().await?.model().await?;
    println!(
        "twilight-http: {} shards recommended, gateway {}",
        info.shards, info.url
    );
    let mut config = target.cluster_config(
        Intents::GUILDS
            | Intents::GUILD_MEMBERS
            | Intents::GUILD_MESSAGES
            | Intents::MESSAGE_CONTENT,
    );
    config.gateway_info = Some(info.into());
    config.typed = true;
    let mut cluster = Cluster::start(config).await?;

    let cache = DefaultInMemoryCache::new();
    // The shards ready and the guilds their READYs announced, and whether
    // the simulator's `!ping` is out.
    let mut ready_shards = 0;
    let mut announced = 0;
    let mut pinged = false;
    // On the simulator, all of it takes well under a second.
    let deadline = target
        .sim
        .as_ref()
        .map(|_| tokio::time::Instant::now() + Duration::from_secs(60));
    loop {
        let next = cluster.next_event();
        let Some((shard, event)) = (match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, next)
                .await
                .context("no reply to the simulator's !ping within 60 s")?,
            None => next.await,
        }) else {
            break;
        };
        if let ShardEvent::Fatal(error) = &event {
            anyhow::bail!("shard {shard}: {error}");
        }
        let Some(typed) = event.twilight() else {
            continue;
        };
        // The cache takes twilight-model's events as they are.
        cache.update(typed);
        match typed {
            Event::Ready(ready) => {
                ready_shards += 1;
                announced += ready.guilds.len();
                println!("shard {shard} ready: {} guilds", ready.guilds.len());
            }
            Event::GuildCreate(_) => {
                // Once every shard is ready and every guild cached.
                if let Some(sim) = &target.sim
                    && !pinged
                    && ready_shards == cluster.shard_ids().len()
                    && cache.stats().guilds() == announced
                {
                    pinged = ping(sim, &cache, &cluster)?;
                }
            }
            Event::MessageCreate(message) => {
                if message.author.bot || message.content != "!ping" {
                    continue;
                }
                let guild = message.guild_id.and_then(|id| cache.guild(id));
                let text = match &guild {
                    Some(guild) => format!(
                        "pong from {}: {} members, {} channels cached of {} guilds",
                        guild.name(),
                        cache.stats().guild_members(guild.id()).unwrap_or(0),
                        cache.stats().guild_channels(guild.id()).unwrap_or(0),
                        cache.stats().guilds(),
                    ),
                    None => "pong".to_owned(),
                };
                drop(guild);
                let reply = http
                    .create_message(message.channel_id)
                    .content(&text)
                    .reply(message.id)
                    .await?
                    .model()
                    .await?;
                println!(
                    "shard {shard}: replied {:?} as message {}",
                    reply.content, reply.id
                );
                if let Some(sim) = &target.sim {
                    check(sim, &message.id.to_string(), &text)?;
                    println!("twilight_bot: the simulator saw what it should");
                    break;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// twilight-http's proxy `host:port` for the simulator's REST.
fn rest_host(sim: &Sim) -> Result<String> {
    sim.api_url()
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/api/v10"))
        .map(str::to_owned)
        .context("the simulator's REST is not http://host:port/api/v10")
}

/// Someone says `!ping` in a text channel of a cached guild (whose author
/// the cache then holds as a member too).
fn ping(sim: &Sim, cache: &DefaultInMemoryCache, cluster: &Cluster) -> Result<bool> {
    check_cache(sim, cache)?;
    let Some(guild) = cache.iter().guilds().map(|guild| guild.id()).min() else {
        return Ok(false);
    };
    let channel = cache
        .guild_channels(guild)
        .and_then(|channels| channels.iter().min().copied())
        .context("a cached guild without channels")?;
    let mut message = EventGenerator::new(7, 1).message_create();
    message["content"] = json!("!ping");
    message["guild_id"] = json!(guild.to_string());
    message["channel_id"] = json!(channel.to_string());
    let shard = cluster.sender().shard_for_guild(guild);
    let reached = sim.inject(
        Some(shard),
        Fault::Dispatch {
            event_type: "MESSAGE_CREATE".into(),
            d: message,
        },
    );
    Ok(reached > 0)
}

/// What the simulator must have seen: one reply, with the text sent, to the
/// `!ping`; one `GET /gateway/bot`, twilight-http's.
fn check(sim: &Sim, ping_id: &str, text: &str) -> Result<()> {
    let seen = sim.observations();
    println!("the simulator received: {:?}", seen.messages);
    anyhow::ensure!(
        seen.messages.len() == 1
            && seen.messages[0].content == text
            && seen.messages[0].reply_to.as_deref() == Some(ping_id),
        "the reply"
    );
    anyhow::ensure!(
        seen.gateway_bot_requests.len() == 1,
        "GET /gateway/bot {} times, expected twilight-http's only",
        seen.gateway_bot_requests.len()
    );
    anyhow::ensure!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

/// The cache holds every guild the simulator sent, with all their members.
fn check_cache(sim: &Sim, cache: &DefaultInMemoryCache) -> Result<()> {
    let config = sim.config();
    let guilds = (config.shards * config.guilds_per_shard) as usize;
    let stats = cache.stats();
    anyhow::ensure!(stats.guilds() == guilds, "{} guilds cached", stats.guilds());
    for guild in cache.iter().guilds() {
        anyhow::ensure!(
            stats.guild_members(guild.id()) == Some(config.members_per_guild),
            "the members of guild {}",
            guild.id()
        );
    }
    println!(
        "cache: {} guilds, {} members, {} channels",
        stats.guilds(),
        stats.members(),
        stats.channels()
    );
    Ok(())
}
