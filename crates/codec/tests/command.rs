//! Outgoing commands: exact JSON, validation, the 4096-byte limit, and a token
//! that never leaks.

use serde_json::{Value, json};
use shardwire_codec::{
    Activity, ChannelInfoField, CodecError, Command, Identify, MAX_COMMAND_SIZE, MemberSelection,
    RequestChannelInfo, RequestGuildMembers, RequestSoundboardSounds, Resume, Token,
    UpdatePresence, UpdateVoiceState,
};
use twilight_model::gateway::Intents;
use twilight_model::gateway::presence::{ActivityType, Status};
use twilight_model::id::Id;

const SECRET: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.secret.token";

fn check(command: &Command, expect: &Value) {
    let bytes = command
        .encode()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let actual: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(&actual, expect);
}

fn presence() -> UpdatePresence {
    UpdatePresence {
        since: None,
        activities: vec![Activity::new(ActivityType::Playing, "with shards")],
        status: Status::Online,
        afk: false,
    }
}

#[test]
fn heartbeat() {
    check(
        &Command::Heartbeat { seq: None },
        &json!({"op": 1, "d": null}),
    );
    check(
        &Command::Heartbeat { seq: Some(7) },
        &json!({"op": 1, "d": 7}),
    );
}

#[test]
fn identify() {
    let mut identify = Identify::new(
        Token::new(format!("Bot {SECRET}")),
        Intents::GUILDS | Intents::GUILD_MESSAGES,
    );
    identify.shard = Some([3, 8]);
    identify.large_threshold = 250;
    identify.compress = true;
    let encoded: Value =
        serde_json::from_slice(&Command::Identify(identify.clone()).encode().unwrap()).unwrap();
    assert_eq!(encoded["op"], 2);
    let d = &encoded["d"];
    assert_eq!(d["token"], SECRET, "the `Bot ` prefix is stripped");
    assert_eq!(d["intents"], (1 << 0) | (1 << 9));
    assert_eq!(d["shard"], json!([3, 8]));
    assert_eq!(d["large_threshold"], 250);
    assert_eq!(d["compress"], true);
    assert_eq!(d["properties"]["browser"], "shardwire");
    assert_eq!(d["properties"]["os"], std::env::consts::OS);
    assert!(d.get("presence").is_none());

    identify.presence = Some(presence());
    let encoded: Value =
        serde_json::from_slice(&Command::Identify(identify).encode().unwrap()).unwrap();
    assert_eq!(encoded["d"]["presence"]["status"], "online");
    assert_eq!(
        encoded["d"]["presence"]["activities"][0]["name"],
        "with shards"
    );
}

#[test]
fn resume() {
    let resume = Resume {
        token: Token::new(SECRET),
        session_id: "abc".into(),
        seq: 99,
    };
    check(
        &Command::Resume(resume),
        &json!({"op": 6, "d": {"token": SECRET, "session_id": "abc", "seq": 99}}),
    );
}

#[test]
fn update_presence() {
    check(
        &Command::UpdatePresence(presence()),
        &json!({"op": 3, "d": {"since": null, "status": "online", "afk": false,
            "activities": [{"type": 0, "name": "with shards"}]}}),
    );
}

#[test]
fn update_voice_state() {
    let join = UpdateVoiceState {
        guild_id: Id::new(41771983423143937),
        channel_id: Some(Id::new(127121515262115840)),
        self_mute: false,
        self_deaf: true,
    };
    check(
        &Command::UpdateVoiceState(join.clone()),
        &json!({"op": 4, "d": {
        "guild_id": "41771983423143937", "channel_id": "127121515262115840",
        "self_mute": false, "self_deaf": true}}),
    );
    let leave = UpdateVoiceState {
        channel_id: None,
        ..join
    };
    check(
        &Command::UpdateVoiceState(leave),
        &json!({"op": 4, "d": {
        "guild_id": "41771983423143937", "channel_id": null, "self_mute": false, "self_deaf": true}}),
    );
}

#[test]
fn request_guild_members() {
    let by_query = RequestGuildMembers {
        guild_id: Id::new(1),
        selection: MemberSelection::Query {
            query: String::new(),
            limit: 0,
        },
        presences: true,
        nonce: Some("n1".into()),
    };
    check(
        &Command::RequestGuildMembers(by_query),
        &json!({"op": 8, "d": {
        "guild_id": "1", "query": "", "limit": 0, "presences": true, "nonce": "n1"}}),
    );
    let by_ids = RequestGuildMembers {
        guild_id: Id::new(1),
        selection: MemberSelection::UserIds(vec![Id::new(2), Id::new(3)]),
        presences: false,
        nonce: None,
    };
    check(
        &Command::RequestGuildMembers(by_ids),
        &json!({"op": 8, "d": {
        "guild_id": "1", "user_ids": ["2", "3"]}}),
    );
}

