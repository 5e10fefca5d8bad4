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
//!   and demos; [`LocalCluster`]: several clustered, for tests of what
//!   survives the loss of a server.
//!
//! On a JetStream cluster, every stream and KV bucket gets
//! [`Nats::replicas`] copies (3 by default), and [`Nats::connect`] takes
//! the servers' URLs separated by commas: the client moves to another
//! server when its own goes away.
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
pub use crate::server::{LocalCluster, LocalServer, ServerError};
pub use crate::sessions::{SessionStore, StoredSessionError, parse_session};

/// A NATS URL, or several separated by commas, without the credentials
/// each may carry (`user:pass@`, `token@`), for logs, errors and `Debug`
/// output.
#[must_use]
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let (scheme, rest) = match server.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, server),
            };
            let rest = match rest.rsplit_once('@') {
                Some((_, host)) => format!("<redacted>@{host}"),
                None => rest.to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// The servers of a comma-separated list of NATS URLs.
fn parse_servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
    let servers: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    if servers.is_empty() {
        return Err(NatsError::Connect {
            url: redact_url(urls),
            reason: "no server URL given".into(),
        });
    }
    servers
        .into_iter()
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|error| NatsError::Connect {
                    url: redact_url(url),
                    reason: error.to_string(),
                })
        })
        .collect()
}

/// A connection to NATS with the JetStream context, the names a
/// shardwire deployment uses, and how many replicas the streams and KV
/// buckets it creates get.
#[derive(Clone, Debug)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    layout: Layout,
    /// The replica count asked for; `None`: [`Nats::default_replicas`],
    /// and existing streams are taken as they are.
    replicas: Option<usize>,
}

