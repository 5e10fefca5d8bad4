//! Three `shardwire node` processes share eight shards through a real
//! nats-server; one is killed with SIGKILL; the other two resume its
//! shards, and a worker sees every dispatch exactly once.

#![allow(
    clippy::print_stdout,
    reason = "the figures of the run (and the nodes' output, shown on failure)"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardwire_nats::{Layout, LocalServer, Nats};
use shardwire_sim::{ResumeOutcome, Sim};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const SHARDS: u32 = 8;
const NODES: usize = 3;
const LEASE_TTL_SECS: u64 = 3;

/// The shards each node last said it runs.
type Owned = Arc<Mutex<BTreeMap<String, BTreeSet<u32>>>>;

fn spawn_node(name: &str, nats: &str, sim: &Sim, owned: &Owned) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardwire"))
        .args([
            "node",
            "--nats",
            nats,
            "--capacity",
            "4",
            "--range-size",
            "1",
        ])
        .args(["--lease-ttl", &LEASE_TTL_SECS.to_string()])
        .args(["--identify-window-ms", "1000", "--intents", "1"])
        .args(["--api-base", sim.api_url(), "--node-id", name])
        .env("DISCORD_TOKEN", sim.token())
        .env("RUST_LOG", "warn,shardwire_nats=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the shardwire binary starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (owned, who) = (owned.clone(), name.to_owned());
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("[{who}] {line}");
            if let Some(list) = line.strip_prefix("shards ") {
                let set = list.split(',').filter_map(|s| s.parse().ok()).collect();
                owned.lock().unwrap().insert(who.clone(), set);
            }
        }
    });
    let who = name.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // Shown by the test harness only if the test fails.
            println!("[{who} log] {line}");
        }
    });
    child
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    let owned: Owned = Arc::default();
    let mut nodes: HashMap<String, Child> = (1..=NODES)
        .map(|n| {
            let name = format!("node-{n}");
            let child = spawn_node(&name, &server.url(), &sim, &owned);
            (name, child)
        })
        .collect();

    // The worker: a durable pull consumer, counting deliveries per
    // (session, seq).
    let nats = Nats::connect(&server.url(), Layout::default())
        .await
        .unwrap();
    let counts: Arc<Mutex<HashMap<(String, u64), u32>>> = Arc::default();
    let worker = {
        let counts = counts.clone();
        let mut consumer = loop {
            // The nodes create the stream; the worker may come first.
            match nats.consumer("failover-worker", None).await {
                Ok(consumer) => break consumer,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.unwrap();
                delivery.ack().await.unwrap();
                *counts
                    .lock()
                    .unwrap()
                    .entry((delivery.session_id.clone(), delivery.seq))
                    .or_default() += 1;
            }
        })
    };

    // Every shard runs on exactly one node, and every session is ready.
    let all: BTreeSet<u32> = (0..SHARDS).collect();
    wait_for("all shards owned", Duration::from_secs(40), || {
        let owned = owned.lock().unwrap();
        let union: Vec<u32> = owned.values().flatten().copied().collect();
        union.len() == SHARDS as usize && union.iter().copied().collect::<BTreeSet<_>>() == all
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
    let mut child = nodes.remove(&victim).unwrap();
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
        || {
            let owned = owned.lock().unwrap();
            let union: Vec<u32> = owned.values().flatten().copied().collect();
            union.len() == SHARDS as usize && union.iter().copied().collect::<BTreeSet<_>>() == all
        },
    )
    .await;

    // Events keep flowing; then every dispatch the sim sent up to a
    // snapshot must reach the worker exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = sim.sessions();
    assert_eq!(
        snapshot.len(),
        SHARDS as usize,
        "no session was lost: {snapshot:?}"
    );
    let expected: u64 = snapshot.iter().map(|s| s.seq).sum();
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        missing.clear();
        doubled.clear();
        {
            let counts = counts.lock().unwrap();
            for session in &snapshot {
                for seq in 1..=session.seq {
                    match counts.get(&(session.session_id.clone(), seq)) {
                        None => missing.push((session.shard, seq)),
                        Some(1) => {}
                        Some(n) => doubled.push((session.shard, seq, *n)),
                    }
                }
            }
        }
        if missing.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let observations = sim.observations();
    let identifies = observations
        .identifies
        .iter()
        .filter(|i| i.accepted)
        .count();
    let resumes = observations
        .resumes
        .iter()
        .filter(|r| matches!(r.outcome, ResumeOutcome::Resumed { .. }))
        .count();
    println!(
        "killed {victim} holding shards {victim_shards:?}; failover {failover:?}; \
         {expected} events checked, {} lost, {} doubled; {identifies} identifies, {resumes} resumes; \
         violations: {}",
        missing.len(),
        doubled.len(),
        observations.violations.len()
    );
    assert!(
        missing.is_empty(),
        "events lost: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(doubled.is_empty(), "events seen twice: {doubled:?}");
    assert_eq!(
        identifies, SHARDS as usize,
        "one identify per shard, none for the failover"
    );
    assert!(resumes >= victim_shards.len());
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    worker.abort();
    for (_, mut child) in nodes {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