#[test]
fn request_soundboard_sounds_and_channel_info() {
    check(
        &Command::RequestSoundboardSounds(RequestSoundboardSounds {
            guild_ids: vec![Id::new(5), Id::new(6)],
        }),
        &json!({"op": 31, "d": {"guild_ids": ["5", "6"]}}),
    );
    check(
        &Command::RequestChannelInfo(RequestChannelInfo {
            guild_id: Id::new(5),
            fields: vec![ChannelInfoField::Status, ChannelInfoField::VoiceStartTime],
        }),
        &json!({"op": 43, "d": {"guild_id": "5", "fields": ["status", "voice_start_time"]}}),
    );
}

#[test]
fn commands_over_4096_bytes_are_refused_and_not_written() {
    let mut presence = presence();
    presence.activities = (0..200)
        .map(|index| Activity::new(ActivityType::Playing, format!("activity number {index}")))
        .collect();
    let command = Command::UpdatePresence(presence);
    let mut out = b"previous".to_vec();
    match command.encode_into(&mut out) {
        Err(CodecError::CommandTooLarge { size, limit }) => {
            assert!(size > MAX_COMMAND_SIZE);
            assert_eq!(limit, 4096);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        out, b"previous",
        "nothing of the refused command is left in the buffer"
    );
}

#[test]
fn a_command_of_exactly_4096_bytes_is_accepted() {
    let overhead = Command::RequestGuildMembers(RequestGuildMembers {
        guild_id: Id::new(1),
        selection: MemberSelection::Query {
            query: String::new(),
            limit: 1,
        },
        presences: false,
        nonce: None,
    })
    .encode()
    .unwrap()
    .len();
    let fill = |extra: usize| {
        Command::RequestGuildMembers(RequestGuildMembers {
            guild_id: Id::new(1),
            selection: MemberSelection::Query {
                query: "q".repeat(MAX_COMMAND_SIZE - overhead + extra),
                limit: 1,
            },
            presences: false,
            nonce: None,
        })
        .encode()
    };
    assert_eq!(fill(0).unwrap().len(), MAX_COMMAND_SIZE);
    assert!(matches!(
        fill(1),
        Err(CodecError::CommandTooLarge { size: 4097, .. })
    ));
}

#[test]
fn invalid_fields_are_refused_with_a_reason() {
    let reason = |command: Command| match command.encode() {
        Err(CodecError::InvalidCommand { reason }) => reason,
        other => panic!("{other:?}"),
    };
    let base = Identify::new(Token::new(SECRET), Intents::GUILDS);
    assert!(
        reason(Command::Identify(Identify {
            large_threshold: 49,
            ..base.clone()
        }))
        .contains("large_threshold")
    );
    assert!(
        reason(Command::Identify(Identify {
            large_threshold: 251,
            ..base.clone()
        }))
        .contains("large_threshold")
    );
    assert!(
        reason(Command::Identify(Identify {
            shard: Some([2, 2]),
            ..base.clone()
        }))
        .contains("shard")
    );
    assert!(
        reason(Command::Identify(Identify {
            shard: Some([0, 0]),
            ..base.clone()
        }))
        .contains("shard")
    );
    assert!(
        reason(Command::Identify(Identify {
            token: Token::new("  "),
            ..base
        }))
        .contains("token")
    );
    assert!(
        reason(Command::Resume(Resume {
            token: Token::new(SECRET),
            session_id: String::new(),
            seq: 1
        }))
        .contains("session")
    );
    let members = |selection, nonce| {
        Command::RequestGuildMembers(RequestGuildMembers {
            guild_id: Id::new(1),
            selection,
            presences: false,
            nonce,
        })
    };
    assert!(reason(members(MemberSelection::UserIds(vec![]), None)).contains("user ids"));
    assert!(
        reason(members(
            MemberSelection::UserIds((1..=101).map(Id::new).collect()),
            None
        ))
        .contains("user ids")
    );
    assert!(
        reason(members(
            MemberSelection::Query {
                query: "a".into(),
                limit: 1
            },
            Some("x".repeat(33))
        ))
        .contains("nonce")
    );
    assert!(
        reason(Command::RequestSoundboardSounds(RequestSoundboardSounds {
            guild_ids: vec![]
        }))
        .contains("guild")
    );
    assert!(
        reason(Command::RequestChannelInfo(RequestChannelInfo {
            guild_id: Id::new(1),
            fields: vec![]
        }))
        .contains("fields")
    );
}

#[test]
fn the_token_never_appears_in_debug_output_or_errors() {
    let identify = Identify::new(Token::new(SECRET), Intents::GUILDS);
    let debug = format!("{:?} {:?}", Command::Identify(identify.clone()), identify);
    assert!(
        !debug.contains(SECRET) && !debug.contains("secret"),
        "{debug}"
    );
    let resume = Resume {
        token: Token::new(SECRET),
        session_id: "s".into(),
        seq: 1,
    };
    assert!(!format!("{resume:?}").contains(SECRET));
    assert!(!format!("{}", Token::new(SECRET)).contains(SECRET));
    let too_large = Identify {
        large_threshold: 10,
        ..identify
    };
    let error = Command::Identify(too_large).encode().unwrap_err();
    assert!(!format!("{error} {error:?}").contains(SECRET));
}
