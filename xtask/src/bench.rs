//! `cargo xtask bench`: shardwire against twilight-gateway, side by side.
//!
//! Builds the `shardwire` command (package shardwire-cli) and
//! `shardwire-bench` (package shardwire-benches) in release mode, runs
//! `shardwire sim` in its own process (one core) and the measuring client in
//! another (one core), several runs per row with the two clients
//! interleaved, and prints one markdown table: median (lowest to highest)
//! per row and the ratio of medians. Every run goes to
//! `target/bench/report.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

mod cores;
pub(crate) mod instructions;
mod peers;
mod zstd;

/// How much to run.
struct Plan {
    name: &'static str,
    runs: usize,
    /// Events per shard with one shard, and with sixteen.
    events_1: u64,
    events_16: u64,
    idle_shards: u32,
    idle_runs: usize,
    /// Startup: shards, max_concurrency, identify window (ms).
    startup: (u32, u32, u64),
    codec_events: usize,
    /// Latency: stamped events per second, and samples per run.
    latency: (u32, usize),
    /// Latency over 16 shards: stamped events per second in total, and
    /// samples per run.
    latency_16: (u32, usize),
    /// Many cores: shards, and the flood per shard.
    cores: (u32, u64),
    /// The node into JetStream: shards, and the flood per shard.
    node: (u32, u64),
    /// Beside @discordjs/ws (`--peers`): shards and the flood per shard,
    /// and idle shards.
    peers: (u32, u64, u32),
}

const QUICK: Plan = Plan {
    name: "quick",
    runs: 3,
    events_1: 100_000,
    events_16: 10_000,
    idle_shards: 1_000,
    idle_runs: 3,
    startup: (16, 4, 1_000),
    codec_events: 10_000,
    latency: (1_000, 2_000),
    latency_16: (20_000, 20_000),
    cores: (16, 20_000),
    node: (4, 50_000),
    peers: (16, 4_000, 250),
};

const FULL: Plan = Plan {
    name: "full",
    runs: 5,
    events_1: 500_000,
    events_16: 50_000,
    idle_shards: 10_000,
    idle_runs: 3,
    startup: (64, 16, 5_000),
    codec_events: 20_000,
    latency: (1_000, 10_000),
    latency_16: (20_000, 100_000),
    cores: (16, 50_000),
    node: (4, 200_000),
    peers: (16, 50_000, 1_000),
};

/// The median, lowest and highest of some samples.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }

    fn show(&self, digits: usize) -> String {
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            self.median, self.min, self.max
        )
    }
}

/// One table row.
struct Row {
    what: String,
    shardwire: Option<Spread>,
    twilight: Option<Spread>,
    digits: usize,
    /// Lower is better (CPU, memory, time).
    lower_is_better: bool,
    note: String,
}

impl Row {
    /// A throughput row, whole numbers.
    fn higher(
        what: &str,
        shardwire: Option<Spread>,
        twilight: Option<Spread>,
        note: impl Into<String>,
    ) -> Self {
        Self {
            what: what.to_owned(),
            shardwire,
            twilight,
            digits: 0,
            lower_is_better: false,
            note: note.into(),
        }
    }

    fn markdown(&self) -> String {
        let cell = |spread: &Option<Spread>| {
            spread.map_or_else(|| "–".to_owned(), |s| s.show(self.digits))
        };
        let ratio = match (self.shardwire, self.twilight) {
            (Some(ours), Some(theirs)) if theirs.median > 0.0 => {
                format!("{:.2}×", ours.median / theirs.median)
            }
            _ => "–".to_owned(),
        };
        let better = if self.lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        };
        format!(
            "| {} ({better}) | {} | {} | {ratio} | {} |",
            self.what,
            cell(&self.shardwire),
            cell(&self.twilight),
            self.note
        )
    }
}

