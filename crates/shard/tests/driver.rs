//! The tokio driver against shardwire-sim: a real WebSocket on loopback.

mod common;

use common::driver::{
    config, expect_resume, is_dispatch, is_ready, is_resumed, next, read_all_sent, sent_seq, sim,
    start, until,
};
use std::sync::Arc;
use std::time::Duration;

use shardwire_codec::{Command, Compression, EventFilter, Token};
use shardwire_corpus::Rng;
use shardwire_shard::{
    FatalError, Outgoing, SendError, Shard, ShardConfig, ShardEvent, ShardState, Unqueued,
};
use shardwire_sim::{Fault, ResumeOutcome, Sim};
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::{Event, EventType};

/// Starts a shard, waits for READY and its GUILD_CREATEs, then a burst.
async fn ready_with_events(compression: Compression, sim: &Sim) -> Shard {
    let mut shard = start(sim, 0, 1, compression);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::Burst(40));
    let seqs = until(&mut shard, |e| {
        matches!(e, ShardEvent::Dispatch { seq: 43, .. })
    })
    .await;
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{compression}: {seqs:?}"
    );
    assert_eq!(shard.status(), ShardState::Active);
    shard
}

#[tokio::test(start_paused = true)]
async fn driver_zlib_stream() {
    let sim = sim().await;
    ready_with_events(Compression::ZlibStream, &sim).await;
    assert_eq!(
        sim.observations().connections[0].compress.as_deref(),
        Some("zlib-stream")
    );
}

#[tokio::test(start_paused = true)]
async fn driver_a_quiet_shard_hibernates_and_decodes_on_waking() {
    let sim = sim().await;
    let mut config = config(&sim, 0, 1, Compression::ZlibStream);
    config.hibernate_after = Some(Duration::from_millis(20));
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    // READY is seq 1, the two GUILD_CREATEs 2 and 3.
    until(&mut shard, |e| {
        matches!(e, ShardEvent::Dispatch { seq: 3, .. })
    })
    .await;
    let mut last = 3;
    for round in 0..3 {
        // Quiet long enough to sleep, then a burst against the kept window.
        tokio::time::sleep(Duration::from_millis(80)).await;
        sim.inject(Some(0), Fault::Burst(40));
        let target = last + 40;
        let seqs = until(
            &mut shard,
            |e| matches!(e, ShardEvent::Dispatch { seq, .. } if *seq == target),
        )
        .await;
        assert_eq!(seqs.first(), Some(&(last + 1)), "round {round}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "round {round}: {seqs:?}"
        );
        last = target;
    }
    assert_eq!(shard.status(), ShardState::Active);
    assert_eq!(sim.observations().connections.len(), 1, "never reconnected");
}

#[tokio::test(start_paused = true)]
async fn driver_zstd_stream() {
    let sim = sim().await;
    ready_with_events(Compression::ZstdStream, &sim).await;
}

#[tokio::test(start_paused = true)]
async fn driver_no_compression() {
    let sim = sim().await;
    ready_with_events(Compression::None, &sim).await;
}

