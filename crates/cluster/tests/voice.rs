//! Voice through songbird's gateway half against shardwire-sim: a join
//! sends op 4 on the guild's shard, and the sim's VOICE_STATE_UPDATE and
//! VOICE_SERVER_UPDATE, routed to the call, complete it.

use std::time::Duration;

use shardwire_cluster::songbird::error::JoinError;
use shardwire_cluster::songbird::{Config, ConnectionInfo};
use shardwire_cluster::{Cluster, ClusterConfig, ShardSpec, Voice};
use shardwire_codec::Token;
use shardwire_shard::ShardEvent;
use shardwire_sim::Sim;
use tokio::task::JoinHandle;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::Event;
use twilight_model::id::Id;
use twilight_model::id::marker::{ChannelMarker, GuildMarker, UserMarker};

const WINDOW: Duration = Duration::from_millis(100);
const BOUND: Duration = Duration::from_secs(20);

async fn sim(shards: u32) -> Sim {
    Sim::builder()
        .shards(shards)
        .max_concurrency(shards)
        .identify_window(WINDOW)
        .start()
        .await
        .unwrap()
}

async fn cluster(sim: &Sim) -> Cluster {
    let mut config = ClusterConfig::new(
        Token::new(sim.token()),
        Intents::GUILDS | Intents::GUILD_VOICE_STATES,
    );
    config.api_base = sim.api_url().to_owned();
    config.shards = ShardSpec::Recommended;
    config.identify_window = WINDOW;
    config.typed = true;
    Cluster::start(config).await.unwrap()
}

/// What the cluster delivered until every shard had its guilds: the bot's
/// user id, each shard's session id and each shard's guilds.
struct Started {
    user: Id<UserMarker>,
    sessions: Vec<String>,
    guilds: Vec<Vec<Id<GuildMarker>>>,
}

async fn started(cluster: &mut Cluster, sim: &Sim) -> Started {
    let total = cluster.total() as usize;
    let per_shard = sim.config().guilds_per_shard as usize;
    let mut user = None;
    let mut sessions = vec![String::new(); total];
    let mut guilds = vec![Vec::new(); total];
    while guilds.iter().any(|g| g.len() < per_shard) {
        let (shard, event) = tokio::time::timeout(BOUND, cluster.next_event())
            .await
            .expect("the guilds in time")
            .expect("the stream goes on");
        match event.twilight() {
            Some(Event::Ready(ready)) => {
                user = Some(ready.user.id);
                sessions[shard as usize].clone_from(&ready.session_id);
            }
            Some(Event::GuildCreate(guild)) => guilds[shard as usize].push(guild.id()),
            _ => {}
        }
    }
    Started {
        user: user.expect("a READY"),
        sessions,
        guilds,
    }
}

/// Feeds the cluster's events to `voice` until every join is done; returns
/// the voice events seen.
async fn process_until_done<T>(
    cluster: &mut Cluster,
    voice: &Voice,
    joins: &[JoinHandle<T>],
) -> Vec<(u32, Event)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while !joins.iter().all(JoinHandle::is_finished) {
        assert!(tokio::time::Instant::now() < deadline, "the joins in time");
        let Ok(Some((shard, event))) =
            tokio::time::timeout(Duration::from_millis(20), cluster.next_event()).await
        else {
            continue;
        };
        if let ShardEvent::Fatal(error) = &event {
            panic!("shard {shard}: {error}");
        }
        if let Some(event) = event.twilight() {
            voice.process(event).await;
            if matches!(
                event,
                Event::VoiceStateUpdate(_) | Event::VoiceServerUpdate(_)
            ) {
                seen.push((shard, event.clone()));
            }
        }
    }
    seen
}

/// The op 4 payloads the sim received, with the shard each came on.
fn voice_state_updates(sim: &Sim) -> Vec<(Option<u32>, serde_json::Value)> {
    sim.observations()
        .commands
        .into_iter()
        .filter(|command| command.op == 4)
        .map(|command| (command.shard, command.d))
        .collect()
}

fn spawn_join(
    voice: &Voice,
    guild: Id<GuildMarker>,
    channel: Id<ChannelMarker>,
) -> JoinHandle<Result<ConnectionInfo, JoinError>> {
    let voice = voice.clone();
    tokio::spawn(async move { voice.join(guild, channel).await })
}

