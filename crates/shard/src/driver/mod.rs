//! The tokio driver: runs a [`ShardMachine`] on a real WebSocket.
//!
//! One task per shard owns the machine and the socket. It waits on the
//! socket, the connection being opened, the machine's deadline, the
//! identify queue and the user's requests at once. Reads go straight into
//! the connection's frame buffer, and each message is handed to the
//! machine where it was received: no copy, no allocation, and one wake-up
//! for every message a read brought in. A read is a single `poll_read`, so
//! choosing another branch never cancels anything half-done. The task
//! carries out the machine's orders and frames and forwards events to the
//! [`Shard`] handle in order, with no task spawned per event.
//!
//! The files: this one (the task's loop), `handle` (the user's side:
//! [`Shard`], [`ShardSender`], [`EventSink`] and [`SinkEvents`]), `delivery`
//! (events held for the consumer and handed over in batches, each told to
//! the machine as delivered) and `socket` (the connection:
//! the shard's own handshake, reads into the codec's frame buffer, writes
//! of the client frames the codec encodes).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use shardwire_codec::frame::{ClientFrame, Frame as Received, FrameError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::delivery::{Pending, deliver};
use self::handle::{Control, Output, Status, lock};
pub use self::handle::{EventSink, Shard, ShardSender, SinkEvents, Tap};
use self::socket::{Socket, connect};
use crate::outgoing::{Outgoing, Repr};
use crate::{IdentifyQueue, IdentifyRefused, Order, SendError, ShardMachine, ShardState};

mod delivery;
mod handle;
mod socket;

/// Events handed to the consumer at a time while a read is taken apart,
/// before the task lets it run, or fewer when their JSON reaches
/// [`HANDOVER_BYTES`]. Far fewer than a read brings in (hundreds), so the
/// consumer takes events while they are still in the core's cache; enough
/// that a task sharing the runtime with a fast sender keeps up.
const HANDOVER_BATCH: usize = 64;
/// The JSON handed to the consumer at a time. Every busy shard on a thread
/// hands over this much before a consumer's turn comes round, so it is
/// kept small: with 16 busy shards on one thread, alternating runs against
/// one simulator cost 3.69 s of CPU per million events with batches of 64
/// events (about 42 KiB of JSON), 2.98 s with 16 events and 2.77 s with
/// 16 KiB (README, "Benchmarks").
const HANDOVER_BYTES: usize = 16 * 1024;
/// Events held for a consumer that lags. The shard keeps reading (it must
/// see heartbeat ACKs, or it would take its own connection for a zombie)
/// and holds events up to this many, and up to
/// [`ShardConfig::max_pending_bytes`] of them; past either, it stops reading
/// until the consumer catches up, which a consumer that stops for good turns
/// into a zombie connection and a resume (which loses nothing).
const PENDING_LIMIT: usize = 100_000;

type Turn = Pin<Box<dyn Future<Output = Result<(), IdentifyRefused>> + Send>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Socket, String>> + Send>>;

/// What woke the shard's task.
enum Wake {
    Delivered,
    ConsumerGone,
    /// Bytes came in (or a whole frame was already buffered); `false` when
    /// the connection ended.
    Readable(bool),
    Turn(Result<(), IdentifyRefused>),
    Connected(Result<Socket, String>),
    Timer,
    Control(Control),
}

