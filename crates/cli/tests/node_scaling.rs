//! What an operator does every week, with `shardwire node` processes on a
//! real nats-server and the simulator under steady traffic: a machine
//! joins and is given its share, and every node is restarted in turn. Each
//! ends with every dispatch the simulator sent stored once, and no
//! identify beyond the first one of each shard.

#![allow(
    clippy::print_stdout,
    reason = "the figures of the run (and the nodes' output, shown on failure)"
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::nodes::{Nodes, Owned, tally, terminate, wait_for, worker};
use shardwire_nats::LocalServer;
use shardwire_sim::{ResumeOutcome, Sim};
use tokio::time::Instant;

const SHARDS: u32 = 8;

async fn sim() -> Sim {
    Sim::builder()
        .shards(SHARDS)
        .max_concurrency(2)
        .identify_window(Duration::from_secs(1))
        .event_rate(25.0)
        .start()
        .await
        .unwrap()
}

/// Every shard on one node, and no node with two shards more than another.
fn balanced(nodes: &Nodes<'_>, live: usize) -> bool {
    let counts = nodes.counts();
    let running: Vec<usize> = counts.values().copied().filter(|n| *n > 0).collect();
    nodes.each_once(SHARDS)
        && counts.len() == live
        && counts.values().max().unwrap_or(&0) - counts.values().min().unwrap_or(&0) <= 1
        && running.len() == live
}

