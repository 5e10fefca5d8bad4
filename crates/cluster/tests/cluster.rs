//! The cluster against shardwire-sim: spawning, the identify schedule, the
//! daily limit, routing, member chunks, filters and the lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::{
    Cluster, ClusterConfig, ClusterError, Gateway, GatewayError, ShardSpec, Shutdown,
};
use shardwire_codec::{
    Activity, Command, EventFilter, MemberSelection, RequestGuildMembers, Token, UpdatePresence,
};
use shardwire_shard::{ShardEvent, ShardState};
use shardwire_sim::{Fault, Sim, ViolationKind};
use tokio::time::Instant;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::{Event, EventType};
use twilight_model::gateway::presence::{ActivityType, Status};
use twilight_model::id::Id;

const WINDOW: Duration = Duration::from_millis(250);

fn config(sim: &Sim, shards: ShardSpec) -> ClusterConfig {
    let mut config = ClusterConfig::new(Token::new(sim.token()), Intents::GUILDS);
    config.api_base = sim.api_url().to_owned();
    config.shards = shards;
    config.identify_window = WINDOW;
    config.configure = Some(Arc::new(|shard| {
        shard.backoff_initial = Duration::from_millis(10);
        shard.backoff_cap = Duration::from_millis(100);
    }));
    config
}

/// A sim recommending `shards` at `concurrency`, with a short identify window.
async fn sim_with(shards: u32, concurrency: u32) -> Sim {
    Sim::builder()
        .shards(shards)
        .max_concurrency(concurrency)
        .identify_window(WINDOW)
        .start()
        .await
        .unwrap()
}

async fn recommended(sim: &Sim) -> Cluster {
    Cluster::start(config(sim, ShardSpec::Recommended))
        .await
        .unwrap()
}

async fn next(cluster: &mut Cluster) -> (u32, ShardEvent) {
    tokio::time::timeout(Duration::from_secs(10), cluster.next_event())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// Reads until every shard in `shards` has sent `wanted`; returns the time
/// each did and every event read on the way.
async fn until_all(
    cluster: &mut Cluster,
    shards: &[u32],
    wanted: impl Fn(&ShardEvent) -> bool,
) -> (BTreeMap<u32, Instant>, Vec<(u32, ShardEvent)>) {
    let mut done = BTreeMap::new();
    let mut seen = Vec::new();
    while done.len() < shards.len() {
        let (shard, event) = next(cluster).await;
        if wanted(&event) {
            done.entry(shard).or_insert_with(Instant::now);
        }
        seen.push((shard, event));
    }
    assert_eq!(done.keys().copied().collect::<Vec<_>>(), shards);
    (done, seen)
}

/// The `[id, count]` of every identify the sim saw.
fn identified(sim: &Sim) -> BTreeSet<[u32; 2]> {
    sim.observations()
        .identifies
        .iter()
        .map(|i| i.shard)
        .collect()
}

fn is_ready(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Ready { .. })
}

fn is_resumed(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Resumed)
}

#[tokio::test(start_paused = true)]
async fn cluster_spawns_the_recommended_count() {
    let sim = sim_with(3, 16).await;
    let mut cluster = recommended(&sim).await;
    assert_eq!(cluster.total(), 3);
    assert_eq!(cluster.shard_ids(), vec![0, 1, 2]);
    until_all(&mut cluster, &[0, 1, 2], is_ready).await;
    assert_eq!(identified(&sim), BTreeSet::from([[0, 3], [1, 3], [2, 3]]));
    assert!(
        cluster
            .statuses()
            .iter()
            .all(|s| s.state == ShardState::Active)
    );
    let requests = sim.observations().gateway_bot_requests;
    assert_eq!(requests.len(), 1, "one request");
    assert!(requests[0].authorized, "an authorized one");
}

