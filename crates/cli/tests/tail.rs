//! The `shardwire tail` contract, tested by running the built binary against
//! shardwire-sim: JSON lines on stdout, the token from the environment, and
//! one-line errors with distinct exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shardwire_sim::{Fault, FieldOrder, PayloadStyle, RestFault, Sim};

const BIN: &str = env!("CARGO_BIN_EXE_shardwire");

/// A sim whose shards all identify at once, and on which tails one after
/// another identify without waiting out an identify window.
async fn sim(shards: u32) -> Sim {
    Sim::builder()
        .shards(shards)
        .max_concurrency(16)
        .identify_window(Duration::ZERO)
        .guilds_per_shard(2)
        .start()
        .await
        .unwrap()
}

fn tail(sim: &Sim, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("tail")
        .args(["--api-base", sim.api_url()])
        .args(args)
        .env_remove("DISCORD_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Reads `count` lines from the child's stdout (at most 20 s), then kills
/// it; returns each line as read and parsed.
async fn raw_lines(mut child: Child, count: usize) -> Vec<(String, Value)> {
    let stdout = child.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(count)
            .map(|line| {
                let line = line.unwrap();
                let value = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {line}"));
                (line, value)
            })
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), read).await;
    let _ = child.kill();
    let _ = child.wait();
    lines.expect("lines in time").unwrap()
}

async fn lines(child: Child, count: usize) -> Vec<Value> {
    raw_lines(child, count)
        .await
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}

/// Waits for the child to exit (at most 20 s); returns its code and stderr.
async fn exit(child: Child) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("it exits in time")
    .unwrap()
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether a stderr line is a log line (`<time> <LEVEL> ...`).
fn is_log(line: &str) -> bool {
    line.split_whitespace()
        .nth(1)
        .is_some_and(|level| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level))
}

