//! One guild's two streams around a reshard: where the new stream starts
//! in the old one, and which events of each come out.
//!
//! The new stream is the old one from some event on (Discord sends a
//! guild's events in one order to every session), so first the question is
//! where it starts (*searching*). Every old event equal to the new
//! stream's first is a possible start; each later event of either stream
//! keeps only the starts it agrees with. A start counts once [`CONFIRM`]
//! events line up on it: one event on both could be a coincidence (a
//! presence going back and forth), three in a row hardly are.
//!
//! From then on (*synced*) the streams are merged two-pointer fashion: an
//! old event the new stream has not had yet is remembered, a new event the
//! old stream has not had yet is held, and each copy that comes on the
//! other stream is dropped. Forward search over what is remembered and
//! held skips an event only one stream has.

use std::cmp::Reverse;
use std::collections::VecDeque;

use shardwire_shard::ShardEvent;
use tokio::time::Instant;

/// New events held before the guild is cut anyway.
pub(super) const MAX_HELD: usize = 10_000;

/// Old events remembered for matching (besides the window).
const MAX_REMEMBERED: usize = 10_000;

/// Possible starts kept while searching.
const MAX_STARTS: usize = 64;

/// Events that must line up on both streams before a start counts.
pub(super) const CONFIRM: u64 = 3;

/// A new-stream event not handed out (yet).
pub(super) struct Held {
    pub(super) fingerprint: u64,
    pub(super) shard: u32,
    pub(super) event: ShardEvent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Where the new stream starts in the old one is not known yet.
    Searching,
    /// It is: copies are matched as they come.
    Synced,
    /// The new stream hands this guild's events out.
    Cut,
}

/// What an event of the old stream does.
pub(super) enum OldEvent {
    /// It comes out, after these held new events the old stream skipped.
    Out(VecDeque<Held>),
    /// The guild is cut: it is a copy.
    Copy,
}

/// A possible start of the new stream in the old one.
#[derive(Clone, Copy)]
struct Start {
    /// The old event number the new stream's first event would be.
    at: u64,
    /// Events seen on both streams at the places it says.
    lined_up: u64,
}

/// What an event of the new stream does.
pub(super) enum NewEvent {
    /// It comes out: the guild is cut and it is no copy.
    Out(Held),
    /// It is held until the cut, or until its copy comes on the old stream.
    Held,
    /// The old stream handed it out already.
    Copy,
}

pub(super) struct GuildStreams {
    pub(super) phase: Phase,
    /// Old events handed out that the new stream has not had (as far as
    /// is known): fingerprint and when. While searching, every one, the
    /// first being the old stream's event number `old_base`. After the
    /// cut, the copies still to come on the new stream.
    old: VecDeque<(u64, Instant)>,
    old_base: u64,
    /// New events the old stream has not had (while searching, the whole
    /// new stream): none has been handed out.
    held: VecDeque<Held>,
    /// While searching: where the new stream may start in the old one,
    /// each agreeing with every event of both seen so far.
    starts: Vec<Start>,
    /// Copies dropped so far, of either stream.
    pub(super) copies: u64,
}

impl GuildStreams {
    pub(super) fn new(phase: Phase) -> Self {
        Self {
            phase,
            old: VecDeque::new(),
            old_base: 0,
            held: VecDeque::new(),
            starts: Vec::new(),
            copies: 0,
        }
    }

    fn old_end(&self) -> u64 {
        self.old_base + self.old.len() as u64
    }

    fn old_at(&self, number: u64) -> Option<u64> {
        let index = usize::try_from(number.checked_sub(self.old_base)?).ok()?;
        self.old.get(index).map(|(fingerprint, _)| *fingerprint)
    }

