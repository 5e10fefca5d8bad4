//! What a user sends on a shard: shardwire's [`Command`], twilight-model's
//! outgoing payloads, any serializable payload, or raw JSON.

use serde::Serialize;
use shardwire_codec::Command;
use twilight_model::gateway::payload::outgoing as twilight;

use crate::SendError;

/// A payload for [`Shard::send`](crate::Shard::send) and the senders: every
/// kind goes through the same queue, rate limit and 4096-byte check.
///
/// - shardwire's [`Command`], and twilight-model's [`UpdatePresence`],
///   [`RequestGuildMembers`] and [`UpdateVoiceState`], convert with `into()`;
/// - [`Outgoing::serialize`] takes any payload that serializes to
///   `{"op": …, "d": …}`;
/// - [`Outgoing::json`] takes raw JSON text.
///
/// ```
/// use shardwire_shard::Outgoing;
/// use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
/// use twilight_model::id::Id;
///
/// let leave: Outgoing = UpdateVoiceState::new(Id::new(1), None, false, false).into();
/// let raw = Outgoing::json(r#"{"op":1,"d":null}"#);
/// # let _ = (leave, raw);
/// ```
///
/// [`UpdatePresence`]: twilight::UpdatePresence
/// [`RequestGuildMembers`]: twilight::RequestGuildMembers
/// [`UpdateVoiceState`]: twilight::UpdateVoiceState
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing(pub(crate) Repr);

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Repr {
    /// Encoded by the codec on the shard's task.
    Command(Box<Command>),
    /// JSON text, checked on the shard's task.
    Json(Vec<u8>),
    /// A payload that did not serialize: refused when sent.
    Invalid(String),
}

impl Outgoing {
    /// Raw JSON text (`{"op": …, "d": …}`), for payloads nothing here has a
    /// type for. It is refused when sent unless it is a JSON object with an
    /// integer `op`, of at most 4096 bytes.
    #[must_use]
    pub fn json(json: impl Into<Vec<u8>>) -> Self {
        Self(Repr::Json(json.into()))
    }

    /// Any payload that serializes to `{"op": …, "d": …}`, such as a
    /// twilight-gateway `Command`.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidRaw`] when it does not serialize.
    pub fn serialize(payload: &impl Serialize) -> Result<Self, SendError> {
        serde_json::to_vec(payload)
            .map(Self::json)
            .map_err(|error| SendError::InvalidRaw(error.to_string()))
    }

    fn serialized(payload: &impl Serialize) -> Self {
        Self::serialize(payload).unwrap_or_else(|error| Self(Repr::Invalid(error.to_string())))
    }
}

impl From<Command> for Outgoing {
    fn from(command: Command) -> Self {
        Self(Repr::Command(Box::new(command)))
    }
}

impl From<twilight::UpdatePresence> for Outgoing {
    fn from(payload: twilight::UpdatePresence) -> Self {
        Self::serialized(&payload)
    }
}

impl From<twilight::RequestGuildMembers> for Outgoing {
    fn from(payload: twilight::RequestGuildMembers) -> Self {
        Self::serialized(&payload)
    }
}

impl From<twilight::UpdateVoiceState> for Outgoing {
    fn from(payload: twilight::UpdateVoiceState) -> Self {
        Self::serialized(&payload)
    }
}
