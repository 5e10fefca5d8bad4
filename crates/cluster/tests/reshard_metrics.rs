//! A reshard's metrics on the paused clock, against shardwire-sim. A binary
//! of its own: the generation gauges have no label to keep tests apart.

use std::time::Duration;

use common::{WINDOW, config, read_for, read_until, sim, until_ready};
use shardwire_cluster::Cluster;
use shardwire_cluster::metrics as m;
use shardwire_shard::ShardEvent;
use shardwire_sim::MetricsRecorder;

mod common;

fn shards(generation: &str) -> Option<f64> {
    MetricsRecorder::global().gauge(m::GENERATION_SHARDS, &[("generation", generation)])
}

#[tokio::test(start_paused = true)]
async fn metrics_a_reshard_shows_each_generations_shards_its_duration_and_the_copies() {
    let recorder = MetricsRecorder::global();
    let sim = sim(4).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    assert_eq!((shards("current"), shards("next")), (Some(4.0), Some(0.0)));
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;

    // 4 -> 8: both generations while it runs, the new one alone after.
    cluster.reshard(8).await.unwrap();
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::Resharding { .. })
    })
    .await;
    assert_eq!((shards("current"), shards("next")), (Some(4.0), Some(8.0)));
    let mut took = None;
    read_until(&mut cluster, &mut seen, |event| {
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
    read_for(&mut cluster, &mut seen, Duration::from_secs(6)).await;
    let copies = recorder.counter(m::RESHARD_COPIES_DROPPED, &[]);
    assert!(copies > 100, "every event both delivered: {copies}");

    // 8 -> 16 cancelled: the new generation's gauge goes back to 0, and no
    // duration is recorded.
    cluster.reshard(16).await.unwrap();
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::Resharding { .. })
    })
    .await;
    assert_eq!((shards("current"), shards("next")), (Some(8.0), Some(16.0)));
    assert!(cluster.cancel_reshard());
    assert_eq!((shards("current"), shards("next")), (Some(8.0), Some(0.0)));
    assert_eq!(recorder.histogram(m::RESHARD_DURATION, &[]).len(), 1);
    sim.shutdown().await;
}
