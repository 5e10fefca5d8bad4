//! `shardwire node` processes on a real nats-server against the simulator,
//! a worker that counts what JetStream stored, and the exactly-once check.

#![allow(
    clippy::print_stdout,
    reason = "the nodes' output, which the harness shows when a test fails"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardwire_nats::{Layout, Nats};
use shardwire_sim::{ResumeOutcome, Sim};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The shards each node last said it runs.
pub(crate) type Owned = Arc<Mutex<BTreeMap<String, BTreeSet<u32>>>>;

/// How a test's nodes run.
pub(crate) struct Nodes<'a> {
    pub(crate) nats: String,
    pub(crate) sim: &'a Sim,
    pub(crate) owned: Owned,
    pub(crate) capacity: u32,
    pub(crate) lease_ttl_secs: u64,
}

impl Nodes<'_> {
    /// Starts `shardwire node --node-id name` with ranges of one shard; its
    /// `shards …` lines go to `owned`, its output to the test's stdout
    /// (shown when the test fails).
    pub(crate) fn spawn(&self, name: &str) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardwire"))
            .args(["node", "--nats", &self.nats, "--range-size", "1"])
            .args(["--capacity", &self.capacity.to_string()])
            .args(["--lease-ttl", &self.lease_ttl_secs.to_string()])
            .args(["--identify-window-ms", "1000", "--intents", "1"])
            .args(["--api-base", self.sim.api_url(), "--node-id", name])
            .env("DISCORD_TOKEN", self.sim.token())
            .env("RUST_LOG", "warn,shardwire_nats=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the shardwire binary starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (owned, who) = (self.owned.clone(), name.to_owned());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{who}] {line}");
                if let Some(list) = line.strip_prefix("shards ") {
                    let set = list.split(',').filter_map(|s| s.parse().ok()).collect();
                    owned.lock().unwrap().insert(who.clone(), set);
                }
            }
        });
        let who = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{who} log] {line}");
            }
        });
        child
    }

    /// Whether every one of `shards` runs on exactly one node.
    pub(crate) fn each_once(&self, shards: u32) -> bool {
        let owned = self.owned.lock().unwrap();
        let union: Vec<u32> = owned.values().flatten().copied().collect();
        let all: BTreeSet<u32> = (0..shards).collect();
        union.len() == all.len() && union.into_iter().collect::<BTreeSet<_>>() == all
    }

    /// How many shards each node runs, by name.
    pub(crate) fn counts(&self) -> BTreeMap<String, usize> {
        let owned = self.owned.lock().unwrap();
        owned
            .iter()
            .map(|(name, shards)| (name.clone(), shards.len()))
            .collect()
    }
}

/// Stops a node as an operator does: SIGTERM, then waits for it to exit
/// (it hands its shards over first); `true` if it exited by itself.
pub(crate) async fn terminate(child: &mut Child) -> bool {
    let Some(pid) = child.id() else {
        return true;
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(status) => status.is_ok_and(|status| status.success()),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            false
        }
    }
}

/// Deliveries per `(session, seq)` a durable consumer saw, each stored copy
/// once (an acknowledgement lost to a restart may deliver one copy again,
/// with its stream sequence).
#[derive(Default)]
pub(crate) struct Ledger {
    counts: HashMap<(String, u64), u32>,
    stored: BTreeSet<u64>,
}

/// A durable consumer counting into a ledger, opened again whenever the
/// pull fails.
pub(crate) fn worker(url: String, durable: &'static str) -> (Arc<Mutex<Ledger>>, JoinHandle<()>) {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let task = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            loop {
                let Ok(nats) = Nats::connect(&url, Layout::default()).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // The nodes create the stream; the worker may come first.
                let Ok(mut consumer) = nats.consumer(durable, None).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while let Some(Ok(delivery)) = consumer.next().await {
                    {
                        let mut ledger = ledger.lock().unwrap();
                        if ledger.stored.insert(delivery.stream_sequence()) {
                            *ledger
                                .counts
                                .entry((delivery.session_id.clone(), delivery.seq))
                                .or_default() += 1;
                        }
                    }
                    if delivery.ack().await.is_err() {
                        break;
                    }
                }
            }
        })
    };
    (ledger, task)
}

/// What a run delivered, against what the simulator sent.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) checked: u64,
    pub(crate) lost: Vec<(u32, u64)>,
    pub(crate) doubled: Vec<(u32, u64, u32)>,
    pub(crate) identifies: usize,
    pub(crate) resumes: usize,
    pub(crate) violations: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events checked, {} lost, {} doubled; {} identifies, {} resumes; violations: {}",
            self.checked,
            self.lost.len(),
            self.doubled.len(),
            self.identifies,
            self.resumes,
            self.violations
        )
    }
}

/// Checks, up to 20 s for the last events to arrive, that every dispatch
/// the simulator sent until now reached the ledger exactly once.
pub(crate) async fn tally(sim: &Sim, ledger: &Mutex<Ledger>) -> Tally {
    let snapshot = sim.sessions();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut lost, mut doubled) = (Vec::new(), Vec::new());
    let mut checked;
    loop {
        lost.clear();
        doubled.clear();
        checked = 0;
        {
            let ledger = ledger.lock().unwrap();
            for session in &snapshot {
                for seq in 1..=session.seq {
                    checked += 1;
                    match ledger.counts.get(&(session.session_id.clone(), seq)) {
                        None => lost.push((session.shard, seq)),
                        Some(1) => {}
                        Some(n) => doubled.push((session.shard, seq, *n)),
                    }
                }
            }
        }
        if lost.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let observations = sim.observations();
    Tally {
        checked,
        lost,
        doubled,
        identifies: observations
            .identifies
            .iter()
            .filter(|i| i.accepted)
            .count(),
        resumes: observations
            .resumes
            .iter()
            .filter(|r| matches!(r.outcome, ResumeOutcome::Resumed { .. }))
            .count(),
        violations: observations.violations.len(),
    }
}

/// Waits, checking every 50 ms, until `done` holds; fails past `limit`.
pub(crate) async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
