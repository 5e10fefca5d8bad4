//! Events on their way from a shard's machine to its consumer.
//!
//! The JSON of the dispatches in a batch shares one buffer, and each
//! dispatch's [`Json`] is a handle into it: handing events out costs no
//! allocation or copy each. The buffer is freed with the last handle.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use twilight_model::gateway::event::Event;

use crate::{Json, ShardEvent};

/// One event in a machine's queue or a [`Batch`].
pub(crate) enum Queued {
    /// An event as it will be handed out.
    Event(ShardEvent),
    /// A dispatch whose JSON is the range `json` of its batch's text.
    Dispatch {
        seq: u64,
        event_type: Cow<'static, str>,
        json: Range<usize>,
        event: Option<Box<Event>>,
    },
}

impl Queued {
    /// The seq of a dispatch.
    fn seq(&self) -> Option<u64> {
        match self {
            Self::Dispatch { seq, .. } | Self::Event(ShardEvent::Dispatch { seq, .. }) => {
                Some(*seq)
            }
            Self::Event(_) => None,
        }
    }

    /// The bytes of JSON it carries: its weight against
    /// [`ShardConfig::max_pending_bytes`](crate::ShardConfig::max_pending_bytes).
    pub(crate) fn weight(&self) -> usize {
        match self {
            Self::Dispatch { json, .. } => json.len(),
            Self::Event(ShardEvent::Dispatch { json, .. } | ShardEvent::Message { json }) => {
                json.len()
            }
            Self::Event(_) => 0,
        }
    }

    /// The event, its JSON a handle into the shared `text` if it has none
    /// of its own yet. A range outside `text` (which no batch makes) gives
    /// empty JSON rather than a panic.
    pub(crate) fn into_event(self, text: &Arc<String>) -> ShardEvent {
        self.make_event(|range| Json::shared(text, range))
    }

    /// The event, its JSON copied out of `text` if it has none of its own
    /// yet: for a buffer that is not shared (the machine's own).
    pub(crate) fn into_copied_event(self, text: &str) -> ShardEvent {
        self.make_event(|range| Json::from(text.get(range).unwrap_or_default()))
    }

    fn make_event(self, json_of: impl FnOnce(Range<usize>) -> Json) -> ShardEvent {
        match self {
            Self::Event(event) => event,
            Self::Dispatch {
                seq,
                event_type,
                json,
                event,
            } => ShardEvent::Dispatch {
                seq,
                event_type,
                json: json_of(json),
                event,
            },
        }
    }
}

/// Events in order, with the JSON of their dispatches in one buffer.
#[derive(Default)]
pub(crate) struct Batch {
    text: Arc<String>,
    events: VecDeque<Queued>,
    /// The sum of the events' weights.
    weight: usize,
    /// The last seq of the dispatches a [`Tap`](crate::Tap) took out.
    tapped_seq: Option<u64>,
}

impl Batch {
    /// The events of a machine's queue and the text their ranges point into.
    pub(crate) fn new(text: String, events: VecDeque<Queued>) -> Self {
        let weight = events.iter().map(Queued::weight).sum();
        Self {
            text: Arc::new(text),
            events,
            weight,
            tapped_seq: None,
        }
    }

    /// Passes every event through `tap`, keeping what it gives back in
    /// place. The events it takes still count as delivered (see
    /// [`Batch::tapped_seq`]).
    pub(crate) fn tap(&mut self, shard: u32, tap: &crate::Tap) {
        let text = &self.text;
        let mut tapped_seq = self.tapped_seq;
        self.events.retain_mut(|queued| {
            let seq = queued.seq();
            let taken = std::mem::replace(queued, Queued::Event(ShardEvent::Resumed));
            match tap(shard, taken.into_event(text)) {
                Some(event) => {
                    *queued = Queued::Event(event);
                    true
                }
                None => {
                    tapped_seq = seq.or(tapped_seq);
                    false
                }
            }
        });
        self.tapped_seq = tapped_seq;
        self.weight = self.events.iter().map(Queued::weight).sum();
    }

    /// The last seq of the dispatches a tap took out of this batch.
    pub(crate) fn tapped_seq(&self) -> Option<u64> {
        self.tapped_seq
    }

    /// Counts dispatches a tap took from a later batch, which had nothing
    /// else, as delivered with this one.
    pub(crate) fn note_tapped(&mut self, seq: Option<u64>) {
        self.tapped_seq = self.tapped_seq.max(seq);
    }

    /// Events left.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes of JSON left (see [`Queued::weight`]).
    pub(crate) fn weight(&self) -> usize {
        self.weight
    }

