//! Repository chores for shardwire, run as `cargo xtask <command>`.
//!
//! - `cargo xtask bench [--quick|--full] [--only SECTION]`: shardwire
//!   against twilight-gateway, side by side, and the NATS node against the
//!   bare client (see `bench.rs`): a markdown table on stdout and every run
//!   as JSON in `target/bench/report.json`. `--peers` adds @discordjs/ws
//!   rows where `node` is installed (see `bench/peers.rs`).
//! - `cargo xtask bench-codec [--quick]`: the codec's micro-benchmarks, each
//!   beside its baseline (divan prints fastest, slowest, median and mean).
//! - `cargo xtask bench-instructions [--events N]`: the raw path's
//!   instructions per event under valgrind, at N and 2N events, against
//!   the inflate floor (see `bench/instructions.rs`).
//! - `cargo xtask fuzz <target> --seconds N`: one cargo-fuzz target for N
//!   seconds (installs cargo-fuzz if missing; runs on stable through
//!   `RUSTC_BOOTSTRAP=1`).
//! - `cargo xtask fuzz-list`: the fuzz targets.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on stdout and stderr"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;

/// The fuzz targets, each with the longest input it is given
/// (`-max_len`): room for payloads nested 100,000 deep where the input is
/// the payload, less where a few bytes build a large one.
const FUZZ_TARGETS: &[(&str, usize)] = &[
    ("zlib_stream", 256 * 1024),
    ("zstd_stream", 256 * 1024),
    ("scan_decode", 256 * 1024),
    ("json_nested", 16 * 1024),
    ("frames", 1024 * 1024),
    ("nats_values", 4 * 1024),
    ("shard_machine", 64 * 1024),
];

