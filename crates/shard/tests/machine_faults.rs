//! The sans-IO shard against a gateway that misbehaves: unusable URLs,
//! messages that cannot be decoded, broken frames, JSON that is valid but
//! not written as Discord writes it. Each ends with the shard resuming (so
//! nothing a resume can replay is lost) or stopping with a fatal error that
//! names the fix; none spins. On a virtual clock: none sleeps.

mod common;

use std::time::Duration;

use common::machine::{GATEWAY, Harness, RESUME, config, is_resume};
use serde_json::json;
use shardwire_codec::{EventFilter, MessageKind};
use shardwire_corpus::EventGenerator;
use shardwire_shard::{
    FatalError, Order, RESUMABLE_CLOSE, ShardEvent, ShardState, UNDECODABLE_LIMIT,
};
use twilight_model::gateway::event::{Event, EventType};

/// A started shard that has seen READY (seq 1) and one MESSAGE_CREATE
/// (seq 2), its events taken.
fn active() -> Harness {
    let mut h = Harness::new(config());
    h.start();
    h.dispatch("MESSAGE_CREATE", json!({"id": "1"}));
    h.events();
    h
}

/// Runs the reconnect timer after a close and returns the next URL, and
/// how long the shard waited before it.
fn reconnect_after_close(h: &mut Harness, code: Option<u16>) -> (String, Duration) {
    h.shard.handle_close(h.now, code);
    assert_eq!(h.shard.state(), ShardState::Reconnecting);
    let at = h.shard.poll_timeout().expect("a reconnect deadline");
    let waited = at.saturating_duration_since(h.now);
    h.now = h.now.max(at);
    h.run_timers();
    (h.expect_connect(), waited)
}

/// Opens the next connection and expects it to resume from the last
/// dispatch the server sent.
fn expect_resume(h: &mut Harness) {
    let seq = h.seq;
    let (orders, frames) = h.reopen();
    assert!(orders.is_empty(), "{orders:?}");
    assert!(
        frames.iter().any(|frame| is_resume(frame, seq)),
        "expected a Resume from {seq}: {frames:?}"
    );
}

#[test]
fn a_resume_url_that_cannot_be_reached_resumes_on_the_gateway_url() {
    let mut h = active();
    assert!(reconnect_after_close(&mut h, None).0.starts_with(RESUME));
    // Connecting to the resume URL fails: the same session resumes on the
    // gateway URL, which Discord accepts resumes on.
    let (url, _) = reconnect_after_close(&mut h, None);
    assert!(url.starts_with(GATEWAY), "{url}");
    expect_resume(&mut h);
    h.dispatch("RESUMED", json!({}));
    assert_eq!(h.shard.state(), ShardState::Active);
    h.events();
    assert_eq!(h.shard.session().map(|s| s.seq), Some(3));
    // Until a READY names another, resumes stay on the gateway URL.
    let (url, _) = reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
    assert!(url.starts_with(GATEWAY), "{url}");
    // Connecting to the gateway URL failing too keeps the session: the
    // network may be down, and the session outlives a short outage.
    let (url, _) = reconnect_after_close(&mut h, None);
    assert!(url.starts_with(GATEWAY), "{url}");
    expect_resume(&mut h);
}

#[test]
fn only_the_gateway_refusing_the_resume_starts_a_new_session() {
    let mut h = active();
    reconnect_after_close(&mut h, None);
    let (url, _) = reconnect_after_close(&mut h, None);
    assert!(url.starts_with(GATEWAY));
    expect_resume(&mut h);
    h.server(&json!({"op": 9, "d": false}));
    h.expect_own_close();
    reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
    let (orders, _) = h.reopen();
    assert_eq!(orders, vec![Order::WaitIdentifyTurn], "identifies");
}

#[test]
fn a_resume_url_that_is_not_a_url_resumes_on_the_gateway_url() {
    for resume_url in [
        "ws://[::zz]:99999/%zz",
        "not a url",
        "",
        "https://resume.example",
    ] {
        let mut h = Harness::new(config());
        h.shard.connect(h.now);
        h.expect_connect();
        h.shard.handle_connected(h.now);
        h.hello();
        h.orders();
        h.shard.handle_identify_turn(h.now);
        h.dispatch(
            "READY",
            json!({"session_id": "s1", "resume_gateway_url": resume_url, "v": 10}),
        );
        assert_eq!(h.shard.state(), ShardState::Active, "{resume_url:?}");
        h.events();
        let session = h.shard.session().cloned().expect("a session");
        assert_eq!(session.resume_url, GATEWAY, "{resume_url:?}");
        let (url, _) = reconnect_after_close(&mut h, None);
        assert!(url.starts_with(GATEWAY), "{url}");
        expect_resume(&mut h);
    }
}

