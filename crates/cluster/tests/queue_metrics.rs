//! The identify queue's metrics on the paused clock. A binary of its own:
//! the session-start gauge has no label to keep tests apart.

use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::metrics as m;
use shardwire_cluster::{LocalQueue, SessionStartLimit};
use shardwire_shard::IdentifyQueue;
use shardwire_sim::MetricsRecorder;

fn depth(bucket: &str) -> Option<f64> {
    MetricsRecorder::global().gauge(m::IDENTIFY_QUEUE_DEPTH, &[("bucket", bucket)])
}

fn waits(bucket: &str) -> Vec<f64> {
    let mut waits =
        MetricsRecorder::global().histogram(m::IDENTIFY_QUEUE_WAIT, &[("bucket", bucket)]);
    waits.sort_by(f64::total_cmp);
    waits
}

#[tokio::test(start_paused = true)]
async fn metrics_the_queue_shows_each_buckets_depth_and_waits_and_the_starts_left() {
    let recorder = MetricsRecorder::global();
    let limit = SessionStartLimit::new(10, 7, Duration::from_secs(3600), 2);
    let queue = Arc::new(LocalQueue::new(&limit));
    assert_eq!(recorder.gauge(m::SESSION_STARTS_REMAINING, &[]), Some(7.0));
    assert_eq!((depth("0"), depth("1")), (Some(0.0), Some(0.0)));

    // Shards 0 to 3 ask at once: 0 and 1 go at once, 2 and 3 wait a window.
    let mut tasks = Vec::new();
    for shard in 0..4 {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move { queue.wait_turn(shard).await }));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (depth("0"), depth("1")),
        (Some(1.0), Some(1.0)),
        "2 and 3 wait"
    );
    assert_eq!(recorder.gauge(m::SESSION_STARTS_REMAINING, &[]), Some(5.0));
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!((depth("0"), depth("1")), (Some(0.0), Some(0.0)));
    assert_eq!(waits("0"), [0.0, 5.05], "the window and its margin");
    assert_eq!(waits("1"), [0.0, 5.05]);
    assert_eq!(recorder.gauge(m::SESSION_STARTS_REMAINING, &[]), Some(3.0));

    // A wait given up (its shard stopped) leaves the depth.
    let waiting = tokio::time::timeout(Duration::from_secs(1), queue.wait_turn(4)).await;
    assert!(
        waiting.is_err(),
        "bucket 0 identified less than a window ago"
    );
    assert_eq!(depth("0"), Some(0.0));
    assert_eq!(waits("0").len(), 2, "no turn, no wait recorded");
}
