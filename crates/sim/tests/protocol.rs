//! The simulator against a raw WebSocket client: sessions, compression,
//! enforcement, commands, faults and bad input.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shardwire_codec::{Compression, Decoded, EventFilter, MessageKind, Payload};
use shardwire_sim::raw::{RawClient, Received, identify};
use shardwire_sim::{ClosedBy, Fault, Listener, Observations, ResumeOutcome, Sim, ViolationKind};
use tokio::net::TcpStream;

const TOKEN: &str = "sim-token";

async fn sim() -> Sim {
    Sim::builder()
        .shards(2)
        .guilds_per_shard(2)
        .start()
        .await
        .unwrap()
}

async fn get(url: &str, authorization: Option<&str>) -> (u16, Value) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let stream = TcpStream::connect(host).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .uri(format!("/{path}"))
        .header("host", host);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Polls the simulator's observations until `done` holds (at most 5 s);
/// returns them.
async fn observed(sim: &Sim, what: &str, done: impl Fn(&Observations) -> bool) -> Observations {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let observations = sim.observations();
        if done(&observations) {
            return observations;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never observed {what}: {observations:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Decodes a dispatch payload with twilight-model through the codec.
fn typed_ok(payload: &Value) {
    let text = payload.to_string();
    let scanned = Payload::scan(text.as_bytes()).unwrap();
    match scanned.decode(&EventFilter::all()) {
        Decoded::Event(_) => {}
        other => panic!("{:?} did not decode: {other:?}", payload["t"]),
    }
}

#[tokio::test(start_paused = true)]
async fn rest_gateway_bot_checks_the_token_and_reports_limits() {
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .remaining(900)
        .start()
        .await
        .unwrap();
    let url = format!("{}/gateway/bot", sim.api_url());
    assert_eq!(get(&url, None).await.0, 401);
    assert_eq!(get(&url, Some("Bot wrong")).await.0, 401);
    assert_eq!(
        get(&url, Some(TOKEN)).await.0,
        401,
        "the `Bot ` prefix is required"
    );
    let (status, body) = get(&url, Some(&format!("Bot {TOKEN}"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["url"], sim.gateway_url());
    assert_eq!(body["shards"], 4);
    assert_eq!(body["session_start_limit"]["max_concurrency"], 2);
    assert_eq!(body["session_start_limit"]["remaining"], 900);
    assert_eq!(body["session_start_limit"]["total"], 1000);
    let seen = sim.observations().gateway_bot_requests;
    assert_eq!(
        seen.iter()
            .map(|r| (r.authorized, r.status))
            .collect::<Vec<_>>(),
        vec![(false, 401), (false, 401), (false, 401), (true, 200)]
    );
}

#[tokio::test(start_paused = true)]
async fn hello_identify_ready_and_guild_creates_in_sequence() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    assert_eq!(client.hello().await, 41_250);
    client.identify(TOKEN, [1, 2], 1 | (1 << 9)).await;
    let ready = client.payload().await;
    assert_eq!(
        (
            ready["op"].as_u64(),
            ready["t"].as_str(),
            ready["s"].as_u64()
        ),
        (Some(0), Some("READY"), Some(1))
    );
    assert_eq!(ready["d"]["resume_gateway_url"], sim.resume_gateway_url());
    assert_eq!(ready["d"]["shard"], json!([1, 2]));
    typed_ok(&ready);
    let guilds = ready["d"]["guilds"].as_array().unwrap().clone();
    assert_eq!(guilds.len(), 2);
    for (index, guild) in guilds.iter().enumerate() {
        let create = client.payload().await;
        assert_eq!(create["t"], "GUILD_CREATE");
        assert_eq!(create["s"], 2 + index as u64);
        assert_eq!(create["d"]["id"], guild["id"]);
        let id: u64 = guild["id"].as_str().unwrap().parse().unwrap();
        assert_eq!((id >> 22) % 2, 1, "guild routes to its shard");
        typed_ok(&create);
    }
    let identify = &sim.observations().identifies[0];
    assert!(identify.accepted);
    // As Discord, the token is also taken with its `Bot ` prefix.
    let other = Sim::builder().start().await.unwrap();
    let mut prefixed = RawClient::connect(other.gateway_url(), Compression::None).await;
    prefixed.start(&format!("Bot {TOKEN}"), [0, 1]).await;
    assert!(other.violations().is_empty());
    assert_eq!((identify.shard, identify.intents), ([1, 2], 1 | (1 << 9)));
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_compression_delivers_the_same_payloads() {
    let mut first: Option<Vec<Value>> = None;
    for (compression, compress_flag) in [
        (Compression::ZlibStream, false),
        (Compression::ZstdStream, false),
        (Compression::None, true),
        (Compression::None, false),
    ] {
        let sim = sim().await;
        let mut client = RawClient::connect(sim.gateway_url(), compression).await;
        client.hello().await;
        client
            .send(&identify(TOKEN, [0, 2], 1, compress_flag))
            .await;
        let mut ready = client.until(0, Some("READY")).await;
        assert_eq!(ready["s"], 1, "{compression} compress={compress_flag}");
        // The one field that differs between simulators: its own address.
        assert_eq!(
            ready["d"]["resume_gateway_url"].take(),
            sim.resume_gateway_url()
        );
        sim.inject(Some(0), Fault::Burst(50));
        // READY, two GUILD_CREATEs and the burst: seqs 1 to 53, decoded.
        let mut payloads = vec![ready];
        while payloads.len() < 53 {
            payloads.push(client.until(0, None).await);
        }
        let seqs: Vec<u64> = payloads.iter().map(|p| p["s"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=53).collect::<Vec<u64>>(), "{compression}");
        assert_eq!(
            sim.observations().connections[0].compress.as_deref(),
            compression.query_value()
        );
        // The same seed makes the same events: each transport must decode
        // to exactly the payloads of the first.
        match &first {
            None => first = Some(payloads),
            Some(first) => {
                for (index, (a, b)) in first.iter().zip(&payloads).enumerate() {
                    assert_eq!(
                        a, b,
                        "{compression} compress={compress_flag}: payload {index} differs"
                    );
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn split_payloads_and_fragmented_frames_reassemble() {
    let sim = Sim::builder()
        .split_payloads(true)
        .fragment_frames(true)
        .seed(9)
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 1]).await;
    sim.inject(Some(0), Fault::Burst(300));
    let mut expected = 2;
    while expected < 304 {
        let payload = client.until(0, None).await;
        assert_eq!(payload["s"], expected, "every payload, in order");
        expected += 1;
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_acknowledged_and_recorded() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 2]).await;
    client.send(&json!({"op": 1, "d": 3})).await;
    client.until(11, None).await;
    client.send(&json!({"op": 1, "d": null})).await;
    client.until(11, None).await;
    let heartbeats = sim.observations().heartbeats;
    let seen: Vec<_> = heartbeats.iter().map(|h| (h.shard, h.seq)).collect();
    assert_eq!(seen, vec![(Some(0), Some(3)), (Some(0), None)]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_heartbeating_is_closed_with_4009() {
    let sim = Sim::builder()
        .heartbeat_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 1]).await;
    assert_eq!(client.closed().await, Some(4009));
    assert!(
        sim.violations()
            .iter()
            .any(|v| v.kind == ViolationKind::MissedHeartbeat)
    );
}

/// Starts a session, receives `events` generated events, and drops.
async fn session_with_events(sim: &Sim, events: u64) -> (String, u64) {
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    let ready = client.start(TOKEN, [0, 1]).await;
    let session = ready["session_id"].as_str().unwrap().to_owned();
    sim.inject(Some(0), Fault::Burst(events));
    let last = 1 + sim.config().guilds_per_shard as u64 + events;
    while client.until(0, None).await["s"].as_u64() != Some(last) {}
    drop(client);
    (session, last)
}

#[tokio::test(start_paused = true)]
async fn resume_on_the_resume_url_replays_after_seq_then_sends_resumed() {
    let sim = Sim::builder().guilds_per_shard(1).start().await.unwrap();
    let (session, last) = session_with_events(&sim, 10).await;
    let mut client = RawClient::connect(sim.resume_gateway_url(), Compression::ZlibStream).await;
    client.hello().await;
    client
        .send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": 5}}))
        .await;
    for expected in 6..=last {
        assert_eq!(client.payload().await["s"], expected);
    }
    let resumed = client.payload().await;
    assert_eq!(
        (resumed["t"].as_str(), resumed["s"].as_u64()),
        (Some("RESUMED"), Some(last + 1))
    );
    let observations = sim.observations();
    let resume = &observations.resumes[0];
    assert_eq!(resume.listener, Listener::Resume);
    assert_eq!(
        resume.outcome,
        ResumeOutcome::Resumed { replayed: last - 5 }
    );
    assert_eq!(observations.identifies.len(), 1, "no new identify");
}

#[tokio::test(start_paused = true)]
async fn sessions_lists_each_live_session_with_its_last_seq() {
    let sim = Sim::builder().guilds_per_shard(1).start().await.unwrap();
    assert!(sim.sessions().is_empty());
    let (session, last) = session_with_events(&sim, 7).await;
    let sessions = sim.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (
            sessions[0].session_id.as_str(),
            sessions[0].shard,
            sessions[0].seq
        ),
        (session.as_str(), 0, last)
    );
}

#[tokio::test(start_paused = true)]
async fn resume_of_an_unknown_session_gets_invalid_session_false() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.resume_gateway_url(), Compression::None).await;
    client.hello().await;
    client
        .send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": "nope", "seq": 1}}))
        .await;
    assert_eq!(client.until(9, None).await["d"], false);
    assert_eq!(
        sim.observations().resumes[0].outcome,
        ResumeOutcome::InvalidSession
    );
}

#[tokio::test(start_paused = true)]
async fn resume_with_a_seq_ahead_of_the_server_is_closed_with_4007() {
    let sim = sim().await;
    let (session, last) = session_with_events(&sim, 2).await;
    let mut client = RawClient::connect(sim.resume_gateway_url(), Compression::None).await;
    client.hello().await;
    client
        .send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": last + 5}}))
        .await;
    assert_eq!(client.closed().await, Some(4007));
    // The session is gone: resuming it again is refused.
    let mut again = RawClient::connect(sim.resume_gateway_url(), Compression::None).await;
    again.hello().await;
    again
        .send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": last}}))
        .await;
    assert_eq!(again.until(9, None).await["d"], false);
}

async fn identify_closes_with(
    sim: &Sim,
    token: &str,
    shard: [u32; 2],
    intents: u64,
) -> Option<u16> {
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.hello().await;
    client.identify(token, shard, intents).await;
    client.closed().await
}

#[tokio::test(start_paused = true)]
async fn identify_is_validated_with_discords_close_codes() {
    let sim = Sim::builder()
        .shards(2)
        .disallowed_intents(1 << 8)
        .start()
        .await
        .unwrap();
    assert_eq!(
        identify_closes_with(&sim, "wrong", [0, 1], 1).await,
        Some(4004)
    );
    assert_eq!(
        identify_closes_with(&sim, TOKEN, [2, 2], 1).await,
        Some(4010)
    );
    assert_eq!(
        identify_closes_with(&sim, TOKEN, [0, 0], 1).await,
        Some(4010)
    );
    assert_eq!(
        identify_closes_with(&sim, TOKEN, [0, 1], 1 << 18).await,
        Some(4013)
    );
    assert_eq!(
        identify_closes_with(&sim, TOKEN, [0, 1], (1 << 8) | 1).await,
        Some(4014)
    );
    let kinds: Vec<ViolationKind> = sim.violations().into_iter().map(|v| v.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ViolationKind::AuthenticationFailed,
            ViolationKind::InvalidShard,
            ViolationKind::InvalidShard,
            ViolationKind::InvalidIntents { bits: 1 << 18 },
            ViolationKind::DisallowedIntents { bits: 1 << 8 },
        ]
    );
    assert!(sim.observations().identifies.iter().all(|i| !i.accepted));
}

#[tokio::test(start_paused = true)]
async fn identifying_faster_than_max_concurrency_gets_invalid_session() {
    let window = Duration::from_millis(400);
    let sim = Sim::builder()
        .shards(4)
        .max_concurrency(2)
        .identify_window(window)
        .start()
        .await
        .unwrap();
    // Shards 0 and 1 are in different buckets: both may start together.
    let mut a = RawClient::connect(sim.gateway_url(), Compression::None).await;
    let mut b = RawClient::connect(sim.gateway_url(), Compression::None).await;
    a.start(TOKEN, [0, 4]).await;
    b.start(TOKEN, [1, 4]).await;
    // Shard 2 shares shard 0's bucket: too soon.
    let mut c = RawClient::connect(sim.gateway_url(), Compression::None).await;
    c.hello().await;
    c.identify(TOKEN, [2, 4], 1).await;
    assert_eq!(c.until(9, None).await["d"], false);
    assert_eq!(
        sim.violations()[0].kind,
        ViolationKind::IdentifyTooFast { bucket: 0 }
    );
    // After the window, it may.
    tokio::time::sleep(window).await;
    c.identify(TOKEN, [2, 4], 1).await;
    c.until(0, Some("READY")).await;
    assert_eq!(sim.violations().len(), 1);
    assert_eq!(sim.remaining(), 997);
}

#[tokio::test]
async fn no_session_starts_left_is_refused() {
    let sim = Sim::builder().remaining(1).start().await.unwrap();
    let mut first = RawClient::connect(sim.gateway_url(), Compression::None).await;
    first.start(TOKEN, [0, 1]).await;
    drop(first);
    let sim_window = sim.config().identify_window;
    tokio::time::pause();
    tokio::time::advance(sim_window).await;
    tokio::time::resume();
    assert_eq!(
        identify_closes_with(&sim, TOKEN, [0, 1], 1).await,
        Some(4004)
    );
    assert!(
        sim.violations()
            .iter()
            .any(|v| v.kind == ViolationKind::SessionStartLimit)
    );
}

#[tokio::test]
async fn more_than_120_payloads_a_minute_is_closed_with_4008() {
    let sim = Sim::builder()
        .heartbeat_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 1]).await;
    for _ in 0..120 {
        client.send(&json!({"op": 3, "d": {"since": null, "activities": [], "status": "online", "afk": false}})).await;
    }
    client.send(&json!({"op": 1, "d": 1})).await;
    assert_eq!(client.closed().await, Some(4008));
    assert_eq!(sim.violations()[0].kind, ViolationKind::RateLimited);
}

#[tokio::test(start_paused = true)]
async fn bad_payloads_get_the_close_codes_discord_sends() {
    let sim = sim().await;
    let cases: Vec<(Vec<u8>, u16, ViolationKind)> = vec![
        (
            vec![b' '; 4097],
            4002,
            ViolationKind::PayloadTooLarge { size: 4097 },
        ),
        (b"not json".to_vec(), 4002, ViolationKind::DecodeError),
        (br#"{"d":1}"#.to_vec(), 4002, ViolationKind::DecodeError),
        (
            br#"{"op":99,"d":null}"#.to_vec(),
            4001,
            ViolationKind::UnknownOpcode { op: 99 },
        ),
        (
            br#"{"op":8,"d":{"guild_id":"1","query":"","limit":0}}"#.to_vec(),
            4003,
            ViolationKind::NotAuthenticated,
        ),
    ];
    for (bytes, code, kind) in cases {
        let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
        client.hello().await;
        client.send_raw(&bytes, MessageKind::Text).await;
        assert_eq!(
            client.closed().await,
            Some(code),
            "{}",
            String::from_utf8_lossy(&bytes[..20.min(bytes.len())])
        );
        assert_eq!(sim.violations().last().unwrap().kind, kind);
    }
    // Identify twice on one connection: 4005.
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 2]).await;
    client.identify(TOKEN, [0, 2], 1).await;
    assert_eq!(client.closed().await, Some(4005));
}

