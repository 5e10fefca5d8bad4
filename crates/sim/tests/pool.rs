//! The guild pool: sessions of two shard counts (two generations of a
//! resharding bot) get the same events for the guilds they share, with a
//! configurable skew, across a resume; and 4011.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use shardwire_codec::{Compression, Payload};
use shardwire_sim::raw::RawClient;
use shardwire_sim::{Fault, PoolEvent, ResumeOutcome, Sim, ViolationKind};
use tokio::time::Instant;

const TOKEN: &str = "sim-token";

/// A simulator with a pool of `guilds` guilds, its stream stopped, that
/// lets every shard identify at once.
async fn pool_sim(guilds: u32) -> Sim {
    Sim::builder()
        .guild_pool(guilds)
        .max_concurrency(16)
        .identify_window(Duration::ZERO)
        .start()
        .await
        .unwrap()
}

/// One dispatch as a client received it.
#[derive(Debug)]
struct Got {
    s: u64,
    name: String,
    /// The raw JSON of `d`.
    d: Vec<u8>,
    guild_id: String,
    at: Instant,
}

impl Got {
    fn parse(text: &str) -> Self {
        let payload = Payload::scan(text.as_bytes()).unwrap();
        let d: Value = serde_json::from_str(payload.data()).unwrap();
        Self {
            s: payload.seq().unwrap(),
            name: payload.event_type().unwrap().to_owned(),
            d: payload.data().as_bytes().to_vec(),
            guild_id: d["guild_id"].as_str().unwrap_or_default().to_owned(),
            at: Instant::now(),
        }
    }

    fn same_event(&self, event: &PoolEvent) -> bool {
        self.name == event.name && self.d == event.d && self.guild_id == event.guild_id
    }
}

/// A client that identified as `shard`, with READY's session id and guild
/// ids, and the seq of its last GUILD_CREATE.
struct Started {
    client: RawClient,
    session_id: String,
    guild_ids: Vec<String>,
    last_seq: u64,
}

/// Hello, Identify, READY and its GUILD_CREATEs.
async fn start(sim: &Sim, shard: [u32; 2]) -> Started {
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    let ready = client.start(TOKEN, shard).await;
    let guild_ids: Vec<String> = ready["guilds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|guild| guild["id"].as_str().unwrap().to_owned())
        .collect();
    let mut last_seq = 1;
    for id in &guild_ids {
        let create = client.payload().await;
        assert_eq!(
            (create["t"].as_str(), &create["d"]["id"]),
            (Some("GUILD_CREATE"), &json!(id))
        );
        last_seq = create["s"].as_u64().unwrap();
    }
    Started {
        client,
        session_id: ready["session_id"].as_str().unwrap().to_owned(),
        guild_ids,
        last_seq,
    }
}

/// The next `count` dispatches.
async fn receive(client: &mut RawClient, count: usize) -> Vec<Got> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        got.push(Got::parse(&client.text().await));
    }
    got
}

/// The pool guilds `[shard_id, shard_count]` owns, by their index.
fn owned(sim: &Sim, [shard_id, shard_count]: [u32; 2]) -> Vec<String> {
    sim.pool_guild_ids()
        .into_iter()
        .enumerate()
        .filter(|(index, _)| *index as u32 % shard_count == shard_id)
        .map(|(_, id)| id)
        .collect()
}

/// The recorded pool events of these guilds, in generation order.
fn events_of(sim: &Sim, guild_ids: &[String]) -> Vec<PoolEvent> {
    sim.pool_events()
        .into_iter()
        .filter(|event| guild_ids.contains(&event.guild_id))
        .collect()
}

/// Waits (on the simulator's clock) until at least `count` pool events were
/// recorded.
async fn wait_for_events(sim: &Sim, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.pool_events().len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} pool events",
            sim.pool_events().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts `got` is exactly `expected`, in order.
fn assert_same_events(got: &[Got], expected: &[PoolEvent]) {
    assert_eq!(got.len(), expected.len(), "how many events");
    for (index, (got, event)) in got.iter().zip(expected).enumerate() {
        assert!(
            got.same_event(event),
            "event {index}: got {got:?}, sent {event:?}"
        );
    }
}

/// Asserts `got` is exactly `expected`, in order, numbered on from `after`.
fn assert_received(got: &[Got], expected: &[PoolEvent], after: u64) {
    assert_same_events(got, expected);
    for (index, got) in got.iter().enumerate() {
        assert_eq!(got.s, after + 1 + index as u64, "no gap in s");
    }
}

