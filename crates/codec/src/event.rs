use std::collections::HashSet;
use std::fmt;

use serde::de::DeserializeSeed;
use twilight_model::gateway::event::{
    DispatchEvent, DispatchEventWithTypeDeserializer, EventType, GatewayEvent,
};
use twilight_model::gateway::payload::incoming::Hello;

use crate::Payload;

/// Which dispatches to decode into typed events.
///
/// A dispatch whose type is not in the filter is never deserialized: it costs
/// the scan and nothing more. Non-dispatch payloads (Hello, Heartbeat ACK,
/// Invalid Session, …) are small and always decoded.
///
/// ```
/// use shardwire_codec::EventFilter;
/// use twilight_model::gateway::event::EventType;
///
/// let filter = EventFilter::only([EventType::MessageCreate, EventType::Ready]);
/// assert!(filter.wants(EventType::MessageCreate));
/// assert!(!filter.wants(EventType::PresenceUpdate));
/// assert!(EventFilter::all().wants(EventType::PresenceUpdate));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFilter {
    all: bool,
    types: HashSet<EventType>,
}

impl Default for EventFilter {
    fn default() -> Self {
        Self::all()
    }
}

impl EventFilter {
    /// Decode every dispatch.
    #[must_use]
    pub fn all() -> Self {
        Self {
            all: true,
            types: HashSet::new(),
        }
    }

    /// Decode no dispatch: every one stays raw.
    #[must_use]
    pub fn none() -> Self {
        Self {
            all: false,
            types: HashSet::new(),
        }
    }

    /// Decode only the given dispatch types.
    #[must_use]
    pub fn only(types: impl IntoIterator<Item = EventType>) -> Self {
        Self {
            all: false,
            types: types.into_iter().collect(),
        }
    }

    /// Adds a type to the filter.
    pub fn insert(&mut self, event_type: EventType) {
        if !self.all {
            self.types.insert(event_type);
        }
    }

    /// Whether every dispatch type is decoded.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether any dispatch type at all is decoded.
    #[must_use]
    pub fn wants_any(&self) -> bool {
        self.all || !self.types.is_empty()
    }

    /// Whether dispatches of this type are decoded.
    #[must_use]
    pub fn wants(&self, event_type: EventType) -> bool {
        self.all || self.types.contains(&event_type)
    }
}

/// The outcome of decoding a [`Payload`] into a typed event.
///
/// Decoding never fails in a way that should end a connection: a payload that
/// cannot be typed is reported here, and its raw JSON stays available from the
/// payload itself.
#[derive(Debug)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "boxing would add an allocation per event; a Decoded is matched at once, not stored"
)]
pub enum Decoded {
    /// The typed event.
    Event(GatewayEvent),
    /// A dispatch the filter does not want; it was not deserialized.
    Filtered,
    /// A dispatch name or opcode twilight-model does not know, passed through
    /// raw.
    Unknown,
    /// A known event that twilight-model could not deserialize.
    Failed(EventDecodeError),
}

/// A known event whose `d` twilight-model could not deserialize.
#[derive(Debug, thiserror::Error)]
#[error("could not decode {event}: {detail}")]
pub struct EventDecodeError {
    event: String,
    detail: String,
}

impl EventDecodeError {
    fn new(event: impl fmt::Display, detail: impl fmt::Display) -> Self {
        Self {
            event: event.to_string(),
            detail: detail.to_string(),
        }
    }

    /// The event name, or `op N` for a non-dispatch payload.
    #[must_use]
    pub fn event(&self) -> &str {
        &self.event
    }
}

/// Which way typed events are deserialized. Chosen by benchmark; see
/// docs/benchmarks.md ("The typed path"). The others stay for the
/// benchmarks and the fuzz target, which hold them to the same results.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypedParser {
    /// serde_json over `d` as text, MESSAGE_CREATE read in one pass (see
    /// [`DispatchSeed`]): the default.
    SerdeJson,
    /// serde_json over `d` as bytes (it checks every string's UTF-8 again).
    SerdeJsonBytes,
    /// serde_json with twilight-model's own seed, as twilight-gateway
    /// deserializes (MESSAGE_CREATE through serde's flatten buffer).
    TwilightModel,
    /// sonic-rs, with [`DispatchSeed`].
    SonicRs,
}

impl TypedParser {
    /// Every way, the default first.
    pub const ALL: [TypedParser; 4] = [
        TypedParser::SerdeJson,
        TypedParser::SerdeJsonBytes,
        TypedParser::TwilightModel,
        TypedParser::SonicRs,
    ];
}

/// The parser typed decoding uses by default.
const DEFAULT_PARSER: TypedParser = TypedParser::SerdeJson;

