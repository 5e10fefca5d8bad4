//! Commands out: queued until the session is ready, then sent under the
//! rate limit.

use std::time::Instant;

use shardwire_codec::Command;

use super::{Phase, SendError, ShardEvent, ShardMachine, Step};
use crate::metrics::Cause;
use crate::{AfterClose, FatalError};

impl ShardMachine {
    /// Sends a command now if the session is ready and the rate limit
    /// allows, else queues it until then.
    ///
    /// # Errors
    ///
    /// [`SendError`] when it does not encode, the queue is full or the shard
    /// is fatally closed.
    pub fn send(&mut self, now: Instant, command: &Command) -> Result<(), SendError> {
        let sent = self.refuse_if_fatal().and_then(|()| {
            let bytes = command.encode()?;
            self.enqueue(now, command.opcode(), bytes)
        });
        self.count_refused(&sent);
        self.settle(now);
        sent
    }

    /// Sends a raw JSON payload under the same queue and rate limit as
    /// commands.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidRaw`] for anything but a JSON object with an
    /// integer `op` of at most 4096 bytes; as [`ShardMachine::send`] otherwise.
    pub fn send_raw(&mut self, now: Instant, bytes: Vec<u8>) -> Result<(), SendError> {
        let sent = self.refuse_if_fatal().and_then(|()| {
            let opcode = raw_opcode(&bytes)?;
            self.enqueue(now, opcode, bytes)
        });
        self.count_refused(&sent);
        self.settle(now);
        sent
    }

    fn count_refused(&self, sent: &Result<(), SendError>) {
        if let Err(error) = sent {
            self.metrics.refused(match error {
                SendError::QueueFull(_) => "queue_full",
                SendError::Fatal(_) | SendError::Stopped => "fatal",
                SendError::Codec(_) | SendError::InvalidRaw(_) => "invalid",
            });
        }
    }

    fn refuse_if_fatal(&self) -> Result<(), SendError> {
        match &self.phase {
            Phase::Fatal(fatal) => Err(SendError::Fatal(fatal.clone())),
            _ => Ok(()),
        }
    }

    fn enqueue(&mut self, now: Instant, opcode: u8, bytes: Vec<u8>) -> Result<(), SendError> {
        if self.step() == Some(Step::Active)
            && self.queued.is_empty()
            && self.limiter.try_acquire_command(now)
        {
            self.transmit(now, opcode, bytes);
            return Ok(());
        }
        if self.queued.len() >= self.config.max_queued_commands {
            return Err(SendError::QueueFull(self.queued.len()));
        }
        self.queued.push_back((opcode, bytes));
        Ok(())
    }

    /// Sends what the queue holds, as far as the rate limit allows.
    pub(super) fn flush_queued(&mut self, now: Instant) {
        while self.step() == Some(Step::Active) && !self.queued.is_empty() {
            if !self.limiter.try_acquire_command(now) {
                return;
            }
            if let Some((opcode, bytes)) = self.queued.pop_front() {
                self.transmit(now, opcode, bytes);
            }
        }
    }

    /// Sends Identify or Resume: they count against the rate limit but may
    /// use the heartbeat reserve, since nothing else is sent yet.
    pub(super) fn transmit_command(&mut self, now: Instant, command: &Command) {
        match command.encode() {
            Ok(bytes) => {
                let _ = self.limiter.acquire_heartbeat(now);
                self.transmit(now, command.opcode(), bytes);
            }
            // Identify and Resume come from the configuration; one that does
            // not encode can never work.
            Err(error) => self.close_ourselves(
                AfterClose::Fatal(FatalError::InvalidConfiguration(error.to_string())),
                Cause::Configuration,
            ),
        }
    }

    /// Sends a heartbeat, on schedule or not. It always counts as sent, so
    /// a beat is never due twice.
    pub(super) fn beat(&mut self, now: Instant) {
        let seq = self.session.as_ref().map(|s| s.seq);
        if !self.limiter.acquire_heartbeat(now) {
            tracing::warn!(
                "a heartbeat goes out over the 120-per-minute limit: the heartbeat interval is too short for it"
            );
        }
        // A heartbeat always encodes: no field can be invalid.
        let heartbeat = Command::Heartbeat { seq };
        if let Ok(bytes) = heartbeat.encode() {
            self.transmit(now, heartbeat.opcode(), bytes);
        }
        self.heartbeat.on_sent(now);
    }

    /// Hands a frame to the driver and tells the user.
    pub(super) fn transmit(&mut self, now: Instant, opcode: u8, bytes: Vec<u8>) {
        self.metrics.sent(opcode, self.limiter.available(now));
        self.transmits.push_back(bytes);
        self.emit(ShardEvent::Sent { opcode });
    }
}

/// The opcode of a raw payload, if it is one the gateway could take.
fn raw_opcode(bytes: &[u8]) -> Result<u8, SendError> {
    if bytes.len() > shardwire_codec::MAX_COMMAND_SIZE {
        return Err(SendError::InvalidRaw(format!(
            "{} bytes, over the gateway's {}",
            bytes.len(),
            shardwire_codec::MAX_COMMAND_SIZE
        )));
    }
    #[derive(serde::Deserialize)]
    struct Raw {
        op: u8,
    }
    // A struct also deserializes from an array: only an object will do.
    let object = bytes.trim_ascii_start().starts_with(b"{");
    match serde_json::from_slice::<Raw>(bytes) {
        Ok(raw) if object => Ok(raw.op),
        _ => Err(SendError::InvalidRaw(
            "not a JSON object with an integer `op` from 0 to 255".into(),
        )),
    }
}
