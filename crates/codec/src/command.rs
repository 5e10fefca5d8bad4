use serde::Serialize;
use twilight_model::gateway::Intents;
use twilight_model::gateway::presence::{ActivityType, Status};
use twilight_model::id::Id;
use twilight_model::id::marker::{ChannelMarker, GuildMarker, UserMarker};

use crate::{CodecError, Token};

/// The largest payload the gateway accepts from a client, in bytes. A larger
/// one closes the connection with 4002.
pub const MAX_COMMAND_SIZE: usize = 4096;

/// A payload a client sends to the gateway.
///
/// [`Command::encode`] turns it into the JSON text of one WebSocket message
/// and refuses anything over [`MAX_COMMAND_SIZE`] bytes.
///
/// ```
/// use shardwire_codec::Command;
///
/// let bytes = Command::Heartbeat { seq: Some(42) }.encode()?;
/// assert_eq!(bytes, br#"{"op":1,"d":42}"#);
/// # Ok::<(), shardwire_codec::CodecError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// op 1: keeps the connection alive; `seq` is the last sequence received.
    Heartbeat {
        /// The last sequence number received, if any.
        seq: Option<u64>,
    },
    /// op 2: starts a new session.
    Identify(Identify),
    /// op 3: changes the bot's presence.
    UpdatePresence(UpdatePresence),
    /// op 4: joins, moves between or leaves voice channels.
    UpdateVoiceState(UpdateVoiceState),
    /// op 6: resumes a session on a new connection.
    Resume(Resume),
    /// op 8: asks for a guild's members, answered by GUILD_MEMBERS_CHUNK.
    RequestGuildMembers(RequestGuildMembers),
    /// op 31: asks for guilds' soundboard sounds, answered by
    /// SOUNDBOARD_SOUNDS.
    RequestSoundboardSounds(RequestSoundboardSounds),
    /// op 43: asks for ephemeral channel information, answered by
    /// CHANNEL_INFO.
    RequestChannelInfo(RequestChannelInfo),
}

/// The `properties` of an Identify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionProperties {
    /// The operating system.
    pub os: String,
    /// The library's name.
    pub browser: String,
    /// The library's name.
    pub device: String,
}

impl Default for ConnectionProperties {
    fn default() -> Self {
        Self {
            os: std::env::consts::OS.to_owned(),
            browser: "shardwire".to_owned(),
            device: "shardwire".to_owned(),
        }
    }
}

/// op 2 Identify. The token is redacted from `Debug` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identify {
    /// The bot token.
    pub token: Token,
    /// Who is connecting.
    pub properties: ConnectionProperties,
    /// The gateway intents.
    pub intents: Intents,
    /// Payload compression: some payloads then arrive as zlib-compressed
    /// binary messages. Not to be combined with transport compression.
    pub compress: bool,
    /// Member count above which a guild is "large" (50 to 250).
    pub large_threshold: u8,
    /// `[shard_id, shard_count]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<[u32; 2]>,
    /// The presence to start with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<UpdatePresence>,
}

impl Identify {
    /// An Identify with default properties, no compression, a large
    /// threshold of 50, no sharding and no presence.
    #[must_use]
    pub fn new(token: Token, intents: Intents) -> Self {
        Self {
            token,
            properties: ConnectionProperties::default(),
            intents,
            compress: false,
            large_threshold: 50,
            shard: None,
            presence: None,
        }
    }
}

/// op 6 Resume. The token is redacted from `Debug` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resume {
    /// The bot token.
    pub token: Token,
    /// The session to resume.
    pub session_id: String,
    /// The last sequence number received.
    pub seq: u64,
}

/// An activity a bot can show: what Discord accepts from bots in a presence
/// update (a name, a type, a custom status `state`, a stream `url`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// The activity's name.
    pub name: String,
    /// Playing, Streaming, Listening, Watching, Custom or Competing.
    #[serde(rename = "type")]
    pub kind: ActivityType,
    /// The custom status text (for `ActivityType::Custom`) or the activity's
    /// state line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The stream URL (for `ActivityType::Streaming`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Activity {
    /// An activity with a name and a type, and no state or URL.
    #[must_use]
    pub fn new(kind: ActivityType, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind,
            state: None,
            url: None,
        }
    }
}