#[tokio::test(start_paused = true)]
async fn driver_payload_compression() {
    let sim = sim().await;
    let mut config = config(&sim, 0, 1, Compression::None);
    config.payload_compression = true;
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    until(&mut shard, is_ready).await;
    assert!(sim.observations().identifies[0].compress);
    sim.inject(Some(0), Fault::Burst(10));
    until(&mut shard, |e| {
        matches!(e, ShardEvent::Dispatch { seq: 13, .. })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn driver_split_payloads_and_fragmented_frames() {
    let sim = Sim::builder()
        .split_payloads(true)
        .fragment_frames(true)
        .start()
        .await
        .unwrap();
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::Burst(200));
    let seqs = until(&mut shard, |e| {
        matches!(e, ShardEvent::Dispatch { seq: 203, .. })
    })
    .await;
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
}

#[tokio::test(start_paused = true)]
async fn driver_heartbeat_cadence_and_first_beat_jitter() {
    let interval = Duration::from_millis(150);
    let sim = Sim::builder()
        .heartbeat_interval(interval)
        .start()
        .await
        .unwrap();
    let mut shard = start(&sim, 0, 1, Compression::None);
    let mut beats = 0;
    while beats < 4 {
        if let ShardEvent::Heartbeat { .. } = next(&mut shard).await {
            beats += 1;
        }
    }
    let observations = sim.observations();
    let hello = observations.connections[0].at;
    let times: Vec<Duration> = observations
        .heartbeats
        .iter()
        .map(|h| h.at - hello)
        .collect();
    // On the paused clock the beats go out exactly on the machine's
    // schedule: the first at a jitter within the interval, then one every
    // interval. Each carries the last seq: null only before READY, and
    // never going back.
    assert!(times[0] < interval, "{times:?}");
    assert!(
        times.windows(2).all(|pair| pair[1] - pair[0] == interval),
        "{times:?}"
    );
    let seqs: Vec<Option<u64>> = observations.heartbeats.iter().map(|h| h.seq).collect();
    assert!(
        seqs.last().copied().flatten().is_some() && seqs.windows(2).all(|pair| pair[0] <= pair[1]),
        "{seqs:?}"
    );
    assert!(shard.latency().last().is_some());
    assert!(observations.violations.is_empty());
}

#[tokio::test(start_paused = true)]
async fn driver_server_op_1_gets_a_heartbeat_at_once() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::None);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::RequestHeartbeat);
    until(&mut shard, |e| matches!(e, ShardEvent::Heartbeat { .. })).await;
    assert_eq!(
        sim.observations().heartbeats.len(),
        1,
        "one beat, long before the 41 s interval"
    );
}

#[tokio::test(start_paused = true)]
async fn driver_zombie_then_resume() {
    let sim = Sim::builder()
        .heartbeat_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::Zombie);
    expect_resume(&sim, &mut shard).await;
    let close = sim.observations().closes[0].clone();
    assert_eq!(close.code, Some(4000), "closed with a resumable code");
}

#[tokio::test(start_paused = true)]
async fn driver_op_7_resumes() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::Reconnect);
    expect_resume(&sim, &mut shard).await;
}

