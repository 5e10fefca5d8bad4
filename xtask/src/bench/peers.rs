//! `cargo xtask bench --peers`: shardwire beside @discordjs/ws.
//!
//! The Node harness in `benches/peers` (`bench.mjs`) runs @discordjs/ws
//! with zlib-sync against the same `shardwire sim` as the other rows; its
//! runs alternate with shardwire-bench's, both pinned to the same one CPU,
//! and the rows go to a table of their own. Runs only where `node` is on
//! the `PATH`; installs the harness's packages with `npm ci` when
//! `benches/peers/node_modules` is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Bench, Row, SimProcess, Spread, markdown_table, number, scale, strings};

/// The peer's rows, printed after the main table.
#[derive(Default)]
pub(super) struct Table {
    /// `Row::twilight` holds the peer's figures here.
    rows: Vec<Row>,
    /// The line printed instead of the table when the rows did not run.
    skipped: Option<String>,
    /// What ran: versions and the CPU both clients had.
    caption: String,
}

impl Table {
    /// The table in markdown, or the line saying why it is not there;
    /// nothing when the section did not run.
    pub(super) fn markdown(&self) -> Vec<String> {
        if let Some(skipped) = &self.skipped {
            return vec![skipped.clone()];
        }
        if self.rows.is_empty() {
            return Vec::new();
        }
        markdown_table(self.caption.clone(), "@discordjs/ws", &self.rows)
    }
}

/// Whether a section runs: the one `--only` names, else every section but
/// this one, which runs only with `--peers`.
pub(super) fn runs(section: &str, only: Option<&str>, with_peers: bool) -> bool {
    only.map_or(section != "peers" || with_peers, |only| only == section)
}

/// The harness's folder: `benches/peers` beside `xtask`.
fn harness_dir() -> PathBuf {
    crate::root().join("benches").join("peers")
}

/// `name` in one of the `PATH`'s folders.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The CPU both clients are pinned to: the last this process may use
/// (`shardwire sim` is not pinned and gets the others).
fn client_cpu() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    last_cpu(list)
}

/// The highest CPU in a list such as `0-3,8,10-11`.
fn last_cpu(list: &str) -> Option<u32> {
    list.trim()
        .split(',')
        .filter_map(|part| part.rsplit('-').next()?.trim().parse().ok())
        .max()
}

/// Runs `program args…` on `cpu` alone (through `taskset`, when there is
/// one); returns the one JSON object it prints.
fn pinned_report(cpu: Option<u32>, program: &Path, args: &[String]) -> Result<Value> {
    let command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["--cpu-list", &cpu.to_string()]).arg(program);
            taskset
        }
        None => Command::new(program),
    };
    super::report(command, program, args)
}

/// Installs the harness's packages from its lockfile if they are missing.
fn install(dir: &Path) -> Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    eprintln!(
        "peers: {} is missing: npm ci (installs the locked @discordjs/ws and builds zlib-sync)…",
        dir.join("node_modules").display()
    );
    let npm = on_path("npm").context("`node` is on the PATH but `npm` is not")?;
    // npm's output to stderr: stdout keeps the table.
    crate::run(
        Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdout(std::io::stderr()),
    )
}

