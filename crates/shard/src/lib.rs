//! One Discord Gateway connection: **the protocol is built, the driver is not**.
//!
//! Built so far, pure and clock-free like the rest of this crate will be:
//! - [`Shard`]: the sans-IO state machine of one connection. The driver
//!   feeds it what happened (`connect`, `handle_connected`,
//!   `handle_message`, `handle_close`, `handle_timeout`,
//!   `handle_identify_turn`) and carries out its [`Order`]s and frames,
//!   sleeping until `poll_timeout`; the user reads [`ShardEvent`]s and sends
//!   commands, which wait for the session and the rate limit;
//! - [`CommandRateLimiter`]: the outbound rate limit of a connection (120
//!   payloads per 60 seconds, with room kept for heartbeats);
//! - [`after_close`]: the close-code policy (resume, identify anew, or stop
//!   with a [`FatalError`] that names the fix);
//! - [`Backoff`]: exponential reconnect backoff with jitter and a cap;
//! - [`Session`]: what a restarted process needs to resume;
//! - [`IdentifyQueue`]: the trait every identify goes through, and
//!   [`Unqueued`], the trivial queue of a lone shard.
//!
//! Not built yet: the tokio driver over fastwebsockets and hyper (TLS by
//! rustls) that runs a [`Shard`] on a real socket, and the `Stream` of
//! events it offers. It is specified in the project's issue "One connection
//! done right".

mod machine;
mod policy;
mod queue;
mod ratelimit;
mod session;

pub use crate::machine::{Order, SendError, Shard, ShardConfig, ShardEvent, ShardState};
pub use crate::policy::{AfterClose, Backoff, FatalError, RESUMABLE_CLOSE, after_close};
pub use crate::queue::{IdentifyQueue, IdentifyRefused, Unqueued, WaitTurn};
pub use crate::ratelimit::{CommandRateLimiter, LIMIT, WINDOW};
pub use crate::session::Session;