/// op 3 Update Presence (also the `presence` of an Identify).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpdatePresence {
    /// Unix time in milliseconds when the client went idle, if it is idle.
    pub since: Option<u64>,
    /// The activities.
    pub activities: Vec<Activity>,
    /// The status.
    pub status: Status,
    /// Whether the client is AFK.
    pub afk: bool,
}

/// op 4 Update Voice State.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateVoiceState {
    /// The guild.
    pub guild_id: Id<GuildMarker>,
    /// The voice channel to join, or `None` to leave.
    pub channel_id: Option<Id<ChannelMarker>>,
    /// Whether the bot mutes itself.
    pub self_mute: bool,
    /// Whether the bot deafens itself.
    pub self_deaf: bool,
}

/// Which members a [`RequestGuildMembers`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberSelection {
    /// Members whose username starts with `query` (empty: all members, which
    /// needs the GUILD_MEMBERS intent), at most `limit` of them (0: no limit).
    Query {
        /// The username prefix.
        query: String,
        /// The maximum number of members.
        limit: u32,
    },
    /// These users (at most 100).
    UserIds(Vec<Id<UserMarker>>),
}

/// op 8 Request Guild Members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestGuildMembers {
    /// The guild.
    pub guild_id: Id<GuildMarker>,
    /// Which members.
    pub selection: MemberSelection,
    /// Whether to include presences (needs the GUILD_PRESENCES intent).
    pub presences: bool,
    /// Echoed in every GUILD_MEMBERS_CHUNK of the answer (at most 32 bytes).
    pub nonce: Option<String>,
}

/// twilight-model's request, as shardwire's: the same guild, members,
/// presences and nonce (a `limit` past `u32::MAX` means no limit).
impl From<twilight_model::gateway::payload::outgoing::RequestGuildMembers> for RequestGuildMembers {
    fn from(request: twilight_model::gateway::payload::outgoing::RequestGuildMembers) -> Self {
        use twilight_model::gateway::payload::outgoing::request_guild_members::RequestGuildMemberId;
        let info = request.d;
        let selection = match info.user_ids {
            Some(RequestGuildMemberId::One(id)) => MemberSelection::UserIds(vec![id]),
            Some(RequestGuildMemberId::Multiple(ids)) => MemberSelection::UserIds(ids),
            None => MemberSelection::Query {
                query: info.query.unwrap_or_default(),
                limit: info
                    .limit
                    .map_or(0, |limit| u32::try_from(limit).unwrap_or(0)),
            },
        };
        Self {
            guild_id: info.guild_id,
            selection,
            presences: info.presences.unwrap_or(false),
            nonce: info.nonce,
        }
    }
}

/// The most user ids one Request Guild Members may carry.
const MAX_USER_IDS: usize = 100;
/// The longest nonce the gateway accepts, in bytes.
const MAX_NONCE_BYTES: usize = 32;

impl Serialize for RequestGuildMembers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("guild_id", &self.guild_id)?;
        match &self.selection {
            MemberSelection::Query { query, limit } => {
                map.serialize_entry("query", query)?;
                map.serialize_entry("limit", limit)?;
            }
            MemberSelection::UserIds(ids) => map.serialize_entry("user_ids", ids)?,
        }
        if self.presences {
            map.serialize_entry("presences", &true)?;
        }
        if let Some(nonce) = &self.nonce {
            map.serialize_entry("nonce", nonce)?;
        }
        map.end()
    }
}

/// op 31 Request Soundboard Sounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestSoundboardSounds {
    /// The guilds whose sounds to send.
    pub guild_ids: Vec<Id<GuildMarker>>,
}

/// A field that [`RequestChannelInfo`] can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChannelInfoField {
    /// The voice channel status.
    Status,
    /// When the current voice session started.
    VoiceStartTime,
}

/// op 43 Request Channel Info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestChannelInfo {
    /// The guild.
    pub guild_id: Id<GuildMarker>,
    /// Which fields to send.
    pub fields: Vec<ChannelInfoField>,
}

#[derive(Serialize)]
struct Frame<'a, T> {
    op: u8,
    d: &'a T,
}

