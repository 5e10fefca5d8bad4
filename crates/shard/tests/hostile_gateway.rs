//! The tokio driver against a gateway written by hand that breaks every
//! rule it can at every step: the handshake, frame headers and lengths,
//! fragmentation, control frames, decompression, JSON, UTF-8 and each
//! timeout. Every case ends with the shard connected again and each event
//! delivered exactly once (what a resume can save, it saves), with no
//! busy loop: retries wait for the backoff.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::raw_gateway::{ClientFrame, Conn, RawGateway, STEP};
use serde_json::json;
use shardwire_codec::{Compression, Token};
use shardwire_corpus::{server_frame, zlib_payload};
use shardwire_shard::{Shard, ShardConfig, ShardEvent, ShardState, Unqueued};
use twilight_model::gateway::Intents;

fn config(url: &str) -> ShardConfig {
    let mut config = ShardConfig::new(Token::new("raw-token"), Intents::GUILDS, 0, 1, url);
    config.compression = Compression::None;
    config.backoff_initial = Duration::from_millis(10);
    config.backoff_cap = Duration::from_millis(100);
    config.connect_timeout = Duration::from_millis(500);
    config.hello_timeout = Duration::from_millis(500);
    config.ready_timeout = Duration::from_millis(500);
    config.max_payload_bytes = 1 << 20;
    config
}

/// Takes the shard's events until dispatch `last`; returns the dispatch
/// seqs seen.
async fn dispatches_until(shard: &mut Shard, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        match tokio::time::timeout(STEP, shard.next_event()).await {
            Ok(Some(ShardEvent::Dispatch { seq, .. })) => seqs.push(seq),
            Ok(Some(ShardEvent::Fatal(error))) => panic!("fatal: {error}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the shard ended"),
            Err(_) => panic!("dispatch {last} never came; seen {seqs:?}"),
        }
    }
    seqs
}

/// A shard on a fresh gateway, with a session that has delivered 1 and 2.
async fn session() -> (RawGateway, Shard, Conn) {
    let gateway = RawGateway::bind().await;
    let mut shard = Shard::start(config(gateway.url()), Arc::new(Unqueued));
    let mut conn = gateway.accept().await;
    conn.start_session(gateway.url(), 2).await;
    assert_eq!(dispatches_until(&mut shard, 2).await, [1, 2]);
    (gateway, shard, conn)
}

/// After `bytes`, the shard must close the connection (with `close`, or by
/// dropping it), resume from 2 on a new one, and get 3 and 4 once each.
async fn resumes_after(what: &str, bytes: &[u8], close: Option<u16>) {
    let (gateway, mut shard, mut conn) = session().await;
    conn.write(bytes).await;
    assert_eq!(conn.closed().await, close, "{what}: the close");
    let mut conn = gateway.accept().await;
    let resume = conn.resume_session().await;
    assert_eq!(resume["d"]["seq"], 2, "{what}: resumes from the last event");
    conn.dispatch(3, "MESSAGE_CREATE", json!({"id": "3"})).await;
    conn.dispatch(4, "RESUMED", json!({})).await;
    assert_eq!(dispatches_until(&mut shard, 4).await, [3, 4], "{what}");
    assert_eq!(shard.status(), ShardState::Active, "{what}");
}

/// After `bytes`, the connection goes on: dispatch 3 arrives on it.
async fn carries_on_after(what: &str, bytes: &[u8]) -> Conn {
    let (gateway, mut shard, mut conn) = session().await;
    conn.write(bytes).await;
    conn.dispatch(3, "MESSAGE_CREATE", json!({"id": "3"})).await;
    assert_eq!(dispatches_until(&mut shard, 3).await, [3], "{what}");
    assert!(
        !gateway.accept_within(Duration::from_millis(100)).await,
        "{what}: no reconnect"
    );
    conn
}

fn header(first: u8, length: u64) -> Vec<u8> {
    let mut bytes = vec![first, 127];
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes
}

