//! Resharding against shardwire-sim: a second generation beside the
//! running one, the switch, and every guild event delivered once across it.
//!
//! The simulator's guild pool sends each guild's events to every session
//! that owns it, in both generations, and records what it sent; the tests
//! compare what the bot received, guild by guild, with that record.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the figures of each run, and the events a failed one missed"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardwire_cluster::{
    Cluster, ClusterError, GatewayError, LocalQueue, SessionStartLimit, ShardSpec,
};
use shardwire_codec::Payload;
use shardwire_shard::{FatalError, IdentifyQueue, ShardEvent, WaitTurn};
use shardwire_sim::{ClosedBy, Fault, Sim};
use tokio::time::Instant;

use common::{GUILDS, RATE, WINDOW, config, read_for, read_until, sim, until_ready};

mod common;

/// Reshards from the running count to `to` and reads until the switch.
async fn reshard_and_switch(cluster: &mut Cluster, seen: &mut Vec<(u32, ShardEvent)>, to: u32) {
    let from = cluster.total();
    cluster.reshard(to).await.unwrap();
    read_until(cluster, seen, |event| {
        matches!(event, ShardEvent::Resharded { from: f, to: t, .. } if (*f, *t) == (from, to))
    })
    .await;
}

/// Events until `done` says so or `limit` has passed; whether `done` did.
async fn read_until_or(
    cluster: &mut Cluster,
    seen: &mut Vec<(u32, ShardEvent)>,
    limit: Duration,
    mut done: impl FnMut(&ShardEvent) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    let mut stopped = false;
    read_until(cluster, seen, |event| {
        stopped = done(event);
        stopped || Instant::now() >= end
    })
    .await;
    stopped
}

/// Events until none has come for `quiet` (once the stream is stopped).
async fn drain(cluster: &mut Cluster, seen: &mut Vec<(u32, ShardEvent)>, quiet: Duration) {
    while let Ok(Some(event)) = tokio::time::timeout(quiet, cluster.next_event()).await {
        seen.push(event);
    }
}

/// `(name, d)` of each guild event the bot was handed as its own (not the
/// new generation's copies marked `FromReshard`), by guild id.
fn received(seen: &[(u32, ShardEvent)]) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let mut by_guild: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (_, event) in seen {
        let ShardEvent::Dispatch {
            event_type, json, ..
        } = event
        else {
            continue;
        };
        let d = Payload::scan(json.as_bytes()).unwrap().data();
        let value: serde_json::Value = serde_json::from_str(d).unwrap();
        if let Some(guild) = value.get("guild_id").and_then(|g| g.as_str())
            && !matches!(&**event_type, "GUILD_CREATE" | "READY")
        {
            by_guild
                .entry(guild.to_owned())
                .or_default()
                .push((event_type.to_string(), d.as_bytes().to_vec()));
        }
    }
    by_guild
}

/// What the simulator sent, by guild.
fn sent(sim: &Sim) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    assert!(!sim.pool_events_overflowed());
    let mut by_guild: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for event in sim.pool_events() {
        by_guild
            .entry(event.guild_id)
            .or_default()
            .push((event.name, event.d));
    }
    by_guild
}

/// Lost and doubled events, guild by guild: the record against what came.
/// Each guild's received events must be its sent ones, in order.
fn compare(
    sent: &BTreeMap<String, Vec<(String, Vec<u8>)>>,
    received: &BTreeMap<String, Vec<(String, Vec<u8>)>>,
) -> (usize, usize, usize) {
    let (mut checked, mut lost, mut doubled) = (0, 0, 0);
    for (guild, wanted) in sent {
        let got = received.get(guild).map_or(&[][..], Vec::as_slice);
        checked += wanted.len();
        let mut counts: HashMap<&(String, Vec<u8>), i64> = HashMap::new();
        for event in wanted {
            *counts.entry(event).or_default() += 1;
        }
        for event in got {
            *counts.entry(event).or_default() -= 1;
        }
        for (event, count) in &counts {
            if *count != 0 {
                // Which event, for whoever reads a failure.
                let at = wanted.iter().position(|w| w == *event);
                eprintln!(
                    "guild {guild}: event {at:?} of {} came {} times too few",
                    wanted.len(),
                    count
                );
            }
        }
        for count in counts.values() {
            if *count > 0 {
                lost += *count as usize;
            } else {
                doubled += (-*count) as usize;
            }
        }
        if lost == 0 && doubled == 0 {
            assert_eq!(got, wanted.as_slice(), "guild {guild}: in order");
        }
    }
    (checked, lost, doubled)
}

