//! Events on their way to the consumer: held while it lags, handed over in
//! batches, and what was handed over noted for the exported session.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::handle::{Output, Status, lock};
use crate::Session;
use crate::ShardEvent;
use crate::batch::{Batch, Queued};

/// Events the consumer has not taken yet, oldest first, in batches, and
/// their size: the bytes of their JSON, the bulk of them.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) batches: VecDeque<Batch>,
    pub(super) len: usize,
    pub(super) bytes: usize,
}

impl Pending {
    /// Adds one event, to the last batch.
    pub(super) fn push_back(&mut self, event: ShardEvent) {
        if self.batches.is_empty() {
            self.batches.push_back(Batch::default());
        }
        if let Some(batch) = self.batches.back_mut() {
            let before = batch.weight();
            batch.push(event);
            self.bytes += batch.weight() - before;
            self.len += 1;
        }
    }

    /// Adds a batch of events.
    pub(super) fn push_batch(&mut self, batch: Batch) {
        self.len += batch.len();
        self.bytes += batch.weight();
        self.batches.push_back(batch);
    }

    /// Takes the first event. The last batch stays when it empties, for
    /// the next events.
    pub(super) fn pop_front(&mut self) -> Option<ShardEvent> {
        loop {
            let batch = self.batches.front_mut()?;
            let before = batch.weight();
            if let Some(event) = batch.pop() {
                self.len -= 1;
                self.bytes -= before - batch.weight();
                if batch.len() == 0 && self.batches.len() > 1 {
                    self.batches.pop_front();
                }
                return Some(event);
            }
            if self.batches.len() == 1 {
                return None;
            }
            self.batches.pop_front();
        }
    }

    /// Takes the first batch that holds events, whole.
    pub(super) fn pop_batch(&mut self) -> Option<Batch> {
        while let Some(batch) = self.batches.pop_front() {
            if batch.len() > 0 {
                self.len -= batch.len();
                self.bytes -= batch.weight();
                return Some(batch);
            }
        }
        None
    }

    /// Sends the first batch through `permit`, noting what it delivers;
    /// `false` when there was none.
    pub(super) fn send_batch(
        &mut self,
        permit: mpsc::Permit<'_, Batch>,
        delivered: &mut Delivered,
    ) -> bool {
        let Some(batch) = self.pop_batch() else {
            return false;
        };
        delivered.note_batch(&batch);
        permit.send(batch);
        true
    }

    /// Sends the first event, tagged with `shard`, through `permit`, noting
    /// what it delivers; `false` when there was none.
    pub(super) fn send_event(
        &mut self,
        permit: mpsc::Permit<'_, (u32, ShardEvent)>,
        delivered: &mut Delivered,
        shard: u32,
    ) -> bool {
        let Some(event) = self.pop_front() else {
            return false;
        };
        delivered.note(&event);
        permit.send((shard, event));
        true
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Waits for room in the consumer's channel, then hands it the first batch
/// (or event, for a sink). `Err` when the consumer is gone. Cancel-safe:
/// nothing is taken from `pending` before there is room.
pub(super) async fn deliver(
    out: &Output,
    pending: &mut Pending,
    delivered: &mut Delivered,
    shard: u32,
) -> Result<(), ()> {
    match out {
        Output::Handle(tx) => {
            pending.send_batch(tx.reserve().await.map_err(drop)?, delivered);
        }
        Output::Sink(tx, _) => {
            pending.send_event(tx.reserve().await.map_err(drop)?, delivered, shard);
        }
    }
    Ok(())
}

/// What was handed to the consumer since the status last saw it: the
/// exported session follows deliveries, not receipts.
#[derive(Default)]
pub(super) struct Delivered {
    /// A READY handed over.
    ready: Option<Session>,
    /// The last dispatch seq handed over.
    seq: Option<u64>,
}

impl Delivered {
    pub(super) fn note(&mut self, event: &ShardEvent) {
        match event {
            ShardEvent::Ready { session } => {
                self.ready = Some(session.clone());
                self.seq = None;
            }
            ShardEvent::Dispatch { seq, .. } => self.seq = Some(*seq),
            _ => {}
        }
    }

    pub(super) fn note_batch(&mut self, batch: &Batch) {
        for event in batch.iter() {
            match event {
                Queued::Event(event) => self.note(event),
                Queued::Dispatch { seq, .. } => self.seq = Some(*seq),
            }
        }
    }

    pub(super) fn publish(&mut self, status: &Mutex<Status>) {
        if self.ready.is_none() && self.seq.is_none() {
            return;
        }
        let mut status = lock(status);
        if let Some(session) = self.ready.take() {
            status.session_at_ready = Some(session.clone());
            status.session = Some(session);
        }
        if let (Some(seq), Some(session)) = (self.seq.take(), &mut status.session) {
            session.seq = session.seq.max(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn pending_events_are_weighed_by_their_json() {
        let mut pending = Pending::default();
        pending.push_back(ShardEvent::Dispatch {
            seq: 1,
            event_type: "MESSAGE_CREATE".into(),
            json: "x".repeat(100).into(),
            event: None,
        });
        pending.push_back(ShardEvent::Resumed);
        pending.push_back(ShardEvent::Message {
            json: "y".repeat(20).into(),
        });
        assert_eq!((pending.len(), pending.bytes), (3, 120));
        assert!(matches!(
            pending.pop_front(),
            Some(ShardEvent::Dispatch { .. })
        ));
        assert_eq!(pending.bytes, 20);
        pending.pop_front();
        pending.pop_front();
        assert!(pending.is_empty());
        assert_eq!(pending.bytes, 0);
        assert!(pending.pop_front().is_none());
    }

    #[test]
    pub(super) fn pending_batches_go_whole_and_an_emptied_batch_is_never_handed_over() {
        let mut pending = Pending::default();
        pending.push_back(ShardEvent::Resumed);
        assert!(pending.pop_front().is_some());
        // The emptied batch stays for the next events, but holds none.
        assert!(pending.is_empty());
        let mut batch = Batch::default();
        batch.push(ShardEvent::Message { json: "ab".into() });
        batch.push(ShardEvent::Message { json: "cde".into() });
        pending.push_batch(batch);
        assert_eq!((pending.len(), pending.bytes), (2, 5));
        let batch = pending.pop_batch().expect("the batch with events");
        assert_eq!((batch.len(), batch.weight()), (2, 5));
        assert_eq!((pending.len(), pending.bytes), (0, 0));
        // One event joins the last batch.
        pending.push_back(ShardEvent::Resumed);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.pop_front(), Some(ShardEvent::Resumed));
        assert!(pending.pop_batch().is_none());
        assert!(pending.pop_front().is_none());
    }
}
