use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures_util::StreamExt;

use crate::layout::{parse_event_subject, parse_message_id};
use crate::{Layout, Nats, NatsError};

/// How long a delivered event may stay unacknowledged before JetStream
/// delivers it again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// A worker's view of the events stream: a durable pull consumer with
/// explicit acknowledgement. Its position is kept by JetStream, so a worker
/// that restarts under the same name goes on where it stopped; events it
/// took but did not acknowledge come again.
pub struct EventConsumer {
    messages: pull::Stream,
    layout: Layout,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// One event taken from the stream. Acknowledge it with
/// [`Delivery::ack`] once handled.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    /// The shard it came from.
    pub shard: u32,
    /// Its event name, as in the subject.
    pub event_type: String,
    /// The gateway session it came on.
    pub session_id: String,
    /// Its sequence number in that session.
    pub seq: u64,
    /// The shard count of the reshard it comes from, on a new generation's
    /// READY and GUILD_CREATEs during a reshard ([`RESHARD_HEADER`]): a
    /// cache takes them as a refresh, not as guilds joining.
    ///
    /// [`RESHARD_HEADER`]: crate::RESHARD_HEADER
    pub from_reshard: Option<u32>,
}

impl Delivery {
    /// The dispatch payload as received from the gateway:
    /// `{"t":…,"s":…,"op":0,"d":…}`.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// How many times JetStream has delivered it (more than 1 after a
    /// worker took it and did not acknowledge in time).
    #[must_use]
    pub fn delivered(&self) -> i64 {
        self.message.info().map_or(1, |info| info.delivered)
    }

    /// Its sequence number in the stream: one stored event has one, however
    /// often it is delivered (a resume's replays were dropped before they
    /// got one).
    #[must_use]
    pub fn stream_sequence(&self) -> u64 {
        self.message.info().map_or(0, |info| info.stream_sequence)
    }

    /// Acknowledges it: JetStream will not deliver it to this consumer
    /// again. An acknowledgement is not confirmed: one lost on its way (the
    /// server restarting, say) lets the event come again, so a worker that
    /// must not act twice remembers `(session_id, seq)` or uses
    /// [`Delivery::ack_confirmed`].
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the acknowledgement cannot be sent.
    pub async fn ack(&self) -> Result<(), NatsError> {
        self.message
            .ack()
            .await
            .map_err(|error| NatsError::jetstream("acknowledging an event", error))
    }

    /// Acknowledges it and waits for the server to confirm (a round trip):
    /// once this returns `Ok`, the event will not come again.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the server did not confirm; the event
    /// may then come again.
    pub async fn ack_confirmed(&self) -> Result<(), NatsError> {
        self.message
            .double_ack()
            .await
            .map_err(|error| NatsError::jetstream("acknowledging an event", error))
    }
}

impl EventConsumer {
    pub(crate) async fn open(
        nats: &Nats,
        durable: &str,
        filter: Option<&str>,
    ) -> Result<Self, NatsError> {
        let stream = nats
            .events_stream(crate::node::DEFAULT_DEDUP_WINDOW)
            .await?;
        let config = pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            filter_subject: filter.map(str::to_owned).unwrap_or_default(),
            ..Default::default()
        };
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(durable, config)
            .await
            .map_err(|error| {
                NatsError::jetstream(format!("opening the consumer `{durable}`"), error)
            })?;
        let messages = consumer
            .messages()
            .await
            .map_err(|error| NatsError::jetstream("pulling events", error))?;
        Ok(Self {
            messages,
            layout: nats.layout().clone(),
        })
    }

    /// The next event. Messages on the stream that shardwire did not
    /// publish (no shard in the subject, or no message id) are
    /// acknowledged and skipped.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the pull fails; the consumer may be
    /// polled again.
    pub async fn next(&mut self) -> Option<Result<Delivery, NatsError>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(error) => return Some(Err(NatsError::jetstream("pulling events", error))),
            };
            let parsed = parse_event_subject(&self.layout, message.subject.as_str()).and_then(
                |(shard, event_type)| {
                    let id = message
                        .headers
                        .as_ref()?
                        .get(async_nats::header::NATS_MESSAGE_ID)?;
                    let (session, seq) = parse_message_id(id.as_str())?;
                    Some((shard, event_type.to_owned(), session.to_owned(), seq))
                },
            );
            match parsed {
                Some((shard, event_type, session_id, seq)) => {
                    let from_reshard = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(crate::RESHARD_HEADER))
                        .and_then(|total| total.as_str().parse().ok());
                    return Some(Ok(Delivery {
                        message,
                        shard,
                        event_type,
                        session_id,
                        seq,
                        from_reshard,
                    }));
                }
                None => {
                    tracing::warn!(subject = %message.subject, "skipping a message shardwire did not publish");
                    let _ = message.ack().await;
                }
            }
        }
    }
}
