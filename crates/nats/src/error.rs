/// What went wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// JetStream refused or did not answer.
    #[error("{what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The server's or client's reason.
        reason: String,
    },
    /// A compare-and-swap found another writer's revision: someone else
    /// holds the key now.
    #[error("`{key}` was written by another holder (expected revision {expected})")]
    Fenced {
        /// The key.
        key: String,
        /// The revision this holder last wrote.
        expected: u64,
    },
    /// A stored value does not parse.
    #[error("`{key}` holds an unreadable value: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A name or setting that cannot work.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl NatsError {
    pub(crate) fn jetstream(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::JetStream {
            what: what.into(),
            reason: error.to_string(),
        }
    }
}
