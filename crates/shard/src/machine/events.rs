//! The events for the user: queued in order, the JSON of dispatches in one
//! buffer, taken one at a time or as a whole [`Batch`].

use std::collections::VecDeque;

use super::{ShardEvent, ShardMachine};
use crate::batch::{Batch, Queued};

impl ShardMachine {
    /// Queues an event for the user.
    pub(super) fn emit(&mut self, event: ShardEvent) {
        self.queue(Queued::Event(event));
    }

    /// Queues an event, its buffer sized like the last batch's.
    pub(super) fn queue(&mut self, event: Queued) {
        if self.events.capacity() == 0 {
            self.events.reserve(with_headroom(self.batch_hint.0));
        }
        self.events.push_back(event);
    }

    /// Frees the event buffers if nothing is in them (a hibernating
    /// connection holds none).
    pub(super) fn free_event_buffers(&mut self) {
        if self.events.is_empty() {
            self.text = String::new();
            self.events = VecDeque::new();
        }
    }

    /// The next event for the user. Taking it delivers it: the exported
    /// [`session`](Self::session) follows.
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        let event = self.events.pop_front()?.into_copied_event(&self.text);
        self.delivered.note(&event);
        if self.events.is_empty() {
            // Nothing points into the text any more.
            self.text.clear();
            if self.text.capacity() > RETAINED_TEXT {
                self.text = String::new();
            }
        } else {
            self.compact();
        }
        Some(event)
    }

    /// Drops the JSON of dispatches already taken once it is most of the
    /// text, so that a queue which never quite empties (a driver that takes
    /// events a little slower than they come) does not keep all of it.
    fn compact(&mut self) {
        let taken = self
            .events
            .iter()
            .find_map(|event| match event {
                Queued::Dispatch { json, .. } => Some(json.start),
                Queued::Event(_) => None,
            })
            .unwrap_or(self.text.len());
        if taken < RETAINED_TEXT || taken * 2 < self.text.len() {
            return;
        }
        self.text.drain(..taken);
        for event in &mut self.events {
            if let Queued::Dispatch { json, .. } = event {
                *json = json.start - taken..json.end - taken;
            }
        }
    }

    /// Events queued for the user, and the bytes of JSON held for them: that
    /// of their dispatches, plus that of dispatches already taken by
    /// [`poll_event`](Self::poll_event) while others stayed queued (see
    /// `compact`).
    pub(crate) fn queued(&self) -> (usize, usize) {
        (self.events.len(), self.text.len())
    }

    /// The room of the text buffer, for tests of its sizing.
    #[cfg(test)]
    pub(crate) fn text_capacity(&self) -> usize {
        self.text.capacity()
    }

    /// Input: the driver handed `batch` to the consumer (its events, and
    /// those a tap took from it, count as delivered).
    pub(crate) fn handle_delivered(&mut self, batch: &Batch) {
        for event in batch.iter() {
            match event {
                Queued::Event(event) => self.delivered.note(event),
                Queued::Dispatch { seq, .. } => self.delivered.dispatch(*seq),
            }
        }
        if let Some(seq) = batch.tapped_seq() {
            self.delivered.dispatch(seq);
        }
    }

    /// Every queued event at once, with the JSON of their dispatches in one
    /// buffer (see [`Batch`]); `None` when there is none. The machine keeps
    /// no buffer afterwards until the next event.
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        if self.events.is_empty() {
            return None;
        }
        let events = std::mem::take(&mut self.events);
        let mut text = std::mem::take(&mut self.text);
        // A batch taken early (a quiet moment) holds little of the room
        // reserved for it; a consumer that lags may keep many such.
        if text.capacity() > 2 * text.len() + 1024 {
            text.shrink_to_fit();
        }
        self.batch_hint = (
            events.len().min(MAX_BATCH_HINT.0),
            next_hint(self.batch_hint.1, text.len(), MAX_BATCH_HINT.1),
        );
        Some(Batch::new(text, events))
    }
}

/// The room given up front to a batch like the last one: half again as
/// much, since a batch is cut only once it has passed its limit, and one
/// that outgrows its room copies everything it holds to grow.
pub(super) fn with_headroom(last: usize) -> usize {
    last.saturating_add(last / 2)
}

/// The text to plan the next batch for, after one of `taken` bytes on a
/// hint of `last`: the larger of `taken` and three quarters of `last`, so
/// that a batch cut short (at the end of a read) does not leave the next
/// full one too little room, which it would outgrow, copying its text at
/// each step. After a burst the hint shrinks by a quarter with each batch
/// (and a batch that holds little of its room is shrunk when taken).
fn next_hint(last: usize, taken: usize, max: usize) -> usize {
    taken.max(last - last / 4).min(max)
}

/// The text [`ShardMachine::poll_event`] keeps for the next events once all
/// are taken: a burst's worth of small ones.
const RETAINED_TEXT: usize = 64 * 1024;
/// The largest buffers a batch is given up front (events, bytes of text);
/// a larger one grows as it fills.
const MAX_BATCH_HINT: (usize, usize) = (256, 256 * 1024);
