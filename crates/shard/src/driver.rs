//! The tokio driver: runs a [`ShardMachine`] on a real WebSocket.
//!
//! One task per shard owns the machine and both halves of the socket. It
//! waits on the socket, the connection being opened, the machine's
//! deadline, the identify queue and the user's requests at once. Reads go straight into the connection's
//! [`FrameBuffer`], and each message is handed to the machine where it was
//! received: no copy, no allocation, and one wake-up for every message a
//! read brought in. A read is a single `poll_read`, so choosing another
//! branch never cancels anything half-done. The handshake is the shard's
//! own (`handshake.rs`); fastwebsockets writes the (masked) client frames. The task carries out the
//! machine's orders and frames and forwards events to the [`Shard`] handle
//! in order, with no task spawned per event.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use fastwebsockets::{Frame, Payload, Role, WebSocket, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use shardwire_codec::frame::{Frame as Received, FrameBuffer, FrameError};
use shardwire_codec::{Command, EventFilter};
use shardwire_heartbeat::Latency;
use tokio::io::{AsyncRead, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::batch::{Batch, Queued};

use crate::{
    Endpoint, IdentifyQueue, IdentifyRefused, Order, ResumeError, SendError, Session, ShardConfig,
    ShardEvent, ShardMachine, ShardState,
};

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
/// The first read of a connection that holds no receive buffer: enough for
/// a Hello or a heartbeat ACK, and the rest waits for the next read.
const QUIET_READ: usize = 1024;
/// Events in the channel between the shard's task and its handle, under
/// load: it holds `EVENT_BUFFER / HANDOVER_BATCH` batches.
const EVENT_BUFFER: usize = 1024;
/// Events held for a consumer that lags. The shard keeps reading (it must
/// see heartbeat ACKs, or it would take its own connection for a zombie)
/// and holds events up to this many, and up to
/// [`ShardConfig::max_pending_bytes`] of them; past either, it stops reading
/// until the consumer catches up, which a consumer that stops for good turns
/// into a zombie connection and a resume (which loses nothing).
const PENDING_LIMIT: usize = 100_000;

/// Events the consumer has not taken yet, oldest first, in batches, and
/// their size: the bytes of their JSON, the bulk of them.
#[derive(Default)]
struct Pending {
    batches: VecDeque<Batch>,
    len: usize,
    bytes: usize,
}

impl Pending {
    /// Adds one event, to the last batch.
    fn push_back(&mut self, event: ShardEvent) {
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
    fn push_batch(&mut self, batch: Batch) {
        self.len += batch.len();
        self.bytes += batch.weight();
        self.batches.push_back(batch);
    }

    /// Takes the first event. The last batch stays when it empties, for
    /// the next events.
    fn pop_front(&mut self) -> Option<ShardEvent> {
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
    fn pop_batch(&mut self) -> Option<Batch> {
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
    fn send_batch(&mut self, permit: mpsc::Permit<'_, Batch>, delivered: &mut Delivered) -> bool {
        let Some(batch) = self.pop_batch() else {
            return false;
        };
        delivered.note_batch(&batch);
        permit.send(batch);
        true
    }

    /// Sends the first event, tagged with `shard`, through `permit`, noting
    /// what it delivers; `false` when there was none.
    fn send_event(
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

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What the user asks of the shard task.
enum Control {
    /// Boxed: the control channel's blocks hold 32 of these per shard.
    Send(
        Box<Command>,
        tokio::sync::oneshot::Sender<Result<(), SendError>>,
    ),
    SendRaw(Vec<u8>, tokio::sync::oneshot::Sender<Result<(), SendError>>),
    Disconnect(u16),
    Reconnect,
    Reinstantiate,
    Identify,
    Resume(tokio::sync::oneshot::Sender<Result<(), ResumeError>>),
    Connect,
    Heartbeat,
}

/// What the user can see without asking the task.
#[derive(Debug)]
struct Status {
    state: ShardState,
    latency: Latency,
    session: Option<Session>,
    /// A copy of the machine's limiter, taken when a payload goes out.
    limiter: crate::CommandRateLimiter,
    /// The current session as its READY had it.
    session_at_ready: Option<Session>,
}

/// Follows the session through the events a consumer takes.
fn note_session(session: &mut Option<Session>, event: &ShardEvent) {
    match event {
        ShardEvent::Ready { session: ready } => *session = Some(ready.clone()),
        ShardEvent::Dispatch { seq, .. } => {
            if let Some(session) = session {
                session.seq = session.seq.max(*seq);
            }
        }
        _ => {}
    }
}

/// Sees each event of a shard before it is queued for the consumer, and
/// may keep it (return `None`) or pass it on. It runs on the shard's task,
/// so it must be quick.
pub type Tap = Arc<dyn Fn(u32, ShardEvent) -> Option<ShardEvent> + Send + Sync>;

/// Where a shard started with [`Shard::start_with_sink`] sends its events:
/// a channel shared by many shards, each event tagged with its shard id.
pub struct EventSink {
    tx: mpsc::Sender<(u32, ShardEvent)>,
    tap: Option<Tap>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("tap", &self.tap.is_some())
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// A sink into `tx`.
    #[must_use]
    pub fn new(tx: mpsc::Sender<(u32, ShardEvent)>) -> Self {
        Self { tx, tap: None }
    }

    /// With a [`Tap`] that sees every event first.
    #[must_use]
    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }
}

/// One gateway connection, running on its own tokio task.
///
/// Events come out in order through [`Shard::next_event`] (or the
/// [`futures_core::Stream`] impl); commands go in through [`Shard::send`].
/// Dropping the handle stops the task after closing the connection with a
/// resumable code.
pub struct Shard {
    /// The control channel to the shard's task, and its id.
    sender: ShardSender,
    /// `None` when the events go to an [`EventSink`].
    events: Option<mpsc::Receiver<Batch>>,
    /// The batch being handed out.
    batch: Batch,
    /// The session as of the last event this handle returned.
    consumed: Option<Session>,
    /// The dispatches this handle types as it returns them (see
    /// [`Shard::start`]).
    typing: EventFilter,
    status: Arc<Mutex<Status>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard_id", &self.sender.shard_id)
            .field("state", &self.status())
            .finish_non_exhaustive()
    }
}

/// Sends commands on a [`Shard`] from any task (see [`Shard::sender`]).
#[derive(Clone)]
pub struct ShardSender {
    control: mpsc::UnboundedSender<Control>,
    shard_id: u32,
}

impl std::fmt::Debug for ShardSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSender")
            .field("shard_id", &self.shard_id)
            .finish_non_exhaustive()
    }
}

impl ShardSender {
    /// As [`Shard::send`].
    ///
    /// # Errors
    ///
    /// As [`Shard::send`].
    pub async fn send(&self, command: Command) -> Result<(), SendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .control
            .send(Control::Send(Box::new(command), reply))
            .is_err()
        {
            return Err(SendError::Stopped);
        }
        answer.await.unwrap_or(Err(SendError::Stopped))
    }

    /// As [`Shard::send_raw`].
    ///
    /// # Errors
    ///
    /// As [`Shard::send_raw`].
    pub async fn send_raw(&self, json: impl Into<Vec<u8>>) -> Result<(), SendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .control
            .send(Control::SendRaw(json.into(), reply))
            .is_err()
        {
            return Err(SendError::Stopped);
        }
        answer.await.unwrap_or(Err(SendError::Stopped))
    }

    /// The shard's id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.shard_id
    }
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shard {
    /// Starts the shard's task and connects. Must be called inside a tokio
    /// runtime.
    ///
    /// The dispatches [`ShardConfig::typed_events`] asks for are
    /// deserialized as this handle returns them, on the consumer's task.
    /// The shard's task hands events over in batches whose JSON shares one
    /// buffer, and each dispatch's [`Json`](crate::Json) points into it: the
    /// shard's task only reads, inflates and scans, and no event costs an
    /// allocation or a copy of its own.
    #[must_use]
    pub fn start(mut config: ShardConfig, queue: Arc<dyn IdentifyQueue>) -> Self {
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER / HANDOVER_BATCH);
        let consumed = config.session.clone();
        let typing = std::mem::replace(&mut config.typed_events, EventFilter::none());
        let mut shard = Self::spawn(config, queue, Output::Handle(events_tx));
        shard.events = Some(events);
        shard.consumed = consumed;
        shard.typing = typing;
        shard
    }

    /// Types a dispatch as [`Shard::start`] describes, and follows the
    /// session.
    fn hand_out(&mut self, mut event: ShardEvent) -> ShardEvent {
        if let ShardEvent::Dispatch {
            json, event: typed, ..
        } = &mut event
            && typed.is_none()
            && self.typing.wants_any()
        {
            *typed = crate::machine::typed_json(&self.typing, json);
        }
        note_session(&mut self.consumed, &event);
        event
    }

    /// Starts a shard whose events go to `sink` (shared with other shards,
    /// tagged with this shard's id) instead of this handle:
    /// [`Shard::next_event`] then returns `None`. A shard cluster uses it
    /// for one merged stream with no task in between.
    #[must_use]
    pub fn start_with_sink(
        config: ShardConfig,
        queue: Arc<dyn IdentifyQueue>,
        sink: EventSink,
    ) -> Self {
        Self::spawn(config, queue, Output::Sink(sink.tx, sink.tap))
    }

    fn spawn(config: ShardConfig, queue: Arc<dyn IdentifyQueue>, out: Output) -> Self {
        let shard_id = config.shard_id;
        let (control, control_rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(Status {
            state: ShardState::Disconnected,
            latency: shardwire_heartbeat::Heartbeat::new().latency().clone(),
            session: config.session.clone(),
            limiter: crate::CommandRateLimiter::new(Duration::from_millis(41_250)),
            session_at_ready: config.session.clone(),
        }));
        let span = tracing::info_span!("shard", id = config.shard_id, count = config.shard_count);
        let max_pending_bytes = config.max_pending_bytes;
        let release_memory = config.release_memory;
        let max_message = config.max_payload_bytes;
        let task = Task {
            max_pending_bytes,
            release_memory,
            max_message,
            machine: ShardMachine::new(config),
            queue,
            status: status.clone(),
            out,
            socket: None,
            connecting: None,
            turn: None,
            pending: Pending::default(),
            delivered: Delivered::default(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
        };
        tokio::spawn(tracing::Instrument::instrument(task.run(control_rx), span));
        Self {
            sender: ShardSender { control, shard_id },
            events: None,
            batch: Batch::default(),
            consumed: None,
            typing: EventFilter::none(),
            status,
        }
    }

    /// The next event; `None` once the shard's task has ended, or always
    /// for a shard started with [`Shard::start_with_sink`].
    pub async fn next_event(&mut self) -> Option<ShardEvent> {
        loop {
            if let Some(event) = self.batch.pop() {
                return Some(self.hand_out(event));
            }
            self.batch = self.events.as_mut()?.recv().await?;
        }
    }

    /// Sends a command: now if the session is ready and the rate limit
    /// allows, else when they do.
    ///
    /// # Errors
    ///
    /// [`SendError`] when the command does not encode, the queue is full,
    /// the shard is fatally closed or its task has ended.
    pub async fn send(&self, command: Command) -> Result<(), SendError> {
        self.sender.send(command).await
    }

    /// Sends a raw JSON payload (`{"op": …, "d": …}`) for which the codec
    /// has no type, under the same queue and rate limit as commands.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidRaw`] when it is not a JSON object with an
    /// integer `op` or is over 4096 bytes; as [`Shard::send`] otherwise.
    pub async fn send_raw(&self, json: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.sender.send_raw(json).await
    }

    /// A handle that sends commands on this shard from another task: it
    /// can be cloned and moved, and outlives nothing (once the shard's task
    /// has ended, its sends fail with [`SendError::Stopped`]).
    #[must_use]
    pub fn sender(&self) -> ShardSender {
        self.sender.clone()
    }

    /// Connects again after a [`Shard::disconnect`].
    pub fn connect(&self) {
        let _ = self.sender.control.send(Control::Connect);
    }

    /// Closes with `code` and stays disconnected.
    pub fn disconnect(&self, code: u16) {
        let _ = self.sender.control.send(Control::Disconnect(code));
    }

    /// Closes with a resumable code and resumes on a new connection.
    pub fn reconnect(&self) {
        let _ = self.sender.control.send(Control::Reconnect);
    }

    /// Drops the session and identifies anew on a fresh connection to the
    /// original URL. Events until the new READY are not recovered.
    pub fn reinstantiate(&self) {
        let _ = self.sender.control.send(Control::Reinstantiate);
    }

    /// Starts a new session (see [`ShardMachine::identify`]): like
    /// [`Shard::reinstantiate`], but keeps a connection that has not
    /// authenticated yet, and connects a disconnected shard.
    pub fn identify(&self) {
        let _ = self.sender.control.send(Control::Identify);
    }

    /// Resumes the session, connecting if disconnected (see
    /// [`ShardMachine::resume`]).
    ///
    /// # Errors
    ///
    /// [`ResumeError`] without a session, once fatally closed, or when the
    /// task has ended.
    pub async fn resume(&self) -> Result<(), ResumeError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.sender.control.send(Control::Resume(reply)).is_err() {
            return Err(ResumeError::Stopped);
        }
        answer.await.unwrap_or(Err(ResumeError::Stopped))
    }

    /// Sends a heartbeat now.
    pub fn heartbeat(&self) {
        let _ = self.sender.control.send(Control::Heartbeat);
    }

    /// The shard's state.
    #[must_use]
    pub fn status(&self) -> ShardState {
        lock(&self.status).state
    }

    /// Heartbeat round trips.
    #[must_use]
    pub fn latency(&self) -> Latency {
        lock(&self.status).latency.clone()
    }

    /// Commands that may be sent now without waiting for the rate limit
    /// (120 payloads a minute, less the room kept for heartbeats).
    #[must_use]
    pub fn available(&self) -> u32 {
        lock(&self.status).limiter.available(now())
    }

    /// When the next command may be sent: now if one may be sent now.
    #[must_use]
    pub fn next_available(&self) -> std::time::Instant {
        lock(&self.status).limiter.next_available(now())
    }

    /// The session, to export. Its `seq` is that of the last dispatch this
    /// handle returned (for a shard with an [`EventSink`]: the last one put
    /// in the sink), so a resume from it replays whatever the consumer had
    /// not taken yet. `None` when there is no session to resume.
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        let status = lock(&self.status);
        let delivered = status.session.as_ref()?;
        if self.events.is_none() {
            return Some(delivered.clone());
        }
        match &self.consumed {
            Some(consumed) if consumed.session_id == delivered.session_id => Some(consumed.clone()),
            // A new session whose READY this handle has not returned yet:
            // resume it from its start.
            _ => status.session_at_ready.clone(),
        }
    }

    /// This shard's id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.sender.shard_id
    }
}

