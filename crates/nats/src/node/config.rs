use std::time::Duration;

use shardwire_cluster::{Configure, DEFAULT_API_BASE, IDENTIFY_WINDOW};
use shardwire_codec::{Compression, Token};
use twilight_model::gateway::Intents;

use super::NodeError;
use crate::Layout;

/// How long JetStream remembers message ids by default.
pub(crate) const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// The shortest time JetStream keeps an entry of a KV bucket (a stream's
/// `max_age` must be 0 or at least this).
const MIN_BUCKET_AGE: Duration = Duration::from_millis(100);
/// The shortest lease: each renewal then has 500 ms to get through, and
/// is tried three times before the lease is given up.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// What a duplicate window must cover beyond a lease TTL: the next owner
/// claiming the range and resuming its shards, which replays what the last
/// owner published but did not store as its seq.
const RESUME_ALLOWANCE: Duration = Duration::from_secs(30);

/// How a node runs. Build with [`NodeConfig::new`], then set fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The bot token (redacted in `Debug`).
    pub token: Token,
    /// The gateway intents.
    pub intents: Intents,
    /// The API base `/gateway/bot` is fetched from.
    pub api_base: String,
    /// The NATS server, like `nats://127.0.0.1:4222`, or several servers
    /// of a cluster separated by commas: the node reconnects to another
    /// when the one it is connected to goes away (see [`crate::Nats::connect`]).
    pub nats_url: String,
    /// Copies JetStream keeps of each stream and KV bucket the node creates
    /// (`None`: 3 in a cluster, 1 on a lone server). Every node must ask
    /// for the same, or for none; see [`crate::Nats::with_replicas`].
    pub replicas: Option<usize>,
    /// Names of subjects, stream and buckets.
    pub layout: Layout,
    /// This node's name, unique in the cluster (default: host and process
    /// id).
    pub node_id: String,
    /// The most shards this node runs.
    pub capacity: u32,
    /// Shards per leased range. Every node of a cluster must use the same.
    pub range_size: u32,
    /// The bot's shard count (default: what `/gateway/bot` recommends; the
    /// first node stores it and every later node follows it).
    pub shards: Option<u32>,
    /// How long a lease lives without renewal; it is renewed every third
    /// of it. A dead node's shards are taken over about this long after it
    /// died.
    pub lease_ttl: Duration,
    /// The identify window per bucket (Discord: 5 s; a simulator may use
    /// less, down to 100 ms).
    pub identify_window: Duration,
    /// How long JetStream remembers a message id and drops a copy of it
    /// (default 2 minutes). It must cover a takeover: twice the lease TTL,
    /// for the lease to lapse and the range to be claimed, and 30 s for
    /// the resume. A stream made with a shorter window is given this one.
    pub dedup_window: Duration,
    /// How long, in a reshard, a range keeps what its old generation
    /// handed out to match the new generation's copies against (default
    /// 5 s): a guild's two streams more than this far apart may double
    /// events.
    pub reshard_overlap: Duration,
    /// Transport compression.
    pub compression: Compression,
    /// Adjusts each shard's configuration before it starts.
    pub configure: Option<Configure>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("token", &self.token)
            .field("intents", &self.intents)
            .field("api_base", &self.api_base)
            .field("nats_url", &crate::redact_url(&self.nats_url))
            .field("replicas", &self.replicas)
            .field("layout", &self.layout)
            .field("node_id", &self.node_id)
            .field("capacity", &self.capacity)
            .field("range_size", &self.range_size)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .field("identify_window", &self.identify_window)
            .field("dedup_window", &self.dedup_window)
            .field("reshard_overlap", &self.reshard_overlap)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// A node on Discord's API and the NATS server at `nats_url`: up to 16
    /// shards in ranges of 4, leases of 10 s.
    #[must_use]
    pub fn new(token: Token, intents: Intents, nats_url: impl Into<String>) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            token,
            intents,
            api_base: DEFAULT_API_BASE.to_owned(),
            nats_url: nats_url.into(),
            replicas: None,
            layout: Layout::default(),
            node_id: format!("{host}-{}", std::process::id()),
            capacity: 16,
            range_size: 4,
            shards: None,
            lease_ttl: Duration::from_secs(10),
            identify_window: IDENTIFY_WINDOW,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            reshard_overlap: Duration::from_secs(5),
            compression: Compression::ZlibStream,
            configure: None,
        }
    }

    /// Refuses, before anything is opened, settings that cannot work, with
    /// the fix.
    pub(crate) fn check(&self) -> Result<(), NodeError> {
        let invalid = |message: String| Err(NodeError::Invalid(message));
        if self.range_size == 0 {
            return invalid("the range size must be at least 1".into());
        }
        if self.capacity < self.range_size {
            return invalid(format!(
                "a capacity of {} shards cannot hold one range of {}: raise the capacity or lower the range size",
                self.capacity, self.range_size
            ));
        }
        if self.shards == Some(0) {
            return invalid("the shard count must be at least 1".into());
        }
        // The identify bucket keeps each key for the window plus 5%.
        let bucket_age = self.identify_window + self.identify_window / 20;
        if bucket_age < MIN_BUCKET_AGE {
            return invalid(format!(
                "an identify window of {:?} is shorter than JetStream keeps a KV entry: \
                 set it to 100 ms or more (Discord's is 5 s)",
                self.identify_window
            ));
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return invalid(format!(
                "a lease TTL of {:?} leaves {:?} for each renewal (one every {:?}): set it to 2 s or more",
                self.lease_ttl,
                self.lease_ttl / 4,
                self.lease_ttl / 3
            ));
        }
        let takeover = self.lease_ttl * 2 + RESUME_ALLOWANCE;
        if self.dedup_window < takeover {
            return invalid(format!(
                "a duplicate window of {:?} is shorter than a takeover (twice the lease TTL of {:?}, \
                 and 30 s to resume): JetStream would store twice what a resumed shard replays; \
                 set it to {} s or more, or shorten the lease TTL",
                self.dedup_window,
                self.lease_ttl,
                takeover.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig::new(Token::new("t"), Intents::GUILDS, "nats://127.0.0.1:4222")
    }

    fn refusal(config: &NodeConfig) -> String {
        match config.check() {
            Err(NodeError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_work() {
        assert!(config().check().is_ok());
    }

    #[test]
    fn an_identify_window_jetstream_cannot_keep_is_refused_with_the_fix() {
        let mut config = config();
        config.identify_window = Duration::from_millis(1);
        assert!(refusal(&config).contains("set it to 100 ms or more"));
        config.identify_window = Duration::from_millis(95);
        assert!(refusal(&config).contains("95ms"));
        // 100 ms plus 5% is over JetStream's floor.
        config.identify_window = Duration::from_millis(100);
        assert!(config.check().is_ok());
    }

    #[test]
    fn a_lease_too_short_to_renew_is_refused() {
        let mut config = config();
        config.lease_ttl = Duration::from_secs(1);
        config.dedup_window = Duration::from_secs(600);
        let message = refusal(&config);
        assert!(message.contains("one every 333"), "{message}");
        assert!(message.contains("2 s or more"), "{message}");
        config.lease_ttl = Duration::from_secs(2);
        assert!(config.check().is_ok());
    }

    #[test]
    fn a_duplicate_window_shorter_than_a_takeover_is_refused() {
        let mut config = config();
        config.lease_ttl = Duration::from_secs(60);
        // 2 × 60 s + 30 s = 150 s, over the default 120 s.
        let message = refusal(&config);
        assert!(message.contains("set it to 150 s or more"), "{message}");
        config.dedup_window = Duration::from_secs(150);
        assert!(config.check().is_ok());
        config.lease_ttl = Duration::from_secs(10);
        config.dedup_window = Duration::from_secs(49);
        assert!(refusal(&config).contains("50 s"));
    }

    #[test]
    fn ranges_that_cannot_fit_are_refused() {
        let mut config = config();
        config.range_size = 0;
        assert!(refusal(&config).contains("range size"));
        config.range_size = 8;
        config.capacity = 4;
        assert!(refusal(&config).contains("cannot hold one range of 8"));
        config.capacity = 8;
        config.shards = Some(0);
        assert!(refusal(&config).contains("shard count"));
    }
}
