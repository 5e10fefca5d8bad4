//! A gateway node against shardwire-sim and a real nats-server: it claims
//! shards, publishes every dispatch once, takes commands, and hands its
//! shards over on shutdown so another node resumes them.

#![allow(clippy::print_stdout, reason = "the figures of the run")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardwire_codec::Token;
use shardwire_nats::{Node, NodeConfig, NodeError};
use shardwire_sim::Sim;
use tokio::time::Instant;
use twilight_model::gateway::Intents;

use common::once::{Seen, wait_exactly_once};

const WINDOW: Duration = Duration::from_secs(1);

fn node_config(sim: &Sim, nats_url: &str, id: &str) -> NodeConfig {
    let mut config = NodeConfig::new(Token::new(sim.token()), Intents::GUILDS, nats_url);
    config.api_base = sim.api_url().to_owned();
    config.node_id = id.to_owned();
    config.capacity = 4;
    config.range_size = 2;
    config.lease_ttl = Duration::from_secs(2);
    config.identify_window = WINDOW;
    config
}

/// A sim of `shards` at max_concurrency 2, sending `rate` events per
/// second per session.
async fn sim(shards: u32, rate: f64) -> Sim {
    Sim::builder()
        .shards(shards)
        .max_concurrency(2)
        .identify_window(WINDOW)
        .event_rate(rate)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_publishes_every_dispatch_once_takes_commands_and_hands_over_on_shutdown() {
    let Some(server) = common::server().await else {
        return;
    };
    let sim = sim(4, 20.0).await;
    let mut a = Node::start(node_config(&sim, &server.url(), "node-a"))
        .await
        .unwrap();
    let nats = common::connect(&server).await;
    let mut consumer = nats.consumer("test-worker", None).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let worker = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.unwrap();
                let payload: serde_json::Value =
                    serde_json::from_slice(delivery.payload()).unwrap();
                assert_eq!(payload["s"], delivery.seq);
                assert_eq!(payload["t"], delivery.event_type.as_str());
                delivery.ack().await.unwrap();
                let mut seen = seen.lock().unwrap();
                *seen
                    .counts
                    .entry((delivery.session_id.clone(), delivery.seq))
                    .or_default() += 1;
                seen.payloads
                    .push((delivery.shard, delivery.event_type.clone(), payload));
            }
        })
    };
    // Alone, node a takes all four shards (two ranges of two).
    let start = Instant::now();
    while a.shards() != [0, 1, 2, 3] {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "claimed {:?}",
            a.shards()
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(10), a.changed())
                .await
                .unwrap()
        );
    }
    // READY and then the guilds: a GUILD_CREATE may come in a later
    // delivery than its READY.
    common::wait_for(
        "READY and a guild from every shard",
        Duration::from_secs(15),
        || {
            let seen = seen.lock().unwrap();
            (0..4).all(|shard| {
                ["READY", "GUILD_CREATE"].iter().all(|wanted| {
                    seen.payloads
                        .iter()
                        .any(|(s, t, _)| *s == shard && t == wanted)
                })
            })
        },
    )
    .await;
    // A command through NATS: a member request on shard 1, answered by a
    // chunk that comes back through the stream.
    let guild = {
        let seen = seen.lock().unwrap();
        seen.payloads
            .iter()
            .find(|(shard, t, _)| *shard == 1 && t == "GUILD_CREATE")
            .map(|(_, _, p)| p["d"]["id"].as_str().unwrap().to_owned())
            .expect("a guild of shard 1")
    };
    let request = serde_json::json!({"op": 8, "d": {"guild_id": guild, "query": "", "limit": 0, "nonce": "via-nats"}});
    let reply = nats
        .client()
        .request(
            "shardwire.commands.1",
            serde_json::to_vec(&request).unwrap().into(),
        )
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"ok");
    let bad = nats
        .client()
        .request("shardwire.commands.1", "not json".into())
        .await
        .unwrap();
    assert!(
        bad.payload.starts_with(b"error: invalid raw payload"),
        "{:?}",
        bad.payload
    );
    common::wait_for("the member chunk", Duration::from_secs(10), || {
        seen.lock().unwrap().payloads.iter().any(|(shard, t, p)| {
            *shard == 1 && t == "GUILD_MEMBERS_CHUNK" && p["d"]["nonce"] == "via-nats"
        })
    })
    .await;
    // A GUILD_CREATE over the server's max_payload (1 MiB) can never be
    // stored: it is logged and passed over, and shard 0 goes on.
    let before = sim.sessions().into_iter().find(|s| s.shard == 0).unwrap();
    sim.inject(
        Some(0),
        shardwire_sim::Fault::HugeGuildCreate { members: 6_000 },
    );
    common::wait_for(
        "shard 0 past the huge event",
        Duration::from_secs(15),
        || {
            let seen = seen.lock().unwrap();
            seen.counts
                .keys()
                .any(|(session, seq)| *session == before.session_id && *seq > before.seq + 5)
        },
    )
    .await;
    let skipped = {
        let seen = seen.lock().unwrap();
        let missing: Vec<u64> = (before.seq + 1..=before.seq + 5)
            .filter(|seq| !seen.counts.contains_key(&(before.session_id.clone(), *seq)))
            .collect();
        assert_eq!(
            missing.len(),
            1,
            "exactly the huge event is missing: {missing:?}"
        );
        assert!(
            !seen.payloads.iter().any(|(shard, t, p)| *shard == 0
                && t == "GUILD_CREATE"
                && p["d"]["member_count"].as_u64() == Some(6_000)),
            "it was never stored"
        );
        (before.session_id.clone(), missing[0])
    };
    // Node b joins; a hands over on shutdown and b resumes every shard.
    let b = Node::start(node_config(&sim, &server.url(), "node-b"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handover = Instant::now();
    a.shutdown().await.unwrap();
    let mut b_owned = b.shards();
    while b_owned != [0, 1, 2, 3] {
        assert!(
            handover.elapsed() < Duration::from_secs(10),
            "b holds {b_owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        b_owned = b.shards();
    }
    common::wait_for("four resumes", Duration::from_secs(10), || {
        sim.observations()
            .resumes
            .iter()
            .filter(|r| matches!(r.outcome, shardwire_sim::ResumeOutcome::Resumed { .. }))
            .count()
            >= 4
    })
    .await;
    let handed_over = handover.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Everything the sim sent up to now, exactly once.
    let snapshot: BTreeMap<String, u64> = sim
        .sessions()
        .into_iter()
        .map(|s| (s.session_id, s.seq))
        .collect();
    let events = wait_exactly_once(&sim, &seen, &skipped).await;
    let observations = sim.observations();
    assert_eq!(snapshot.len(), 4, "one session per shard, never a new one");
    assert_eq!(
        observations
            .identifies
            .iter()
            .filter(|i| i.accepted)
            .count(),
        4
    );
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    println!(
        "handover in {handed_over:?}; {events} events exactly once; {} identifies, {} resumes",
        observations.identifies.len(),
        observations.resumes.len()
    );
    b.shutdown().await.unwrap();
    worker.abort();
}

#[tokio::test]
async fn a_node_refuses_settings_that_cannot_work_and_hides_the_token() {
    let Some(server) = common::server().await else {
        return;
    };
    let sim = Sim::builder().start().await.unwrap();
    let mut config = node_config(&sim, &server.url(), "node-a");
    assert!(!format!("{config:?}").contains(sim.token()));
    config.capacity = 1;
    match Node::start(config.clone()).await {
        Err(NodeError::Invalid(message)) => assert!(message.contains("capacity"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    config.capacity = 4;
    config.range_size = 0;
    assert!(matches!(
        Node::start(config.clone()).await,
        Err(NodeError::Invalid(_))
    ));
    config.range_size = 2;
    config.shards = Some(3);
    let first = Node::start(config.clone()).await.unwrap();
    // Every node must agree on the shard count.
    config.shards = Some(5);
    config.node_id = "node-b".into();
    match Node::start(config.clone()).await {
        Err(NodeError::Invalid(message)) => assert!(message.contains("runs 3"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    first.shutdown().await.unwrap();
    // No NATS there: a clear error, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    config.nats_url = url;
    let started = Instant::now();
    match Node::start(config).await {
        Err(NodeError::Nats(error)) => {
            assert!(error.to_string().contains("cannot connect"), "{error}")
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_costs_no_event_and_no_identify() {
    let Some(mut server) = common::server().await else {
        return;
    };
    let sim = sim(2, 50.0).await;
    let mut config = node_config(&sim, &server.url(), "node-a");
    config.range_size = 1;
    // Leases outlive the outage: the node keeps its shards and publishes
    // again what NATS did not take.
    config.lease_ttl = Duration::from_secs(12);
    let node = Node::start(config).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = server.url();
    let worker = {
        let seen = seen.clone();
        tokio::spawn(async move {
            // The worker outlives the outage too: it opens its durable
            // consumer again whenever the pull fails.
            loop {
                let Ok(nats) = shardwire_nats::Nats::connect(&url, Default::default()).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let Ok(mut consumer) = nats.consumer("outage-worker", None).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while let Some(Ok(delivery)) = consumer.next().await {
                    // An acknowledgement lost in the outage lets an event
                    // come again: one stored event keeps its stream
                    // sequence, so count stored copies, not deliveries.
                    {
                        let mut seen = seen.lock().unwrap();
                        if seen.stored.insert(delivery.stream_sequence()) {
                            *seen
                                .counts
                                .entry((delivery.session_id.clone(), delivery.seq))
                                .or_default() += 1;
                        } else {
                            seen.redelivered += 1;
                        }
                    }
                    if delivery.ack().await.is_err() {
                        break;
                    }
                }
            }
        })
    };
    common::wait_for("events from both shards", Duration::from_secs(15), || {
        sim.sessions().len() == 2 && seen.lock().unwrap().counts.len() > 50
    })
    .await;
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = wait_exactly_once(&sim, &seen, &(String::new(), 0)).await;
    let observations = sim.observations();
    assert_eq!(
        observations.identifies.len(),
        2,
        "no identify for the outage"
    );
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    assert_eq!(node.shards(), [0, 1]);
    println!(
        "{events} events exactly once across a 2 s NATS outage ({} redelivered to the worker)",
        seen.lock().unwrap().redelivered
    );
    node.shutdown().await.unwrap();
    worker.abort();
}
