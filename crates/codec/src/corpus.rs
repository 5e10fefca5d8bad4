//! Realistic gateway traffic, generated deterministically, and the encoders
//! that compress it the way Discord does.
//!
//! Tests, benchmarks, fuzz seeds and the simulator all draw from here, so
//! every measurement in the repository is made on the same mix:
//! MESSAGE_CREATE, PRESENCE_UPDATE, TYPING_START, GUILD_MEMBER_UPDATE,
//! MESSAGE_REACTION_ADD and a few large GUILD_CREATE.
//!
//! ```
//! use shardwire_codec::corpus::{Corpus, ZlibStreamEncoder};
//!
//! let corpus = Corpus::realistic(100, 7);
//! let mut encoder = ZlibStreamEncoder::new();
//! let first = encoder.encode(&corpus.payloads()[0]);
//! assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
//! ```

use flate2::{Compress, Compression as Level, FlushCompress};
use serde_json::{Value, json};

/// A small, fast, seedable pseudo-random generator (SplitMix64, the
/// heartbeat jitter's), so the corpus is the same on every machine.
#[derive(Clone, Debug)]
pub struct Rng(shardwire_heartbeat::Jitter);

impl Rng {
    /// A generator from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(shardwire_heartbeat::Jitter::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.next_jitter()
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "hello", "the", "raid", "tonight", "anyone", "up", "for", "a", "game", "lol", "gg", "patch",
    "notes", "are", "out", "check", "pinned", "message", "thanks", "bot", "when", "is", "the",
    "stream", "starting", "👍", "🎉", "ok", "sure", "brb", "nice", "clip", "server", "rules",
];
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe",
];
const GAMES: &[&str] = &[
    "Minecraft",
    "Valorant",
    "Overwatch 2",
    "Stardew Valley",
    "Elden Ring",
];
const STATUSES: &[&str] = &["online", "idle", "dnd"];
const EMOJIS: &[&str] = &["👍", "🔥", "😂", "❤️", "🎉"];

/// A snowflake for a moment in 2024 plus a random tail.
fn snowflake(rng: &mut Rng) -> String {
    let ms_since_epoch = 1_704_067_200_000u64 - 1_420_070_400_000 + rng.below(31_536_000_000);
    ((ms_since_epoch << 22) | rng.below(1 << 22)).to_string()
}

fn timestamp(rng: &mut Rng) -> String {
    format!(
        "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000)
    )
}