struct Run {
    took: Duration,
    checked: usize,
    lost: usize,
    doubled: usize,
    identifies: usize,
    marked_guild_creates: usize,
}

/// 4 shards, then a reshard to 8 under a steady stream, the new
/// generation's events `new_delay` behind the old one's (or the old one's
/// `old_delay` behind).
async fn reshard_4_to_8(new_delay: Duration, old_delay: Duration) -> Run {
    let sim = sim(4).start().await.unwrap();
    sim.set_event_delay(8, new_delay);
    sim.set_event_delay(4, old_delay);
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    // Events flow for a second before the reshard.
    read_for(&mut cluster, &mut seen, Duration::from_secs(1)).await;
    cluster.reshard(8).await.unwrap();
    let mut took = None;
    read_until(&mut cluster, &mut seen, |event| {
        if let ShardEvent::Resharded { from, to, took: t } = event {
            assert_eq!((*from, *to), (4, 8));
            took = Some(*t);
        }
        took.is_some()
    })
    .await;
    assert_eq!(cluster.total(), 8);
    assert_eq!(cluster.shard_ids(), (0..8).collect::<Vec<_>>());
    // Past the overlap window, and a second more of events from the new
    // generation alone; then the stream stops and the rest is read.
    read_for(
        &mut cluster,
        &mut seen,
        Duration::from_secs(6) + old_delay + new_delay,
    )
    .await;
    sim.set_guild_event_rate(0.0);
    drain(
        &mut cluster,
        &mut seen,
        Duration::from_secs(3) + old_delay + new_delay,
    )
    .await;

    let resharding: Vec<_> = seen
        .iter()
        .filter(|(_, e)| matches!(e, ShardEvent::Resharding { .. }))
        .collect();
    assert_eq!(resharding.len(), 1);
    let marked_guild_creates = seen
        .iter()
        .filter(|(_, e)| {
            matches!(e, ShardEvent::FromReshard { total: 8, event }
                if matches!(&**event, ShardEvent::Dispatch { event_type, .. } if event_type == "GUILD_CREATE"))
        })
        .count();
    let marked_readies = seen
        .iter()
        .filter(|(_, e)| {
            matches!(e, ShardEvent::FromReshard { total: 8, event }
                if matches!(&**event, ShardEvent::Ready { .. }))
        })
        .count();
    assert_eq!(marked_readies, 8);
    let (checked, lost, doubled) = compare(&sent(&sim), &received(&seen));
    let observations = sim.observations();
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    // The old generation's sessions were ended by the client.
    let ended: Vec<u32> = observations
        .closes
        .iter()
        .filter(|c| c.by == ClosedBy::Client && c.code == Some(1000))
        .filter_map(|c| c.shard)
        .collect();
    assert_eq!(ended.len(), 4, "{:?}", observations.closes);
    let identifies = observations
        .identifies
        .iter()
        .filter(|i| i.accepted)
        .count();
    let run = Run {
        took: took.unwrap(),
        checked,
        lost,
        doubled,
        identifies,
        marked_guild_creates,
    };
    drop(cluster);
    sim.shutdown().await;
    run
}

fn report(name: &str, run: &Run) {
    println!(
        "{name}: switch after {:?}, overlap window 5 s, {} events checked, {} lost, {} doubled, {} identifies, {} GUILD_CREATEs marked",
        run.took, run.checked, run.lost, run.doubled, run.identifies, run.marked_guild_creates
    );
}

#[tokio::test(start_paused = true)]
async fn reshard_4_to_8_delivers_every_event_once_in_order_per_guild() {
    let run = reshard_4_to_8(Duration::ZERO, Duration::ZERO).await;
    report("4 -> 8", &run);
    assert!(run.checked > 2_000, "a steady stream: {}", run.checked);
    assert_eq!((run.lost, run.doubled), (0, 0));
    assert_eq!(run.identifies, 4 + 8);
    assert_eq!(run.marked_guild_creates, GUILDS as usize);
}

