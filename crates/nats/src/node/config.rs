use std::time::Duration;

use shardwire_cluster::{Configure, DEFAULT_API_BASE, IDENTIFY_WINDOW};
use shardwire_codec::{Compression, Token};
use twilight_model::gateway::Intents;

use crate::Layout;

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
    /// The NATS server, like `nats://127.0.0.1:4222`.
    pub nats_url: String,
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
    /// less).
    pub identify_window: Duration,
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
            .field("layout", &self.layout)
            .field("node_id", &self.node_id)
            .field("capacity", &self.capacity)
            .field("range_size", &self.range_size)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .field("identify_window", &self.identify_window)
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
            layout: Layout::default(),
            node_id: format!("{host}-{}", std::process::id()),
            capacity: 16,
            range_size: 4,
            shards: None,
            lease_ttl: Duration::from_secs(10),
            identify_window: IDENTIFY_WINDOW,
            compression: Compression::ZlibStream,
            configure: None,
        }
    }
}
