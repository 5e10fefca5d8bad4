//! A node's metrics against shardwire-sim and a real nats-server: what it
//! counts as published is what JetStream stored, a NATS outage shows as
//! publish retries, and a shutdown as handovers. A binary of its own: the
//! node's series have no label to keep two nodes of one process apart.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardwire_codec::Token;
use shardwire_nats::metrics as m;
use shardwire_nats::{Node, NodeConfig};
use shardwire_sim::{MetricsRecorder, Sim};
use twilight_model::gateway::Intents;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_a_node_counts_what_jetstream_stored_its_retries_and_handovers() {
    let Some(mut server) = common::server().await else {
        return;
    };
    let recorder = MetricsRecorder::global();
    let published = || recorder.counter(m::EVENTS_PUBLISHED, &[]);
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .identify_window(Duration::from_secs(1))
        .event_rate(50.0)
        .start()
        .await
        .unwrap();
    let mut config = NodeConfig::new(Token::new(sim.token()), Intents::GUILDS, server.url());
    config.api_base = sim.api_url().to_owned();
    config.node_id = "metrics-node".into();
    config.range_size = 2;
    config.identify_window = Duration::from_secs(1);
    // Leases outlive the outage below.
    config.lease_ttl = Duration::from_secs(12);
    let node = Node::start(config).await.unwrap();

    // The worker counts what JetStream stored: one stream sequence each.
    let stored = Arc::new(Mutex::new(HashSet::new()));
    let url = server.url();
    let worker = {
        let stored = stored.clone();
        tokio::spawn(async move {
            loop {
                let Ok(nats) = shardwire_nats::Nats::connect(&url, Default::default()).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let Ok(mut consumer) = nats.consumer("metrics-worker", None).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while let Some(Ok(delivery)) = consumer.next().await {
                    stored.lock().unwrap().insert(delivery.stream_sequence());
                    if delivery.ack().await.is_err() {
                        break;
                    }
                }
            }
        })
    };
    common::wait_for("events from the 4 shards", Duration::from_secs(20), || {
        sim.sessions().len() == 4 && published() > 100
    })
    .await;
    assert_eq!(
        recorder.gauge(m::LEASES_HELD, &[]),
        Some(2.0),
        "4 shards in ranges of 2"
    );
    let shards = recorder.label_values(m::EVENTS_PUBLISHED, "shard", &[]);
    assert_eq!(shards, ["0", "1", "2", "3"]);
    assert!(!recorder.histogram(m::ACK_LATENCY, &[]).is_empty());
    assert_eq!(recorder.counter(m::PUBLISH_RETRIES, &[]), 0);

    server.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await.unwrap();
    common::wait_for(
        "publishes again after the outage",
        Duration::from_secs(15),
        || recorder.counter(m::PUBLISH_RETRIES, &[]) > 0,
    )
    .await;

    node.shutdown().await.unwrap();
    assert_eq!(
        recorder.counter(m::HANDOVERS, &[]),
        2,
        "both ranges handed over"
    );
    assert_eq!(recorder.gauge(m::LEASES_HELD, &[]), Some(0.0));
    assert_eq!(recorder.counter(m::LEASE_LOSSES, &[]), 0);
    let total = published();
    common::wait_for(
        "the worker has every stored event",
        Duration::from_secs(15),
        || stored.lock().unwrap().len() as u64 >= total,
    )
    .await;
    assert_eq!(
        stored.lock().unwrap().len() as u64,
        total,
        "published counts each stored event once"
    );
    worker.abort();
}
