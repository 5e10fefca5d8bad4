//! Resharding across nodes: two gateway nodes on a real nats-server run 4
//! shards of a simulator whose guild pool sends a steady stream; the
//! cluster reshards to 8. Every guild's events must be stored in JetStream
//! exactly once, in the order the simulator sent them, with 4 + 8
//! identifies; and a node that stops in the middle loses none.

#![allow(clippy::print_stdout, reason = "the figures of the run")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardwire_codec::{Payload, Token};
use shardwire_nats::{LocalServer, Nats, Node, NodeConfig, NodeError};
use shardwire_sim::{ClosedBy, ResumeOutcome, Sim};
use tokio::time::Instant;
use twilight_model::gateway::Intents;

const WINDOW: Duration = Duration::from_millis(250);
const GUILDS: u32 = 64;
/// Pool events a second, across the 64 guilds.
const RATE: f64 = 200.0;

fn node_config(sim: &Sim, nats_url: &str, id: &str) -> NodeConfig {
    let mut config = NodeConfig::new(Token::new(sim.token()), Intents::GUILDS, nats_url);
    config.api_base = sim.api_url().to_owned();
    config.node_id = id.to_owned();
    config.capacity = 16;
    config.range_size = 2;
    config.lease_ttl = Duration::from_secs(2);
    config.identify_window = WINDOW;
    config.reshard_overlap = Duration::from_secs(3);
    config
}

/// What the worker read: each stored guild event as `(name, d)` by guild,
/// in stream order, and the marked READYs and GUILD_CREATEs.
#[derive(Default)]
struct Stored {
    by_guild: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    events: u64,
    marked_readies: u64,
    marked_guild_creates: u64,
}

/// Lost and doubled, guild by guild, against what the simulator sent; each
/// guild's events must come in its order.
fn compare(sim: &Sim, stored: &Stored) -> (usize, usize, usize) {
    assert!(!sim.pool_events_overflowed());
    let mut sent: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for event in sim.pool_events() {
        sent.entry(event.guild_id)
            .or_default()
            .push((event.name, event.d));
    }
    let (mut checked, mut lost, mut doubled) = (0, 0, 0);
    for (guild, wanted) in &sent {
        let got = stored.by_guild.get(guild).map_or(&[][..], Vec::as_slice);
        checked += wanted.len();
        let mut counts: HashMap<&(String, Vec<u8>), i64> = HashMap::new();
        for event in wanted {
            *counts.entry(event).or_default() += 1;
        }
        for event in got {
            *counts.entry(event).or_default() -= 1;
        }
        let (guild_lost, guild_doubled) = counts.values().fold((0, 0), |(l, d), count| {
            (
                l + count.max(&0).unsigned_abs(),
                d + count.min(&0).unsigned_abs(),
            )
        });
        if guild_lost + guild_doubled > 0 {
            println!(
                "guild {guild}: {guild_lost} lost, {guild_doubled} doubled of {}",
                wanted.len()
            );
        } else {
            assert_eq!(got, wanted.as_slice(), "guild {guild}: in order");
        }
        lost += usize::try_from(guild_lost).unwrap();
        doubled += usize::try_from(guild_doubled).unwrap();
    }
    (checked, lost, doubled)
}

/// A simulator of 4 shards with the guild pool (its 8-shard sessions'
/// events `new_delay` behind, or its 4-shard ones `old_delay`), two nodes
/// on it, and a worker reading what JetStream stores.
struct Setup {
    sim: Sim,
    a: Node,
    b: Node,
    nats: Nats,
    stored: Arc<Mutex<Stored>>,
    worker: tokio::task::JoinHandle<()>,
}

