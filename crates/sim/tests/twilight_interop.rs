//! twilight-gateway, a client nobody here wrote, against the simulator:
//! identify, READY and GUILD_CREATE, events, then op 7 and a resume on the
//! resume URL. It shows the simulator speaks the real protocol.

use std::time::Duration;

use shardwire_sim::{Fault, Listener, ResumeOutcome, Sim};
use twilight_gateway::{ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt};

async fn next(shard: &mut Shard) -> Event {
    tokio::time::timeout(
        Duration::from_secs(20),
        shard.next_event(EventTypeFlags::all()),
    )
    .await
    .expect("twilight received nothing in time")
    .expect("the stream ended")
    .expect("twilight could not receive")
}

#[tokio::test]
async fn twilight_gateway_identifies_receives_events_and_resumes() {
    let sim = Sim::builder()
        .guilds_per_shard(2)
        .members_per_guild(3)
        .start()
        .await
        .unwrap();
    let intents = Intents::GUILDS | Intents::GUILD_MESSAGES | Intents::GUILD_MESSAGE_REACTIONS;
    let config = ConfigBuilder::new(sim.token().to_owned(), intents)
        .proxy_url(sim.gateway_url().to_owned())
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);

    let mut guilds = 0;
    let mut ready = false;
    while guilds < 2 {
        match next(&mut shard).await {
            Event::Ready(r) => {
                ready = true;
                assert_eq!(r.guilds.len(), 2);
            }
            Event::GuildCreate(_) => guilds += 1,
            _ => {}
        }
    }
    assert!(ready, "READY before the guilds");

    sim.inject(Some(0), Fault::Burst(30));
    let mut dispatches = 0;
    while dispatches < 30 {
        match next(&mut shard).await {
            Event::MessageCreate(_)
            | Event::PresenceUpdate(_)
            | Event::TypingStart(_)
            | Event::MemberUpdate(_)
            | Event::ReactionAdd(_) => dispatches += 1,
            _ => {}
        }
    }

    assert_eq!(sim.inject(Some(0), Fault::Reconnect), 1);
    loop {
        if let Event::Resumed = next(&mut shard).await {
            break;
        }
    }
    let observations = sim.observations();
    assert_eq!(
        observations.identifies.len(),
        1,
        "resumed, not identified again"
    );
    let resume = &observations.resumes[0];
    assert_eq!(
        resume.listener,
        Listener::Resume,
        "resumed on resume_gateway_url"
    );
    assert!(
        matches!(resume.outcome, ResumeOutcome::Resumed { .. }),
        "{:?}",
        resume.outcome
    );
    assert_eq!(resume.seq, 33, "twilight named the last sequence it saw");
    assert!(
        observations.violations.is_empty(),
        "{:?}",
        observations.violations
    );
    assert_eq!(
        observations.connections[0].compress.as_deref(),
        Some("zlib-stream")
    );
}