#[tokio::test(start_paused = true)]
async fn two_generations_get_the_same_events_for_the_guilds_they_share() {
    let sim = pool_sim(8).await;
    let shards = [[0, 2], [1, 2], [0, 4], [2, 4]];
    let mut sessions = Vec::new();
    for shard in shards {
        let started = start(&sim, shard).await;
        assert_eq!(started.guild_ids, owned(&sim, shard), "READY of {shard:?}");
        sessions.push(started);
    }
    assert!(
        sim.pool_events().is_empty(),
        "no events before the stream starts"
    );

    sim.set_guild_event_rate(400.0);
    wait_for_events(&sim, 80).await;
    sim.set_guild_event_rate(0.0);
    let all = sim.pool_events();
    let guilds: BTreeSet<&str> = all.iter().map(|event| event.guild_id.as_str()).collect();
    assert_eq!(guilds.len(), 8, "every guild had events");
    let names: BTreeSet<&str> = all.iter().map(|event| event.name.as_str()).collect();
    assert!(names.len() >= 3, "a mix of events: {names:?}");

    let mut received = Vec::new();
    for started in &mut sessions {
        let expected = events_of(&sim, &started.guild_ids);
        let got = receive(&mut started.client, expected.len()).await;
        assert_received(&got, &expected, started.last_seq);
        received.push(got);
    }
    // Each generation received each event: [0,2] and [1,2] together got
    // every one, and [0,4] and [2,4] got, byte for byte and in the same
    // order, what [0,2] got for their guilds.
    assert_eq!(received[0].len() + received[1].len(), all.len());
    for (newer, older) in [(2, 0), (3, 0)] {
        let shared: Vec<&Got> = received[older]
            .iter()
            .filter(|got| sessions[newer].guild_ids.contains(&got.guild_id))
            .collect();
        assert!(!shared.is_empty());
        assert_eq!(shared.len(), received[newer].len());
        for (a, b) in shared.iter().zip(&received[newer]) {
            assert_eq!((&a.name, &a.d), (&b.name, &b.d));
        }
    }
    // Nothing more was sent than what they read.
    let infos = sim.sessions();
    for (started, got) in sessions.iter().zip(&received) {
        let info = infos
            .iter()
            .find(|info| info.session_id == started.session_id)
            .unwrap();
        assert_eq!(info.seq, got.last().unwrap().s);
    }
    assert_eq!(sim.pool_events_dropped(), 0);
    assert!(!sim.pool_events_overflowed());
}

