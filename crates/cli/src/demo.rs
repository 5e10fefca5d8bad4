//! `shardwire demo`: a cluster of shards against the embedded simulator,
//! with live status.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use shardwire_cluster::{Cluster, ClusterConfig, ShardSpec};
use shardwire_codec::{Payload, Token};
use shardwire_shard::{ShardEvent, ShardState};
use shardwire_sim::{Fault, PoolEvent, Sim};
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
/// to reconnect (op 7), and it resumes. With --reshard-at, the cluster
/// reshards while events flow, and the end counts what was lost or doubled.
/// Runs until Ctrl-C or --seconds.
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
    /// Reshard this many seconds in, to --reshard-to shards.
    #[arg(long, value_name = "SECS", requires = "reshard_to")]
    reshard_at: Option<u64>,
    /// The shard count to reshard to, with --reshard-at.
    #[arg(long, value_name = "N", requires = "reshard_at", value_parser = clap::value_parser!(u32).range(1..=64))]
    reshard_to: Option<u32>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Guilds per shard in the demo.
const GUILDS_PER_SHARD: u32 = 3;

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

/// The status table: each running shard's counts, and `total`, every
/// event since the start (a reshard starts the shards' counts afresh).
fn render(
    cluster: &Cluster,
    counts: &BTreeMap<u32, Counts>,
    total: u64,
    elapsed: Duration,
) -> String {
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
    let builder = Sim::builder()
        .shards(args.shards)
        .max_concurrency(args.max_concurrency)
        .identify_window(IDENTIFY_WINDOW)
        .heartbeat_interval(Duration::from_secs(2));
    // A reshard needs both generations to see the same guilds' events: the
    // simulator's guild pool sends each guild's to every session owning it.
    let builder = match args.reshard_to {
        Some(_) => builder
            .guild_pool(args.shards * GUILDS_PER_SHARD)
            .guild_event_rate(args.rate * f64::from(args.shards)),
        None => builder
            .guilds_per_shard(GUILDS_PER_SHARD)
            .event_rate(args.rate),
    };
    let sim = builder.start().await;
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
    let mut reshard = args
        .reshard_at
        .zip(args.reshard_to)
        .map(|(at, to)| (started + Duration::from_secs(at), to));
    let mut resharded = None;
    let mut guild_events = GuildEvents::default();
    let mut total = 0;
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
                if let Some((at, to)) = reshard
                    && now >= at
                {
                    reshard = None;
                    if let Err(error) = cluster.reshard(to).await {
                        return fail(1, format_args!("the reshard did not start: {error}"));
                    }
                }
                if !fault_sent && now >= fault_at {
                    fault_sent = true;
                    let target = args.shards - 1;
                    sim.inject(Some(target), Fault::Reconnect);
                }
                // Redraw in place on a terminal; a line a second otherwise.
                if screen.terminal || now.duration_since(last_print) >= Duration::from_secs(1) {
                    last_print = now;
                    screen.show(&render(&cluster, &counts, total, started.elapsed()));
                }
            }
            event = cluster.next_event() => match event {
                Some((shard, ShardEvent::Dispatch { event_type, json, .. })) => {
                    counts.entry(shard).or_default().total += 1;
                    total += 1;
                    guild_events.add(&event_type, &json);
                }
                Some((_, ShardEvent::Resharding { from, to })) => {
                    println!("resharding: {to} new shards identify beside the {from} running");
                }
                Some((_, ShardEvent::Resharded { from, to, took })) => {
                    println!("resharded {from} -> {to} in {:.1} s: events now come from the new shards", took.as_secs_f64());
                    counts.clear();
                    resharded = Some((from, to, took));
                }
                Some((_, ShardEvent::ReshardAbandoned { from, to, reason })) => {
                    return fail(1, format_args!("the reshard {from} -> {to} was given up: {reason}"));
                }
                Some((shard, ShardEvent::Resumed)) => counts.entry(shard).or_default().resumes += 1,
                Some((shard, ShardEvent::Fatal(error))) => return fail(1, format_args!("shard {shard}: {error}")),
                Some(_) => {}
                None => break,
            },
        }
    }
    let elapsed = started.elapsed();
    screen.show(&render(&cluster, &counts, total, elapsed));
    // After a reshard: no more guild events, and those on their way taken,
    // so that what was sent can all be counted.
    if resharded.is_some() {
        sim.set_guild_event_rate(0.0);
        let quiet = Duration::from_millis(300);
        while let Ok(Some((_, event))) = tokio::time::timeout(quiet, cluster.next_event()).await {
            guild_events.take(&event);
        }
    }
    let shutdown = cluster.shutdown(Duration::from_secs(2)).await;
    for (_, event) in &shutdown.events {
        guild_events.take(event);
    }
    let observations = sim.observations();
    println!(
        "done: {total} events in {:.1} s ({:.0}/s); {} identifies, {} resumes, {} sessions exported; protocol violations: {}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-3),
        observations.identifies.len(),
        observations.resumes.len(),
        shutdown.sessions.len(),
        observations.violations.len()
    );
    if let Some((from, to, took)) = resharded {
        let (checked, lost, doubled) = guild_events.against(&sim.pool_events());
        println!(
            "reshard {from} -> {to}: switched after {:.1} s; {checked} guild events sent, {lost} lost, {doubled} doubled",
            took.as_secs_f64()
        );
        if lost + doubled > 0 {
            sim.shutdown().await;
            return fail(1, "the reshard lost or doubled events");
        }
    } else if args.reshard_to.is_some() {
        sim.shutdown().await;
        return fail(
            1,
            "the reshard did not switch in time: give it more --seconds",
        );
    }
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

/// The guild events the demo received, to check a reshard against what the
/// simulator sent: each guild's `(name, d)` in order.
#[derive(Default)]
struct GuildEvents {
    by_guild: HashMap<String, Vec<(String, String)>>,
}

impl GuildEvents {
    /// Counts a guild dispatch of the stream.
    fn take(&mut self, event: &ShardEvent) {
        if let ShardEvent::Dispatch {
            event_type, json, ..
        } = event
        {
            self.add(event_type, json);
        }
    }

    fn add(&mut self, event_type: &str, json: &str) {
        if matches!(event_type, "READY" | "GUILD_CREATE") {
            return;
        }
        let Ok(payload) = Payload::scan(json.as_bytes()) else {
            return;
        };
        let d = payload.data();
        let Ok(value) = serde_json::from_str::<serde_json::Value>(d) else {
            return;
        };
        if let Some(guild) = value.get("guild_id").and_then(serde_json::Value::as_str) {
            let events = self.by_guild.entry(guild.to_owned()).or_default();
            events.push((event_type.to_owned(), d.to_owned()));
        }
    }

    /// Events sent, lost and doubled, guild by guild.
    fn against(&self, sent: &[PoolEvent]) -> (usize, usize, usize) {
        let mut balance: HashMap<(&str, &str, &[u8]), i64> = HashMap::new();
        for event in sent {
            *balance
                .entry((&event.guild_id, &event.name, &event.d))
                .or_default() += 1;
        }
        for (guild, events) in &self.by_guild {
            for (name, d) in events {
                *balance.entry((guild, name, d.as_bytes())).or_default() -= 1;
            }
        }
        let lost = balance.values().filter(|n| **n > 0).sum::<i64>();
        let doubled = -balance.values().filter(|n| **n < 0).sum::<i64>();
        (sent.len(), lost as usize, doubled as usize)
    }
}