fn sentence(rng: &mut Rng, words: u64) -> String {
    let count = 1 + rng.below(words);
    (0..count)
        .map(|_| *rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn user(rng: &mut Rng, id: &str) -> Value {
    let name = format!("{}{}", rng.pick(NAMES), rng.below(10_000));
    json!({
        "id": id,
        "username": name,
        "global_name": rng.pick(NAMES),
        "discriminator": "0",
        "avatar": format!("{:032x}", u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())),
        "avatar_decoration_data": null,
        "public_flags": rng.below(2) * 64,
        "flags": 0,
        "banner": null,
        "accent_color": null,
        "clan": null,
        "primary_guild": null,
        "collectibles": null,
    })
}

fn roles(rng: &mut Rng) -> Vec<String> {
    (0..rng.below(5)).map(|_| snowflake(rng)).collect()
}

fn member_fields(rng: &mut Rng) -> Value {
    json!({
        "roles": roles(rng),
        "joined_at": timestamp(rng),
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "pending": false,
        "nick": if rng.below(4) == 0 { Value::from(*rng.pick(NAMES)) } else { Value::Null },
        "avatar": null,
        "banner": null,
        "flags": 0,
        "communication_disabled_until": null,
    })
}

fn member(rng: &mut Rng, user_id: &str) -> Value {
    let mut member = member_fields(rng);
    member["user"] = user(rng, user_id);
    member
}

/// A dispatch payload with its fields in the order Discord sends them.
fn payload(event: &str, seq: u64, d: &Value) -> Vec<u8> {
    let mut out = format!(r#"{{"t":"{event}","s":{seq},"op":0,"d":"#).into_bytes();
    // Serializing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut out, d);
    out.push(b'}');
    out
}

/// Generates one dispatch of each kind on demand.
#[derive(Clone, Debug)]
pub struct EventGenerator {
    rng: Rng,
    guild_ids: Vec<String>,
    channel_ids: Vec<String>,
    user_ids: Vec<String>,
}

impl EventGenerator {
    /// A generator whose events happen in `guilds` guilds.
    #[must_use]
    pub fn new(seed: u64, guilds: usize) -> Self {
        let mut rng = Rng::new(seed);
        let guild_ids = (0..guilds.max(1)).map(|_| snowflake(&mut rng)).collect();
        let channel_ids = (0..32).map(|_| snowflake(&mut rng)).collect();
        let user_ids = (0..256).map(|_| snowflake(&mut rng)).collect();
        Self {
            rng,
            guild_ids,
            channel_ids,
            user_ids,
        }
    }

    /// A generator whose events happen in the given guilds (at least one).
    #[must_use]
    pub fn with_guild_ids(seed: u64, guild_ids: Vec<String>) -> Self {
        let mut generator = Self::new(seed, 1);
        if !guild_ids.is_empty() {
            generator.guild_ids = guild_ids;
        }
        generator
    }

    /// The guild ids events are generated for.
    #[must_use]
    pub fn guild_ids(&self) -> &[String] {
        &self.guild_ids
    }

    fn ids(&mut self) -> (String, String, String) {
        let guild = self.rng.pick(&self.guild_ids).clone();
        let channel = self.rng.pick(&self.channel_ids).clone();
        let user = self.rng.pick(&self.user_ids).clone();
        (guild, channel, user)
    }

    /// A MESSAGE_CREATE `d`.
    pub fn message_create(&mut self) -> Value {
        let (guild, channel, author) = self.ids();
        let rng = &mut self.rng;
        let mut member = member_fields(rng);
        if let Some(object) = member.as_object_mut() {
            object.remove("user");
        }
        json!({
            "type": 0,
            "tts": false,
            "timestamp": timestamp(rng),
            "pinned": false,
            "nonce": rng.next_u64().to_string(),
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": false,
            "member": member,
            "id": snowflake(rng),
            "flags": 0,
            "embeds": [],
            "edited_timestamp": null,
            "content": sentence(rng, 24),
            "components": [],
            "channel_type": 0,
            "channel_id": channel,
            "author": user(rng, &author),
            "attachments": [],
            "guild_id": guild,
        })
    }

    /// A PRESENCE_UPDATE `d`.
    pub fn presence_update(&mut self) -> Value {
        let (guild, _, user_id) = self.ids();
        let rng = &mut self.rng;
        let status = *rng.pick(STATUSES);
        let activities = if rng.below(2) == 0 {
            json!([{
                "type": 0,
                "name": rng.pick(GAMES),
                "id": format!("{:016x}", rng.next_u64()),
                "created_at": 1_700_000_000_000u64 + rng.below(1_000_000_000),
                "timestamps": { "start": 1_700_000_000_000u64 + rng.below(1_000_000_000) },
                "application_id": snowflake(rng),
            }])
        } else {
            json!([])
        };
        json!({
            "user": { "id": user_id },
            "status": status,
            "guild_id": guild,
            "client_status": { "desktop": status },
            "broadcast": null,
            "activities": activities,
        })
    }

    /// A TYPING_START `d`.
    pub fn typing_start(&mut self) -> Value {
        let (guild, channel, user_id) = self.ids();
        let rng = &mut self.rng;
        json!({
            "user_id": user_id,
            "timestamp": 1_700_000_000u64 + rng.below(100_000_000),
            "member": member(rng, &user_id),
            "channel_id": channel,
            "guild_id": guild,
        })
    }

    /// A GUILD_MEMBER_UPDATE `d`.
    pub fn member_update(&mut self) -> Value {
        let (guild, _, user_id) = self.ids();
        let mut d = member(&mut self.rng, &user_id);
        d["guild_id"] = Value::from(guild);
        d
    }

    /// A MESSAGE_REACTION_ADD `d`.
    pub fn reaction_add(&mut self) -> Value {
        let (guild, channel, user_id) = self.ids();
        let rng = &mut self.rng;
        json!({
            "user_id": user_id,
            "type": 0,
            "message_id": snowflake(rng),
            "message_author_id": snowflake(rng),
            "member": member(rng, &user_id),
            "emoji": { "name": rng.pick(EMOJIS), "id": null },
            "channel_id": channel,
            "burst": false,
            "guild_id": guild,
        })
    }

    /// A GUILD_CREATE `d` for a guild with `members` members, all online.
    pub fn guild_create(&mut self, guild_id: &str, members: usize) -> Value {
        let rng = &mut self.rng;
        let owner = snowflake(rng);
        let member_ids: Vec<String> = (0..members)
            .map(|index| {
                if index == 0 {
                    owner.clone()
                } else {
                    snowflake(rng)
                }
            })
            .collect();
        let member_list: Vec<Value> = member_ids.iter().map(|id| member(rng, id)).collect();
        let presences: Vec<Value> = member_ids
            .iter()
            .take(members.min(1000))
            .map(|id| {
                let status = *rng.pick(STATUSES);
                json!({ "user": { "id": id }, "status": status,
                        "client_status": { "desktop": status }, "activities": [] })
            })
            .collect();
        let channels: Vec<Value> = (0..20)
            .map(|position| {
                json!({ "id": snowflake(rng), "type": 0, "name": format!("channel-{position}"),
                        "position": position, "permission_overwrites": [], "nsfw": false,
                        "topic": null, "last_message_id": null, "rate_limit_per_user": 0,
                        "parent_id": null, "flags": 0 })
            })
            .collect();
        let roles: Vec<Value> = (0..10)
            .map(|position| {
                json!({ "id": if position == 0 { guild_id.to_owned() } else { snowflake(rng) },
                        "name": if position == 0 { "@everyone".to_owned() } else { format!("role-{position}") },
                        "color": 0, "colors": { "primary_color": rng.below(0xff_ffff),
                                     "secondary_color": null, "tertiary_color": null },
                        "hoist": false, "icon": null,
                        "unicode_emoji": null, "position": position,
                        "permissions": "2248473465835073", "managed": false,
                        "mentionable": false, "flags": 0 })
            })
            .collect();
        json!({
            "id": guild_id,
            "name": format!("guild {guild_id}"),
            "icon": null,
            "splash": null,
            "discovery_splash": null,
            "banner": null,
            "description": null,
            "owner_id": owner,
            "region": "deprecated",
            "afk_channel_id": null,
            "afk_timeout": 300,
            "widget_enabled": false,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "features": ["COMMUNITY", "NEWS"],
            "mfa_level": 0,
            "application_id": null,
            "system_channel_id": null,
            "system_channel_flags": 0,
            "rules_channel_id": null,
            "public_updates_channel_id": null,
            "safety_alerts_channel_id": null,
            "vanity_url_code": null,
            "premium_tier": 1,
            "premium_subscription_count": 3,
            "premium_progress_bar_enabled": false,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "nsfw": false,
            "max_members": 500_000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "joined_at": timestamp(rng),
            "large": members > 250,
            "unavailable": false,
            "member_count": members,
            "lazy": true,
            "roles": roles,
            "emojis": [],
            "stickers": [],
            "members": member_list,
            "channels": channels,
            "threads": [],
            "presences": presences,
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "incidents_data": null,
        })
    }

    /// One dispatch from the realistic mix, as `(event name, d)`.
    pub fn next_event(&mut self) -> (&'static str, Value) {
        match self.rng.below(100) {
            0..=29 => ("MESSAGE_CREATE", self.message_create()),
            30..=64 => ("PRESENCE_UPDATE", self.presence_update()),
            65..=79 => ("TYPING_START", self.typing_start()),
            80..=89 => ("GUILD_MEMBER_UPDATE", self.member_update()),
            _ => ("MESSAGE_REACTION_ADD", self.reaction_add()),
        }
    }
}

/// A sequence of complete dispatch payloads (JSON), numbered from `s = 1`.
#[derive(Clone, Debug)]
pub struct Corpus {
    payloads: Vec<Vec<u8>>,
}

impl Corpus {
    /// `events` small dispatches of the realistic mix, with one GUILD_CREATE
    /// of 2,000 members every 2,000 events (at least one).
    #[must_use]
    pub fn realistic(events: usize, seed: u64) -> Self {
        let mut generator = EventGenerator::new(seed, 8);
        let guilds = (events / 2000).max(1);
        let total = events + guilds;
        // One GUILD_CREATE in the middle of each of `guilds` equal windows.
        let stride = total / guilds;
        let mut placed = 0;
        let mut payloads = Vec::with_capacity(total);
        for index in 0..total {
            let seq = index as u64 + 1;
            if index % stride == stride / 2 && placed < guilds {
                let id = generator.guild_ids[placed % generator.guild_ids.len()].clone();
                placed += 1;
                let d = generator.guild_create(&id, 2000);
                payloads.push(payload("GUILD_CREATE", seq, &d));
            } else {
                let (name, d) = generator.next_event();
                payloads.push(payload(name, seq, &d));
            }
        }
        Self { payloads }
    }

    /// Only small events (no GUILD_CREATE): the shape of steady-state traffic.
    #[must_use]
    pub fn small_events(events: usize, seed: u64) -> Self {
        let mut generator = EventGenerator::new(seed, 8);
        let payloads = (1..=events as u64)
            .map(|seq| {
                let (name, d) = generator.next_event();
                payload(name, seq, &d)
            })
            .collect();
        Self { payloads }
    }

    /// One GUILD_CREATE payload of a guild with `members` members.
    #[must_use]
    pub fn guild_create(members: usize, seed: u64) -> Vec<u8> {
        let mut generator = EventGenerator::new(seed, 1);
        let id = generator.guild_ids[0].clone();
        let d = generator.guild_create(&id, members);
        payload("GUILD_CREATE", 1, &d)
    }

    /// The payloads, in order.
    #[must_use]
    pub fn payloads(&self) -> &[Vec<u8>] {
        &self.payloads
    }

    /// The total size of the payloads' JSON.
    #[must_use]
    pub fn total_bytes(&self) -> usize {
        self.payloads.iter().map(Vec::len).sum()
    }
}

/// Compresses payloads as a zlib-stream connection does: one deflate stream,
/// a sync flush after each payload.
#[derive(Debug)]
pub struct ZlibStreamEncoder {
    compress: Compress,
}

impl Default for ZlibStreamEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZlibStreamEncoder {
    /// A new stream (a new connection), at the default compression level.
    #[must_use]
    pub fn new() -> Self {
        Self {
            compress: Compress::new(Level::default(), true),
        }
    }

    /// A raw deflate stream (no zlib header) that continues a zlib-stream
    /// connection after a sync flush. It starts with no history, so its
    /// output is valid after any payload boundary of any stream: how
    /// pre-compressed traffic is spliced into a live connection.
    #[must_use]
    pub fn continuation() -> Self {
        Self {
            compress: Compress::new(Level::default(), false),
        }
    }

    /// The compressed bytes of one payload; they end with `00 00 ff ff`.
    /// An empty payload right after another one compresses to no bytes.
    pub fn encode(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.compress.total_in() - before) as usize..];
            // A sync flush is complete once all input is taken and the output
            // was not filled up.
            if status.is_err() || (input.is_empty() && out.capacity() - out.len() >= 64) {
                break;
            }
        }
        out
    }
}

