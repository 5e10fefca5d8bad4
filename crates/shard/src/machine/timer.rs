//! The machine's deadlines, in one table.

use std::time::Instant;

/// One of the machine's deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// The connection being opened must be open by now (TCP, TLS and the
    /// WebSocket handshake).
    Connect,
    /// Hello must have arrived.
    Hello,
    /// READY or RESUMED must have arrived.
    Ready,
    /// The backoff is over: open the next connection.
    Reconnect,
    /// The heartbeat schedule's next deadline: a beat, or the check for
    /// its ACK. Mirrors [`shardwire_heartbeat::Heartbeat::poll_timeout`].
    Heartbeat,
    /// The rate limit frees a slot for the first queued command.
    CommandSlot,
    /// Check whether the connection has been quiet long enough to
    /// hibernate. It moves only when it fires, so a busy connection costs
    /// one timer a period.
    Hibernate,
}

impl Timer {
    /// Every timer, in the order [`ShardMachine::handle_timeout`] handles
    /// the expired ones.
    ///
    /// [`ShardMachine::handle_timeout`]: super::ShardMachine::handle_timeout
    pub(super) const ALL: [Self; 7] = [
        Self::Hibernate,
        Self::Reconnect,
        Self::Connect,
        Self::Hello,
        Self::Ready,
        Self::Heartbeat,
        Self::CommandSlot,
    ];

    /// Timers that belong to one connection: they end with it.
    const CONNECTION: [Self; 5] = [
        Self::Connect,
        Self::Hello,
        Self::Ready,
        Self::Heartbeat,
        Self::CommandSlot,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// When each [`Timer`] fires; `None` when it is stopped.
#[derive(Clone, Debug, Default)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.index()] = Some(at);
    }

    /// Sets `timer` to `at`, or stops it for `None`.
    pub(super) fn set_or_stop(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer.index()] = at;
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.at[timer.index()] = None;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// Stops the timers of the connection, which has ended or is ending.
    pub(super) fn stop_connection(&mut self) {
        for timer in Timer::CONNECTION {
            self.stop(timer);
        }
    }

    /// Stops `timer` and says so if it was due at `now`.
    pub(super) fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        let expired = self.get(timer).is_some_and(|at| at <= now);
        if expired {
            self.stop(timer);
        }
        expired
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_timer_has_its_own_slot() {
        let mut table = TimerTable::default();
        let start = Instant::now();
        for (n, timer) in Timer::ALL.into_iter().enumerate() {
            table.set(timer, start + Duration::from_secs(n as u64 + 1));
        }
        for (n, timer) in Timer::ALL.into_iter().enumerate() {
            assert_eq!(
                table.get(timer),
                Some(start + Duration::from_secs(n as u64 + 1))
            );
        }
    }

    #[test]
    fn the_next_deadline_is_the_earliest_and_expired_timers_stop() {
        let mut table = TimerTable::default();
        let start = Instant::now();
        assert_eq!(table.next(), None);
        table.set(Timer::Heartbeat, start + Duration::from_secs(5));
        table.set(Timer::Hello, start + Duration::from_secs(2));
        assert_eq!(table.next(), Some(start + Duration::from_secs(2)));
        assert!(!table.take_expired(Timer::Hello, start + Duration::from_secs(1)));
        assert!(table.take_expired(Timer::Hello, start + Duration::from_secs(2)));
        assert!(!table.is_set(Timer::Hello));
        assert_eq!(table.next(), Some(start + Duration::from_secs(5)));
    }

    #[test]
    fn a_connection_ending_stops_its_timers_only() {
        let mut table = TimerTable::default();
        let at = Instant::now();
        for timer in Timer::ALL {
            table.set(timer, at);
        }
        table.stop_connection();
        let left: Vec<Timer> = Timer::ALL
            .into_iter()
            .filter(|timer| table.is_set(*timer))
            .collect();
        assert_eq!(left, [Timer::Hibernate, Timer::Reconnect]);
    }
}
