//! One gateway connection: the protocol as Discord speaks it.
//!
//! A reader task ([`crate::inbound`]) turns the client's frames into
//! [`Inbound`] messages; the session task owns the write half
//! ([`crate::outbound`]) and waits on the reader, the fault channel and its
//! timers at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shardwire_codec::frame::opcode;
use shardwire_codec::{Compression, MessageKind};
use shardwire_corpus::{EventGenerator, Rng, ZlibStreamEncoder, ZstdStreamEncoder, zlib_payload};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};

use crate::config::{KNOWN_INTENTS, PRIVILEGED_INTENTS};
use crate::inbound::{Inbound, MAX_FRAME, read_loop};
use crate::observe::{
    CloseSeen, ClosedBy, CommandSeen, ConnectionSeen, Fault, HeartbeatSeen, IdentifySeen, Listener,
    ResumeOutcome, ResumeSeen, ViolationKind,
};
use crate::outbound::FrameWriter;
use crate::pool::SessionQueue;
use crate::state::{REPLAY_LOG, Session, Shared, lock};

type Io = TokioIo<Upgraded>;

/// The largest payload a client may send.
const MAX_CLIENT_PAYLOAD: usize = 4096;
/// Client payloads allowed per window.
const RATE_LIMIT: usize = 120;
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How long a closing session keeps reading, so the client's unread bytes do
/// not turn the close into a reset that loses the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Members per GUILD_MEMBERS_CHUNK.
const CHUNK_SIZE: usize = 1000;
/// Backlog items (or pool events) sent between two looks at what the
/// client sent.
const BACKLOG_STEP: usize = 32;
/// The close codes after which Discord does not let the session resume.
const SESSION_ENDING_CLOSES: [u16; 8] = [4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014];

