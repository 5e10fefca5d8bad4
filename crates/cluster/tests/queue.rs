//! The identify queue on tokio's paused clock: no test waits real time.

use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::{LocalQueue, SessionStartLimit};
use shardwire_shard::{IdentifyQueue, IdentifyRefused, Unqueued};
use tokio::time::Instant;

/// Asks for every shard's turn at once (in shard order) and returns when
/// each was granted, relative to the start, in seconds.
async fn schedule(queue: LocalQueue, shards: u32) -> Vec<(u32, f64)> {
    let start = Instant::now();
    let queue = Arc::new(queue);
    let mut tasks = Vec::new();
    for shard in 0..shards {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            queue.wait_turn(shard).await.unwrap();
            (shard, start.elapsed().as_secs_f64())
        }));
        // Let each task reach its bucket's lock before the next asks.
        tokio::task::yield_now().await;
    }
    let mut granted = Vec::new();
    for task in tasks {
        granted.push(task.await.unwrap());
    }
    granted
}

#[tokio::test(start_paused = true)]
async fn concurrency_1_identifies_one_shard_every_5_seconds() {
    // 5 s and a 1% margin for the identify to arrive.
    let granted = schedule(LocalQueue::unlimited(1), 4).await;
    assert_eq!(granted, vec![(0, 0.0), (1, 5.05), (2, 10.1), (3, 15.15)]);
}

#[tokio::test(start_paused = true)]
async fn concurrency_2_runs_buckets_side_by_side() {
    // 4 shards at M=2: (ceil(4/2) - 1) x 5 s = 5 s (and the margin), not 10.
    let granted = schedule(LocalQueue::unlimited(2), 4).await;
    assert_eq!(granted, vec![(0, 0.0), (1, 0.0), (2, 5.05), (3, 5.05)]);
}

#[tokio::test(start_paused = true)]
async fn concurrency_16_starts_a_block_of_16_together() {
    let granted = schedule(LocalQueue::unlimited(16), 40).await;
    let last = granted.iter().map(|(_, at)| *at).fold(0.0, f64::max);
    assert_eq!(last, 10.1, "(ceil(40/16) - 1) x 5.05 s");
    for (shard, at) in granted {
        assert_eq!(at, f64::from(shard / 16) * 5.05, "shard {shard}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_bucket_remembers_its_last_identify() {
    let queue = LocalQueue::unlimited(1);
    queue.wait_turn(0).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let asked = Instant::now();
    queue.wait_turn(0).await.unwrap();
    assert_eq!(
        asked.elapsed(),
        Duration::from_millis(3050),
        "the rest of the window, and the margin"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    let asked = Instant::now();
    queue.wait_turn(0).await.unwrap();
    assert_eq!(
        asked.elapsed(),
        Duration::ZERO,
        "a long-idle bucket goes at once"
    );
}

#[tokio::test(start_paused = true)]
async fn daily_starts_are_counted_and_refused_when_gone() {
    let hour = Duration::from_secs(3600);
    let queue = LocalQueue::new(&SessionStartLimit::new(1000, 2, hour, 4));
    queue.wait_turn(0).await.unwrap();
    queue.wait_turn(1).await.unwrap();
    assert_eq!(queue.remaining(), 0);
    tokio::time::advance(Duration::from_secs(600)).await;
    let refused = queue.wait_turn(2).await.unwrap_err();
    assert_eq!(
        refused,
        IdentifyRefused::DailyLimitExhausted {
            reset_after: Some(Duration::from_secs(3000))
        },
        "the time left until the reset"
    );
    assert!(
        refused.to_string().contains("no session starts left"),
        "{refused}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_days_starts_come_back_at_each_reset() {
    let day = Duration::from_secs(24 * 3600);
    let start = Instant::now();
    let queue = LocalQueue::new(&SessionStartLimit::new(3, 1, Duration::from_secs(60), 1));
    queue.wait_turn(0).await.unwrap();
    assert!(queue.wait_turn(0).await.is_err(), "the last start is spent");
    // At the reset, the whole day's total, counted down again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(queue.remaining(), 3);
    for _ in 0..3 {
        queue.wait_turn(0).await.unwrap();
    }
    let refused = queue.wait_turn(0).await.unwrap_err();
    let next_reset = start + Duration::from_secs(60) + day;
    assert_eq!(
        refused,
        IdentifyRefused::DailyLimitExhausted {
            reset_after: Some(next_reset - Instant::now())
        },
        "the next reset is a day after the first"
    );
    // Days later, it still comes back: a cluster that runs for weeks.
    tokio::time::advance(day * 3).await;
    assert_eq!(queue.remaining(), 3);
    queue.wait_turn(0).await.unwrap();
    assert_eq!(queue.remaining(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lone_shard_is_never_made_to_wait() {
    let queue: Arc<dyn IdentifyQueue> = Arc::new(Unqueued);
    let start = Instant::now();
    for _ in 0..3 {
        queue.wait_turn(0).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn zero_concurrency_is_treated_as_one() {
    let queue = LocalQueue::unlimited(0);
    assert_eq!(queue.max_concurrency(), 1);
    let granted = schedule(queue, 2).await;
    assert_eq!(granted, vec![(0, 0.0), (1, 5.05)]);
}

#[tokio::test(start_paused = true)]
async fn a_max_concurrency_past_reason_is_capped_and_shards_share_buckets() {
    // A proxy's answer: four billion buckets would be gigabytes.
    let queue = LocalQueue::unlimited(u32::MAX);
    assert_eq!(queue.max_concurrency(), shardwire_cluster::MAX_BUCKETS);
    let start = Instant::now();
    queue.wait_turn(0).await.unwrap();
    queue.wait_turn(1).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "two buckets");
    queue
        .wait_turn(shardwire_cluster::MAX_BUCKETS)
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(5_050),
        "the same bucket as shard 0: a window and its margin later"
    );
}