#[tokio::test(start_paused = true)]
async fn a_delayed_generation_gets_each_event_that_much_later() {
    let sim = pool_sim(4).await;
    let mut older = start(&sim, [0, 2]).await;
    let mut newer = start(&sim, [0, 4]).await;
    sim.set_event_delay(4, Duration::from_millis(200));
    // Guild 0's events come every 100 ms; [0,2] gets guild 2's too.
    sim.set_guild_event_rate(40.0);
    let (older_got, newer_got) = tokio::join!(
        receive(&mut older.client, 12),
        receive(&mut newer.client, 5)
    );
    sim.set_guild_event_rate(0.0);
    for got in &newer_got {
        let first = older_got
            .iter()
            .find(|o| o.d == got.d)
            .expect("the newer generation's event reached the older one");
        let skew = got.at - first.at;
        assert!(
            skew >= Duration::from_millis(199) && skew < Duration::from_millis(260),
            "skew {skew:?}"
        );
    }
    let expected = events_of(&sim, &newer.guild_ids);
    assert_received(&newer_got, &expected[..newer_got.len()], newer.last_seq);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_session_gets_the_events_routed_while_it_was_away() {
    let sim = pool_sim(4).await;
    let mut started = start(&sim, [0, 1]).await;
    sim.set_guild_event_rate(100.0);
    let mut got = receive(&mut started.client, 10).await;
    sim.inject(Some(0), Fault::DropTcp);
    // What was sent before the drop, then the drop.
    while let Ok(text) = started.client.recv_text().await {
        got.push(Got::parse(&text));
    }
    let before = sim.pool_events().len();
    wait_for_events(&sim, before + 20).await;

    let mut client = RawClient::connect(sim.resume_gateway_url(), Compression::ZlibStream).await;
    client.hello().await;
    // Resume three events back: those are replayed, then RESUMED, then what
    // was queued meanwhile.
    got.truncate(got.len() - 3);
    let seq = got.last().unwrap().s;
    client
        .send(
            &json!({"op": 6, "d": {"token": TOKEN, "session_id": started.session_id, "seq": seq}}),
        )
        .await;
    sim.set_guild_event_rate(0.0);
    let total = sim.pool_events().len();
    let resumed = receive(&mut client, total - got.len() + 1).await;
    for (index, event) in resumed.iter().enumerate() {
        assert_eq!(event.s, seq + 1 + index as u64, "no gap in s");
    }
    let names: Vec<&str> = resumed.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(
        names.iter().position(|name| *name == "RESUMED"),
        Some(3),
        "{names:?}"
    );
    assert!(
        resumed.len() - 4 >= 20,
        "the events queued while it was away follow RESUMED"
    );
    got.extend(resumed.into_iter().filter(|event| event.name != "RESUMED"));
    assert_same_events(&got, &sim.pool_events());
    assert_eq!(
        sim.observations().resumes[0].outcome,
        ResumeOutcome::Resumed { replayed: 3 }
    );
}

/// Hello and Identify as `shard`; the close code it gets.
async fn identify_closes_with(sim: &Sim, shard: [u32; 2]) -> Option<u16> {
    let mut client = RawClient::connect(sim.gateway_url(), Compression::None).await;
    client.hello().await;
    client.identify(TOKEN, shard, 1).await;
    client.closed().await
}

/// A Resume of `session_id`: `true` if RESUMED came, `false` on op 9.
async fn resumes(sim: &Sim, session_id: &str) -> bool {
    let mut client = RawClient::connect(sim.resume_gateway_url(), Compression::None).await;
    client.hello().await;
    client
        .send(&json!({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": 1}}))
        .await;
    loop {
        let payload = client.payload().await;
        match (payload["op"].as_u64(), payload["t"].as_str()) {
            (Some(9), _) => return false,
            (Some(0), Some("RESUMED")) => return true,
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_shard_over_max_guilds_per_shard_is_closed_with_4011() {
    let sim = Sim::builder()
        .guild_pool(8)
        .max_guilds_per_shard(4)
        .max_concurrency(16)
        .identify_window(Duration::ZERO)
        .start()
        .await
        .unwrap();
    assert_eq!(identify_closes_with(&sim, [0, 1]).await, Some(4011));
    let started = start(&sim, [1, 2]).await;
    assert_eq!(started.guild_ids.len(), 4);
    sim.set_max_guilds_per_shard(3);
    assert_eq!(identify_closes_with(&sim, [0, 2]).await, Some(4011));
    assert_eq!(start(&sim, [0, 4]).await.guild_ids.len(), 2);
    let refused: Vec<ViolationKind> = sim
        .violations()
        .into_iter()
        .map(|violation| violation.kind)
        .collect();
    assert_eq!(
        refused,
        [
            ViolationKind::ShardingRequired { guilds: 8 },
            ViolationKind::ShardingRequired { guilds: 4 }
        ]
    );
    let identifies = sim.observations().identifies;
    let accepted: Vec<bool> = identifies.iter().map(|i| i.accepted).collect();
    assert_eq!(accepted, [false, true, false, true]);
    assert_eq!(
        sim.remaining(),
        998,
        "a refused Identify takes no session start"
    );

    // Without a pool, every shard owns `guilds_per_shard` guilds.
    let sim = Sim::builder()
        .guilds_per_shard(3)
        .max_guilds_per_shard(2)
        .start()
        .await
        .unwrap();
    assert_eq!(identify_closes_with(&sim, [0, 4]).await, Some(4011));
}

#[tokio::test(start_paused = true)]
async fn server_closes_that_end_a_session_in_discord_forget_it() {
    for (code, resumable) in [
        (4000, true),
        (4001, true),
        (4008, true),
        (4004, false),
        (4010, false),
        (4011, false),
        (4012, false),
        (4013, false),
        (4014, false),
    ] {
        let sim = pool_sim(2).await;
        let mut started = start(&sim, [0, 1]).await;
        sim.inject(Some(0), Fault::Close(code));
        assert_eq!(started.client.closed().await, Some(code));
        assert_eq!(
            resumes(&sim, &started.session_id).await,
            resumable,
            "after a close with {code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn events_a_session_ended_before_sending_are_not_in_the_record() {
    // Generation A (one shard) owns all four guilds; B, shard 1 of 2, the
    // odd ones.
    let sim = pool_sim(4).await;
    let mut a = start(&sim, [0, 1]).await;
    let mut b = start(&sim, [1, 2]).await;
    let odd: Vec<String> = b.guild_ids.clone();
    let even: Vec<String> = a
        .guild_ids
        .iter()
        .filter(|id| !odd.contains(id))
        .cloned()
        .collect();
    sim.set_guild_event_rate(100.0);
    let mut got_a = receive(&mut a.client, 8).await;
    // From now on A's events wait in its queue, so the 4011 finds them
    // unsent.
    sim.set_event_delay(1, Duration::from_secs(10));
    let before = sim.pool_events().len();
    wait_for_events(&sim, before + 16).await;
    sim.set_guild_event_rate(0.0);
    let even_queued = events_of(&sim, &even).len();
    sim.inject(Some(0), Fault::Close(4011));
    while let Ok(text) = a.client.recv_text().await {
        got_a.push(Got::parse(&text));
    }

    // What only A held went with its session; what A was sent stays.
    let even_recorded = events_of(&sim, &even);
    assert!(
        even_recorded.len() < even_queued,
        "{} recorded of {even_queued}",
        even_recorded.len()
    );
    let got_even: Vec<Got> = got_a
        .into_iter()
        .filter(|got| even.contains(&got.guild_id))
        .collect();
    assert_same_events(&got_even, &even_recorded);
    // What B holds too stays, and B gets it.
    let odd_recorded = events_of(&sim, &odd);
    let got_b = receive(&mut b.client, odd_recorded.len()).await;
    assert_same_events(&got_b, &odd_recorded);
}
