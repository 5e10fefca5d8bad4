//! Dispatches into JetStream, in order per shard, and the stored seq that
//! moves on only over what JetStream acknowledged.
//!
//! Each event goes out as a core NATS publish whose reply subject is one
//! token under the node's own inbox, and every acknowledgement comes back
//! on one subscription to it (`acks.rs`): no request, future or inbox
//! string of its own per event, which is most of what a JetStream publish
//! costs in the client.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_nats::{HeaderMap, HeaderValue, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use shardwire_shard::Session;
use tokio::time::Instant;

use super::acks::{ACK_TIMEOUT, Acked, Waiting};
use super::{PUBLISH_TIMEOUT, Runner};
#[cfg(doc)]
use crate::message_id;
use crate::{Layout, NatsError, event_subject};

/// A publish JetStream has yet to acknowledge.
#[derive(Clone)]
pub(super) struct Outgoing {
    /// Its place in its slot's queue, never reused: answers are matched by
    /// it (a slot's events may come from two sessions, each counting its
    /// seqs from 1).
    pub(super) nth: u64,
    pub(super) seq: u64,
    pub(super) session_id: Arc<str>,
    pub(super) resume_url: Arc<str>,
    pub(super) subject: Subject,
    pub(super) payload: Bytes,
    /// JetStream acknowledged it; it leaves once every earlier one has.
    pub(super) acked: bool,
    /// JetStream can never take it (over the server's `max_payload`): it is
    /// logged and passed over.
    pub(super) skipped: bool,
    /// The shard count of the reshard it comes from, for a new
    /// generation's READY and GUILD_CREATEs.
    pub(super) from_reshard: Option<u32>,
}

impl Outgoing {
    /// What to resume from once this event is stored.
    fn stored(&self) -> Stored {
        Stored {
            seq: self.seq,
            session_id: Arc::clone(&self.session_id),
            resume_url: Arc::clone(&self.resume_url),
        }
    }
}

/// The last dispatch of a shard JetStream stored, with every earlier one:
/// the session to resume from, made into a [`Session`] only when written.
#[derive(Clone)]
pub(super) struct Stored {
    seq: u64,
    session_id: Arc<str>,
    resume_url: Arc<str>,
}

impl Stored {
    /// Seq `seq` of the session `tag` names (see [`tag`]).
    pub(super) fn new(seq: u64, (session_id, resume_url): &(Arc<str>, Arc<str>)) -> Self {
        Self {
            seq,
            session_id: Arc::clone(session_id),
            resume_url: Arc::clone(resume_url),
        }
    }

    pub(super) fn of(session: &Session) -> Self {
        Self::new(session.seq, &tag(session))
    }

    pub(super) fn session(&self) -> Session {
        Session {
            session_id: self.session_id.to_string(),
            seq: self.seq,
            resume_url: self.resume_url.to_string(),
        }
    }
}

/// Why a publish did not go through.
pub(super) enum Failure {
    /// NATS is away or slow: publish again.
    Retry(String),
    /// It can never be stored.
    Permanent(String),
}

/// The event `nth` of a slot's queue, which is in `nth` order.
fn queued_mut(in_flight: &mut VecDeque<Outgoing>, nth: u64) -> Option<&mut Outgoing> {
    let index = in_flight.binary_search_by_key(&nth, |item| item.nth).ok()?;
    in_flight.get_mut(index)
}

/// What [`settle_front`] took off a shard's queue.
struct Settled {
    taken: usize,
    /// Of those, the ones JetStream stored (the others were skipped).
    stored: u64,
    /// The resume point after them.
    last: Option<Stored>,
}

/// Takes the events at the front that JetStream stored (or that were
/// skipped): the stored seq may pass an event only once JetStream has it
/// and every event before it, whatever order the answers came in.
fn settle_front(in_flight: &mut VecDeque<Outgoing>) -> Settled {
    let mut settled = Settled {
        taken: 0,
        stored: 0,
        last: None,
    };
    while let Some(item) = in_flight.pop_front() {
        if !(item.acked || item.skipped) {
            in_flight.push_front(item);
            break;
        }
        settled.taken += 1;
        settled.stored += u64::from(item.acked);
        settled.last = Some(item.stored());
    }
    settled
}