/// Compresses payloads as a zstd-stream connection does: one frame that never
/// ends, flushed after each payload.
pub struct ZstdStreamEncoder {
    encoder: zstd::stream::raw::Encoder<'static>,
}

impl std::fmt::Debug for ZstdStreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ZstdStreamEncoder")
    }
}

impl ZstdStreamEncoder {
    /// A new stream (a new connection).
    ///
    /// # Errors
    ///
    /// When zstd cannot allocate its context.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            encoder: zstd::stream::raw::Encoder::new(3)?,
        })
    }

    /// The compressed bytes of one payload.
    ///
    /// # Errors
    ///
    /// When zstd reports an error.
    pub fn encode(&mut self, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut out: Vec<u8> = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = InBuffer::around(payload);
        while input.pos() < payload.len() {
            if out.capacity() == out.len() {
                out.reserve(out.capacity().max(1024));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            self.encoder.run(&mut input, &mut output)?;
        }
        loop {
            if out.capacity() == out.len() {
                out.reserve(out.capacity().max(1024));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let remaining = self.encoder.flush(&mut output)?;
            if remaining == 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// One payload compressed as a whole zlib stream, as payload compression
/// (Identify `compress: true`) sends it.
#[must_use]
pub fn zlib_payload(payload: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Level::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(payload);
    encoder.finish().unwrap_or_default()
}

/// One unmasked WebSocket frame (RFC 6455), as a server sends it: `opcode`
/// 1 text, 2 binary, 0 continuation, 8 close, 9 ping, 10 pong.
#[must_use]
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}