#[tokio::test]
async fn frame_headers_that_break_rfc_6455_end_the_connection_with_1002_and_resume() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved bits", vec![0xc1, 0x02, b'{', b'}']),
        (
            "a masked server frame",
            vec![0x81, 0x82, 1, 2, 3, 4, b'{' ^ 1, b'}' ^ 2],
        ),
        ("an unknown opcode", vec![0x83, 0x00]),
        (
            "a ping over 125 bytes",
            [vec![0x89, 126, 0, 126], vec![0; 126]].concat(),
        ),
        ("a fragmented ping", vec![0x09, 0x00]),
        ("a close of one byte", vec![0x88, 0x01, 0x03]),
        ("a continuation of nothing", vec![0x80, 0x00]),
        (
            "a message inside a message",
            [server_frame(false, 1, b"{"), server_frame(true, 1, b"{}")].concat(),
        ),
    ];
    for (what, bytes) in cases {
        resumes_after(what, &bytes, Some(1002)).await;
    }
}

#[tokio::test]
async fn a_frame_length_past_the_limit_is_refused_before_any_memory_is_taken() {
    for (what, length) in [
        ("2^62 bytes", 1u64 << 62),
        ("2^64 - 1 bytes", u64::MAX),
        ("just past max_payload_bytes", (1 << 20) + 1),
    ] {
        resumes_after(what, &header(0x82, length), Some(1009)).await;
    }
}

#[tokio::test]
async fn messages_that_cannot_be_decoded_are_resumed_so_the_gateway_sends_them_again() {
    let deep = format!(
        r#"{{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{}}}"#,
        "[".repeat(100_000)
    );
    let bomb = zlib_payload(&vec![b' '; 8 << 20]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8",
            server_frame(true, 1, b"{\"op\":0,\"d\":\"\xff\"}"),
        ),
        ("not JSON", server_frame(true, 1, b"hello")),
        ("100,000 unclosed [", server_frame(true, 1, deep.as_bytes())),
        (
            "an 8 MiB zlib bomb past a 1 MiB limit",
            server_frame(true, 2, &bomb),
        ),
        (
            "a corrupt zlib payload",
            server_frame(true, 2, &[0x78, 0x9c, 0xff, 0xff]),
        ),
    ];
    for (what, bytes) in cases {
        resumes_after(what, &bytes, Some(4000)).await;
    }
}

#[tokio::test]
async fn fragments_pings_and_pongs_in_any_number_are_taken_in_stride() {
    // A dispatch in 100,000 frames, most of them empty.
    let payload = br#"{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{"id":"3"}}"#;
    let mut bytes = server_frame(false, 1, &payload[..10]);
    for _ in 0..100_000 {
        bytes.extend_from_slice(&server_frame(false, 0, b""));
    }
    bytes.extend_from_slice(&server_frame(true, 0, &payload[10..]));
    let (gateway, mut shard, mut conn) = session().await;
    conn.write(&bytes).await;
    assert_eq!(dispatches_until(&mut shard, 3).await, [3]);
    assert!(!gateway.accept_within(Duration::from_millis(100)).await);
    // 2,000 pings (between fragments, too), each answered with its bytes.
    let mut bytes = Vec::new();
    for n in 0..2_000u32 {
        bytes.extend_from_slice(&server_frame(true, 9, &n.to_be_bytes()));
        bytes.extend_from_slice(&server_frame(true, 10, b"unasked pong"));
    }
    let mut conn = carries_on_after("2,000 pings and pongs", &bytes).await;
    for n in 0..2_000u32 {
        match conn.read_frame().await {
            ClientFrame::Pong(payload) => assert_eq!(payload, n.to_be_bytes()),
            ClientFrame::Message(message) if message["op"] == 1 => {}
            other => panic!("ping {n}: {other:?}"),
        }
    }
    assert_eq!(shard.status(), ShardState::Active);
}

/// What a broken gateway answers to an upgrade request.
type Answer = fn(&str) -> Vec<u8>;

