//! The outbound rate limit on a virtual clock.

use std::time::{Duration, Instant};

use shardwire_shard::{CommandRateLimiter, LIMIT, WINDOW};

const INTERVAL: Duration = Duration::from_millis(41_250);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_reserve_fits_the_heartbeats_of_a_window() {
    for (interval, reserve) in [
        (INTERVAL, 3),                    // ceil(60 / 41.25) + 1
        (secs(60), 2),                    // one beat a window, plus a requested one
        (secs(10), 7),                    // six a window, plus one
        (Duration::from_millis(100), 60), // capped at half the budget
        (Duration::ZERO, 60),             // nonsense interval: the cap
        (secs(3600), 2),                  // at least two
    ] {
        assert_eq!(
            CommandRateLimiter::new(interval).reserve(),
            reserve,
            "{interval:?}"
        );
    }
}

#[test]
fn commands_use_the_budget_less_the_reserve() {
    let t0 = Instant::now();
    let mut limiter = CommandRateLimiter::new(INTERVAL);
    let commands = LIMIT - limiter.reserve();
    for sent in 0..commands {
        assert_eq!(limiter.available(t0), commands - sent);
        assert!(limiter.try_acquire_command(t0), "command {sent}");
    }
    assert_eq!(limiter.available(t0), 0);
    assert!(
        !limiter.try_acquire_command(t0),
        "the reserve is not for commands"
    );
    // Heartbeats still go out, up to the whole budget.
    for beat in 0..limiter.reserve() {
        assert!(limiter.acquire_heartbeat(t0), "heartbeat {beat}");
    }
    // One past it is still counted (never held back) but reported.
    assert!(
        !limiter.acquire_heartbeat(t0),
        "the 121st payload in a window is reported"
    );
    assert_eq!(limiter.available(t0), 0);
    assert_eq!(limiter.next_available(t0), t0 + WINDOW);
}

#[test]
fn slots_come_back_as_the_window_slides() {
    let t0 = Instant::now();
    let mut limiter = CommandRateLimiter::new(INTERVAL);
    let commands = LIMIT - limiter.reserve();
    // Ten commands at t0, the rest one second later.
    for _ in 0..10 {
        assert!(limiter.try_acquire_command(t0));
    }
    for _ in 10..commands {
        assert!(limiter.try_acquire_command(t0 + secs(1)));
    }
    let now = t0 + secs(2);
    assert_eq!(limiter.available(now), 0);
    assert_eq!(
        limiter.next_available(now),
        t0 + WINDOW,
        "when the oldest leaves the window"
    );
    assert!(!limiter.try_acquire_command(t0 + WINDOW - Duration::from_nanos(1)));
    assert_eq!(limiter.available(t0 + WINDOW), 10);
    assert!(limiter.try_acquire_command(t0 + WINDOW));
    assert_eq!(
        limiter.next_available(t0 + WINDOW),
        t0 + WINDOW,
        "nine more free now"
    );
}

#[test]
fn next_available_is_now_while_slots_are_free() {
    let t0 = Instant::now();
    let limiter = CommandRateLimiter::new(INTERVAL);
    assert_eq!(limiter.next_available(t0), t0);
}

#[test]
fn a_steady_sender_never_exceeds_120_in_any_window() {
    // Commands as fast as the limiter allows, heartbeats every interval, for
    // five minutes of virtual time; then check every 60-second window.
    let t0 = Instant::now();
    let mut limiter = CommandRateLimiter::new(INTERVAL);
    let mut sent = Vec::new();
    let mut now = t0;
    let mut next_beat = t0 + INTERVAL / 2;
    let end = t0 + secs(300);
    while now < end {
        if now >= next_beat {
            assert!(
                limiter.acquire_heartbeat(now),
                "a heartbeat was refused at {:?}",
                now - t0
            );
            sent.push(now);
            next_beat += INTERVAL;
        }
        if limiter.try_acquire_command(now) {
            sent.push(now);
        }
        // On to the next command slot or the next beat, whichever is first.
        now = limiter
            .next_available(now)
            .min(next_beat)
            .max(now + Duration::from_millis(10));
    }
    for (index, start) in sent.iter().enumerate() {
        let in_window = sent[index..]
            .iter()
            .take_while(|t| **t < *start + WINDOW)
            .count();
        assert!(
            in_window <= LIMIT as usize,
            "{in_window} payloads in the window from {:?}",
            *start - t0
        );
    }
    assert!(
        sent.len() > 500,
        "the limiter let traffic through: {}",
        sent.len()
    );
}

#[test]
fn reset_gives_a_new_connection_a_fresh_budget() {
    let t0 = Instant::now();
    let mut limiter = CommandRateLimiter::new(INTERVAL);
    while limiter.try_acquire_command(t0) {}
    limiter.reset(secs(10));
    assert_eq!(limiter.reserve(), 7);
    assert_eq!(limiter.available(t0), LIMIT - 7);
}