/// The seed that deserializes one dispatch's `d` as twilight-model's
/// `DispatchEventWithTypeDeserializer` does, to the same value, with
/// MESSAGE_CREATE read in one pass instead of two. Public for the
/// benchmarks, which run it on other parsers.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct DispatchSeed<'a> {
    name: &'a str,
}

impl<'a> DispatchSeed<'a> {
    /// The seed for a dispatch named `name` (`t`).
    #[must_use]
    pub fn new(name: &'a str) -> Self {
        Self { name }
    }
}

impl<'de> DeserializeSeed<'de> for DispatchSeed<'_> {
    type Value = DispatchEvent;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<DispatchEvent, D::Error> {
        crate::dispatch::deserialize(self.name, deserializer)
    }
}

/// Deserializes one dispatch's `d`, which must be exactly one JSON value.
fn deserialize_dispatch(
    name: &str,
    data: &str,
    parser: TypedParser,
) -> Result<DispatchEvent, String> {
    fn serde_json<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        seed: impl DeserializeSeed<'de, Value = DispatchEvent>,
    ) -> Result<DispatchEvent, String> {
        let event = seed.deserialize(&mut de).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(event)
    }
    match parser {
        TypedParser::SerdeJson => serde_json(
            serde_json::Deserializer::from_str(data),
            DispatchSeed::new(name),
        ),
        TypedParser::SerdeJsonBytes => serde_json(
            serde_json::Deserializer::from_slice(data.as_bytes()),
            DispatchSeed::new(name),
        ),
        TypedParser::TwilightModel => serde_json(
            serde_json::Deserializer::from_str(data),
            DispatchEventWithTypeDeserializer::new(name),
        ),
        TypedParser::SonicRs => {
            // sonic-rs recurses without a bound where it skips values, so a
            // deep `d` would overflow the stack: its depth is checked first.
            crate::json::skip_value(data.as_bytes(), 0, 0)
                .map_err(|error| format!("{} at byte {} of `d`", error.what, error.at))?;
            let mut de = sonic_rs::Deserializer::from_str(data);
            let event = DispatchSeed::new(name)
                .deserialize(&mut de)
                .map_err(|e| e.to_string())?;
            de.end().map_err(|e| e.to_string())?;
            Ok(event)
        }
    }
}

impl Payload<'_> {
    /// Decodes this payload into a twilight-model [`GatewayEvent`], if the
    /// filter wants it.
    #[must_use]
    pub fn decode(&self, filter: &EventFilter) -> Decoded {
        self.decode_with(filter, DEFAULT_PARSER)
    }

    /// [`Payload::decode`] with a chosen parser, for benchmarks.
    #[doc(hidden)]
    #[must_use]
    pub fn decode_with(&self, filter: &EventFilter, parser: TypedParser) -> Decoded {
        let data = self.data();
        let event = match self.op() {
            0 => {
                let Some(name) = self.event_type() else {
                    return Decoded::Failed(EventDecodeError::new("op 0", "dispatch without `t`"));
                };
                let Ok(event_type) = EventType::try_from(name) else {
                    return Decoded::Unknown;
                };
                if !filter.wants(event_type) {
                    return Decoded::Filtered;
                }
                let Some(seq) = self.seq() else {
                    return Decoded::Failed(EventDecodeError::new(name, "dispatch without `s`"));
                };
                match deserialize_dispatch(name, data, parser) {
                    Ok(event) => GatewayEvent::Dispatch(seq, event),
                    // A lazy scan took `d` to be the last field; if it was
                    // not, `d` had more after it. Scan strictly and retry.
                    Err(_) if !self.is_strict() => {
                        match Payload::scan_strict(self.json().as_bytes()) {
                            Ok(strict) => return strict.decode_with(filter, parser),
                            Err(error) => {
                                return Decoded::Failed(EventDecodeError::new(name, error));
                            }
                        }
                    }
                    Err(detail) => return Decoded::Failed(EventDecodeError::new(name, detail)),
                }
            }
            1 => GatewayEvent::Heartbeat,
            7 => GatewayEvent::Reconnect,
            9 => match data.trim() {
                "true" => GatewayEvent::InvalidateSession(true),
                "false" => GatewayEvent::InvalidateSession(false),
                other => {
                    return Decoded::Failed(EventDecodeError::new(
                        "op 9",
                        format!("`d` is {other}, expected a boolean"),
                    ));
                }
            },
            10 => match serde_json::from_str::<Hello>(data) {
                Ok(hello) => GatewayEvent::Hello(hello),
                Err(error) => return Decoded::Failed(EventDecodeError::new("op 10", error)),
            },
            11 => GatewayEvent::HeartbeatAck,
            _ => return Decoded::Unknown,
        };
        Decoded::Event(event)
    }
}
