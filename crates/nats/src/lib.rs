//! shardwire beyond one process: many gateway nodes share a bot's shards
//! through NATS JetStream.
//!
//! Every piece lives in JetStream, so no coordinator of shardwire's own has
//! to stay up:
//! - [`NatsQueue`]: the identify queue across processes. One key per
//!   rate-limit bucket (`shard_id % max_concurrency`) in a KV bucket whose
//!   entries expire after the identify window: a shard identifies only after
//!   it has *created* its bucket's key, and creation fails while the key
//!   exists. It also guards the day's remaining session starts. It
//!   implements [`shardwire_shard::IdentifyQueue`], so a
//!   [`Cluster`](shardwire_cluster::Cluster) or a lone
//!   [`Shard`](shardwire_shard::Shard) can use it.
//! - [`Leases`]: ranges of shards leased through KV compare-and-swap, the
//!   revision being the fencing token; a lease not renewed expires.
//! - [`SessionStore`]: `{session_id, seq, resume_url}` per shard, written by
//!   compare-and-swap so a process that lost a shard cannot overwrite it.
//! - Events: each dispatch goes to the stream on
//!   `<prefix>.events.<shard>.<EVENT>` with the message id
//!   `<session>:<seq>`, so JetStream drops the copies a resume replays;
//!   [`EventConsumer`] reads them back (durable pull consumer, explicit ack).
//! - [`Node`]: one gateway process of a cluster of nodes (`shardwire node`):
//!   it claims leases up to its capacity, resumes each shard from the
//!   session store, publishes, advances the stored seq only once JetStream
//!   has acknowledged the events, and takes commands on
//!   `<prefix>.commands.<shard>`.
//! - [`LocalServer`]: a `nats-server` with JetStream on loopback, for tests
//!   and demos.
//!
//! Everything starts from a [`Nats`] connection. The example names a
//! dispatch's message id, then takes a shard's session over (fencing out
//! whoever held it) and stores how far it got, on a local `nats-server`
//! found through `NATS_SERVER` or the `PATH`; without one it stops there:
//!
//! ```
//! use shardwire_nats::{Layout, LocalServer, Nats, message_id, parse_message_id};
//! use shardwire_shard::Session;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The message id a dispatch is published under, so JetStream drops
//! // the copy a resume replays.
//! assert_eq!(message_id("3f2a9c0e", 43), "3f2a9c0e:43");
//! assert_eq!(parse_message_id("3f2a9c0e:43"), Some(("3f2a9c0e", 43)));
//!
//! let Some(server) = LocalServer::start_or_skip().await? else { return Ok(()) };
//! let nats = Nats::connect(&server.url(), Layout::default()).await?;
//! let sessions = nats.sessions().await?;
//! // No session yet: the shard would identify. The revision is what the
//! // next write must be made over.
//! let (session, revision) = sessions.take(3).await?;
//! assert_eq!(session, None);
//! let session = Session::new("3f2a9c0e".into(), 42, "wss://resume.example".into())?;
//! sessions.store(3, &session, revision).await?;
//! assert_eq!(sessions.load(3).await?.0, Some(session));
//! # Ok(())
//! # }
//! ```

mod consumer;
mod error;
mod layout;
mod lease;
pub mod metrics;
mod node;
mod queue;
mod reshard;
mod server;
mod sessions;

pub use crate::consumer::{Delivery, EventConsumer};
pub use crate::error::NatsError;
pub use crate::layout::{
    Layout, RESHARD_HEADER, event_subject, message_id, parse_event_subject, parse_message_id,
};
pub use crate::lease::{Lease, Leases, LiveNode};
pub use crate::node::{Node, NodeConfig, NodeError};
pub use crate::queue::NatsQueue;
pub use crate::reshard::Reshard;
pub use crate::server::{LocalServer, ServerError};
pub use crate::sessions::{SessionStore, StoredSessionError, parse_session};

/// A NATS URL without the credentials it may carry (`user:pass@`,
/// `token@`), for logs, errors and `Debug` output.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let redacted: Vec<String> = rest
        .split(',')
        .map(|server| match server.rsplit_once('@') {
            Some((_, host)) => format!("<redacted>@{host}"),
            None => server.to_owned(),
        })
        .collect();
    let rest = redacted.join(",");
    if scheme.is_empty() && !url.contains("://") {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// A connection to NATS with the JetStream context and the names a
/// shardwire deployment uses.
#[derive(Clone, Debug)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    layout: Layout,
}

