//! The tokio driver against a simulator that misbehaves on purpose: a
//! wrong handshake, payloads written as Discord never writes them, JSON in
//! binary frames, a dispatch nested 100,000 deep, a resume URL that is dead
//! or not a URL. Each ends with the shard connected again and every event
//! the simulator sent delivered exactly once, or stopped with the fix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::driver::{config, is_ready, is_resumed, next, until};
use shardwire_codec::{Compression, EventFilter};
use shardwire_shard::{FatalError, Shard, ShardConfig, ShardEvent, ShardState, Unqueued};
use shardwire_sim::{
    ClosedBy, Fault, FieldOrder, Listener, PayloadStyle, ResumeOutcome, Sim, SimBuilder,
};

fn builder() -> SimBuilder {
    Sim::builder()
        .guilds_per_shard(2)
        .identify_window(Duration::ZERO)
}

fn start_with(sim: &Sim, compression: Compression, adjust: impl FnOnce(&mut ShardConfig)) -> Shard {
    let mut config = config(sim, 0, 1, compression);
    adjust(&mut config);
    Shard::start(config, Arc::new(Unqueued))
}

/// The last seq the simulator sent, on any session.
fn sent(sim: &Sim) -> u64 {
    sim.sessions().iter().map(|s| s.seq).max().unwrap_or(0)
}

/// Takes events until the dispatch `upto` has come, and checks that `seen`
/// (with those taken) is 1 to `upto`, each once, and that the simulator
/// sent no more than that. Returns the other events taken on the way.
async fn deliver(sim: &Sim, shard: &mut Shard, seen: &mut Vec<u64>, upto: u64) -> Vec<ShardEvent> {
    let mut others = Vec::new();
    while seen.last().copied().unwrap_or(0) < upto {
        match next(shard).await {
            ShardEvent::Dispatch { seq, .. } => seen.push(seq),
            event => others.push(event),
        }
    }
    let expected: Vec<u64> = (1..=upto).collect();
    assert_eq!(
        *seen, expected,
        "every event the simulator sent, once, in order"
    );
    assert_eq!(sent(sim), upto, "and it sent no other");
    others
}

#[tokio::test(start_paused = true)]
async fn a_wrong_accept_key_is_refused_and_nothing_is_sent_to_that_server() {
    let sim = builder().wrong_accept_key(true).start().await.unwrap();
    let config = config(&sim, 0, 1, Compression::ZlibStream);
    // It tries again (the server may get better), each time after the
    // backoff's next delay and never sooner. The paused clock can jump
    // ahead while a handshake is on the wire, which makes a gap longer and
    // the count in a given wait smaller, but never a gap shorter.
    let wait = Duration::from_millis(500);
    let mut backoff = config.backoff();
    let shard = Shard::start(config, Arc::new(Unqueued));
    tokio::time::sleep(wait).await;
    let observations = sim.observations();
    let tries: Vec<_> = observations.connections.iter().map(|c| c.at).collect();
    assert!(
        tries.len() > 2,
        "a backoff of 10 ms to 100 ms allows a handful in {wait:?}"
    );
    for pair in tries.windows(2) {
        let delay = backoff.next_delay();
        let gap = pair[1] - pair[0];
        assert!(
            gap >= delay,
            "tried again after {gap:?}, before the backoff's {delay:?}"
        );
    }
    assert!(observations.identifies.is_empty(), "no Identify, no token");
    assert!(observations.resumes.is_empty());
    assert!(observations.heartbeats.is_empty());
    assert_ne!(shard.status(), ShardState::Active);
}

