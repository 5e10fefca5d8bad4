//! Messages in: decoded, scanned, and acted on by opcode and event name.

use std::time::Instant;

use shardwire_codec::{Command, Compression, Identify, MessageKind, Resume};
use twilight_model::gateway::OpCode;

use super::body::{Hello, RateLimited, Ready};
use super::events::with_headroom;
use super::scanned::{Scanned, typed};
use super::timer::Timer;
use super::{Phase, ShardEvent, ShardMachine, Step};
use crate::batch::Queued;
use crate::metrics::Cause;
use crate::{AfterClose, Endpoint, FatalError, IdentifyRefused, Json, Scheme, Session};
use crate::{RESUMABLE_CLOSE, UNDECODABLE_LIMIT};

impl ShardMachine {
    /// The driver received one WebSocket message.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8], kind: MessageKind) {
        self.on_message(now, bytes, kind);
        self.settle(now);
    }

    fn on_message(&mut self, now: Instant, bytes: &[u8], kind: MessageKind) {
        // Only an open connection has messages: one that straggles in after
        // the close (or before the open) is not acted on.
        if !self.connection_open() || self.step() == Some(Step::Connecting) {
            return;
        }
        self.last_message_at = Some(now);
        if !self.timers.is_set(Timer::Hibernate)
            && let Some(after) = self.config.hibernate_after
        {
            self.timers.set(Timer::Hibernate, now + after);
        }
        // The payload's JSON goes to the end of `text`; it stays there only
        // if it becomes a dispatch event.
        let start = self.text.len();
        self.metrics.message(bytes.len());
        let scanned = match self.decoder.push(bytes, kind) {
            Ok(Some(payload)) => {
                self.metrics.payload(payload.op(), payload.json().len());
                if self.config.raw_messages {
                    self.events.push_back(Queued::Event(ShardEvent::Message {
                        json: Json::from(payload.json()),
                    }));
                }
                let typed = typed(&self.config.typed_events, &payload);
                if self.text.capacity() == 0 && payload.op() == 0 {
                    self.text.reserve(with_headroom(self.batch_hint.1));
                }
                self.text.push_str(payload.json());
                Scanned::new(&payload, start, &mut self.names).with_typed(typed)
            }
            Ok(None) => return,
            Err(error) => return self.undecodable(&error.to_string()),
        };
        self.on_payload(now, scanned);
        let kept = matches!(
            self.events.back(),
            Some(Queued::Dispatch { json, .. }) if json.start == start
        );
        if !kept {
            self.text.truncate(start);
        }
    }

    /// The driver found a frame that breaks the WebSocket protocol, and
    /// closed the connection. It counts as an undecodable message.
    pub fn handle_protocol_error(&mut self, now: Instant, error: &str) {
        if self.connection_open() && self.step() != Some(Step::Connecting) {
            self.undecodable(error);
            // The connection is gone already: no close to wait for.
            self.orders
                .retain(|order| !matches!(order, super::Order::Close { .. }));
            self.on_close(now, None, "");
        }
        self.settle(now);
    }

    /// A message could not be decoded, or a frame broke the protocol. The
    /// message may have been a dispatch: a fresh connection resumes, so the
    /// gateway sends it again (and the compression context starts anew).
    /// After [`UNDECODABLE_LIMIT`] in a row, the shard stops.
    fn undecodable(&mut self, error: &str) {
        self.undecodable += 1;
        if let Some(link) = self.link_mut() {
            link.broke = true;
        }
        if self.undecodable >= UNDECODABLE_LIMIT {
            tracing::error!(
                error,
                "the gateway keeps sending what cannot be decoded; stopping"
            );
            let fatal = FatalError::Undecodable(error.to_owned());
            self.close_ourselves(AfterClose::Fatal(fatal), Cause::Undecodable);
        } else {
            tracing::warn!(
                error,
                "a message from the gateway cannot be decoded; reconnecting to resume, so that the gateway sends it again"
            );
            self.close_ourselves(AfterClose::Resume, Cause::Undecodable);
        }
    }

    fn on_payload(&mut self, now: Instant, payload: Scanned) {
        match OpCode::from(payload.op) {
            Some(OpCode::Dispatch) => self.on_dispatch(now, payload),
            Some(OpCode::Heartbeat) => self.heartbeat.on_request(now),
            Some(OpCode::Reconnect) => {
                tracing::info!("the gateway asks for a reconnect (op 7)");
                self.close_ourselves(AfterClose::Resume, Cause::Op7);
            }
            Some(OpCode::InvalidSession) => {
                let resumable = payload.data(&self.text).trim() == "true";
                tracing::info!(resumable, "the gateway invalidated the session (op 9)");
                if resumable {
                    self.close_ourselves(AfterClose::Resume, Cause::Op9);
                } else {
                    self.session = None;
                    if let Some(link) = self.link_mut() {
                        link.wait_before_identify = true;
                    }
                    self.close_ourselves(AfterClose::Identify, Cause::Op9);
                }
            }
            Some(OpCode::Hello) => {
                let interval = Hello::interval(payload.data(&self.text));
                self.on_hello(now, interval);
            }
            Some(OpCode::HeartbeatAck) => {
                self.heartbeat.on_ack(now);
                if let Some(latency) = self.heartbeat.latency().last() {
                    self.metrics.heartbeat(latency);
                    self.emit(ShardEvent::Heartbeat { latency });
                }
            }
            // Opcodes a client sends, and unknown ones: nothing to do.
            _ => {}
        }
    }

    fn on_hello(&mut self, now: Instant, interval: Option<std::time::Duration>) {
        if self.step() != Some(Step::WaitingForHello) {
            return;
        }
        self.timers.stop(Timer::Hello);
        let jitter = self.jitter.next_jitter();
        // A Hello without a usable interval: try a fresh connection.
        let Some(interval) = interval else {
            return self.close_ourselves(AfterClose::Resume, Cause::BadHello);
        };
        if self.heartbeat.on_hello(interval, now, jitter).is_err() {
            return self.close_ourselves(AfterClose::Resume, Cause::BadHello);
        }
        self.limiter.reset(interval);
        self.timers
            .set(Timer::Ready, now + self.config.ready_timeout);
        let resuming = matches!(&self.phase, Phase::Open(link) if link.resuming);
        if let (true, Some(session)) = (resuming, self.session.clone()) {
            self.set_step(Step::Resuming);
            self.set_span(tracing::info_span!("resume", seq = session.seq));
            self.in_step(|| tracing::info!("resuming"));
            let resume = Command::Resume(Resume {
                token: self.config.token.clone(),
                session_id: session.session_id,
                seq: session.seq,
            });
            self.transmit_command(now, &resume);
        } else {
            self.set_step(Step::Identifying);
            self.set_span(tracing::info_span!("identify"));
            self.orders.push_back(super::Order::WaitIdentifyTurn);
        }
    }

    /// The identify queue gave this shard its turn.
    pub fn handle_identify_turn(&mut self, now: Instant) {
        if self.step() == Some(Step::Identifying) {
            let intents = self.config.intents.bits();
            self.in_step(|| tracing::info!(intents, "identifying"));
            let identify = Command::Identify(Identify {
                token: self.config.token.clone(),
                properties: self.config.properties.clone(),
                intents: self.config.intents,
                compress: self.config.payload_compression
                    && self.config.compression == Compression::None,
                large_threshold: self.config.large_threshold,
                shard: Some([self.config.shard_id, self.config.shard_count]),
                presence: self.config.presence.clone(),
            });
            self.timers
                .set(Timer::Ready, now + self.config.ready_timeout);
            self.transmit_command(now, &identify);
        }
        self.settle(now);
    }

    /// The identify queue refused this shard its turn: it closes
    /// resumably, tells the user ([`ShardEvent::IdentifyRefused`]) and stays
    /// disconnected until asked to connect again.
    pub fn handle_identify_refused(&mut self, now: Instant, refused: IdentifyRefused) {
        if self.step() == Some(Step::Identifying) {
            tracing::warn!(%refused, "the identify queue refused this shard's turn");
            self.emit(ShardEvent::IdentifyRefused(refused));
            self.disconnect(now, RESUMABLE_CLOSE);
        }
        self.settle(now);
    }

    fn on_dispatch(&mut self, now: Instant, payload: Scanned) {
        let Some(seq) = payload.seq else { return };
        if let Some(session) = &mut self.session {
            session.advance(seq);
        }
        let known = match &payload.event_type {
            Some(std::borrow::Cow::Borrowed(name)) => Some(*name),
            _ => None,
        };
        self.metrics.dispatch(known);
        if let Some(link) = self.link_mut().filter(|link| link.step == Step::Resuming) {
            link.replayed += 1;
        }
        if !matches!(payload.event_type.as_deref(), Some("READY" | "RESUMED")) {
            self.undecodable = 0;
        }
        match payload.event_type.as_deref() {
            Some("READY") => self.on_ready(now, seq, Ready::parse(payload.data(&self.text))),
            Some("RESUMED") => {
                if let Phase::Open(link) = &self.phase {
                    // The count includes RESUMED itself.
                    let replayed = link.replayed.saturating_sub(1);
                    self.in_step(|| tracing::info!(replayed, "RESUMED: the session continues"));
                }
                self.metrics.resumed();
                self.become_active(now);
                self.emit(ShardEvent::Resumed);
            }
            Some("RATE_LIMITED") => {
                if let Some((opcode, retry_after)) = RateLimited::parse(payload.data(&self.text)) {
                    self.emit(ShardEvent::RateLimited {
                        opcode,
                        retry_after,
                    });
                }
            }
            _ => {}
        }
        self.queue(Queued::Dispatch {
            seq,
            event_type: payload.event_type.unwrap_or_default(),
            json: payload.json,
            event: payload.typed,
        });
    }

    fn on_ready(&mut self, now: Instant, seq: u64, ready: Option<Ready>) {
        // A READY without a usable session: start over.
        let Some(Ready {
            session_id,
            mut resume_gateway_url,
            guilds,
        }) = ready
        else {
            return self.close_ourselves(AfterClose::Identify, Cause::BadReady);
        };
        // A resume URL that can never be connected to: resumes go to the
        // gateway URL, which Discord accepts them on.
        if let Err(error) = Endpoint::parse(&resume_gateway_url, Scheme::WebSocket) {
            tracing::warn!(%error, "READY's resume_gateway_url is unusable; resuming on the gateway URL instead");
            resume_gateway_url.clone_from(&self.config.gateway_url);
        }
        self.resume_url_failed = false;
        match Session::new(session_id, seq, resume_gateway_url) {
            Ok(session) => {
                let guilds = guilds.len();
                self.in_step(|| tracing::info!(guilds, "READY: a new session"));
                self.session = Some(session.clone());
                self.become_active(now);
                self.emit(ShardEvent::Ready { session });
            }
            Err(_) => self.close_ourselves(AfterClose::Identify, Cause::BadReady),
        }
    }

    fn become_active(&mut self, now: Instant) {
        self.set_step(Step::Active);
        self.set_span(tracing::Span::none());
        self.timers.stop(Timer::Ready);
        self.backoff.reset();
        self.flush_queued(now);
    }
}
