//! Resume after a restart: a cluster shuts down gracefully, exports every
//! session to a file, and the next start resumes them: no identify spent,
//! no event lost.
//!
//! Run with `cargo run -p shardwire-examples --example resume_after_restart`.
//! Without `DISCORD_TOKEN`, both "runs" happen in this one process against
//! shardwire-sim. With a token, each run reads `sessions.json` (if a recent
//! one exists) and writes it when you press Ctrl-C.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports what it did on stdout"
)]

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use shardwire::cluster::Cluster;
use shardwire::{Session, ShardEvent};
use shardwire_examples::Target;
use twilight_model::gateway::Intents;

const SESSIONS: &str = "sessions.json";

/// One run: start (resuming `sessions`), read events until `stop`, shut down
/// and return the sessions.
async fn run(
    target: &Target,
    sessions: HashMap<u32, Session>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<HashMap<u32, Session>> {
    let mut config = target.cluster_config(Intents::GUILDS | Intents::GUILD_MESSAGES);
    config.sessions = sessions;
    let mut cluster = Cluster::start(config).await?;
    let mut dispatches = 0u64;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            next = cluster.next_event() => match next {
                Some((shard, ShardEvent::Ready { session })) => {
                    println!("shard {shard}: identified, new session {}", session.session_id);
                }
                Some((shard, ShardEvent::Resumed)) => println!("shard {shard}: resumed"),
                Some((_, ShardEvent::Dispatch { .. })) => dispatches += 1,
                Some((shard, ShardEvent::Fatal(error))) => anyhow::bail!("shard {shard}: {error}"),
                Some(_) => {}
                None => break,
            },
        }
    }
    let shutdown = cluster.shutdown(Duration::from_secs(5)).await;
    // Events that arrived during the shutdown are ours to handle too.
    dispatches += shutdown
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ShardEvent::Dispatch { .. }))
        .count() as u64;
    println!(
        "handled {dispatches} dispatches; exported {} sessions",
        shutdown.sessions.len()
    );
    Ok(shutdown.sessions)
}

#[tokio::main]
async fn main() -> Result<()> {
    let target = Target::from_env(|sim| sim.shards(2).max_concurrency(2).event_rate(100.0)).await?;
    println!("resume_after_restart: connecting to {}", target.describe());
    let Some(sim) = &target.sim else {
        // On Discord: one run per process, sessions kept in a file.
        let sessions: HashMap<u32, Session> = match std::fs::read(SESSIONS) {
            Ok(bytes) => serde_json::from_slice(&bytes).context(SESSIONS)?,
            Err(_) => HashMap::new(),
        };
        println!("{} sessions to resume from {SESSIONS}", sessions.len());
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let sessions = run(&target, sessions, ctrl_c).await?;
        std::fs::write(SESSIONS, serde_json::to_vec_pretty(&sessions)?)?;
        println!("sessions written to {SESSIONS}; run again within a few minutes to resume");
        return Ok(());
    };
    let two_seconds = || tokio::time::sleep(Duration::from_secs(2));
    println!("-- first run");
    let sessions = run(&target, HashMap::new(), two_seconds()).await?;
    let text = serde_json::to_string(&sessions)?;
    println!(
        "-- restart, from the exported sessions ({} bytes of JSON)",
        text.len()
    );
    let sessions: HashMap<u32, Session> = serde_json::from_str(&text)?;
    run(&target, sessions, two_seconds()).await?;
    let observations = sim.observations();
    println!(
        "the simulator saw {} identifies and {} resumes; violations: {}",
        observations.identifies.len(),
        observations.resumes.len(),
        observations.violations.len()
    );
    anyhow::ensure!(
        observations.identifies.len() == 2,
        "the restart identified again"
    );
    anyhow::ensure!(observations.resumes.len() == 2);
    anyhow::ensure!(observations.violations.is_empty());
    Ok(())
}