    /// An old event.
    pub(super) fn old(&mut self, now: Instant, fingerprint: u64) -> OldEvent {
        match self.phase {
            Phase::Cut => {
                self.copies += 1;
                return OldEvent::Copy;
            }
            Phase::Searching => {
                let number = self.old_end();
                let held = &self.held;
                self.starts
                    .retain_mut(|start| match held.get(index(number - start.at)) {
                        Some(new) if new.fingerprint == fingerprint => {
                            start.lined_up += 1;
                            true
                        }
                        Some(_) => false,
                        None => true,
                    });
                // An event only one stream had leaves no start standing:
                // the search begins again at this one.
                let first = if self.starts.is_empty() {
                    held.iter().position(|new| new.fingerprint == fingerprint)
                } else {
                    held.front()
                        .is_some_and(|new| new.fingerprint == fingerprint)
                        .then_some(0)
                };
                if let Some(first) = first
                    && self.starts.len() < MAX_STARTS
                    && let Some(at) = number.checked_sub(first as u64)
                {
                    self.starts.push(Start { at, lined_up: 1 });
                }
            }
            Phase::Synced => {
                if let Some(at) = self
                    .held
                    .iter()
                    .position(|new| new.fingerprint == fingerprint)
                {
                    // Its copy was held; what the new stream had before it
                    // the old one skipped, and it comes out now.
                    let skipped = self.held.drain(..at).collect();
                    self.held.pop_front();
                    self.copies += 1;
                    return OldEvent::Out(skipped);
                }
                if !self.held.is_empty() {
                    // The new stream is ahead and never had it.
                    return OldEvent::Out(VecDeque::new());
                }
            }
        }
        self.old.push_back((fingerprint, now));
        if self.old.len() > MAX_REMEMBERED {
            self.forget_oldest();
        }
        OldEvent::Out(VecDeque::new())
    }

    /// A new event.
    pub(super) fn new_event(&mut self, new: Held) -> NewEvent {
        let fingerprint = new.fingerprint;
        match self.phase {
            Phase::Searching => {
                let number = self.held.len() as u64;
                if number == 0 {
                    self.starts = (self.old_base..self.old_end())
                        .filter(|&at| self.old_at(at) == Some(fingerprint))
                        .take(MAX_STARTS)
                        .map(|at| Start { at, lined_up: 1 })
                        .collect();
                } else {
                    let end = self.old_end();
                    let mut starts = std::mem::take(&mut self.starts);
                    starts.retain_mut(|start| {
                        let at = start.at + number;
                        if at >= end {
                            true
                        } else if self.old_at(at) == Some(fingerprint) {
                            start.lined_up += 1;
                            true
                        } else {
                            false
                        }
                    });
                    self.starts = starts;
                }
                self.held.push_back(new);
                NewEvent::Held
            }
            Phase::Synced | Phase::Cut => {
                if self.take_copy(fingerprint) {
                    NewEvent::Copy
                } else if self.phase == Phase::Cut {
                    NewEvent::Out(new)
                } else {
                    self.held.push_back(new);
                    NewEvent::Held
                }
            }
        }
    }

    /// Whether a remembered old event is this one's copy (forgetting it,
    /// and the old events before it, which the new stream never had).
    fn take_copy(&mut self, fingerprint: u64) -> bool {
        match self.old.iter().position(|(old, _)| *old == fingerprint) {
            Some(at) => {
                self.old.drain(..=at);
                self.copies += 1;
                true
            }
            None => false,
        }
    }

    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// While searching, the start with the most events lined up (the
    /// earliest of those), if at least `confirm` are.
    pub(super) fn start(&self, confirm: u64) -> Option<u64> {
        self.starts
            .iter()
            .filter(|start| start.lined_up >= confirm)
            .max_by_key(|start| (start.lined_up, Reverse(start.at)))
            .map(|start| start.at)
    }

    /// Where the search ends: the new stream starts at old event `start`.
    pub(super) fn sync(&mut self, start: u64) {
        let delivered = self.old_end().saturating_sub(start);
        let copies = delivered.min(self.held.len() as u64);
        self.held.drain(..index(copies));
        self.copies += copies;
        // What the old stream handed out past the copies is still to come
        // on the new one.
        let first = index((start + copies).saturating_sub(self.old_base));
        self.old.drain(..first.min(self.old.len()));
        self.starts.clear();
        self.phase = Phase::Synced;
    }

    /// From now on the new stream hands out: the held events come out. A
    /// guild still searching syncs at its best start if it has one; if not,
    /// every remembered old event may still come as a copy.
    pub(super) fn cut(&mut self) -> VecDeque<Held> {
        if self.phase == Phase::Searching
            && let Some(start) = self.start(1)
        {
            self.sync(start);
        }
        self.starts.clear();
        self.phase = Phase::Cut;
        std::mem::take(&mut self.held)
    }

    /// Forgets the old events handed out before `cutoff`.
    pub(super) fn forget_before(&mut self, cutoff: Instant) {
        while self.old.front().is_some_and(|(_, at)| *at <= cutoff) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        self.old.pop_front();
        self.old_base += 1;
    }

    /// Whether an old event handed out may still come as a copy.
    pub(super) fn expects_copies(&self) -> bool {
        !self.old.is_empty()
    }
}

/// A count as an index (counts here stay far below `usize::MAX`).
fn index(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}
