//! The scripted server of the machine tests: a shard on a virtual clock,
//! fed payloads, its orders, frames and events read back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardwire_codec::{Compression, MessageKind, Token};
use shardwire_shard::{Order, RESUMABLE_CLOSE, ShardConfig, ShardEvent, ShardMachine, ShardState};
use twilight_model::gateway::Intents;

pub(crate) const TOKEN: &str = "machine-test-token";
pub(crate) const GATEWAY: &str = "wss://gateway.example";
pub(crate) const RESUME: &str = "wss://resume.example";
pub(crate) const INTERVAL_MS: u64 = 41_250;

pub(crate) fn config() -> ShardConfig {
    let mut config = ShardConfig::new(
        Token::new(TOKEN),
        Intents::GUILDS | Intents::GUILD_MESSAGES,
        1,
        4,
        GATEWAY,
    );
    config.compression = Compression::None;
    // The tests read deadlines one by one; hibernation has its own test.
    config.hibernate_after = None;
    config
}

/// A shard and its virtual clock.
pub(crate) struct Harness {
    pub(crate) shard: ShardMachine,
    pub(crate) now: Instant,
    pub(crate) seq: u64,
}

impl Harness {
    pub(crate) fn new(config: ShardConfig) -> Self {
        Self {
            shard: ShardMachine::new(config),
            now: Instant::now(),
            seq: 0,
        }
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Runs every deadline up to `now`.
    pub(crate) fn run_timers(&mut self) {
        while let Some(at) = self.shard.poll_timeout() {
            if at > self.now {
                break;
            }
            self.shard.handle_timeout(self.now);
        }
    }

    pub(crate) fn orders(&mut self) -> Vec<Order> {
        std::iter::from_fn(|| self.shard.poll_order()).collect()
    }

    pub(crate) fn frames(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.shard.poll_transmit())
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
            .collect()
    }

    pub(crate) fn events(&mut self) -> Vec<ShardEvent> {
        std::iter::from_fn(|| self.shard.poll_event()).collect()
    }

    pub(crate) fn server(&mut self, payload: &Value) {
        let bytes = serde_json::to_vec(payload).unwrap();
        self.shard
            .handle_message(self.now, &bytes, MessageKind::Text);
    }

    pub(crate) fn hello(&mut self) {
        self.server(
            &json!({"t": null, "s": null, "op": 10, "d": {"heartbeat_interval": INTERVAL_MS}}),
        );
    }

    pub(crate) fn dispatch(&mut self, t: &str, d: Value) {
        self.seq += 1;
        let seq = self.seq;
        self.server(&json!({"t": t, "s": seq, "op": 0, "d": d}));
    }

    /// Expects exactly one Connect order; returns its URL.
    pub(crate) fn expect_connect(&mut self) -> String {
        match self.orders().as_slice() {
            [Order::Connect { url }] => url.clone(),
            other => panic!("expected one Connect, got {other:?}"),
        }
    }

    /// connect → open → Hello → turn → Identify → READY; returns the Identify.
    pub(crate) fn start(&mut self) -> Value {
        self.shard.connect(self.now);
        let url = self.expect_connect();
        assert_eq!(url, format!("{GATEWAY}/?v=10&encoding=json"));
        self.shard.handle_connected(self.now);
        self.hello();
        assert_eq!(self.orders(), vec![Order::WaitIdentifyTurn]);
        assert_eq!(self.shard.state(), ShardState::Identifying);
        self.shard.handle_identify_turn(self.now);
        let identify = self.frames().pop().expect("an Identify");
        self.dispatch(
            "READY",
            json!({"session_id": "s1", "resume_gateway_url": RESUME, "v": 10}),
        );
        assert_eq!(self.shard.state(), ShardState::Active);
        identify
    }

    /// Closes from the server side and runs the reconnect timer; returns
    /// the URL of the next connection.
    pub(crate) fn closed_and_reconnect(&mut self, code: Option<u16>) -> String {
        self.shard.handle_close(self.now, code);
        assert_eq!(self.shard.state(), ShardState::Reconnecting);
        let at = self.shard.poll_timeout().expect("a reconnect deadline");
        self.now = self.now.max(at);
        self.run_timers();
        self.expect_connect()
    }

    /// Expects the shard's own resumable close, then reconnects; returns
    /// the URL of the next connection.
    pub(crate) fn own_close_and_reconnect(&mut self) -> String {
        self.expect_own_close();
        self.closed_and_reconnect(Some(RESUMABLE_CLOSE))
    }

    /// Expects exactly one order: the shard's own resumable close.
    pub(crate) fn expect_own_close(&mut self) {
        assert_eq!(
            self.orders(),
            vec![Order::Close {
                code: RESUMABLE_CLOSE
            }]
        );
    }

    /// Opens the next connection and sends Hello; returns what the shard sent.
    pub(crate) fn reopen(&mut self) -> (Vec<Order>, Vec<Value>) {
        self.shard.handle_connected(self.now);
        self.hello();
        (self.orders(), self.frames())
    }
}

pub(crate) fn is_resume(frame: &Value, seq: u64) -> bool {
    frame["op"] == 6
        && frame["d"]["session_id"] == "s1"
        && frame["d"]["seq"] == seq
        && frame["d"]["token"] == TOKEN
}
