//! What a shard logs through its life, as a subscriber sees it: a span per
//! step (connect, identify, resume) inside the shard's span, an info
//! event per lifecycle step, and never the token.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::driver::{config, is_ready, is_resumed, until};
use common::machine::Harness;
use serde_json::json;
use shardwire_codec::Compression;
use shardwire_shard::{Shard, Unqueued};
use shardwire_sim::{Fault, Sim};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

/// The first line, from `from` on, with every one of `parts`; its index.
fn find(lines: &[String], from: usize, parts: &[&str]) -> usize {
    lines[from..]
        .iter()
        .position(|line| parts.iter().all(|part| line.contains(part)))
        .map(|at| from + at)
        .unwrap_or_else(|| {
            panic!(
                "no line with {parts:?} after line {from}:\n{}",
                lines[from..].join("\n")
            )
        })
}

/// Everything logged on this thread, at every level, until the guard goes.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn logs_each_lifecycle_step_in_its_span_and_never_the_token() {
    // The test's runtime has one thread: the shard's task and the
    // simulator's run on it, under this subscriber.
    let (captured, _default) = capture();
    let sim = Sim::builder()
        .guilds_per_shard(3)
        .identify_window(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let mut shard = Shard::start(
        config(&sim, 0, 1, Compression::ZlibStream),
        Arc::new(Unqueued),
    );
    until(&mut shard, is_ready).await;
    sim.inject(Some(0), Fault::Close(4000));
    until(&mut shard, is_resumed).await;
    drop(shard);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let token = sim.token().to_owned();
    sim.shutdown().await;

    let lines = captured.lines();
    assert!(
        lines.iter().all(|line| !line.contains(&token)),
        "the token was logged"
    );
    // Each step's events come inside its span, inside the shard's.
    let connect = find(&lines, 0, &["shard{id=0 count=1}:connect:", "close"]);
    let identifying = find(
        &lines,
        connect,
        &["INFO", "shard{id=0 count=1}:identify:", "identifying"],
    );
    let ready = find(
        &lines,
        identifying,
        &["INFO", ":identify:", "READY", "guilds=3"],
    );
    find(&lines, ready, &[":identify:", "close"]);
    let closed = find(
        &lines,
        ready,
        &[
            "INFO",
            "connection closed",
            "code=4000",
            "unknown error (resumable)",
            "by=\"the gateway\"",
        ],
    );
    let reconnecting = find(&lines, closed, &["INFO", "reconnecting", "then=\"resume\""]);
    let resuming = find(
        &lines,
        reconnecting,
        &["INFO", "shard{id=0 count=1}:resume{seq=", "resuming"],
    );
    let resumed = find(
        &lines,
        resuming,
        &["INFO", ":resume{", "RESUMED", "replayed=0"],
    );
    find(&lines, resumed, &[":resume{", "close"]);
}

#[test]
fn logs_how_many_events_a_resume_replayed() {
    let (captured, _default) = capture();
    let mut harness = Harness::new(common::machine::config());
    harness.start();
    harness.closed_and_reconnect(Some(4000));
    harness.reopen();
    harness.dispatch("MESSAGE_CREATE", json!({}));
    harness.dispatch("TYPING_START", json!({}));
    harness.dispatch("RESUMED", json!({}));
    let lines = captured.lines();
    let resuming = find(&lines, 0, &["INFO", "resume{seq=1}", "resuming"]);
    find(
        &lines,
        resuming,
        &["INFO", "resume{seq=1}", "RESUMED", "replayed=2"],
    );
}