    /// The events left, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.events.iter()
    }

    /// Adds an event that carries its own JSON.
    #[cfg(test)]
    pub(crate) fn push(&mut self, event: ShardEvent) {
        let event = Queued::Event(event);
        self.weight += event.weight();
        self.events.push_back(event);
    }

    /// Takes the first event.
    pub(crate) fn pop(&mut self) -> Option<ShardEvent> {
        let event = self.events.pop_front()?;
        self.weight -= event.weight();
        let event = event.into_event(&self.text);
        if self.events.is_empty() {
            // The batch holds the text no longer; the events handed out
            // free it with the last of them.
            self.text = Arc::default();
        }
        Some(event)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn dispatch(seq: u64, json: Range<usize>) -> Queued {
        Queued::Dispatch {
            seq,
            event_type: Cow::Borrowed("MESSAGE_CREATE"),
            json,
            event: None,
        }
    }

    #[test]
    fn a_batch_hands_out_its_events_in_order_each_with_its_own_json() {
        let text = String::from(r#"{"op":0,"s":1}{"op":0,"s":2}"#);
        let events = VecDeque::from([
            dispatch(1, 0..14),
            Queued::Event(ShardEvent::Resumed),
            dispatch(2, 14..28),
        ]);
        let mut batch = Batch::new(text, events);
        batch.push(ShardEvent::Message { json: "abc".into() });
        assert_eq!((batch.len(), batch.weight()), (4, 31));
        let jsons: Vec<String> = std::iter::from_fn(|| batch.pop())
            .map(|event| match event {
                ShardEvent::Dispatch { seq, json, .. } => format!("{seq}:{json}"),
                ShardEvent::Message { json } => format!("message:{json}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            jsons,
            [
                r#"1:{"op":0,"s":1}"#,
                "Resumed",
                r#"2:{"op":0,"s":2}"#,
                "message:abc"
            ]
        );
        assert_eq!((batch.len(), batch.weight()), (0, 0));
        assert_eq!(batch.text.capacity(), 0, "an empty batch keeps no text");
        assert!(batch.pop().is_none());
    }

    /// A machine on an uncompressed connection, past READY.
    pub(crate) fn ready_machine() -> (crate::ShardMachine, std::time::Instant) {
        use shardwire_codec::{Compression, MessageKind, Token};
        let mut config = crate::ShardConfig::new(
            Token::new("batch-test-token"),
            twilight_model::gateway::Intents::GUILDS,
            0,
            1,
            "wss://gateway.example",
        );
        config.compression = Compression::None;
        let mut machine = crate::ShardMachine::new(config);
        let now = std::time::Instant::now();
        machine.connect(now);
        machine.handle_connected(now);
        let hello = br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}"#;
        machine.handle_message(now, hello, MessageKind::Text);
        machine.handle_identify_turn(now);
        let ready = br#"{"t":"READY","s":1,"op":0,"d":{"session_id":"s","resume_gateway_url":"wss://r.example","v":10}}"#;
        machine.handle_message(now, ready, MessageKind::Text);
        assert_eq!(machine.state(), crate::ShardState::Active);
        while machine.poll_event().is_some() {}
        (machine, now)
    }

    pub(crate) fn message(seq: u64) -> String {
        format!(r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{{"content":"m{seq}"}}}}"#)
    }

    #[test]
    fn a_machine_batch_holds_exactly_the_dispatches_json() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        assert!(machine.take_batch().is_none(), "nothing queued");
        let mut sent = Vec::new();
        for seq in 2..6 {
            let json = message(seq);
            machine.handle_message(now, json.as_bytes(), MessageKind::Text);
            sent.push(json);
            // Payloads that are not events leave nothing behind: an ACK, a
            // heartbeat request and a dispatch without `s`.
            machine.handle_message(now, br#"{"op":11,"d":null}"#, MessageKind::Text);
            machine.handle_message(now, br#"{"op":1,"d":null}"#, MessageKind::Text);
            machine.handle_message(
                now,
                br#"{"t":"X","s":null,"op":0,"d":{}}"#,
                MessageKind::Text,
            );
        }
        assert_eq!(
            machine.queued().1,
            sent.iter().map(String::len).sum::<usize>()
        );
        let mut batch = machine.take_batch().expect("a batch");
        assert_eq!(machine.queued(), (0, 0));
        assert_eq!(batch.weight(), batch.text.len());
        let jsons: Vec<Json> = std::iter::from_fn(|| batch.pop())
            .filter_map(|event| match event {
                ShardEvent::Dispatch { json, .. } => Some(json),
                _ => None,
            })
            .collect();
        assert_eq!(jsons, sent);
        // Handed out without copies: each event's JSON follows the last
        // one's in the batch's buffer.
        for pair in jsons.windows(2) {
            assert_eq!(
                pair[0].as_ptr().wrapping_add(pair[0].len()),
                pair[1].as_ptr()
            );
        }
    }

    #[test]
    fn a_small_batch_after_a_large_one_keeps_no_spare_room() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        for seq in 2..200 {
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        }
        let large = machine.take_batch().expect("a batch");
        assert!(large.text.len() > 8 * 1024);
        machine.handle_message(now, message(200).as_bytes(), MessageKind::Text);
        let small = machine.take_batch().expect("a batch");
        assert!(
            small.text.capacity() <= 2 * small.text.len() + 1024,
            "{} bytes of room for {}",
            small.text.capacity(),
            small.text.len()
        );
    }

    #[test]
    fn a_batch_somewhat_larger_than_the_last_never_grows_its_text() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        for seq in 2..100 {
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        }
        let last = machine.take_batch().expect("a batch").text.len();
        // Batches are cut once they pass their limit, so the next one often
        // holds a little more: it must fit in the room it is given at once,
        // never copying its text to grow.
        let mut seq = 100;
        machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        let room = machine.text_capacity();
        while machine.queued().1 < last + last * 2 / 5 {
            seq += 1;
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
            assert_eq!(
                machine.text_capacity(),
                room,
                "the text grew at {} bytes, after a batch of {last}",
                machine.queued().1
            );
        }
    }

    #[test]
    fn a_batch_cut_short_does_not_leave_the_next_full_one_too_little_room() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        for seq in 2..100 {
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        }
        let full = machine.take_batch().expect("a batch").text.len();
        // The end of a read cuts one batch short.
        machine.handle_message(now, message(100).as_bytes(), MessageKind::Text);
        assert!(machine.take_batch().is_some());
        // The next one, as full as the first, fits in the room it gets.
        let mut seq = 101;
        machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        let room = machine.text_capacity();
        while machine.queued().1 < full {
            seq += 1;
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
            assert_eq!(
                machine.text_capacity(),
                room,
                "the text grew at {} bytes, after a short batch that followed one of {full}",
                machine.queued().1
            );
        }
    }

    #[test]
    fn a_queue_that_never_empties_does_not_keep_the_json_of_taken_events() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        let mut expected = 2;
        for seq in 2..5000 {
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
            // One event stays queued: the queue never empties.
            if seq > 2 {
                match machine.poll_event() {
                    Some(ShardEvent::Dispatch { seq, json, .. }) => {
                        assert_eq!((seq, json.as_str()), (expected, &*message(expected)));
                        expected += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert!(
                machine.queued().1 <= 2 * 64 * 1024 + 1024,
                "{} bytes of text for one queued event",
                machine.queued().1
            );
        }
        let mut batch = machine.take_batch().expect("the last event");
        match batch.pop() {
            Some(ShardEvent::Dispatch { seq, json, .. }) => {
                assert_eq!((seq, json.as_str()), (4999, &*message(4999)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_polled_one_by_one_and_taken_in_a_batch_stay_in_order() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        for seq in 2..5 {
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        }
        let seq_of = |event: Option<ShardEvent>| match event {
            Some(ShardEvent::Dispatch { seq, json, .. }) => {
                assert_eq!(json, message(seq));
                seq
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(seq_of(machine.poll_event()), 2);
        let mut batch = machine.take_batch().expect("a batch");
        machine.handle_message(now, message(5).as_bytes(), MessageKind::Text);
        assert_eq!(seq_of(batch.pop()), 3);
        assert_eq!(seq_of(machine.poll_event()), 5);
        assert_eq!(seq_of(batch.pop()), 4);
        assert!(batch.pop().is_none() && machine.poll_event().is_none());
        assert_eq!(
            machine.session().map(|session| session.seq),
            Some(5),
            "the session follows what was delivered: 5 was polled last"
        );
    }

    #[test]
    fn a_tap_keeps_what_it_gives_back_and_what_it_takes_counts_as_delivered() {
        use shardwire_codec::MessageKind;
        let (mut machine, now) = ready_machine();
        for seq in 2..6 {
            machine.handle_message(now, message(seq).as_bytes(), MessageKind::Text);
        }
        let mut batch = machine.take_batch().expect("a batch");
        // Takes 3 and 5, and gives 4 back changed.
        let tap: crate::Tap = std::sync::Arc::new(|shard, event| {
            assert_eq!(shard, 0);
            match event {
                ShardEvent::Dispatch { seq: 3 | 5, .. } => None,
                ShardEvent::Dispatch { seq: 4, .. } => Some(ShardEvent::Resumed),
                other => Some(other),
            }
        });
        batch.tap(0, &tap);
        assert_eq!((batch.len(), batch.tapped_seq()), (2, Some(5)));
        assert_eq!(batch.weight(), message(2).len());
        machine.handle_delivered(&batch);
        assert_eq!(
            machine.session().map(|session| session.seq),
            Some(5),
            "the taken 5 was delivered, to the tap"
        );
        let events: Vec<ShardEvent> = std::iter::from_fn(|| batch.pop()).collect();
        assert!(
            matches!(&events[..], [ShardEvent::Dispatch { seq: 2, json, .. }, ShardEvent::Resumed] if *json == message(2)),
            "{events:?}"
        );
    }

    #[test]
    fn a_range_outside_the_text_gives_empty_json_not_a_panic() {
        let mut batch = Batch::new("{}".into(), VecDeque::from([dispatch(1, 1..9)]));
        match batch.pop() {
            Some(ShardEvent::Dispatch { json, .. }) => assert_eq!(json, ""),
            other => panic!("{other:?}"),
        }
    }
}
