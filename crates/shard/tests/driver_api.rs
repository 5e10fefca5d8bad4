//! The tokio driver's controls against shardwire-sim, one test each:
//! each would fail if its control did nothing.

mod common;

use std::time::Duration;

use common::driver::{expect_resume, is_ready, next, start, until};
use shardwire_codec::Compression;
use shardwire_shard::{ShardEvent, ShardState};
use shardwire_sim::{ClosedBy, Listener, Sim};

/// A simulator whose heartbeat interval is an hour: the first beat's
/// jitter (up to one interval) does not bring a beat of its own in the
/// test's time.
async fn quiet_sim() -> Sim {
    Sim::builder()
        .guilds_per_shard(2)
        .identify_window(Duration::ZERO)
        .heartbeat_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn heartbeat_sends_one_beat_now_with_the_last_seq() {
    let sim = quiet_sim().await;
    let mut shard = start(&sim, 0, 1, Compression::None);
    // READY is seq 1, the two GUILD_CREATEs 2 and 3.
    until(&mut shard, |e| {
        matches!(e, ShardEvent::Dispatch { seq: 3, .. })
    })
    .await;
    assert!(sim.observations().heartbeats.is_empty());
    shard.heartbeat();
    until(&mut shard, |e| matches!(e, ShardEvent::Heartbeat { .. })).await;
    let observations = sim.observations();
    assert_eq!(observations.heartbeats.len(), 1, "one beat");
    assert_eq!(observations.heartbeats[0].seq, Some(3), "the last seq");
    assert!(shard.latency().last().is_some(), "the ACK was timed");
    assert!(observations.violations.is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconnect_closes_resumably_and_resumes_on_the_resume_url() {
    let sim = quiet_sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    shard.reconnect();
    expect_resume(&sim, &mut shard).await;
    let observations = sim.observations();
    assert_eq!(observations.connections.len(), 2);
    let close = &observations.closes[0];
    assert_eq!(close.by, ClosedBy::Client, "the shard closed");
    assert_eq!(close.code, Some(4000), "with a resumable code");
    assert_eq!(observations.resumes.len(), 1);
    assert_eq!(shard.status(), ShardState::Active);
    assert!(observations.violations.is_empty());
}

#[tokio::test(start_paused = true)]
async fn reinstantiate_drops_the_session_and_identifies_on_the_original_url() {
    let sim = quiet_sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    let before = shard.session().expect("a session");
    shard.reinstantiate();
    let after = loop {
        if let ShardEvent::Ready { session } = next(&mut shard).await {
            break session;
        }
    };
    assert_ne!(after.session_id, before.session_id, "a new session");
    assert_eq!(after.seq, 1);
    let observations = sim.observations();
    assert_eq!(observations.identifies.len(), 2, "identified again");
    assert!(observations.resumes.is_empty(), "no resume");
    assert_eq!(observations.connections.len(), 2);
    assert_eq!(observations.connections[1].listener, Listener::Main);
    assert_eq!(observations.closes[0].by, ClosedBy::Client);
    assert!(observations.violations.is_empty());
}