#[tokio::test(start_paused = true)]
async fn oversized_frames_are_refused_and_other_connections_keep_working() {
    let sim = sim().await;
    let mut healthy = RawClient::connect(sim.gateway_url(), Compression::None).await;
    healthy.start(TOKEN, [0, 2]).await;
    let mut big = RawClient::connect(sim.gateway_url(), Compression::None).await;
    big.hello().await;
    big.send_raw(&vec![b'x'; 200_000], MessageKind::Binary)
        .await;
    assert_eq!(big.closed().await, Some(4002));
    // A client that vanishes in the middle of a frame: a masked text frame
    // header announcing 4000 bytes, 10 of them, then nothing.
    let vanishing = RawClient::connect(sim.gateway_url(), Compression::None).await;
    let mut stream = vanishing.into_stream();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(&[0x81, 0xfe, 0x0f, 0xa0, 1, 2, 3, 4])
        .await
        .unwrap();
    stream.write_all(b"0123456789").await.unwrap();
    drop(stream);
    observed(&sim, "the dropped connection", |o| {
        o.closes.iter().any(|c| c.by == ClosedBy::Dropped)
    })
    .await;
    healthy.send(&json!({"op": 1, "d": 3})).await;
    healthy.until(11, None).await;
}

#[tokio::test(start_paused = true)]
async fn request_guild_members_is_answered_in_chunks_with_the_nonce() {
    let sim = Sim::builder()
        .members_per_guild(2500)
        .guilds_per_shard(1)
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    let ready = client.start(TOKEN, [0, 1]).await;
    let guild = ready["guilds"][0]["id"].clone();
    client.until(0, Some("GUILD_CREATE")).await;
    client
        .send(&json!({"op": 8, "d": {"guild_id": guild, "query": "", "limit": 0, "nonce": "abc"}}))
        .await;
    let mut members = 0;
    for index in 0..3 {
        let chunk = client.until(0, Some("GUILD_MEMBERS_CHUNK")).await;
        assert_eq!(
            (
                chunk["d"]["chunk_index"].as_u64(),
                chunk["d"]["chunk_count"].as_u64()
            ),
            (Some(index), Some(3))
        );
        assert_eq!(chunk["d"]["nonce"], "abc");
        members += chunk["d"]["members"].as_array().unwrap().len();
        typed_ok(&chunk);
    }
    assert_eq!(members, 2500);
    client
        .send(&json!({"op": 8, "d": {"guild_id": guild, "user_ids": ["5", "6"], "nonce": "n2"}}))
        .await;
    let chunk = client.until(0, Some("GUILD_MEMBERS_CHUNK")).await;
    let ids: Vec<&str> = chunk["d"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["5", "6"]);
}

