//! [`EventGenerator`]: the `d` of each kind of dispatch in the realistic mix,
//! with ids, names and timestamps drawn from a seeded [`Rng`].

use serde_json::{Value, json};

use crate::Rng;

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
