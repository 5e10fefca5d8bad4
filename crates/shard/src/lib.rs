//! One Discord Gateway connection: **partly built**.
//!
//! Built so far, pure and clock-free like the rest of this crate will be:
//! - [`CommandRateLimiter`]: the outbound rate limit of a connection (120
//!   payloads per 60 seconds, with room kept for heartbeats);
//! - [`after_close`]: the close-code policy (resume, identify anew, or stop
//!   with a [`FatalError`] that names the fix);
//! - [`Backoff`]: exponential reconnect backoff with jitter and a cap;
//! - [`Session`]: what a restarted process needs to resume;
//! - [`IdentifyQueue`]: the trait every identify goes through, and
//!   [`Unqueued`], the trivial queue of a lone shard.
//!
//! Not built yet: the sans-IO shard state machine (identify, resume,
//! reconnect, invalid session, close codes, timeouts and backoff, sessions,
//! the identify-queue trait) and the tokio driver over fastwebsockets and
//! hyper. They are specified in the project's issue "One connection done
//! right".

mod policy;
mod queue;
mod ratelimit;
mod session;

pub use crate::policy::{AfterClose, Backoff, FatalError, RESUMABLE_CLOSE, after_close};
pub use crate::queue::{IdentifyQueue, IdentifyRefused, Unqueued, WaitTurn};
pub use crate::ratelimit::{CommandRateLimiter, LIMIT, WINDOW};
pub use crate::session::Session;
