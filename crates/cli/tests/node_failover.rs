//! Three `shardwire node` processes share eight shards through a real
//! nats-server; one is killed with SIGKILL; the other two resume its
//! shards, and a worker sees every dispatch exactly once.

#![allow(
    clippy::print_stdout,
    reason = "the figures of the run (and the nodes' output, shown on failure)"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::nodes::{Nodes, Owned, tally, wait_for, worker};
use shardwire_nats::LocalServer;
use shardwire_sim::{ResumeOutcome, Sim};
use tokio::process::Child;
use tokio::time::Instant;

const SHARDS: u32 = 8;
const NODES: usize = 3;
const LEASE_TTL_SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_one_to_sigkill_and_no_event_is_lost_or_doubled() {
    let Some(server) = LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here")
    else {
        return;
    };
    let sim = Sim::builder()
        .shards(SHARDS)
        .max_concurrency(2)
        .identify_window(Duration::from_secs(1))
        .event_rate(25.0)
        .start()
        .await
        .unwrap();
    let nodes = Nodes {
        nats: server.url(),
        sim: &sim,
        owned: Owned::default(),
        capacity: 4,
        lease_ttl_secs: LEASE_TTL_SECS,
    };
    let owned = &nodes.owned;
    let mut children: HashMap<String, Child> = (1..=NODES)
        .map(|n| {
            let name = format!("node-{n}");
            let child = nodes.spawn(&name);
            (name, child)
        })
        .collect();

    let (ledger, consumer) = worker(server.url(), "failover-worker");

    // Every shard runs on exactly one node, and every session is ready.
    wait_for("all shards owned", Duration::from_secs(40), || {
        nodes.each_once(SHARDS)
    })
    .await;
    wait_for("eight sessions", Duration::from_secs(30), || {
        sim.sessions().len() == SHARDS as usize
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill the node with the most shards.
    let before = owned.lock().unwrap().clone();
    println!("before the kill: {before:?}");
    let (victim, victim_shards) = before
        .iter()
        .max_by_key(|(_, shards)| shards.len())
        .map(|(name, shards)| (name.clone(), shards.clone()))
        .unwrap();
    assert!(!victim_shards.is_empty());
    let session_of: HashMap<u32, String> = sim
        .sessions()
        .into_iter()
        .map(|s| (s.shard, s.session_id))
        .collect();
    let mut child = children.remove(&victim).unwrap();
    let killed = Instant::now();
    child.start_kill().unwrap(); // SIGKILL
    let _ = child.wait().await;
    owned.lock().unwrap().remove(&victim);

    // The survivors resume every one of its shards.
    let victim_sessions: BTreeSet<&String> = victim_shards
        .iter()
        .map(|shard| &session_of[shard])
        .collect();
    let mut failover = Duration::ZERO;
    wait_for(
        "the victim's shards resumed",
        Duration::from_secs(20),
        || {
            let resumes = sim.observations().resumes;
            let resumed: BTreeMap<&String, Instant> = resumes
                .iter()
                .filter(|r| r.at > killed && matches!(r.outcome, ResumeOutcome::Resumed { .. }))
                .filter_map(|r| victim_sessions.get(&r.session_id).map(|s| (*s, r.at)))
                .collect();
            if resumed.len() == victim_sessions.len() {
                failover = resumed.values().map(|at| *at - killed).max().unwrap();
                true
            } else {
                false
            }
        },
    )
    .await;
    assert!(
        failover < Duration::from_secs(20),
        "failover took {failover:?}"
    );
    wait_for(
        "the survivors own every shard",
        Duration::from_secs(10),
        || nodes.each_once(SHARDS),
    )
    .await;

    // Events keep flowing; then every dispatch the sim sent up to a
    // snapshot must reach the worker exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.sessions().len(),
        SHARDS as usize,
        "no session was lost: {:?}",
        sim.sessions()
    );
    let tally = tally(&sim, &ledger).await;
    println!("killed {victim} holding shards {victim_shards:?}; failover {failover:?}; {tally}");
    assert!(
        tally.lost.is_empty(),
        "events lost: {:?}",
        &tally.lost[..tally.lost.len().min(20)]
    );
    assert!(
        tally.doubled.is_empty(),
        "events seen twice: {:?}",
        tally.doubled
    );
    assert_eq!(
        tally.identifies, SHARDS as usize,
        "one identify per shard, none for the failover"
    );
    assert!(tally.resumes >= victim_shards.len());
    assert_eq!(tally.violations, 0);
    consumer.abort();
    for (_, mut child) in children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