/// The targets' names.
fn fuzz_names() -> Vec<&'static str> {
    FUZZ_TARGETS.iter().map(|(name, _)| *name).collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench::run(&root(), &args[1..]),
        Some("bench-codec") => bench_codec(&args[1..]),
        Some("bench-instructions") => bench::instructions::run(&root(), &args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("fuzz-list") => {
            for target in fuzz_names() {
                println!("{target}");
            }
            Ok(())
        }
        _ => {
            eprintln!(
                "usage:\n  cargo xtask bench [--quick|--full] [--peers] [--only codec|e2e|idle|latency|startup|node|peers]\n  cargo xtask bench-codec [--quick]\n  cargo xtask bench-instructions [--events N]\n  cargo xtask fuzz <{}> [--seconds N] [--rss-mb M]\n  cargo xtask fuzz-list",
                fuzz_names().join("|")
            );
            bail!("unknown or missing command")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn flag_value<T: std::str::FromStr>(args: &[String], flag: &str) -> Result<Option<T>> {
    match args.iter().position(|arg| arg == flag) {
        None => Ok(None),
        Some(index) => {
            let value = args
                .get(index + 1)
                .with_context(|| format!("{flag} needs a value"))?;
            value
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{flag}: `{value}` is not a valid value"))
        }
    }
}

fn bench_codec(args: &[String]) -> Result<()> {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(root()).args([
        "bench",
        "-p",
        "shardwire-codec-tests",
        "--bench",
        "codec",
        "--",
    ]);
    if args.iter().any(|arg| arg == "--quick") {
        command.args(["--sample-count", "20", "--min-time", "0.5"]);
    } else {
        command.args(["--sample-count", "100", "--min-time", "2"]);
    }
    run(&mut command)
}

/// Seeds a fuzz corpus from the generated gateway traffic, so the fuzzer
/// starts from real payloads and real compressed streams.
fn write_seeds(target: &str, dir: &Path) -> Result<()> {
    use shardwire_corpus::{Corpus, ZlibStreamEncoder, ZstdStreamEncoder, server_frame};
    let corpus = Corpus::small_events(64, 5);
    let payloads = corpus.payloads();
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    if target == "nats_values" {
        // Mode byte, then a message id, an event subject or a session.
        for (mode, text) in [
            (0u8, "3f2a9c0e1b7d:42"),
            (0, "a:b:7"),
            (1, "shardwire.events.3.MESSAGE_CREATE"),
            (1, "shardwire.events.0.GUILD_CREATE"),
            (
                2,
                r#"{"session_id":"3f2a9c0e1b7d","seq":42,"resume_url":"wss://gateway.discord.gg"}"#,
            ),
        ] {
            let mut seed = vec![mode];
            seed.extend_from_slice(text.as_bytes());
            seeds.push(seed);
        }
    } else if target == "shard_machine" {
        // A transport byte (text, zlib-stream, zstd-stream, binary), then
        // messages separated by 0xFF: a Hello, a READY, dispatches, and the
        // control payloads between them.
        let control: [&[u8]; 6] = [
            br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}"#,
            br#"{"t":"READY","s":1,"op":0,"d":{"session_id":"s","resume_gateway_url":"wss://r.example","v":10}}"#,
            br#"{"op":11,"d":null}"#,
            br#"{"op":1,"d":null}"#,
            br#"{"op":9,"d":true}"#,
            br#"{"op":7,"d":null}"#,
        ];
        for (index, group) in payloads.chunks(8).enumerate() {
            let mut seed = vec![(index % 4) as u8];
            let mut messages: Vec<&[u8]> = control[..2].to_vec();
            messages.extend(group.iter().map(Vec::as_slice));
            messages.insert(3, control[2 + index % 4]);
            for message in messages {
                seed.extend_from_slice(message);
                seed.push(0xFF);
            }
            seeds.push(seed);
        }
    } else if target == "scan_decode" {
        seeds.extend(payloads.iter().cloned());
        for control in [
            &br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}"#[..],
            br#"{"op":11,"d":null}"#,
            br#"{"op":9,"d":false}"#,
            br#"{"op":7,"d":null}"#,
            // Escaped names, any order, white space, a name twice.
            br#"{"\u0074":"MESSAGE\u005fCREATE","\u0073":2,"\u006fp":0,"d":{"a":"\ud83d\ude00"}}"#,
            b"{\r\n\t\"d\" :\t{\r\n\t\t\"a\": [1,\n2]\r\n\t},\r\n\t\"op\": 0, \"s\":3, \"t\":\"X\"\r\n}",
            br#"{"t":"X","s":1,"op":0,"d":{},"t":"Y","op":1}"#,
        ] {
            seeds.push(control.to_vec());
        }
        // Nesting at the limit, past it, and far past it (closed or not).
        for (levels, closed) in [(126, true), (127, true), (10_000, true), (100_000, false)] {
            let close = if closed {
                "]".repeat(levels)
            } else {
                String::new()
            };
            let d = format!("{}{close}", "[".repeat(levels));
            seeds.push(format!(r#"{{"t":"X","s":1,"op":0,"d":{d}}}"#).into_bytes());
            seeds.push(format!(r#"{{"op":0,"d":{d},"s":1}}"#).into_bytes());
        }
    } else if target == "json_nested" {
        // Choices (see the target): a few fields, runs of openings, escapes.
        seeds.push(vec![
            4, 0x83, 0, 0x02, 0, 0x82, 0x10, 0xf7, 1, 0x60, 0xa0, 1,
        ]);
        seeds.push(vec![
            2, 0x03, 0xfe, 0, 0xff, 1, 0x61, 0xff, 0x02, 0x80, 0, 1,
        ]);
        seeds.push(vec![
            5, 0x80, 0xff, 0x81, 1, 0x82, 2, 0xc3, 0x30, 0x64, 0x65, 0xa0, 0xa0, 3,
        ]);
    } else {
        // See fuzz/fuzz_targets/common.rs for the layout.
        for (index, group) in payloads.chunks(8).enumerate() {
            let mut round_trip = vec![1u8];
            round_trip.extend_from_slice(&(index as u64).to_le_bytes());
            round_trip.extend_from_slice(&group.join(&b'\n'));
            seeds.push(round_trip);
            let mut raw = vec![0u8];
            raw.extend_from_slice(&(index as u64).to_le_bytes());
            if target == "frames" {
                // Each payload a binary message; every third one in two
                // fragments with a ping between them.
                for (i, payload) in group.iter().enumerate() {
                    if i % 3 == 2 && payload.len() > 1 {
                        let (head, tail) = payload.split_at(payload.len() / 2);
                        raw.extend_from_slice(&server_frame(false, 2, head));
                        raw.extend_from_slice(&server_frame(true, 9, b"ping"));
                        raw.extend_from_slice(&server_frame(true, 0, tail));
                    } else {
                        raw.extend_from_slice(&server_frame(true, 2, payload));
                    }
                }
            } else if target == "zlib_stream" {
                let mut encoder = ZlibStreamEncoder::new();
                group
                    .iter()
                    .for_each(|p| raw.extend_from_slice(&encoder.encode(p)));
            } else {
                let mut encoder = ZstdStreamEncoder::new()?;
                for payload in group {
                    raw.extend_from_slice(&encoder.encode(payload)?);
                }
            }
            seeds.push(raw);
        }
    }
    for (index, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{index:03}")), seed)?;
    }
    eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    Ok(())
}

fn fuzz(args: &[String]) -> Result<()> {
    let Some(target) = args.first() else {
        bail!("which target? one of: {}", fuzz_names().join(", "));
    };
    let Some(&(_, max_len)) = FUZZ_TARGETS.iter().find(|(name, _)| name == target) else {
        bail!(
            "unknown fuzz target `{target}`; one of: {}",
            fuzz_names().join(", ")
        );
    };
    let seconds: u64 = flag_value(args, "--seconds")?.unwrap_or(60);
    let rss_mb: u64 = flag_value(args, "--rss-mb")?.unwrap_or(1024);
    let has_cargo_fuzz = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_cargo_fuzz {
        eprintln!("installing cargo-fuzz");
        run(Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let corpus = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    if std::fs::read_dir(&corpus)?.next().is_none() {
        write_seeds(target, &corpus)?;
    }
    run(Command::new(env!("CARGO"))
        .current_dir(root().join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", target, "--release", "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        .arg(format!("-rss_limit_mb={rss_mb}"))
        .arg("-print_final_stats=1"))
}
