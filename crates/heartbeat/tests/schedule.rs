//! The heartbeat schedule on a virtual clock: a base instant plus offsets,
//! never a sleep.

use std::time::{Duration, Instant};

use shardwire_heartbeat::{DEFAULT_SAMPLES, Due, Heartbeat, HeartbeatError, Jitter};

const INTERVAL: Duration = Duration::from_millis(41_250);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A scheduler after Hello at `t0` with the given jitter.
fn started(jitter: f64) -> (Heartbeat, Instant) {
    let t0 = Instant::now();
    let mut heartbeat = Heartbeat::new();
    heartbeat.on_hello(INTERVAL, t0, jitter).unwrap();
    (heartbeat, t0)
}

#[test]
fn nothing_is_due_before_hello() {
    let mut heartbeat = Heartbeat::new();
    assert_eq!(heartbeat.poll_timeout(), None);
    assert_eq!(
        heartbeat.handle_timeout(Instant::now() + INTERVAL * 10),
        None
    );
    heartbeat.on_request(Instant::now());
    heartbeat.on_sent(Instant::now());
    assert_eq!(
        heartbeat.poll_timeout(),
        None,
        "requests and sends before Hello are ignored"
    );
}

#[test]
fn the_first_beat_comes_at_interval_times_jitter() {
    for (jitter, expected) in [
        (0.0, Duration::ZERO),
        (0.25, INTERVAL / 4),
        (0.5, INTERVAL / 2),
    ] {
        let (mut heartbeat, t0) = started(jitter);
        let first = heartbeat.poll_timeout().unwrap();
        assert_eq!(first - t0, expected, "jitter {jitter}");
        if !expected.is_zero() {
            assert_eq!(
                heartbeat.handle_timeout(first - ms(1)),
                None,
                "not due early"
            );
        }
        assert_eq!(heartbeat.handle_timeout(first), Some(Due::Beat));
    }
}

#[test]
fn jitter_is_clamped_into_zero_to_one() {
    for (jitter, at_most) in [
        (-3.0, Duration::ZERO),
        (f64::NAN, Duration::ZERO),
        (1.0, INTERVAL),
        (7.0, INTERVAL),
    ] {
        let (heartbeat, t0) = started(jitter);
        let first = heartbeat.poll_timeout().unwrap() - t0;
        assert!(first <= at_most, "jitter {jitter}: {first:?}");
        if at_most == INTERVAL {
            assert!(
                first < INTERVAL && first > INTERVAL - ms(1),
                "jitter {jitter}: just under one interval"
            );
        }
    }
}

#[test]
fn then_one_beat_every_interval_after_each_send() {
    let (mut heartbeat, t0) = started(0.1);
    let mut now = heartbeat.poll_timeout().unwrap();
    for beat in 0..5 {
        assert_eq!(
            heartbeat.handle_timeout(now),
            Some(Due::Beat),
            "beat {beat}"
        );
        heartbeat.on_sent(now);
        assert!(heartbeat.awaiting_ack());
        heartbeat.on_ack(now + ms(30 + beat));
        assert_eq!(heartbeat.poll_timeout(), Some(now + INTERVAL));
        assert_eq!(heartbeat.handle_timeout(now + INTERVAL - ms(1)), None);
        now += INTERVAL;
    }
    assert_eq!(now - t0, INTERVAL.mul_f64(0.1) + INTERVAL * 5);
}

#[test]
fn a_beat_due_while_the_last_is_unacknowledged_is_a_zombie() {
    let (mut heartbeat, _) = started(0.0);
    let first = heartbeat.poll_timeout().unwrap();
    heartbeat.on_sent(first);
    // No ACK: the next beat falls due unacknowledged.
    assert_eq!(
        heartbeat.handle_timeout(first + INTERVAL),
        Some(Due::Zombie)
    );
    // The schedule stops: the connection is to be closed and resumed.
    assert_eq!(heartbeat.poll_timeout(), None);
    assert_eq!(heartbeat.handle_timeout(first + INTERVAL * 2), None);
    // A new connection starts over.
    heartbeat
        .on_hello(INTERVAL, first + INTERVAL * 2, 0.0)
        .unwrap();
    assert_eq!(
        heartbeat.handle_timeout(first + INTERVAL * 2),
        Some(Due::Beat)
    );
}

#[test]
fn a_late_ack_before_the_deadline_is_not_a_zombie() {
    let (mut heartbeat, _) = started(0.0);
    let first = heartbeat.poll_timeout().unwrap();
    heartbeat.on_sent(first);
    heartbeat.on_ack(first + INTERVAL - ms(1));
    assert_eq!(heartbeat.handle_timeout(first + INTERVAL), Some(Due::Beat));
    assert_eq!(heartbeat.latency().last(), Some(INTERVAL - ms(1)));
}

