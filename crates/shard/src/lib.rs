//! One Discord Gateway connection: **partly built**.
//!
//! Built so far: [`CommandRateLimiter`], the outbound rate limit of a
//! connection (120 payloads per 60 seconds, with room kept for heartbeats),
//! pure and clock-free like the rest of this crate will be.
//!
//! Not built yet: the sans-IO shard state machine (identify, resume,
//! reconnect, invalid session, close codes, timeouts and backoff, sessions,
//! the identify-queue trait) and the tokio driver over fastwebsockets and
//! hyper. They are specified in the project's issue "One connection done
//! right".

mod ratelimit;

pub use crate::ratelimit::{CommandRateLimiter, LIMIT, WINDOW};
