//! The close-code policy, reconnect backoff and exported sessions.

use std::time::Duration;

use shardwire_shard::{
    AfterClose, Backoff, FatalError, RESUMABLE_CLOSE, Session, SessionError, after_close,
};
use twilight_model::gateway::Intents;

#[test]
fn resumable_closes_resume() {
    for code in [
        Some(4000),
        Some(4001),
        Some(4002),
        Some(4003),
        Some(4005),
        Some(4008),
        Some(1006),
        Some(1011),
        None,
    ] {
        assert_eq!(
            after_close(code, Intents::GUILDS),
            AfterClose::Resume,
            "{code:?}"
        );
    }
}

#[test]
fn invalid_seq_and_session_timeout_identify_without_a_wasted_resume() {
    for code in [4007, 4009, 1000, 1001] {
        assert_eq!(
            after_close(Some(code), Intents::GUILDS),
            AfterClose::Identify,
            "{code}"
        );
    }
}

#[test]
fn fatal_codes_stop_and_name_the_fix() {
    let intents = Intents::GUILDS | Intents::GUILD_MEMBERS | Intents::MESSAGE_CONTENT;
    let cases: [(u16, &str); 6] = [
        (4004, "token"),
        (4010, "shard id"),
        (4011, "more shards"),
        (4012, "v=10"),
        (4013, "not intents Discord defines"),
        (4014, "Developer Portal"),
    ];
    for (code, fix) in cases {
        let AfterClose::Fatal(error) = after_close(Some(code), intents) else {
            panic!("{code} is not fatal");
        };
        assert_eq!(error.code(), Some(code));
        let message = error.to_string();
        assert!(message.contains(&code.to_string()), "{message}");
        assert!(message.contains(fix), "{code}: {message}");
    }
}

#[test]
fn disallowed_intents_name_exactly_the_privileged_ones_requested() {
    let intents = Intents::GUILDS | Intents::GUILD_MEMBERS | Intents::MESSAGE_CONTENT;
    let AfterClose::Fatal(error) = after_close(Some(4014), intents) else {
        panic!()
    };
    assert_eq!(
        error,
        FatalError::DisallowedIntents(Intents::GUILD_MEMBERS | Intents::MESSAGE_CONTENT)
    );
    let message = error.to_string();
    assert!(
        message.contains("Server Members Intent") && message.contains("Message Content Intent"),
        "{message}"
    );
    assert!(!message.contains("Presence"), "{message}");
    let AfterClose::Fatal(error) = after_close(Some(4014), Intents::GUILD_PRESENCES) else {
        panic!()
    };
    assert!(
        error
            .to_string()
            .contains("Presence Intent (GUILD_PRESENCES)")
    );
}

#[test]
fn invalid_intents_name_the_unknown_bits() {
    let intents = Intents::from_bits_retain(Intents::GUILDS.bits() | (1 << 18));
    let AfterClose::Fatal(error) = after_close(Some(4013), intents) else {
        panic!()
    };
    assert_eq!(error, FatalError::InvalidIntents(1 << 18));
    assert!(error.to_string().contains("0x40000"), "{error}");
}

#[test]
fn shardwire_never_closes_with_a_session_ending_code_before_a_resume() {
    assert!(!matches!(RESUMABLE_CLOSE, 1000 | 1001));
    assert_eq!(
        after_close(Some(RESUMABLE_CLOSE), Intents::empty()),
        AfterClose::Resume
    );
}

#[test]
fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
    let initial = Duration::from_millis(500);
    let cap = Duration::from_secs(30);
    let mut backoff = Backoff::new(initial, cap, 7);
    let mut ceiling = initial;
    for attempt in 0..12 {
        let delay = backoff.next_delay();
        assert!(
            delay >= ceiling / 2 && delay < ceiling.max(Duration::from_nanos(1)),
            "attempt {attempt}: {delay:?} vs {ceiling:?}"
        );
        ceiling = (ceiling * 2).min(cap);
    }
    assert_eq!(backoff.failures(), 12);
    backoff.reset();
    assert!(backoff.next_delay() < initial, "a success starts over");
}

#[test]
fn backoff_jitter_is_seeded_and_spreads_shards() {
    let delays = |seed| {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed);
        (0..5).map(|_| backoff.next_delay()).collect::<Vec<_>>()
    };
    assert_eq!(delays(1), delays(1));
    assert_ne!(delays(1), delays(2));
    // Many failures never overflow or pass the cap.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 3);
    for _ in 0..200 {
        assert!(backoff.next_delay() < Duration::from_secs(60));
    }
}

#[test]
fn sessions_round_trip_through_json_and_are_checked() {
    let session = Session::new(
        "abc".into(),
        42,
        "wss://gateway-us-east1-b.discord.gg".into(),
    )
    .unwrap();
    let json = serde_json::to_string(&session).unwrap();
    assert_eq!(
        json,
        r#"{"session_id":"abc","seq":42,"resume_url":"wss://gateway-us-east1-b.discord.gg"}"#
    );
    let back: Session = serde_json::from_str(&json).unwrap();
    assert_eq!(back, session);
    assert_eq!(
        Session::new(" ".into(), 1, "wss://x".into()),
        Err(SessionError::EmptySessionId)
    );
    let error = Session::new("a".into(), 1, "https://x".into()).unwrap_err();
    assert_eq!(
        error,
        SessionError::ResumeUrlNotWebSocket("https://x".into())
    );
    assert_eq!(
        error.to_string(),
        "the resume URL `https://x` is not a ws:// or wss:// URL"
    );
    let imported: Session =
        serde_json::from_str(r#"{"session_id":"a","seq":1,"resume_url":"ftp://x"}"#).unwrap();
    assert!(
        imported.check().is_err(),
        "an imported session is checked before use"
    );
}

#[test]
fn a_close_code_means_what_discord_or_the_websocket_registry_says() {
    use shardwire_shard::close_code_meaning;
    assert_eq!(close_code_meaning(Some(4011)), "sharding required");
    assert_eq!(close_code_meaning(Some(1012)), "service restart");
    assert_eq!(
        close_code_meaning(None),
        "connection dropped without a close frame"
    );
    for undefined in [1004, 4006, 4015, 3000, 0] {
        assert_eq!(
            close_code_meaning(Some(undefined)),
            "a code Discord does not define",
            "{undefined}"
        );
    }
}