impl Nats {
    /// Connects to the NATS server at `url` (like `nats://127.0.0.1:4222`),
    /// naming everything after `layout`.
    ///
    /// # Errors
    ///
    /// [`NatsError::Connect`] when the server cannot be reached.
    pub async fn connect(url: &str, layout: Layout) -> Result<Self, NatsError> {
        let client = async_nats::ConnectOptions::new()
            .name("shardwire")
            .connection_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|error| NatsError::Connect {
                url: redact_url(url),
                reason: error.to_string(),
            })?;
        Ok(Self::with_client(client, layout))
    }

    /// Wraps a connection the caller made.
    #[must_use]
    pub fn with_client(client: async_nats::Client, layout: Layout) -> Self {
        let jetstream = async_nats::jetstream::new(client.clone());
        Self {
            client,
            jetstream,
            layout,
        }
    }

    /// The core NATS client.
    #[must_use]
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    #[must_use]
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }

    /// The names in use.
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Opens (creating if needed) a KV bucket.
    pub(crate) async fn bucket(
        &self,
        name: String,
        max_age: std::time::Duration,
        description: &str,
    ) -> Result<async_nats::jetstream::kv::Store, NatsError> {
        let config = async_nats::jetstream::kv::Config {
            bucket: name.clone(),
            description: description.to_owned(),
            history: 1,
            max_age,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let store = match self.jetstream.create_key_value(config).await {
            Ok(store) => store,
            // Made earlier with other settings.
            Err(create) => self.jetstream.get_key_value(&name).await.map_err(|_| {
                NatsError::jetstream(format!("the KV bucket `{name}` cannot be opened"), create)
            })?,
        };
        // Entries that lapse sooner or later than this process expects
        // would break the identify window or the leases: every node must
        // use the same settings.
        let status = store.status().await.map_err(|error| {
            NatsError::jetstream(format!("reading the KV bucket `{name}`"), error)
        })?;
        if status.max_age() != max_age {
            return Err(NatsError::Invalid(format!(
                "the KV bucket `{name}` keeps entries for {:?}, but this process expects {max_age:?}: \
                 every node must use the same lease TTL and identify window \
                 (or delete the bucket to start over)",
                status.max_age()
            )));
        }
        Ok(store)
    }

    /// Opens (creating if needed) the events stream: every subject under
    /// `<prefix>.events.>`, deduplicated by message id over at least
    /// `duplicate_window` (a stream made with a shorter window is given
    /// this one; a longer one is kept).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when JetStream refuses.
    pub async fn events_stream(
        &self,
        duplicate_window: std::time::Duration,
    ) -> Result<async_nats::jetstream::stream::Stream, NatsError> {
        let config = async_nats::jetstream::stream::Config {
            name: self.layout.stream(),
            subjects: vec![format!("{}.events.>", self.layout.prefix())],
            duplicate_window,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let mut stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| NatsError::jetstream("the events stream cannot be opened", error))?;
        let current = stream.cached_info().config.clone();
        if current.duplicate_window < duplicate_window {
            tracing::info!(
                from = ?current.duplicate_window,
                to = ?duplicate_window,
                "lengthening the events stream's duplicate window"
            );
            let longer = async_nats::jetstream::stream::Config {
                duplicate_window,
                ..current
            };
            self.jetstream
                .update_stream(longer)
                .await
                .map_err(|error| {
                    NatsError::jetstream(
                        "the events stream's duplicate window cannot be lengthened",
                        error,
                    )
                })?;
            stream = self
                .jetstream
                .get_stream(self.layout.stream())
                .await
                .map_err(|error| {
                    NatsError::jetstream("the events stream cannot be opened", error)
                })?;
        }
        Ok(stream)
    }

    /// The identify queue for `max_concurrency` buckets of `window` each
    /// (Discord: 5 s; a simulator may use less).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when its KV buckets cannot be opened.
    pub async fn identify_queue(
        &self,
        max_concurrency: u32,
        window: std::time::Duration,
        holder: &str,
    ) -> Result<NatsQueue, NatsError> {
        NatsQueue::open(self, max_concurrency, window, holder).await
    }

    /// Shard leases held by `holder`, expiring `ttl` after their last
    /// renewal.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the KV bucket cannot be opened.
    pub async fn leases(
        &self,
        ttl: std::time::Duration,
        holder: &str,
    ) -> Result<Leases, NatsError> {
        Leases::open(self, ttl, holder).await
    }

    /// The session store.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the KV bucket cannot be opened.
    pub async fn sessions(&self) -> Result<SessionStore, NatsError> {
        SessionStore::open(self).await
    }

    /// A durable pull consumer named `durable` on the events stream,
    /// delivering the subjects `filter` matches (`None`: every event), each
    /// to be acknowledged.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the stream or consumer cannot be made.
    pub async fn consumer(
        &self,
        durable: &str,
        filter: Option<&str>,
    ) -> Result<EventConsumer, NatsError> {
        EventConsumer::open(self, durable, filter).await
    }
}