/// The one error line of a stderr, its last line; the lines before it
/// are logs.
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|line| !is_log(line)).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "last: {stderr}");
    assert!(errors[0].starts_with("shardwire: "), "{stderr}");
    errors[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_one_json_object_per_dispatch_with_d_as_received() {
    let sim = sim(2).await;
    let child = tail(&sim, &["--token", sim.token()]).spawn().unwrap();
    // READY and two GUILD_CREATEs per shard.
    let raw_lines = raw_lines(child, 6).await;
    for (raw, line) in &raw_lines {
        // Exactly these four keys, in this order.
        assert_eq!(line.as_object().unwrap().len(), 4, "{line}");
        let head = format!(
            r#"{{"shard":{},"seq":{},"t":"{}","d":{{"#,
            line["shard"],
            line["seq"],
            line["t"].as_str().unwrap()
        );
        assert!(raw.starts_with(&head), "{raw}");
        assert!(line["shard"].as_u64().unwrap() < 2);
        assert!(line["d"].is_object());
    }
    let lines: Vec<Value> = raw_lines.into_iter().map(|(_, value)| value).collect();
    for shard in 0..2 {
        let mine: Vec<&Value> = lines.iter().filter(|l| l["shard"] == shard).collect();
        let seqs: Vec<u64> = mine.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3], "shard {shard}: in order");
        assert_eq!(mine[0]["t"], "READY");
        assert_eq!(mine[0]["d"]["shard"], serde_json::json!([shard, 2]));
        assert_eq!(mine[1]["t"], "GUILD_CREATE");
        // `d` is the simulator's object, member list and all.
        assert_eq!(mine[1]["d"]["members"].as_array().unwrap().len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_takes_the_token_from_the_environment_and_filters_events() {
    let sim = sim(4).await;
    let child = tail(
        &sim,
        &[
            "--shard-ids",
            "1,3",
            "--shard-count",
            "4",
            "--events",
            "GUILD_CREATE,message_create",
            "--compression",
            "zstd-stream",
        ],
    )
    .env("DISCORD_TOKEN", sim.token())
    .spawn()
    .unwrap();
    let lines = {
        // Some generated traffic on shard 3 once its session is up.
        let injector = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !sim.sessions().iter().any(|session| session.shard == 3) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "shard 3 never identified"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(sim.inject(Some(3), Fault::Burst(20)), 1);
        };
        let (lines, ()) = tokio::join!(lines(child, 6), injector);
        lines
    };
    for line in &lines {
        assert!(
            line["t"] == "GUILD_CREATE" || line["t"] == "MESSAGE_CREATE",
            "filtered: {line}"
        );
        assert!(line["shard"] == 1 || line["shard"] == 3, "{line}");
    }
    let identified: Vec<[u32; 2]> = sim
        .observations()
        .identifies
        .iter()
        .map(|i| i.shard)
        .collect();
    assert!(identified.contains(&[1, 4]) && identified.contains(&[3, 4]));
    assert_eq!(identified.len(), 2);
    let connections = sim.observations().connections;
    assert!(
        connections
            .iter()
            .all(|c| c.compress.as_deref() == Some("zstd-stream"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_a_refused_token_is_one_line_and_exit_code_3() {
    let sim = sim(1).await;
    let child = tail(&sim, &["--token", "wrong-token"]).spawn().unwrap();
    let (code, stdout, stderr) = exit(child).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stdout.is_empty());
    let error = error_line(&stderr);
    assert!(
        error.contains("token was refused") && error.contains("Reset Token"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-token"), "the token never shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_a_fatal_close_is_one_line_and_exit_code_4_without_reconnecting() {
    let sim = Sim::builder()
        .disallowed_intents(1 << 1)
        .start()
        .await
        .unwrap();
    // GUILDS | GUILD_MEMBERS, the second not enabled for the application.
    let child = tail(&sim, &["--token", sim.token(), "--intents", "0x3"])
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = exit(child).await;
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stdout.is_empty());
    let error = error_line(&stderr);
    assert!(
        error.contains("4014")
            && error.contains("GUILD_MEMBERS")
            && error.contains("Developer Portal"),
        "{stderr}"
    );
    assert_eq!(sim.observations().identifies.len(), 1, "no reconnect loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_bad_arguments_exit_2_at_once_with_the_reason() {
    let sim = sim(1).await;
    for (args, reason) in [
        (
            vec!["--token", "t", "--compression", "bogus"],
            "[possible values: zlib-stream, zstd-stream, none]",
        ),
        (
            vec!["--token", "t", "--events", "NOT_AN_EVENT"],
            "NOT_AN_EVENT",
        ),
        (
            vec!["--token", "t", "--intents", "GUILDS,guild_mesages"],
            "unknown intent `guild_mesages`; did you mean GUILD_MESSAGES?",
        ),
        (
            vec!["--token", "t", "--intents", "lots"],
            "unknown intent `lots`; the intents are GUILDS, GUILD_MEMBERS,",
        ),
        (vec!["--token", "t", "--shards", "0"], "at least 1 shard"),
        (
            vec!["--token", "t", "--shard-ids", "0", "--shard-count", "0"],
            "at least 1 shard",
        ),
        (
            vec!["--token", "t", "--api-base", "discord.com/api/v10"],
            "not a usable http:// or https:// URL",
        ),
        (
            vec!["--token", "t", "--api-base", "ftp://127.0.0.1/api"],
            "not a usable http:// or https:// URL",
        ),
    ] {
        let started = std::time::Instant::now();
        let mut command = tail(&sim, &[]);
        if args.contains(&"--api-base") {
            // Without the simulator's.
            command = Command::new(BIN);
            command
                .arg("tail")
                .env_remove("DISCORD_TOKEN")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let child = command.args(&args).spawn().unwrap();
        let (code, stdout, stderr) = exit(child).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?}: at once"
        );
    }
    assert!(sim.observations().gateway_bot_requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_a_missing_token_or_a_bad_shard_choice_is_one_line_and_exit_code_2() {
    let sim = sim(4).await;
    for (args, token, reasons) in [
        (vec![], None, &["no token", "--token", "DISCORD_TOKEN"][..]),
        (
            vec!["--token", " "],
            None,
            &["the token is empty", "--token", "DISCORD_TOKEN"][..],
        ),
        (
            vec![],
            Some(""),
            &["the token is empty", "--token", "DISCORD_TOKEN"][..],
        ),
        (
            vec!["--shard-ids", "1,4", "--shard-count", "4"],
            Some("t"),
            &["shard id 4 is out of range for --shard-count 4", "0 to 3"][..],
        ),
        (
            vec!["--shard-ids", "1,1", "--shard-count", "4"],
            Some("t"),
            &["shard id 1 is listed twice"][..],
        ),
        (
            vec!["--shard-ids", "0,1"],
            Some("t"),
            &["--shard-ids needs --shard-count"][..],
        ),
        (
            vec!["--shard-count", "4"],
            Some("t"),
            &["--shard-count needs --shard-ids", "--shards 4"][..],
        ),
        (
            vec!["--shards", "2", "--shard-ids", "1", "--shard-count", "2"],
            Some("t"),
            &["--shards cannot be combined", "--shards N alone"][..],
        ),
        (
            vec!["--shards", "2", "--shard-count", "2"],
            Some("t"),
            &["--shards cannot be combined"][..],
        ),
    ] {
        let mut command = tail(&sim, &args);
        if let Some(token) = token {
            command.env("DISCORD_TOKEN", token);
        }
        let (code, stdout, stderr) = exit(command.spawn().unwrap()).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        for reason in reasons {
            assert!(stderr.contains(reason), "{args:?}: {reason}: {stderr}");
        }
    }
    assert!(sim.observations().gateway_bot_requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_takes_intents_by_name_or_by_bits() {
    let sim = sim(1).await;
    let guilds_and_messages = 1 | 1 << 9;
    for value in ["guilds|Guild_Messages", "GUILDS,GUILD_MESSAGES", "513"] {
        let child = tail(&sim, &["--token", sim.token(), "--intents", value])
            .spawn()
            .unwrap();
        let lines = lines(child, 1).await;
        assert_eq!(lines[0]["t"], "READY", "{value}");
        let identifies = sim.observations().identifies;
        assert_eq!(
            identifies.last().unwrap().intents,
            guilds_and_messages,
            "{value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_an_unreachable_api_is_one_line_and_exit_code_1() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(BIN)
        .args(["tail", "--token", "t", "--api-base"])
        .arg(format!("http://127.0.0.1:{port}/api/v10"))
        .env_remove("DISCORD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, _, stderr) = exit(child).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        error_line(&stderr).contains("could not reach 127.0.0.1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_one_line_per_dispatch_whatever_the_gateway_writes() {
    // Pretty-printed with CRLF and tabs, names in \u escapes, `d` first:
    // valid JSON, none of it as Discord writes it.
    let mut style = PayloadStyle::default();
    style.order = FieldOrder::DataFirst;
    style.pretty = true;
    style.escaped_names = true;
    let sim = Sim::builder()
        .payload_style(style)
        .guilds_per_shard(2)
        .start()
        .await
        .unwrap();
    // The filter applies to the escaped names too: READY is left out.
    let child = tail(&sim, &["--token", sim.token(), "--events", "GUILD_CREATE"])
        .spawn()
        .unwrap();
    let raw_lines = raw_lines(child, 2).await;
    for (raw, line) in &raw_lines {
        assert_eq!(line["t"], "GUILD_CREATE", "{raw}");
        assert!(!raw.contains(['\r', '\t']), "{raw}");
        // `d` minified: the simulator's object, nothing else changed.
        assert_eq!(line["d"]["members"].as_array().unwrap().len(), 5);
        assert!(raw.contains(r#""d":{"#) && !raw.contains(": "), "{raw}");
    }
    assert_eq!(raw_lines[0].1["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reads_json_sent_in_binary_frames_without_compression() {
    let sim = Sim::builder().binary_json(true).start().await.unwrap();
    let child = tail(&sim, &["--token", sim.token(), "--compression", "none"])
        .spawn()
        .unwrap();
    let lines = lines(child, 3).await;
    let events: Vec<&str> = lines.iter().map(|l| l["t"].as_str().unwrap()).collect();
    assert_eq!(events, ["READY", "GUILD_CREATE", "GUILD_CREATE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_waits_out_a_429_and_retries_a_server_error() {
    let sim = Sim::builder()
        .gateway_bot_faults(vec![
            RestFault::RateLimited {
                retry_after: Duration::from_millis(300),
                in_body: true,
            },
            RestFault::Status(503),
        ])
        .start()
        .await
        .unwrap();
    let child = tail(&sim, &["--token", sim.token()]).spawn().unwrap();
    let lines = lines(child, 1).await;
    assert_eq!(lines[0]["t"], "READY");
    let statuses: Vec<u16> = sim
        .observations()
        .gateway_bot_requests
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_refuses_what_can_never_work_with_one_line_and_exit_code_1() {
    let oversized = Sim::builder()
        .gateway_bot_faults(vec![RestFault::Oversized(1 << 20)])
        .start()
        .await
        .unwrap();
    let bad_url = Sim::builder()
        .gateway_url_override("ws://[::zz]:99999/%zz")
        .start()
        .await
        .unwrap();
    for (sim, reason) in [
        (&oversized, "the answer is larger than 65536 bytes"),
        (&bad_url, "ws://[::zz]:99999/%zz"),
    ] {
        let child = tail(sim, &["--token", sim.token()]).spawn().unwrap();
        let (code, stdout, stderr) = exit(child).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stdout.is_empty());
        assert!(error_line(&stderr).contains(reason), "{stderr}");
        assert!(sim.observations().connections.is_empty(), "never connected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_logs_carry_no_colour_on_a_pipe() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for no_color in [None, Some("1")] {
        // Info-level logs of the retries, then the error.
        let mut command = Command::new(BIN);
        command
            .args(["tail", "--token", "t", "--api-base"])
            .arg(format!("http://127.0.0.1:{port}/api/v10"))
            .env_remove("DISCORD_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let (code, _, stderr) = exit(command.spawn().unwrap()).await;
        assert_eq!(code, Some(1));
        assert!(stderr.lines().count() > 1, "logs: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "colour on a pipe: {stderr:?}");
    }
}

/// What a tail printed and did around being stopped.
struct Stopped {
    /// The lines read before it was stopped.
    before: Vec<Value>,
    /// The lines it printed after.
    after: Vec<Value>,
    code: Option<i32>,
    stderr: String,
}

/// Reads `count` lines from the child's stdout (at most 20 s), then stops
/// it with `stop` and waits for it to exit, reading stdout to its end.
async fn stop_after(mut child: Child, count: usize, stop: impl FnOnce(&mut Child)) -> Stopped {
    let stdout = child.stdout.take().unwrap();
    let json = |line: std::io::Result<String>| {
        let line = line.unwrap();
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {line}"))
    };
    let read = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let before: Vec<Value> = lines.by_ref().take(count).map(json).collect();
        (before, lines)
    });
    let read = tokio::time::timeout(Duration::from_secs(20), read).await;
    let (before, rest) = match read {
        Ok(read) => read.unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("no {count} lines in time");
        }
    };
    assert_eq!(before.len(), count, "the stream ended early");
    stop(&mut child);
    // The rest of stdout stays open until it exits: a closed stdout ends a
    // tail too.
    let (code, _, stderr) = exit(child).await;
    let after = tokio::task::spawn_blocking(move || rest.map(json).collect())
        .await
        .unwrap();
    Stopped {
        before,
        after,
        code,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_logs_the_shards_at_info_by_default_and_rust_log_decides_when_set() {
    let sim = sim(1).await;
    for rust_log in [None, Some("warn")] {
        let mut command = tail(&sim, &["--token", sim.token()]);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let stopped = stop_after(command.spawn().unwrap(), 3, |child| {
            let _ = child.kill();
        })
        .await;
        assert_eq!(stopped.before[0]["t"], "READY");
        let stderr = &stopped.stderr;
        let info = stderr
            .lines()
            .any(|line| is_log(line) && line.contains(" INFO ") && line.contains("shardwire_"));
        assert_eq!(info, rust_log.is_none(), "RUST_LOG={rust_log:?}: {stderr}");
    }
}

/// Sends `signal` (like `TERM`) to the child.
#[cfg(unix)]
fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {signal}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_closes_resumably_and_exits_0_on_sigterm_as_on_ctrl_c() {
    use shardwire_shard::RESUMABLE_CLOSE;
    use shardwire_sim::ClosedBy;

    for signal in ["TERM", "INT"] {
        let sim = sim(2).await;
        let child = tail(&sim, &["--token", sim.token()]).spawn().unwrap();
        // READY and two GUILD_CREATEs per shard: both sessions are up.
        let stopped = stop_after(child, 6, |child| send_signal(child, signal)).await;
        let ready = stopped.before.iter().filter(|line| line["t"] == "READY");
        assert_eq!(ready.count(), 2, "SIG{signal}");
        assert_eq!(stopped.code, Some(0), "SIG{signal}: {}", stopped.stderr);
        assert!(
            !stopped.stderr.lines().any(|line| !is_log(line)),
            "SIG{signal}: only logs: {}",
            stopped.stderr
        );
        assert!(stopped.after.iter().all(|line| line["t"].is_string()));
        // Each shard's connection ends with the client's resumable close.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let closes = sim.observations().closes;
            let resumable = |shard| {
                closes.iter().any(|close| {
                    close.shard == Some(shard)
                        && close.by == ClosedBy::Client
                        && close.code == Some(RESUMABLE_CLOSE)
                })
            };
            if resumable(0) && resumable(1) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "SIG{signal}: no resumable close of both shards: {closes:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(sim.observations().violations.is_empty(), "SIG{signal}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_with_a_session_file_resumes_after_a_restart_instead_of_identifying() {
    let sim = sim(2).await;
    let file = std::env::temp_dir().join(format!("shardwire-tail-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let path = file.to_str().unwrap();
    let args = ["--token", sim.token(), "--sessions", path];
    let first = stop_after(tail(&sim, &args).spawn().unwrap(), 6, |child| {
        send_signal(child, "TERM");
    })
    .await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let saved: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved.len(), 2, "both sessions saved: {saved:?}");
    let last_seq = |shard: u64| {
        first
            .before
            .iter()
            .chain(&first.after)
            .filter(|line| line["shard"] == shard)
            .filter_map(|line| line["seq"].as_u64())
            .max()
    };

    // The restarted tail resumes both, from what the first one printed.
    let second = stop_after(tail(&sim, &args).spawn().unwrap(), 0, |child| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sim.observations().resumes.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "two resumes");
            std::thread::sleep(Duration::from_millis(20));
        }
        send_signal(child, "TERM");
    })
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    let observations = sim.observations();
    assert_eq!(
        observations.identifies.len(),
        2,
        "no identify after the restart"
    );
    for resume in &observations.resumes {
        let shard = saved
            .iter()
            .find(|(_, session)| session["session_id"] == resume.session_id.as_str())
            .map(|(shard, _)| shard.parse::<u64>().unwrap())
            .expect("a saved session resumed");
        assert_eq!(Some(resume.seq), last_seq(shard), "shard {shard}");
    }
    assert!(
        second.stderr.contains("RESUMED"),
        "the resume is logged: {}",
        second.stderr
    );
}

/// Waits (at most 20 s) until `done` holds of what the simulator saw.
async fn until(sim: &Sim, done: impl Fn(&shardwire_sim::Observations) -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !done(&sim.observations()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{:?}", sim.observations().closes);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_auto_reshard_reshards_on_a_4011_and_prints_each_event_once() {
    // max_concurrency 16 (the tail's own identify window is Discord's
    // 5 s): all shards identify at once, and a new count is rounded up to
    // a multiple of 16.
    let sim = Sim::builder()
        .shards(2)
        .max_concurrency(16)
        .identify_window(Duration::ZERO)
        .guild_pool(8)
        .guild_event_rate(200.0)
        .start()
        .await
        .unwrap();
    let mut child = tail(&sim, &["--token", sim.token(), "--auto-reshard"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // A failed step kills the tail, so the reader below sees the end.
    let pid = child.id();
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
    let kill = Kill(pid);
    let read = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<String>>()
    });
    let accepted =
        |o: &shardwire_sim::Observations| o.identifies.iter().filter(|i| i.accepted).count();
    until(&sim, |o| accepted(o) == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.set_recommended_shards(3);
    assert_eq!(sim.inject(Some(1), Fault::Close(4011)), 1);
    // The new generation identifies, the switch comes, and the old
    // generation is closed once the overlap's 5 s have passed.
    until(&sim, |o| accepted(o) == 2 + 16).await;
    until(&sim, |o| {
        o.closes
            .iter()
            .filter(|c| c.code == Some(1000) && c.shard.is_some())
            .count()
            == 1
    })
    .await;
    sim.set_guild_event_rate(0.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_signal(&child, "TERM");
    let (code, _, stderr) = exit(child).await;
    let lines = read.await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("resharded"), "{stderr}");
    // Each guild's events as printed, against what the simulator sent.
    let mut printed: std::collections::BTreeMap<String, Vec<(String, String)>> =
        std::collections::BTreeMap::new();
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap();
        let d = &line[line.find(r#","d":"#).unwrap() + 5..line.len() - 1];
        if let Some(guild) = value["d"]["guild_id"].as_str()
            && value["t"] != "GUILD_CREATE"
        {
            let t = value["t"].as_str().unwrap().to_owned();
            printed
                .entry(guild.to_owned())
                .or_default()
                .push((t, d.to_owned()));
        }
    }
    let mut sent: std::collections::BTreeMap<String, Vec<(String, String)>> =
        std::collections::BTreeMap::new();
    for event in sim.pool_events() {
        let d = String::from_utf8(event.d).unwrap();
        sent.entry(event.guild_id)
            .or_default()
            .push((event.name, d));
    }
    assert_eq!(printed.len(), 8);
    for (guild, sent) in &sent {
        let printed = printed.get(guild).map_or(&[][..], Vec::as_slice);
        if let Some(at) = first_difference(printed, sent) {
            let name = |events: &[(String, String)]| {
                events
                    .get(at)
                    .map(|(name, d)| format!("{name} {}", &d[..d.len().min(120)]))
            };
            panic!(
                "guild {guild}: {} printed, {} sent; event {at} differs: printed {:?}, sent {:?}\n{}",
                printed.len(),
                sent.len(),
                name(printed),
                name(sent),
                stderr
                    .lines()
                    .filter(|line| line.contains("reshard"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    }
    assert_eq!(
        printed.len(),
        sent.len(),
        "no guild printed that was not sent"
    );
    assert_eq!(accepted(&sim.observations()), 2 + 16, "no other identify");
    drop(kill);
}

/// Where two event lists part, if they do.
fn first_difference<T: PartialEq>(printed: &[T], sent: &[T]) -> Option<usize> {
    (0..printed.len().max(sent.len())).find(|&at| printed.get(at) != sent.get(at))
}