#[test]
fn a_gateway_url_that_can_never_work_stops_the_shard_at_once() {
    for url in [
        "ws://[::zz]:99999/%zz",
        "https://gateway.example",
        "gateway",
    ] {
        let mut config = config();
        config.gateway_url = url.to_owned();
        let mut h = Harness::new(config);
        h.shard.connect(h.now);
        assert_eq!(h.orders(), vec![], "{url}: no connection is tried");
        assert_eq!(h.shard.state(), ShardState::FatallyClosed);
        assert_eq!(h.shard.poll_timeout(), None, "{url}: no retry");
        let fatal = h
            .events()
            .into_iter()
            .find_map(|event| match event {
                ShardEvent::Fatal(error) => Some(error),
                _ => None,
            })
            .expect("a fatal event");
        assert!(matches!(fatal, FatalError::InvalidGatewayUrl(_)), "{fatal}");
        let line = fatal.to_string();
        assert!(
            line.contains(url) && line.contains("/gateway/bot"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }
    // What http::Uri reads, the shard connects to.
    for url in [
        "WSS://Gateway.Example",
        "ws://[::1]:9000",
        "ws://127.0.0.1:1/",
    ] {
        let mut config = config();
        config.gateway_url = url.to_owned();
        let mut h = Harness::new(config);
        h.shard.connect(h.now);
        assert!(
            h.expect_connect().starts_with(url.trim_end_matches('/')),
            "{url}"
        );
    }
}

/// Messages no decoder can read as a gateway payload, on an uncompressed
/// connection: each might have been a dispatch.
fn undecodable() -> Vec<(&'static str, Vec<u8>, MessageKind)> {
    vec![
        (
            "unfinished JSON",
            br#"{"op":0,"d":"#.to_vec(),
            MessageKind::Text,
        ),
        (
            "not UTF-8",
            b"{\"op\":0,\"d\":\"\xff\"}".to_vec(),
            MessageKind::Text,
        ),
        (
            "no op",
            br#"{"t":"MESSAGE_CREATE","s":3}"#.to_vec(),
            MessageKind::Text,
        ),
        ("not an object", b"[]".to_vec(), MessageKind::Text),
        (
            "binary garbage",
            b"\x00\x01\x02".to_vec(),
            MessageKind::Binary,
        ),
        (
            "100,000 unclosed [",
            format!(
                r#"{{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{}}}"#,
                "[".repeat(100_000)
            )
            .into_bytes(),
            MessageKind::Text,
        ),
        (
            "nested past the limit",
            format!(
                r#"{{"op":0,"d":{}{},"s":3,"t":"X"}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )
            .into_bytes(),
            MessageKind::Text,
        ),
    ]
}

#[test]
fn a_message_that_cannot_be_decoded_makes_the_shard_resume_after_a_backoff() {
    for (what, message, kind) in undecodable() {
        let mut h = active();
        h.shard.handle_message(h.now, &message, kind);
        h.expect_own_close();
        // Even after an active connection, the next one waits: a gateway
        // that breaks every connection is not retried flat out.
        let (url, waited) = reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
        assert!(waited >= Duration::from_millis(500), "{what}: {waited:?}");
        assert!(url.starts_with(RESUME), "{what}");
        expect_resume(&mut h);
        assert!(
            !h.events()
                .iter()
                .any(|event| matches!(event, ShardEvent::Dispatch { seq: 3, .. })),
            "{what}: nothing came of it"
        );
    }
}

#[test]
fn a_message_over_the_payload_limit_is_refused_and_resumed() {
    let mut config = config();
    config.max_payload_bytes = 1024;
    let mut h = Harness::new(config);
    h.start();
    let big = format!(
        r#"{{"t":"MESSAGE_CREATE","s":2,"op":0,"d":{{"content":"{}"}}}}"#,
        "x".repeat(2000)
    );
    h.shard
        .handle_message(h.now, big.as_bytes(), MessageKind::Text);
    h.expect_own_close();
    reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
    expect_resume(&mut h);
}

#[test]
fn the_same_undecodable_message_again_and_again_stops_the_shard_with_the_fix() {
    let mut h = active();
    let bad = br#"{"op":0,"d":"#;
    for round in 1..=UNDECODABLE_LIMIT {
        h.shard.handle_message(h.now, bad, MessageKind::Text);
        h.expect_own_close();
        if round == UNDECODABLE_LIMIT {
            break;
        }
        reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
        expect_resume(&mut h);
        // RESUMED is not progress: the replay starts with the bad message.
        h.dispatch("RESUMED", json!({}));
    }
    h.events();
    h.shard.handle_close(h.now, Some(RESUMABLE_CLOSE));
    assert_eq!(h.shard.state(), ShardState::FatallyClosed);
    assert_eq!(h.shard.poll_timeout(), None, "no reconnect");
    let events = h.events();
    let Some(ShardEvent::Fatal(fatal)) = events.last() else {
        panic!("no fatal event: {events:?}");
    };
    assert!(matches!(fatal, FatalError::Undecodable(_)), "{fatal}");
    let line = fatal.to_string();
    assert!(
        line.contains("max_payload_bytes") && line.contains("proxy"),
        "{line}"
    );
    // The session stays, for a process that can read it to resume.
    assert_eq!(h.shard.session().map(|s| s.seq), Some(h.seq));
}

#[test]
fn a_dispatch_read_between_undecodable_messages_starts_the_count_again() {
    let mut h = active();
    for round in 0..3 * UNDECODABLE_LIMIT {
        h.shard.handle_message(h.now, b"{", MessageKind::Text);
        h.expect_own_close();
        reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
        expect_resume(&mut h);
        h.dispatch("RESUMED", json!({}));
        h.dispatch("MESSAGE_CREATE", json!({"id": "2"}));
        assert_eq!(h.shard.state(), ShardState::Active, "round {round}");
    }
}

#[test]
fn a_broken_frame_ends_the_connection_and_counts_as_undecodable() {
    let mut h = active();
    for round in 1..=UNDECODABLE_LIMIT {
        h.shard
            .handle_protocol_error(h.now, "the server masked a frame");
        // The driver closed the connection already: no close order.
        assert_eq!(h.orders(), vec![]);
        if round == UNDECODABLE_LIMIT {
            break;
        }
        assert_eq!(h.shard.state(), ShardState::Reconnecting);
        let at = h.shard.poll_timeout().expect("a reconnect deadline");
        assert!(at > h.now, "round {round}: a backoff");
        h.now = at;
        h.run_timers();
        assert!(h.expect_connect().starts_with(RESUME));
        expect_resume(&mut h);
        h.dispatch("RESUMED", json!({}));
    }
    assert_eq!(h.shard.state(), ShardState::FatallyClosed);
    assert!(h.events().iter().any(|event| matches!(
        event,
        ShardEvent::Fatal(FatalError::Undecodable(detail)) if detail.contains("masked")
    )));
}

#[test]
fn data_taken_lazily_comes_out_raw_however_deep_and_only_its_typing_fails() {
    let mut config = config();
    config.typed_events = EventFilter::all();
    let mut h = Harness::new(config);
    h.start();
    h.events();
    let deep = 100_000;
    let json = format!(
        r#"{{"t":"MESSAGE_CREATE","s":2,"op":0,"d":{}{}}}"#,
        "[".repeat(deep),
        "]".repeat(deep)
    );
    h.shard
        .handle_message(h.now, json.as_bytes(), MessageKind::Text);
    let events = h.events();
    assert!(matches!(
        events.last(),
        Some(ShardEvent::Dispatch { seq: 2, event: None, json: text, .. }) if text.len() == json.len()
    ));
    assert_eq!(h.shard.state(), ShardState::Active);
}

#[test]
fn json_in_a_binary_frame_without_compression_is_a_dispatch_like_any() {
    let mut h = active();
    let json = br#"{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{"id":"3"}}"#;
    h.shard.handle_message(h.now, json, MessageKind::Binary);
    assert!(h.events().iter().any(|event| matches!(
        event,
        ShardEvent::Dispatch { seq: 3, json: text, .. } if text.as_bytes() == json
    )));
    assert_eq!(h.shard.state(), ShardState::Active);
}

#[test]
fn escaped_names_pretty_printing_and_any_field_order_read_as_discords() {
    let mut config = config();
    config.typed_events = EventFilter::only([EventType::MessageCreate]);
    let mut h = Harness::new(config);
    h.start();
    h.events();
    let d = EventGenerator::new(9, 1).message_create();
    let pretty = serde_json::to_string_pretty(&d)
        .unwrap()
        .replace('\n', "\r\n\t");
    let message = format!(
        "{{\r\n\t\"\\u0064\" :\t{pretty},\r\n\t\"\\u006f\\u0070\": 0, \"\\u0073\":2,\n\"\\u0074\":\"MESSAGE\\u005fCREATE\"\r\n}}\r\n"
    );
    h.shard
        .handle_message(h.now, message.as_bytes(), MessageKind::Text);
    let events = h.events();
    let Some(ShardEvent::Dispatch {
        seq,
        event_type,
        event,
        ..
    }) = events.last()
    else {
        panic!("no dispatch: {events:?}");
    };
    assert_eq!((*seq, event_type.as_ref()), (2, "MESSAGE_CREATE"));
    let Some(Event::MessageCreate(message)) = event.as_deref() else {
        panic!("not typed: {event:?}");
    };
    assert_eq!(message.content, d["content"].as_str().unwrap());
    assert_eq!(h.shard.session().map(|s| s.seq), Some(2));
}

#[test]
fn the_backoff_after_a_broken_connection_does_not_outlive_it() {
    let mut h = Harness::new(config());
    h.shard.connect(h.now);
    h.expect_connect();
    h.shard.handle_connected(h.now);
    // The Hello itself cannot be decoded: closed, and retried after a wait.
    h.shard.handle_message(h.now, b"{", MessageKind::Text);
    h.expect_own_close();
    let (_, waited) = reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
    assert!(waited > Duration::ZERO);
    // A good session later: its plain close reconnects at once, as any
    // active connection's does.
    h.shard.handle_connected(h.now);
    h.hello();
    h.orders();
    h.shard.handle_identify_turn(h.now);
    h.dispatch(
        "READY",
        json!({"session_id": "s1", "resume_gateway_url": RESUME, "v": 10}),
    );
    assert_eq!(h.shard.state(), ShardState::Active);
    let (_, waited) = reconnect_after_close(&mut h, Some(RESUMABLE_CLOSE));
    assert_eq!(waited, Duration::ZERO);
}