/// Who runs which shards stays put for `ticks` lease ticks: no range
/// moves back and forth.
async fn stays_put(nodes: &Nodes<'_>, ticks: u32) -> BTreeMap<String, usize> {
    let before = nodes.owned.lock().unwrap().clone();
    tokio::time::sleep(Duration::from_millis(nodes.lease_ttl_secs * 1000 / 6) * ticks).await;
    let after = nodes.owned.lock().unwrap().clone();
    assert_eq!(
        before, after,
        "ranges moved again after the cluster was balanced"
    );
    nodes.counts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_a_third_node_is_given_its_share_with_no_identify_and_nothing_lost() {
    let Some(server) = LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here")
    else {
        return;
    };
    let sim = sim().await;
    let owned: Owned = Owned::default();
    let nodes = Nodes {
        nats: server.url(),
        sim: &sim,
        owned,
        capacity: SHARDS,
        lease_ttl_secs: 3,
    };
    let (ledger, consumer) = worker(server.url(), "rebalance-worker");
    let mut children = vec![nodes.spawn("node-1"), nodes.spawn("node-2")];
    wait_for(
        "two nodes with four shards each",
        Duration::from_secs(40),
        || balanced(&nodes, 2),
    )
    .await;
    wait_for("eight sessions", Duration::from_secs(30), || {
        sim.sessions().len() == SHARDS as usize
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = nodes.owned.lock().unwrap().clone();

    let joined = Instant::now();
    children.push(nodes.spawn("node-3"));
    wait_for("the third node's share", Duration::from_secs(30), || {
        balanced(&nodes, 3)
    })
    .await;
    let took = joined.elapsed();
    let counts = stays_put(&nodes, 6).await;
    let after = nodes.owned.lock().unwrap().clone();
    // Only what the joiner needed moved, and only to the joiner.
    let moved: Vec<u32> = after["node-3"].iter().copied().collect();
    for (name, shards) in &before {
        assert!(
            after[name].is_subset(shards),
            "{name} was given a shard: {after:?}"
        );
    }
    assert_eq!(moved.len(), 2, "⌊8/3⌋ = 2 shards for the joiner: {after:?}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = tally(&sim, &ledger).await;
    println!(
        "rebalance, 2 -> 3 nodes, {SHARDS} shards: balanced {counts:?} {took:?} after the join; \
         moved shards {moved:?}; {tally}"
    );
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(20)]
    );
    assert!(tally.doubled.is_empty(), "doubled: {:?}", tally.doubled);
    assert_eq!(
        tally.identifies, SHARDS as usize,
        "no identify for a handover"
    );
    // Nodes that start a moment apart may move a shard before the join:
    // count the resumes since.
    let resumed_since = sim
        .observations()
        .resumes
        .iter()
        .filter(|r| r.at > joined && matches!(r.outcome, ResumeOutcome::Resumed { .. }))
        .count();
    assert_eq!(resumed_since, moved.len(), "each moved shard resumed, once");
    assert_eq!(tally.violations, 0);
    consumer.abort();
    for mut child in children {
        assert!(
            terminate(&mut child).await,
            "a node exits cleanly on SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_three_nodes_spends_no_identify_and_loses_nothing() {
    let Some(server) = LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here")
    else {
        return;
    };
    let sim = sim().await;
    let nodes = Nodes {
        nats: server.url(),
        sim: &sim,
        owned: Owned::default(),
        capacity: SHARDS,
        lease_ttl_secs: 3,
    };
    let (ledger, consumer) = worker(server.url(), "rolling-worker");
    let mut children: Vec<(String, tokio::process::Child)> = ["node-1", "node-2", "node-3"]
        .into_iter()
        .map(|name| (name.to_owned(), nodes.spawn(name)))
        .collect();
    wait_for(
        "three nodes sharing the shards",
        Duration::from_secs(40),
        || balanced(&nodes, 3),
    )
    .await;
    wait_for("eight sessions", Duration::from_secs(30), || {
        sim.sessions().len() == SHARDS as usize
    })
    .await;

    let mut moves = Vec::new();
    for round in 0..children.len() {
        let (name, mut child) = children.remove(0);
        let started = Instant::now();
        assert!(
            terminate(&mut child).await,
            "{name} exits cleanly on SIGTERM"
        );
        nodes.owned.lock().unwrap().remove(&name);
        wait_for(
            "the others resume its shards",
            Duration::from_secs(20),
            || balanced(&nodes, 2),
        )
        .await;
        let taken_over = started.elapsed();
        let again = format!("{name}-restarted");
        children.push((again.clone(), nodes.spawn(&again)));
        wait_for(
            "the restarted node's share",
            Duration::from_secs(30),
            || balanced(&nodes, 3),
        )
        .await;
        moves.push((round, name, taken_over, started.elapsed()));
    }
    stays_put(&nodes, 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = tally(&sim, &ledger).await;
    for (round, name, taken_over, balanced_again) in &moves {
        println!(
            "rolling restart {round}: {name} stopped; its shards resumed by the others after {taken_over:?}, \
             balanced again after {balanced_again:?}"
        );
    }
    println!("rolling restart of 3 nodes: {tally}");
    assert!(
        tally.lost.is_empty(),
        "lost: {:?}",
        &tally.lost[..tally.lost.len().min(20)]
    );
    assert!(tally.doubled.is_empty(), "doubled: {:?}", tally.doubled);
    assert_eq!(
        tally.identifies, SHARDS as usize,
        "no identify for a restart"
    );
    assert_eq!(tally.violations, 0);
    consumer.abort();
    for (_, mut child) in children {
        assert!(terminate(&mut child).await);
    }
}

/// `shardwire reshard` with `args`: its exit code and output.
async fn reshard_command(nats: &str, to: u32) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shardwire"))
        .args(["reshard", "--nats", nats, "--to", &to.to_string()])
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_through_the_command_takes_two_nodes_from_4_to_8_shards() {
    let Some(server) = LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here")
    else {
        return;
    };
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .identify_window(Duration::from_secs(1))
        .guild_pool(32)
        .guild_event_rate(100.0)
        .start()
        .await
        .unwrap();
    let nodes = Nodes {
        nats: server.url(),
        sim: &sim,
        owned: Owned::default(),
        capacity: 8,
        lease_ttl_secs: 3,
    };
    let mut children = vec![nodes.spawn("node-1"), nodes.spawn("node-2")];
    wait_for(
        "two nodes with two shards each",
        Duration::from_secs(40),
        || nodes.each_once(4) && nodes.counts().values().all(|n| *n == 2),
    )
    .await;
    wait_for("four sessions", Duration::from_secs(30), || {
        sim.sessions().len() == 4
    })
    .await;
    let (code, text) = reshard_command(&server.url(), 6).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("multiple of its 4 shards"), "{text}");
    let started = Instant::now();
    let (code, text) = reshard_command(&server.url(), 8).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("resharding 4 -> 8"), "{text}");
    let (code, text) = reshard_command(&server.url(), 8).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("under way"), "{text}");
    let sessions = shardwire_nats::Nats::connect(&server.url(), Default::default())
        .await
        .unwrap()
        .sessions()
        .await
        .unwrap();
    while sessions.reshard().await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the reshard did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    assert_eq!(sessions.total().await.unwrap(), Some(8));
    assert!(nodes.each_once(8) && nodes.counts().values().all(|n| *n == 4));
    let observations = sim.observations();
    let identifies = observations
        .identifies
        .iter()
        .filter(|i| i.accepted)
        .count();
    println!("reshard 4 -> 8 through `shardwire reshard`: {took:?}; {identifies} identifies");
    assert_eq!(identifies, 4 + 8);
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    for mut child in children.drain(..) {
        assert!(terminate(&mut child).await);
    }
}
