//! Events on their way to the consumer: held while it lags and handed over
//! in batches, each one told to the machine as delivered.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::handle::Output;
use crate::ShardMachine;
use crate::batch::Batch;

/// Events the consumer has not taken yet, oldest first, in batches, and
/// their size: the bytes of their JSON, the bulk of them.
#[derive(Default)]
pub(super) struct Pending {
    batches: VecDeque<Batch>,
    len: usize,
    pub(super) bytes: usize,
}

impl Pending {
    /// Adds a batch of events. One a tap emptied is not queued, but what
    /// the tap took still counts as delivered once everything before it is:
    /// at once when nothing waits, else with the last waiting batch.
    pub(super) fn push_batch(&mut self, batch: Batch, machine: &mut ShardMachine) {
        if batch.len() > 0 {
            self.len += batch.len();
            self.bytes += batch.weight();
            self.batches.push_back(batch);
        } else if let Some(last) = self.batches.back_mut() {
            last.note_tapped(batch.tapped_seq());
        } else {
            machine.handle_delivered(&batch);
        }
    }

    /// Sends the first batch through `permit`, telling the machine it is
    /// delivered; `false` when there was none.
    pub(super) fn send_batch(
        &mut self,
        permit: mpsc::Permit<'_, (u32, Batch)>,
        machine: &mut ShardMachine,
    ) -> bool {
        let Some(batch) = self.batches.pop_front() else {
            return false;
        };
        self.len -= batch.len();
        self.bytes -= batch.weight();
        machine.handle_delivered(&batch);
        permit.send((machine.shard_id(), batch));
        true
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Waits for room in the consumer's channel, then hands it the first
/// batch. `Err` when the consumer is gone. Cancel-safe: nothing is taken
/// from `pending` before there is room.
pub(super) async fn deliver(
    out: &Output,
    pending: &mut Pending,
    machine: &mut ShardMachine,
) -> Result<(), ()> {
    let permit = out.events.reserve().await.map_err(drop)?;
    pending.send_batch(permit, machine);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShardEvent;

    #[test]
    fn pending_batches_go_whole_are_weighed_by_their_json_and_an_empty_one_is_not_queued() {
        let mut machine = crate::ShardMachine::new(crate::ShardConfig::new(
            shardwire_codec::Token::new("delivery-test-token"),
            twilight_model::gateway::Intents::GUILDS,
            3,
            4,
            "wss://gateway.example",
        ));
        let mut pending = Pending::default();
        pending.push_batch(Batch::default(), &mut machine);
        assert!(pending.is_empty() && pending.batches.is_empty());
        let mut batch = Batch::default();
        batch.push(ShardEvent::Message { json: "ab".into() });
        batch.push(ShardEvent::Resumed);
        batch.push(ShardEvent::Message { json: "cde".into() });
        pending.push_batch(batch, &mut machine);
        let mut batch = Batch::default();
        batch.push(ShardEvent::Message {
            json: "x".repeat(100).into(),
        });
        pending.push_batch(batch, &mut machine);
        assert_eq!((pending.len(), pending.bytes), (4, 105));
        let (tx, mut rx) = mpsc::channel(4);
        assert!(pending.send_batch(tx.try_reserve().expect("room"), &mut machine));
        assert_eq!((pending.len(), pending.bytes), (1, 100));
        let (shard, batch) = rx.try_recv().expect("the first batch");
        assert_eq!((shard, batch.len(), batch.weight()), (3, 3, 5));
        assert!(pending.send_batch(tx.try_reserve().expect("room"), &mut machine));
        assert!(!pending.send_batch(tx.try_reserve().expect("room"), &mut machine));
        assert!(pending.is_empty());
        assert_eq!(pending.bytes, 0);
    }

    #[test]
    fn what_a_tap_took_from_an_emptied_batch_is_delivered_after_what_waits_before_it() {
        use shardwire_codec::MessageKind;
        let seq = |machine: &ShardMachine| machine.session().map(|session| session.seq);
        let (mut machine, now) = crate::batch::tests::ready_machine();
        let take_all: crate::Tap = std::sync::Arc::new(|_, _| None);
        let receive = |machine: &mut ShardMachine, seq: u64| {
            let message = crate::batch::tests::message(seq);
            machine.handle_message(now, message.as_bytes(), MessageKind::Text);
            machine.take_batch().expect("a batch")
        };
        let mut pending = Pending::default();
        // Nothing waits: the taken 2 is delivered at once.
        let mut batch = receive(&mut machine, 2);
        batch.tap(0, &take_all);
        pending.push_batch(batch, &mut machine);
        assert_eq!(seq(&machine), Some(2));
        // 3 waits for the consumer; 4, taken, counts only once 3 is handed over.
        let batch = receive(&mut machine, 3);
        pending.push_batch(batch, &mut machine);
        let mut batch = receive(&mut machine, 4);
        batch.tap(0, &take_all);
        pending.push_batch(batch, &mut machine);
        assert_eq!(seq(&machine), Some(2), "3 is not delivered yet");
        let (tx, _rx) = mpsc::channel(1);
        assert!(pending.send_batch(tx.try_reserve().expect("room"), &mut machine));
        assert_eq!(seq(&machine), Some(4));
        assert!(pending.is_empty());
    }
}
