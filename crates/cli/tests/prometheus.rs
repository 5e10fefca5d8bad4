//! A real Prometheus server scrapes `shardwire demo --metrics` every
//! second; its answers for events per second per shard and for each
//! shard's state must agree with what the demo shows.
//!
//! The server is `$PROMETHEUS`, else `prometheus` on PATH (Debian's
//! package). Without one the test says SKIP, unless
//! SHARDWIRE_REQUIRE_PROMETHEUS=1 (as in `.ci/run`) makes it fail.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dashboard::{as_prometheus_runs, dashboard, exprs};
use common::{Killed, Served, encode, get};
use serde_json::Value;

/// Events per second each of the demo's shards receives.
const RATE: f64 = 200.0;
const SHARDS: usize = 2;
/// How far Prometheus's rate may be from the demo's, and from `RATE`.
const TOLERANCE: f64 = 0.15 * RATE;

fn prometheus_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file())
}

/// A directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "shardwire-prometheus-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free a moment ago (Prometheus cannot be told to pick
/// one and say which).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    addr: SocketAddr,
    log: PathBuf,
    child: Killed,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, its storage,
    /// config and log in `dir`, and waits (at most 15 s) until it is ready.
    fn start(binary: &Path, target: SocketAddr, dir: &Path) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: shardwire\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
        let mut prometheus = Prometheus {
            addr,
            log,
            child: Killed(child),
        };
        prometheus.wait_for("ready", Duration::from_secs(15), |p| {
            get(p.addr, "/-/ready").is_ok_and(|r| r.status == 200)
        });
        prometheus
    }

    /// Polls `done` every 100 ms until it holds; fails with Prometheus's
    /// log after `limit`, or at once if Prometheus has exited.
    fn wait_for(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            let exited = self.child.0.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("Prometheus not {what} ({exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An instant query's samples: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let target = format!("/api/v1/query?query={}", encode(promql));
        let response = get(self.addr, &target).unwrap();
        let answer: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|error| panic!("{promql}: {error}: {}", response.body));
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        let samples = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        samples
            .iter()
            .map(|sample| {
                let labels = serde_json::from_value(sample["metric"].clone()).unwrap();
                let value = sample["value"][1].as_str().and_then(|v| v.parse().ok());
                (
                    labels,
                    value.unwrap_or_else(|| panic!("{promql}: {sample}")),
                )
            })
            .collect()
    }

    /// One value per shard, by its `shard` label.
    fn per_shard(&self, promql: &str) -> BTreeMap<u32, f64> {
        self.query(promql)
            .into_iter()
            .map(|(labels, value)| (labels["shard"].parse().unwrap(), value))
            .collect()
    }
}

/// One shard's row of a status the demo printed.
#[derive(Debug)]
struct Row {
    state: String,
    per_second: f64,
}

/// Every status the demo printed, oldest first: each a map of shard rows.
/// A row is `shard  state  latency  events/s  events  resumes`, the state
/// in a 13-column field (it may hold a space) and the latency "-" or
/// "0.53 ms".
fn statuses(lines: &[String]) -> Vec<BTreeMap<u32, Row>> {
    let mut statuses = Vec::new();
    let mut current: Option<BTreeMap<u32, Row>> = None;
    for line in lines {
        if line.trim_start().starts_with("shard ") && line.contains("events/s") {
            current = Some(BTreeMap::new());
        } else if line.contains(" shards ready") {
            statuses.extend(current.take());
        } else if let Some(rows) = &mut current {
            let (id, rest) = line.split_at(6);
            let (state, rest) = rest[2..].split_at(13);
            let numbers: Vec<&str> = rest.split_whitespace().collect();
            let per_second = numbers[numbers.len() - 3].parse().unwrap();
            rows.insert(
                id.trim().parse().unwrap(),
                Row {
                    state: state.trim().to_owned(),
                    per_second,
                },
            );
        }
    }
    statuses
}

/// The `shardwire_shard_state` value of a state the demo names.
fn state_value(name: &str) -> f64 {
    match name {
        "disconnected" => 0.0,
        "connecting" => 1.0,
        "waiting hello" => 2.0,
        "identifying" => 3.0,
        "resuming" => 4.0,
        "active" => 5.0,
        "reconnecting" => 6.0,
        "fatal" => 7.0,
        _ => panic!("the demo shows an unknown state {name:?}"),
    }
}

