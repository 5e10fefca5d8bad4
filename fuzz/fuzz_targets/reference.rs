//! The scan's reference: what serde_json makes of a payload, and the checks
//! that hold the scan to it. Shared by the JSON targets.
//!
//! serde_json reads the top-level object as its fields in order, each value
//! raw: it skips values without recursion, so any depth is read, and what
//! a field holds is exactly its bytes. The depth is counted here, bracket
//! by bracket. Both directions are checked: what the strict scan accepts,
//! serde_json reads alike, and what serde_json reads as a gateway payload
//! (within `MAX_DEPTH`), the strict scan accepts with the same `op`, `s`,
//! `t` (escapes decoded) and `d` (the same bytes). The lazy scan reads the
//! same envelope whenever the reference does, and `d` alike once it says
//! it checked `d`.
#![allow(dead_code)]

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use shardwire_codec::{Decoded, EventFilter, MAX_DEPTH, Payload, TypedParser};

/// The top-level fields, in order, values raw.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

/// The deepest nesting of arrays and objects in valid JSON.
fn depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// What a gateway payload says: `op`, `s`, `t`, `d`.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    pub op: u8,
    pub seq: Option<u64>,
    pub event_type: Option<String>,
    pub data: String,
}

/// A non-negative integer written as JSON's grammar has it: no sign, no
/// fraction, no exponent, no leading zero.
fn plain_integer(raw: &str) -> Option<u64> {
    let digits = raw.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = raw.len() > 1 && raw.starts_with('0');
    if raw.is_empty() || !digits || leading_zero {
        return None;
    }
    raw.parse().ok()
}

/// The reference envelope, or `None` when the payload is not one.
pub fn reference(json: &[u8]) -> (Option<Envelope>, bool) {
    let Ok(Fields(fields)) = serde_json::from_slice::<Fields>(json) else {
        return (None, false);
    };
    let mut names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    let duplicates = names.windows(2).any(|pair| pair[0] == pair[1]);
    if depth(json) > MAX_DEPTH {
        return (None, duplicates);
    }
    // Every `op`, `s` and `t` must be valid where it appears, and the last
    // of a name wins, as in the scan.
    let values = |name: &'static str| {
        fields
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, raw)| raw.get())
    };
    let envelope = (|| {
        // Each `op` an integer, the one that counts at most 255.
        let mut op = None;
        for raw in values("op") {
            op = Some(plain_integer(raw)?);
        }
        let op = u8::try_from(op?).ok();
        let mut seq = None;
        for raw in values("s") {
            seq = match raw {
                "null" => None,
                raw => Some(plain_integer(raw)?),
            };
        }
        let mut event_type = None;
        for raw in values("t") {
            event_type = match raw {
                "null" => None,
                raw if raw.starts_with('"') => Some(serde_json::from_str::<String>(raw).ok()?),
                _ => return None,
            };
        }
        let data = values("d").last().unwrap_or("null").to_owned();
        Some(Envelope {
            op: op?,
            seq,
            event_type,
            data,
        })
    })();
    (envelope, duplicates)
}

fn envelope(payload: &Payload<'_>) -> Envelope {
    Envelope {
        op: payload.op(),
        seq: payload.seq(),
        event_type: payload.event_type().map(str::to_owned),
        data: payload.data().to_owned(),
    }
}

/// Every check of the scans against the reference, on one input.
pub fn check(json: &[u8]) {
    let (expected, duplicates) = reference(json);
    let strict = Payload::scan_strict(json);
    match (&strict, &expected) {
        (Ok(payload), Some(expected)) => {
            assert_eq!(
                &envelope(payload),
                expected,
                "strict scan of {}",
                show(json)
            );
            assert!(payload.is_strict());
        }
        (Err(_), None) => {}
        (Ok(payload), None) => panic!(
            "the strict scan accepts {} as {payload:?}; serde_json does not",
            show(json)
        ),
        (Err(error), Some(expected)) => panic!(
            "serde_json reads {} as {expected:?}; the strict scan says {error}",
            show(json)
        ),
    }
    let lazy = Payload::scan(json);
    if let Ok(payload) = &lazy {
        assert_eq!(payload.json().as_bytes(), json);
        // With a name twice, a lazy `d` may hide the later one (documented).
        if let Ok(strict) = &strict
            && !duplicates
        {
            assert_eq!(
                (payload.op(), payload.seq(), payload.event_type()),
                (strict.op(), strict.seq(), strict.event_type()),
                "lazy and strict disagree on {}",
                show(json)
            );
        }
        if payload.is_strict()
            && !duplicates
            && let Some(expected) = &expected
        {
            assert_eq!(payload.data(), expected.data);
        }
        // The serde_json ways read the same event as twilight-model's own
        // seed, and fail where it fails but for a deep unknown field; sonic-rs only must not crash (it
        // reads some edges of JSON its own way).
        let theirs = payload.decode_with(&EventFilter::all(), TypedParser::TwilightModel);
        for parser in TypedParser::ALL {
            let ours = payload.decode_with(&EventFilter::all(), parser);
            if parser == TypedParser::SonicRs {
                continue;
            }
            match (&ours, &theirs) {
                // `GatewayEvent` has no `PartialEq`; its `Debug` shows all.
                (Decoded::Event(ours), Decoded::Event(theirs)) => {
                    assert_eq!(
                        format!("{ours:?}"),
                        format!("{theirs:?}"),
                        "{parser:?} on {}",
                        show(json)
                    );
                }
                // The one-pass seed skips a deep unknown field that the
                // flatten buffer refused (past 127 levels).
                (Decoded::Event(_), _) if payload.event_type() == Some("MESSAGE_CREATE") => {}
                (Decoded::Event(_), _) | (_, Decoded::Event(_)) => panic!(
                    "{parser:?}: {ours:?}, twilight-model's seed: {theirs:?}, on {}",
                    show(json)
                ),
                _ => {}
            }
        }
    } else if let Some(expected) = &expected {
        panic!(
            "serde_json reads {} as {expected:?}; the lazy scan refuses it",
            show(json)
        );
    }
}

fn show(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    if text.len() > 300 {
        format!(
            "{:?}… ({} bytes)",
            &text[..text.floor_char_boundary(300)],
            json.len()
        )
    } else {
        format!("{text:?}")
    }
}
