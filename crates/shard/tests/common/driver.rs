//! A shard's tokio driver against shardwire-sim: its configuration, and
//! waiting for the events a test expects.

use std::sync::Arc;
use std::time::Duration;

use shardwire_codec::{Compression, Token};
use shardwire_shard::{Shard, ShardConfig, ShardEvent, Unqueued};
use shardwire_sim::{Listener, ResumeOutcome, Sim};
use tokio::time::Instant;
use twilight_model::gateway::Intents;

pub(crate) const STEP: Duration = Duration::from_secs(10);

pub(crate) fn config(
    sim: &Sim,
    shard_id: u32,
    count: u32,
    compression: Compression,
) -> ShardConfig {
    let mut config = ShardConfig::new(
        Token::new(sim.token()),
        Intents::GUILDS,
        shard_id,
        count,
        sim.gateway_url(),
    );
    config.compression = compression;
    config.invalid_session_wait = (Duration::from_millis(10), Duration::from_millis(30));
    config.backoff_initial = Duration::from_millis(10);
    config.backoff_cap = Duration::from_millis(100);
    config
}

pub(crate) fn start(sim: &Sim, shard_id: u32, count: u32, compression: Compression) -> Shard {
    Shard::start(
        config(sim, shard_id, count, compression),
        Arc::new(Unqueued),
    )
}

pub(crate) async fn next(shard: &mut Shard) -> ShardEvent {
    tokio::time::timeout(STEP, shard.next_event())
        .await
        .expect("no event in time")
        .expect("the shard ended")
}

/// Receives until `wanted` matches; returns the dispatch seqs seen on the way.
pub(crate) async fn until(
    shard: &mut Shard,
    mut wanted: impl FnMut(&ShardEvent) -> bool,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wanted event never came; dispatches seen: {} (last {:?})",
            seqs.len(),
            seqs.last()
        );
        let event = next(shard).await;
        if let ShardEvent::Dispatch { seq, .. } = &event {
            seqs.push(*seq);
        }
        if wanted(&event) {
            return seqs;
        }
    }
}

pub(crate) fn is_dispatch(t: &'static str) -> impl Fn(&ShardEvent) -> bool {
    move |event| matches!(event, ShardEvent::Dispatch { event_type, .. } if event_type == t)
}

pub(crate) fn is_ready(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Ready { .. })
}

pub(crate) fn is_resumed(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Resumed)
}

pub(crate) async fn sim() -> Sim {
    Sim::builder()
        .guilds_per_shard(2)
        .identify_window(Duration::ZERO)
        .start()
        .await
        .unwrap()
}

pub(crate) async fn expect_resume(sim: &Sim, shard: &mut Shard) {
    until(shard, is_resumed).await;
    let observations = sim.observations();
    let resume = observations.resumes.last().expect("a resume");
    assert_eq!(resume.listener, Listener::Resume);
    assert!(matches!(resume.outcome, ResumeOutcome::Resumed { .. }));
    assert_eq!(observations.identifies.len(), 1, "no identify spent");
}

/// The last seq the simulator sent on `shard`'s one session: its own
/// record of what went out (the replay log included).
pub(crate) fn sent_seq(sim: &Sim, shard: u32) -> u64 {
    let sessions: Vec<_> = sim
        .sessions()
        .into_iter()
        .filter(|session| session.shard == shard)
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "one session of shard {shard}: {sessions:?}"
    );
    sessions[0].seq
}

/// Reads dispatches into `seqs` until the last one read is the last one
/// the simulator sent on `shard_id`'s session; returns that seq. Panics
/// when that does not happen within 20 s: a lost event at the end never
/// arrives, so it fails here rather than passing unseen.
pub(crate) async fn read_all_sent(
    sim: &Sim,
    shard: &mut Shard,
    shard_id: u32,
    seqs: &mut Vec<u64>,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = sent_seq(sim, shard_id);
        if seqs.last() == Some(&sent) {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard_id}: read up to {:?}, the simulator sent up to {sent}",
            seqs.last()
        );
        match tokio::time::timeout(Duration::from_millis(100), shard.next_event()).await {
            Ok(Some(ShardEvent::Dispatch { seq, .. })) => seqs.push(seq),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("shard {shard_id} ended"),
        }
    }
}
