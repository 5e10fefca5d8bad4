//! `cargo xtask bench --only zstd`: both clients on zstd-stream, beside
//! shardwire on zlib-stream in the same rounds.
//!
//! twilight-gateway 0.18 negotiates zstd-stream whenever its `zstd` feature
//! is on, so its zstd runs are `shardwire-bench-zstd`'s: the same source
//! built in benches/zstd-peer, a workspace of its own, by a cargo
//! invocation of its own (Cargo unifies features across what one invocation
//! builds). Each twilight run checks what its binary asks for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Bench, Row, SimProcess, Spread, measure_binary, number, strings};

/// How much of the zstd section to run.
pub(super) struct ZstdPlan {
    /// Shards that sit idle right after READY.
    pub(super) idle_shards: u32,
    /// Shards that sit idle after a flood of this many events each: more
    /// than a 2 MiB window of JSON, so the context's window is all in use,
    /// as in any shard that has run for a while.
    pub(super) traffic: (u32, u64),
    /// Rounds of the idle rows (all of a round's processes run at once:
    /// memory does not move with the machine's load).
    pub(super) idle_rounds: usize,
}

pub(super) const QUICK: ZstdPlan = ZstdPlan {
    idle_shards: 300,
    traffic: (50, 2_500),
    idle_rounds: 2,
};

pub(super) const FULL: ZstdPlan = ZstdPlan {
    idle_shards: 1_000,
    traffic: (200, 2_500),
    idle_rounds: 3,
};

/// Builds `shardwire-bench-zstd` (benches/zstd-peer) in release mode.
fn build_peer() -> Result<PathBuf> {
    let manifest = crate::root().join("benches/zstd-peer/Cargo.toml");
    // The root's target directory: the dependencies both builds share are
    // built once.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::root().join("target"), PathBuf::from);
    eprintln!("building shardwire-bench-zstd (release, its own workspace)…");
    crate::run(
        Command::new(env!("CARGO"))
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--release",
                "--manifest-path",
                &manifest.to_string_lossy(),
            ]),
    )?;
    Ok(target.join("release").join("shardwire-bench-zstd"))
}

