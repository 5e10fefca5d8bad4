//! `shardwire sim`: the simulator on its own.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use shardwire_sim::Sim;

use super::fail;

/// Run shardwire-sim, a local Discord Gateway (WebSocket and REST), until
/// Ctrl-C.
///
/// It prints its URLs and token on stdout, one per line.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The port of its REST and gateway listener (0 picks a free one).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    port: u16,
    /// The shard count /gateway/bot recommends.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    shards: u32,
    /// The max_concurrency /gateway/bot announces and the sim enforces.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: u32,
    /// Generated events per second per session.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = parse_rate)]
    rate: f64,
    /// The token it accepts.
    #[arg(long, default_value = "sim-token", value_name = "TOKEN")]
    token: String,
    /// Events flooded to each new session right after READY (for
    /// benchmarks; 0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    flood_after_ready: u64,
    /// Add "sent_at_ns" to each generated event's `d` (for latency
    /// measurements).
    #[arg(long)]
    stamp_events: bool,
    /// Session starts left today (and allowed per day).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    remaining: u32,
    /// The identify window per bucket, in milliseconds (Discord: 5000).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    identify_window_ms: u64,
    /// The heartbeat interval its Hello announces, in milliseconds.
    #[arg(long, default_value_t = 41_250, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_interval_ms: u64,
}

/// A number of events per second: finite, not negative.
pub(super) fn parse_rate(value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|rate| rate.is_finite() && *rate >= 0.0)
        .ok_or_else(|| format!("`{value}` is not a rate of events per second"))
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let sim = Sim::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .shards(args.shards)
        .max_concurrency(args.max_concurrency)
        .event_rate(args.rate)
        .token(&args.token)
        .heartbeat_interval(Duration::from_millis(args.heartbeat_interval_ms))
        .flood_after_ready(args.flood_after_ready)
        .remaining(args.remaining)
        .stamp_events(args.stamp_events)
        .total(args.remaining.max(1000))
        .identify_window(Duration::from_millis(args.identify_window_ms))
        .start()
        .await;
    let sim = match sim {
        Ok(sim) => sim,
        Err(error) => return fail(1, format_args!("the simulator did not start: {error}")),
    };
    println!("api {}", sim.api_url());
    println!("gateway {}", sim.gateway_url());
    println!("resume {}", sim.resume_gateway_url());
    println!("token {}", sim.token());
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}
