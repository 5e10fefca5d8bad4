//! The user's side of a shard: the [`Shard`] handle, its sender, and the
//! sink a cluster merges many shards into.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use shardwire_codec::EventFilter;
use shardwire_heartbeat::Latency;
use tokio::sync::mpsc;

use super::{Task, now};
use crate::batch::Batch;
use crate::session::ResumePoint;
use crate::{
    IdentifyQueue, Outgoing, ResumeError, SendError, Session, ShardConfig, ShardEvent, ShardState,
};

/// Events in the channel between the shard's task and its handle, under
/// load (see [`batches_for`]).
const EVENT_BUFFER: usize = 1024;

/// A channel's room in batches for about `events` events.
fn batches_for(events: usize) -> usize {
    (events / super::HANDOVER_BATCH).max(1)
}

/// What the user asks of the shard task.
pub(super) enum Control {
    /// Commands are boxed in it: the control channel's blocks hold 32 of
    /// these per shard.
    Send(
        Outgoing,
        tokio::sync::oneshot::Sender<Result<(), SendError>>,
    ),
    Disconnect(u16),
    Reconnect,
    Reinstantiate,
    Identify,
    Resume(tokio::sync::oneshot::Sender<Result<(), ResumeError>>),
    Connect,
    Heartbeat,
    /// The handle was dropped (its senders may live on).
    Stop,
}

/// What the user can see without asking the task.
#[derive(Debug)]
pub(super) struct Status {
    pub(super) state: ShardState,
    pub(super) latency: Latency,
    /// A copy of the machine's resume point of what it delivered, taken
    /// when it moves.
    pub(super) delivered: ResumePoint,
    /// A copy of the machine's limiter, taken when a payload goes out.
    pub(super) limiter: crate::CommandRateLimiter,
}

/// Sees each event of a shard before it is queued for the consumer, and
/// may keep it (return `None`) or pass it on. It runs on the shard's task,
/// so it must be quick. An event it keeps counts as delivered: the
/// exported session moves past it.
pub type Tap = Arc<dyn Fn(u32, ShardEvent) -> Option<ShardEvent> + Send + Sync>;

/// Where a shard started with [`Shard::start_with_sink`] sends its events:
/// a channel shared by many shards (clone the sink for each), read as one
/// stream through its [`SinkEvents`].
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<(u32, Batch)>,
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
    /// A sink with room for about `events` events, and its receiving end.
    /// The shards hand their events over in batches, like a [`Shard`]
    /// handle's, with no copy each.
    #[must_use]
    pub fn channel(events: usize) -> (Self, SinkEvents) {
        let (tx, rx) = mpsc::channel(batches_for(events));
        let sink = Self { tx, tap: None };
        let events = SinkEvents {
            rx,
            batch: (0, Batch::default()),
        };
        (sink, events)
    }

    /// With a [`Tap`] that sees every event first.
    #[must_use]
    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }
}

/// The events of every shard sending into an [`EventSink`], each tagged
/// with its shard id, in order within each shard.
pub struct SinkEvents {
    rx: mpsc::Receiver<(u32, Batch)>,
    /// The batch being handed out, and its shard.
    batch: (u32, Batch),
}

impl std::fmt::Debug for SinkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkEvents")
            .field("buffered", &self.batch.1.len())
            .finish_non_exhaustive()
    }
}

impl SinkEvents {
    /// The next event; `None` once every sink and every shard using one
    /// is gone.
    pub async fn recv(&mut self) -> Option<(u32, ShardEvent)> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is there now.
    pub fn try_recv(&mut self) -> Option<(u32, ShardEvent)> {
        loop {
            if let Some(event) = self.batch.1.pop() {
                return Some((self.batch.0, event));
            }
            self.batch = self.rx.try_recv().ok()?;
        }
    }