#[tokio::test(start_paused = true)]
async fn cluster_spawns_explicit_ids_of_a_total() {
    let sim = sim_with(1, 4).await;
    let mut cluster = Cluster::start(config(
        &sim,
        ShardSpec::Ids {
            ids: vec![3, 1],
            total: 4,
        },
    ))
    .await
    .unwrap();
    assert_eq!(cluster.shard_ids(), vec![1, 3]);
    until_all(&mut cluster, &[1, 3], is_ready).await;
    assert_eq!(identified(&sim), BTreeSet::from([[1, 4], [3, 4]]));
    // Bad specs are refused with the reason.
    for (spec, reason) in [
        (
            ShardSpec::Ids {
                ids: vec![4],
                total: 4,
            },
            "not below",
        ),
        (
            ShardSpec::Ids {
                ids: vec![1, 1],
                total: 4,
            },
            "twice",
        ),
        (ShardSpec::Count(0), "at least 1"),
    ] {
        let error = Cluster::start(config(&sim, spec)).await.unwrap_err();
        assert!(
            matches!(&error, ClusterError::InvalidShards(m) if m.contains(reason)),
            "{error}"
        );
    }
}

/// Starts `shards` at `concurrency` with identify windows of `window` and
/// checks the identify schedule against the simulator's record of each
/// identify: bucket rounds in order, one window apart, and the buckets of a
/// round side by side. The exact times are the identify queue's, checked on
/// a paused clock (queue.rs); over real sockets no bound is tighter than a
/// window.
async fn schedule(shards: u32, concurrency: u32, window: Duration) {
    let sim = Sim::builder()
        .shards(shards)
        .max_concurrency(concurrency)
        .identify_window(window)
        .guilds_per_shard(1)
        .start()
        .await
        .unwrap();
    let mut config = config(&sim, ShardSpec::Recommended);
    config.identify_window = window;
    let mut cluster = Cluster::start(config).await.unwrap();
    let ids: Vec<u32> = (0..shards).collect();
    until_all(&mut cluster, &ids, is_ready).await;
    let observations = sim.observations();
    // Each identify's round: how many of its bucket came before it.
    let mut per_bucket: BTreeMap<u32, u32> = BTreeMap::new();
    let arrivals: Vec<(u32, Instant)> = observations
        .identifies
        .iter()
        .map(|identify| {
            let count = per_bucket
                .entry(identify.shard[0] % concurrency)
                .or_default();
            *count += 1;
            (*count - 1, identify.at)
        })
        .collect();
    let rounds = shards.div_ceil(concurrency);
    assert!(
        per_bucket.values().all(|count| *count <= rounds),
        "M={concurrency}: {per_bucket:?}"
    );
    // Every identify of a round arrives before any of the next one, and the
    // next round starts a window later (the limit allows no less).
    for pair in arrivals.windows(2) {
        let ((round, at), (next_round, next_at)) = (pair[0], pair[1]);
        assert!(
            next_round == round || next_round == round + 1,
            "M={concurrency}: rounds out of order: {arrivals:?}"
        );
        if next_round == round + 1 {
            assert!(
                next_at - at >= window,
                "M={concurrency}: a round after {:?}",
                next_at - at
            );
        }
    }
    assert_eq!(arrivals.last().map(|(round, _)| round + 1), Some(rounds));
    // The buckets of a round go together: one queue for all of them would
    // space them a window apart.
    for round in 0..rounds {
        let times: Vec<Instant> = arrivals
            .iter()
            .filter(|(r, _)| *r == round)
            .map(|(_, at)| *at)
            .collect();
        let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
        assert!(
            spread < window,
            "M={concurrency}: round {round} spread over {spread:?}"
        );
    }
    assert!(
        !observations
            .violations
            .iter()
            .any(|v| matches!(v.kind, ViolationKind::IdentifyTooFast { .. })),
        "{:?}",
        observations.violations
    );
    assert_eq!(observations.identifies.len(), shards as usize);
}

#[tokio::test(start_paused = true)]
async fn cluster_identify_schedule_at_concurrency_1() {
    // 4 shards, one bucket: rounds at 0, 1, 2 and 3 windows.
    schedule(4, 1, WINDOW).await;
}