#[test]
fn a_server_request_makes_a_beat_due_now_even_unacknowledged() {
    let (mut heartbeat, t0) = started(0.9);
    let asked = t0 + ms(100);
    heartbeat.on_request(asked);
    assert_eq!(heartbeat.poll_timeout(), Some(asked));
    assert_eq!(heartbeat.handle_timeout(asked), Some(Due::Beat));
    heartbeat.on_sent(asked);
    // Asked again before the ACK: still a beat, not a zombie.
    heartbeat.on_request(asked + ms(5));
    assert_eq!(heartbeat.handle_timeout(asked + ms(5)), Some(Due::Beat));
    heartbeat.on_sent(asked + ms(5));
    heartbeat.on_ack(asked + ms(25));
    assert_eq!(
        heartbeat.latency().last(),
        Some(ms(20)),
        "measured from the latest beat"
    );
    assert_eq!(heartbeat.poll_timeout(), Some(asked + ms(5) + INTERVAL));
}

#[test]
fn a_request_never_delays_an_earlier_deadline() {
    let (mut heartbeat, t0) = started(0.0);
    heartbeat.on_request(t0 + ms(50));
    assert_eq!(
        heartbeat.poll_timeout(),
        Some(t0),
        "the first beat was already due at t0"
    );
}

#[test]
fn stray_acks_are_ignored() {
    let (mut heartbeat, t0) = started(0.0);
    heartbeat.on_ack(t0);
    assert_eq!(heartbeat.latency().acknowledged(), 0);
    heartbeat.on_sent(t0);
    heartbeat.on_ack(t0 + ms(10));
    heartbeat.on_ack(t0 + ms(20));
    assert_eq!(heartbeat.latency().acknowledged(), 1);
    assert_eq!(heartbeat.latency().last(), Some(ms(10)));
}

#[test]
fn latency_keeps_the_last_n_samples_and_their_mean() {
    let t0 = Instant::now();
    let mut heartbeat = Heartbeat::with_samples(3);
    heartbeat.on_hello(INTERVAL, t0, 0.0).unwrap();
    assert_eq!(heartbeat.latency().average(), None);
    let mut now = t0;
    for rtt in [10, 20, 30, 40, 50] {
        heartbeat.on_sent(now);
        heartbeat.on_ack(now + ms(rtt));
        now += INTERVAL;
    }
    let latency = heartbeat.latency();
    assert_eq!(
        latency.recent().collect::<Vec<_>>(),
        vec![ms(30), ms(40), ms(50)]
    );
    assert_eq!(latency.average(), Some(ms(40)));
    assert_eq!(latency.last(), Some(ms(50)));
    assert_eq!(latency.acknowledged(), 5);
    assert_eq!(Heartbeat::new().latency().recent().len(), 0);
}

#[test]
fn the_default_scheduler_keeps_default_samples() {
    let (mut heartbeat, t0) = started(0.0);
    let mut now = t0;
    for _ in 0..DEFAULT_SAMPLES + 5 {
        heartbeat.on_sent(now);
        heartbeat.on_ack(now + ms(1));
        now += INTERVAL;
    }
    assert_eq!(heartbeat.latency().recent().len(), DEFAULT_SAMPLES);
    assert_eq!(
        heartbeat.latency().acknowledged(),
        DEFAULT_SAMPLES as u64 + 5
    );
}

#[test]
fn stop_clears_the_schedule_but_keeps_latency() {
    let (mut heartbeat, t0) = started(0.0);
    heartbeat.on_sent(t0);
    heartbeat.on_ack(t0 + ms(7));
    heartbeat.stop();
    assert_eq!(heartbeat.poll_timeout(), None);
    assert!(!heartbeat.awaiting_ack());
    assert_eq!(heartbeat.interval(), None);
    assert_eq!(heartbeat.latency().last(), Some(ms(7)));
}

#[test]
fn a_zero_interval_is_refused() {
    let mut heartbeat = Heartbeat::new();
    assert_eq!(
        heartbeat.on_hello(Duration::ZERO, Instant::now(), 0.5),
        Err(HeartbeatError::ZeroInterval)
    );
    assert_eq!(heartbeat.poll_timeout(), None);
}

#[test]
fn jitter_is_seedable_and_in_range() {
    let a: Vec<f64> = {
        let mut j = Jitter::new(42);
        (0..1000).map(|_| j.next_jitter()).collect()
    };
    let b: Vec<f64> = {
        let mut j = Jitter::new(42);
        (0..1000).map(|_| j.next_jitter()).collect()
    };
    assert_eq!(a, b, "same seed, same values");
    assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    let mean = a.iter().sum::<f64>() / a.len() as f64;
    assert!((0.45..0.55).contains(&mean), "roughly uniform: mean {mean}");
    let mut other = Jitter::new(43);
    assert_ne!(a[0], other.next_jitter());
}
