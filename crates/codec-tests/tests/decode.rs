//! Typed decoding into twilight-model, the event filter, and pass-through of
//! what twilight-model does not know.

use shardwire_codec::{Decoded, EventFilter, Payload, TypedParser};
use shardwire_corpus::{Corpus, EventGenerator};
use twilight_model::gateway::event::{DispatchEvent, EventType, GatewayEvent};

fn scan(json: &[u8]) -> Payload<'_> {
    Payload::scan(json).unwrap()
}

#[test]
fn every_corpus_event_decodes_with_every_parser() {
    let corpus = Corpus::realistic(2_000, 21);
    let mut kinds = std::collections::BTreeSet::new();
    for json in corpus.payloads() {
        let payload = scan(json);
        for parser in TypedParser::ALL {
            match payload.decode_with(&EventFilter::all(), parser) {
                Decoded::Event(GatewayEvent::Dispatch(seq, event)) => {
                    assert_eq!(Some(seq), payload.seq());
                    assert_eq!(event.kind().name(), payload.event_type());
                }
                other => panic!(
                    "{:?} with {parser:?}: {other:?}\n{}",
                    payload.event_type(),
                    &payload.data()[..payload.data().len().min(400)]
                ),
            }
        }
        kinds.insert(payload.event_type().unwrap().to_owned());
    }
    let expected = [
        "GUILD_CREATE",
        "GUILD_MEMBER_UPDATE",
        "MESSAGE_CREATE",
        "MESSAGE_REACTION_ADD",
        "PRESENCE_UPDATE",
        "TYPING_START",
    ];
    assert_eq!(
        kinds.iter().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn message_create_fields_survive_decoding() {
    let mut generator = EventGenerator::new(3, 1);
    let d = generator.message_create();
    let json = format!(r#"{{"op":0,"s":9,"t":"MESSAGE_CREATE","d":{d}}}"#);
    let Decoded::Event(GatewayEvent::Dispatch(9, DispatchEvent::MessageCreate(message))) =
        scan(json.as_bytes()).decode(&EventFilter::all())
    else {
        panic!("not a MESSAGE_CREATE");
    };
    assert_eq!(message.content, d["content"].as_str().unwrap());
    assert_eq!(message.id.to_string(), d["id"].as_str().unwrap());
    assert_eq!(
        message.author.id.to_string(),
        d["author"]["id"].as_str().unwrap()
    );
}

#[test]
fn filtered_dispatches_are_never_deserialized() {
    // `d` is not a valid MESSAGE_CREATE: deserializing it would fail. A
    // filter that leaves MESSAGE_CREATE out must not even try.
    let json = br#"{"op":0,"s":1,"t":"MESSAGE_CREATE","d":{"not":"a message"}}"#;
    let payload = scan(json);
    let filter = EventFilter::only([EventType::Ready]);
    assert!(matches!(payload.decode(&filter), Decoded::Filtered));
    assert!(matches!(
        payload.decode(&EventFilter::none()),
        Decoded::Filtered
    ));
    assert!(matches!(
        payload.decode(&EventFilter::all()),
        Decoded::Failed(_)
    ));
    // The raw data is still there for the caller.
    assert_eq!(payload.data(), r#"{"not":"a message"}"#);
}

#[test]
fn unknown_event_names_pass_through_raw() {
    let json = br#"{"op":0,"s":5,"t":"SOME_FUTURE_EVENT","d":{"x":1}}"#;
    let payload = scan(json);
    assert!(matches!(
        payload.decode(&EventFilter::all()),
        Decoded::Unknown
    ));
    assert_eq!(payload.event_type(), Some("SOME_FUTURE_EVENT"));
    assert_eq!(payload.data(), r#"{"x":1}"#);
}

#[test]
fn unknown_opcodes_pass_through_raw() {
    let payload = scan(br#"{"op":42,"d":{"new":"thing"}}"#);
    assert!(matches!(
        payload.decode(&EventFilter::all()),
        Decoded::Unknown
    ));
}

#[test]
fn unknown_fields_do_not_break_typed_decoding() {
    let json = br#"{"op":0,"s":2,"t":"TYPING_START","d":{"channel_id":"1","user_id":"2","timestamp":3,"brand_new_field":{"nested":[1,2,3]},"another":"x"}}"#;
    match scan(json).decode(&EventFilter::all()) {
        Decoded::Event(GatewayEvent::Dispatch(2, DispatchEvent::TypingStart(typing))) => {
            assert_eq!(typing.user_id.get(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_known_event_that_fails_is_reported_not_fatal() {
    let json = br#"{"op":0,"s":3,"t":"TYPING_START","d":{"channel_id":"not a snowflake"}}"#;
    match scan(json).decode(&EventFilter::all()) {
        Decoded::Failed(error) => {
            assert_eq!(error.event(), "TYPING_START");
            assert!(error.to_string().contains("TYPING_START"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn control_opcodes_always_decode() {
    let none = EventFilter::none();
    type Expect = fn(&GatewayEvent) -> bool;
    let cases: [(&[u8], Expect); 6] = [
        (
            br#"{"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null}"#,
            |e| matches!(e, GatewayEvent::Hello(h) if h.heartbeat_interval == 41250),
        ),
        (br#"{"op":11,"d":null}"#, |e| {
            matches!(e, GatewayEvent::HeartbeatAck)
        }),
        (br#"{"op":1,"d":null}"#, |e| {
            matches!(e, GatewayEvent::Heartbeat)
        }),
        (br#"{"op":7,"d":null}"#, |e| {
            matches!(e, GatewayEvent::Reconnect)
        }),
        (br#"{"op":9,"d":true}"#, |e| {
            matches!(e, GatewayEvent::InvalidateSession(true))
        }),
        (br#"{"op":9,"d":false}"#, |e| {
            matches!(e, GatewayEvent::InvalidateSession(false))
        }),
    ];
    for (json, expect) in cases {
        match scan(json).decode(&none) {
            Decoded::Event(event) => assert!(expect(&event), "{event:?}"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(json)),
        }
    }
}

#[test]
fn malformed_control_payloads_are_reported() {
    assert!(matches!(
        scan(br#"{"op":9,"d":"yes"}"#).decode(&EventFilter::all()),
        Decoded::Failed(_)
    ));
    assert!(matches!(
        scan(br#"{"op":10,"d":{}}"#).decode(&EventFilter::all()),
        Decoded::Failed(_)
    ));
    assert!(matches!(
        scan(br#"{"op":0,"t":"RESUMED","d":{}}"#).decode(&EventFilter::all()),
        Decoded::Failed(_)
    ));
    assert!(matches!(
        scan(br#"{"op":0,"s":1,"d":{}}"#).decode(&EventFilter::all()),
        Decoded::Failed(_)
    ));
}

#[test]
fn a_field_after_data_is_found_by_the_strict_retry() {
    // Lazy scan takes `{...},"extra":{...}` as `d` (it ends in `}`); the typed
    // decode notices the trailing field, scans strictly and still decodes.
    let json = br#"{"t":"TYPING_START","s":4,"op":0,"d":{"channel_id":"1","user_id":"2","timestamp":3},"extra":{"y":2}}"#;
    let payload = scan(json);
    assert!(!payload.is_strict());
    for parser in TypedParser::ALL {
        match payload.decode_with(&EventFilter::all(), parser) {
            Decoded::Event(GatewayEvent::Dispatch(4, DispatchEvent::TypingStart(typing))) => {
                assert_eq!(typing.channel_id.get(), 1);
            }
            other => panic!("{parser:?}: {other:?}"),
        }
    }
}

#[test]
fn invalid_data_found_lazily_is_a_failed_decode_not_a_crash() {
    let json = br#"{"t":"TYPING_START","s":4,"op":0,"d":{"channel_id":}}"#;
    assert!(matches!(
        scan(json).decode(&EventFilter::all()),
        Decoded::Failed(_)
    ));
}

#[test]
fn deep_data_taken_lazily_never_overflows_the_stack() {
    let deep = 100_000;
    let mut generator = EventGenerator::new(5, 1);
    let mut message = generator.message_create();
    let d = message.to_string();
    let nested = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    // All of `d` nested, and a real MESSAGE_CREATE with one unknown field
    // nested (typed decoding skips unknown fields).
    message["future_field"] = serde_json::Value::Null;
    let with_field = message.to_string().replace(
        r#""future_field":null"#,
        &format!(r#""future_field":{nested}"#),
    );
    assert_ne!(with_field, d);
    for d in [nested.clone(), with_field] {
        let all_nested = d == nested;
        let json = format!(r#"{{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{d}}}"#);
        // The stack of a tokio worker (typed decoding of a real event takes
        // more than the scan's small one in a debug build).
        let outcomes = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let payload = Payload::scan(json.as_bytes()).unwrap();
                TypedParser::ALL
                    .map(|parser| payload.decode_with(&EventFilter::all(), parser))
                    .map(|decoded| matches!(decoded, Decoded::Failed(_)))
            })
            .unwrap()
            .join()
            .unwrap();
        // All of `d` nested fails with every parser. A deep unknown field
        // fails through twilight-model's flatten buffer, which copies it
        // recursively, and with sonic-rs, whose input's depth is checked
        // first; the one-pass seed on serde_json skips it without recursion.
        let expected = TypedParser::ALL.map(|parser| {
            all_nested || matches!(parser, TypedParser::TwilightModel | TypedParser::SonicRs)
        });
        assert_eq!(outcomes, expected);
    }
}