#[test]
fn prometheus_scrapes_the_demo_and_agrees_with_it() {
    let Some(binary) = prometheus_binary() else {
        assert!(
            std::env::var("SHARDWIRE_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "SHARDWIRE_REQUIRE_PROMETHEUS=1 and no prometheus: set PROMETHEUS or put it on PATH"
        );
        // Straight to stderr, past the harness's capture; `.ci/run` counts
        // these lines as skipped tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: prometheus_scrapes_the_demo_and_agrees_with_it: no prometheus binary (set PROMETHEUS, or SHARDWIRE_REQUIRE_PROMETHEUS=1 to fail instead)"
        );
        return;
    };
    // One identify round, so both shards are active at once.
    let demo = Served::start(&[
        "demo",
        // Long enough that the demo's op 7, halfway, comes after the
        // checks (the test kills it when done).
        "--seconds",
        "240",
        "--shards",
        &SHARDS.to_string(),
        "--max-concurrency",
        &SHARDS.to_string(),
        "--rate",
        &RATE.to_string(),
    ]);
    let dir = TempDir::new();
    let mut prometheus = Prometheus::start(&binary, demo.metrics, &dir.0);
    // Seven scrapes, all up: a 5 s window holds five samples of each shard.
    prometheus.wait_for("scraping", Duration::from_secs(20), |p| {
        let scrapes = p.query("count_over_time(up{job=\"shardwire\"}[1m])");
        let up = p.query("up{job=\"shardwire\"}");
        scrapes.first().is_some_and(|(_, n)| *n >= 7.0)
            && up.first().is_some_and(|(_, v)| *v == 1.0)
    });

    let rates = prometheus.per_shard("sum by (shard) (rate(shardwire_dispatches_total[5s]))");
    let states = prometheus.per_shard("shardwire_shard_state");
    let p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le) (shardwire_heartbeat_latency_seconds_bucket))",
    );
    let shown = statuses(&demo.stdout.lock().unwrap());
    #[allow(clippy::print_stdout, reason = "the answers, shown with --nocapture")]
    {
        println!(
            "Prometheus: events/s per shard {rates:?}, states {states:?}, heartbeat p99 {p99:?}"
        );
        println!("the demo's last status: {:?}", shown.last());
    }

    // The demo's own events/s over about the same 5 s: its last five
    // statuses (one a second, each over the last half second).
    let recent = &shown[shown.len().saturating_sub(5)..];
    assert_eq!(recent.len(), 5, "five statuses from the demo: {shown:?}");
    assert_eq!(rates.len(), SHARDS, "{rates:?}");
    for (shard, rate) in &rates {
        let demo_rate = recent.iter().map(|s| s[shard].per_second).sum::<f64>() / 5.0;
        assert!(
            (rate - demo_rate).abs() <= TOLERANCE && (rate - RATE).abs() <= TOLERANCE,
            "shard {shard}: Prometheus {rate:.1}/s, the demo {demo_rate:.1}/s, sent at {RATE}/s"
        );
    }
    let last = shown.last().unwrap();
    let demo_states: BTreeMap<u32, f64> = last
        .iter()
        .map(|(id, row)| (*id, state_value(&row.state)))
        .collect();
    assert_eq!(states, demo_states, "Prometheus's states and the demo's");
    assert!(
        states.values().all(|state| *state == 5.0),
        "all active: {states:?}"
    );
    // Buckets were scraped, so quantiles work: loopback heartbeats are
    // far under the largest bound.
    assert!(
        matches!(p99[..], [(_, p99)] if p99.is_finite() && p99 > 0.0 && p99 <= 10.0),
        "{p99:?}"
    );

    // Every query of the Grafana dashboard is PromQL this Prometheus runs,
    // and answers when the series it names were scraped.
    let scraped: Vec<String> = prometheus
        .query(r#"count by (__name__) ({__name__=~"shardwire_.+"})"#)
        .into_iter()
        .map(|(labels, _)| labels["__name__"].clone())
        .collect();
    for (title, expr) in exprs(&dashboard()) {
        let answer = prometheus.query(&as_prometheus_runs(&expr));
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("shardwire_"));
        if names
            .into_iter()
            .all(|name| scraped.iter().any(|s| s == name))
        {
            assert!(!answer.is_empty(), "{title}: no answer to {expr}");
        }
    }
}