/// The table of shardwire against twilight-gateway, in markdown; nothing
/// when no row ran (`--only peers`).
fn main_table(plan: &Plan, rows: &[Row]) -> Vec<String> {
    if rows.is_empty() {
        return Vec::new();
    }
    markdown_table(
        format!(
            "`cargo xtask bench` ({} plan), {} runs per row, median (lowest–highest); shardwire ÷ twilight-gateway 0.18 is the ratio of medians.",
            plan.name, plan.runs
        ),
        "twilight-gateway",
        rows,
    )
}

/// A caption, then a table of `rows` with shardwire beside `peer`.
fn markdown_table(caption: String, peer: &str, rows: &[Row]) -> Vec<String> {
    let mut lines = vec![
        caption,
        String::new(),
        format!("| row | shardwire | {peer} | ratio | note |"),
        "|---|---|---|---|---|".to_owned(),
    ];
    lines.extend(rows.iter().map(Row::markdown));
    lines
}

/// `shardwire sim` in its own process, killed on drop.
struct SimProcess {
    child: Child,
    gateway: String,
    api: String,
    /// Kept open: the sim prints more lines, and a closed pipe would end it.
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl SimProcess {
    fn start(bin: &Path, args: &[String]) -> Result<Self> {
        let mut child = Command::new(bin.join("shardwire"))
            .args(["sim", "--remaining", "1000000"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting shardwire sim")?;
        let stdout = child.stdout.take().context("the sim's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut value = |prefix: &str| -> Result<String> {
            let line = lines.next().context("the sim said nothing")??;
            line.strip_prefix(prefix)
                .map(str::to_owned)
                .with_context(|| format!("expected `{prefix}…` from the sim, got `{line}`"))
        };
        let api = value("api ")?;
        let gateway = value("gateway ")?;
        Ok(Self {
            child,
            gateway,
            api,
            _stdout: lines,
        })
    }
}

impl SimProcess {
    /// A sim for `shards` shards, all identifying at once, each flooded
    /// with `events` events after its READY.
    fn flooding(bin: &Path, shards: u32, events: u64) -> Result<Self> {
        let shards = shards.to_string();
        Self::start(
            bin,
            &strings(&[
                "--shards",
                &shards,
                "--max-concurrency",
                &shards,
                "--identify-window-ms",
                "0",
                "--flood-after-ready",
                &events.to_string(),
            ]),
        )
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the measuring client once; returns its JSON report.
fn measure(bin: &Path, args: &[String]) -> Result<Value> {
    measure_binary(&bin.join("shardwire-bench"), args)
}

/// As [`measure`], with this binary (`shardwire-bench-zstd`, say).
fn measure_binary(binary: &Path, args: &[String]) -> Result<Value> {
    report(Command::new(binary), binary, args)
}

/// Runs `command` (which starts `program`) with `args`; returns the one
/// JSON object it prints.
fn report(mut command: Command, program: &Path, args: &[String]) -> Result<Value> {
    let output = command
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed with {}",
            program.display(),
            args.join(" "),
            output.status
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{}'s report", program.display()))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// One part of the plan: runs its measurements and adds its rows.
type Section = fn(&mut Bench<'_>) -> Result<()>;

/// What every section of a run reads and adds to.
struct Bench<'a> {
    bin: &'a Path,
    plan: &'a Plan,
    rows: Vec<Row>,
    report: Value,
    peers: peers::Table,
}

/// Builds `shardwire` and `shardwire-bench` in release mode; returns
/// where they are.
fn build(root: &Path) -> Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    eprintln!("building shardwire and shardwire-bench (release)…");
    crate::run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "shardwire-cli",
        "-p",
        "shardwire-benches",
    ]))?;
    Ok(target.join("release"))
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let plan = if args.iter().any(|a| a == "--full") {
        &FULL
    } else {
        &QUICK
    };
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = build(root)?;
    let started = std::time::Instant::now();
    let report = json!({"plan": plan.name, "runs": {}});
    let rows = Vec::new();

    let mut bench = Bench {
        bin: &bin,
        plan,
        rows,
        report,
        peers: peers::Table::default(),
    };
    let only = crate::flag_value::<String>(args, "--only")?;
    let with_peers = args.iter().any(|a| a == "--peers");
    let sections: [(&str, Section); 9] = [
        ("codec", codec),
        ("e2e", end_to_end),
        ("idle", idle_memory),
        ("zstd", zstd::zstd),
        ("latency", latency),
        ("cores", cores::cores),
        ("startup", startup),
        ("node", node),
        ("peers", peers::peers),
    ];
    if let Some(only) = &only
        && !sections.iter().any(|(name, _)| name == only)
    {
        let names: Vec<&str> = sections.iter().map(|(name, _)| *name).collect();
        bail!("--only takes one of {}", names.join(", "));
    }
    for (name, section) in sections {
        if peers::runs(name, only.as_deref(), with_peers) {
            let section_started = std::time::Instant::now();
            section(&mut bench)?;
            let took = section_started.elapsed().as_secs_f64();
            eprintln!("{name}: {took:.0} s");
            bench.report["section_s"][name] = json!(took);
        }
    }
    let Bench {
        rows,
        mut report,
        peers,
        ..
    } = bench;

    let main = main_table(plan, &rows);
    if !main.is_empty() {
        println!("\n{}", main.join("\n"));
    }
    let peers = peers.markdown();
    if !peers.is_empty() {
        println!("\n{}", peers.join("\n"));
    }
    println!("\nTook {:.0} s.", started.elapsed().as_secs_f64());
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report.json");
    report["table"] = json!(rows.iter().map(Row::markdown).collect::<Vec<_>>());
    report["peers_table"] = json!(peers);
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("Every run: {}", path.display());
    Ok(())
}

/// The codec, in-process.
fn codec(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    // 1. The codec, in-process.
    eprintln!("codec…");
    let mut codec_runs = Vec::new();
    for _ in 0..plan.runs {
        codec_runs.push(measure(
            bin,
            &strings(&["codec", "--events", &plan.codec_events.to_string()]),
        )?);
    }
    let codec = |row: &str, key: &str| -> Option<Spread> {
        Spread::of(
            &codec_runs
                .iter()
                .map(|r| number(&r["rows"][row], key))
                .collect::<Vec<_>>(),
        )
    };
    let floor_mb = codec("floor", "mb_per_s");
    let lazy_mb = codec("shardwire_lazy", "mb_per_s");
    let lazy_note = match (lazy_mb, floor_mb) {
        (Some(lazy), Some(floor)) => format!(
            "{:.2}× the inflate floor (target ≥ 0.9×)",
            lazy.median / floor.median
        ),
        _ => String::new(),
    };
    rows.push(Row {
        what: "codec: inflate + scan, MB/s per core".into(),
        shardwire: lazy_mb,
        twilight: codec("twilight_raw", "mb_per_s"),
        digits: 0,
        lower_is_better: false,
        note: lazy_note,
    });
    rows.push(Row::higher(
        "codec: inflate + scan, k events/s per core",
        codec("shardwire_lazy", "events_per_s").map(|s| scale(s, 1e-3)),
        codec("twilight_raw", "events_per_s").map(|s| scale(s, 1e-3)),
        "",
    ));
    rows.push(Row::higher(
        "codec: inflate + typed decode, k events/s per core",
        codec("shardwire_typed", "events_per_s").map(|s| scale(s, 1e-3)),
        codec("twilight_typed", "events_per_s").map(|s| scale(s, 1e-3)),
        "twilight: inflate + `twilight_gateway::parse`",
    ));
    rows.push(Row {
        what: "codec: raw inflate (the ceiling), MB/s per core".into(),
        shardwire: floor_mb,
        twilight: None,
        digits: 0,
        lower_is_better: false,
        note: "zlib-rs, as both clients use".into(),
    });
    report["runs"]["codec"] = json!(codec_runs);

    Ok(())
}

/// End to end, one shard and sixteen, against the inflate floor.
fn end_to_end(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    // 2. End to end, K = 1 and K = 16, against the inflate floor: one floor
    // run before each round of client runs, so the floor is measured under
    // the same load as the rows it divides.
    let floor_events = plan.events_1.to_string();
    let floor_args = strings(&["floor", "--events", &floor_events]);
    let floor_per_million = |r: &Value| number(r, "wall_s") / number(r, "events") * 1e6;
    let mut floor_runs = Vec::new();
    for (shards, events) in [(1u32, plan.events_1), (16, plan.events_16)] {
        eprintln!("end to end, {shards} shard(s) × {events} events…");
        let sim = SimProcess::flooding(bin, shards, events)?;
        let client = |name: &str, typed: bool, recorder: bool| -> Vec<String> {
            let mut args = strings(&[
                "e2e",
                "--client",
                name,
                "--shards",
                &shards.to_string(),
                "--events",
                &events.to_string(),
                "--gateway",
                &sim.gateway,
            ]);
            if typed {
                args.push("--typed".into());
            }
            if recorder {
                args.push("--recorder".into());
            }
            args
        };
        // A warm-up of each: the sim builds its flood on first use.
        measure(bin, &client("shardwire", false, false))?;
        measure(bin, &client("twilight", false, false))?;
        let mut runs: Vec<(String, bool, Value)> = Vec::new();
        let mut recorded = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..plan.runs {
            let floor = measure(bin, &floor_args)?;
            floors.push(floor_per_million(&floor));
            floor_runs.push(json!({"shards": shards, "report": floor}));
            for typed in [false, true] {
                for name in ["shardwire", "twilight"] {
                    let args = client(name, typed, false);
                    runs.push((name.to_owned(), typed, measure(bin, &args)?));
                }
            }
            // The raw path again, every metric recording.
            recorded.push(measure(bin, &client("shardwire", false, true))?);
        }
        let pick = |name: &str, typed: bool, f: &dyn Fn(&Value) -> f64| -> Option<Spread> {
            Spread::of(
                &runs
                    .iter()
                    .filter(|(n, t, _)| n == name && *t == typed)
                    .map(|(_, _, r)| f(r))
                    .collect::<Vec<_>>(),
            )
        };
        // While floods run (the union of each shard's first to last
        // event): connecting and identify-queue waits are not throughput.
        let rate = |r: &Value| number(r, "flood_events") / number(r, "flood_s") / 1e3;
        let cpu = |r: &Value| number(r, "cpu_s") / number(r, "events") * 1e6;
        for typed in [false, true] {
            let path = if typed { "typed" } else { "raw" };
            rows.push(Row {
                what: format!("end to end, {shards} shard(s), {path}: k events/s"),
                shardwire: pick("shardwire", typed, &rate),
                twilight: pick("twilight", typed, &rate),
                digits: 0,
                lower_is_better: false,
                note: String::new(),
            });
            let ours = pick("shardwire", typed, &cpu);
            let note = match (ours, Spread::of(&floors), typed) {
                (Some(ours), Some(floor), false) => format!(
                    "{:.2}× the inflate floor of {} s, measured between these runs \
                     (target ≤ 1.25×); target ≤ 0.7× twilight",
                    ours.median / floor.median,
                    floor.show(2)
                ),
                (_, _, true) => "target: below twilight".into(),
                _ => String::new(),
            };
            rows.push(Row {
                what: format!(
                    "end to end, {shards} shard(s), {path}: client CPU s per million events"
                ),
                shardwire: ours,
                twilight: pick("twilight", typed, &cpu),
                digits: 2,
                lower_is_better: true,
                note,
            });
        }
        // Recording must not show on the raw path: the same client with a
        // Prometheus recorder installed, against the runs without.
        let with_recorder = Spread::of(&recorded.iter().map(cpu).collect::<Vec<_>>());
        let without = pick("shardwire", false, &cpu);
        rows.push(Row {
            what: format!(
                "end to end, {shards} shard(s), raw, Prometheus recorder installed: client CPU s per million events"
            ),
            shardwire: with_recorder,
            twilight: None,
            digits: 2,
            lower_is_better: true,
            note: match (with_recorder, without) {
                (Some(with), Some(without)) => format!(
                    "{:.3}× the raw row without a recorder (target ≤ 1.03×)",
                    with.median / without.median
                ),
                _ => String::new(),
            },
        });
        report["runs"][format!("e2e_{shards}_recorder")] = json!(recorded);
        report["runs"][format!("e2e_{shards}")] = json!(
            runs.iter()
                .map(|(n, t, r)| json!({"client": n, "typed": t, "report": r}))
                .collect::<Vec<_>>()
        );
    }

    report["runs"]["floor"] = json!(floor_runs);

    Ok(())
}

/// Memory of idle shards.
fn idle_memory(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    // 3. Memory of idle shards.
    eprintln!("{} idle shards…", plan.idle_shards);
    {
        let n = plan.idle_shards.to_string();
        let sim = SimProcess::start(
            bin,
            &strings(&[
                "--shards",
                &n,
                "--max-concurrency",
                &n,
                "--identify-window-ms",
                "0",
            ]),
        )?;
        let mut runs = Vec::new();
        for _ in 0..plan.idle_runs {
            for name in ["shardwire", "twilight"] {
                runs.push((
                    name,
                    measure(
                        bin,
                        &strings(&[
                            "idle",
                            "--client",
                            name,
                            "--shards",
                            &n,
                            "--gateway",
                            &sim.gateway,
                        ]),
                    )?,
                ));
            }
        }
        let per_shard = |name: &str, key: &str| {
            Spread::of(
                &runs
                    .iter()
                    .filter(|(c, _)| *c == name)
                    .map(|(_, r)| {
                        (number(r, key) - number(r, "baseline_rss_kib"))
                            / f64::from(plan.idle_shards)
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let total = |name: &str, key: &str| {
            Spread::of(
                &runs
                    .iter()
                    .filter(|(c, _)| *c == name)
                    .map(|(_, r)| number(r, key) / 1024.0)
                    .collect::<Vec<_>>(),
            )
        };
        for (key, how, note) in [
            (
                "rss_kib",
                "",
                "as it is, all connected at once (shardwire's hibernating shards hand freed pages back: `release_memory`)",
            ),
            (
                "trimmed_rss_kib",
                " after malloc_trim",
                "what the shards hold: free heap pages handed back (both clients alike)",
            ),
        ] {
            rows.push(Row {
                what: format!("{} idle shards: process RSS{how}, MiB", plan.idle_shards),
                shardwire: total("shardwire", key),
                twilight: total("twilight", key),
                digits: 1,
                lower_is_better: true,
                note: note.into(),
            });
            rows.push(Row {
                what: format!("idle: RSS{how} per shard, KiB"),
                shardwire: per_shard("shardwire", key),
                twilight: per_shard("twilight", key),
                digits: 1,
                lower_is_better: true,
                note: "target ≤ 0.5× twilight".into(),
            });
        }
        report["runs"]["idle"] = json!(
            runs.iter()
                .map(|(n, r)| json!({"client": n, "report": r}))
                .collect::<Vec<_>>()
        );
    }

    Ok(())
}

/// Latency at a fixed rate: one shard, and sixteen sharing a total rate.
fn latency(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    let (rate_1, samples_1) = plan.latency;
    let (rate_16, samples_16) = plan.latency_16;
    for (shards, rate, samples) in [(1u32, rate_1, samples_1), (16, rate_16, samples_16)] {
        eprintln!("latency: {shards} shard(s), {samples} events at {rate}/s in total…");
        let n = shards.to_string();
        // The sim's rate is per session.
        let per_session = f64::from(rate) / f64::from(shards);
        let sim = SimProcess::start(
            bin,
            &strings(&[
                "--shards",
                &n,
                "--max-concurrency",
                &n,
                "--identify-window-ms",
                "0",
                "--stamp-events",
                "--rate",
                &per_session.to_string(),
            ]),
        )?;
        let mut runs = Vec::new();
        for _ in 0..plan.runs {
            for name in ["shardwire", "twilight"] {
                let args = strings(&[
                    "latency",
                    "--client",
                    name,
                    "--shards",
                    &n,
                    "--events",
                    &samples.to_string(),
                    "--gateway",
                    &sim.gateway,
                ]);
                runs.push((name, measure(bin, &args)?));
            }
        }
        let pick = |name: &str, key: &str| {
            Spread::of(
                &runs
                    .iter()
                    .filter(|(c, _)| *c == name)
                    .map(|(_, r)| number(r, key))
                    .collect::<Vec<_>>(),
            )
        };
        let over = if shards == 1 {
            String::new()
        } else {
            format!(" over {shards} shards")
        };
        for (key, label) in [("p50_us", "p50"), ("p99_us", "p99")] {
            rows.push(Row {
                what: format!(
                    "latency at {rate} events/s{over}, {label}: sim send to the consumer, µs"
                ),
                shardwire: pick("shardwire", key),
                twilight: pick("twilight", key),
                digits: 0,
                lower_is_better: true,
                note: if shards == 1 {
                    "target ≤ 0.8× twilight".into()
                } else {
                    String::new()
                },
            });
        }
        let key = if shards == 1 {
            "latency".to_owned()
        } else {
            format!("latency_{shards}")
        };
        report["runs"][key] = json!(
            runs.iter()
                .map(|(n, r)| json!({"client": n, "report": r}))
                .collect::<Vec<_>>()
        );
    }

    Ok(())
}

/// Startup against the schedule optimum.
fn startup(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    // 4. Startup against the schedule optimum.
    let (shards, concurrency, window) = plan.startup;
    eprintln!("startup: {shards} shards at max_concurrency {concurrency}…");
    {
        let sim = SimProcess::start(
            bin,
            &strings(&[
                "--shards",
                &shards.to_string(),
                "--max-concurrency",
                &concurrency.to_string(),
                "--identify-window-ms",
                &window.to_string(),
            ]),
        )?;
        let mut runs = Vec::new();
        for _ in 0..plan.runs {
            runs.push(measure(
                bin,
                &strings(&[
                    "startup",
                    "--api",
                    &sim.api,
                    "--shards",
                    &shards.to_string(),
                    "--identify-window-ms",
                    &window.to_string(),
                ]),
            )?);
            // A fresh bucket window for the next run.
            std::thread::sleep(std::time::Duration::from_millis(window));
        }
        let ready = Spread::of(
            &runs
                .iter()
                .map(|r| number(r, "ready_s"))
                .collect::<Vec<_>>(),
        );
        let optimum = runs.first().map_or(f64::NAN, |r| number(r, "optimum_s"));
        rows.push(Row { what: format!("startup: {shards} shards at max_concurrency {concurrency} ({window} ms window) until all READY, s"), shardwire: ready, twilight: None, digits: 2, lower_is_better: true, note: format!("schedule optimum {optimum:.2} s (+ network)") });
        report["runs"]["startup"] = json!(runs);
    }

    Ok(())
}

fn scale(spread: Spread, by: f64) -> Spread {
    Spread {
        median: spread.median * by,
        min: spread.min * by,
        max: spread.max * by,
    }
}

/// One `shardwire node` publishing a flood into JetStream on a fresh
/// `nats-server` per run, beside the bare client (the same shards into one
/// sink, as the node reads them) on the same flood, interleaved.
fn node(bench: &mut Bench<'_>) -> Result<()> {
    let (bin, plan) = (bench.bin, bench.plan);
    let (rows, report) = (&mut bench.rows, &mut bench.report);
    let (shards, events) = plan.node;
    let what = format!("node into JetStream, {shards} shards × {events} events");
    if nats_server().is_none() {
        eprintln!("node: no nats-server (set NATS_SERVER or put it on the PATH); row skipped");
        rows.push(Row {
            what: format!("{what}: client CPU s per million events"),
            shardwire: None,
            twilight: None,
            digits: 2,
            lower_is_better: true,
            note: "skipped: no nats-server (set NATS_SERVER or put it on the PATH)".into(),
        });
        return Ok(());
    }
    eprintln!("{what}…");
    let (n, e) = (shards.to_string(), events.to_string());
    let sim = SimProcess::flooding(bin, shards, events)?;
    let node_args = strings(&["node", "--api", &sim.api, "--shards", &n, "--events", &e]);
    let bare_args = strings(&[
        "e2e",
        "--client",
        "shardwire",
        "--sink",
        "--shards",
        &n,
        "--events",
        &e,
        "--gateway",
        &sim.gateway,
    ]);
    // A warm-up of each: the sim builds its flood on first use.
    measure(bin, &bare_args)?;
    measure(bin, &node_args)?;
    let (mut nodes, mut bares) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        nodes.push(measure(bin, &node_args)?);
        bares.push(measure(bin, &bare_args)?);
    }
    let per_million =
        |key: &'static str| move |r: &Value| number(r, key) / number(r, "events") * 1e6;
    let spread = |runs: &[Value], f: &dyn Fn(&Value) -> f64| {
        Spread::of(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let node_rate = spread(&nodes, &|r| {
        number(r, "events") / number(r, "flood_s") / 1e3
    });
    let bare_rate = spread(&bares, &|r| {
        number(r, "flood_events") / number(r, "flood_s") / 1e3
    });
    let node_cpu = spread(&nodes, &per_million("cpu_s"));
    let bare_cpu = spread(&bares, &per_million("cpu_s"));
    let server_cpu = spread(&nodes, &per_million("nats_server_cpu_s"));
    let system = spread(&nodes, &per_million("system_s"));
    let show =
        |s: Option<Spread>, digits: usize| s.map_or_else(|| "–".to_owned(), |s| s.show(digits));
    rows.push(Row::higher(
        &format!("{what}: k events/s stored"),
        node_rate,
        None,
        format!(
            "the bare client on the same flood: {} k/s",
            show(bare_rate, 0)
        ),
    ));
    rows.push(Row {
        what: format!("{what}: client CPU s per million events"),
        shardwire: node_cpu,
        twilight: None,
        digits: 2,
        lower_is_better: true,
        note: match (node_cpu, bare_cpu) {
            (Some(node), Some(bare)) => format!(
                "{:.2}× the bare client's {} s, run between these (target ≤ 2×); {} s of it in the kernel",
                node.median / bare.median,
                bare.show(2),
                show(system, 2)
            ),
            _ => String::new(),
        },
    });
    rows.push(Row {
        what: format!("{what}: nats-server CPU s per million events"),
        shardwire: server_cpu,
        twilight: None,
        digits: 2,
        lower_is_better: true,
        note: "for reference: the server storing them (file storage, one replica)".into(),
    });
    report["runs"]["node"] = json!({"node": nodes, "bare": bares});
    Ok(())
}

/// The `nats-server` the node row runs: `$NATS_SERVER`, else the `PATH`'s.
fn nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle_and_the_ends() {
        let spread = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0]).unwrap().median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert_eq!(spread.show(1), "2.0 (1.0–3.0)");
    }

    #[test]
    fn a_row_shows_the_ratio_of_medians() {
        let row = Row {
            what: "x".into(),
            shardwire: Spread::of(&[1.0]),
            twilight: Spread::of(&[2.0]),
            digits: 0,
            lower_is_better: true,
            note: "n".into(),
        };
        assert_eq!(
            row.markdown(),
            "| x (lower is better) | 1 (1–1) | 2 (2–2) | 0.50× | n |"
        );
    }

    #[test]
    fn the_main_table_is_left_out_when_no_row_ran() {
        assert!(main_table(&QUICK, &[]).is_empty());
        let row = Row::higher("x", Spread::of(&[1.0]), None, "");
        let table = main_table(&QUICK, &[row]);
        assert_eq!(table.len(), 5);
        assert!(table[0].starts_with("`cargo xtask bench` (quick plan)"));
        assert_eq!(table[4], "| x (higher is better) | 1 (1–1) | – | – |  |");
    }
}
