//! One Discord Gateway connection: **not built yet**.
//!
//! This crate will hold shardwire's sans-IO shard state machine (identify,
//! resume, reconnect, invalid session, close codes, command rate limit) and a
//! thin tokio driver over fastwebsockets and hyper. It is specified in the
//! project's issue "One connection done right"; until that lands, this crate
//! exports nothing.