impl Nats {
    /// Connects to NATS at `url`, like `nats://127.0.0.1:4222`, or one of
    /// several servers of a cluster separated by commas
    /// (`nats://10.0.0.5:4222,nats://10.0.0.6:4222`), naming everything
    /// after `layout`. The client tries them in turn, and when the server
    /// it is connected to goes away it reconnects to another (also to the
    /// servers that one announces), for as long as it takes.
    ///
    /// # Errors
    ///
    /// [`NatsError::Connect`] when a URL does not parse or no server can be
    /// reached.
    pub async fn connect(url: &str, layout: Layout) -> Result<Self, NatsError> {
        let servers = parse_servers(url)?;
        let client = async_nats::ConnectOptions::new()
            .name("shardwire")
            .connection_timeout(std::time::Duration::from_secs(5))
            .connect(servers)
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
            replicas: None,
        }
    }

    /// Asks for `replicas` copies of every stream and KV bucket this
    /// connection creates (`None`: [`Nats::default_replicas`]). A stream
    /// that exists already must have that many: opening one with another
    /// count is refused (with `None`, it is taken as it is).
    ///
    /// # Errors
    ///
    /// [`NatsError::Invalid`] for a count outside 1 to [`MAX_REPLICAS`], or
    /// above 1 when the server is not part of a cluster.
    pub fn with_replicas(mut self, replicas: Option<usize>) -> Result<Self, NatsError> {
        if let Some(count) = replicas {
            if !(1..=MAX_REPLICAS).contains(&count) {
                return Err(NatsError::Invalid(format!(
                    "a replica count is 1 to {MAX_REPLICAS}, not {count}"
                )));
            }
            if count > 1 && !self.clustered() {
                return Err(NatsError::Invalid(format!(
                    "{count} replicas need a JetStream cluster, but the NATS server `{}` is alone: \
                     ask for 1 replica (`--replicas 1`) or cluster the servers",
                    self.client.server_info().server_name
                )));
            }
        }
        self.replicas = replicas;
        Ok(self)
    }

    /// Whether the server this connection reached is part of a cluster:
    /// its INFO names one (a cluster's servers all have one).
    #[must_use]
    pub fn clustered(&self) -> bool {
        self.client.server_info().cluster.is_some()
    }

    /// The replica count when none is asked for: 3 in a cluster (which
    /// then survives the loss of any one server), 1 on a lone server.
    #[must_use]
    pub fn default_replicas(&self) -> usize {
        if self.clustered() { 3 } else { 1 }
    }

    /// The replica count the streams and KV buckets this connection
    /// creates get: the one asked for ([`Nats::with_replicas`]), else
    /// [`Nats::default_replicas`].
    #[must_use]
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or_else(|| self.default_replicas())
    }

    /// Checks, before creating `what`, that the cluster can hold its
    /// replicas: as many servers must be up, as their INFO announces them
    /// (`connect_urls`; a cluster that announces none is left to
    /// JetStream to judge).
    fn check_placement(&self, what: &str) -> Result<usize, NatsError> {
        let replicas = self.replicas();
        if replicas <= 1 {
            return Ok(replicas);
        }
        let info = self.client.server_info();
        let Some(cluster) = &info.cluster else {
            return Err(NatsError::Invalid(format!(
                "{what} cannot be created with {replicas} replicas: the NATS server `{}` \
                 is not part of a cluster (ask for 1 replica, `--replicas 1`)",
                info.server_name
            )));
        };
        let mut servers = info.connect_urls.clone();
        servers.sort_unstable();
        servers.dedup();
        if !servers.is_empty() && servers.len() < replicas {
            return Err(too_few_servers(
                what,
                replicas,
                cluster,
                Some(servers.len()),
            ));
        }
        Ok(replicas)
    }

    /// Refuses an existing stream with another replica count than the one
    /// asked for; with none asked for, takes it (with a warning if it has
    /// fewer than the default).
    fn check_replicas(&self, what: &str, stream: &str, found: usize) -> Result<(), NatsError> {
        // JetStream reports 0 for a stream made without a count: 1.
        let found = found.max(1);
        match self.replicas {
            Some(asked) if asked != found => Err(NatsError::Invalid(format!(
                "{what} has {found} replica(s), but this process asks for {asked}: \
                 every node must ask for the same (`--replicas`), or for none to take what exists \
                 (or change it: `nats stream edit {stream} --replicas {asked}`)"
            ))),
            None if found < self.default_replicas() => {
                tracing::warn!(
                    stream,
                    replicas = found,
                    cluster_default = self.default_replicas(),
                    "{what} has fewer replicas than a cluster's default: it does not survive \
                     the loss of its server (`nats stream edit {stream} --replicas 3` raises it)"
                );
                Ok(())
            }
            _ => Ok(()),
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

    /// Opens (creating if needed, with [`Nats::replicas`] replicas) a KV
    /// bucket.
    pub(crate) async fn bucket(
        &self,
        name: String,
        max_age: std::time::Duration,
        description: &str,
    ) -> Result<async_nats::jetstream::kv::Store, NatsError> {
        let what = format!("the KV bucket `{name}`");
        let store = match self.jetstream.get_key_value(&name).await {
            Ok(store) => store,
            Err(missing) => {
                if !bucket_missing(&missing) {
                    return Err(NatsError::jetstream(format!("opening {what}"), missing));
                }
                let config = async_nats::jetstream::kv::Config {
                    bucket: name.clone(),
                    description: description.to_owned(),
                    history: 1,
                    max_age,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: self.check_placement(&what)?,
                    ..Default::default()
                };
                match self.jetstream.create_key_value(config).await {
                    Ok(store) => store,
                    // Another process made it meanwhile, perhaps with other
                    // settings (checked below).
                    Err(create) => match self.jetstream.get_key_value(&name).await {
                        Ok(store) => store,
                        Err(_) => return Err(self.creation_failed(&what, &create)),
                    },
                }
            }
        };
        // Entries that lapse sooner or later than this process expects
        // would break the identify window or the leases: every node must
        // use the same settings.
        let status = store.status().await.map_err(|error| {
            NatsError::jetstream(format!("reading the KV bucket `{name}`"), error)
        })?;
        self.check_replicas(
            &what,
            &format!("KV_{name}"),
            status.info.config.num_replicas,
        )?;
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

    /// Opens (creating if needed, with [`Nats::replicas`] replicas) the
    /// events stream: every subject under `<prefix>.events.>`,
    /// deduplicated by message id over at least `duplicate_window` (a
    /// stream made with a shorter window is given this one; a longer one is
    /// kept).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when JetStream refuses;
    /// [`NatsError::Invalid`] when the stream exists with another replica
    /// count than the one asked for, or the cluster has too few servers to
    /// create it with that many.
    pub async fn events_stream(
        &self,
        duplicate_window: std::time::Duration,
    ) -> Result<async_nats::jetstream::stream::Stream, NatsError> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        let name = self.layout.stream();
        let what = format!("the events stream `{name}`");
        let mut stream = match self.jetstream.get_stream(&name).await {
            Ok(stream) => stream,
            Err(error) => {
                let missing = matches!(error.kind(), GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
                if !missing {
                    return Err(NatsError::jetstream(format!("opening {what}"), error));
                }
                let config = async_nats::jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}.events.>", self.layout.prefix())],
                    duplicate_window,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: self.check_placement(&what)?,
                    ..Default::default()
                };
                match self.jetstream.get_or_create_stream(config).await {
                    Ok(stream) => stream,
                    Err(error) => return Err(self.creation_failed(&what, &error)),
                }
            }
        };
        self.check_replicas(&what, &name, stream.cached_info().config.num_replicas)?;
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

    /// Why creating `what` failed: too few servers for its replicas, said
    /// plainly, or JetStream's reason.
    fn creation_failed(&self, what: &str, error: &(dyn std::error::Error + 'static)) -> NatsError {
        if placement_refused(error) {
            let info = self.client.server_info();
            let cluster = info.cluster.as_deref().unwrap_or("(none)");
            return too_few_servers(what, self.replicas(), cluster, None);
        }
        NatsError::jetstream(format!("{what} cannot be created"), error)
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

/// The one-line refusal of a stream whose replicas the cluster cannot
/// place.
fn too_few_servers(what: &str, replicas: usize, cluster: &str, up: Option<usize>) -> NatsError {
    let up = up.map_or_else(String::new, |up| format!(" ({up} up)"));
    NatsError::Invalid(format!(
        "{what} cannot be created with {replicas} replicas: the NATS cluster `{cluster}` has \
         too few servers{up} to hold them; ask for fewer (`--replicas`) or bring more servers up"
    ))
}

/// Whether a KV bucket could not be opened because it does not exist.
fn bucket_missing(error: &async_nats::jetstream::context::KeyValueError) -> bool {
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind, KeyValueErrorKind};
    if error.kind() != KeyValueErrorKind::GetBucket {
        return false;
    }
    let source = std::error::Error::source(error);
    source
        .and_then(|source| source.downcast_ref::<GetStreamError>())
        .is_some_and(|inner| {
            matches!(inner.kind(), GetStreamErrorKind::JetStream(js)
                if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
        })
}

/// Whether JetStream refused to create a stream for want of servers to
/// place its replicas on.
fn placement_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(create) = error.downcast_ref::<CreateStreamError>()
            && let CreateStreamErrorKind::JetStream(js) = create.kind()
            && matches!(
                js.error_code(),
                ErrorCode::CLUSTER_NO_PEERS | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
            )
        {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::parse_servers;

    #[test]
    fn several_servers_parse_and_a_bad_one_is_named_without_its_credentials() {
        let servers =
            parse_servers("nats://127.0.0.1:4222, 127.0.0.1:4223,,tls://u:p@h:4224").unwrap();
        assert_eq!(servers.len(), 3);
        for bad in ["", " , ", "http://bot:s3cret@10.0.0.5:4222"] {
            let error = parse_servers(bad).unwrap_err().to_string();
            assert!(error.starts_with("cannot connect to NATS at"), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