#[tokio::test]
async fn voice_presence_soundboard_and_channel_info_commands_are_answered() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 2]).await;
    client.send(&json!({"op": 3, "d": {"since": null, "activities": [], "status": "idle", "afk": false}})).await;
    client.send(&json!({"op": 4, "d": {"guild_id": "7", "channel_id": "8", "self_mute": false, "self_deaf": true}})).await;
    let state = client.until(0, Some("VOICE_STATE_UPDATE")).await;
    assert_eq!(
        (
            state["d"]["channel_id"].as_str(),
            state["d"]["self_deaf"].as_bool()
        ),
        (Some("8"), Some(true))
    );
    typed_ok(&state);
    let server = client.until(0, Some("VOICE_SERVER_UPDATE")).await;
    typed_ok(&server);
    client
        .send(&json!({"op": 31, "d": {"guild_ids": ["7", "9"]}}))
        .await;
    assert_eq!(
        client.until(0, Some("SOUNDBOARD_SOUNDS")).await["d"]["guild_id"],
        "7"
    );
    assert_eq!(
        client.until(0, Some("SOUNDBOARD_SOUNDS")).await["d"]["guild_id"],
        "9"
    );
    client
        .send(&json!({"op": 43, "d": {"guild_id": "7", "fields": ["status"]}}))
        .await;
    assert_eq!(
        client.until(0, Some("CHANNEL_INFO")).await["d"]["guild_id"],
        "7"
    );
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn faults_reconnect_invalid_session_and_heartbeat_request() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 2]).await;
    assert_eq!(sim.inject(Some(0), Fault::Reconnect), 1);
    assert_eq!(client.until(7, None).await["d"], Value::Null);
    sim.inject(Some(0), Fault::InvalidSession { resumable: true });
    assert_eq!(client.until(9, None).await["d"], true);
    sim.inject(Some(0), Fault::RequestHeartbeat);
    client.until(1, None).await;
    sim.inject(Some(0), Fault::InvalidSession { resumable: false });
    assert_eq!(client.until(9, None).await["d"], false);
    assert_eq!(
        sim.inject(Some(1), Fault::Reconnect),
        0,
        "no connection of shard 1"
    );
}