#[tokio::test(start_paused = true)]
async fn reshard_with_the_new_generation_200ms_behind_loses_and_doubles_nothing() {
    let run = reshard_4_to_8(Duration::from_millis(200), Duration::ZERO).await;
    report("new 200 ms behind", &run);
    assert_eq!((run.lost, run.doubled), (0, 0));
    assert_eq!(run.identifies, 12);
}

#[tokio::test(start_paused = true)]
async fn reshard_with_the_new_generation_2s_behind_loses_and_doubles_nothing() {
    let run = reshard_4_to_8(Duration::from_secs(2), Duration::ZERO).await;
    report("new 2 s behind", &run);
    assert_eq!((run.lost, run.doubled), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reshard_with_the_old_generation_2s_behind_loses_and_doubles_nothing() {
    let run = reshard_4_to_8(Duration::ZERO, Duration::from_secs(2)).await;
    report("old 2 s behind", &run);
    assert_eq!((run.lost, run.doubled), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reshard_started_by_a_4011_with_auto_reshard() {
    let sim = sim(4).max_guilds_per_shard(16).start().await.unwrap();
    let mut config = config(&sim);
    config.auto_reshard = true;
    let mut cluster = Cluster::start(config).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    read_for(&mut cluster, &mut seen, Duration::from_secs(1)).await;
    sim.set_recommended_shards(8);
    assert_eq!(sim.inject(Some(2), Fault::Close(4011)), 1);
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::Resharded { from: 4, to: 8, .. })
    })
    .await;
    let fatal: Vec<u32> = seen
        .iter()
        .filter(|(_, e)| matches!(e, ShardEvent::Fatal(FatalError::ShardingRequired)))
        .map(|(shard, _)| *shard)
        .collect();
    assert_eq!(fatal, [2]);
    assert!(
        seen.iter()
            .any(|(_, e)| matches!(e, ShardEvent::Resharding { from: 4, to: 8 }))
    );
    read_for(&mut cluster, &mut seen, Duration::from_secs(6)).await;
    sim.set_guild_event_rate(0.0);
    drain(&mut cluster, &mut seen, Duration::from_secs(3)).await;
    // Shard 2's guilds had no session between the 4011 and the new
    // generation: the simulator sent them nothing to lose.
    let (checked, lost, doubled) = compare(&sent(&sim), &received(&seen));
    println!("4011 -> 8: {checked} events checked, {lost} lost, {doubled} doubled");
    assert!(checked > 2_000);
    assert_eq!((lost, doubled), (0, 0));
    let observations = sim.observations();
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    assert_eq!(
        observations
            .identifies
            .iter()
            .filter(|i| i.accepted)
            .count(),
        12
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_without_auto_reshard_a_4011_stays_fatal_and_names_the_fix() {
    let sim = sim(2).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 2).await;
    sim.set_recommended_shards(4);
    sim.inject(Some(1), Fault::Close(4011));
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::Fatal(_))
    })
    .await;
    let Some((1, ShardEvent::Fatal(error))) = seen.last() else {
        panic!("{:?}", seen.last());
    };
    let message = error.to_string();
    assert!(
        message.contains("reshard") && message.contains("auto_reshard"),
        "{message}"
    );
    read_for(&mut cluster, &mut seen, Duration::from_secs(2)).await;
    assert!(
        !seen
            .iter()
            .any(|(_, e)| matches!(e, ShardEvent::Resharding { .. }))
    );
    assert_eq!(cluster.total(), 2);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_is_refused_with_the_figures_when_too_few_session_starts_remain() {
    // 4 identifies leave 3 starts: not enough for 8 new shards.
    let sim = sim(4).remaining(7).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    let error = cluster.reshard(8).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClusterError::Gateway(GatewayError::NotEnoughSessionStarts {
                wanted: 8,
                remaining: 3,
                ..
            })
        ),
        "{error}"
    );
    read_for(&mut cluster, &mut seen, Duration::from_secs(2)).await;
    assert!(
        !seen
            .iter()
            .any(|(_, e)| matches!(e, ShardEvent::Resharding { .. }))
    );
    assert_eq!(sim.observations().identifies.len(), 4, "nothing started");
    // A count of 0 or the current one is no reshard; nor is a slice's.
    for to in [0, 4] {
        assert!(matches!(
            cluster.reshard(to).await,
            Err(ClusterError::InvalidShards(_))
        ));
    }
    let mut slice = config(&sim);
    slice.shards = ShardSpec::range(0..2, 4);
    let part = Cluster::start(slice).await.unwrap();
    let error = part.sender().reshard(8).await.unwrap_err();
    assert!(error.to_string().contains("whole bot"), "{error}");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_cancelled_by_shutdown_keeps_the_old_generation_and_exports_its_sessions() {
    // One identify bucket: the 8 new shards take 8 windows to be READY.
    let sim = sim(4).max_concurrency(1).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    let old: BTreeMap<u32, String> = cluster
        .sessions()
        .into_iter()
        .map(|(id, session)| (id, session.session_id))
        .collect();
    assert_eq!(old.len(), 4);
    let sender = cluster.sender();
    sender.reshard(8).await.unwrap();
    assert!(matches!(
        sender.reshard(8).await,
        Err(ClusterError::ReshardUnderWay)
    ));
    // Two new shards READY, then the shutdown.
    let mut new_ready = 0;
    read_until(&mut cluster, &mut seen, |event| {
        new_ready += usize::from(matches!(event, ShardEvent::FromReshard { event, .. }
            if matches!(**event, ShardEvent::Ready { .. })));
        new_ready == 2
    })
    .await;
    let shutdown = cluster.shutdown(Duration::from_secs(2)).await;
    let exported: BTreeMap<u32, String> = shutdown
        .sessions
        .iter()
        .map(|(id, session)| (*id, session.session_id.clone()))
        .collect();
    assert_eq!(exported, old, "the old generation's sessions");
    // The new generation's two sessions were ended (its other shards,
    // still waiting for their identify turn, closed too).
    let observations = sim.observations();
    let ended = observations
        .closes
        .iter()
        .filter(|c| c.by == ClosedBy::Client && c.code == Some(1000) && c.shard.is_some())
        .count();
    assert_eq!(ended, 2, "{:?}", observations.closes);
    let unresumable = observations
        .closes
        .iter()
        .filter(|c| c.code != Some(shardwire_shard::RESUMABLE_CLOSE) && c.code != Some(1000))
        .count();
    assert_eq!(unresumable, 0, "{:?}", observations.closes);
    // The old generation resumes from them: no identify.
    let identifies = observations.identifies.len();
    let mut again = config(&sim);
    again.shards = ShardSpec::Count(4);
    again.sessions = shutdown.sessions;
    let mut cluster = Cluster::start(again).await.unwrap();
    let mut resumed = 0;
    read_until(&mut cluster, &mut seen, |event| {
        resumed += usize::from(matches!(event, ShardEvent::Resumed));
        resumed == 4
    })
    .await;
    assert_eq!(sim.observations().identifies.len(), identifies);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_follows_a_higher_recommendation_found_by_the_periodic_check() {
    let sim = sim(2).start().await.unwrap();
    let mut config = config(&sim);
    config.auto_reshard = true;
    config.reshard_check_interval = Some(Duration::from_secs(2));
    let mut cluster = Cluster::start(config).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 2).await;
    // 3, rounded up to a multiple of max_concurrency (2).
    sim.set_recommended_shards(3);
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::Resharded { from: 2, to: 4, .. })
    })
    .await;
    assert_eq!(cluster.total(), 4);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_starts_when_a_ready_lists_more_guilds_than_the_threshold() {
    // 64 guilds on 2 shards: 32 a READY, over a threshold of 20. One more
    // shard, rounded up to a multiple of max_concurrency (2): 4.
    let sim = sim(2).start().await.unwrap();
    let mut config = config(&sim);
    config.auto_reshard = true;
    config.reshard_guild_threshold = 20;
    let mut cluster = Cluster::start(config).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::Resharded { from: 2, to: 4, .. })
    })
    .await;
    // The new shards' READYs (16 guilds) start nothing more.
    read_for(&mut cluster, &mut seen, Duration::from_secs(2)).await;
    let started = seen
        .iter()
        .filter(|(_, e)| matches!(e, ShardEvent::Resharding { .. }))
        .count();
    assert_eq!(started, 1);
    sim.shutdown().await;
}