/// A shard's event subjects by event name, made once each. A gateway could
/// name events without end: past [`Subjects::MOST`] names, and for names
/// longer than [`Subjects::LONGEST`], they are made each time.
#[derive(Default)]
pub(super) struct Subjects(HashMap<Box<str>, Subject>);

impl Subjects {
    const MOST: usize = 256;
    const LONGEST: usize = 64;

    pub(super) fn get(&mut self, layout: &Layout, shard: u32, event_type: &str) -> Subject {
        if let Some(subject) = self.0.get(event_type) {
            return subject.clone();
        }
        let subject = Subject::from(event_subject(layout, shard, event_type));
        if self.0.len() < Self::MOST && event_type.len() <= Self::LONGEST {
            self.0.insert(event_type.into(), subject.clone());
        }
        subject
    }
}

/// Appends `value` in decimal, without the formatting machinery.
pub(super) fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

/// The `Nats-Msg-Id` header value of a dispatch (see [`message_id`]). A
/// session id is the gateway's to choose: a line break in it (which a
/// header cannot carry) becomes `_`, the same each time, so copies still
/// match.
fn message_id_header(session_id: &str, seq: u64) -> HeaderValue {
    let mut id = String::with_capacity(session_id.len() + 21);
    id.push_str(session_id);
    id.push(':');
    push_decimal(&mut id, seq);
    if id.contains(['\r', '\n']) {
        id = id.replace(['\r', '\n'], "_");
    }
    HeaderValue::from(id)
}

impl Runner {
    /// An answer came on the node's inbox.
    pub(super) fn on_reply(&mut self, message: &async_nats::Message) {
        if let Some(acked) = self.acks.answer(message) {
            self.on_acked(acked);
        }
    }

    /// Publishes JetStream did not answer in time are published again (the
    /// answers already in are read first).
    pub(super) fn expire_acks(&mut self) {
        while let Some(Some(reply)) = self.acks.replies.next().now_or_never() {
            self.on_reply(&reply);
        }
        for acked in self.acks.expired(Instant::now(), ACK_TIMEOUT) {
            self.on_acked(acked);
        }
    }

    fn on_acked(&mut self, acked: Acked) {
        // A resharded slot may have moved since it published.
        let Acked { waiting, outcome } = acked;
        let Some(key) = self.slot_key(waiting.key, waiting.generation) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        match outcome {
            // Stored, whichever attempt published it; the stored seq moves
            // on over every event stored before the oldest one waiting.
            Ok(()) => {
                self.metrics
                    .ack_latency
                    .record(waiting.sent_at.elapsed().as_secs_f64());
                if let Some(item) = queued_mut(&mut slot.in_flight, waiting.nth) {
                    item.acked = true;
                }
                self.settle(key);
            }
            Err(failure) if waiting.attempt == slot.attempt => {
                self.failed(key, waiting.nth, failure);
            }
            Err(_) => {}
        }
    }