#[tokio::test]
async fn every_broken_handshake_is_refused_and_retried_with_a_backoff() {
    let cases: Vec<(&str, Answer)> = vec![
        ("a wrong accept key", |_| {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec()
        }),
        ("no accept key", |_| {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec()
        }),
        ("no Upgrade header", |request| {
            format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    common::raw_gateway::accept_key(request)
                )
                .into_bytes()
        }),
        ("an extension not asked for", |request| {
            format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                    common::raw_gateway::accept_key(request)
                )
                .into_bytes()
        }),
        ("200 OK", |_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec()
        }),
        ("garbage", |_| vec![0xff; 4096]),
        ("a 1 MiB header", |_| {
            let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nX-Big: ".to_vec();
            answer.extend(std::iter::repeat_n(b'a', 1 << 20));
            answer.extend_from_slice(b"\r\n\r\n");
            answer
        }),
        ("nothing, then a close", |_| Vec::new()),
    ];
    for (what, answer) in cases {
        let gateway = RawGateway::bind().await;
        let mut shard = Shard::start(config(gateway.url()), Arc::new(Unqueued));
        let mut conn = gateway.accept().await;
        assert!(
            conn.request
                .starts_with("GET /?v=10&encoding=json HTTP/1.1"),
            "{}",
            conn.request
        );
        conn.write(&answer(&conn.request)).await;
        // Nothing is sent to such a server, the token least of all.
        assert_eq!(conn.read_frame().await, ClientFrame::Gone, "{what}");
        drop(conn);
        let mut conn = gateway.accept().await;
        let identify = conn.start_session(gateway.url(), 2).await;
        assert_eq!(identify["d"]["token"], "raw-token", "{what}");
        assert_eq!(dispatches_until(&mut shard, 2).await, [1, 2], "{what}");
    }
}

#[tokio::test]
async fn a_gateway_silent_at_any_step_is_timed_out_and_tried_again() {
    // The handshake never answered: the connect timeout.
    let gateway = RawGateway::bind().await;
    let mut shard = Shard::start(config(gateway.url()), Arc::new(Unqueued));
    let silent = gateway.accept().await;
    let mut conn = gateway.accept().await;
    drop(silent);
    conn.start_session(gateway.url(), 2).await;
    assert_eq!(dispatches_until(&mut shard, 2).await, [1, 2]);

    // No Hello, then no READY: closed resumably, and identified again.
    for step in ["Hello", "READY"] {
        let gateway = RawGateway::bind().await;
        let mut shard = Shard::start(config(gateway.url()), Arc::new(Unqueued));
        let mut conn = gateway.accept().await;
        conn.accept_upgrade().await;
        if step == "READY" {
            conn.hello(41_250).await;
            conn.expect_op(2).await;
        }
        assert_eq!(conn.closed().await, Some(4000), "no {step}");
        let mut conn = gateway.accept().await;
        conn.start_session(gateway.url(), 2).await;
        assert_eq!(dispatches_until(&mut shard, 2).await, [1, 2], "no {step}");
    }

    // Heartbeats never acknowledged: a zombie, closed and resumed.
    let gateway = RawGateway::bind().await;
    let mut shard = Shard::start(config(gateway.url()), Arc::new(Unqueued));
    let mut conn = gateway.accept().await;
    conn.accept_upgrade().await;
    conn.hello(100).await;
    conn.expect_op(2).await;
    conn.dispatch(
        1,
        "READY",
        json!({"session_id": "s1", "resume_gateway_url": gateway.url(), "v": 10}),
    )
    .await;
    assert_eq!(dispatches_until(&mut shard, 1).await, [1]);
    assert_eq!(conn.closed().await, Some(4000), "a zombie");
    let mut conn = gateway.accept().await;
    assert_eq!(conn.resume_session().await["d"]["seq"], 1);
}

#[tokio::test]
async fn a_close_from_the_gateway_is_echoed_then_resumed() {
    let (gateway, mut shard, mut conn) = session().await;
    let mut close = vec![0x88, 0x02];
    close.extend_from_slice(&4000u16.to_be_bytes());
    conn.write(&close).await;
    assert_eq!(conn.closed().await, Some(4000), "its code, echoed");
    let mut conn = gateway.accept().await;
    assert_eq!(conn.resume_session().await["d"]["seq"], 2);
    conn.dispatch(3, "RESUMED", json!({})).await;
    assert_eq!(dispatches_until(&mut shard, 3).await, [3]);
}