async fn setup(server: &LocalServer, new_delay: Duration, old_delay: Duration) -> Setup {
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .identify_window(WINDOW)
        .guild_pool(GUILDS)
        .guild_event_rate(RATE)
        .start()
        .await
        .unwrap();
    sim.set_event_delay(8, new_delay);
    sim.set_event_delay(4, old_delay);
    let a = Node::start(node_config(&sim, &server.url(), "node-a"))
        .await
        .unwrap();
    let b = Node::start(node_config(&sim, &server.url(), "node-b"))
        .await
        .unwrap();
    let nats = common::connect(server).await;
    let mut consumer = nats.consumer("reshard-worker", None).await.unwrap();
    let stored = Arc::new(Mutex::new(Stored::default()));
    let worker = {
        let stored = stored.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let payload = Payload::scan(delivery.payload()).unwrap();
                let d = payload.data().as_bytes().to_vec();
                let name = delivery.event_type.clone();
                {
                    let mut stored = stored.lock().unwrap();
                    stored.events += 1;
                    if delivery.from_reshard == Some(8) {
                        match name.as_str() {
                            "READY" => stored.marked_readies += 1,
                            "GUILD_CREATE" => stored.marked_guild_creates += 1,
                            _ => {}
                        }
                    }
                    let value: serde_json::Value = serde_json::from_slice(&d).unwrap();
                    if let Some(guild) = value.get("guild_id").and_then(|g| g.as_str())
                        && !matches!(name.as_str(), "GUILD_CREATE" | "READY")
                    {
                        stored
                            .by_guild
                            .entry(guild.to_owned())
                            .or_default()
                            .push((name, d));
                    }
                }
                delivery.ack().await.unwrap();
            }
        })
    };
    common::wait_for(
        "two nodes running two shards each",
        Duration::from_secs(20),
        || a.shards().len() == 2 && b.shards().len() == 2 && sim.sessions().len() == 4,
    )
    .await;
    // Events flow for a second before the reshard.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Setup {
        sim,
        a,
        b,
        nats,
        stored,
        worker,
    }
}

/// Waits up to 40 s for the reshard record to go, and checks the count.
async fn reshard_ended(nats: &Nats) {
    let sessions = nats.sessions().await.unwrap();
    let start = Instant::now();
    while sessions.reshard().await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the reshard did not end within 40 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sessions.total().await.unwrap(),
        Some(8),
        "the count moved on"
    );
}

/// A second of the new generation alone; then the pool's stream stops and
/// the worker reads until it has had nothing new for 2 s.
async fn drain(sim: &Sim, stored: &Mutex<Stored>) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_guild_event_rate(0.0);
    let mut last = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stored.lock().unwrap().events;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

fn accepted_identifies(sim: &Sim) -> usize {
    sim.observations()
        .identifies
        .iter()
        .filter(|i| i.accepted)
        .count()
}

