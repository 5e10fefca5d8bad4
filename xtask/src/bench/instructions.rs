//! `cargo xtask bench-instructions`: the raw path's instructions per
//! event under valgrind, which the machine's noise does not move.
//!
//! Each row runs twice, at N and at 2N events, and the difference over the
//! N events between them is the cost of one event: start-up, connecting
//! and the flood's own set-up cancel. The inflate floor is `shardwire-bench
//! floor` counted only inside its inflate loop (callgrind's
//! `--toggle-collect`), since the flood it builds first grows with N; the
//! clients are whole processes (cachegrind) against `shardwire sim` in a
//! process of its own.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{SimProcess, strings};

/// One row: what runs, and how many events at N (per shard for clients).
struct Run {
    what: &'static str,
    client: Option<&'static str>,
    shards: u32,
}

const RUNS: &[Run] = &[
    Run {
        what: "inflate floor (zlib-rs alone)",
        client: None,
        shards: 1,
    },
    Run {
        what: "shardwire raw, 1 shard",
        client: Some("shardwire"),
        shards: 1,
    },
    Run {
        what: "shardwire raw, 16 shards",
        client: Some("shardwire"),
        shards: 16,
    },
    Run {
        what: "twilight-gateway raw, 1 shard",
        client: Some("twilight"),
        shards: 1,
    },
    Run {
        what: "twilight-gateway raw, 16 shards",
        client: Some("twilight"),
        shards: 16,
    },
];

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|output| output.status.success()) {
        eprintln!("valgrind is not installed: no instruction counts (apt-get install valgrind)");
        return Ok(());
    }
    // Events in all at N; a client's shards share them.
    let events = crate::flag_value::<u64>(args, "--events")?.unwrap_or(20_000);
    if events < 16 {
        bail!("--events must be at least 16");
    }
    let bin = super::build(root)?;
    let mut rows = Vec::new();
    for run in RUNS {
        let per_shard = events / u64::from(run.shards);
        let total = |n: u64| n * u64::from(run.shards);
        eprintln!(
            "{}: {} and {} events…",
            run.what,
            total(per_shard),
            total(2 * per_shard)
        );
        let counts = [per_shard, 2 * per_shard]
            .into_iter()
            .map(|n| count(&bin, run, n))
            .collect::<Result<Vec<u64>>>()?;
        let per_event = counts[1].saturating_sub(counts[0]) as f64 / total(per_shard) as f64;
        rows.push((run.what, total(per_shard), counts, per_event));
    }
    let floor = rows.first().map_or(f64::NAN, |row| row.3);
    println!("\nInstructions (valgrind), the marginal of N and 2N events:\n");
    println!("| run | events N | instructions at N | at 2N | per event | ÷ floor |");
    println!("|---|---|---|---|---|---|");
    for (what, n, counts, per_event) in &rows {
        println!(
            "| {what} | {n} | {} | {} | {per_event:.0} | {:.3}× |",
            counts[0],
            counts[1],
            per_event / floor
        );
    }
    Ok(())
}

/// The instructions of one run of `run` at `events` events (per shard).
fn count(bin: &Path, run: &Run, events: u64) -> Result<u64> {
    let bench = bin.join("shardwire-bench");
    let events_arg = events.to_string();
    let output = match run.client {
        None => Command::new("valgrind")
            .args([
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                "--toggle-collect=shardwire_bench::inflate_into",
            ])
            .arg(&bench)
            .args(["floor", "--events", &events_arg])
            .output(),
        Some(client) => {
            let sim = SimProcess::flooding(bin, run.shards, events)?;
            Command::new("valgrind")
                .args(["--tool=cachegrind", "--cachegrind-out-file=/dev/null"])
                .arg(&bench)
                .args(strings(&[
                    "e2e",
                    "--client",
                    client,
                    "--shards",
                    &run.shards.to_string(),
                    "--events",
                    &events_arg,
                    "--gateway",
                    &sim.gateway,
                ]))
                .output()
        }
    }
    .context("starting valgrind")?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{} at {events} events failed:\n{log}", run.what);
    }
    instructions(&log).with_context(|| format!("no instruction count in valgrind's output:\n{log}"))
}

/// The total valgrind prints: callgrind's `Collected : N`, cachegrind's
/// `I   refs: N` (digits grouped with commas).
fn instructions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let (_, value) = line
            .split_once("Collected :")
            .or_else(|| line.split_once("I   refs:"))?;
        value.trim().replace(',', "").parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::instructions;

    #[test]
    fn reads_either_tools_total() {
        assert_eq!(
            instructions("==1== Events    : Ir\n==1== Collected : 148,942,796\n==1== \n"),
            Some(148_942_796)
        );
        assert_eq!(
            instructions("==2== \n==2== I   refs:      89,062,864\n"),
            Some(89_062_864)
        );
        assert_eq!(instructions("==3== nothing\n"), None);
    }
}