#[tokio::test]
async fn a_join_sends_op_4_on_the_guilds_shard_and_the_sims_answer_completes_it() {
    let sim = sim(2).await;
    let mut cluster = cluster(&sim).await;
    let started = started(&mut cluster, &sim).await;
    let voice = Voice::new(cluster.sender(), started.user);
    assert_eq!(voice.user_id(), started.user);

    // One guild of each shard, joined at once from two tasks.
    let targets: Vec<(u32, Id<GuildMarker>, Id<ChannelMarker>)> = (0..2u32)
        .map(|shard| {
            let guild = started.guilds[shard as usize][0];
            (shard, guild, Id::new(500 + u64::from(shard)))
        })
        .collect();
    let joins: Vec<_> = targets
        .iter()
        .map(|(_, guild, channel)| spawn_join(&voice, *guild, *channel))
        .collect();
    let seen = process_until_done(&mut cluster, &voice, &joins).await;

    for ((shard, guild, channel), join) in targets.iter().zip(joins) {
        let info = join.await.unwrap().expect("the join completes");
        assert_eq!(info.endpoint, "127.0.0.1:1");
        assert_eq!(info.token, "sim-voice-token");
        assert_eq!(info.session_id, started.sessions[*shard as usize]);
        assert_eq!(info.guild_id.0, guild.into_nonzero());
        assert_eq!(info.channel_id.0, channel.into_nonzero());
        assert_eq!(info.user_id.0, started.user.into_nonzero());
        // The call knows where it is.
        let call = voice.get(*guild).expect("a call for the guild");
        assert_eq!(
            call.lock().await.current_channel().map(|c| c.0),
            Some(channel.into_nonzero())
        );
        // Both voice events came on the guild's own shard.
        let kinds: Vec<&str> = seen
            .iter()
            .filter(|(s, _)| s == shard)
            .map(|(_, event)| event.kind().name().unwrap_or("?"))
            .collect();
        assert_eq!(kinds, ["VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"]);
    }

    // The sim received one op 4 per join, on the shard of its guild.
    let mut updates = voice_state_updates(&sim);
    updates.sort_by_key(|(shard, _)| *shard);
    assert_eq!(updates.len(), 2, "{updates:?}");
    for ((shard, guild, channel), (seen_on, d)) in targets.iter().zip(&updates) {
        assert_eq!(*seen_on, Some(*shard));
        assert_eq!(d["guild_id"], guild.to_string());
        assert_eq!(d["channel_id"], channel.to_string());
        assert_eq!(d["self_deaf"], false);
        assert_eq!(d["self_mute"], false);
    }

    // Leaving sends op 4 without a channel, and the call is empty.
    let (shard, guild, _) = targets[1];
    voice.leave(guild).await.unwrap();
    // Sent means queued on the shard: wait for the sim to have it.
    let updates = tokio::time::timeout(BOUND, async {
        loop {
            let updates = voice_state_updates(&sim);
            if updates.len() == 3 {
                break updates;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the leave reaches the sim");
    let (seen_on, d) = &updates[2];
    assert_eq!((*seen_on, d["channel_id"].is_null()), (Some(shard), true));
    let call = voice.get(guild).unwrap();
    assert_eq!(call.lock().await.current_channel(), None);
    voice.remove(guild).await.unwrap();
    assert!(voice.get(guild).is_none());
    assert!(matches!(voice.leave(guild).await, Err(JoinError::NoCall)));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn another_users_voice_state_does_not_complete_a_join() {
    let sim = sim(1).await;
    let mut cluster = cluster(&sim).await;
    let started = started(&mut cluster, &sim).await;
    // Calls of some other user: the sim's VOICE_STATE_UPDATE is the bot's,
    // so the join never has its session id.
    let other = Id::new(started.user.get() + 1);
    let config = Config::default().gateway_timeout(Some(Duration::from_millis(500)));
    let voice = Voice::with_config(cluster.sender(), other, config);
    let guild = started.guilds[0][0];
    let joins = [spawn_join(&voice, guild, Id::new(7))];
    let seen = process_until_done(&mut cluster, &voice, &joins).await;
    let [join] = joins;
    let result = join.await.unwrap();
    assert!(
        matches!(result, Err(JoinError::TimedOut)),
        "{result:?} after {seen:?}"
    );
    // The sim did answer, with the bot's user.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(voice_state_updates(&sim).len(), 1);
}

#[tokio::test]
async fn a_join_on_a_shard_that_does_not_run_here_has_no_sender() {
    let sim = sim(2).await;
    let mut config = ClusterConfig::new(Token::new(sim.token()), Intents::GUILDS);
    config.api_base = sim.api_url().to_owned();
    // Shard 0 of 2 only: guilds of shard 1 belong to another process.
    config.shards = ShardSpec::Ids {
        ids: vec![0],
        total: 2,
    };
    config.identify_window = WINDOW;
    let cluster = Cluster::start(config).await.unwrap();
    let sender = cluster.sender();
    let voice = Voice::new(sender.clone(), Id::new(1));
    let guild = (1u64..)
        .map(|n| Id::<GuildMarker>::new(n << 22))
        .find(|guild| sender.shard_for_guild(*guild) == 1)
        .unwrap();
    let result = tokio::time::timeout(BOUND, voice.join(guild, Id::new(9)))
        .await
        .expect("an answer in time");
    assert!(matches!(result, Err(JoinError::NoSender)), "{result:?}");
    // songbird's sharder gives handles below the total only.
    use shardwire_cluster::songbird::shards::GenericSharder;
    assert!(sender.get_shard(1).is_some());
    assert!(sender.get_shard(2).is_none());
    drop(cluster);
}
