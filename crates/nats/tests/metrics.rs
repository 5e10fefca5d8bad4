//! A node's metrics against shardwire-sim and a real nats-server: what it
//! counts as published is what JetStream stored, a shutdown shows as
//! handovers, and publishes JetStream refuses as retries. A binary of its
//! own: the node's series have no label to keep two nodes of one process
//! apart.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardwire_codec::Token;
use shardwire_nats::metrics as m;
use shardwire_nats::{Node, NodeConfig};
use shardwire_sim::{MetricsRecorder, Sim};
use twilight_model::gateway::Intents;

fn node_config(sim: &Sim, nats_url: String, id: &str) -> NodeConfig {
    let mut config = NodeConfig::new(Token::new(sim.token()), Intents::GUILDS, nats_url);
    config.api_base = sim.api_url().to_owned();
    config.node_id = id.into();
    config.range_size = 2;
    config.identify_window = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_a_node_counts_what_jetstream_stored_its_handovers_and_its_retries() {
    let Some(server) = common::server().await else {
        return;
    };
    let recorder = MetricsRecorder::global();
    let published = || recorder.counter(m::EVENTS_PUBLISHED, &[]);
    let retries = || recorder.counter(m::PUBLISH_RETRIES, &[]);
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .identify_window(Duration::from_secs(1))
        .event_rate(50.0)
        .start()
        .await
        .unwrap();
    let node = Node::start(node_config(&sim, server.url(), "metrics-node-a"))
        .await
        .unwrap();

    // The worker counts what JetStream stored: one stream sequence each.
    let nats = common::connect(&server).await;
    let mut consumer = nats.consumer("metrics-worker", None).await.unwrap();
    let stored = Arc::new(Mutex::new(HashSet::new()));
    let worker = {
        let stored = stored.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                stored.lock().unwrap().insert(delivery.stream_sequence());
                if delivery.ack().await.is_err() {
                    break;
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
    assert_eq!(retries(), 0);

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

    // A second node resumes the shards; then the stream goes away, and
    // JetStream refuses every publish (no stream takes the subjects) until
    // it is back.
    let node = Node::start(node_config(&sim, server.url(), "metrics-node-b"))
        .await
        .unwrap();
    common::wait_for(
        "the second node publishing",
        Duration::from_secs(20),
        || published() > total + 50,
    )
    .await;
    let stream = nats.layout().stream();
    nats.jetstream().delete_stream(&stream).await.unwrap();
    common::wait_for("publishes again", Duration::from_secs(15), || retries() > 0).await;
    nats.events_stream(Duration::from_secs(120)).await.unwrap();
    let before = published();
    common::wait_for("stored again", Duration::from_secs(15), || {
        published() > before + 50
    })
    .await;
    assert_eq!(
        sim.observations().identifies.len(),
        4,
        "the second node resumed every shard"
    );
    node.shutdown().await.unwrap();
    assert_eq!(recorder.counter(m::HANDOVERS, &[]), 4);
}