impl futures_core::Stream for Shard {
    type Item = ShardEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ShardEvent>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.batch.pop() {
                return Poll::Ready(Some(this.hand_out(event)));
            }
            let Some(events) = &mut this.events else {
                return Poll::Ready(None);
            };
            match ready!(events.poll_recv(cx)) {
                Some(batch) => this.batch = batch,
                None => return Poll::Ready(None),
            }
        }
    }
}

type Io = TokioIo<Upgraded>;

/// The read half of a connection and its receive buffer.
struct Reader {
    io: ReadHalf<Io>,
    frames: FrameBuffer,
}

impl Reader {
    /// Ready when a whole frame is buffered (at once, without reading) or
    /// when a read brought bytes in; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.frames.has_frame() {
            return Poll::Ready(Ok(true));
        }
        // A connection that holds no receive buffer (a new or hibernating
        // one) waits with a small one on the stack, and takes a buffer only
        // when bytes come: an idle shard holds none.
        if self.frames.capacity() == 0 {
            let mut first = [0u8; QUIET_READ];
            let mut buf = ReadBuf::new(&mut first);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            self.frames.extend_from_slice(buf.filled());
            return Poll::Ready(Ok(!buf.filled().is_empty()));
        }
        let mut buf = ReadBuf::new(self.frames.spare());
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        self.frames.filled(read);
        Poll::Ready(Ok(read > 0))
    }
}

