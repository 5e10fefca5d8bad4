//! The cluster with real twilight crates, against shardwire-sim on
//! loopback: twilight-cache-inmemory fed the typed events as they are,
//! twilight-http's gateway info instead of the cluster's own request, and
//! the sender shared by tasks that send twilight's and shardwire's
//! payloads while another takes the events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use shardwire_cluster::{Cluster, ClusterConfig, ShardSpec};
use shardwire_codec::{Activity, Command, RequestSoundboardSounds, Token};
use shardwire_shard::ShardEvent;
use shardwire_sim::{Sim, SimBuilder};
use twilight_cache_inmemory::DefaultInMemoryCache;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::Event;
use twilight_model::gateway::payload::outgoing::UpdatePresence;
use twilight_model::gateway::presence::{ActivityType, MinimalActivity, Status};
use twilight_model::id::Id;
use twilight_model::id::marker::GuildMarker;

const WINDOW: Duration = Duration::from_millis(100);
const BOUND: Duration = Duration::from_secs(20);

/// A sim recommending `shards`, all identifying at once, with a short
/// identify window.
fn sim(shards: u32) -> SimBuilder {
    Sim::builder()
        .shards(shards)
        .max_concurrency(shards)
        .identify_window(WINDOW)
}

fn config(sim: &Sim) -> ClusterConfig {
    let mut config = ClusterConfig::new(
        Token::new(sim.token()),
        Intents::GUILDS | Intents::GUILD_MEMBERS | Intents::GUILD_PRESENCES,
    );
    config.api_base = sim.api_url().to_owned();
    config.shards = ShardSpec::Recommended;
    config.identify_window = WINDOW;
    config.typed = true;
    config
}

async fn next(cluster: &mut Cluster) -> (u32, ShardEvent) {
    let (shard, event) = tokio::time::timeout(BOUND, cluster.next_event())
        .await
        .expect("an event in time")
        .expect("the stream goes on");
    if let ShardEvent::Fatal(error) = &event {
        panic!("shard {shard}: {error}");
    }
    (shard, event)
}

/// twilight-http's `host:port` for the sim's REST (proxy mode, plain HTTP).
fn rest_host(sim: &Sim) -> String {
    sim.api_url()
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/api/v10"))
        .expect("the sim's REST is http://host:port/api/v10")
        .to_owned()
}

#[tokio::test]
async fn the_in_memory_cache_takes_the_typed_events_as_they_are() {
    let sim = sim(2)
        .guilds_per_shard(3)
        .members_per_guild(7)
        .start()
        .await
        .unwrap();
    let expected_guilds = (sim.config().shards * sim.config().guilds_per_shard) as usize;
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let cache = DefaultInMemoryCache::new();
    // What the sim sent in each GUILD_CREATE, read from the raw JSON.
    let mut sent: BTreeMap<Id<GuildMarker>, (u32, [usize; 4])> = BTreeMap::new();
    let mut user = None;
    while sent.len() < expected_guilds {
        let (shard, event) = next(&mut cluster).await;
        let Some(typed) = event.twilight() else {
            continue;
        };
        cache.update(typed);
        match typed {
            Event::Ready(ready) => user = Some(ready.user.id),
            Event::GuildCreate(guild) => {
                let ShardEvent::Dispatch { json, .. } = &event else {
                    unreachable!("a typed event is a dispatch");
                };
                let raw: serde_json::Value = serde_json::from_str(json.as_str()).unwrap();
                let count = |field: &str| raw["d"][field].as_array().map_or(0, Vec::len);
                let counts = ["members", "channels", "roles", "presences"].map(count);
                sent.insert(guild.id(), (shard, counts));
            }
            _ => {}
        }
    }

    let stats = cache.stats();
    assert_eq!(stats.guilds(), expected_guilds);
    let members = sim.config().members_per_guild;
    let mut users = BTreeSet::new();
    for (id, (shard, [sent_members, channels, roles, presences])) in &sent {
        assert_eq!(cluster.sender().shard_for_guild(*id), *shard);
        assert_eq!(*sent_members, members);
        let guild = cache.guild(*id).expect("the guild is cached");
        assert_eq!(guild.member_count(), Some(members as u64));
        assert_eq!(stats.guild_members(*id), Some(members));
        assert_eq!(stats.guild_channels(*id), Some(*channels));
        assert_eq!(stats.guild_roles(*id), Some(*roles));
        assert_eq!(stats.guild_presences(*id), Some(*presences));
        users.extend(cache.guild_members(*id).unwrap().iter().copied());
    }
    assert_eq!(stats.members(), expected_guilds * members);
    assert_eq!(stats.users(), users.len());
    assert_eq!(
        cache.current_user().map(|u| u.id),
        Some(user.expect("a READY"))
    );
}

