//! A worker of a bot that runs on NATS JetStream: gateway nodes
//! (`shardwire node`) publish every dispatch to a stream; workers read it
//! through a durable pull consumer, acknowledge each event, and send
//! gateway commands back on `shardwire.commands.<shard>`.
//!
//! Run with `cargo run -p shardwire-examples --example nats_worker`.
//! - With `NATS_URL` set, it is only the worker, for a deployment whose
//!   nodes already run, until Ctrl-C.
//! - Without it, it shows the whole path in one process for 5 seconds: a
//!   local nats-server (found through `NATS_SERVER` or the `PATH`), one
//!   gateway node against Discord (`DISCORD_TOKEN`) or shardwire-sim, and
//!   the worker.
//!
//! On the first GUILD_CREATE, the worker asks that guild's shard for the
//! guild's members (op 8, through NATS) and waits for the chunk to come back
//! through the stream.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports what it did on stdout"
)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shardwire::nats::{Layout, LocalServer, Nats, Node, NodeConfig};
use shardwire_examples::Target;
use twilight_model::gateway::Intents;

const NONCE: &str = "nats-worker-example";

/// What the worker saw.
#[derive(Default)]
struct Tally {
    by_type: BTreeMap<String, u64>,
    ids: HashSet<(String, u64)>,
    duplicates: u64,
    asked: bool,
    chunk: bool,
}

/// Reads events until `stop`, acknowledging each.
async fn work(nats: &Nats, stop: impl std::future::Future<Output = ()>) -> Result<Tally> {
    let mut consumer = nats.consumer("example-worker", None).await?;
    let mut tally = Tally::default();
    tokio::pin!(stop);
    loop {
        let delivery = tokio::select! {
            () = &mut stop => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        *tally
            .by_type
            .entry(delivery.event_type.clone())
            .or_default() += 1;
        if !tally
            .ids
            .insert((delivery.session_id.clone(), delivery.seq))
        {
            tally.duplicates += 1;
        }
        let payload: serde_json::Value = serde_json::from_slice(delivery.payload())?;
        match delivery.event_type.as_str() {
            "GUILD_CREATE" if !tally.asked => {
                tally.asked = true;
                let guild = payload["d"]["id"].as_str().context("a guild id")?;
                let request = serde_json::json!({
                    "op": 8,
                    "d": {"guild_id": guild, "query": "", "limit": 0, "nonce": NONCE},
                });
                let subject = nats.layout().command_subject(delivery.shard);
                let reply = nats
                    .client()
                    .request(subject, serde_json::to_vec(&request)?.into())
                    .await?;
                println!(
                    "asked shard {} for the members of guild {guild}: {}",
                    delivery.shard,
                    String::from_utf8_lossy(&reply.payload)
                );
            }
            "GUILD_MEMBERS_CHUNK" if payload["d"]["nonce"] == NONCE => {
                tally.chunk = true;
                println!(
                    "members chunk: {} members",
                    payload["d"]["members"].as_array().map_or(0, Vec::len)
                );
            }
            _ => {}
        }
        delivery.ack().await?;
    }
    Ok(tally)
}

#[tokio::main]
async fn main() -> Result<()> {
    if let Ok(url) = std::env::var("NATS_URL") {
        println!("worker on {url}; Ctrl-C to stop");
        let nats = Nats::connect(&url, Layout::default()).await?;
        let tally = work(&nats, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        println!("{:?}", tally.by_type);
        return Ok(());
    }

    let server = LocalServer::start()
        .await
        .context("this example starts a local nats-server when NATS_URL is unset")?;
    let target = Target::from_env(|sim| sim.shards(2).event_rate(50.0)).await?;
    println!(
        "nats-server at {}; gateway: {}",
        server.url(),
        target.describe()
    );
    let mut config = NodeConfig::new(target.token.clone(), Intents::GUILDS, server.url());
    config.api_base.clone_from(&target.api_base);
    config.node_id = "example-node".into();
    config.range_size = 1;
    if target.sim.is_some() {
        config.identify_window = Duration::from_secs(1);
    }
    let node = Node::start(config).await?;
    let nats = Nats::connect(&server.url(), Layout::default()).await?;
    let tally = work(&nats, tokio::time::sleep(Duration::from_secs(5))).await?;
    println!("node {} ran shards {:?}", node.id(), node.shards());
    node.shutdown().await?;
    let total: u64 = tally.by_type.values().sum();
    println!(
        "{total} events, {} distinct, {} duplicates: {:?}",
        tally.ids.len(),
        tally.duplicates,
        tally.by_type
    );
    if !tally.chunk {
        bail!("the member chunk never came back through the stream");
    }
    if tally.duplicates > 0 {
        bail!("JetStream delivered {} duplicates", tally.duplicates);
    }
    if let Some(sim) = &target.sim {
        let violations = sim.violations();
        println!("the simulator saw violations: {}", violations.len());
        if !violations.is_empty() {
            bail!("gateway rules broken: {violations:?}");
        }
    }
    Ok(())
}