/// The @discordjs/ws rows: a flood and idle shards, each run beside
/// shardwire's on the same simulator.
pub(super) fn peers(bench: &mut Bench<'_>) -> Result<()> {
    let Some(node) = on_path("node") else {
        bench.peers.skipped = Some("@discordjs/ws rows skipped: no `node` on the PATH.".to_owned());
        return Ok(());
    };
    let dir = harness_dir();
    install(&dir)?;
    let (bin, plan) = (bench.bin, bench.plan);
    let (shards, events, idle_shards) = plan.peers;
    let cpu = client_cpu();
    if cpu.is_some() && on_path("taskset").is_none() {
        bail!("peers: `taskset` (util-linux) is needed to pin the clients to one CPU");
    }
    let shardwire = bin.join("shardwire-bench");
    let script = dir.join("bench.mjs").display().to_string();
    let harness = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--expose-gc".to_owned(), script.clone()];
        all.extend(strings(args));
        all
    };

    eprintln!("peers: {shards} shards × {events} events, shardwire and @discordjs/ws…");
    let (n, e) = (shards.to_string(), events.to_string());
    let sim = SimProcess::flooding(bin, shards, events)?;
    let ours = |typed: bool| {
        let mut args = strings(&[
            "e2e",
            "--client",
            "shardwire",
            "--shards",
            &n,
            "--events",
            &e,
            "--gateway",
            &sim.gateway,
        ]);
        if typed {
            args.push("--typed".into());
        }
        args
    };
    let theirs = harness(&["flood", "--api", &sim.api, "--shards", &n, "--events", &e]);
    // A warm-up: the sim builds its flood on first use (one for all).
    pinned_report(cpu, &shardwire, &ours(false))?;
    let (mut raw, mut typed, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        peer.push(pinned_report(cpu, &node, &theirs)?);
        raw.push(pinned_report(cpu, &shardwire, &ours(false))?);
        typed.push(pinned_report(cpu, &shardwire, &ours(true))?);
    }
    drop(sim);

    eprintln!("peers: {idle_shards} idle shards, shardwire and @discordjs/ws…");
    let k = idle_shards.to_string();
    let sim = SimProcess::start(
        bin,
        &strings(&[
            "--shards",
            &k,
            "--max-concurrency",
            &k,
            "--identify-window-ms",
            "0",
        ]),
    )?;
    let (mut idle_ours, mut idle_theirs) = (Vec::new(), Vec::new());
    for _ in 0..plan.idle_runs {
        idle_ours.push(pinned_report(
            cpu,
            &shardwire,
            &strings(&[
                "idle",
                "--client",
                "shardwire",
                "--shards",
                &k,
                "--gateway",
                &sim.gateway,
            ]),
        )?);
        idle_theirs.push(pinned_report(
            cpu,
            &node,
            &harness(&["idle", "--api", &sim.api, "--shards", &k]),
        )?);
    }
    drop(sim);

    let spread = |runs: &[Value], f: &dyn Fn(&Value) -> f64| {
        Spread::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let cpu_per_million = |r: &Value| number(r, "cpu_s") / number(r, "events") * 1e6;
    let rate = |r: &Value| number(r, "flood_events") / number(r, "flood_s");
    let flood = format!("{shards} shards × {events} events");
    let table = &mut bench.peers;
    for (path, runs) in [("raw", &raw), ("typed", &typed)] {
        table.rows.push(Row {
            what: format!("{flood}, shardwire {path}: client CPU s per million events"),
            shardwire: spread(runs, &cpu_per_million),
            twilight: spread(&peer, &cpu_per_million),
            digits: 2,
            lower_is_better: true,
            note: "@discordjs/ws always parses each event's JSON (`JSON.parse`)".into(),
        });
        table.rows.push(Row::higher(
            &format!("{flood}, shardwire {path}: k events/s"),
            spread(runs, &rate).map(|s| scale(s, 1e-3)),
            spread(&peer, &rate).map(|s| scale(s, 1e-3)),
            "while the floods run",
        ));
    }
    let per_shard = |key: &'static str| {
        move |r: &Value| (number(r, key) - number(r, "baseline_rss_kib")) / f64::from(idle_shards)
    };
    table.rows.push(Row {
        what: format!("{idle_shards} idle shards: RSS per shard, KiB"),
        shardwire: spread(&idle_ours, &per_shard("rss_kib")),
        twilight: spread(&idle_theirs, &per_shard("rss_kib")),
        digits: 1,
        lower_is_better: true,
        note: "as it is, 2 s after the last READY (shardwire's shards hibernate after 0.5 s)"
            .into(),
    });
    table.rows.push(Row {
        what: format!(
            "{idle_shards} idle shards: RSS per shard after malloc_trim / a full GC, KiB"
        ),
        shardwire: spread(&idle_ours, &per_shard("trimmed_rss_kib")),
        twilight: spread(&idle_theirs, &per_shard("gc_rss_kib")),
        digits: 1,
        lower_is_better: true,
        note: "shardwire: `malloc_trim(0)`; @discordjs/ws: `gc()` (node --expose-gc)".into(),
    });

    let version = |key: &str| {
        peer.first()
            .and_then(|r| r["versions"][key].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let pinned = cpu.map_or_else(
        || "unpinned (no CPU list in /proc/self/status)".to_owned(),
        |cpu| format!("both pinned to CPU {cpu} (`taskset`), the sim beside them"),
    );
    table.caption = format!(
        "shardwire ÷ @discordjs/ws {} (zlib-sync {}, zlib-stream; Node {}, one process, `SimpleShardingStrategy`), {pinned}; {} runs a flood row, {} an idle row, median (lowest–highest), ratio of medians.",
        version("@discordjs/ws"),
        version("zlib-sync"),
        version("node"),
        plan.runs,
        plan.idle_runs,
    );
    bench.report["runs"]["peers"] = json!({
        "cpu": cpu,
        "flood": {"discordjs_ws": peer, "shardwire_raw": raw, "shardwire_typed": typed},
        "idle": {"discordjs_ws": idle_theirs, "shardwire": idle_ours},
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_cpu_of_a_list() {
        assert_eq!(last_cpu("0-1\n"), Some(1));
        assert_eq!(last_cpu("0-3,8,10-11"), Some(11));
        assert_eq!(last_cpu("5"), Some(5));
        assert_eq!(last_cpu(""), None);
    }

    #[test]
    fn the_peers_run_only_when_asked() {
        assert!(runs("e2e", None, false));
        assert!(!runs("peers", None, false));
        assert!(runs("peers", None, true));
        assert!(runs("peers", Some("peers"), false));
        assert!(!runs("e2e", Some("peers"), true));
        assert!(!runs("peers", Some("node"), true));
    }

    #[test]
    fn a_skipped_table_is_one_line() {
        let table = Table {
            skipped: Some("skipped".into()),
            ..Table::default()
        };
        assert_eq!(table.markdown(), vec!["skipped".to_owned()]);
        assert!(Table::default().markdown().is_empty());
    }
}
