//! `shardwire-bench node`: a `shardwire node` in this process publishes the
//! sim's flood into JetStream on a fresh `nats-server`; reports the
//! process's CPU and the server's, until JetStream has stored every event.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use shardwire::Token;
use shardwire::nats::{LocalServer, Nats, Node, NodeConfig};
use shardwire_benches::{cpu_time, status_kib};
use twilight_model::gateway::Intents;

use crate::BEFORE_FLOOD;

/// How often JetStream's stored count is read while the flood runs (each
/// read is a request to the server, counted in this process's CPU: a few
/// hundred of them cost well under 1% of a run).
const POLL: Duration = Duration::from_millis(20);

pub(crate) async fn node(
    api: &str,
    token: &str,
    shards: u32,
    events: u64,
) -> Result<serde_json::Value> {
    let binary = LocalServer::find()
        .context("no nats-server: set NATS_SERVER to its path or put it on the PATH")?;
    let server = LocalServer::start_binary(&binary).await?;
    let pid = server.pid().context("nats-server's pid")?;
    let watcher = Nats::connect(&server.url(), shardwire::nats::Layout::default()).await?;

    let mut config = NodeConfig::new(Token::new(token), Intents::GUILDS, server.url());
    config.api_base = api.to_owned();
    config.shards = Some(shards);
    config.capacity = shards;
    config.range_size = shards;
    config.identify_window = Duration::from_millis(100);

    let expected = u64::from(shards) * (events + BEFORE_FLOOD);
    let server_cpu = process_cpu(pid)?;
    let own = process_cpu(std::process::id())?;
    let cpu = cpu_time()?;
    let wall = Instant::now();
    let node = Node::start(config).await?;
    let mut stream = None;
    let mut first_stored = None;
    let stored = loop {
        tokio::time::sleep(POLL).await;
        if wall.elapsed() > Duration::from_secs(240) {
            bail!("JetStream did not store {expected} events within 240 s");
        }
        // The node creates the stream; it is looked up once it exists.
        if stream.is_none() {
            stream = watcher
                .jetstream()
                .get_stream(watcher.layout().stream())
                .await
                .ok();
        }
        let Some(stream) = stream.as_mut() else {
            continue;
        };
        let messages = stream
            .info()
            .await
            .context("the stream's state")?
            .state
            .messages;
        if messages > 0 && first_stored.is_none() {
            first_stored = Some(Instant::now());
        }
        if messages >= expected {
            break messages;
        }
    };
    let flood = first_stored.map_or(Duration::ZERO, |at| at.elapsed());
    let wall = wall.elapsed();
    let cpu = cpu_time()? - cpu;
    let own_after = process_cpu(std::process::id())?;
    let server_after = process_cpu(pid)?;
    let server_cpu = (server_after.0 + server_after.1) - (server_cpu.0 + server_cpu.1);
    let system_s = (own_after.1 - own.1).as_secs_f64();
    let peak_rss = status_kib("VmHWM")?;
    node.shutdown().await?;
    Ok(json!({
        "shards": shards,
        "events": stored,
        "wall_s": wall.as_secs_f64(),
        // From the first event JetStream stored to the last, to within a
        // poll: the node's claim and the identifies are not throughput.
        "flood_s": flood.as_secs_f64(),
        "cpu_s": cpu.as_secs_f64(),
        "system_s": system_s,
        "nats_server_cpu_s": server_cpu.as_secs_f64(),
        "peak_rss_kib": peak_rss,
    }))
}

/// A process's CPU time, user and system, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis: state is the 3rd
    // field of the line, utime the 14th and stime the 15th.
    let after = stat.rsplit_once(')').context("/proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .context("/proc stat is short")?
            .parse()
            .context("/proc stat")
    };
    let (user, system) = (ticks(11)?, ticks(12)?);
    // SAFETY: `sysconf` reads a constant of the system.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / per_second as f64);
    Ok((time(user), time(system)))
}
