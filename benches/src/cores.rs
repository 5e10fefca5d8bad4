//! `shardwire-bench cores`: the raw end-to-end flood on a tokio
//! multi-thread runtime with a given number of workers, where every other
//! measurement runs on one thread (`current_thread`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::{busy, cpu_time, shardwire_e2e};
use shardwire::Compression;

/// The arguments of `shardwire-bench cores`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Worker threads of the multi-thread runtime.
    #[arg(long)]
    workers: usize,
    #[arg(long)]
    shards: u32,
    /// The flood per shard, as the sim was told.
    #[arg(long)]
    events: u64,
    #[arg(long)]
    gateway: String,
    #[arg(long, default_value = "sim-token")]
    token: String,
}

/// Runs the flood on its own runtime and returns the report.
pub(crate) fn run(args: Args) -> Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cpu = cpu_time()?;
        let wall = Instant::now();
        let flood = shardwire_e2e(
            &args.gateway,
            &args.token,
            args.shards,
            args.events,
            false,
            Compression::ZlibStream,
        );
        let mut consumed = tokio::time::timeout(Duration::from_secs(300), flood)
            .await
            .context("the measurement took over 300 s")??;
        let flood_s = busy(std::mem::take(&mut consumed.floods)).as_secs_f64();
        let wall = wall.elapsed();
        let cpu = cpu_time()? - cpu;
        Ok(json!({
            "workers": args.workers,
            "shards": args.shards,
            "events": consumed.dispatches,
            "flood_events": u64::from(args.shards) * args.events,
            "flood_s": flood_s,
            "wall_s": wall.as_secs_f64(),
            "cpu_s": cpu.as_secs_f64(),
        }))
    })
}