#[tokio::test]
async fn twilight_http_supplies_the_gateway_info_and_the_cluster_asks_for_none() {
    let sim = sim(3).start().await.unwrap();
    let client = twilight_http::Client::builder()
        .proxy(rest_host(&sim), true)
        .token(sim.token().to_owned())
        .timeout(Duration::from_secs(5))
        .build();
    let info = tokio::time::timeout(BOUND, async {
        let response = client.gateway().authed().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response.model().await?)
    })
    .await
    .expect("twilight-http answered in time")
    .expect("GET /gateway/bot through twilight-http");
    assert_eq!(info.shards, sim.config().shards);
    assert_eq!(info.url, sim.gateway_url());
    let requests = sim.observations().gateway_bot_requests;
    assert_eq!(requests.len(), 1, "twilight-http's request");
    assert!(requests[0].authorized && requests[0].status == 200);

    let mut config = config(&sim);
    config.gateway_info = Some(info.into());
    let mut cluster = Cluster::start(config).await.unwrap();
    assert_eq!(cluster.total(), sim.config().shards);
    let mut ready = BTreeSet::new();
    while ready.len() < sim.config().shards as usize {
        if let (shard, ShardEvent::Ready { .. }) = next(&mut cluster).await {
            ready.insert(shard);
        }
    }
    let identifies = sim.observations().identifies;
    let shards: BTreeSet<[u32; 2]> = identifies.iter().map(|i| i.shard).collect();
    assert_eq!(shards, (0..3).map(|id| [id, 3]).collect());
    assert_eq!(
        sim.observations().gateway_bot_requests.len(),
        1,
        "no GET /gateway/bot from the cluster"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// What one task sends in one round.
const ROUNDS: u64 = 3;
const TASKS: u64 = 4;

/// A guild of `shard` of 2 unique to (task, round).
fn guild_of(shard: u64, task: u64, round: u64) -> Id<GuildMarker> {
    Id::new(((1000 + task * 100 + round) * 2 + shard) << 22)
}

#[tokio::test]
async fn the_sender_serves_several_tasks_while_another_takes_the_events() {
    let sim = sim(2).start().await.unwrap();
    let mut cluster = Cluster::start(config(&sim)).await.unwrap();
    let mut ready = BTreeSet::new();
    while ready.len() < 2 {
        if let (shard, ShardEvent::Ready { .. }) = next(&mut cluster).await {
            ready.insert(shard);
        }
    }

    // Each task, each round: twilight's presence on every shard, shardwire's
    // presence on one shard, and a soundboard request routed by guild.
    let sender = cluster.sender();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let activity = MinimalActivity {
                        kind: ActivityType::Playing,
                        name: format!("twilight {task} {round}"),
                        url: None,
                    };
                    let presence =
                        UpdatePresence::new(vec![activity.into()], false, None, Status::Online)
                            .unwrap();
                    sender.send_to_all(presence).await?;
                    let shard = u32::try_from((task + round) % 2).unwrap();
                    let presence = Command::UpdatePresence(shardwire_codec::UpdatePresence {
                        since: None,
                        activities: vec![Activity::new(
                            ActivityType::Watching,
                            format!("shardwire {task} {round}"),
                        )],
                        status: Status::Idle,
                        afk: false,
                    });
                    sender.send(shard, presence).await?;
                    let guild = guild_of(u64::from(shard), task, round);
                    let sounds = Command::RequestSoundboardSounds(RequestSoundboardSounds {
                        guild_ids: vec![guild],
                    });
                    sender.send_to_guild(guild, sounds).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<_, shardwire_cluster::ClusterError>(())
            })
        })
        .collect();

    // This task takes the events meanwhile: every soundboard answer, on the
    // shard of its guild.
    let wanted = (TASKS * ROUNDS) as usize;
    let mut answers: HashMap<String, u32> = HashMap::new();
    let mut tasks: Vec<_> = tasks.into_iter().map(Some).collect();
    let deadline = tokio::time::Instant::now() + BOUND;
    while answers.len() < wanted || tasks.iter().any(Option::is_some) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} answers of {wanted} in time",
            answers.len()
        );
        // A task that ended tells why at once.
        for slot in &mut tasks {
            if slot
                .as_ref()
                .is_some_and(tokio::task::JoinHandle::is_finished)
            {
                let task = slot.take().unwrap();
                task.await
                    .expect("the task did not panic")
                    .expect("every send was taken");
            }
        }
        let Ok(Some((shard, event))) =
            tokio::time::timeout(Duration::from_millis(20), cluster.next_event()).await
        else {
            continue;
        };
        // twilight-model has no type for it: it comes out raw.
        if let ShardEvent::Dispatch {
            event_type, json, ..
        } = &event
            && event_type == "SOUNDBOARD_SOUNDS"
        {
            let raw: serde_json::Value = serde_json::from_str(json.as_str()).unwrap();
            let guild = raw["d"]["guild_id"].as_str().unwrap().to_owned();
            assert!(answers.insert(guild, shard).is_none(), "one answer each");
        }
    }

    // Everything reached the sim, each on its shard.
    let commands = sim.observations().commands;
    let mut presences: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut sounds: BTreeMap<String, u32> = BTreeMap::new();
    for command in &commands {
        let shard = command.shard.expect("an identified shard");
        match command.op {
            3 => {
                let name = command.d["activities"][0]["name"].as_str().unwrap();
                presences.entry(name.to_owned()).or_default().insert(shard);
            }
            31 => {
                let guild = command.d["guild_ids"][0].as_str().unwrap();
                assert!(sounds.insert(guild.to_owned(), shard).is_none(), "once");
            }
            op => panic!("unexpected op {op}"),
        }
    }
    assert_eq!(commands.len(), (TASKS * ROUNDS * 4) as usize);
    for task in 0..TASKS {
        for round in 0..ROUNDS {
            let shard = u32::try_from((task + round) % 2).unwrap();
            assert_eq!(
                presences[&format!("twilight {task} {round}")],
                BTreeSet::from([0, 1])
            );
            assert_eq!(
                presences[&format!("shardwire {task} {round}")],
                BTreeSet::from([shard])
            );
            let guild = guild_of(u64::from(shard), task, round).to_string();
            assert_eq!(sounds[&guild], shard);
            assert_eq!(answers[&guild], shard);
        }
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
