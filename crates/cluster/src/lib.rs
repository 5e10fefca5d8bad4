//! Many Discord Gateway shards as one: **partly built**.
//!
//! Built so far: [`LocalQueue`], the in-memory identify queue that honours
//! `max_concurrency` (one identify per bucket `shard_id % max_concurrency`
//! every 5 seconds, in order) and tracks the day's session starts. It
//! implements `shardwire_shard::IdentifyQueue`, so a multi-machine queue can
//! replace it.
//!
//! Not built yet: gateway information (`GET /gateway/bot`), spawning, the
//! merged event stream, routing by guild id and lifecycle control. They are
//! specified in the project's issue "Many shards as one".

mod queue;

pub use crate::queue::{IDENTIFY_WINDOW, LocalQueue};
