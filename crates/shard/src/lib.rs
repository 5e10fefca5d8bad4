//! One Discord Gateway connection: a sans-IO protocol core and a tokio driver.
//!
//! - [`ShardMachine`]: the sans-IO state machine of one connection. The driver
//!   feeds it what happened (`connect`, `handle_connected`,
//!   `handle_connect_failed`, `handle_message`, `handle_close`,
//!   `handle_protocol_error`, `handle_timeout`, `handle_identify_turn`,
//!   `handle_identify_refused`) and carries out its [`Order`]s and frames,
//!   sleeping until `poll_timeout`. Every deadline (connect, Hello, READY,
//!   reconnect backoff, heartbeat, rate-limit slot, hibernation) is the
//!   machine's; the user reads [`ShardEvent`]s and sends commands, which
//!   wait for the session and the rate limit;
//! - [`CommandRateLimiter`]: the outbound rate limit of a connection (120
//!   payloads per 60 seconds, with room kept for heartbeats);
//! - [`after_close`]: the close-code policy (resume, identify anew, or stop
//!   with a [`FatalError`] that names the fix);
//! - [`Backoff`]: exponential reconnect backoff with jitter and a cap;
//! - [`Session`]: what a restarted process needs to resume;
//! - [`IdentifyQueue`]: the trait every identify goes through, and
//!   [`Unqueued`], the trivial queue of a lone shard;
//! - [`Endpoint`]: a `ws://`, `wss://`, `http://` or `https://` URL parsed
//!   by `http::Uri`, and the TCP (and TLS) connection to it.
//!
//! - [`Shard`]: the tokio driver that runs a [`ShardMachine`] on a real
//!   WebSocket (the opening handshake checked as RFC 6455 says, over
//!   hyper; TLS by rustls with webpki roots), yielding events in order as a
//!   `Stream` or through `next_event`;
//! - [`EventSink`] and [`SinkEvents`]: many shards' events in one stream, in
//!   the same batches (what a cluster and the NATS node use);
//! - [`Outgoing`]: what a user sends: shardwire's `Command`, twilight-model's
//!   outgoing payloads, any serializable payload, or raw JSON;
//! - [`Json`]: an event's JSON, read as a `&str`; the events of a batch
//!   share its buffer, so handing them out copies nothing.
//!
//! The resume point is the machine's: [`ShardMachine::session`] follows what
//! was delivered, and [`Shard::session`] what the handle's user took.
//!
//! A bot runs a [`Shard`] (or a cluster of them) and never sees the machine.
//! Driving the machine by hand shows what the driver does: open what
//! [`Order::Connect`] names, hand over each message, wait for the identify
//! queue when asked, write each frame `poll_transmit` returns.
//!
//! ```
//! use std::time::Instant;
//! use shardwire_codec::{Compression, MessageKind, Token};
//! use shardwire_shard::{Order, ShardConfig, ShardMachine, ShardState};
//! use twilight_model::gateway::Intents;
//!
//! let mut config = ShardConfig::new(
//!     Token::new("a token"),
//!     Intents::GUILD_MESSAGES,
//!     0, // shard id
//!     1, // shard count
//!     "wss://gateway.discord.gg",
//! );
//! config.compression = Compression::None;
//! let mut shard = ShardMachine::new(config);
//! let now = Instant::now();
//!
//! shard.connect(now);
//! let Some(Order::Connect { url }) = shard.poll_order() else { panic!("no Connect") };
//! assert_eq!(url, "wss://gateway.discord.gg/?v=10&encoding=json");
//! shard.handle_connected(now);
//!
//! let hello = br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}"#;
//! shard.handle_message(now, hello, MessageKind::Text);
//! assert_eq!(shard.poll_order(), Some(Order::WaitIdentifyTurn));
//! assert_eq!(shard.state(), ShardState::Identifying);
//!
//! shard.handle_identify_turn(now);
//! let identify = shard.poll_transmit().expect("an Identify to write");
//! assert!(identify.starts_with(br#"{"op":2,"#));
//! ```

mod batch;
mod driver;
mod handshake;
mod json;
mod machine;
mod memory;
pub mod metrics;
mod net;
mod outgoing;
mod policy;
mod queue;
mod ratelimit;
mod session;

pub use crate::driver::{EventSink, Shard, ShardSender, SinkEvents, Tap};
pub use crate::json::Json;
pub use crate::machine::{
    Order, ResumeError, SendError, ShardConfig, ShardEvent, ShardMachine, ShardState,
};
pub use crate::net::{Endpoint, InvalidUrl, Scheme, Stream, tls_config};
pub use crate::outgoing::Outgoing;
pub use crate::policy::{
    AfterClose, Backoff, FatalError, RESUMABLE_CLOSE, UNDECODABLE_LIMIT, after_close,
    close_code_meaning,
};
pub use crate::queue::{IdentifyQueue, IdentifyRefused, Unqueued, WaitTurn};
pub use crate::ratelimit::{CommandRateLimiter, LIMIT, WINDOW};
pub use crate::session::{Session, SessionError};
