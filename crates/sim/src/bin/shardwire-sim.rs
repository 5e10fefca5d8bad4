//! Runs the simulator on its own:
//! `shardwire-sim --port P [--shards N] [--max-concurrency M] [--rate EVENTS_PER_S]`.
//!
//! It prints its URLs on stdout, one per line, and serves until interrupted.
//! This becomes `shardwire sim` once the `shardwire` command exists.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::net::SocketAddr;
use std::process::ExitCode;

use shardwire_sim::Sim;

const USAGE: &str = "usage: shardwire-sim --port P [--shards N] [--max-concurrency M] [--rate EVENTS_PER_S] [--token T]";

struct Args {
    port: u16,
    shards: u32,
    max_concurrency: u32,
    rate: f64,
    token: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        port: 0,
        shards: 1,
        max_concurrency: 1,
        rate: 0.0,
        token: None,
    };
    let mut port = None;
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag}: `{value}` is not {what}");
        match flag.as_str() {
            "--port" => port = Some(value.parse().map_err(|_| bad("a port number"))?),
            "--shards" => {
                parsed.shards = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a shard count above 0"))?;
            }
            "--max-concurrency" => {
                parsed.max_concurrency = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a concurrency above 0"))?;
            }
            "--rate" => {
                parsed.rate = value
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| bad("a rate of events per second"))?;
            }
            "--token" => parsed.token = Some(value),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    parsed.port = port.ok_or("--port is required (0 picks a free port)")?;
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("shardwire-sim: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One core: the simulator's throughput figures are per core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shardwire-sim: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut builder = Sim::builder()
            .bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
            .shards(args.shards)
            .max_concurrency(args.max_concurrency)
            .event_rate(args.rate);
        if let Some(token) = &args.token {
            builder = builder.token(token);
        }
        let sim = match builder.start().await {
            Ok(sim) => sim,
            Err(error) => {
                eprintln!("shardwire-sim: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!("api {}", sim.api_url());
        println!("gateway {}", sim.gateway_url());
        println!("resume {}", sim.resume_gateway_url());
        println!("token {}", sim.token());
        let _ = tokio::signal::ctrl_c().await;
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}
