//! `shardwire demo`: a cluster of shards against the embedded simulator,
//! with live status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use shardwire_cluster::{Cluster, ClusterConfig, ShardSpec};
use shardwire_codec::Token;
use shardwire_shard::{ShardEvent, ShardState};
use shardwire_sim::{Fault, Sim};
use tokio::time::Instant;

use super::metrics::MetricsArgs;
use super::sim::parse_rate;
use super::{fail, non_privileged_intents};

/// How often the status redraws.
const TICK: Duration = Duration::from_millis(500);
/// The simulator's identify window in the demo (Discord's is 5 s).
const IDENTIFY_WINDOW: Duration = Duration::from_secs(2);

/// Run a cluster against the embedded simulator: no token, no network.
///
/// Shows each shard's state, heartbeat latency and events per second live,
/// and the identify progress. Halfway through, the simulator asks one shard
/// to reconnect (op 7), and it resumes. Runs until Ctrl-C or --seconds.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    seconds: Option<u64>,
    /// Shards in the cluster.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// The simulator's max_concurrency (identify buckets).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    max_concurrency: u32,
    /// Events per second each shard's session receives.
    #[arg(long, default_value_t = 250.0, value_name = "RATE", value_parser = parse_rate)]
    rate: f64,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Default)]
struct Counts {
    total: u64,
    at_last_tick: u64,
    per_second: f64,
    resumes: u32,
}

struct Screen {
    terminal: bool,
    lines: usize,
}

impl Screen {
    fn show(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.terminal && self.lines > 0 {
            // Back to the first line of the last frame, then overwrite it.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.lines);
        }
        let _ = write!(out, "{text}");
        let _ = out.flush();
        self.lines = text.lines().count();
    }
}

fn state_name(state: ShardState) -> &'static str {
    match state {
        ShardState::Disconnected => "disconnected",
        ShardState::Connecting => "connecting",
        ShardState::WaitingForHello => "waiting hello",
        ShardState::Identifying => "identifying",
        ShardState::Resuming => "resuming",
        ShardState::Active => "active",
        ShardState::Reconnecting => "reconnecting",
        ShardState::FatallyClosed => "fatal",
        _ => "unknown",
    }
}

fn render(cluster: &Cluster, counts: &BTreeMap<u32, Counts>, elapsed: Duration) -> String {
    let statuses = cluster.statuses();
    let ready = statuses
        .iter()
        .filter(|s| s.state == ShardState::Active)
        .count();
    let mut text = format!(
        "{:>6}  {:<13} {:>10} {:>10} {:>10} {:>8}\n",
        "shard", "state", "latency", "events/s", "events", "resumes"
    );
    for status in &statuses {
        let count = counts.get(&status.id);
        let latency = status.latency.map_or_else(
            || "-".to_owned(),
            |l| format!("{:.2} ms", l.as_secs_f64() * 1000.0),
        );
        let _ = writeln!(
            text,
            "{:>6}  {:<13} {:>10} {:>10.0} {:>10} {:>8}",
            status.id,
            state_name(status.state),
            latency,
            count.map_or(0.0, |c| c.per_second),
            count.map_or(0, |c| c.total),
            count.map_or(0, |c| c.resumes),
        );
    }
    let total: u64 = counts.values().map(|c| c.total).sum();
    let _ = writeln!(
        text,
        "{ready}/{} shards ready · {total} events · {:.1} s",
        statuses.len(),
        elapsed.as_secs_f64()
    );
    text
}

pub(crate) async fn run(args: Args) -> ExitCode {
    if let Err(code) = args.metrics.start().await {
        return code;
    }
    let sim = Sim::builder()
        .shards(args.shards)
        .max_concurrency(args.max_concurrency)
        .identify_window(IDENTIFY_WINDOW)
        .heartbeat_interval(Duration::from_secs(2))
        .guilds_per_shard(3)
        .event_rate(args.rate)
        .start()
        .await;
    let sim = match sim {
        Ok(sim) => sim,
        Err(error) => return fail(1, format_args!("the simulator did not start: {error}")),
    };
    let rounds = args.shards.div_ceil(args.max_concurrency);
    println!(
        "shardwire demo: {} shards against the embedded simulator at {} (max_concurrency {}: {} identify round{}, {} s apart)",
        args.shards,
        sim.api_url(),
        args.max_concurrency,
        rounds,
        if rounds == 1 { "" } else { "s" },
        IDENTIFY_WINDOW.as_secs()
    );
    let mut config = ClusterConfig::new(Token::new(sim.token()), non_privileged_intents());
    config.api_base = sim.api_url().to_owned();
    config.shards = ShardSpec::Recommended;
    config.identify_window = IDENTIFY_WINDOW;
    let mut cluster = match Cluster::start(config).await {
        Ok(cluster) => cluster,
        Err(error) => return fail(1, error),
    };
    let started = Instant::now();
    let end = args.seconds.map(|s| started + Duration::from_secs(s));
    // Halfway (or after 10 s without --seconds), one shard is told to
    // reconnect, and resumes.
    let fault_at = started + end.map_or(Duration::from_secs(10), |end| (end - started) / 2);
    let mut fault_sent = false;
    let mut counts: BTreeMap<u32, Counts> = BTreeMap::new();
    let mut screen = Screen {
        terminal: std::io::stdout().is_terminal(),
        lines: 0,
    };
    let mut tick = tokio::time::interval(TICK);
    let mut last_tick = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let until_end = async {
            match end {
                Some(end) => tokio::time::sleep_until(end).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = until_end => break,
            _ = tick.tick() => {
                let now = Instant::now();
                let window = now.duration_since(last_tick).as_secs_f64().max(1e-3);
                last_tick = now;
                for count in counts.values_mut() {
                    count.per_second = (count.total - count.at_last_tick) as f64 / window;
                    count.at_last_tick = count.total;
                }
                if !fault_sent && now >= fault_at {
                    fault_sent = true;
                    let target = args.shards - 1;
                    sim.inject(Some(target), Fault::Reconnect);
                }
                // Redraw in place on a terminal; a line a second otherwise.
                if screen.terminal || now.duration_since(last_print) >= Duration::from_secs(1) {
                    last_print = now;
                    screen.show(&render(&cluster, &counts, started.elapsed()));
                }
            }
            event = cluster.next_event() => match event {
                Some((shard, ShardEvent::Dispatch { .. })) => counts.entry(shard).or_default().total += 1,
                Some((shard, ShardEvent::Resumed)) => counts.entry(shard).or_default().resumes += 1,
                Some((shard, ShardEvent::Fatal(error))) => return fail(1, format_args!("shard {shard}: {error}")),
                Some(_) => {}
                None => break,
            },
        }
    }
    let elapsed = started.elapsed();
    screen.show(&render(&cluster, &counts, elapsed));
    let shutdown = cluster.shutdown(Duration::from_secs(2)).await;
    let observations = sim.observations();
    let total: u64 = counts.values().map(|c| c.total).sum();
    println!(
        "done: {total} events in {:.1} s ({:.0}/s); {} identifies, {} resumes, {} sessions exported; protocol violations: {}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-3),
        observations.identifies.len(),
        observations.resumes.len(),
        shutdown.sessions.len(),
        observations.violations.len()
    );
    sim.shutdown().await;
    if observations.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        fail(
            1,
            format_args!(
                "the simulator saw violations: {:?}",
                observations.violations
            ),
        )
    }
}