#[tokio::test(start_paused = true)]
async fn fault_close_with_any_code() {
    for code in [4000, 4001, 4007, 4008, 4009, 1011] {
        let sim = sim().await;
        let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
        client.start(TOKEN, [0, 2]).await;
        sim.inject(Some(0), Fault::Close(code));
        assert_eq!(client.closed().await, Some(code));
        let close = sim.observations().closes[0].clone();
        assert_eq!((close.by, close.code), (ClosedBy::Server, Some(code)));
    }
}

#[tokio::test]
async fn fault_zombie_stops_acknowledging_heartbeats() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 2]).await;
    sim.inject(Some(0), Fault::Zombie);
    client.send(&json!({"op": 1, "d": 3})).await;
    // The simulator handles a connection's payloads in order: once the answer
    // to the next command arrives, the heartbeat has been handled.
    client
        .send(&json!({"op": 43, "d": {"guild_id": "7", "fields": ["status"]}}))
        .await;
    loop {
        let payload = client.payload().await;
        assert_ne!(
            payload["op"], 11,
            "a zombie connection acknowledged a heartbeat"
        );
        if payload["t"] == "CHANNEL_INFO" {
            break;
        }
    }
    assert_eq!(sim.observations().heartbeats.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn fault_corrupt_compressed_bytes_break_the_clients_codec() {
    for compression in [
        Compression::ZlibStream,
        Compression::ZstdStream,
        Compression::None,
    ] {
        let sim = sim().await;
        let mut client = RawClient::connect(sim.gateway_url(), compression).await;
        client.start(TOKEN, [0, 2]).await;
        sim.inject(Some(0), Fault::CorruptCompressed);
        loop {
            match client.recv().await {
                Received::Undecodable(_) => break,
                Received::Payload(_) => {}
                other => panic!("{compression}: {other:?}"),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fault_drop_tcp_ends_without_a_close_frame() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 2]).await;
    sim.inject(Some(0), Fault::DropTcp);
    loop {
        match client.recv().await {
            Received::Dropped => break,
            Received::Payload(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let observations = observed(&sim, "a close", |o| !o.closes.is_empty()).await;
    assert_eq!(observations.closes.len(), 1);
    assert_eq!(observations.closes[0].by, ClosedBy::Dropped);
}

#[tokio::test(start_paused = true)]
async fn fault_huge_guild_create_of_25000_members() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 2]).await;
    sim.inject(Some(0), Fault::HugeGuildCreate { members: 25_000 });
    loop {
        let payload = client.until(0, Some("GUILD_CREATE")).await;
        if payload["d"]["members"].as_array().unwrap().len() == 25_000 {
            typed_ok(&payload);
            break;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fault_read_slowly_delays_the_clients_frames() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.start(TOKEN, [0, 2]).await;
    sim.inject(Some(0), Fault::ReadSlowly(Duration::from_millis(150)));
    // The fault takes effect between two frames: probe with heartbeats until
    // one is read late, so the two below are both read slowly.
    let mut probes = 0;
    loop {
        probes += 1;
        assert!(probes <= 20, "the fault never slowed a frame");
        let sent = tokio::time::Instant::now();
        client.send(&json!({"op": 1, "d": 1})).await;
        client.until(11, None).await;
        if sent.elapsed() >= Duration::from_millis(150) {
            break;
        }
    }
    let started = tokio::time::Instant::now();
    client.send(&json!({"op": 1, "d": 1})).await;
    client.send(&json!({"op": 1, "d": 2})).await;
    client.until(11, None).await;
    client.until(11, None).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_ending_close_forgets_the_session() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    let ready = client.start(TOKEN, [0, 2]).await;
    client.close(1000).await;
    let close = observed(&sim, "the close", |o| !o.closes.is_empty())
        .await
        .closes[0]
        .clone();
    assert_eq!((close.by, close.code), (ClosedBy::Client, Some(1000)));
    let mut again = RawClient::connect(sim.resume_gateway_url(), Compression::None).await;
    again.hello().await;
    again
        .send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": ready["session_id"], "seq": 1}}))
        .await;
    assert_eq!(again.until(9, None).await["d"], false);
}

#[tokio::test(start_paused = true)]
async fn events_flow_at_the_configured_rate() {
    let sim = Sim::builder().event_rate(200.0).start().await.unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 1]).await;
    let started = tokio::time::Instant::now();
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let payload = client.until(0, None).await;
        typed_ok(&payload);
        kinds.insert(payload["t"].as_str().unwrap().to_owned());
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150),
        "40 events at 200/s took {elapsed:?}"
    );
    assert!(kinds.len() >= 3, "a mix of events: {kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn a_bad_query_string_is_refused_before_the_upgrade() {
    let sim = sim().await;
    for query in [
        "v=9&encoding=json",
        "v=10&encoding=etf",
        "v=10&compress=gzip",
    ] {
        let result = RawClient::connect_query(sim.gateway_url(), query, Compression::None).await;
        assert!(result.is_err(), "{query} was accepted");
    }
}

#[tokio::test(start_paused = true)]
async fn a_flood_from_the_pre_encoded_corpus_decodes_in_order_and_resumes() {
    for compression in [
        Compression::ZlibStream,
        Compression::None,
        Compression::ZstdStream,
    ] {
        let sim = Sim::builder().guilds_per_shard(1).start().await.unwrap();
        let mut client = RawClient::connect(sim.gateway_url(), compression).await;
        let ready = client.start(TOKEN, [0, 1]).await;
        client.until(0, Some("GUILD_CREATE")).await;
        sim.inject(Some(0), Fault::Flood(2000));
        for expected in 3..2003 {
            let payload = client.until(0, None).await;
            assert_eq!(payload["s"], expected, "{compression}");
            if expected % 500 == 0 {
                typed_ok(&payload);
            }
        }
        // Live events after the flood still decode: the stream continues.
        sim.inject(Some(0), Fault::Burst(5));
        for expected in 2003..2008 {
            assert_eq!(
                client.until(0, None).await["s"],
                expected,
                "{compression} after the flood"
            );
        }
        // And the flood is in the replay log.
        drop(client);
        let mut again = RawClient::connect(sim.resume_gateway_url(), compression).await;
        again.hello().await;
        again.send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": ready["session_id"], "seq": 1990}})).await;
        assert_eq!(again.until(0, None).await["s"], 1991, "{compression}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_token_stays_out_of_debug_output() {
    let sim = Sim::builder()
        .token("super-secret-token")
        .start()
        .await
        .unwrap();
    let debug = format!("{sim:?} {:?}", sim.config());
    assert!(!debug.contains("super-secret-token"), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn a_burst_keeps_acknowledging_heartbeats_and_faults_wait_their_turn() {
    let sim = sim().await;
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 2]).await;
    // READY and two GUILD_CREATEs took seqs 1 to 3.
    sim.inject(Some(0), Fault::Burst(2000));
    sim.inject(Some(0), Fault::Reconnect);
    // A heartbeat sent as the burst begins.
    let first = client.until(0, None).await["s"].as_u64().unwrap();
    client.send(&json!({"op": 1, "d": first})).await;
    let mut ack_before = None;
    let mut last = first;
    loop {
        let payload = client.payload().await;
        match payload["op"].as_u64() {
            Some(0) => {
                let seq = payload["s"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "in order");
                last = seq;
            }
            Some(11) => ack_before = Some(last),
            Some(7) => break,
            other => panic!("unexpected op {other:?}"),
        }
    }
    assert_eq!(
        last, 2003,
        "the whole burst, then the op 7 injected after it"
    );
    let acked = ack_before.expect("the heartbeat was acknowledged");
    assert!(
        acked < 2003,
        "acknowledged during the burst, not after it (at seq {acked})"
    );
}

#[tokio::test(start_paused = true)]
async fn flood_after_ready_sends_the_public_flood_corpus() {
    let sim = Sim::builder()
        .guilds_per_shard(2)
        .flood_after_ready(300)
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 1]).await;
    // READY, two GUILD_CREATEs, then the flood from seq 4, byte for byte the
    // corpus a benchmark can rebuild.
    let expected = shardwire_sim::Flood::new(sim.config().seed, 4, 300);
    let mut seq = 1;
    while seq < 303 {
        let payload = client.payload().await;
        seq = payload["s"].as_u64().unwrap();
        if seq >= 4 {
            let sent: Value =
                serde_json::from_slice(&expected.payloads[(seq - 4) as usize]).unwrap();
            assert_eq!(payload, sent, "seq {seq}");
        }
    }
    assert!(sim.violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_zstd_stream_flood_is_a_frame_of_its_own_between_live_ones() {
    let sim = Sim::builder()
        .guilds_per_shard(2)
        .flood_after_ready(300)
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZstdStream).await;
    client.start(TOKEN, [0, 1]).await;
    let expected = shardwire_sim::Flood::zstd_stream(sim.config().seed, 4, 300).unwrap();
    assert_eq!(expected.zstd.len(), 300);
    // Its first 1,024 events are zlib-stream's.
    let zlib = shardwire_sim::Flood::new(sim.config().seed, 4, 300);
    assert_eq!(expected.payloads, zlib.payloads);
    let mut seq = 1;
    while seq < 303 {
        let payload = client.payload().await;
        seq = payload["s"].as_u64().unwrap();
        if seq >= 4 {
            let sent: Value =
                serde_json::from_slice(&expected.payloads[(seq - 4) as usize]).unwrap();
            assert_eq!(payload, sent, "seq {seq}");
        }
    }
    // After the flood's frame, the connection's next frame.
    sim.inject(
        None,
        Fault::Dispatch {
            event_type: "TYPING_START".into(),
            d: serde_json::json!({"channel_id": "1"}),
        },
    );
    let after = client.payload().await;
    assert_eq!(
        (after["s"].as_u64(), after["t"].as_str()),
        (Some(304), Some("TYPING_START"))
    );
    assert!(sim.violations().is_empty());
}

#[test]
fn a_zstd_stream_flood_does_not_repeat_within_the_window() {
    // 4,096 distinct events: the 1,024 of zlib-stream's flood cycle would
    // fit in level 3's 2 MiB window and compress to almost nothing.
    let flood = shardwire_sim::Flood::zstd_stream(1, 1, 5_000).unwrap();
    let bytes =
        |range: std::ops::Range<usize>| -> usize { flood.zstd[range].iter().map(Vec::len).sum() };
    let json: usize = flood.payloads[4096..5000].iter().map(|p| p.len()).sum();
    // Past the 4,096th event the cycle repeats, 4 MiB back: out of the
    // window, so the repeats cost about what events that are new do.
    let (repeats, new) = (bytes(4096..5000), bytes(3000..3904));
    assert!(
        repeats * 10 > new * 8,
        "repeats {repeats}, new events {new}"
    );
    assert!(
        bytes(4096..5000) * 8 > json,
        "compressed {} of {json}",
        bytes(4096..5000)
    );
}

#[tokio::test(start_paused = true)]
async fn stamped_events_carry_the_time_they_were_generated() {
    let sim = Sim::builder()
        .event_rate(500.0)
        .stamp_events(true)
        .start()
        .await
        .unwrap();
    let mut client = RawClient::connect(sim.gateway_url(), Compression::ZlibStream).await;
    client.start(TOKEN, [0, 1]).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    let before = now();
    // Past READY and the guilds, the generated events.
    let mut stamped = 0;
    while stamped < 5 {
        let payload = client.until(0, None).await;
        if let Some(sent) = payload["d"]["sent_at_ns"].as_u64() {
            assert!(sent >= before - 1_000_000_000 && sent <= now(), "{sent}");
            stamped += 1;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn set_recommended_shards_changes_what_gateway_bot_answers() {
    let sim = Sim::builder().shards(4).start().await.unwrap();
    let url = format!("{}/gateway/bot", sim.api_url());
    let authorization = format!("Bot {}", sim.token());
    assert_eq!(get(&url, Some(&authorization)).await.1["shards"], 4);
    sim.set_recommended_shards(8);
    assert_eq!(get(&url, Some(&authorization)).await.1["shards"], 8);
    assert_eq!(
        sim.config().shards,
        4,
        "the configuration stays as it started"
    );
}
