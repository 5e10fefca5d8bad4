//! The heartbeat scheduler of shardwire: **not built yet**.
//!
//! This crate will hold a pure, clock-injected deadline scheduler for Discord
//! Gateway heartbeats: first-beat jitter, ACK tracking, zombie detection and
//! latency samples. It has no tokio and no sockets. Its interface and tests are
//! specified in the project's issue "One connection done right"; until that
//! lands, this crate exports nothing.