#[tokio::test(start_paused = true)]
async fn driver_op_9_true_resumes_and_false_identifies() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::InvalidSession { resumable: true });
    expect_resume(&sim, &mut shard).await;
    sim.inject(Some(0), Fault::InvalidSession { resumable: false });
    until(&mut shard, is_ready).await;
    assert_eq!(sim.observations().identifies.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn driver_closes_4000_4001_4008_and_a_dropped_connection_resume() {
    for fault in [
        Fault::Close(4000),
        Fault::Close(4001),
        Fault::Close(4008),
        Fault::DropTcp,
    ] {
        let sim = sim().await;
        let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
        until(&mut shard, is_ready).await;
        sim.inject(Some(0), fault);
        expect_resume(&sim, &mut shard).await;
    }
}

#[tokio::test(start_paused = true)]
async fn driver_closes_4007_and_4009_identify_without_resuming() {
    for code in [4007, 4009] {
        let sim = sim().await;
        let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
        until(&mut shard, is_ready).await;
        sim.inject(Some(0), Fault::Close(code));
        until(&mut shard, is_ready).await;
        let observations = sim.observations();
        assert_eq!(observations.identifies.len(), 2, "{code}");
        assert!(observations.resumes.is_empty(), "{code}: no wasted resume");
    }
}

#[tokio::test(start_paused = true)]
async fn driver_corrupt_compressed_bytes_reconnect_with_a_fresh_codec_and_resume() {
    for compression in [Compression::ZlibStream, Compression::ZstdStream] {
        let sim = sim().await;
        let mut shard = start(&sim, 0, 1, compression);
        until(&mut shard, is_ready).await;
        sim.inject(Some(0), Fault::CorruptCompressed);
        expect_resume(&sim, &mut shard).await;
    }
}

#[tokio::test(start_paused = true)]
async fn driver_a_25000_member_guild_create() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::HugeGuildCreate { members: 25_000 });
    loop {
        if let ShardEvent::Dispatch {
            event_type, json, ..
        } = next(&mut shard).await
            && event_type == "GUILD_CREATE"
            && json.len() > 8 << 20
        {
            break;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn driver_fatal_4004_and_4014_stop_with_the_reason() {
    let sim = Sim::builder()
        .disallowed_intents(Intents::GUILD_MEMBERS.bits())
        .start()
        .await
        .unwrap();
    let mut wrong = ShardConfig::new(
        Token::new("wrong"),
        Intents::GUILDS,
        0,
        1,
        sim.gateway_url(),
    );
    wrong.compression = Compression::None;
    let mut shard = Shard::start(wrong, Arc::new(Unqueued));
    until(&mut shard, |e| {
        matches!(e, ShardEvent::Fatal(FatalError::AuthenticationFailed))
    })
    .await;
    assert_eq!(shard.status(), ShardState::FatallyClosed);

    let mut privileged = config(&sim, 0, 1, Compression::None);
    privileged.intents = Intents::GUILDS | Intents::GUILD_MEMBERS;
    let mut shard = Shard::start(privileged, Arc::new(Unqueued));
    let fatal = loop {
        if let ShardEvent::Fatal(error) = next(&mut shard).await {
            break error;
        }
    };
    assert_eq!(fatal, FatalError::DisallowedIntents(Intents::GUILD_MEMBERS));
    assert!(
        fatal.to_string().contains("Server Members Intent"),
        "{fatal}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.observations().connections.len(), 2, "no reconnect loop");
}

#[tokio::test(start_paused = true)]
async fn driver_commands_and_raw_json_are_answered() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::None);
    until(&mut shard, is_ready).await;
    let before = shard.available();
    assert!(
        before > 100 && before < 120,
        "{before}: the reserve is kept"
    );
    assert!(shard.next_available() <= tokio::time::Instant::now().into_std());
    shard
        .send(Command::RequestSoundboardSounds(
            shardwire_codec::RequestSoundboardSounds {
                guild_ids: vec![twilight_model::id::Id::new(5)],
            },
        ))
        .await
        .unwrap();
    until(&mut shard, is_dispatch("SOUNDBOARD_SOUNDS")).await;
    assert!(shard.available() < before, "the command took a slot");
    shard
        .send(Outgoing::json(
            br#"{"op":43,"d":{"guild_id":"5","fields":["status"]}}"#,
        ))
        .await
        .unwrap();
    until(&mut shard, is_dispatch("CHANNEL_INFO")).await;
    let mut oversized = br#"{"op":43,"d":{"pad":""#.to_vec();
    oversized.resize(4096, b'x');
    oversized.extend_from_slice(br#""}}"#);
    for refused in [b"not json".to_vec(), oversized] {
        let len = refused.len();
        assert!(
            matches!(
                shard.send(Outgoing::json(refused)).await,
                Err(SendError::InvalidRaw(_))
            ),
            "{len} bytes refused as invalid raw JSON"
        );
    }
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn driver_twilight_payloads_go_out_under_the_same_checks() {
    use twilight_model::gateway::payload::outgoing::{RequestGuildMembers, UpdateVoiceState};
    use twilight_model::id::Id;
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::None);
    until(&mut shard, is_ready).await;
    let guild = Id::new(5);
    shard
        .send(UpdateVoiceState::new(guild, Some(Id::new(6)), true, false))
        .await
        .unwrap();
    until(&mut shard, is_dispatch("VOICE_SERVER_UPDATE")).await;
    let request = RequestGuildMembers::builder(guild)
        .nonce("twilight")
        .query("", None);
    shard.send(request).await.unwrap();
    until(&mut shard, is_dispatch("GUILD_MEMBERS_CHUNK")).await;
    // Any serializable payload, the size check included.
    #[derive(serde::Serialize)]
    struct Padded {
        op: u8,
        d: String,
    }
    let oversized = Outgoing::serialize(&Padded {
        op: 3,
        d: "x".repeat(4096),
    })
    .unwrap();
    assert!(matches!(
        shard.send(oversized).await,
        Err(SendError::InvalidRaw(_))
    ));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test(start_paused = true)]
async fn driver_a_dropped_shard_stops_while_its_sender_lives() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::None);
    until(&mut shard, is_ready).await;
    let sender = shard.sender();
    drop(shard);
    tokio::time::timeout(Duration::from_secs(5), async {
        while sim.observations().closes.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the connection closed");
    let close = &sim.observations().closes[0];
    assert_eq!(close.code, Some(shardwire_shard::RESUMABLE_CLOSE));
    assert!(matches!(
        sender.send(Command::Heartbeat { seq: None }).await,
        Err(SendError::Stopped)
    ));
}

#[test]
fn the_jitter_seed_differs_between_shards_and_restarts_unless_fixed() {
    let config = || ShardConfig::new(Token::new("t"), Intents::GUILDS, 3, 8, "ws://x");
    let seeds: std::collections::BTreeSet<u64> = (0..8).map(|_| config().seed).collect();
    assert_eq!(seeds.len(), 8, "each start draws its own seed");
    let mut fixed = config();
    fixed.seed = 7;
    assert_eq!(fixed.backoff().next_delay(), {
        let mut again = config();
        again.seed = 7;
        again.backoff().next_delay()
    });
}

#[tokio::test(start_paused = true)]
async fn driver_disconnect_then_export_and_resume_in_a_new_shard() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    shard.disconnect(4000);
    until(&mut shard, |e| matches!(e, ShardEvent::Disconnected { .. })).await;
    let session = shard.session().expect("a session to export");
    drop(shard);
    // A new process imports the session and resumes.
    let mut config = config(&sim, 0, 1, Compression::ZlibStream);
    config.session = Some(session);
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    until(&mut shard, is_resumed).await;
    assert_eq!(sim.observations().identifies.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn driver_chaos_every_event_exactly_once_in_order() {
    let sim = Sim::builder()
        .guilds_per_shard(1)
        .heartbeat_interval(Duration::from_millis(200))
        .identify_window(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let mut shards = [
        start(&sim, 0, 2, Compression::ZlibStream),
        start(&sim, 1, 2, Compression::ZstdStream),
    ];
    for shard in &mut shards {
        until(shard, is_ready).await;
    }
    let mut rng = Rng::new(2024);
    // READY's own dispatch (seq 1) comes right after the Ready event.
    let mut seen: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..200 {
        let target = (round % 2) as usize;
        let fault = match rng.below(8) {
            0 => Fault::Reconnect,
            1 => Fault::InvalidSession { resumable: true },
            2 => Fault::Close(4000),
            3 => Fault::Close(4008),
            4 => Fault::DropTcp,
            5 => Fault::CorruptCompressed,
            6 => Fault::RequestHeartbeat,
            _ => Fault::Burst(1 + rng.below(20)),
        };
        let resumes = matches!(
            fault,
            Fault::Reconnect
                | Fault::InvalidSession { .. }
                | Fault::Close(_)
                | Fault::DropTcp
                | Fault::CorruptCompressed
        );
        // Events in flight when the fault lands.
        sim.inject(Some(target as u32), Fault::Burst(rng.below(5)));
        sim.inject(Some(target as u32), fault);
        if resumes {
            seen[target].extend(until(&mut shards[target], is_resumed).await);
        }
    }
    // Drain: one last marker burst per shard, then read up to the last
    // event the simulator sent on the session.
    let mut sent = [0; 2];
    for (target, shard) in shards.iter_mut().enumerate() {
        sim.inject(Some(target as u32), Fault::Burst(1));
        sent[target] = read_all_sent(&sim, shard, target as u32, &mut seen[target]).await;
    }
    for (target, seqs) in seen.iter().enumerate() {
        assert_eq!(
            seqs.last(),
            Some(&sent[target]),
            "shard {target}: the last event the simulator sent"
        );
        // Every dispatch exactly once and in order: the seqs are 1, 2, 3, …
        if let Some(index) = seqs
            .iter()
            .enumerate()
            .position(|(index, seq)| *seq != index as u64 + 1)
        {
            let around = &seqs[index.saturating_sub(3)..(index + 4).min(seqs.len())];
            let observations = sim.observations();
            let closes: Vec<_> = observations
                .closes
                .iter()
                .rev()
                .take(4)
                .map(|c| (c.shard, c.by, c.code))
                .collect();
            panic!(
                "shard {target}: expected seq {} at position {index}, got {around:?}; violations {:?}; last closes {closes:?}",
                index + 1,
                observations.violations
            );
        }
        assert!(
            seqs.len() > 100,
            "shard {target}: only {} events",
            seqs.len()
        );
    }
    let observations = sim.observations();
    assert_eq!(
        observations.identifies.len(),
        2,
        "only the first identify of each shard"
    );
    assert!(
        observations.resumes.len() >= 100,
        "{} resumes",
        observations.resumes.len()
    );
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
}

#[tokio::test(start_paused = true)]
async fn driver_a_slow_consumer_never_costs_the_session() {
    let sim = Sim::builder()
        .guilds_per_shard(1)
        .heartbeat_interval(Duration::from_millis(250))
        .start()
        .await
        .unwrap();
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    let seqs = until(&mut shard, is_ready).await;
    // 3,000 events, far more than the event buffer, and nobody reading for
    // four heartbeat intervals. (The interval is short, but not so short
    // that a loaded CI machine stalling the shared runtime for a few
    // hundred milliseconds looks like a missed heartbeat.)
    lag_behind_a_burst(&sim, &mut shard, seqs, Duration::from_secs(1)).await;
}

/// 3,000 events while the consumer pauses; then every one of them, in
/// order, on the same connection.
async fn lag_behind_a_burst(sim: &Sim, shard: &mut Shard, mut seqs: Vec<u64>, pause: Duration) {
    sim.inject(Some(0), Fault::Burst(3000));
    tokio::time::sleep(pause).await;
    seqs.extend(
        until(shard, |e| {
            matches!(e, ShardEvent::Dispatch { seq: 3002, .. })
        })
        .await,
    );
    assert_eq!(
        seqs,
        (1..=3002).collect::<Vec<u64>>(),
        "every event, in order"
    );
    assert_eq!(sent_seq(sim, 0), 3002, "all the simulator sent");
    let observations = sim.observations();
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    assert_eq!(observations.connections.len(), 1, "the connection survived");
}

#[tokio::test(start_paused = true)]
async fn driver_events_connected_sent_raw_typed_disconnected_reconnected() {
    let sim = sim().await;
    let mut config = config(&sim, 0, 1, Compression::ZlibStream);
    config.typed_events = EventFilter::only([EventType::GuildCreate]);
    config.raw_messages = true;
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    let mut seen = Vec::new();
    let mut guild_creates = 0;
    while guild_creates < 2 {
        let event = next(&mut shard).await;
        if let ShardEvent::Dispatch {
            event_type, event, ..
        } = &event
        {
            if event_type == "GUILD_CREATE" {
                assert!(
                    matches!(event.as_deref(), Some(Event::GuildCreate(_))),
                    "typed as asked: {event:?}"
                );
                guild_creates += 1;
            } else {
                assert!(event.is_none(), "{event_type} is not asked for");
            }
        }
        seen.push(event);
    }
    let position = |wanted: &dyn Fn(&ShardEvent) -> bool| {
        seen.iter()
            .position(wanted)
            .unwrap_or_else(|| panic!("missing from {seen:?}"))
    };
    let connected = position(&|e| *e == ShardEvent::Connected);
    let hello =
        position(&|e| matches!(e, ShardEvent::Message { json } if json.contains("\"op\":10")));
    let identify = position(&|e| *e == ShardEvent::Sent { opcode: 2 });
    let ready = position(&is_ready);
    assert!(connected < hello && hello < identify && identify < ready);
    assert!(
        !format!("{seen:?}").contains(sim.token()),
        "no token in events"
    );

    sim.inject(Some(0), Fault::Close(4000));
    until(&mut shard, |e| {
        matches!(e, ShardEvent::Disconnected { code: Some(4000), reason } if reason == "Simulated close.")
    })
    .await;
    until(&mut shard, |e| *e == ShardEvent::Reconnected).await;
    until(&mut shard, |e| *e == ShardEvent::Sent { opcode: 6 }).await;
    until(&mut shard, is_resumed).await;
}

#[tokio::test(start_paused = true)]
async fn driver_identify_and_resume_on_request() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    until(&mut shard, is_ready).await;
    shard.resume().await.unwrap();
    until(&mut shard, is_resumed).await;
    shard.identify();
    until(&mut shard, is_ready).await;
    let observations = sim.observations();
    assert_eq!(observations.resumes.len(), 1);
    assert_eq!(observations.identifies.len(), 2);
    // Disconnected, then resumed on request.
    shard.disconnect(4000);
    until(&mut shard, |e| matches!(e, ShardEvent::Disconnected { .. })).await;
    assert_eq!(shard.status(), ShardState::Disconnected);
    shard.resume().await.unwrap();
    until(&mut shard, is_resumed).await;
    assert_eq!(sim.observations().resumes.len(), 2);
    // A session ended with 1000 cannot be resumed.
    shard.disconnect(1000);
    until(&mut shard, |e| matches!(e, ShardEvent::Disconnected { .. })).await;
    assert!(matches!(
        shard.resume().await,
        Err(shardwire_shard::ResumeError::NoSession)
    ));
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn driver_an_exported_session_replays_what_the_consumer_had_not_taken() {
    let sim = sim().await;
    let mut shard = start(&sim, 0, 1, Compression::ZlibStream);
    let mut seqs = until(&mut shard, is_ready).await;
    // READY and two GUILD_CREATEs, then 3,000 events the consumer mostly
    // never reads: they sit in the shard's queue and channel.
    sim.inject(Some(0), Fault::Burst(3000));
    seqs.extend(
        until(&mut shard, |e| {
            matches!(e, ShardEvent::Dispatch { seq: 500, .. })
        })
        .await,
    );
    let session = shard.session().expect("a session");
    assert_eq!(
        session.seq, 500,
        "the last event taken, not the last received"
    );
    drop(shard);
    let mut config = config(&sim, 0, 1, Compression::ZlibStream);
    config.session = Some(session);
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    // The rest of the burst ended with the first connection; the replay
    // brings back everything the sim had sent past 500.
    seqs.extend(until(&mut shard, is_resumed).await);
    let replayed = match sim.observations().resumes[0].outcome {
        ResumeOutcome::Resumed { replayed } => replayed,
        other => panic!("{other:?}"),
    };
    assert!(
        replayed > 0,
        "events the consumer had not taken are replayed"
    );
    let last = 500 + replayed;
    assert_eq!(seqs.last(), Some(&last));
    // RESUMED's own dispatch, then five more.
    sim.inject(Some(0), Fault::Burst(5));
    seqs.extend(
        until(
            &mut shard,
            |e| matches!(e, ShardEvent::Dispatch { seq, .. } if *seq == last + 6),
        )
        .await,
    );
    assert_eq!(
        seqs,
        (1..=last + 6).collect::<Vec<u64>>(),
        "nothing lost, nothing twice"
    );
    assert_eq!(sim.observations().identifies.len(), 1);
}

/// A sim with one guild and this heartbeat interval, and a ready shard that
/// holds at most 32 KiB of events for its consumer (a few dozen events past
/// the 1,024 its channel holds); returns the seqs seen so far.
async fn small_budget(interval: Duration) -> (Sim, Shard, Vec<u64>) {
    let sim = Sim::builder()
        .guilds_per_shard(1)
        .heartbeat_interval(interval)
        .start()
        .await
        .unwrap();
    let mut config = config(&sim, 0, 1, Compression::ZlibStream);
    config.max_pending_bytes = 32 * 1024;
    let mut shard = Shard::start(config, Arc::new(Unqueued));
    let seqs = until(&mut shard, is_ready).await;
    (sim, shard, seqs)
}

#[tokio::test(start_paused = true)]
async fn driver_a_full_byte_budget_pauses_reading_and_loses_nothing() {
    let (sim, mut shard, seqs) = small_budget(Duration::from_secs(1)).await;
    lag_behind_a_burst(&sim, &mut shard, seqs, Duration::from_millis(300)).await;
}

#[tokio::test(start_paused = true)]
async fn driver_a_consumer_stalled_for_long_costs_resumes_never_the_session() {
    let (sim, mut shard, mut seqs) = small_budget(Duration::from_millis(150)).await;
    // The budget fills, reading pauses, heartbeat ACKs go unread: the shard
    // takes its connection for a zombie and reconnects, and the new
    // connection must still resume rather than time out.
    sim.inject(Some(0), Fault::Burst(3000));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Read what arrived, then a marker burst, up to 300 ms without dispatches.
    sim.inject(Some(0), Fault::Burst(1));
    let sent = read_all_sent(&sim, &mut shard, 0, &mut seqs).await;
    // The burst ends with the connection it was sent on, so the simulator
    // sent fewer than 3,000: its own record says how many.
    let expected: Vec<u64> = (1..=sent).collect();
    assert_eq!(
        seqs, expected,
        "every event the simulator sent, once, in order"
    );
    let observations = sim.observations();
    assert_eq!(observations.identifies.len(), 1, "the session was kept");
    assert!(
        !observations.resumes.is_empty(),
        "the stall did cost a reconnection"
    );
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
}
