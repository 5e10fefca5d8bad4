//! Every dispatch the simulator sent, seen by the test's worker exactly
//! once.

#![allow(dead_code, reason = "not every test binary uses every helper")]

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use shardwire_sim::Sim;

/// What the test's worker saw: deliveries per (session, seq), and the
/// payloads by shard.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) counts: HashMap<(String, u64), u32>,
    pub(crate) payloads: Vec<(u32, String, serde_json::Value)>,
    pub(crate) stored: HashSet<u64>,
    pub(crate) redelivered: u64,
}

/// Every dispatch the sim sent, up to its seq now, seen exactly once,
/// but for `skipped` (session, seq).
pub(crate) fn check_exactly_once(
    sim: &Sim,
    seen: &Seen,
    skipped: &(String, u64),
) -> Result<u64, String> {
    let mut total = 0;
    for session in sim.sessions() {
        for seq in 1..=session.seq {
            if (&session.session_id, seq) == (&skipped.0, skipped.1) {
                continue;
            }
            match seen.counts.get(&(session.session_id.clone(), seq)) {
                Some(1) => total += 1,
                Some(n) => return Err(format!("{}:{seq} seen {n} times", session.session_id)),
                None => {
                    return Err(format!(
                        "{}:{seq} (shard {}) not seen",
                        session.session_id, session.shard
                    ));
                }
            }
        }
    }
    Ok(total)
}

/// Waits up to 15 s for [`check_exactly_once`] to hold; returns the
/// events it counted.
pub(crate) async fn wait_exactly_once(
    sim: &Sim,
    seen: &Mutex<Seen>,
    skipped: &(String, u64),
) -> u64 {
    let mut last = Err(String::new());
    for _ in 0..150 {
        last = check_exactly_once(sim, &seen.lock().unwrap(), skipped);
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last.unwrap()
}

/// What the worker stored of what the simulator had sent when `sent` was
/// taken: `(checked, lost, doubled)`, counting each (session, seq) of it.
pub(crate) fn tally(sent: &[shardwire_sim::SessionInfo], seen: &Seen) -> (u64, u64, u64) {
    let (mut checked, mut lost, mut doubled) = (0, 0, 0);
    for session in sent {
        for seq in 1..=session.seq {
            checked += 1;
            match seen.counts.get(&(session.session_id.clone(), seq)) {
                None => lost += 1,
                Some(1) => {}
                Some(_) => doubled += 1,
            }
        }
    }
    (checked, lost, doubled)
}

/// Waits up to `limit` for the worker to have stored everything in
/// `sent` once; then [`tally`].
pub(crate) async fn wait_tally(
    sent: &[shardwire_sim::SessionInfo],
    seen: &Mutex<Seen>,
    limit: Duration,
) -> (u64, u64, u64) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let counted = tally(
            sent,
            &seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if counted.1 == 0 || tokio::time::Instant::now() >= deadline {
            return counted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