struct Task {
    machine: ShardMachine,
    queue: Arc<dyn IdentifyQueue>,
    status: Arc<Mutex<Status>>,
    out: Output,
    socket: Option<Socket>,
    /// The connection being opened.
    connecting: Option<Connecting>,
    turn: Option<Turn>,
    /// Events the consumer has not taken yet.
    pending: Pending,
    max_pending_bytes: usize,
    /// See [`ShardConfig::release_memory`].
    release_memory: bool,
    /// See [`ShardConfig::max_payload_bytes`]: larger frames are refused.
    max_message: usize,
    /// The machine's next deadline, and the timer set for it.
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
    /// Reading is paused for the consumer (see [`Task::reading`]).
    paused: bool,
    /// The state and the count of heartbeat ACKs last written to the
    /// status (see [`Task::flush`]).
    published: Option<(ShardState, u64)>,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Task {
    /// Starts the task of a shard whose handle reads `status` and sends
    /// `control`.
    pub(super) fn spawn(
        machine: ShardMachine,
        queue: Arc<dyn IdentifyQueue>,
        status: Arc<Mutex<Status>>,
        out: Output,
        control: mpsc::UnboundedReceiver<Control>,
    ) {
        let config = machine.config();
        let span = tracing::info_span!("shard", id = config.shard_id, count = config.shard_count);
        let task = Self {
            max_pending_bytes: config.max_pending_bytes,
            release_memory: config.release_memory,
            max_message: config.max_payload_bytes,
            machine,
            queue,
            status,
            out,
            socket: None,
            connecting: None,
            turn: None,
            pending: Pending::default(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
            paused: false,
            published: None,
        };
        tokio::spawn(tracing::Instrument::instrument(task.run(control), span));
    }

    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        self.machine.connect(now());
        loop {
            self.flush().await;
            self.collect();
            let deadline = self.machine.poll_timeout().map(Instant::from_std);
            // One timer for the task's life, moved only when the deadline
            // does: a new timer per message would register with the time
            // driver (and often wake it) every time.
            if deadline != self.timer_at {
                if let Some(deadline) = deadline {
                    self.timer.as_mut().reset(deadline);
                }
                self.timer_at = deadline;
            }
            let timing = self.timer_at.is_some();
            // Stop reading while the consumer is far behind (as the machine
            // allows); timers and heartbeats go on.
            let reading = self.reading();
            let metrics = self.machine.metrics();
            metrics.held(self.pending.len(), self.pending.bytes);
            if self.paused == reading {
                self.paused = !reading;
                if self.paused {
                    metrics.reading_paused();
                }
            }
            let has_pending = !self.pending.is_empty();
            let wake = {
                let readable = std::future::poll_fn(|cx| {
                    match self.socket.as_mut().and_then(|s| s.reader.as_mut()) {
                        Some(reader) => reader.poll_fill(cx),
                        None => Poll::Pending,
                    }
                });
                let turn = async {
                    match &mut self.turn {
                        Some(turn) => turn.await,
                        None => std::future::pending().await,
                    }
                };
                let connected = async {
                    match &mut self.connecting {
                        Some(connecting) => connecting.await,
                        None => std::future::pending().await,
                    }
                };
                let delivering = deliver(&self.out, &mut self.pending, &mut self.machine);
                tokio::select! {
                    delivered = delivering, if has_pending => match delivered {
                        Ok(()) => Wake::Delivered,
                        Err(()) => Wake::ConsumerGone,
                    },
                    read = readable, if reading => Wake::Readable(read.unwrap_or(false)),
                    result = turn => Wake::Turn(result),
                    result = connected => Wake::Connected(result),
                    () = self.timer.as_mut(), if timing => Wake::Timer,
                    request = control.recv() => match request {
                        Some(Control::Stop) | None => Wake::ConsumerGone,
                        Some(request) => Wake::Control(request),
                    },
                }
            };
            match wake {
                Wake::Delivered => self.hand_over(),
                Wake::Readable(true) => self.take_frames().await,
                Wake::Readable(false) => self.closed(None, ""),
                Wake::Turn(result) => {
                    self.turn = None;
                    match result {
                        Ok(()) => self.machine.handle_identify_turn(now()),
                        Err(refused) => self.machine.handle_identify_refused(now(), refused),
                    }
                }
                Wake::Connected(result) => {
                    self.connecting = None;
                    match result {
                        Ok(socket) => {
                            self.socket = Some(socket);
                            self.machine.handle_connected(now());
                        }
                        Err(error) => self.machine.handle_connect_failed(now(), &error),
                    }
                }
                Wake::Timer => self.machine.handle_timeout(now()),
                Wake::Control(request) => self.control(request),
                // The handle is gone: close resumably and stop.
                Wake::ConsumerGone => {
                    self.machine.disconnect(now(), crate::RESUMABLE_CLOSE);
                    self.flush().await;
                    break;
                }
            }
        }
        self.socket = None;
        self.machine.metrics().stopped();
    }

    /// Whether to read: past the limits (see [`PENDING_LIMIT`]) the
    /// connection stops reading, if the machine allows it.
    fn reading(&self) -> bool {
        !self.machine.may_pause_reading()
            || (self.pending.len() < PENDING_LIMIT && self.pending.bytes < self.max_pending_bytes)
    }

    /// Hands the consumer what fits in the channel without waiting.
    fn hand_over(&mut self) {
        while let Ok(permit) = self.out.events.try_reserve() {
            if !self.pending.send_batch(permit, &mut self.machine) {
                break;
            }
        }
        self.publish_session();
    }

    /// Copies the machine's resume point of what it delivered to the
    /// status.
    fn publish_session(&self) {
        let mut status = lock(&self.status);
        status.delivered.follow(self.machine.delivered());
    }

    /// Moves the machine's events to `pending` as one batch, through the
    /// tap if there is one.
    fn collect(&mut self) {
        if let Some(mut batch) = self.machine.take_batch() {
            if let Some(tap) = &self.out.tap {
                batch.tap(self.machine.shard_id(), tap);
            }
            self.pending.push_batch(batch, &mut self.machine);
        }
    }

    /// Whether a batch's worth of events waits for the consumer.
    fn batch_ready(&self) -> bool {
        let (events, bytes) = self.machine.queued();
        events >= HANDOVER_BATCH || bytes >= HANDOVER_BYTES
    }

    /// Hands every whole frame in the receive buffer to the machine, each
    /// where it was received, carrying out what each one caused before the
    /// next (a close stops the rest).
    async fn take_frames(&mut self) {
        // The messages of one read arrived together: one clock reading.
        let arrived = now();
        loop {
            let Some(reader) = self.socket.as_mut().and_then(|s| s.reader.as_mut()) else {
                return;
            };
            match reader.frames.next_frame() {
                Ok(Some(Received::Message { payload, kind })) => {
                    self.machine.handle_message(arrived, payload, kind);
                }
                Ok(Some(Received::Ping(payload))) => {
                    let payload = payload.to_vec();
                    self.write(ClientFrame::Pong(&payload)).await;
                }
                Ok(Some(Received::Close { code, reason })) => {
                    let reason = String::from_utf8_lossy(reason).into_owned();
                    // RFC 6455, 5.5.1: a close is answered with a close,
                    // echoing its code, before the connection goes.
                    self.write(ClientFrame::Close(code)).await;
                    self.closed(code, &reason);
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(error) => {
                    let code = if matches!(error, FrameError::TooLarge { .. }) {
                        crate::policy::MESSAGE_TOO_BIG
                    } else {
                        crate::policy::PROTOCOL_ERROR
                    };
                    self.write(ClientFrame::Close(Some(code))).await;
                    self.socket = None;
                    self.turn = None;
                    let error = format!("the gateway broke the WebSocket protocol: {error}");
                    self.machine.handle_protocol_error(now(), &error);
                    return;
                }
            }
            self.flush().await;
            if !self.reading() {
                return;
            }
            // One read brings in hundreds of events: they go to the
            // consumer in batches (see `HANDOVER_BATCH`). A consumer that
            // takes nothing is not waited for, and a deadline that passed (a
            // heartbeat) sends the task back to its loop; the rest of the
            // buffer is still there.
            if self.batch_ready() {
                self.collect();
                let before = self.pending.len();
                self.hand_over();
                if self.pending.len() < before {
                    tokio::task::yield_now().await;
                }
                let due = self.machine.poll_timeout().is_some_and(|at| at <= now());
                if due {
                    return;
                }
            }
        }
    }

    fn control(&mut self, request: Control) {
        let now = now();
        match request {
            Control::Send(Outgoing(payload), reply) => {
                let sent = match payload {
                    Repr::Command(command) => self.machine.send(now, &command),
                    Repr::Json(json) => self.machine.send_raw(now, json),
                    Repr::Invalid(error) => {
                        self.machine.metrics().refused("invalid");
                        Err(SendError::InvalidRaw(error))
                    }
                };
                let _ = reply.send(sent);
            }
            Control::Disconnect(code) => self.machine.disconnect(now, code),
            Control::Reconnect => self.machine.reconnect(now),
            Control::Reinstantiate => self.machine.reinstantiate(now),
            Control::Identify => self.machine.identify(now),
            Control::Resume(reply) => {
                let _ = reply.send(self.machine.resume(now));
            }
            Control::Connect => self.machine.connect(now),
            Control::Heartbeat => self.machine.request_heartbeat(now),
            // Taken in `run` before it gets here.
            Control::Stop => {}
        }
    }

    fn closed(&mut self, code: Option<u16>, reason: &str) {
        self.socket = None;
        self.connecting = None;
        self.turn = None;
        self.machine.handle_close_with_reason(now(), code, reason);
    }

    /// Carries out orders, writes frames, queues events and updates the
    /// status.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(order) = self.machine.poll_order() {
                progressed = true;
                match order {
                    Order::Connect { url } => {
                        tracing::debug!(url = url.split('?').next().unwrap_or(""), "connecting");
                        // Boxed: the task's future would otherwise hold room
                        // for the handshake's state for its whole life. It
                        // runs in the task's loop, beside the user's requests
                        // and the machine's connect timeout.
                        let max_message = self.max_message;
                        let connecting = async move {
                            connect(&url, max_message).await.map_err(|e| e.to_string())
                        };
                        let span = self.machine.step_span();
                        self.connecting =
                            Some(Box::pin(tracing::Instrument::instrument(connecting, span)));
                    }
                    Order::Close { code } => {
                        self.write(ClientFrame::Close(Some(code))).await;
                        tracing::debug!(code, "closing");
                        if let Some(socket) = self.socket.take() {
                            tokio::spawn(socket.linger());
                        }
                        self.closed(Some(code), "");
                    }
                    Order::Abandon => {
                        self.connecting = None;
                        self.socket = None;
                        self.turn = None;
                    }
                    // A hibernating connection keeps no receive buffer
                    // either, and what it freed goes back to the system.
                    Order::Hibernate => {
                        if let Some(reader) = self.socket.as_mut().and_then(|s| s.reader.as_mut()) {
                            reader.frames.shrink();
                        }
                        if self.release_memory {
                            crate::memory::hibernated();
                        }
                    }
                    Order::WaitIdentifyTurn => {
                        let queue = self.queue.clone();
                        let shard = self.machine.shard_id();
                        let turn = async move { queue.wait_turn(shard).await };
                        let span = self.machine.step_span();
                        self.turn = Some(Box::pin(tracing::Instrument::instrument(turn, span)));
                    }
                }
            }
            let mut sent = false;
            while let Some(frame) = self.machine.poll_transmit() {
                progressed = true;
                sent = true;
                self.write(ClientFrame::Text(&frame)).await;
            }
            let state = self.machine.state();
            let acknowledged = self.machine.latency().acknowledged();
            // The usual dispatch changes nothing the status shows (the
            // state it wrote last, no payload sent, no new heartbeat ACK, a
            // session to keep): the status is left alone, unlocked.
            let unchanged = !sent
                && state == ShardState::Active
                && self.published == Some((state, acknowledged))
                && self.machine.session().is_some();
            if !unchanged {
                // The latency history and the session are cloned when
                // they change.
                self.published = Some((state, acknowledged));
                let mut status = lock(&self.status);
                status.state = state;
                // A new connection resets the limiter; a payload takes a slot.
                if sent || status.state != ShardState::Active {
                    status.limiter.clone_from(self.machine.rate_limiter());
                }
                let latency = self.machine.latency();
                if latency.acknowledged() != status.latency.acknowledged() {
                    status.latency = latency.clone();
                }
                // A session the machine dropped cannot be resumed; a new one
                // shows once its READY is delivered (see `Task::hand_over`).
                if self.machine.session().is_none() {
                    status.delivered.forget();
                }
            }
            if !progressed {
                return;
            }
        }
    }

    async fn write(&mut self, frame: ClientFrame<'_>) {
        let Some(socket) = &mut self.socket else {
            return;
        };
        if let Err(error) = socket.writer.send(frame).await {
            tracing::debug!(%error, "write failed");
            self.closed(None, "");
        }
    }
}
