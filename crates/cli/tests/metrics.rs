//! `--metrics ADDR` on `tail`, `node` and `demo`: the Prometheus text
//! format on `GET /metrics`, and one-line errors for an address that
//! cannot be served.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Killed, Served, get, request};
use shardwire_sim::Sim;

/// Each command with what it needs to get as far as `--metrics`; none of
/// them reaches the (closed) ports it names before failing on it.
const COMMANDS: [&[&str]; 3] = [
    &["tail", "--token", "t", "--api-base", "http://127.0.0.1:9"],
    &[
        "node",
        "--nats",
        "nats://127.0.0.1:9",
        "--capacity",
        "1",
        "--token",
        "t",
    ],
    &["demo", "--seconds", "5"],
];

/// Runs the command to its end, within 20 s.
fn run(args: &[&str]) -> Output {
    let mut child = Killed(
        Command::new(BIN)
            .args(args)
            .env_remove("DISCORD_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{args:?} did not exit in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let Killed(inner) = &mut child;
    let mut output = Output {
        status: inner.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    inner
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut output.stdout)
        .unwrap();
    inner
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut output.stderr)
        .unwrap();
    output
}

/// Runs each command with `--metrics addr`; checks the exit code and that
/// stdout is empty; returns each command's stderr.
fn refused(addr: &str, code: i32) -> Vec<String> {
    COMMANDS
        .iter()
        .map(|command| {
            let args = [command, &["--metrics", addr][..]].concat();
            let output = run(&args);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
            assert!(output.stdout.is_empty(), "{args:?}: nothing started");
            stderr
        })
        .collect()
}

#[test]
fn metrics_takes_an_ip_and_a_port() {
    for bad in ["localhost:9100", "9100", "127.0.0.1"] {
        // clap's usage error: the value, the flag, and then the hint.
        for stderr in refused(bad, 2) {
            assert!(
                stderr.starts_with(&format!(
                    "error: invalid value '{bad}' for '--metrics <ADDR>'"
                )) && stderr.contains("pass one like 127.0.0.1:9100"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn metrics_on_a_port_in_use_is_one_line_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for line in refused(&addr, 1) {
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(
            line.starts_with(&format!("shardwire: cannot serve metrics on {addr}: "))
                && line
                    .trim_end()
                    .ends_with("the port is in use: pass --metrics with another port"),
            "{line}"
        );
    }
}

/// 192.0.2.1 (TEST-NET-1, RFC 5737) is no machine's own address: binding
/// it fails at once, and no packet is sent.
#[test]
fn metrics_on_an_address_not_here_is_one_line_and_exit_1() {
    for line in refused("192.0.2.1:9100", 1) {
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(
            line.starts_with("shardwire: cannot serve metrics on 192.0.2.1:9100: ")
                && line.contains("no interface of this machine has that address"),
            "{line}"
        );
    }
}

/// `shardwire <args> --metrics 127.0.0.1:0`, started off the runtime (the
/// start waits for its log line).
async fn serve(args: &[&str]) -> Served {
    let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Served::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

/// Scrapes `addr` every 200 ms until `done` holds for the page; fails
/// after `within`, showing the last page.
async fn scrape_until(addr: SocketAddr, within: Duration, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let page = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
            .await
            .unwrap()
            .unwrap();
        if done(&page.body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in {within:?}:\n{}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the first sample of `name` with each of `labels`
/// (whatever their order and whatever other labels it has).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        // A series without labels is `name value`.
        let (series, value) = match rest.strip_prefix(' ') {
            Some(value) => ("", value),
            None => rest.strip_prefix('{')?.split_once("} ")?,
        };
        let has = |(key, value): &(&str, &str)| {
            series
                .split(',')
                .any(|pair| pair == format!("{key}=\"{value}\""))
        };
        labels.iter().all(has).then(|| value.trim().parse().ok())?
    })
}

#[test]
fn metrics_serves_the_text_format_on_get_metrics_only() {
    let demo = Served::start(&["demo", "--seconds", "30", "--shards", "2"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    // Both shards active, and a heartbeat ACKed on each (every 2 s here).
    let ready = |text: &str| {
        ["0", "1"].into_iter().all(|id| {
            let shard = [("shard", id)];
            sample(text, "shardwire_shard_state", &shard) == Some(5.0)
                && sample(text, "shardwire_heartbeat_latency_seconds_count", &shard)
                    .is_some_and(|count| count >= 1.0)
        })
    };
    let page = loop {
        let response = get(demo.metrics, "/metrics").unwrap();
        assert_eq!(response.status, 200);
        if ready(&response.body) {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "no active shards with a heartbeat in 15 s:\n{}",
            response.body
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        page.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        page.headers
    );
    // A real histogram, with buckets, not a summary.
    for le in ["0.001", "10", "+Inf"] {
        let bucket = sample(
            &page.body,
            "shardwire_heartbeat_latency_seconds_bucket",
            &[("shard", "0"), ("le", le)],
        );
        assert!(bucket.is_some(), "le {le}:\n{}", page.body);
    }
    let ready = sample(
        &page.body,
        "shardwire_dispatches_total",
        &[("shard", "1"), ("event", "READY")],
    );
    assert_eq!(ready, Some(1.0), "{}", page.body);
    for other in ["/", "/metric", "/metrics/x", "/api/v1/query"] {
        assert_eq!(get(demo.metrics, other).unwrap().status, 404, "{other}");
    }
    let post = request(demo.metrics, "POST", "/metrics").unwrap();
    assert_eq!(post.status, 405);
    assert!(post.headers.contains("allow: get"), "{}", post.headers);
}

/// `tail` installs the recorder before its cluster makes a shard, so each
/// shard's series are there; the token is in no log line.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_tail_cover_its_shards() {
    let sim = Sim::builder()
        .shards(2)
        .max_concurrency(16)
        .identify_window(Duration::ZERO)
        .event_rate(50.0)
        .start()
        .await
        .unwrap();
    let (token, api) = (sim.token().to_owned(), sim.api_url().to_owned());
    let tail = serve(&["tail", "--token", &token, "--api-base", &api]).await;
    let within = Duration::from_secs(15);
    scrape_until(tail.metrics, within, "active shards with events", |page| {
        ["0", "1"].into_iter().all(|id| {
            sample(page, "shardwire_shard_state", &[("shard", id)]) == Some(5.0)
                && sample(
                    page,
                    "shardwire_dispatches_total",
                    &[("shard", id), ("event", "MESSAGE_CREATE")],
                )
                .is_some()
        })
    })
    .await;
    let logs = tail.stderr.lock().unwrap().join("\n");
    assert!(logs.contains("READY"), "{logs}");
    assert!(!logs.contains(&token), "the token in the logs:\n{logs}");
    drop(tail);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_node_cover_its_shards_its_leases_and_what_it_published() {
    let Some(server) = shardwire_nats::LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here")
    else {
        return;
    };
    let sim = Sim::builder()
        .shards(2)
        .max_concurrency(2)
        .identify_window(Duration::from_secs(1))
        .event_rate(50.0)
        .start()
        .await
        .unwrap();
    let (token, api, url) = (
        sim.token().to_owned(),
        sim.api_url().to_owned(),
        server.url(),
    );
    let node = serve(&[
        "node",
        "--token",
        &token,
        "--api-base",
        &api,
        "--nats",
        &url,
        "--capacity",
        "2",
        "--range-size",
        "1",
        "--identify-window-ms",
        "1000",
        "--intents",
        "1",
    ])
    .await;
    let within = Duration::from_secs(30);
    let what = "a node with 2 leases and 2 active shards publishing";
    scrape_until(node.metrics, within, what, |page| {
        let published = |id| {
            sample(
                page,
                "shardwire_nats_events_published_total",
                &[("shard", id)],
            )
            .is_some_and(|events| events > 0.0)
        };
        let active = |id| sample(page, "shardwire_shard_state", &[("shard", id)]) == Some(5.0);
        ["0", "1"].into_iter().all(|id| active(id) && published(id))
            && sample(page, "shardwire_nats_leases_held", &[]) == Some(2.0)
            && sample(page, "shardwire_session_starts_remaining", &[]).is_some()
    })
    .await;
    let logs = node.stderr.lock().unwrap().join("\n");
    assert!(!logs.contains(&token), "the token in the logs:\n{logs}");
    drop(node);
    sim.shutdown().await;
}