/// Runs every measurement at once; returns their reports in order.
fn measure_all(runs: &[(&Path, Vec<String>)]) -> Result<Vec<Value>> {
    let children = runs
        .iter()
        .map(|(binary, args)| {
            Command::new(binary)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    children
        .into_iter()
        .zip(runs)
        .map(|(child, (binary, args))| {
            let output = child.wait_with_output()?;
            if !output.status.success() {
                bail!(
                    "{} {} failed with {}",
                    binary.display(),
                    args.join(" "),
                    output.status
                );
            }
            serde_json::from_slice(&output.stdout).context("the report")
        })
        .collect()
}

pub(super) fn zstd(bench: &mut Bench<'_>) -> Result<()> {
    let peer = build_peer()?;
    end_to_end(bench, &peer)?;
    idle(bench, &peer)
}

/// End to end on the raw path, one shard and sixteen, against the zstd
/// floor; shardwire on zlib-stream in the same rounds.
fn end_to_end(bench: &mut Bench<'_>, peer: &Path) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let ours = bin.join("shardwire-bench");
    let floor_events = (plan.events_1 / 2).to_string();
    let floor = |compression: &str| {
        strings(&[
            "floor",
            "--events",
            &floor_events,
            "--compression",
            compression,
        ])
    };
    let per_million =
        |key: &'static str| move |r: &Value| number(r, key) / number(r, "events") * 1e6;
    let mut all = Vec::new();
    // Half the zlib rows' floods: three clients a round here, and the
    // zstd rows' ratios settle as fast.
    for (shards, events) in [(1u32, plan.events_1 / 2), (16, plan.events_16 / 2)] {
        eprintln!("zstd-stream end to end, {shards} shard(s) × {events} events…");
        let sim = SimProcess::flooding(bin, shards, events)?;
        let client = |name: &str, compression: &str| {
            strings(&[
                "e2e",
                "--client",
                name,
                "--shards",
                &shards.to_string(),
                "--events",
                &events.to_string(),
                "--gateway",
                &sim.gateway,
                "--compression",
                compression,
            ])
        };
        // Who runs what: shardwire on both, twilight-gateway from the
        // binary its compression was built into.
        let kinds: [(&str, &Path, &str); 3] = [
            ("shardwire", &ours, "zstd-stream"),
            ("twilight", peer, "zstd-stream"),
            ("shardwire", &ours, "zlib-stream"),
        ];
        // A warm-up of each: the sim builds each flood on first use.
        for (name, binary, compression) in kinds {
            measure_binary(binary, &client(name, compression))?;
        }
        let (mut runs, mut floors) = (Vec::new(), Vec::new());
        for _ in 0..plan.runs {
            floors.push(measure_binary(&ours, &floor("zstd-stream"))?);
            for (name, binary, compression) in kinds {
                let report = measure_binary(binary, &client(name, compression))?;
                runs.push((name, compression, report));
            }
        }
        let pick = |name: &str, compression: &str, f: &dyn Fn(&Value) -> f64| {
            Spread::of(
                &runs
                    .iter()
                    .filter(|(n, c, _)| *n == name && *c == compression)
                    .map(|(_, _, r)| f(r))
                    .collect::<Vec<_>>(),
            )
        };
        let rate = |r: &Value| number(r, "flood_events") / number(r, "flood_s") / 1e3;
        let cpu = per_million("cpu_s");
        let floor_s = Spread::of(&floors.iter().map(per_million("wall_s")).collect::<Vec<_>>());
        let zlib_rate = pick("shardwire", "zlib-stream", &rate);
        bench.rows.push(Row::higher(
            &format!("zstd-stream, end to end, {shards} shard(s), raw: k events/s"),
            pick("shardwire", "zstd-stream", &rate),
            pick("twilight", "zstd-stream", &rate),
            zlib_rate.map_or_else(String::new, |zlib| {
                format!("shardwire on zlib-stream, same rounds: {}", zlib.show(0))
            }),
        ));
        let zstd_cpu = pick("shardwire", "zstd-stream", &cpu);
        let zlib_cpu = pick("shardwire", "zlib-stream", &cpu);
        let note = match (zstd_cpu, floor_s, zlib_cpu) {
            (Some(zstd), Some(floor), Some(zlib)) => format!(
                "{:.2}× the zstd floor of {} s, measured between these runs; \
                 shardwire on zlib-stream, same rounds: {} s (zstd ÷ zlib {:.2}×)",
                zstd.median / floor.median,
                floor.show(2),
                zlib.show(2),
                zstd.median / zlib.median
            ),
            _ => String::new(),
        };
        bench.rows.push(Row {
            what: format!(
                "zstd-stream, end to end, {shards} shard(s), raw: client CPU s per million events"
            ),
            shardwire: zstd_cpu,
            twilight: pick("twilight", "zstd-stream", &cpu),
            digits: 2,
            lower_is_better: true,
            note,
        });
        if shards == 1 {
            bench.rows.push(wire_bytes(bin, &floors, &floor_events)?);
        }
        all.push(json!({
            "shards": shards,
            "floors": floors,
            "runs": runs.iter().map(|(n, c, r)| json!({"client": n, "compression": c, "report": r})).collect::<Vec<_>>(),
        }));
    }
    bench.report["runs"]["zstd_e2e"] = json!(all);
    Ok(())
}

/// Bytes on the wire per event, zstd-stream against zlib-stream, on the
/// floods both floors decompress.
fn wire_bytes(bin: &Path, zstd_floors: &[Value], events: &str) -> Result<Row> {
    let zlib = super::measure(bin, &strings(&["floor", "--events", events]))?;
    let per_event = |r: &Value, key: &str| number(r, key) / number(r, "events");
    let zstd = zstd_floors.first().context("no zstd floor run")?;
    let (zstd_bytes, zlib_bytes) = (
        per_event(zstd, "compressed_bytes"),
        per_event(&zlib, "compressed_bytes"),
    );
    Ok(Row {
        what: "zstd-stream: bytes on the wire per event (the flood's)".into(),
        shardwire: Spread::of(&[zstd_bytes]),
        twilight: None,
        digits: 0,
        lower_is_better: true,
        note: format!(
            "zlib-stream: {zlib_bytes:.0} ({:.2}×); JSON: {:.0} per event; no event repeats within the window",
            zstd_bytes / zlib_bytes,
            per_event(zstd, "bytes")
        ),
    })
}

/// Idle memory on zstd-stream: right after READY, and after a flood of more
/// than a window; shardwire with and without hibernation, and the zlib-stream
/// figures of both clients after the same flood.
fn idle(bench: &mut Bench<'_>, peer: &Path) -> Result<()> {
    let bin = bench.bin;
    let zstd_plan = if bench.plan.name == "full" {
        &FULL
    } else {
        &QUICK
    };
    let ours = bin.join("shardwire-bench");
    let (traffic_shards, traffic_events) = zstd_plan.traffic;
    eprintln!(
        "zstd-stream idle: {} shards after READY, {traffic_shards} after {traffic_events} events each…",
        zstd_plan.idle_shards
    );
    let quiet = SimProcess::flooding(bin, zstd_plan.idle_shards, 0)?;
    let busy = SimProcess::flooding(bin, traffic_shards, traffic_events)?;
    // (label, binary, client, compression, flooded first, shardwire hibernates)
    let kinds: [(&str, &Path, &str, &str, bool, bool); 7] = [
        ("shardwire", &ours, "shardwire", "zstd-stream", false, true),
        (
            "shardwire, no hibernation",
            &ours,
            "shardwire",
            "zstd-stream",
            false,
            false,
        ),
        ("twilight", peer, "twilight", "zstd-stream", false, true),
        ("shardwire", &ours, "shardwire", "zstd-stream", true, true),
        ("twilight", peer, "twilight", "zstd-stream", true, true),
        ("shardwire", &ours, "shardwire", "zlib-stream", true, true),
        ("twilight", &ours, "twilight", "zlib-stream", true, true),
    ];
    let args =
        |(_, _, client, compression, flooded, hibernate): (&str, &Path, &str, &str, bool, bool)| {
            let (sim, shards, events) = if flooded {
                (&busy, traffic_shards, traffic_events)
            } else {
                (&quiet, zstd_plan.idle_shards, 0)
            };
            let mut args = strings(&[
                "idle",
                "--client",
                client,
                "--shards",
                &shards.to_string(),
                "--gateway",
                &sim.gateway,
                "--compression",
                compression,
                "--events",
                &events.to_string(),
            ]);
            if !hibernate {
                args.push("--no-hibernate".into());
            }
            args
        };
    let mut rounds = Vec::new();
    for _ in 0..zstd_plan.idle_rounds {
        let runs: Vec<(&Path, Vec<String>)> =
            kinds.iter().map(|&kind| (kind.1, args(kind))).collect();
        rounds.push(measure_all(&runs)?);
    }
    let per_shard = |index: usize| {
        let shards = if kinds[index].4 {
            traffic_shards
        } else {
            zstd_plan.idle_shards
        };
        Spread::of(
            &rounds
                .iter()
                .map(|round| {
                    let r = &round[index];
                    (number(r, "rss_kib") - number(r, "baseline_rss_kib")) / f64::from(shards)
                })
                .collect::<Vec<_>>(),
        )
    };
    let (n, e) = (zstd_plan.idle_shards, traffic_events);
    bench.rows.push(Row {
        what: format!("zstd-stream, {n} idle shards: RSS per shard, KiB"),
        shardwire: per_shard(0),
        twilight: per_shard(2),
        digits: 1,
        lower_is_better: true,
        note: format!(
            "right after READY; shardwire without hibernation: {} KiB",
            per_shard(1).map_or_else(|| "–".into(), |s| s.show(1))
        ),
    });
    bench.rows.push(Row {
        what: format!(
            "zstd-stream, {traffic_shards} shards idle after {e} events each: RSS per shard, KiB"
        ),
        shardwire: per_shard(3),
        twilight: per_shard(4),
        digits: 1,
        lower_is_better: true,
        note: "the window is full: a zstd context cannot hibernate".into(),
    });
    bench.rows.push(Row {
        what: format!(
            "zlib-stream, {traffic_shards} shards idle after {e} events each: RSS per shard, KiB"
        ),
        shardwire: per_shard(5),
        twilight: per_shard(6),
        digits: 1,
        lower_is_better: true,
        note: "the same flood on zlib-stream, in the same rounds".into(),
    });
    bench.report["runs"]["zstd_idle"] = json!({
        "kinds": kinds.iter().map(|k| json!({"label": k.0, "client": k.2, "compression": k.3, "flooded": k.4, "hibernate": k.5})).collect::<Vec<_>>(),
        "rounds": rounds,
    });
    Ok(())
}