    /// The publish of event `nth` failed: a permanent failure passes the
    /// event over, any other has everything in flight published again on
    /// the next tick.
    pub(super) fn failed(&mut self, shard: u32, nth: u64, failure: Failure) {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return;
        };
        let seq = queued_mut(&mut slot.in_flight, nth).map(|item| item.seq);
        match failure {
            Failure::Retry(reason) => {
                if !slot.needs_retry {
                    tracing::warn!(shard, seq, %reason, "publish failed; retrying");
                }
                slot.needs_retry = true;
            }
            Failure::Permanent(reason) => {
                tracing::error!(shard, seq, %reason, "JetStream cannot take this event; it is skipped");
                if let Some(item) = queued_mut(&mut slot.in_flight, nth) {
                    item.skipped = true;
                }
                self.settle(shard);
            }
        }
    }

    /// Takes the stored (or skipped) events off the front; the stored seq
    /// moves on to the last of them.
    pub(super) fn settle(&mut self, shard: u32) {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return;
        };
        let settled = settle_front(&mut slot.in_flight);
        self.queued -= settled.taken;
        slot.published.increment(settled.stored);
        // Out of its shard's order while merged: the seq is stored once the
        // merge is over.
        if let Some(last) = settled.last.filter(|_| !slot.merged) {
            slot.acked = Some(last);
            slot.dirty = true;
        }
    }

    /// Publishes one event, its answer to come on the node's inbox; `false`
    /// when the shard must publish again later (the failure is recorded).
    pub(super) async fn send_event(
        &mut self,
        shard: u32,
        generation: u64,
        attempt: u32,
        item: &Outgoing,
    ) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id_header(&item.session_id, item.seq),
        );
        if let Some(total) = item.from_reshard {
            let mut value = String::new();
            push_decimal(&mut value, u64::from(total));
            headers.insert(crate::layout::RESHARD_HEADER, value.as_str());
        }
        let (token, reply) = self.acks.register(Waiting {
            key: shard,
            generation,
            attempt,
            nth: item.nth,
            sent_at: Instant::now(),
        });
        let send = self.nats.client().publish_with_reply_and_headers(
            item.subject.clone(),
            reply,
            headers,
            item.payload.clone(),
        );
        // While NATS is away the client's buffer fills; the node must not
        // wait on it forever (its leases need attention meanwhile).
        let failure = match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Ok(Ok(())) => return true,
            Ok(Err(error)) => classify(&error),
            Err(_) => Failure::Retry(format!("not sent within {PUBLISH_TIMEOUT:?}")),
        };
        self.acks.cancel(token);
        let retry = matches!(failure, Failure::Retry(_));
        self.failed(shard, item.nth, failure);
        !retry
    }

    /// Publishes again, in order, what a shard has in flight and JetStream
    /// has not acknowledged, after a publish failed (JetStream drops a copy
    /// of what it already stored).
    pub(super) async fn retry_publishes(&mut self) {
        for shard in self.shards_where(|slot| slot.needs_retry) {
            let Some(slot) = self.slots.get_mut(&shard) else {
                continue;
            };
            slot.attempt += 1;
            slot.needs_retry = false;
            let (generation, attempt) = (slot.generation, slot.attempt);
            let outgoing: Vec<Outgoing> = slot
                .in_flight
                .iter()
                .filter(|item| !item.skipped && !item.acked)
                .cloned()
                .collect();
            let mut sent = 0;
            for item in outgoing {
                if !self.send_event(shard, generation, attempt, &item).await {
                    break;
                }
                sent += 1;
            }
            crate::metrics::retried(shard, sent);
        }
    }

    /// Writes the acknowledged seqs to the session store.
    pub(super) async fn flush_sessions(&mut self) {
        for shard in self.shards_where(|slot| slot.dirty) {
            self.flush_session(shard).await;
        }
    }

    /// Writes one shard's acknowledged seq to the session store; `false`
    /// when it could not.
    pub(super) async fn flush_session(&mut self, shard: u32) -> bool {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return false;
        };
        let Some(session) = slot
            .acked
            .as_ref()
            .filter(|_| slot.dirty)
            .map(Stored::session)
        else {
            return true;
        };
        match self.sessions.store(shard, &session, slot.revision).await {
            Ok(revision) => {
                slot.revision = revision;
                slot.dirty = false;
                true
            }
            Err(NatsError::Fenced { .. }) => {
                tracing::warn!(
                    shard,
                    "another node wrote this shard's session; stopping it"
                );
                let range = self.range_of(shard);
                self.lease_lost(range);
                false
            }
            Err(error) => {
                tracing::warn!(shard, %error, "cannot store the session");
                false
            }
        }
    }
}

fn classify(error: &async_nats::client::PublishError) -> Failure {
    match error.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded
        | async_nats::client::PublishErrorKind::InvalidSubject => {
            Failure::Permanent(error.to_string())
        }
        _ => Failure::Retry(error.to_string()),
    }
}

