//! The coordination pieces against a real nats-server with JetStream: the
//! identify queue, the daily limit, leases, the session store and the
//! deduplicated events stream.

#![allow(clippy::print_stdout, reason = "the figures of the run")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardwire_nats::{NatsError, event_subject, message_id};
use shardwire_shard::{IdentifyQueue, IdentifyRefused, Session, ShardEvent};
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_buckets_admit_one_shard_per_window_across_processes() {
    let Some(server) = common::server().await else {
        return;
    };
    // Two connections, as two processes: shards of bucket 0 on both.
    let a = Arc::new(
        common::connect(&server)
            .await
            .identify_queue(2, WINDOW, "node-a")
            .await
            .unwrap(),
    );
    let b = Arc::new(
        common::connect(&server)
            .await
            .identify_queue(2, WINDOW, "node-b")
            .await
            .unwrap(),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (queue, shard) in [(&a, 0), (&b, 2), (&a, 4), (&b, 1)] {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            queue.wait_turn(shard).await.unwrap();
            (shard, start.elapsed())
        }));
    }
    let mut turns = Vec::new();
    for task in tasks {
        turns.push(task.await.unwrap());
    }
    let mut bucket0: Vec<Duration> = turns
        .iter()
        .filter(|(shard, _)| shard % 2 == 0)
        .map(|(_, at)| *at)
        .collect();
    bucket0.sort();
    for pair in bucket0.windows(2) {
        assert!(
            pair[1] - pair[0] >= WINDOW,
            "bucket 0 turns {:?} closer than the window",
            bucket0
        );
    }
    // Three turns in one bucket: two windows, plus expiry lag.
    assert!(
        bucket0[2] < WINDOW * 2 + Duration::from_secs(3),
        "{bucket0:?}"
    );
    // Bucket 1 is free: its one shard goes at once.
    let bucket1 = turns.iter().find(|(shard, _)| *shard == 1).unwrap().1;
    assert!(bucket1 < Duration::from_millis(900), "{bucket1:?}");
    println!("bucket 0 turns at {bucket0:?}, bucket 1 at {bucket1:?}");
}

