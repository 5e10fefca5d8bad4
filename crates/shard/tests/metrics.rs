//! A shard's metrics against the simulator: each moves when the simulator
//! makes its cause happen. One recorder serves the whole binary; each test
//! runs its own shard id (of 16), so the `shard` label keeps them apart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::driver::{config, is_ready, is_resumed, next, until};
use shardwire_codec::Compression;
use shardwire_shard::metrics as m;
use shardwire_shard::{Outgoing, SendError, Shard, ShardConfig, ShardEvent, Unqueued};
use shardwire_sim::{Fault, MetricsRecorder, Sim};

const SHARDS: u32 = 16;

fn recorder() -> &'static MetricsRecorder {
    MetricsRecorder::global()
}

async fn sim() -> Sim {
    Sim::builder()
        .guilds_per_shard(3)
        .identify_window(Duration::ZERO)
        // Heartbeats (and zombies) within a test's step.
        .heartbeat_interval(Duration::from_secs(2))
        .start()
        .await
        .unwrap()
}

fn start(sim: &Sim, shard: u32, adjust: impl FnOnce(&mut ShardConfig)) -> Shard {
    // Made after the recorder, so its handles are the recorder's.
    recorder();
    let mut config = config(sim, shard, SHARDS, Compression::ZlibStream);
    adjust(&mut config);
    Shard::start(config, Arc::new(Unqueued))
}

fn counter(name: &str, shard: u32, labels: &[(&str, &str)]) -> u64 {
    let shard = shard.to_string();
    let mut all = vec![("shard", shard.as_str())];
    all.extend_from_slice(labels);
    recorder().counter(name, &all)
}

fn gauge(name: &str, shard: u32) -> Option<f64> {
    recorder().gauge(name, &[("shard", &shard.to_string())])
}

/// The last seq the simulator sent, on any session.
fn sent(sim: &Sim) -> u64 {
    sim.sessions().iter().map(|s| s.seq).max().unwrap_or(0)
}

/// Takes events until the consumer has had dispatch `seq`.
async fn take_through(shard: &mut Shard, seq: u64) {
    while shard.session().is_none_or(|session| session.seq < seq) {
        next(shard).await;
    }
}

/// Takes events until the consumer has had every dispatch the simulator
/// sent so far, so that the shard has counted them.
async fn caught_up(sim: &Sim, shard: &mut Shard) {
    take_through(shard, sent(sim)).await;
}

