//! Dispatches into JetStream, in order per shard, and the stored seq that
//! moves on only over what JetStream acknowledged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use shardwire_shard::Session;
use tokio::time::Instant;

use super::{PUBLISH_TIMEOUT, Runner};
use crate::{Nats, NatsError, message_id};

/// A publish JetStream has yet to acknowledge.
#[derive(Clone)]
pub(super) struct Outgoing {
    pub(super) seq: u64,
    pub(super) session_id: Arc<str>,
    pub(super) resume_url: Arc<str>,
    pub(super) subject: String,
    pub(super) payload: Bytes,
    /// JetStream can never take it (over the server's `max_payload`): it is
    /// logged and passed over.
    pub(super) skipped: bool,
    /// The shard count of the reshard it comes from, for a new
    /// generation's READY and GUILD_CREATEs.
    pub(super) from_reshard: Option<u32>,
}

impl Outgoing {
    /// The session to resume from once this event is stored.
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

/// What an acknowledgement future resolves to.
pub(super) struct Acked {
    shard: u32,
    generation: u64,
    attempt: u32,
    seq: u64,
    outcome: Result<(), Failure>,
}

pub(super) type AckFuture = Pin<Box<dyn Future<Output = Acked> + Send>>;

impl Runner {
    pub(super) fn on_acked(&mut self, mut acked: Acked) {
        // A resharded slot may have moved since it published.
        let Some(key) = self.slot_key(acked.shard, acked.generation) else {
            return;
        };
        acked.shard = key;
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        match acked.outcome {
            // Stored, whichever attempt published it: if it is the oldest
            // one waiting, the stored seq moves on.
            Ok(()) => {
                if slot
                    .in_flight
                    .front()
                    .is_some_and(|front| front.seq == acked.seq)
                {
                    if let Some(done) = slot.in_flight.pop_front() {
                        self.queued -= 1;
                        slot.published.increment(1);
                        // Out of its shard's order while merged: the seq
                        // is stored once the merge is over.
                        if !slot.merged {
                            slot.acked = Some(done.session());
                            slot.dirty = true;
                        }
                    }
                    self.settle(acked.shard);
                }
            }
            Err(failure) if acked.attempt == slot.attempt => {
                self.failed(acked.shard, acked.seq, failure);
            }
            Err(_) => {}
        }
    }

    /// A publish failed: a permanent failure passes the event over, any
    /// other has everything in flight published again on the next tick.
    pub(super) fn failed(&mut self, shard: u32, seq: u64, failure: Failure) {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return;
        };
        match failure {
            Failure::Retry(reason) => {
                if !slot.needs_retry {
                    tracing::warn!(shard, seq, %reason, "publish failed; retrying");
                }
                slot.needs_retry = true;
            }
            Failure::Permanent(reason) => {
                tracing::error!(shard, seq, %reason, "JetStream cannot take this event; it is skipped");
                if let Some(item) = slot.in_flight.iter_mut().find(|item| item.seq == seq) {
                    item.skipped = true;
                }
                self.settle(shard);
            }
        }
    }

    /// Passes over the skipped events at the front, as if stored.
    pub(super) fn settle(&mut self, shard: u32) {
        let Some(slot) = self.slots.get_mut(&shard) else {
            return;
        };
        while slot.in_flight.front().is_some_and(|front| front.skipped) {
            if let Some(item) = slot.in_flight.pop_front() {
                self.queued -= 1;
                if !slot.merged {
                    slot.acked = Some(item.session());
                    slot.dirty = true;
                }
            }
        }
    }

    /// Publishes one event and queues its acknowledgement; `false` when the
    /// shard must publish again later (the failure is recorded).
    pub(super) async fn send_event(
        &mut self,
        shard: u32,
        generation: u64,
        attempt: u32,
        item: &Outgoing,
    ) -> bool {
        let sent_at = Instant::now();
        match publish(&self.nats, item).await {
            Ok(ack) => {
                let latency = self.metrics.ack_latency.clone();
                let ack = ack_future(shard, generation, attempt, item.seq, ack, sent_at, latency);
                self.in_flight.push_back(ack);
                true
            }
            Err(failure) => {
                let retry = matches!(failure, Failure::Retry(_));
                self.failed(shard, item.seq, failure);
                !retry
            }
        }
    }

    /// Publishes again, in order, everything a shard has in flight after a
    /// publish failed (JetStream drops what it already stored).
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
                .filter(|item| !item.skipped)
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
        let Some(session) = slot.acked.clone().filter(|_| slot.dirty) else {
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

async fn publish(nats: &Nats, outgoing: &Outgoing) -> Result<PublishAckFuture, Failure> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message_id(&outgoing.session_id, outgoing.seq).as_str(),
    );
    if let Some(total) = outgoing.from_reshard {
        headers.insert(crate::layout::RESHARD_HEADER, total.to_string().as_str());
    }
    let send = nats.jetstream().publish_with_headers(
        outgoing.subject.clone(),
        headers,
        outgoing.payload.clone(),
    );
    // While NATS is away the client's buffer fills; the node must not
    // wait on it forever (its leases need attention meanwhile).
    match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
        Ok(sent) => sent.map_err(classify),
        Err(_) => Err(Failure::Retry(format!(
            "not sent within {PUBLISH_TIMEOUT:?}"
        ))),
    }
}

fn classify(error: async_nats::jetstream::context::PublishError) -> Failure {
    use async_nats::jetstream::context::PublishErrorKind;
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Failure::Permanent(error.to_string()),
        _ => Failure::Retry(error.to_string()),
    }
}

fn ack_future(
    shard: u32,
    generation: u64,
    attempt: u32,
    seq: u64,
    ack: PublishAckFuture,
    sent_at: Instant,
    latency: metrics::Histogram,
) -> AckFuture {
    Box::pin(async move {
        let outcome = ack.await.map(|_| ()).map_err(classify);
        if outcome.is_ok() {
            latency.record(sent_at.elapsed().as_secs_f64());
        }
        Acked {
            shard,
            generation,
            attempt,
            seq,
            outcome,
        }
    })
}

/// What each published event carries of its session: the id (for the
/// message id) and the resume URL (for the stored session).
pub(super) fn tag(session: &Session) -> (Arc<str>, Arc<str>) {
    (
        Arc::from(session.session_id.as_str()),
        Arc::from(session.resume_url.as_str()),
    )
}