    /// Polls for the next event, as [`SinkEvents::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u32, ShardEvent)>> {
        loop {
            if let Some(event) = self.batch.1.pop() {
                return Poll::Ready(Some((self.batch.0, event)));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(batch) => self.batch = batch,
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Where a shard's task sends its events: batches (see [`Batch`]), each
/// event pointing into its batch's JSON, tagged with the shard's id.
pub(super) struct Output {
    pub(super) events: mpsc::Sender<(u32, Batch)>,
    /// An [`EventSink`]'s tap, which sees each event first.
    pub(super) tap: Option<Tap>,
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
    events: Option<mpsc::Receiver<(u32, Batch)>>,
    /// The batch being handed out.
    batch: Batch,
    /// The session as of the last event this handle returned.
    consumed: ResumePoint,
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
    pub async fn send(&self, payload: impl Into<Outgoing>) -> Result<(), SendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .control
            .send(Control::Send(payload.into(), reply))
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

pub(super) fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
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
        let (events_tx, events) = mpsc::channel(batches_for(EVENT_BUFFER));
        let typing = std::mem::replace(&mut config.typed_events, EventFilter::none());
        let out = Output {
            events: events_tx,
            tap: None,
        };
        let mut shard = Self::spawn(config, queue, out);
        shard.events = Some(events);
        shard.typing = typing;
        shard
    }

    /// Types a dispatch as [`Shard::start`] describes, and follows the
    /// session.
    pub(super) fn hand_out(&mut self, mut event: ShardEvent) -> ShardEvent {
        if let ShardEvent::Dispatch {
            json, event: typed, ..
        } = &mut event
            && typed.is_none()
            && self.typing.wants_any()
        {
            *typed = crate::machine::typed_json(&self.typing, json);
        }
        self.consumed.note(&event);
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
        let out = Output {
            events: sink.tx,
            tap: sink.tap,
        };
        Self::spawn(config, queue, out)
    }

    pub(super) fn spawn(config: ShardConfig, queue: Arc<dyn IdentifyQueue>, out: Output) -> Self {
        let shard_id = config.shard_id;
        let (control, control_rx) = mpsc::unbounded_channel();
        let machine = crate::ShardMachine::new(config);
        let consumed = machine.delivered().clone();
        let status = Arc::new(Mutex::new(Status {
            state: ShardState::Disconnected,
            latency: shardwire_heartbeat::Heartbeat::new().latency().clone(),
            delivered: consumed.clone(),
            limiter: crate::CommandRateLimiter::new(Duration::from_millis(41_250)),
        }));
        Task::spawn(machine, queue, status.clone(), out, control_rx);
        Self {
            sender: ShardSender { control, shard_id },
            events: None,
            batch: Batch::default(),
            consumed,
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
            self.batch = self.events.as_mut()?.recv().await?.1;
        }
    }

    /// Sends a payload (a [`Command`](shardwire_codec::Command), a twilight-model outgoing payload,
    /// or anything [`Outgoing`] takes): now if the session is ready and the
    /// rate limit allows, else when they do.
    ///
    /// # Errors
    ///
    /// [`SendError`] when the payload does not encode or is over 4096
    /// bytes, the queue is full, the shard is fatally closed or its task
    /// has ended.
    pub async fn send(&self, payload: impl Into<Outgoing>) -> Result<(), SendError> {
        self.sender.send(payload).await
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

    /// Starts a new session (see [`ShardMachine::identify`](crate::ShardMachine::identify)): like
    /// [`Shard::reinstantiate`], but keeps a connection that has not
    /// authenticated yet, and connects a disconnected shard.
    pub fn identify(&self) {
        let _ = self.sender.control.send(Control::Identify);
    }

    /// Resumes the session, connecting if disconnected (see
    /// [`ShardMachine::resume`](crate::ShardMachine::resume)).
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
        if self.events.is_none() {
            return status.delivered.session().cloned();
        }
        status.delivered.for_consumer_at(&self.consumed)
    }

    /// This shard's id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.sender.shard_id
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.sender.control.send(Control::Stop);
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
                Some((_, batch)) => this.batch = batch,
                None => return Poll::Ready(None),
            }
        }
    }
}