fn invalid(reason: impl Into<String>) -> CodecError {
    CodecError::InvalidCommand {
        reason: reason.into(),
    }
}

impl Command {
    /// The opcode this command is sent with.
    #[must_use]
    pub fn opcode(&self) -> u8 {
        match self {
            Self::Heartbeat { .. } => 1,
            Self::Identify(_) => 2,
            Self::UpdatePresence(_) => 3,
            Self::UpdateVoiceState(_) => 4,
            Self::Resume(_) => 6,
            Self::RequestGuildMembers(_) => 8,
            Self::RequestSoundboardSounds(_) => 31,
            Self::RequestChannelInfo(_) => 43,
        }
    }

    /// Checks the fields the gateway would reject.
    fn validate(&self) -> Result<(), CodecError> {
        match self {
            Self::Identify(identify) => {
                if identify.token.is_empty() {
                    return Err(invalid("Identify: the token is empty"));
                }
                if !(50..=250).contains(&identify.large_threshold) {
                    return Err(invalid(format!(
                        "Identify: large_threshold {} is outside 50..=250",
                        identify.large_threshold
                    )));
                }
                if let Some([id, count]) = identify.shard
                    && (count == 0 || id >= count)
                {
                    return Err(invalid(format!(
                        "Identify: shard [{id}, {count}] needs 0 <= id < count"
                    )));
                }
            }
            Self::Resume(resume) if resume.session_id.is_empty() => {
                return Err(invalid("Resume: the session id is empty"));
            }
            Self::RequestGuildMembers(request) => {
                if let MemberSelection::UserIds(ids) = &request.selection
                    && (ids.is_empty() || ids.len() > MAX_USER_IDS)
                {
                    return Err(invalid(format!(
                        "Request Guild Members: {} user ids, expected 1 to {MAX_USER_IDS}",
                        ids.len()
                    )));
                }
                if let Some(nonce) = &request.nonce
                    && nonce.len() > MAX_NONCE_BYTES
                {
                    return Err(invalid(format!(
                        "Request Guild Members: the nonce is {} bytes, at most {MAX_NONCE_BYTES}",
                        nonce.len()
                    )));
                }
            }
            Self::RequestSoundboardSounds(request) if request.guild_ids.is_empty() => {
                return Err(invalid("Request Soundboard Sounds: no guild ids"));
            }
            Self::RequestChannelInfo(request) if request.fields.is_empty() => {
                return Err(invalid("Request Channel Info: no fields"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Encodes the command as the JSON text of one WebSocket message,
    /// appending to `out`.
    ///
    /// # Errors
    ///
    /// [`CodecError::InvalidCommand`] for a field the gateway would reject,
    /// and [`CodecError::CommandTooLarge`] when the JSON is over
    /// [`MAX_COMMAND_SIZE`] bytes; `out` is then left as it was.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.validate()?;
        let start = out.len();
        let op = self.opcode();
        // serde_json, not sonic-rs: sonic-rs's string writer loads 32 bytes
        // at a time past the end of short strings (it only checks for a page
        // boundary), which AddressSanitizer reports as an out-of-bounds
        // read; the `shard_machine` fuzz target found it in the Identify.
        // Commands are few and small: speed does not matter here.
        let written = match self {
            Self::Heartbeat { seq } => serde_json::to_writer(&mut *out, &Frame { op, d: seq }),
            Self::Identify(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
            Self::UpdatePresence(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
            Self::UpdateVoiceState(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
            Self::Resume(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
            Self::RequestGuildMembers(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
            Self::RequestSoundboardSounds(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
            Self::RequestChannelInfo(d) => serde_json::to_writer(&mut *out, &Frame { op, d }),
        };
        if let Err(error) = written {
            out.truncate(start);
            return Err(invalid(format!("could not serialize: {error}")));
        }
        let size = out.len() - start;
        if size > MAX_COMMAND_SIZE {
            out.truncate(start);
            return Err(CodecError::CommandTooLarge {
                size,
                limit: MAX_COMMAND_SIZE,
            });
        }
        Ok(())
    }

    /// Encodes the command into a new buffer; see [`Command::encode_into`].
    ///
    /// # Errors
    ///
    /// As [`Command::encode_into`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out)?;
        Ok(out)
    }
}