/// Waits until `done` holds. The simulator's bytes come over real sockets,
/// which the paused clock does not wait for: the bound is real time.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_a_close_4000_counts_a_reconnect_by_its_code_and_the_resume() {
    const SHARD: u32 = 1;
    let sim = sim().await;
    let mut shard = start(&sim, SHARD, |_| {});
    until(&mut shard, is_ready).await;
    caught_up(&sim, &mut shard).await;
    assert_eq!(gauge(m::SHARD_STATE, SHARD), Some(5.0), "active");
    assert_eq!(counter(m::IDENTIFIES, SHARD, &[]), 1);
    assert_eq!(counter(m::CONNECTS, SHARD, &[]), 1);
    assert_eq!(counter(m::RESUMES, SHARD, &[]), 0);
    assert_eq!(counter(m::RECONNECTS, SHARD, &[]), 0);
    assert_eq!(counter(m::DISPATCHES, SHARD, &[("event", "READY")]), 1);
    assert_eq!(
        counter(m::DISPATCHES, SHARD, &[("event", "GUILD_CREATE")]),
        3
    );
    assert_eq!(counter(m::PAYLOADS_RECEIVED, SHARD, &[("opcode", "10")]), 1);
    assert_eq!(counter(m::PAYLOADS_SENT, SHARD, &[("opcode", "2")]), 1);

    sim.inject(Some(SHARD), Fault::Close(4000));
    until(&mut shard, is_resumed).await;
    caught_up(&sim, &mut shard).await;
    assert_eq!(counter(m::RECONNECTS, SHARD, &[("cause", "4000")]), 1);
    assert_eq!(counter(m::RECONNECTS, SHARD, &[]), 1, "no other cause");
    assert_eq!(counter(m::RESUMES, SHARD, &[]), 1);
    assert_eq!(counter(m::CONNECTS, SHARD, &[]), 2);
    assert_eq!(
        counter(m::IDENTIFIES, SHARD, &[]),
        1,
        "a resume, not an identify"
    );
    assert_eq!(counter(m::PAYLOADS_SENT, SHARD, &[("opcode", "6")]), 1);
    assert_eq!(counter(m::PAYLOADS_RECEIVED, SHARD, &[("opcode", "10")]), 2);
    assert_eq!(counter(m::DISPATCHES, SHARD, &[("event", "RESUMED")]), 1);
    assert_eq!(gauge(m::SHARD_STATE, SHARD), Some(5.0), "active again");
    let observed = sim.observations();
    assert_eq!(observed.identifies.len(), 1);
    assert_eq!(observed.resumes.len(), 1);
    // Dropped, its task ends: the state says this process runs it no more.
    drop(shard);
    eventually("stopped", || gauge(m::SHARD_STATE, SHARD) == Some(8.0)).await;
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_a_zombie_is_counted_once_and_reconnects_by_that_cause() {
    const SHARD: u32 = 2;
    let sim = sim().await;
    let mut shard = start(&sim, SHARD, |_| {});
    until(&mut shard, is_ready).await;
    // A first round trip gives the latency series a sample.
    until(&mut shard, |event| {
        matches!(event, ShardEvent::Heartbeat { .. })
    })
    .await;
    let labels = [("shard", "2")];
    let latencies = recorder().histogram(m::HEARTBEAT_LATENCY, &labels);
    let last = gauge(m::HEARTBEAT_LATENCY_LAST, SHARD).expect("a last round trip");
    assert!(
        latencies.contains(&last),
        "the last round trip, {last}, is one of those recorded: {latencies:?}"
    );
    assert_eq!(counter(m::ZOMBIES, SHARD, &[]), 0);
    sim.inject(Some(SHARD), Fault::Zombie);
    until(&mut shard, is_resumed).await;
    caught_up(&sim, &mut shard).await;
    assert_eq!(counter(m::ZOMBIES, SHARD, &[]), 1);
    assert_eq!(counter(m::RECONNECTS, SHARD, &[("cause", "zombie")]), 1);
    assert_eq!(counter(m::RECONNECTS, SHARD, &[]), 1);
    assert_eq!(counter(m::RESUMES, SHARD, &[]), 1);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_op7_and_op9_and_a_dropped_connection_are_causes_of_their_own() {
    const SHARD: u32 = 3;
    let sim = sim().await;
    let mut shard = start(&sim, SHARD, |_| {});
    until(&mut shard, is_ready).await;
    sim.inject(Some(SHARD), Fault::Reconnect);
    until(&mut shard, is_resumed).await;
    sim.inject(Some(SHARD), Fault::DropTcp);
    until(&mut shard, is_resumed).await;
    sim.inject(Some(SHARD), Fault::InvalidSession { resumable: false });
    until(&mut shard, is_ready).await;
    let causes = |cause| counter(m::RECONNECTS, SHARD, &[("cause", cause)]);
    assert_eq!(
        (causes("op7"), causes("transport"), causes("op9")),
        (1, 1, 1)
    );
    assert_eq!(counter(m::RECONNECTS, SHARD, &[]), 3);
    assert_eq!(counter(m::RESUMES, SHARD, &[]), 2);
    assert_eq!(
        counter(m::IDENTIFIES, SHARD, &[]),
        2,
        "op 9 false starts anew"
    );
    assert_eq!(counter(m::DISPATCHES, SHARD, &[("event", "READY")]), 2);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_dispatches_count_by_known_name_and_the_rest_as_other() {
    const SHARD: u32 = 4;
    let sim = sim().await;
    let mut shard = start(&sim, SHARD, |_| {});
    until(&mut shard, is_ready).await;
    for event_type in ["TYPING_START", "NOT_AN_EVENT_YET", "ANOTHER_NEW_ONE"] {
        sim.inject(
            Some(SHARD),
            Fault::Dispatch {
                event_type: event_type.into(),
                d: serde_json::json!({}),
            },
        );
    }
    until(&mut shard, |event| {
        matches!(event, ShardEvent::Dispatch { event_type, .. } if event_type == "ANOTHER_NEW_ONE")
    })
    .await;
    caught_up(&sim, &mut shard).await;
    let events = recorder().label_values(m::DISPATCHES, "event", &[("shard", "4")]);
    assert_eq!(events, ["GUILD_CREATE", "READY", "TYPING_START", "other"]);
    assert_eq!(counter(m::DISPATCHES, SHARD, &[("event", "other")]), 2);
    let total = counter(m::DISPATCHES, SHARD, &[]);
    assert_eq!(total, sim.sessions()[0].seq, "one count per dispatch sent");
    assert_eq!(
        counter(m::PAYLOADS_RECEIVED, SHARD, &[("opcode", "0")]),
        total
    );
    // zlib-stream: the JSON is larger than what came over the wire.
    let wire = counter(m::WIRE_BYTES, SHARD, &[]);
    let json = counter(m::PAYLOAD_BYTES, SHARD, &[]);
    assert!(
        wire > 0 && json > wire,
        "{json} bytes of JSON from {wire} on the wire"
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_commands_sent_move_the_headroom_and_refused_ones_count_by_reason() {
    const SHARD: u32 = 5;
    let sim = sim().await;
    let mut shard = start(&sim, SHARD, |_| {});
    until(&mut shard, is_ready).await;
    caught_up(&sim, &mut shard).await;
    // Every payload sent (heartbeats too) takes one of the 120 a minute.
    let headroom_and_sent = || {
        let headroom = gauge(m::RATE_LIMIT_HEADROOM, SHARD).expect("set by Identify");
        (headroom, counter(m::PAYLOADS_SENT, SHARD, &[]) as f64)
    };
    let (before, sent_before) = headroom_and_sent();
    for _ in 0..5 {
        let presence = Outgoing::json(
            br#"{"op":3,"d":{"since":null,"activities":[],"status":"online","afk":false}}"#
                .to_vec(),
        );
        shard.send(presence).await.unwrap();
    }
    assert_eq!(counter(m::PAYLOADS_SENT, SHARD, &[("opcode", "3")]), 5);
    let (after, sent_after) = headroom_and_sent();
    assert!(sent_after - sent_before >= 5.0);
    assert_eq!(
        after,
        before - (sent_after - sent_before),
        "one fewer per payload sent"
    );

    let too_large =
        Outgoing::json(format!(r#"{{"op":3,"d":"{}"}}"#, "x".repeat(5000)).into_bytes());
    assert!(matches!(
        shard.send(too_large).await,
        Err(SendError::InvalidRaw(_))
    ));
    assert_eq!(
        counter(m::COMMANDS_REFUSED, SHARD, &[("reason", "invalid")]),
        1
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_a_lagging_consumer_shows_as_held_events_and_a_reading_pause() {
    const SHARD: u32 = 6;
    let sim = sim().await;
    // A small limit, so a burst the consumer does not take pauses reading.
    let mut shard = start(&sim, SHARD, |config| config.max_pending_bytes = 16 * 1024);
    until(&mut shard, is_ready).await;
    caught_up(&sim, &mut shard).await;
    assert_eq!(counter(m::READING_PAUSED, SHARD, &[]), 0);
    eventually("nothing held", || gauge(m::HELD_EVENTS, SHARD) == Some(0.0)).await;
    sim.inject(Some(SHARD), Fault::Burst(5_000));
    // The consumer takes nothing until reading has paused.
    eventually("reading paused", || {
        counter(m::READING_PAUSED, SHARD, &[]) > 0
    })
    .await;
    let held = gauge(m::HELD_EVENTS, SHARD).unwrap();
    let bytes = gauge(m::HELD_BYTES, SHARD).unwrap();
    assert!(
        held > 0.0 && bytes > 0.0,
        "{held} events, {bytes} bytes held"
    );
    // READY, 3 GUILD_CREATEs, the burst.
    take_through(&mut shard, 4 + 5_000).await;
    assert_eq!(counter(m::DISPATCHES, SHARD, &[]), 4 + 5_000);
    eventually("nothing held", || {
        gauge(m::HELD_EVENTS, SHARD) == Some(0.0) && gauge(m::HELD_BYTES, SHARD) == Some(0.0)
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_a_full_queue_refuses_and_a_reconnect_the_bot_asks_for_is_the_users() {
    const SHARD: u32 = 7;
    let sim = sim().await;
    let mut shard = start(&sim, SHARD, |config| config.max_queued_commands = 1);
    // Before READY, commands wait for the session: the second finds the
    // queue full.
    let presence = || {
        Outgoing::json(
            br#"{"op":3,"d":{"since":null,"activities":[],"status":"idle","afk":false}}"#.to_vec(),
        )
    };
    shard.send(presence()).await.unwrap();
    assert!(matches!(
        shard.send(presence()).await,
        Err(SendError::QueueFull(1))
    ));
    let refused = |reason| counter(m::COMMANDS_REFUSED, SHARD, &[("reason", reason)]);
    assert_eq!((refused("queue_full"), refused("invalid")), (1, 0));
    until(&mut shard, is_ready).await;
    shard.reconnect();
    until(&mut shard, is_resumed).await;
    assert_eq!(counter(m::RECONNECTS, SHARD, &[("cause", "user")]), 1);
    assert_eq!(counter(m::RECONNECTS, SHARD, &[]), 1);
    assert_eq!(
        counter(m::PAYLOADS_SENT, SHARD, &[("opcode", "3")]),
        1,
        "the queued one went out"
    );
    sim.shutdown().await;
}
