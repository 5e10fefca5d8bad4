use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The future [`IdentifyQueue::wait_turn`] returns.
pub type WaitTurn<'a> = Pin<Box<dyn Future<Output = Result<(), IdentifyRefused>> + Send + 'a>>;

/// Why a shard may not identify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyRefused {
    /// The daily session starts are used up; identifying anyway would get
    /// the token reset.
    #[error("no session starts left today; they reset in {reset_after:?}")]
    DailyLimitExhausted {
        /// When the daily limit resets, if known.
        reset_after: Option<Duration>,
    },
    /// The queue was shut down.
    #[error("the identify queue was shut down")]
    Closed,
}

/// Every identify goes through one of these: it decides when a shard may
/// send Identify.
///
/// The cluster's queue enforces `max_concurrency` buckets and the daily
/// limit; a multi-machine queue can replace it. The trait is object-safe, so
/// shards share an `Arc<dyn IdentifyQueue>`.
pub trait IdentifyQueue: Send + Sync + std::fmt::Debug {
    /// Resolves when `shard_id` may identify.
    fn wait_turn(&self, shard_id: u32) -> WaitTurn<'_>;
}

/// The queue of a lone shard: every turn comes at once. The shard's own
/// reconnect backoff and its wait after an invalid session space its
/// identifies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unqueued;

impl IdentifyQueue for Unqueued {
    fn wait_turn(&self, _shard_id: u32) -> WaitTurn<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}