#[tokio::test(start_paused = true)]
async fn cluster_identify_schedule_at_concurrency_2() {
    // 4 shards in two buckets: two rounds, not four. A window of a second
    // leaves a loaded machine time to open the two connections of a round.
    schedule(4, 2, Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn cluster_identify_schedule_at_concurrency_16() {
    // 16 shards, 16 buckets: all at once, within one (long) window; one
    // queue for all would take 15 windows.
    schedule(16, 16, Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn cluster_refuses_to_start_past_the_daily_limit() {
    let sim = Sim::builder()
        .remaining(2)
        .identify_window(WINDOW)
        .start()
        .await
        .unwrap();
    let error = Cluster::start(config(&sim, ShardSpec::Count(4)))
        .await
        .unwrap_err();
    match &error {
        ClusterError::Gateway(GatewayError::NotEnoughSessionStarts {
            wanted, remaining, ..
        }) => assert_eq!((*wanted, *remaining), (4, 2)),
        other => panic!("{other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("4 shards must identify, 2 of 1000"),
        "{message}"
    );
    assert!(sim.observations().identifies.is_empty(), "nothing started");
    // Two fit.
    let mut cluster = Cluster::start(config(&sim, ShardSpec::Count(2)))
        .await
        .unwrap();
    until_all(&mut cluster, &[0, 1], is_ready).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_a_clear_error() {
    let sim = Sim::builder().start().await.unwrap();
    let mut config = config(&sim, ShardSpec::Count(1));
    config.token = Token::new("not-the-token");
    let error = Cluster::start(config).await.unwrap_err();
    assert!(
        matches!(error, ClusterError::Gateway(GatewayError::Unauthorized)),
        "{error}"
    );
    assert!(error.to_string().contains("Reset Token"));
    assert!(!format!("{error:?}").contains("not-the-token"));
}

#[tokio::test(start_paused = true)]
async fn one_gateway_instance_per_token() {
    let sim = Sim::builder().shards(2).start().await.unwrap();
    let api = sim.api_url().to_owned();
    let token = Token::new(sim.token());
    let first = Gateway::fetch_from(&api, &token).await.unwrap();
    let second = Gateway::fetch_from(&api, &token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(
        sim.observations().gateway_bot_requests.len(),
        1,
        "fetched once"
    );
    assert_eq!(first.info().shards, 2);
    assert_eq!(first.info().session_start_limit.max_concurrency, 1);
    first.refresh().await.unwrap();
    assert_eq!(
        sim.observations().gateway_bot_requests.len(),
        2,
        "refreshed on demand"
    );
    assert!(!format!("{first:?}").contains(sim.token()));
}

#[tokio::test(start_paused = true)]
async fn cluster_routes_by_guild_and_collects_member_chunks() {
    let sim = Sim::builder()
        .shards(3)
        .max_concurrency(3)
        .identify_window(WINDOW)
        .members_per_guild(2500)
        .start()
        .await
        .unwrap();
    let mut config = config(&sim, ShardSpec::Recommended);
    config.typed = true;
    config.events = EventFilter::only([EventType::GuildCreate, EventType::MemberChunk]);
    let mut cluster = Cluster::start(config).await.unwrap();
    // Every guild arrives on the shard routing says owns it.
    let mut guilds = Vec::new();
    while guilds.len() < 6 {
        let (shard, event) = next(&mut cluster).await;
        if let ShardEvent::Dispatch {
            event_type, event, ..
        } = event
        {
            assert_eq!(
                event_type, "GUILD_CREATE",
                "the filter lets nothing else through"
            );
            let Some(Event::GuildCreate(guild)) = event.as_deref() else {
                panic!("typed as asked: {event:?}");
            };
            assert_eq!(cluster.sender().shard_for_guild(guild.id()), shard);
            guilds.push((shard, guild.id()));
        }
    }
    // Members of a guild of shard 2, in three chunks, collected into one.
    let (shard, guild_id) = *guilds.iter().find(|(shard, _)| *shard == 2).unwrap();
    let members = cluster
        .sender()
        .request_guild_members(
            RequestGuildMembers {
                guild_id,
                selection: MemberSelection::Query {
                    query: String::new(),
                    limit: 0,
                },
                presences: false,
                nonce: None,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(members.guild_id, guild_id);
    assert_eq!(members.members.len(), 2500);
    assert_eq!(members.chunks, 3);
    // The request went out on the owning shard, and its chunks were taken
    // out of the stream.
    let mut sent_on = Vec::new();
    while let Ok(Some((from, event))) =
        tokio::time::timeout(Duration::from_millis(200), cluster.next_event()).await
    {
        match event {
            ShardEvent::Sent { opcode: 8 } => sent_on.push(from),
            ShardEvent::Dispatch { event_type, .. } => {
                assert_ne!(event_type, "GUILD_MEMBERS_CHUNK", "collected, not streamed");
            }
            _ => {}
        }
    }
    assert_eq!(sent_on, vec![shard]);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

fn config_for_ids(sim: &Sim, ids: Vec<u32>, total: u32) -> ClusterConfig {
    config(sim, ShardSpec::Ids { ids, total })
}

#[tokio::test(start_paused = true)]
async fn cluster_sends_to_the_owning_shard_and_presence_to_every_shard() {
    let sim = sim_with(1, 4).await;
    let mut cluster = Cluster::start(config_for_ids(&sim, vec![0, 2], 4))
        .await
        .unwrap();
    until_all(&mut cluster, &[0, 2], is_ready).await;
    // A guild of shard 1 runs elsewhere.
    let elsewhere = Id::new((5u64 * 4 + 1) << 22);
    assert_eq!(cluster.sender().shard_for_guild(elsewhere), 1);
    let error = cluster
        .sender()
        .send_to_guild(elsewhere, Command::Heartbeat { seq: None })
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::UnknownShard(1)), "{error}");
    cluster
        .sender()
        .send_to_all(Command::UpdatePresence(UpdatePresence {
            since: None,
            activities: vec![Activity::new(ActivityType::Playing, "shardwire")],
            status: Status::Online,
            afk: false,
        }))
        .await
        .unwrap();
    let (sent, _) = until_all(&mut cluster, &[0, 2], |e| {
        *e == ShardEvent::Sent { opcode: 3 }
    })
    .await;
    assert_eq!(sent.len(), 2);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test(start_paused = true)]
async fn cluster_restart_add_remove_then_shutdown_and_resume_with_no_identify() {
    let sim = sim_with(3, 3).await;
    let mut cluster = recommended(&sim).await;
    until_all(&mut cluster, &[0, 1, 2], is_ready).await;
    // Restart shard 1: a new task that resumes.
    cluster.restart(1).unwrap();
    until_all(&mut cluster, &[1], is_resumed).await;
    // Remove shard 2 and add it back from its session.
    let session = cluster.remove(2).unwrap().expect("a session");
    assert_eq!(cluster.shard_ids(), vec![0, 1]);
    assert!(matches!(
        cluster.remove(2),
        Err(ClusterError::UnknownShard(2))
    ));
    cluster.add(2, Some(session)).unwrap();
    assert!(cluster.add(2, None).is_err(), "already runs");
    assert!(cluster.add(3, None).is_err(), "out of range");
    until_all(&mut cluster, &[2], is_resumed).await;
    assert_eq!(sim.observations().identifies.len(), 3);

    let Shutdown {
        sessions, events, ..
    } = cluster.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        sessions.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2])
    );
    let disconnected: BTreeSet<u32> = events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                ShardEvent::Disconnected {
                    code: Some(4000),
                    ..
                }
            )
        })
        .map(|(shard, _)| *shard)
        .collect();
    assert_eq!(disconnected, BTreeSet::from([0, 1, 2]), "{events:?}");

    // A new start from the exported sessions resumes every shard.
    let mut config = config(&sim, ShardSpec::Recommended);
    config.sessions = sessions.clone();
    let mut cluster = Cluster::start(config).await.unwrap();
    until_all(&mut cluster, &[0, 1, 2], is_resumed).await;
    let observations = sim.observations();
    assert_eq!(
        observations.identifies.len(),
        3,
        "no identify after the restart"
    );
    let resumed: HashMap<String, u64> = observations
        .resumes
        .iter()
        .map(|r| (r.session_id.clone(), r.seq))
        .collect();
    for session in sessions.values() {
        assert_eq!(resumed.get(&session.session_id), Some(&session.seq));
    }
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
}

#[test]
fn shard_spec_range_is_those_ids_of_the_total() {
    assert_eq!(
        ShardSpec::range(2..5, 8),
        ShardSpec::Ids {
            ids: vec![2, 3, 4],
            total: 8
        }
    );
    assert_eq!(
        ShardSpec::range(3..3, 8),
        ShardSpec::Ids {
            ids: vec![],
            total: 8
        }
    );
}

#[tokio::test(start_paused = true)]
async fn cluster_from_a_range_sends_on_the_named_shard_and_reports_status_and_sessions() {
    let sim = sim_with(1, 4).await;
    let mut cluster = Cluster::start(config(&sim, ShardSpec::range(1..3, 4)))
        .await
        .unwrap();
    assert_eq!(cluster.shard_ids(), vec![1, 2]);
    until_all(&mut cluster, &[1, 2], is_ready).await;
    assert_eq!(identified(&sim), BTreeSet::from([[1, 4], [2, 4]]));

    // send: on shard 2 and no other.
    cluster
        .sender()
        .send(
            2,
            Command::RequestSoundboardSounds(shardwire_codec::RequestSoundboardSounds {
                guild_ids: vec![Id::new(5)],
            }),
        )
        .await
        .unwrap();
    let answered_on = loop {
        let (shard, event) = next(&mut cluster).await;
        if matches!(&event, ShardEvent::Dispatch { event_type, .. } if event_type == "SOUNDBOARD_SOUNDS")
        {
            break shard;
        }
        if event == (ShardEvent::Sent { opcode: 31 }) {
            assert_eq!(shard, 2, "sent on the named shard");
        }
    };
    assert_eq!(answered_on, 2);
    let error = cluster
        .sender()
        .send(0, Command::Heartbeat { seq: None })
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::UnknownShard(0)), "{error}");

    // status and sessions: the simulator's sessions, shard by shard.
    let held: HashMap<u32, String> = sim
        .sessions()
        .into_iter()
        .map(|session| (session.shard, session.session_id))
        .collect();
    assert_eq!(held.len(), 2);
    for id in [1, 2] {
        let status = cluster.status(id).expect("a status");
        assert_eq!(status.id, id);
        assert_eq!(status.state, ShardState::Active);
        let session = status.session.expect("a session");
        assert_eq!(Some(&session.session_id), held.get(&id), "shard {id}");
    }
    assert_eq!(cluster.status(0), None, "not a shard of this cluster");
    let sessions = cluster.sessions();
    assert_eq!(
        sessions.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2])
    );
    for (id, session) in &sessions {
        assert_eq!(Some(&session.session_id), held.get(id), "shard {id}");
        assert_eq!(cluster.status(*id).unwrap().session.as_ref(), Some(session));
    }
}

#[tokio::test(start_paused = true)]
async fn request_guild_members_gives_up_after_its_timeout() {
    let sim = sim_with(1, 1).await;
    let mut cluster = recommended(&sim).await;
    until_all(&mut cluster, &[0], is_ready).await;
    // The simulator reads each frame half a second late: no chunk can come
    // within 50 ms.
    assert_eq!(
        sim.inject(Some(0), Fault::ReadSlowly(Duration::from_millis(500))),
        1
    );
    let timeout = Duration::from_millis(50);
    let asked = Instant::now();
    let error = cluster
        .sender()
        .request_guild_members(
            RequestGuildMembers {
                guild_id: Id::new(1 << 22),
                selection: MemberSelection::Query {
                    query: String::new(),
                    limit: 0,
                },
                presences: false,
                nonce: Some("late".into()),
            },
            timeout,
        )
        .await
        .unwrap_err();
    // At the timeout exactly (the clock is paused), not when the late
    // answer comes.
    assert_eq!(asked.elapsed(), timeout);
    assert!(
        matches!(error, ClusterError::Timeout(t) if t == timeout),
        "{error}"
    );
}