#[tokio::test]
async fn the_daily_limit_is_shared_and_refused_when_spent() {
    let Some(server) = common::server().await else {
        return;
    };
    let a = common::connect(&server)
        .await
        .identify_queue(16, WINDOW, "node-a")
        .await
        .unwrap();
    let b = common::connect(&server)
        .await
        .identify_queue(16, WINDOW, "node-b")
        .await
        .unwrap();
    a.seed_limit(3, Duration::from_secs(3600)).await.unwrap();
    // A later report (which may lag) does not undo the count.
    b.seed_limit(1000, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(b.remaining().await.unwrap(), Some(3));
    a.wait_turn(0).await.unwrap();
    b.wait_turn(1).await.unwrap();
    a.wait_turn(2).await.unwrap();
    assert_eq!(a.remaining().await.unwrap(), Some(0));
    match b.wait_turn(3).await {
        Err(IdentifyRefused::DailyLimitExhausted {
            reset_after: Some(reset),
        }) => {
            assert!(reset > Duration::from_secs(3500) && reset <= Duration::from_secs(3600));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lease_is_exclusive_renewable_and_fenced_once_it_lapses() {
    let Some(server) = common::server().await else {
        return;
    };
    let ttl = Duration::from_secs(1);
    let a = common::connect(&server)
        .await
        .leases(ttl, "node-a")
        .await
        .unwrap();
    let b = common::connect(&server)
        .await
        .leases(ttl, "node-b")
        .await
        .unwrap();
    let mut lease = a.claim(0).await.unwrap().expect("range 0 is free");
    assert!(b.claim(0).await.unwrap().is_none(), "held by a");
    let first = lease.revision;
    a.renew(&mut lease).await.unwrap();
    assert!(lease.revision > first, "a renewal is a new revision");
    assert!(a.is_fresh(&lease));
    assert_eq!(
        b.holders().await.unwrap().get(&0).map(String::as_str),
        Some("node-a")
    );
    // a stops renewing; the lease lapses and b claims it.
    let lapsed = Instant::now();
    let taken = loop {
        if let Some(taken) = b.claim(0).await.unwrap() {
            break taken;
        }
        assert!(lapsed.elapsed() < Duration::from_secs(10), "never lapsed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(lapsed.elapsed() >= Duration::from_millis(500));
    assert!(!a.is_fresh(&lease), "a knows by its own clock");
    match a.renew(&mut lease).await {
        Err(NatsError::Fenced { key, .. }) => assert_eq!(key, "range-0"),
        other => panic!("a's renewal must be fenced, got {other:?}"),
    }
    // Releasing a lost lease leaves the new holder alone.
    a.release(lease).await.unwrap();
    assert_eq!(
        a.holders().await.unwrap().get(&0).map(String::as_str),
        Some("node-b")
    );
    // A release hands the range over at once.
    b.release(taken).await.unwrap();
    assert!(a.claim(0).await.unwrap().is_some());
    // A renewal whose answer was lost leaves a stale revision behind: the
    // lease is still recognised as a's own.
    let mut current = a.claim(1).await.unwrap().unwrap();
    let mut stale = current.clone();
    a.renew(&mut current).await.unwrap();
    a.renew(&mut stale).await.unwrap();
    assert_eq!(stale.revision, current.revision);
    // So is a claim of a's own range.
    assert_eq!(
        a.claim(1).await.unwrap().map(|l| l.revision),
        Some(stale.revision)
    );
    assert!(b.claim(1).await.unwrap().is_none());
    // Every node must agree on the TTL: a bucket made for 1 s is refused
    // to a process that expects 2 s.
    match common::connect(&server)
        .await
        .leases(Duration::from_secs(2), "node-c")
        .await
    {
        Err(NatsError::Invalid(message)) => {
            assert!(message.contains("same lease TTL"), "{message}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Announcements.
    a.announce().await.unwrap();
    b.announce().await.unwrap();
    assert_eq!(a.live_holders().await.unwrap(), ["node-a", "node-b"]);
    b.withdraw().await.unwrap();
    assert_eq!(a.live_holders().await.unwrap(), ["node-a"]);
}

#[tokio::test]
async fn sessions_are_written_by_compare_and_swap_and_taken_over() {
    let Some(server) = common::server().await else {
        return;
    };
    let old = common::connect(&server).await.sessions().await.unwrap();
    let new = common::connect(&server).await.sessions().await.unwrap();
    assert_eq!(old.load(3).await.unwrap(), (None, 0));
    let session = Session::new("abc".into(), 41, "ws://127.0.0.1:1".into()).unwrap();
    let revision = old.store(3, &session, 0).await.unwrap();
    // Someone else's create over it is fenced.
    assert!(matches!(
        new.store(3, &session, 0).await,
        Err(NatsError::Fenced { .. })
    ));
    // The new owner takes it over: the old owner's next write is fenced.
    let (taken, taken_revision) = new.take(3).await.unwrap();
    assert_eq!(taken.as_ref(), Some(&session));
    assert!(taken_revision > revision);
    let later = Session {
        seq: 99,
        ..session.clone()
    };
    assert!(matches!(
        old.store(3, &later, revision).await,
        Err(NatsError::Fenced { .. })
    ));
    let newer = new.store(3, &later, taken_revision).await.unwrap();
    assert_eq!(old.load(3).await.unwrap(), (Some(later), newer));
    // Taking a shard with no session fences a late writer too.
    let (none, fence) = new.take(4).await.unwrap();
    assert_eq!(none, None);
    assert!(matches!(
        old.store(4, &session, 0).await,
        Err(NatsError::Fenced { .. })
    ));
    assert!(new.store(4, &session, fence).await.is_ok());
    // The shard count: the first node's stands.
    assert_eq!(old.agree_total(8).await.unwrap(), 8);
    assert_eq!(new.agree_total(16).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_cluster_session_store_it_resumes_a_restarted_cluster_and_fences_the_old_one() {
    use shardwire_cluster::{Cluster, ClusterConfig, SessionStore as _, ShardSpec};
    let Some(server) = common::server().await else {
        return;
    };
    let sim = shardwire_sim::Sim::builder()
        .shards(2)
        .max_concurrency(2)
        .identify_window(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let start = |store: shardwire_nats::SessionStore| {
        let mut config = ClusterConfig::new(
            shardwire_codec::Token::new(sim.token()),
            twilight_model::gateway::Intents::GUILDS,
        );
        config.api_base = sim.api_url().to_owned();
        config.shards = ShardSpec::Recommended;
        config.identify_window = Duration::from_millis(100);
        config.session_store = Some(Arc::new(store));
        Cluster::start(config)
    };
    let until_each = async |cluster: &mut Cluster, wanted: fn(&ShardEvent) -> bool| {
        let mut done = std::collections::BTreeSet::new();
        while done.len() < 2 {
            let (shard, event) =
                tokio::time::timeout(Duration::from_secs(10), cluster.next_event())
                    .await
                    .expect("an event in time")
                    .expect("the stream goes on");
            if wanted(&event) {
                done.insert(shard);
            }
        }
    };
    let old = common::connect(&server).await.sessions().await.unwrap();
    let mut cluster = start(old.clone()).await.unwrap();
    until_each(&mut cluster, |e| matches!(e, ShardEvent::Ready { .. })).await;
    let shutdown = cluster.shutdown(Duration::from_secs(5)).await;
    assert!(shutdown.store_error.is_none(), "{:?}", shutdown.store_error);
    for (shard, session) in &shutdown.sessions {
        assert_eq!(old.load(*shard).await.unwrap().0.as_ref(), Some(session));
    }

    // Another process takes the sessions over and resumes.
    let new = common::connect(&server).await.sessions().await.unwrap();
    let mut cluster = start(new).await.unwrap();
    until_each(&mut cluster, |e| matches!(e, ShardEvent::Resumed)).await;
    assert_eq!(
        sim.observations().identifies.len(),
        2,
        "no identify after the restart"
    );
    // The first process's late save is refused, not written over.
    let stale = (0, shutdown.sessions.get(&0).cloned());
    let error = old.save(&[stale]).await.unwrap_err();
    assert!(
        matches!(
            error.downcast_ref::<NatsError>(),
            Some(NatsError::Fenced { .. })
        ),
        "{error}"
    );
    drop(cluster);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_stored_value_that_is_not_a_session_is_an_error_not_a_resume() {
    let Some(server) = common::server().await else {
        return;
    };
    let nats = common::connect(&server).await;
    let sessions = nats.sessions().await.unwrap();
    let kv = nats
        .jetstream()
        .get_key_value("shardwire-sessions")
        .await
        .unwrap();
    kv.put("shard-5", Bytes::from_static(b"{not json"))
        .await
        .unwrap();
    assert!(matches!(
        sessions.load(5).await,
        Err(NatsError::Corrupt { .. })
    ));
    kv.put(
        "shard-6",
        Bytes::from_static(br#"{"session_id":"","seq":1,"resume_url":"ws://x"}"#),
    )
    .await
    .unwrap();
    match sessions.load(6).await {
        Err(NatsError::Corrupt { reason, .. }) => assert!(reason.contains("empty"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A new owner does not stay stuck on it: the shard identifies and the
    // value is replaced.
    let (taken, revision) = sessions.take(5).await.unwrap();
    assert_eq!(taken, None);
    let fresh = Session::new("new".into(), 1, "ws://127.0.0.1:1".into()).unwrap();
    sessions.store(5, &fresh, revision).await.unwrap();
    assert_eq!(sessions.load(5).await.unwrap().0, Some(fresh));
}

#[tokio::test]
async fn events_are_deduplicated_by_session_and_seq_and_consumed_with_acks() {
    let Some(server) = common::server().await else {
        return;
    };
    let nats = common::connect(&server).await;
    nats.events_stream(Duration::from_secs(60)).await.unwrap();
    // Seqs 1..=5 published, then 3..=5 again, as a resume replays them.
    for (index, seq) in (1..=5).chain(3..=5).enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id("s1", seq).as_str(),
        );
        let ack = nats
            .jetstream()
            .publish_with_headers(
                event_subject(nats.layout(), 2, "MESSAGE_CREATE"),
                headers,
                Bytes::from(format!(
                    r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{{}}}}"#
                )),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.duplicate, index >= 5, "seq {seq}: {ack:?}");
    }
    let mut consumer = nats.consumer("worker", None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let delivery = consumer.next().await.unwrap().unwrap();
        assert_eq!(
            (delivery.shard, delivery.event_type.as_str()),
            (2, "MESSAGE_CREATE")
        );
        assert_eq!(delivery.session_id, "s1");
        assert_eq!(delivery.delivered(), 1);
        assert!(delivery.payload().starts_with(br#"{"t":"MESSAGE_CREATE""#));
        delivery.ack().await.unwrap();
        seen.push(delivery.seq);
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    let nothing = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(
        nothing.is_err(),
        "the duplicates were dropped: nothing more"
    );
    drop(consumer);
    // The same durable name goes on after what was acknowledged.
    let mut consumer = nats.consumer("worker", None).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(nothing.is_err(), "acknowledged events do not come again");
}

#[tokio::test]
async fn an_events_stream_made_with_a_shorter_duplicate_window_is_given_the_longer() {
    let Some(server) = common::server().await else {
        return;
    };
    let nats = common::connect(&server).await;
    let window = |stream: async_nats::jetstream::stream::Stream| {
        stream.cached_info().config.duplicate_window
    };
    let made = nats.events_stream(Duration::from_secs(60)).await.unwrap();
    assert_eq!(window(made), Duration::from_secs(60));
    // A node set for a longer window lengthens it for every node.
    let longer = nats.events_stream(Duration::from_secs(180)).await.unwrap();
    assert_eq!(window(longer), Duration::from_secs(180));
    let info = nats
        .jetstream()
        .get_stream(nats.layout().stream())
        .await
        .unwrap()
        .cached_info()
        .config
        .duplicate_window;
    assert_eq!(info, Duration::from_secs(180), "as the server has it");
    // One set for a shorter one leaves it: a longer window is safe.
    let kept = nats.events_stream(Duration::from_secs(30)).await.unwrap();
    assert_eq!(window(kept), Duration::from_secs(180));
}