/// Outbound work that may be long (a burst, a resume's replay), sent a step
/// at a time so the client's heartbeats are read and acknowledged in
/// between, as Discord does: it reads independently of writing.
enum Pending {
    /// This many generated events.
    Generated(u64),
    /// A logged payload, replayed.
    Replay(Arc<[u8]>),
    /// A dispatch with the session's next seq.
    Dispatch(&'static str, Value),
    /// A fault injected while the backlog was not empty: it waits its turn,
    /// so scripts keep their order.
    Fault(Fault),
}

/// How a session ended, for the close record.
enum End {
    /// The client closed (code, if any).
    Client(Option<u16>),
    /// The simulator closed with this code.
    Server(u16),
    /// The connection dropped.
    Dropped,
}

pub(crate) async fn run(
    socket: Io,
    listener: Listener,
    compression: Compression,
    shared: Arc<Shared>,
) {
    let id = shared.next_connection_id();
    shared.observe(|o| {
        o.connections.push(ConnectionSeen {
            id,
            listener,
            compress: compression.query_value().map(str::to_owned),
            at: Instant::now(),
        });
    });
    let (read, write) = tokio::io::split(socket);
    let (inbound_tx, inbound) = mpsc::channel(64);
    let read_delay = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(read_loop(read, inbound_tx, read_delay.clone()));
    let (faults_tx, faults) = mpsc::unbounded_channel();
    shared.register(id, faults_tx);

    let seed = shared.config.seed ^ id.wrapping_mul(0x9e37_79b9);
    let mut conn = Conn {
        id,
        listener,
        shared: shared.clone(),
        writer: FrameWriter::new(write),
        outbound: Outbound::new(compression),
        rng: Rng::new(seed),
        shard: None,
        session_id: None,
        identified: false,
        zombie: false,
        heartbeat_deadline: Instant::now(),
        received: VecDeque::new(),
        generator: None,
        read_delay,
        backlog: VecDeque::new(),
        pool_queued: None,
    };
    let mut inbound = inbound;
    let end = conn.serve(&mut inbound, faults).await;
    shared.unregister(id);
    let draining = matches!(end, End::Server(_));
    let (by, code) = match end {
        End::Client(code) => (ClosedBy::Client, code),
        End::Server(code) => (ClosedBy::Server, Some(code)),
        End::Dropped => (ClosedBy::Dropped, None),
    };
    let shard = conn.shard.map(|[id, _]| id);
    shared.observe(|o| {
        o.closes.push(CloseSeen {
            connection: id,
            shard,
            by,
            code,
            answered: false,
            at: Instant::now(),
        });
    });
    if draining {
        let answered = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(message) = inbound.recv().await {
                match message {
                    Inbound::Close(_) => return true,
                    Inbound::Gone | Inbound::TooLarge => return false,
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if answered {
            shared.observe(|o| {
                if let Some(close) = o.closes.iter_mut().rev().find(|c| c.connection == id) {
                    close.answered = true;
                }
            });
        }
    }
    reader.abort();
}

/// The outbound compression of one connection.
enum Outbound {
    None { payload_compression: bool },
    Zlib(ZlibStreamEncoder),
    Zstd(Box<ZstdStreamEncoder>),
}

impl Outbound {
    fn new(compression: Compression) -> Self {
        match compression {
            Compression::ZlibStream => Self::Zlib(ZlibStreamEncoder::new()),
            Compression::ZstdStream => match ZstdStreamEncoder::new() {
                Ok(encoder) => Self::Zstd(Box::new(encoder)),
                // zstd fails only without memory; serve uncompressed rather
                // than not at all.
                Err(_) => Self::None {
                    payload_compression: false,
                },
            },
            _ => Self::None {
                payload_compression: false,
            },
        }
    }
}

struct Conn {
    id: u64,
    listener: Listener,
    shared: Arc<Shared>,
    writer: FrameWriter,
    outbound: Outbound,
    rng: Rng,
    shard: Option<[u32; 2]>,
    session_id: Option<String>,
    identified: bool,
    zombie: bool,
    heartbeat_deadline: Instant,
    /// Arrival times of the client's payloads in the rate window.
    received: VecDeque<Instant>,
    generator: Option<EventGenerator>,
    read_delay: Arc<AtomicU64>,
    /// Long outbound work, oldest first.
    backlog: VecDeque<Pending>,
    /// Wakes the connection when a pool event is queued for its session.
    pool_queued: Option<Arc<Notify>>,
}

/// `Err` ends the session the way it says.
type Step = Result<(), End>;

impl Conn {
    fn shard_id(&self) -> Option<u32> {
        self.shard.map(|[id, _]| id)
    }

    fn violation(&self, kind: ViolationKind) {
        self.shared.violation(self.id, self.shard_id(), kind);
    }

    /// Discord takes the token with or without the `Bot ` prefix that HTTP
    /// headers use (twilight-gateway sends it with).
    fn token_matches(&self, token: &str) -> bool {
        token.strip_prefix("Bot ").unwrap_or(token) == self.shared.config.token
    }

    fn heartbeat_timeout(&self) -> Duration {
        let config = &self.shared.config;
        config
            .heartbeat_interval
            .mul_f64(1.0 + config.heartbeat_grace.max(0.0))
    }

    async fn serve(
        &mut self,
        inbound: &mut mpsc::Receiver<Inbound>,
        mut faults: mpsc::UnboundedReceiver<Fault>,
    ) -> End {
        let interval = self.shared.config.heartbeat_interval;
        let hello = json!({"t": null, "s": null, "op": 10, "d": {"heartbeat_interval": interval.as_millis() as u64}});
        if let Err(end) = self.send_json(&hello).await {
            return end;
        }
        self.heartbeat_deadline = Instant::now() + self.heartbeat_timeout();
        let rate = self.shared.config.event_rate;
        let event_every = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        let mut next_event = Instant::now();
        loop {
            let busy = !self.backlog.is_empty();
            let events_due = event_every.is_some() && self.session_id.is_some() && !busy;
            // Pool events go after the backlog: after READY's GUILD_CREATEs
            // (sent before the loop sees the session), after a resume's
            // replay and RESUMED.
            let pool_due = if busy || !self.shared.pool.is_on() {
                None
            } else {
                self.next_pool_due()
            };
            let pool_queued = self.pool_queued.clone();
            // Biased: what the client already sent is handled before any
            // timer, so heartbeats that arrived while a long write blocked
            // the session are not mistaken for missed ones (Discord reads
            // independently of writing).
            let step = tokio::select! {
                biased;
                message = inbound.recv() => match message {
                    Some(message) => self.on_inbound(message).await,
                    None => Err(End::Dropped),
                },
                Some(fault) = faults.recv() => {
                    if busy {
                        self.backlog.push_back(Pending::Fault(fault));
                        Ok(())
                    } else {
                        self.on_fault(fault).await
                    }
                }
                () = sleep_until(self.heartbeat_deadline) => {
                    self.violation(ViolationKind::MissedHeartbeat);
                    self.close(4009, "Session timed out").await
                }
                () = std::future::ready(()), if busy => self.backlog_step().await,
                () = sleep_until(pool_due.unwrap_or(self.heartbeat_deadline)), if pool_due.is_some() => {
                    self.send_due_pool_events().await
                }
                // A pool event was queued: look at the queue again.
                () = notified(pool_queued.as_deref()) => Ok(()),
                () = sleep_until(next_event), if events_due => {
                    // Keep the average rate; after a long stall, do not
                    // catch up with a burst of more than a second's worth.
                    let every = event_every.unwrap_or(Duration::MAX);
                    let now = Instant::now();
                    next_event = (next_event + every).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
                    self.send_generated_event().await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_inbound(&mut self, message: Inbound) -> Step {
        match message {
            Inbound::Message(bytes) => self.on_message(&bytes).await,
            Inbound::Reply { opcode, payload } => {
                self.writer
                    .frame(true, opcode, &payload)
                    .await
                    .map_err(|_| End::Dropped)?;
                self.writer.flush().await.map_err(|_| End::Dropped)
            }
            Inbound::Close(code) => {
                if matches!(code, Some(1000 | 1001)) {
                    // Discord ends the session on these codes.
                    self.forget_session();
                }
                Err(End::Client(code))
            }
            Inbound::TooLarge => {
                self.violation(ViolationKind::PayloadTooLarge { size: MAX_FRAME });
                self.close(4002, "Payload too large").await
            }
            Inbound::Gone => Err(End::Dropped),
        }
    }

    async fn on_message(&mut self, bytes: &[u8]) -> Step {
        let now = Instant::now();
        while self
            .received
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.received.pop_front();
        }
        self.received.push_back(now);
        if self.received.len() > RATE_LIMIT {
            self.violation(ViolationKind::RateLimited);
            return self.close(4008, "Rate limited.").await;
        }
        if bytes.len() > MAX_CLIENT_PAYLOAD {
            self.violation(ViolationKind::PayloadTooLarge { size: bytes.len() });
            return self.close(4002, "Error while decoding payload.").await;
        }
        let Ok(payload) = serde_json::from_slice::<Value>(bytes) else {
            self.violation(ViolationKind::DecodeError);
            return self.close(4002, "Error while decoding payload.").await;
        };
        let Some(op) = payload.get("op").and_then(Value::as_u64) else {
            self.violation(ViolationKind::DecodeError);
            return self.close(4002, "Error while decoding payload.").await;
        };
        let d = payload.get("d").cloned().unwrap_or(Value::Null);
        match op {
            1 => self.on_heartbeat(&d).await,
            2 => self.on_identify(&d).await,
            6 => self.on_resume(&d).await,
            3 | 4 | 8 | 31 | 43 if self.session_id.is_none() => {
                self.violation(ViolationKind::NotAuthenticated);
                self.close(4003, "Not authenticated.").await
            }
            3 | 4 | 8 | 31 | 43 => {
                self.shared.observe(|o| {
                    o.commands.push(CommandSeen {
                        connection: self.id,
                        shard: self.shard.map(|[id, _]| id),
                        op,
                        d: d.clone(),
                        at: now,
                    });
                });
                match op {
                    4 => self.on_voice_state(&d).await,
                    8 => self.on_request_members(&d).await,
                    31 => self.on_soundboard(&d).await,
                    43 => self.on_channel_info(&d).await,
                    _ => Ok(()),
                }
            }
            other => {
                self.violation(ViolationKind::UnknownOpcode { op: other });
                self.close(4001, "Unknown opcode.").await
            }
        }
    }

    async fn on_heartbeat(&mut self, d: &Value) -> Step {
        let seq = d.as_u64();
        self.shared.observe(|o| {
            o.heartbeats.push(HeartbeatSeen {
                connection: self.id,
                shard: self.shard.map(|[id, _]| id),
                seq,
                at: Instant::now(),
            });
        });
        self.heartbeat_deadline = Instant::now() + self.heartbeat_timeout();
        if self.zombie {
            return Ok(());
        }
        self.send_json(&json!({"op": 11, "d": null})).await
    }

    async fn on_identify(&mut self, d: &Value) -> Step {
        let request = IdentifyRequest::parse(d);
        let verdict = self.validate_identify(&request);
        self.shared.observe(|o| {
            o.identifies.push(IdentifySeen {
                connection: self.id,
                shard: request.shard.unwrap_or([0, 0]),
                intents: request.intents,
                compress: request.compress,
                at: Instant::now(),
                accepted: verdict.is_ok(),
            });
        });
        match verdict {
            Ok(shard) => self.start_session(shard, request.compress).await,
            Err(Refusal::Close(kind, code, reason)) => {
                self.violation(kind);
                self.close(code, reason).await
            }
            Err(Refusal::InvalidSession(kind)) => {
                self.violation(kind);
                self.send_json(&json!({"op": 9, "d": false})).await
            }
        }
    }

    /// Whether Discord would take this Identify: the shard it may start,
    /// or how it refuses. Takes an identify slot and a session start when
    /// it accepts.
    fn validate_identify(&mut self, request: &IdentifyRequest<'_>) -> Result<[u32; 2], Refusal> {
        if self.identified || self.session_id.is_some() {
            return Err(Refusal::Close(
                ViolationKind::AlreadyAuthenticated,
                4005,
                "Already authenticated.",
            ));
        }
        if !self.token_matches(request.token) {
            return Err(Refusal::Close(
                ViolationKind::AuthenticationFailed,
                4004,
                "Authentication failed.",
            ));
        }
        let Some([shard_id, shard_count]) =
            request.shard.filter(|[id, count]| *count > 0 && id < count)
        else {
            return Err(Refusal::Close(
                ViolationKind::InvalidShard,
                4010,
                "Invalid shard.",
            ));
        };
        let unknown = request.intents & !KNOWN_INTENTS;
        if unknown != 0 {
            return Err(Refusal::Close(
                ViolationKind::InvalidIntents { bits: unknown },
                4013,
                "Invalid intent(s).",
            ));
        }
        let disallowed =
            request.intents & self.shared.config.disallowed_intents & PRIVILEGED_INTENTS;
        if disallowed != 0 {
            return Err(Refusal::Close(
                ViolationKind::DisallowedIntents { bits: disallowed },
                4014,
                "Disallowed intent(s).",
            ));
        }
        let max_guilds = self.shared.max_guilds_per_shard.load(Ordering::Relaxed);
        let guilds = self.shared.guilds_owned([shard_id, shard_count]);
        if max_guilds > 0 && guilds > max_guilds as usize {
            return Err(Refusal::Close(
                ViolationKind::ShardingRequired { guilds },
                4011,
                "Sharding required.",
            ));
        }
        if let Err(bucket) = self.shared.take_identify_slot(shard_id) {
            return Err(Refusal::InvalidSession(ViolationKind::IdentifyTooFast {
                bucket,
            }));
        }
        if !self.shared.take_session_start() {
            return Err(Refusal::Close(
                ViolationKind::SessionStartLimit,
                4004,
                "Authentication failed.",
            ));
        }
        Ok([shard_id, shard_count])
    }

    /// A new session for an accepted Identify: READY, a GUILD_CREATE per
    /// guild, and the flood the configuration asks for.
    async fn start_session(&mut self, shard: [u32; 2], compress: bool) -> Step {
        let [shard_id, shard_count] = shard;
        self.identified = true;
        self.shard = Some(shard);
        self.shared.set_shard(self.id, shard_id);
        if compress
            && let Outbound::None {
                payload_compression,
            } = &mut self.outbound
        {
            *payload_compression = true;
        }
        let session_id = self.shared.new_session_id();
        let guild_ids = if self.shared.pool.is_on() {
            self.shared.pool.owned_by(shard)
        } else {
            guild_ids_for(&self.shared, shard_id, shard_count)
        };
        let pool = SessionQueue::default();
        self.pool_queued = Some(pool.queued.clone());
        // From here on the pool's events for its guilds queue up for it.
        lock(&self.shared.sessions).insert(
            session_id.clone(),
            Session {
                shard,
                seq: 0,
                log: VecDeque::new(),
                guild_ids: guild_ids.clone(),
                pool,
            },
        );
        self.session_id = Some(session_id.clone());
        self.generator = Some(EventGenerator::with_guild_ids(
            self.shared.config.seed ^ u64::from(shard_id),
            guild_ids.clone(),
        ));
        let ready = json!({
            "v": 10,
            "user_settings": {},
            "user": {
                "id": "1000000000000000001", "username": "shardwire-sim", "global_name": null,
                "discriminator": "0", "avatar": null, "bot": true, "verified": true,
                "mfa_enabled": false, "flags": 0, "email": null,
            },
            "guilds": guild_ids.iter().map(|id| json!({"id": id, "unavailable": true})).collect::<Vec<_>>(),
            "session_type": "normal",
            "session_id": session_id,
            "resume_gateway_url": self.shared.config.resume_url_override.as_deref().unwrap_or(&self.shared.resume_url),
            "shard": [shard_id, shard_count],
            "application": {"id": "1000000000000000001", "flags": 0},
            "_trace": ["shardwire-sim"],
        });
        self.dispatch("READY", &ready).await?;
        let members = self.shared.config.members_per_guild;
        for guild in guild_ids {
            let d = self.generator_mut().guild_create(&guild, members);
            self.dispatch("GUILD_CREATE", &d).await?;
        }
        let flood = self.shared.config.flood_after_ready;
        if flood > 0 {
            self.flood(flood).await?;
        }
        Ok(())
    }

    fn generator_mut(&mut self) -> &mut EventGenerator {
        let seed = self.shared.config.seed;
        self.generator
            .get_or_insert_with(|| EventGenerator::new(seed, 1))
    }

    async fn on_resume(&mut self, d: &Value) -> Step {
        let token = d.get("token").and_then(Value::as_str).unwrap_or("");
        let session_id = d
            .get("session_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let seq = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let record = |outcome: ResumeOutcome, conn: &Conn| {
            conn.shared.observe(|o| {
                o.resumes.push(ResumeSeen {
                    connection: conn.id,
                    listener: conn.listener,
                    session_id: session_id.clone(),
                    seq,
                    outcome,
                    at: Instant::now(),
                });
            });
        };
        if self.identified || self.session_id.is_some() {
            self.violation(ViolationKind::AlreadyAuthenticated);
            return self.close(4005, "Already authenticated.").await;
        }
        // Look the session up; take what the replay needs and let go.
        let found = {
            let sessions = lock(&self.shared.sessions);
            sessions.get(&session_id).map(|session| {
                let oldest = session.log.front().map_or(session.seq + 1, |(s, _)| *s);
                let replay: Vec<Arc<[u8]>> = session
                    .log
                    .iter()
                    .filter(|(s, _)| *s > seq)
                    .map(|(_, p)| p.clone())
                    .collect();
                (
                    session.shard,
                    session.seq,
                    oldest,
                    replay,
                    session.guild_ids.clone(),
                    session.pool.queued.clone(),
                )
            })
        };
        let Some((shard, server_seq, oldest, replay, guild_ids, pool_queued)) =
            found.filter(|_| self.token_matches(token))
        else {
            record(ResumeOutcome::InvalidSession, self);
            return self.send_json(&json!({"op": 9, "d": false})).await;
        };
        if seq > server_seq {
            record(ResumeOutcome::InvalidSeq, self);
            self.shared.end_session(&session_id);
            return self.close(4007, "Invalid seq.").await;
        }
        if seq + 1 < oldest {
            // Too far behind: the missed events are gone.
            record(ResumeOutcome::InvalidSession, self);
            return self.send_json(&json!({"op": 9, "d": false})).await;
        }
        record(
            ResumeOutcome::Resumed {
                replayed: replay.len() as u64,
            },
            self,
        );
        self.shard = Some(shard);
        self.shared.set_shard(self.id, shard[0]);
        self.session_id = Some(session_id);
        self.pool_queued = Some(pool_queued);
        self.generator = Some(EventGenerator::with_guild_ids(
            self.shared.config.seed ^ u64::from(shard[0]) ^ server_seq,
            guild_ids,
        ));
        self.backlog.extend(replay.into_iter().map(Pending::Replay));
        self.backlog.push_back(Pending::Dispatch(
            "RESUMED",
            json!({"_trace": ["shardwire-sim"]}),
        ));
        Ok(())
    }

    /// Sends up to [`BACKLOG_STEP`] items of the backlog.
    async fn backlog_step(&mut self) -> Step {
        for _ in 0..BACKLOG_STEP {
            let Some(item) = self.backlog.pop_front() else {
                break;
            };
            match item {
                Pending::Generated(count) => {
                    if count > 1 {
                        self.backlog.push_front(Pending::Generated(count - 1));
                    }
                    self.send_generated_event().await?;
                }
                Pending::Replay(payload) => self.send_payload(&payload).await?,
                Pending::Dispatch(name, d) => self.dispatch(name, &d).await?,
                Pending::Fault(fault) => {
                    self.on_fault(fault).await?;
                    // A fault may close: stop at it so the step ends there.
                    break;
                }
            }
        }
        // Let the client's side run: in tests it shares the runtime, and
        // writes into a socket with room never make this task wait.
        tokio::task::yield_now().await;
        Ok(())
    }

    async fn on_voice_state(&mut self, d: &Value) -> Step {
        let guild_id = d.get("guild_id").cloned().unwrap_or(Value::Null);
        let channel_id = d.get("channel_id").cloned().unwrap_or(Value::Null);
        let session = self.session_id.clone().unwrap_or_default();
        let state = json!({
            "guild_id": guild_id, "channel_id": channel_id, "user_id": "1000000000000000001",
            "session_id": session, "deaf": false, "mute": false,
            "self_deaf": d.get("self_deaf").and_then(Value::as_bool).unwrap_or(false),
            "self_mute": d.get("self_mute").and_then(Value::as_bool).unwrap_or(false),
            "self_video": false, "suppress": false, "request_to_speak_timestamp": null,
        });
        self.dispatch("VOICE_STATE_UPDATE", &state).await?;
        let server =
            json!({"token": "sim-voice-token", "guild_id": guild_id, "endpoint": "127.0.0.1:1"});
        self.dispatch("VOICE_SERVER_UPDATE", &server).await
    }

    async fn on_request_members(&mut self, d: &Value) -> Step {
        let guild_id = d
            .get("guild_id")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_owned();
        let nonce = d.get("nonce").cloned();
        let limit = d.get("limit").and_then(Value::as_u64).unwrap_or(0) as usize;
        let wanted: Vec<String> = match d.get("user_ids") {
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let total = if wanted.is_empty() {
            let members = self.shared.config.members_per_guild;
            if limit == 0 {
                members
            } else {
                limit.min(members)
            }
        } else {
            wanted.len()
        };
        let guild = self.generator_mut().guild_create(&guild_id, total.max(1));
        let mut members: Vec<Value> = guild["members"].as_array().cloned().unwrap_or_default();
        members.truncate(total);
        for (member, id) in members.iter_mut().zip(&wanted) {
            member["user"]["id"] = Value::from(id.as_str());
        }
        let chunks: Vec<&[Value]> = if members.is_empty() {
            vec![&[]]
        } else {
            members.chunks(CHUNK_SIZE).collect()
        };
        let count = chunks.len();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut d = json!({
                "guild_id": guild_id, "members": chunk, "chunk_index": index, "chunk_count": count,
            });
            if let Some(nonce) = &nonce {
                d["nonce"] = nonce.clone();
            }
            self.dispatch("GUILD_MEMBERS_CHUNK", &d).await?;
        }
        Ok(())
    }

    async fn on_soundboard(&mut self, d: &Value) -> Step {
        let ids: Vec<Value> = d
            .get("guild_ids")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for guild_id in ids {
            self.dispatch(
                "SOUNDBOARD_SOUNDS",
                &json!({"guild_id": guild_id, "soundboard_sounds": []}),
            )
            .await?;
        }
        Ok(())
    }

    async fn on_channel_info(&mut self, d: &Value) -> Step {
        let guild_id = d.get("guild_id").cloned().unwrap_or(Value::Null);
        self.dispatch(
            "CHANNEL_INFO",
            &json!({"guild_id": guild_id, "channels": []}),
        )
        .await
    }

    async fn on_fault(&mut self, fault: Fault) -> Step {
        tracing::debug!(connection = self.id, ?fault, "injecting a fault");
        match fault {
            Fault::Reconnect => self.send_json(&json!({"op": 7, "d": null})).await,
            Fault::InvalidSession { resumable } => {
                if !resumable {
                    self.forget_session();
                }
                self.send_json(&json!({"op": 9, "d": resumable})).await
            }
            Fault::RequestHeartbeat => self.send_json(&json!({"op": 1, "d": null})).await,
            Fault::Close(code) => self.close(code, "Simulated close.").await,
            Fault::Zombie => {
                self.zombie = true;
                Ok(())
            }
            Fault::CorruptCompressed => {
                let (bytes, kind): (Vec<u8>, MessageKind) = match self.outbound {
                    // An invalid deflate block type (11), then the sync suffix
                    // so the client takes it as a whole payload.
                    Outbound::Zlib(_) => (
                        vec![0x07, 0xff, 0x13, 0x37, 0x00, 0x00, 0xff, 0xff],
                        MessageKind::Binary,
                    ),
                    Outbound::Zstd(_) => (vec![0xff; 24], MessageKind::Binary),
                    Outbound::None { .. } => (b"{\"op\":0,\"d\":".to_vec(), MessageKind::Text),
                };
                self.write_message(&bytes, kind).await
            }
            Fault::DropTcp => Err(End::Dropped),
            Fault::HugeGuildCreate { members } => {
                let guild_id = format!(
                    "{}",
                    (u64::from(self.shard_id().unwrap_or(0)) + 1) << 22 | 0x3f_ffff
                );
                let d = self.generator_mut().guild_create(&guild_id, members);
                self.dispatch("GUILD_CREATE", &d).await
            }
            Fault::ReadSlowly(delay) => {
                self.read_delay
                    .store(delay.as_millis() as u64, Ordering::Relaxed);
                Ok(())
            }
            Fault::Burst(count) => {
                // In front: a fault taken from the backlog was its first item.
                if count > 0 {
                    self.backlog.push_front(Pending::Generated(count));
                }
                Ok(())
            }
            Fault::Flood(count) => self.flood(count).await,
            Fault::Dispatch { event_type, d } => self.dispatch(&event_type, &d).await,
            Fault::RawDispatch { event_type, d } => {
                self.dispatch_text(&event_type, d.as_bytes()).await
            }
        }
    }

    /// Sends `count` events from the shared pre-encoded corpus, as fast as
    /// the client reads them.
    async fn flood(&mut self, count: u64) -> Step {
        let Some(session_id) = self.session_id.clone() else {
            return Ok(());
        };
        let first = {
            let sessions = lock(&self.shared.sessions);
            match sessions.get(&session_id) {
                Some(session) => session.seq + 1,
                None => return Ok(()),
            }
        };
        let zstd = matches!(self.outbound, Outbound::Zstd(_));
        let Some(flood) = self.shared.flood(first, count, zstd) else {
            return Err(End::Dropped);
        };
        {
            let mut sessions = lock(&self.shared.sessions);
            if let Some(session) = sessions.get_mut(&session_id) {
                session.seq = first + count - 1;
                for (index, payload) in flood.payloads.iter().enumerate() {
                    session
                        .log
                        .push_back((first + index as u64, payload.clone()));
                }
                while session.log.len() > REPLAY_LOG {
                    session.log.pop_front();
                }
            }
        }
        match self.outbound {
            Outbound::Zlib(_) => {
                for message in &flood.zlib {
                    self.write_unflushed(message, MessageKind::Binary).await?;
                }
                // The client's window now holds the flood; the live encoder's
                // does not. Continue with a fresh raw stream.
                self.outbound = Outbound::Zlib(ZlibStreamEncoder::continuation());
                self.writer.flush().await.map_err(|_| End::Dropped)
            }
            Outbound::None {
                payload_compression: false,
            } => {
                for payload in &flood.payloads {
                    self.write_unflushed(payload, self.json_kind()).await?;
                }
                self.writer.flush().await.map_err(|_| End::Dropped)
            }
            Outbound::Zstd(_) => {
                // The flood is a frame of its own: end the connection's
                // frame in front of it (the encoder then starts a new one).
                let mut end = match &mut self.outbound {
                    Outbound::Zstd(encoder) => encoder.end_frame().map_err(|_| End::Dropped)?,
                    _ => Vec::new(),
                };
                for (index, message) in flood.zstd.iter().enumerate() {
                    if index == 0 {
                        end.extend_from_slice(message);
                        self.write_unflushed(&end, MessageKind::Binary).await?;
                    } else {
                        self.write_unflushed(message, MessageKind::Binary).await?;
                    }
                }
                self.writer.flush().await.map_err(|_| End::Dropped)
            }
            Outbound::None {
                payload_compression: true,
            } => {
                for payload in &flood.payloads {
                    self.send_payload(payload).await?;
                }
                Ok(())
            }
        }
    }

    fn forget_session(&mut self) {
        if let Some(session) = self.session_id.take() {
            self.shared.end_session(&session);
        }
    }

    async fn send_generated_event(&mut self) -> Step {
        if self.session_id.is_none() {
            return Ok(());
        }
        let (name, mut d) = self.generator_mut().next_event();
        if self.shared.config.stamp_events {
            stamp(&mut d);
        }
        self.dispatch(name, &d).await
    }

    /// When the oldest pool event queued for the session may be sent.
    fn next_pool_due(&self) -> Option<Instant> {
        let session_id = self.session_id.as_ref()?;
        let sessions = lock(&self.shared.sessions);
        Some(sessions.get(session_id)?.pool.events.front()?.due)
    }

    /// Sends up to [`BACKLOG_STEP`] of the session's due pool events, in
    /// order. Each is numbered and logged as it leaves the queue, so one
    /// whose write fails is replayed on resume.
    async fn send_due_pool_events(&mut self) -> Step {
        let Some(session_id) = self.session_id.clone() else {
            return Ok(());
        };
        for _ in 0..BACKLOG_STEP {
            let payload = {
                let mut sessions = lock(&self.shared.sessions);
                let Some(session) = sessions.get_mut(&session_id) else {
                    break;
                };
                let Some(event) = session.pool.pop_due(Instant::now()) else {
                    break;
                };
                self.shared.pool.sent(&event);
                session.log_dispatch(event.name, &event.d)
            };
            self.send_payload(&payload).await?;
        }
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Sends a dispatch with the session's next sequence number, and logs it
    /// for replay.
    async fn dispatch(&mut self, name: &str, d: &Value) -> Step {
        let d = serde_json::to_vec(d).unwrap_or_default();
        self.dispatch_text(name, &d).await
    }

    /// As [`Conn::dispatch`], with `d` as text, written as it is.
    async fn dispatch_text(&mut self, name: &str, d: &[u8]) -> Step {
        let Some(session_id) = self.session_id.clone() else {
            return Ok(());
        };
        let payload = {
            let mut sessions = lock(&self.shared.sessions);
            let Some(session) = sessions.get_mut(&session_id) else {
                return Ok(());
            };
            session.log_dispatch(name, d)
        };
        self.send_payload(&payload).await
    }

    async fn send_json(&mut self, value: &Value) -> Step {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.send_payload(&bytes).await
    }

    /// Compresses one payload as the connection asks and writes it.
    async fn send_payload(&mut self, json: &[u8]) -> Step {
        let styled;
        let json = match crate::style::restyle(json, self.shared.config.payload_style) {
            Some(text) => {
                styled = text;
                &styled[..]
            }
            None => json,
        };
        let split = self.shared.config.split_payloads;
        match &mut self.outbound {
            Outbound::Zlib(encoder) => {
                let bytes = encoder.encode(json);
                if split {
                    let pieces = split_points(&mut self.rng, &bytes);
                    let mut start = 0;
                    for end in pieces {
                        self.write_message(&bytes[start..end], MessageKind::Binary)
                            .await?;
                        start = end;
                    }
                    Ok(())
                } else {
                    self.write_message(&bytes, MessageKind::Binary).await
                }
            }
            Outbound::Zstd(encoder) => match encoder.encode(json) {
                Ok(bytes) => self.write_message(&bytes, MessageKind::Binary).await,
                Err(_) => Err(End::Dropped),
            },
            Outbound::None {
                payload_compression: true,
            } if json.starts_with(br#"{"t":""#) => {
                let bytes = zlib_payload(json);
                self.write_message(&bytes, MessageKind::Binary).await
            }
            Outbound::None { .. } => self.write_message(json, self.json_kind()).await,
        }
    }

    /// The frame type uncompressed JSON goes in.
    fn json_kind(&self) -> MessageKind {
        if self.shared.config.binary_json {
            MessageKind::Binary
        } else {
            MessageKind::Text
        }
    }

    /// Writes one WebSocket message, in several frames if so configured, and
    /// flushes it to the socket.
    async fn write_message(&mut self, bytes: &[u8], kind: MessageKind) -> Step {
        self.write_unflushed(bytes, kind).await?;
        self.writer.flush().await.map_err(|_| End::Dropped)
    }

    /// Writes one message into the write buffer.
    async fn write_unflushed(&mut self, bytes: &[u8], kind: MessageKind) -> Step {
        let written = if self.shared.config.fragment_frames && bytes.len() > 1 {
            let cut = 1 + self.rng.below(bytes.len() as u64 - 1) as usize;
            let first = self.writer.frame(false, kind.opcode(), &bytes[..cut]).await;
            match first {
                Ok(()) => {
                    self.writer
                        .frame(true, opcode::CONTINUATION, &bytes[cut..])
                        .await
                }
                Err(error) => Err(error),
            }
        } else {
            self.writer.frame(true, kind.opcode(), bytes).await
        };
        written.map_err(|_| End::Dropped)
    }

    /// Closes with `code`, ending the session first if the code is one
    /// Discord ends it with.
    async fn close(&mut self, code: u16, reason: &str) -> Step {
        if SESSION_ENDING_CLOSES.contains(&code) {
            self.forget_session();
        }
        let _ = self.writer.close(code, reason.as_bytes()).await;
        let _ = self.writer.flush().await;
        Err(End::Server(code))
    }
}

/// Adds `"sent_at_ns"`, wall-clock nanoseconds now, to an event's `d`:
/// comparable across processes on one machine, a client subtracts it from
/// its own clock.
pub(crate) fn stamp(d: &mut Value) {
    if let Some(object) = d.as_object_mut() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        object.insert("sent_at_ns".into(), Value::from(now));
    }
}

/// Completes when `notify` is notified; never without one.
async fn notified(notify: Option<&Notify>) {
    match notify {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Where to cut one compressed payload into messages: ends of pieces, the
/// last being `bytes.len()`. Sometimes a 1 to 3 byte tail; never right after
/// bytes `00 00 ff ff` inside the payload, which no client could tell from
/// the payload's end.
fn split_points(rng: &mut Rng, bytes: &[u8]) -> Vec<usize> {
    let len = bytes.len();
    let mut cuts: Vec<usize> = Vec::new();
    if len > 4 {
        if rng.below(2) == 0 {
            cuts.push(len - 1 - rng.below(3) as usize);
        }
        for _ in 0..rng.below(3) {
            cuts.push(1 + rng.below(len as u64 - 1) as usize);
        }
    }
    cuts.retain(|&cut| cut > 0 && cut < len && !bytes[..cut].ends_with(&[0, 0, 0xff, 0xff]));
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(len);
    cuts
}

/// Guild ids that route to `shard` of `count` by `(id >> 22) % count`.
fn guild_ids_for(shared: &Shared, shard: u32, count: u32) -> Vec<String> {
    let base: u64 = 1_000_000_000_000;
    (0..u64::from(shared.config.guilds_per_shard))
        .map(|index| {
            let mut timestamp = base + index * u64::from(count);
            timestamp += (u64::from(shard) + u64::from(count) - timestamp % u64::from(count))
                % u64::from(count);
            ((timestamp << 22) | (shared.config.seed & 0x3f_ffff)).to_string()
        })
        .collect()
}

/// What an Identify asked for (missing fields read as Discord's defaults or
/// as nothing).
struct IdentifyRequest<'a> {
    token: &'a str,
    intents: u64,
    compress: bool,
    /// `None` when `shard` is there but not two integers.
    shard: Option<[u32; 2]>,
}

impl<'a> IdentifyRequest<'a> {
    fn parse(d: &'a Value) -> Self {
        let shard = match d.get("shard") {
            None | Some(Value::Null) => Some([0, 1]),
            Some(Value::Array(pair)) if pair.len() == 2 => {
                match (pair[0].as_u64(), pair[1].as_u64()) {
                    (Some(id), Some(count)) => Some([id as u32, count as u32]),
                    _ => None,
                }
            }
            Some(_) => None,
        };
        Self {
            token: d.get("token").and_then(Value::as_str).unwrap_or(""),
            intents: d.get("intents").and_then(Value::as_u64).unwrap_or(0),
            compress: d.get("compress").and_then(Value::as_bool).unwrap_or(false),
            shard,
        }
    }
}

/// How the gateway refuses an Identify.
enum Refusal {
    /// A close with this code and reason.
    Close(ViolationKind, u16, &'static str),
    /// An Invalid Session (`false`).
    InvalidSession(ViolationKind),
}
