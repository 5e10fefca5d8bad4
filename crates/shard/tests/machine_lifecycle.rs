//! The decisions the machine took over from its driver: the connect
//! timeout, a failed connect, a refused identify, and the `reconnect`
//! switch; and the deadline table's promise that no handled deadline stays
//! due. On a virtual clock; none sleeps.

mod common;

use std::time::Duration;

use common::machine::{GATEWAY, Harness, RESUME, config, is_resume};
use serde_json::json;
use shardwire_shard::{IdentifyRefused, Order, ShardConfig, ShardEvent, ShardState};

fn connect_failures(events: &[ShardEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            ShardEvent::ConnectFailed { error } => Some(error.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_connect_that_takes_too_long_is_abandoned_and_retried_after_the_backoff() {
    let mut config = config();
    config.connect_timeout = Duration::from_secs(3);
    let mut h = Harness::new(config);
    h.shard.connect(h.now);
    h.expect_connect();
    let started = h.now;
    assert_eq!(
        h.shard.poll_timeout(),
        Some(started + Duration::from_secs(3))
    );
    h.advance(Duration::from_millis(2999));
    h.run_timers();
    assert_eq!(h.orders(), vec![]);
    assert_eq!(h.shard.state(), ShardState::Connecting);
    h.advance(Duration::from_millis(1));
    h.run_timers();
    assert_eq!(h.orders(), vec![Order::Abandon]);
    assert_eq!(h.shard.state(), ShardState::Reconnecting);
    let events = h.events();
    let failures = connect_failures(&events);
    assert_eq!(failures.len(), 1, "{events:?}");
    assert!(failures[0].contains("connect_timeout (3s)"), "{failures:?}");
    // The backoff, 0.5 to 1 times the first step (1 s), then a new attempt.
    let at = h.shard.poll_timeout().expect("the reconnect");
    let wait = at - h.now;
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(1)).contains(&wait),
        "{wait:?}"
    );
    h.now = at;
    h.run_timers();
    assert_eq!(h.expect_connect(), format!("{GATEWAY}/?v=10&encoding=json"));
    // The driver that connects after all is too late for the abandoned
    // attempt only: this one opens as usual.
    h.shard.handle_connected(h.now);
    assert_eq!(h.shard.state(), ShardState::WaitingForHello);
}

#[test]
fn an_open_connection_has_no_connect_deadline() {
    let mut h = Harness::new(config());
    h.shard.connect(h.now);
    h.expect_connect();
    h.shard.handle_connected(h.now);
    h.advance(Duration::from_secs(11));
    h.run_timers();
    // The Hello timeout (20 s) is the only deadline: no Abandon at 10 s.
    assert_eq!(h.orders(), vec![]);
    assert_eq!(h.shard.state(), ShardState::WaitingForHello);
}

#[test]
fn a_failed_connect_is_an_event_and_a_retry() {
    let mut h = Harness::new(config());
    h.shard.connect(h.now);
    h.expect_connect();
    h.shard
        .handle_connect_failed(h.now, "connection refused (os error 111)");
    assert_eq!(h.shard.state(), ShardState::Reconnecting);
    assert_eq!(
        h.events(),
        vec![ShardEvent::ConnectFailed {
            error: "connection refused (os error 111)".into()
        }]
    );
    // Not connecting: a late report changes nothing.
    h.shard.handle_connect_failed(h.now, "late");
    assert_eq!(h.events(), vec![]);
    let at = h.shard.poll_timeout().expect("the reconnect");
    h.now = at;
    h.run_timers();
    h.expect_connect();
}

#[test]
fn a_failed_connect_to_the_resume_url_resumes_on_the_gateway_url() {
    let mut h = Harness::new(config());
    h.start();
    let url = h.closed_and_reconnect(Some(4000));
    assert!(url.starts_with(RESUME), "{url}");
    h.shard.handle_connect_failed(h.now, "connection refused");
    let at = h.shard.poll_timeout().expect("the reconnect");
    h.now = at;
    h.run_timers();
    assert!(h.expect_connect().starts_with(GATEWAY));
    let (orders, frames) = h.reopen();
    assert_eq!(orders, vec![]);
    assert!(is_resume(&frames[0], 1), "{frames:?}");
}

#[test]
fn a_refused_identify_is_an_event_and_the_shard_stays_down() {
    let mut h = Harness::new(config());
    h.shard.connect(h.now);
    h.expect_connect();
    h.shard.handle_connected(h.now);
    h.hello();
    assert_eq!(h.orders(), vec![Order::WaitIdentifyTurn]);
    let refused = IdentifyRefused::DailyLimitExhausted {
        reset_after: Some(Duration::from_secs(3600)),
    };
    h.shard.handle_identify_refused(h.now, refused.clone());
    assert_eq!(h.orders(), vec![Order::Close { code: 4000 }]);
    assert!(h.events().contains(&ShardEvent::IdentifyRefused(refused)));
    h.shard.handle_close(h.now, Some(4000));
    assert_eq!(h.shard.state(), ShardState::Disconnected);
    assert_eq!(h.shard.poll_timeout(), None, "no reconnect");
    assert!(h.frames().is_empty(), "no Identify went out");
    // Asked again, it connects.
    h.shard.connect(h.now);
    h.expect_connect();
}

#[test]
fn a_refusal_that_comes_too_late_changes_nothing() {
    let mut h = Harness::new(config());
    h.start();
    h.events();
    h.shard
        .handle_identify_refused(h.now, IdentifyRefused::Closed);
    assert_eq!(h.shard.state(), ShardState::Active);
    assert_eq!(h.orders(), vec![]);
    assert_eq!(h.events(), vec![]);
}

fn without_reconnect() -> ShardConfig {
    let mut config = config();
    config.reconnect = false;
    config
}

#[test]
fn without_reconnect_a_close_or_a_failure_ends_the_shard_keeping_its_session() {
    // The gateway's close, a dropped connection, and a failed connect.
    for ending in 0..3 {
        let mut h = Harness::new(without_reconnect());
        h.start();
        h.events();
        h.shard.handle_close(h.now, Some(4000));
        if ending > 0 {
            // Asked to connect again: the next connection fails or drops.
            h.shard.connect(h.now);
            h.expect_connect();
            if ending == 1 {
                h.shard.handle_connected(h.now);
                h.shard.handle_close(h.now, None);
            } else {
                h.shard.handle_connect_failed(h.now, "refused");
            }
        }
        assert_eq!(h.shard.state(), ShardState::Disconnected, "{ending}");
        assert_eq!(h.shard.poll_timeout(), None, "{ending}");
        assert_eq!(h.orders(), vec![], "{ending}");
        assert!(h.shard.session().is_some(), "{ending}");
        // connect() resumes it: on the resume URL, or on the gateway URL
        // once the resume URL failed to connect.
        h.shard.connect(h.now);
        let url = h.expect_connect();
        let expected = if ending == 2 { GATEWAY } else { RESUME };
        assert!(url.starts_with(expected), "{ending}: {url}");
        h.shard.handle_connected(h.now);
        h.hello();
        assert!(is_resume(&h.frames()[0], 1), "{ending}");
    }
}

#[test]
fn without_reconnect_a_zombie_or_op_7_ends_the_shard_too() {
    for op_7 in [false, true] {
        let mut h = Harness::new(without_reconnect());
        h.start();
        if op_7 {
            h.server(&json!({"op": 7, "d": null}));
        } else {
            // Heartbeats without an ACK, until the zombie close stops them.
            while let Some(at) = h.shard.poll_timeout() {
                h.now = at;
                h.run_timers();
            }
        }
        h.expect_own_close();
        h.shard.handle_close(h.now, Some(4000));
        assert_eq!(h.shard.state(), ShardState::Disconnected, "op 7: {op_7}");
        assert_eq!(h.shard.poll_timeout(), None);
    }
}

#[test]
fn without_reconnect_a_reconnect_the_user_asks_for_still_happens() {
    let mut h = Harness::new(without_reconnect());
    h.start();
    h.shard.reconnect(h.now);
    let url = h.own_close_and_reconnect();
    assert!(url.starts_with(RESUME), "{url}");
}

/// The driver sleeps until `poll_timeout`: once `handle_timeout` has run
/// at a deadline, that deadline must be gone, or the driver would wake
/// without end. Walks a session through every timer.
#[test]
fn no_deadline_stays_due_once_handled() {
    let mut config = config();
    config.hibernate_after = Some(Duration::from_secs(10));
    let mut h = Harness::new(config);
    let check = |h: &mut Harness| {
        if let Some(at) = h.shard.poll_timeout()
            && at <= h.now
        {
            h.shard.handle_timeout(h.now);
            assert!(
                h.shard.poll_timeout().is_none_or(|next| next > h.now),
                "a deadline stayed due at {:?} in {:?}",
                h.now,
                h.shard.state()
            );
        }
    };
    h.start();
    for step in 0..400 {
        h.advance(Duration::from_millis(997));
        match step % 50 {
            // Commands beyond the rate limit's room queue for a slot.
            3 => {
                for _ in 0..130 {
                    let _ = h.shard.send_raw(h.now, br#"{"op":3,"d":null}"#.to_vec());
                }
            }
            // The gateway acknowledges now and then; between, zombies.
            10 | 20 | 30 => h.server(&json!({"op": 11, "d": null})),
            25 => h.dispatch("TYPING_START", json!({"channel_id": "1"})),
            _ => {}
        }
        check(&mut h);
        for order in h.orders() {
            match order {
                Order::Close { code } => h.shard.handle_close(h.now, Some(code)),
                Order::Connect { .. } => {
                    h.shard.handle_connected(h.now);
                    h.hello();
                }
                Order::WaitIdentifyTurn => h.shard.handle_identify_turn(h.now),
                _ => {}
            }
        }
        if h.shard.state() == ShardState::Resuming {
            h.server(&json!({"t": "RESUMED", "s": h.seq + 1, "op": 0, "d": {}}));
        }
        h.frames();
        h.events();
    }
}

#[test]
fn only_an_active_session_lets_the_driver_pause_reading() {
    let mut h = Harness::new(config());
    assert!(!h.shard.may_pause_reading());
    h.shard.connect(h.now);
    h.expect_connect();
    h.shard.handle_connected(h.now);
    // Waiting for Hello, then for READY: it must read.
    assert!(!h.shard.may_pause_reading());
    h.hello();
    assert_eq!(h.orders(), vec![Order::WaitIdentifyTurn]);
    assert!(!h.shard.may_pause_reading());
    h.shard.handle_identify_turn(h.now);
    h.dispatch(
        "READY",
        json!({"session_id": "s1", "resume_gateway_url": RESUME}),
    );
    assert!(h.shard.may_pause_reading());
    // Resuming on the next connection: it must read again.
    h.closed_and_reconnect(Some(4000));
    h.shard.handle_connected(h.now);
    h.hello();
    assert_eq!(h.shard.state(), ShardState::Resuming);
    assert!(!h.shard.may_pause_reading());
}