struct Socket {
    writer: WebSocketWrite<WriteHalf<Io>>,
    /// `None` once the connection ended.
    reader: Option<Reader>,
}

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
    delivered: Delivered,
    /// The machine's next deadline, and the timer set for it.
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
}

/// Where a shard's task sends its events.
enum Output {
    /// The [`Shard`] handle's own channel, in batches (see [`Batch`]): each
    /// event the handle returns points into its batch's JSON.
    Handle(mpsc::Sender<Batch>),
    /// An [`EventSink`]: one event at a time, each through the tap first.
    Sink(mpsc::Sender<(u32, ShardEvent)>, Option<Tap>),
}

/// Waits for room in the consumer's channel, then hands it the first batch
/// (or event, for a sink). `Err` when the consumer is gone. Cancel-safe:
/// nothing is taken from `pending` before there is room.
async fn deliver(
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
struct Delivered {
    /// A READY handed over.
    ready: Option<Session>,
    /// The last dispatch seq handed over.
    seq: Option<u64>,
}

impl Delivered {
    fn note(&mut self, event: &ShardEvent) {
        match event {
            ShardEvent::Ready { session } => {
                self.ready = Some(session.clone());
                self.seq = None;
            }
            ShardEvent::Dispatch { seq, .. } => self.seq = Some(*seq),
            _ => {}
        }
    }

    fn note_batch(&mut self, batch: &Batch) {
        for event in batch.iter() {
            match event {
                Queued::Event(event) => self.note(event),
                Queued::Dispatch { seq, .. } => self.seq = Some(*seq),
            }
        }
    }

    fn publish(&mut self, status: &Mutex<Status>) {
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

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Task {
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
            // Stop reading while the consumer is far behind; timers and
            // heartbeats go on. Only an active session pauses: a connection
            // still being set up must read its Hello and start heartbeating,
            // or the gateway would end the session (4009) instead of letting
            // it resume.
            let reading = self.reading();
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
                let delivering = deliver(
                    &self.out,
                    &mut self.pending,
                    &mut self.delivered,
                    self.machine.shard_id(),
                );
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
                        Some(request) => Wake::Control(request),
                        None => Wake::ConsumerGone,
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
    }

    /// Whether the consumer has room for more: past the limits an active
    /// session stops reading (see [`PENDING_LIMIT`]).
    fn reading(&self) -> bool {
        self.machine.state() != ShardState::Active
            || (self.pending.len() < PENDING_LIMIT && self.pending.bytes < self.max_pending_bytes)
    }

    /// Hands the consumer what fits in the channel without waiting.
    fn hand_over(&mut self) {
        let shard = self.machine.shard_id();
        while !self.pending.is_empty() {
            let sent = match &self.out {
                Output::Handle(tx) => tx
                    .try_reserve()
                    .is_ok_and(|permit| self.pending.send_batch(permit, &mut self.delivered)),
                Output::Sink(tx, _) => tx.try_reserve().is_ok_and(|permit| {
                    self.pending.send_event(permit, &mut self.delivered, shard)
                }),
            };
            if !sent {
                break;
            }
        }
        self.delivered.publish(&self.status);
    }

    /// Moves the machine's events to `pending` as one batch (a sink's
    /// events go there one by one as the machine makes them, see
    /// [`Task::flush`]).
    fn collect(&mut self) {
        if matches!(self.out, Output::Handle(_))
            && let Some(batch) = self.machine.take_batch()
        {
            self.pending.push_batch(batch);
        }
    }

    /// Whether a batch's worth of events waits for the consumer.
    fn batch_ready(&self) -> bool {
        match self.out {
            Output::Handle(_) => {
                let (events, bytes) = self.machine.queued();
                events >= HANDOVER_BATCH || bytes >= HANDOVER_BYTES
            }
            Output::Sink(..) => {
                self.pending.len() >= HANDOVER_BATCH || self.pending.bytes >= HANDOVER_BYTES
            }
        }
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
                    self.write(Frame::pong(Payload::Owned(payload))).await;
                }
                Ok(Some(Received::Close { code, reason })) => {
                    let reason = String::from_utf8_lossy(reason).into_owned();
                    // RFC 6455, 5.5.1: a close is answered with a close,
                    // echoing its code, before the connection goes.
                    let echo = match code {
                        Some(code) => Frame::close(code, b""),
                        None => Frame::close_raw(Vec::new().into()),
                    };
                    self.write(echo).await;
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
                    self.write(Frame::close(code, b"")).await;
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
            Control::Send(command, reply) => {
                let _ = reply.send(self.machine.send(now, &command));
            }
            Control::SendRaw(bytes, reply) => {
                let _ = reply.send(self.machine.send_raw(now, bytes));
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
                        self.connecting = Some(Box::pin(async move {
                            connect(&url, max_message).await.map_err(|e| e.to_string())
                        }));
                    }
                    Order::Close { code } => {
                        self.write(Frame::close(code, b"")).await;
                        tracing::debug!(code, "closing");
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
                        self.turn = Some(Box::pin(async move { queue.wait_turn(shard).await }));
                    }
                }
            }
            let mut sent = false;
            while let Some(frame) = self.machine.poll_transmit() {
                progressed = true;
                sent = true;
                self.write(Frame::text(Payload::Owned(frame))).await;
            }
            {
                // Cheap per message: only `seq` moves; the latency history and
                // the session are cloned when they change.
                let mut status = lock(&self.status);
                status.state = self.machine.state();
                // A new connection resets the limiter; a payload takes a slot.
                if sent || status.state != ShardState::Active {
                    status.limiter.clone_from(self.machine.rate_limiter());
                }
                let latency = self.machine.latency();
                if latency.acknowledged() != status.latency.acknowledged() {
                    status.latency = latency.clone();
                }
                // A session the machine dropped cannot be resumed; a new one
                // shows once its READY is delivered (see `Delivered`).
                if self.machine.session().is_none() {
                    status.session = None;
                    status.session_at_ready = None;
                }
            }
            // A sink's events go through the tap as they are made; a
            // handle's are taken in batches (see `Task::collect`).
            if let Output::Sink(_, tap) = &self.out {
                while let Some(event) = self.machine.poll_event() {
                    let event = match tap {
                        Some(tap) => match tap(self.machine.shard_id(), event) {
                            Some(event) => event,
                            None => continue,
                        },
                        None => event,
                    };
                    self.pending.push_back(event);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    async fn write(&mut self, frame: Frame<'_>) {
        let Some(socket) = &mut self.socket else {
            return;
        };
        if let Err(error) = socket.writer.write_frame(frame).await {
            tracing::debug!(%error, "write failed");
            self.closed(None, "");
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Url(#[from] crate::InvalidUrl),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket handshake refused: {0}")]
    Handshake(#[from] crate::handshake::HandshakeError),
}

/// Opens a WebSocket to `url` (`ws://` or `wss://`).
async fn connect(url: &str, max_message: usize) -> Result<Socket, ConnectError> {
    let endpoint = Endpoint::parse(url, crate::Scheme::WebSocket)?;
    let stream = endpoint.open().await?;
    let io = crate::handshake::upgrade(&endpoint, stream).await?;
    Ok(split(
        WebSocket::after_handshake(io, Role::Client),
        max_message,
    ))
}

/// Keeps fastwebsockets' writing half; the reading half is the shard's own
/// (see [`Reader`]). fastwebsockets has read nothing yet at this point, so
/// no bytes are left behind in it.
fn split(ws: WebSocket<Io>, max_message: usize) -> Socket {
    let read_half = std::cell::Cell::new(None);
    let (_unused, writer) = ws.split(|stream| {
        let (read, write) = tokio::io::split(stream);
        read_half.set(Some(read));
        (tokio::io::empty(), write)
    });
    Socket {
        writer,
        reader: read_half.into_inner().map(|io| Reader {
            io,
            frames: FrameBuffer::new(max_message),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_events_are_weighed_by_their_json() {
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
    fn pending_batches_go_whole_and_an_emptied_batch_is_never_handed_over() {
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
