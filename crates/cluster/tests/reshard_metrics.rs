//! A reshard's metrics on the paused clock, against shardwire-sim. A binary
//! of its own: the generation gauges have no label to keep tests apart.

use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::metrics as m;
use shardwire_cluster::{Cluster, ClusterConfig, ShardSpec};
use shardwire_codec::Token;
use shardwire_shard::ShardEvent;
use shardwire_sim::{MetricsRecorder, Sim};
use twilight_model::gateway::Intents;

const WINDOW: Duration = Duration::from_millis(250);

fn shards(generation: &str) -> Option<f64> {
    MetricsRecorder::global().gauge(m::GENERATION_SHARDS, &[("generation", generation)])
}

async fn next(cluster: &mut Cluster) -> ShardEvent {
    tokio::time::timeout(Duration::from_secs(30), cluster.next_event())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .1
}

/// Events until `done` says so.
async fn read_until(cluster: &mut Cluster, mut done: impl FnMut(&ShardEvent) -> bool) {
    while !done(&next(cluster).await) {}
}

#[tokio::test(start_paused = true)]
async fn metrics_a_reshard_shows_each_generations_shards_its_duration_and_the_copies() {
    let recorder = MetricsRecorder::global();
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .identify_window(WINDOW)
        .guild_pool(64)
        .guild_event_rate(400.0)
        .start()
        .await
        .unwrap();
    let mut config = ClusterConfig::new(Token::new(sim.token()), Intents::GUILDS);
    config.api_base = sim.api_url().to_owned();
    config.shards = ShardSpec::Recommended;
    config.identify_window = WINDOW;
    config.configure = Some(Arc::new(|shard| {
        shard.backoff_initial = Duration::from_millis(10);
    }));
    let mut cluster = Cluster::start(config).await.unwrap();
    assert_eq!((shards("current"), shards("next")), (Some(4.0), Some(0.0)));
    let mut ready = 0;
    read_until(&mut cluster, |event| {
        ready += usize::from(matches!(event, ShardEvent::Ready { .. }));
        ready == 4
    })
    .await;

    // 4 -> 8: both generations while it runs, the new one alone after.
    cluster.reshard(8).await.unwrap();
    read_until(&mut cluster, |event| {
        matches!(event, ShardEvent::Resharding { .. })
    })
    .await;
    assert_eq!((shards("current"), shards("next")), (Some(4.0), Some(8.0)));
    let mut took = None;
    read_until(&mut cluster, |event| {
        if let ShardEvent::Resharded { took: t, .. } = event {
            took = Some(*t);
        }
        took.is_some()
    })
    .await;
    assert_eq!((shards("current"), shards("next")), (Some(8.0), Some(0.0)));
    let took = took.unwrap();
    assert_eq!(
        recorder.histogram(m::RESHARD_DURATION, &[]),
        [took.as_secs_f64()]
    );
    // 8 shards at max_concurrency 2: 4 identify rounds of a window each.
    assert!(
        took >= 3 * WINDOW && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The copies are counted once the old generation has closed.
    assert_eq!(recorder.counter(m::RESHARD_COPIES_DROPPED, &[]), 0);
    let end = tokio::time::Instant::now() + Duration::from_secs(6);
    read_until(&mut cluster, |_| tokio::time::Instant::now() >= end).await;
    let copies = recorder.counter(m::RESHARD_COPIES_DROPPED, &[]);
    assert!(copies > 100, "every event both delivered: {copies}");

    // 8 -> 16 cancelled: the new generation's gauge goes back to 0, and no
    // duration is recorded.
    cluster.reshard(16).await.unwrap();
    read_until(&mut cluster, |event| {
        matches!(event, ShardEvent::Resharding { .. })
    })
    .await;
    assert_eq!((shards("current"), shards("next")), (Some(8.0), Some(16.0)));
    assert!(cluster.cancel_reshard());
    assert_eq!((shards("current"), shards("next")), (Some(8.0), Some(0.0)));
    assert_eq!(recorder.histogram(m::RESHARD_DURATION, &[]).len(), 1);
    sim.shutdown().await;
}