#[tokio::test(start_paused = true)]
async fn payloads_in_any_field_order_pretty_printed_and_escaped_read_as_discords() {
    for order in [FieldOrder::DataFirst, FieldOrder::DataInside] {
        for compression in [Compression::ZlibStream, Compression::None] {
            let mut style = PayloadStyle::default();
            style.order = order;
            style.pretty = true;
            style.escaped_names = true;
            let sim = builder().payload_style(style).start().await.unwrap();
            let mut shard = start_with(&sim, compression, |config| {
                config.typed_events = EventFilter::all();
            });
            let mut typed = 0;
            let mut seqs = Vec::new();
            until(&mut shard, |event| {
                if let ShardEvent::Dispatch {
                    seq,
                    event_type,
                    event,
                    ..
                } = event
                {
                    assert!(!event_type.contains('\\'), "{event_type}");
                    typed += usize::from(event.is_some());
                    seqs.push(*seq);
                }
                matches!(event, ShardEvent::Dispatch { seq: 3, .. })
            })
            .await;
            sim.inject(Some(0), Fault::Burst(10));
            until(&mut shard, |event| {
                if let ShardEvent::Dispatch { seq, event, .. } = event {
                    typed += usize::from(event.is_some());
                    seqs.push(*seq);
                }
                matches!(event, ShardEvent::Dispatch { seq: 13, .. })
            })
            .await;
            assert_eq!(
                seqs,
                (1..=13).collect::<Vec<u64>>(),
                "{order:?} {compression}"
            );
            assert_eq!(typed, 13, "{order:?} {compression}: every dispatch, typed");
            // A heartbeat ACK written that way is read as one too.
            shard.heartbeat();
            let latency = loop {
                if let ShardEvent::Heartbeat { latency } = next(&mut shard).await {
                    break latency;
                }
            };
            assert!(latency < Duration::from_secs(5));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn json_in_binary_frames_without_compression_is_read() {
    let sim = builder().binary_json(true).start().await.unwrap();
    let mut shard = start_with(&sim, Compression::None, |_| {});
    let mut seqs = Vec::new();
    deliver(&sim, &mut shard, &mut seqs, 3).await;
    sim.inject(Some(0), Fault::Burst(20));
    deliver(&sim, &mut shard, &mut seqs, 23).await;
}

#[tokio::test(start_paused = true)]
async fn a_dispatch_that_can_never_be_read_is_retried_by_resuming_then_stops_the_shard() {
    let sim = builder().start().await.unwrap();
    let mut shard = start_with(&sim, Compression::ZlibStream, |_| {});
    let mut seqs = Vec::new();
    deliver(&sim, &mut shard, &mut seqs, 3).await;
    sim.inject(Some(0), Fault::Burst(5));
    deliver(&sim, &mut shard, &mut seqs, 8).await;
    // Balanced, 100,000 deep: in Discord's order `d` is taken lazily, so it
    // comes through raw, and nothing overflows.
    let deep = 100_000;
    let balanced = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    sim.inject(
        Some(0),
        Fault::RawDispatch {
            event_type: "MESSAGE_CREATE".into(),
            d: balanced,
        },
    );
    deliver(&sim, &mut shard, &mut seqs, 9).await;
    // Unclosed: no payload at all. The simulator replays it on every
    // resume, so after UNDECODABLE_LIMIT tries the shard stops, saying why.
    sim.inject(
        Some(0),
        Fault::RawDispatch {
            event_type: "MESSAGE_CREATE".into(),
            d: "[".repeat(deep),
        },
    );
    let fatal = loop {
        match next(&mut shard).await {
            ShardEvent::Fatal(error) => break error,
            ShardEvent::Dispatch { seq, .. } => seqs.push(seq),
            _ => {}
        }
    };
    assert!(matches!(fatal, FatalError::Undecodable(_)), "{fatal}");
    assert_eq!(seqs, (1..=9).collect::<Vec<u64>>(), "nothing else was lost");
    let observations = sim.observations();
    assert_eq!(observations.identifies.len(), 1);
    // Four resumes from seq 9, each replaying the same bad bytes first
    // (and the RESUMEDs of the resumes before, which came after them).
    let resumes: Vec<_> = observations
        .resumes
        .iter()
        .map(|resume| (resume.seq, resume.outcome))
        .collect();
    let expected: Vec<_> = (1..=4)
        .map(|replayed| (9, ResumeOutcome::Resumed { replayed }))
        .collect();
    assert_eq!(resumes, expected);
    // The session is kept: a process that can read the event resumes it.
    assert_eq!(shard.session().map(|s| s.seq), Some(9));
}

#[tokio::test(start_paused = true)]
async fn a_dead_resume_url_resumes_on_the_gateway_url_and_loses_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    for resume_url in [dead.as_str(), "not a url", "ws://[::zz]:99999/%zz"] {
        let sim = builder()
            .resume_url_override(resume_url)
            .start()
            .await
            .unwrap();
        let mut shard = start_with(&sim, Compression::ZlibStream, |_| {});
        let mut seqs = Vec::new();
        deliver(&sim, &mut shard, &mut seqs, 3).await;
        sim.inject(Some(0), Fault::Burst(10));
        sim.inject(Some(0), Fault::Reconnect);
        // The burst, then RESUMED (a dispatch of its own).
        let others = deliver(&sim, &mut shard, &mut seqs, 14).await;
        assert!(others.iter().any(is_resumed), "{resume_url}: {others:?}");
        let observations = sim.observations();
        let resume = observations.resumes.last().expect("a resume");
        assert_eq!(resume.listener, Listener::Main, "{resume_url}");
        assert!(matches!(resume.outcome, ResumeOutcome::Resumed { .. }));
        assert_eq!(
            observations.identifies.len(),
            1,
            "{resume_url}: no identify"
        );
        sim.inject(Some(0), Fault::Burst(5));
        deliver(&sim, &mut shard, &mut seqs, 19).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_close_from_the_server_is_answered_with_a_close() {
    let sim = builder().start().await.unwrap();
    let mut shard = start_with(&sim, Compression::ZlibStream, |_| {});
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::Close(4000));
    until(&mut shard, is_resumed).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let closes = sim.observations().closes;
        let close = closes.first().expect("the close");
        assert_eq!((close.by, close.code), (ClosedBy::Server, Some(4000)));
        if close.answered {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