/// The default queue, but shard 7's turn never comes while `held`: a new
/// shard of a reshard to 8 that is never READY.
#[derive(Debug)]
struct HoldSeven {
    inner: LocalQueue,
    held: AtomicBool,
}

impl HoldSeven {
    fn new() -> Arc<Self> {
        let limit = SessionStartLimit::new(1000, 1000, Duration::from_secs(3600), 2);
        Arc::new(Self {
            inner: LocalQueue::with_window(&limit, WINDOW),
            held: AtomicBool::new(true),
        })
    }
}

impl IdentifyQueue for HoldSeven {
    fn wait_turn(&self, shard_id: u32) -> WaitTurn<'_> {
        if shard_id == 7 && self.held.load(Ordering::Acquire) {
            return Box::pin(std::future::pending());
        }
        self.inner.wait_turn(shard_id)
    }
}

/// The reasons of the `ReshardAbandoned`s seen.
fn abandoned(seen: &[(u32, ShardEvent)]) -> Vec<String> {
    seen.iter()
        .filter_map(|(_, event)| match event {
            ShardEvent::ReshardAbandoned {
                from: 4,
                to: 8,
                reason,
            } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn reshard_not_switched_by_its_deadline_is_abandoned_and_the_old_generation_goes_on() {
    let sim = sim(4).start().await.unwrap();
    let queue = HoldSeven::new();
    let mut config = config(&sim);
    config.queue = Some(queue.clone());
    let deadline = Duration::from_secs(10);
    config.reshard_deadline = Some(deadline);
    let mut cluster = Cluster::start(config).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    read_for(&mut cluster, &mut seen, Duration::from_secs(1)).await;
    // Quiet while it waits: the deadline's own timer must end it.
    sim.set_guild_event_rate(0.0);
    let started = Instant::now();
    cluster.reshard(8).await.unwrap();
    let gave_up = read_until_or(&mut cluster, &mut seen, Duration::from_secs(30), |event| {
        matches!(event, ShardEvent::ReshardAbandoned { .. })
    })
    .await;
    assert!(gave_up, "abandoned at its deadline");
    let took = started.elapsed();
    println!("abandoned after {took:?}: {:?}", abandoned(&seen));
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(50),
        "{took:?}"
    );
    let reasons = abandoned(&seen);
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("new shards 7 of 8 not READY"),
        "{}",
        reasons[0]
    );
    assert_eq!(cluster.total(), 4);
    assert_eq!(cluster.shard_ids(), (0..4).collect::<Vec<_>>());
    assert!(matches!(
        cluster.status(0).map(|status| status.state),
        Some(shardwire_shard::ShardState::Active)
    ));
    // The old generation still delivers, every event once.
    let before = seen.len();
    sim.set_guild_event_rate(RATE);
    read_for(&mut cluster, &mut seen, Duration::from_secs(2)).await;
    assert!(
        seen[before..]
            .iter()
            .filter(|(_, e)| matches!(e, ShardEvent::Dispatch { .. }))
            .count()
            > 500
    );
    sim.set_guild_event_rate(0.0);
    drain(&mut cluster, &mut seen, Duration::from_secs(1)).await;
    let (checked, lost, doubled) = compare(&sent(&sim), &received(&seen));
    assert!(checked > 500);
    assert_eq!((lost, doubled), (0, 0));
    // The new shards were closed with 1000: the seven identified, and
    // shard 7, which never had its turn.
    let observations = sim.observations();
    let new_connections: Vec<u64> = observations
        .identifies
        .iter()
        .filter(|i| i.shard[1] == 8)
        .map(|i| i.connection)
        .collect();
    assert_eq!(new_connections.len(), 7);
    let ended = observations
        .closes
        .iter()
        .filter(|c| c.by == ClosedBy::Client && c.code == Some(1000))
        .count();
    assert_eq!(ended, 8, "{:?}", observations.closes);
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    // Another reshard is taken, and with shard 7 let through it switches.
    queue.held.store(false, Ordering::Release);
    sim.set_guild_event_rate(RATE);
    reshard_and_switch(&mut cluster, &mut seen, 8).await;
    assert_eq!(cluster.total(), 8);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_cancelled_before_its_switch_keeps_the_old_generation_and_not_after_it() {
    // One identify bucket: the 8 new shards take 8 windows to be READY.
    let sim = sim(4).max_concurrency(1).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    let new_ready = |count: usize| {
        let mut ready = 0;
        move |event: &ShardEvent| {
            ready += usize::from(matches!(event, ShardEvent::FromReshard { event, .. }
                if matches!(**event, ShardEvent::Ready { .. })));
            ready == count
        }
    };
    assert!(!cluster.cancel_reshard(), "nothing to cancel");

    // Through the cluster, two new shards READY.
    cluster.reshard(8).await.unwrap();
    read_until(&mut cluster, &mut seen, new_ready(2)).await;
    assert!(cluster.cancel_reshard());
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::ReshardAbandoned { .. })
    })
    .await;
    assert_eq!(abandoned(&seen), ["cancelled"]);
    assert_eq!(cluster.total(), 4);

    // Through the sender, one new shard READY.
    let sender = cluster.sender();
    sender.reshard(8).await.unwrap();
    read_until(&mut cluster, &mut seen, new_ready(1)).await;
    let cancel = tokio::spawn({
        let sender = sender.clone();
        async move { sender.cancel_reshard().await }
    });
    read_until(&mut cluster, &mut seen, |event| {
        matches!(event, ShardEvent::ReshardAbandoned { .. })
    })
    .await;
    assert!(cancel.await.unwrap().unwrap());
    assert_eq!(abandoned(&seen), ["cancelled", "cancelled"]);
    assert_eq!(cluster.total(), 4);
    read_for(&mut cluster, &mut seen, Duration::from_secs(1)).await;
    let observations = sim.observations();
    let ended = observations
        .closes
        .iter()
        .filter(|c| c.by == ClosedBy::Client && c.code == Some(1000) && c.shard.is_some())
        .count();
    assert_eq!(ended, 3, "the new sessions: {:?}", observations.closes);
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );

    // Once switched, a cancel does nothing.
    reshard_and_switch(&mut cluster, &mut seen, 8).await;
    assert!(!cluster.cancel_reshard());
    let cancel = tokio::spawn(async move { sender.cancel_reshard().await });
    read_for(&mut cluster, &mut seen, Duration::from_secs(1)).await;
    assert!(!cancel.await.unwrap().unwrap());
    assert_eq!(cluster.total(), 8);
    assert_eq!(abandoned(&seen).len(), 2);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reshard_sends_commands_to_the_new_shard_that_owns_the_guild_after_the_switch() {
    use shardwire_codec::{MemberSelection, RequestGuildMembers};
    use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
    use twilight_model::id::Id;

    let sim = sim(4).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut seen = Vec::new();
    until_ready(&mut cluster, &mut seen, 4).await;
    reshard_and_switch(&mut cluster, &mut seen, 8).await;
    // A pool guild of new shard 5 (old shard 1, which still runs).
    let guild = sim
        .pool_guild_ids()
        .iter()
        .map(|id| id.parse::<u64>().unwrap())
        .find(|id| (id >> 22) % 8 == 5)
        .map(Id::new)
        .unwrap();
    let sender = cluster.sender();
    assert_eq!(sender.shard_for_guild(guild), 5);
    sender
        .send_to_guild(guild, UpdateVoiceState::new(guild, None, false, false))
        .await
        .unwrap();
    let request = RequestGuildMembers {
        guild_id: guild,
        selection: MemberSelection::Query {
            query: String::new(),
            limit: 0,
        },
        presences: false,
        nonce: None,
    };
    let members = sender
        .request_guild_members(request, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(members.guild_id, guild);
    read_for(&mut cluster, &mut seen, Duration::from_millis(200)).await;
    // Both went out on the connection that identified as [5, 8].
    let observations = sim.observations();
    let shard_of: HashMap<u64, [u32; 2]> = observations
        .identifies
        .iter()
        .filter(|i| i.accepted)
        .map(|i| (i.connection, i.shard))
        .collect();
    let commands: Vec<(u64, [u32; 2])> = observations
        .commands
        .iter()
        .filter(|c| c.d.get("guild_id").and_then(|g| g.as_str()) == Some(&guild.to_string()))
        .map(|c| (c.op, shard_of[&c.connection]))
        .collect();
    assert_eq!(commands, [(4, [5, 8]), (8, [5, 8])]);
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    sim.shutdown().await;
}
