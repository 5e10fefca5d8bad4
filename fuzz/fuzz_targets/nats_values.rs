//! What shardwire-nats reads back from NATS: message ids, event subjects and
//! stored sessions. None may panic; each parse is the inverse of its write.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardwire_nats::{
    Layout, event_subject, message_id, parse_event_subject, parse_message_id, parse_session,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(id) = std::str::from_utf8(rest) else {
                return;
            };
            if let Some((session, seq)) = parse_message_id(id) {
                // Only a canonical number writes back identically.
                if !id.ends_with(&format!(":{seq}")) {
                    return;
                }
                assert_eq!(message_id(session, seq), id);
            }
        }
        1 => {
            let Ok(subject) = std::str::from_utf8(rest) else {
                return;
            };
            let layout = Layout::default();
            if let Some((shard, event)) = parse_event_subject(&layout, subject) {
                let written = event_subject(&layout, shard, event);
                let reparsed = parse_event_subject(&layout, &written);
                assert_eq!(reparsed.map(|(s, _)| s), Some(shard));
            }
        }
        _ => {
            if let Ok(session) = parse_session(rest) {
                assert!(session.check().is_ok());
                let written = serde_json::to_vec(&session).unwrap();
                assert_eq!(parse_session(&written), Ok(session));
            }
        }
    }
});