/// 4 shards on two nodes, then a reshard to 8 under a steady stream, one
/// generation's events behind the other's by `new_delay` or `old_delay`;
/// then node b stops, and node a resumes its new shards.
async fn reshard_4_to_8(new_delay: Duration, old_delay: Duration) {
    let Some(server) = common::server().await else {
        return;
    };
    let Setup {
        sim,
        a,
        b,
        nats,
        stored,
        worker,
    } = setup(&server, new_delay, old_delay).await;
    // A count that does not keep each guild's streams on one node.
    match a.reshard(6).await {
        Err(NodeError::Nats(error)) => assert!(error.to_string().contains("multiple"), "{error}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let started = Instant::now();
    a.reshard(8).await.unwrap();
    match b.reshard(8).await {
        Err(NodeError::Nats(error)) => assert!(error.to_string().contains("under way"), "{error}"),
        other => panic!("expected under way, got {other:?}"),
    }
    reshard_ended(&nats).await;
    let took = started.elapsed();
    common::wait_for(
        "both nodes on the new count",
        Duration::from_secs(10),
        || {
            let mut all: Vec<u32> = a.shards().into_iter().chain(b.shards()).collect();
            all.sort_unstable();
            all == (0..8).collect::<Vec<_>>()
        },
    )
    .await;
    drain(&sim, &stored).await;

    let (checked, lost, doubled) = compare(&sim, &stored.lock().unwrap());
    let observations = sim.observations();
    let identifies = accepted_identifies(&sim);
    let resumes = observations
        .resumes
        .iter()
        .filter(|r| matches!(r.outcome, ResumeOutcome::Resumed { .. }))
        .count();
    let ended = observations
        .closes
        .iter()
        .filter(|c| c.by == ClosedBy::Client && c.code == Some(1000))
        .count();
    let (marked_readies, marked_guild_creates) = {
        let stored = stored.lock().unwrap();
        (stored.marked_readies, stored.marked_guild_creates)
    };
    println!(
        "reshard 4 -> 8 across 2 nodes, new generation {new_delay:?} behind, old {old_delay:?}: \
         {took:?} from the call to the new count; \
         {checked} guild events checked, {lost} lost, {doubled} doubled; {identifies} identifies, \
         {resumes} resumes; {marked_readies} READYs and {marked_guild_creates} GUILD_CREATEs marked; \
         {ended} old sessions closed with 1000; violations: {}",
        observations.violations.len()
    );
    assert_eq!((lost, doubled), (0, 0));
    assert!(checked > 1000, "{checked} events is too few to tell");
    assert_eq!(identifies, 4 + 8);
    assert_eq!(marked_readies, 8);
    assert_eq!(marked_guild_creates, u64::from(GUILDS));
    assert_eq!(ended, 4, "{:?}", observations.closes);
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );

    // The new sessions were stored: node b hands its shards to node a,
    // which resumes them.
    let before = sim.observations().resumes.len();
    b.shutdown().await.unwrap();
    common::wait_for("node a running all 8", Duration::from_secs(20), || {
        a.shards() == (0..8).collect::<Vec<_>>()
    })
    .await;
    common::wait_for("b's 4 new shards resumed", Duration::from_secs(10), || {
        sim.observations().resumes.len() >= before + 4
    })
    .await;
    assert_eq!(
        accepted_identifies(&sim),
        12,
        "a handover after the reshard resumes"
    );
    assert!(sim.observations().violations.is_empty());
    worker.abort();
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_4_to_8_across_2_nodes_stores_every_guild_event_once_in_order() {
    reshard_4_to_8(Duration::ZERO, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_across_nodes_with_the_new_generation_1s_behind_loses_and_doubles_nothing() {
    reshard_4_to_8(Duration::from_secs(1), Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_across_nodes_with_the_old_generation_1s_behind_loses_and_doubles_nothing() {
    reshard_4_to_8(Duration::ZERO, Duration::from_secs(1)).await;
}

/// A node that stops in the middle of the merge hands its range over: the
/// other node resumes the old shards, starts the new ones again, and
/// merges them itself. Nothing is lost; what the first node's merge had
/// stored may be stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_across_nodes_a_node_stopped_mid_merge_loses_nothing() {
    let Some(server) = common::server().await else {
        return;
    };
    let Setup {
        sim,
        a,
        b,
        nats,
        stored,
        worker,
    } = setup(&server, Duration::ZERO, Duration::ZERO).await;
    a.reshard(8).await.unwrap();
    // Every new shard READY: both ranges have switched or are about to.
    common::wait_for(
        "the new generation's sessions",
        Duration::from_secs(20),
        || sim.sessions().len() == 4 + 8,
    )
    .await;
    b.shutdown().await.unwrap();
    reshard_ended(&nats).await;
    common::wait_for("node a running all 8", Duration::from_secs(10), || {
        a.shards() == (0..8).collect::<Vec<_>>()
    })
    .await;
    drain(&sim, &stored).await;
    let (checked, lost, doubled) = compare(&sim, &stored.lock().unwrap());
    let identifies = accepted_identifies(&sim);
    println!(
        "reshard 4 -> 8, node b stopped mid-merge: {checked} guild events checked, {lost} lost, \
         {doubled} doubled; {identifies} identifies"
    );
    assert_eq!(lost, 0);
    assert!(checked > 1000, "{checked} events is too few to tell");
    // b's range's 4 new shards identify again under node a.
    assert_eq!(identifies, 4 + 8 + 4);
    assert!(
        sim.observations().violations.is_empty(),
        "{:?}",
        sim.observations().violations
    );
    worker.abort();
    a.shutdown().await.unwrap();
}