/// What each published event carries of its session: the id (for the
/// message id) and the resume URL (for the stored session).
pub(super) fn tag(session: &Session) -> (Arc<str>, Arc<str>) {
    (
        Arc::from(session.session_id.as_str()),
        Arc::from(session.resume_url.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(seq: u64) -> Outgoing {
        Outgoing {
            nth: seq + 100,
            seq,
            session_id: Arc::from("s"),
            resume_url: Arc::from("wss://r"),
            subject: Subject::from("e"),
            payload: Bytes::new(),
            acked: false,
            skipped: false,
            from_reshard: None,
        }
    }

    #[test]
    fn the_stored_seq_passes_an_event_only_with_every_one_before_it() {
        let mut in_flight: VecDeque<Outgoing> = (1..=5).map(outgoing).collect();
        // Answers out of order: 3, then 2, then 1 skipped, then 5.
        in_flight[2].acked = true;
        let settled = settle_front(&mut in_flight);
        assert_eq!((settled.taken, settled.last.map(|s| s.seq)), (0, None));
        in_flight[1].acked = true;
        assert_eq!(settle_front(&mut in_flight).taken, 0);
        in_flight[0].skipped = true;
        let settled = settle_front(&mut in_flight);
        assert_eq!((settled.taken, settled.stored), (3, 2));
        assert_eq!(settled.last.map(|s| s.session().seq), Some(3));
        in_flight[1].acked = true;
        let settled = settle_front(&mut in_flight);
        assert_eq!(settled.taken, 0, "4 is not stored: 5 must wait");
        assert_eq!(in_flight.iter().map(|o| o.seq).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn an_answer_finds_its_own_event_when_two_sessions_share_a_seq() {
        // A new session's seq 5 queued behind the old session's seq 5.
        let mut in_flight: VecDeque<Outgoing> = [outgoing(5), outgoing(5)].into();
        in_flight[0].nth = 7;
        in_flight[1].nth = 8;
        if let Some(item) = queued_mut(&mut in_flight, 8) {
            item.acked = true;
        }
        assert!(!in_flight[0].acked && in_flight[1].acked);
        assert_eq!(settle_front(&mut in_flight).taken, 0);
        assert!(queued_mut(&mut in_flight, 9).is_none());
        if let Some(item) = queued_mut(&mut in_flight, 7) {
            item.acked = true;
        }
        assert_eq!(settle_front(&mut in_flight).taken, 2);
    }

    #[test]
    fn decimals_are_written_whole() {
        for value in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, value);
            assert_eq!(out, format!("x{value}"));
        }
    }

    #[test]
    fn a_session_id_with_line_breaks_still_makes_a_message_id() {
        assert_eq!(message_id_header("abc", 42).as_str(), "abc:42");
        // A header cannot carry a line break; the gateway chose the id.
        let id = message_id_header("a\r\nb\nc", 7);
        assert_eq!(id.as_str(), "a__b_c:7");
        assert_eq!(message_id_header("a\r\nb\nc", 7).as_str(), id.as_str());
    }

    #[test]
    fn event_subjects_are_cached_up_to_a_bound() {
        let layout = Layout::default();
        let mut subjects = Subjects::default();
        let first = subjects.get(&layout, 3, "MESSAGE_CREATE");
        assert_eq!(first.as_str(), event_subject(&layout, 3, "MESSAGE_CREATE"));
        assert_eq!(subjects.get(&layout, 3, "MESSAGE_CREATE"), first);
        for n in 0..10 * Subjects::MOST {
            let name = format!("EVENT_{n}");
            assert_eq!(
                subjects.get(&layout, 3, &name).as_str(),
                event_subject(&layout, 3, &name)
            );
        }
        assert_eq!(subjects.0.len(), Subjects::MOST);
        let mut subjects = Subjects::default();
        let long = "X".repeat(100_000);
        assert!(subjects.get(&layout, 3, &long).as_str().ends_with(&long));
        assert!(subjects.0.is_empty(), "a long name is not kept");
    }
}
