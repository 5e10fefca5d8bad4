//! The lazy scan: one `check` helper, many inputs.

use shardwire_codec::{CodecError, Payload};

/// `(op, s, t, d)` as the scan should see them.
type Expect<'a> = (u8, Option<u64>, Option<&'a str>, &'a str);

fn check(input: &str, expect: Expect<'_>) {
    let payload = Payload::scan(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e}"));
    assert_eq!(
        (
            payload.op(),
            payload.seq(),
            payload.event_type(),
            payload.data()
        ),
        expect,
        "{input}"
    );
    assert_eq!(payload.json(), input);
}

fn check_err(input: &[u8], matches: fn(&CodecError) -> bool) {
    match Payload::scan(input) {
        Ok(payload) => panic!(
            "{:?} scanned as {payload:?}",
            String::from_utf8_lossy(input)
        ),
        Err(error) => {
            assert!(
                matches(&error),
                "{:?}: {error:?}",
                String::from_utf8_lossy(input)
            );
            assert!(!error.requires_reset(), "a scan error never needs a reset");
        }
    }
}

#[test]
fn reads_envelope_fields_in_any_order() {
    check(
        r#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}"#,
        (10, None, None, r#"{"heartbeat_interval":41250}"#),
    );
    check(
        r#"{"op":0,"d":{"a":[1,2,{"b":"}"}]},"s":42,"t":"MESSAGE_CREATE"}"#,
        (
            0,
            Some(42),
            Some("MESSAGE_CREATE"),
            r#"{"a":[1,2,{"b":"}"}]}"#,
        ),
    );
    check(r#"{"d":true,"op":9}"#, (9, None, None, "true"));
    check(r#"{"op":11}"#, (11, None, None, "null"));
    check(r#"{"op":1,"d":null}"#, (1, None, None, "null"));
}

#[test]
fn tolerates_white_space_everywhere() {
    check(
        " \n{ \"op\" : 0 ,\t\"s\" : 7 , \"t\" : \"READY\" , \"d\" : { \"v\" : 10 } }\r\n",
        (0, Some(7), Some("READY"), r#"{ "v" : 10 }"#),
    );
}

#[test]
fn skips_unknown_fields_of_any_shape() {
    check(
        r#"{"x":{"deep":[[[]]]},"op":0,"y":"s\"tr","s":1,"z":-1.5e3,"t":"A","d":[],"w":null}"#,
        (0, Some(1), Some("A"), "[]"),
    );
}

#[test]
fn escapes_in_field_names_and_t_are_decoded() {
    // "\u006fp" is "op" once unescaped, and so on: JSON says they are the
    // same names, whatever order or path the scan takes.
    check(r#"{"\u006fp":1}"#, (1, None, None, "null"));
    check(r#"{"o\"p":5,"op":2}"#, (2, None, None, "null"));
    check(
        r#"{"t":"MESSAGE\u005fCREATE","s":4,"op":0,"d":{}}"#,
        (0, Some(4), Some("MESSAGE_CREATE"), "{}"),
    );
    check(
        r#"{"\u0074":"READ\u0059","\u0073":2,"\u006f\u0070":0,"\u0064":[1]}"#,
        (0, Some(2), Some("READY"), "[1]"),
    );
    check(
        r#"{"op":0,"s":1,"t":"A\/B\u00e9\ud83d\ude00","d":null}"#,
        (0, Some(1), Some("A/B\u{e9}\u{1f600}"), "null"),
    );
    // A name that cannot be a string of text (a lone surrogate) is invalid,
    // as serde_json finds too.
    let invalid = |e: &CodecError| matches!(e, CodecError::InvalidJson { .. });
    check_err(br#"{"op":0,"t":"A\ud800"}"#, invalid);
    check_err(br#"{"op":0,"\udc00":1}"#, invalid);
    check_err(br#"{"op":0,"t":"A\x"}"#, invalid);
    // Raw control characters are invalid in names as in any string.
    check_err(b"{\"op\":0,\"a\x01\":1}", invalid);
    check_err(b"{\"op\":0,\"t\":\"A\x01\"}", invalid);
}

/// Runs `scan` on a thread with a small stack, as a tokio worker has: no
/// input may overflow it.
fn on_small_stack<T: Send + 'static>(scan: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(scan)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn no_nesting_overflows_the_stack_and_depth_is_bounded() {
    let deep = 100_000;
    let cases = [
        // Unclosed, in Discord's order: not plausible as one value, so the
        // scan checks it (this one overflowed the stack).
        format!(
            r#"{{"t":"MESSAGE_CREATE","s":1,"op":0,"d":{}}}"#,
            "[".repeat(deep)
        ),
        format!(
            r#"{{"t":"MESSAGE_CREATE","s":1,"op":0,"d":{}}}"#,
            r#"{"a":"#.repeat(deep)
        ),
        // Balanced, in another field or order: checked, and too deep.
        format!(
            r#"{{"op":0,"x":{}{},"s":1}}"#,
            "[".repeat(deep),
            "]".repeat(deep)
        ),
        format!(r#"{{"d":{}{},"op":0}}"#, "[".repeat(deep), "]".repeat(deep)),
    ];
    for json in cases {
        for strict in [false, true] {
            let json = json.clone();
            let result = on_small_stack(move || {
                let scanned = if strict {
                    Payload::scan_strict(json.as_bytes())
                } else {
                    Payload::scan(json.as_bytes())
                };
                scanned.map(|_| ()).map_err(|error| error.to_string())
            });
            let error = result.expect_err("a payload nested 100,000 deep was accepted");
            assert!(error.contains("nested deeper than 127"), "{error}");
        }
    }
}

#[test]
fn the_depth_limit_is_the_whole_payloads_and_serde_jsons() {
    let nested = |levels: usize| {
        format!(
            r#"{{"op":0,"d":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // The envelope is one level: `d` may nest MAX_DEPTH - 1 more.
    let deepest = nested(shardwire_codec::MAX_DEPTH - 1);
    assert!(Payload::scan_strict(deepest.as_bytes()).is_ok());
    assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok());
    let too_deep = nested(shardwire_codec::MAX_DEPTH);
    assert!(Payload::scan_strict(too_deep.as_bytes()).is_err());
    assert!(serde_json::from_str::<serde_json::Value>(&too_deep).is_err());
}

#[test]
fn keeps_unicode_in_data_untouched() {
    check(
        r#"{"op":0,"s":3,"t":"MESSAGE_CREATE","d":{"content":"héllo 👍 \u00e9"}}"#,
        (
            0,
            Some(3),
            Some("MESSAGE_CREATE"),
            r#"{"content":"héllo 👍 \u00e9"}"#,
        ),
    );
}

#[test]
fn missing_op_is_its_own_error() {
    check_err(br#"{"d":{},"s":null}"#, |e| {
        matches!(e, CodecError::MissingOp)
    });
    check_err(b"{}", |e| matches!(e, CodecError::MissingOp));
}

#[test]
fn wrong_types_and_ranges_are_invalid_json() {
    let invalid = |e: &CodecError| matches!(e, CodecError::InvalidJson { .. });
    check_err(br#"{"op":"0"}"#, invalid);
    check_err(br#"{"op":1.0}"#, invalid);
    check_err(br#"{"op":-1}"#, invalid);
    check_err(br#"{"op":256}"#, invalid);
    check_err(br#"{"op":01}"#, invalid);
    check_err(br#"{"op":99999999999999999999999}"#, invalid);
    check_err(br#"{"op":0,"s":"1"}"#, invalid);
    check_err(br#"{"op":0,"t":5}"#, invalid);
}

#[test]
fn malformed_json_is_invalid_json() {
    let invalid = |e: &CodecError| matches!(e, CodecError::InvalidJson { .. });
    for input in [
        &b""[..],
        b"   ",
        b"[]",
        b"null",
        b"{",
        br#"{"op":0"#,
        br#"{"op":0,}"#,
        br#"{"op":0 "d":1}"#,
        br#"{"op":0,"d":{"a":}}"#,
        br#"{"op":0,"d":{"a":1}"#,
        br#"{"op":0,"d":[1,2}"#,
        br#"{"op":0,"d":"unterminated}"#,
        br#"{"op":0,"d":tru}"#,
        br#"{"op":0} trailing"#,
        br#"{"op":0}{"op":1}"#,
        br#"{op:0}"#,
    ] {
        check_err(input, invalid);
    }
}

#[test]
fn invalid_utf8_is_its_own_error() {
    let utf8 = |e: &CodecError| matches!(e, CodecError::InvalidUtf8 { .. });
    check_err(b"{\"op\":0,\"d\":\"\xff\xfe\"}", utf8);
    check_err(b"{\"op\":0,\"x\xc3\":1}", utf8);
    check_err(b"{\"op\":0,\"t\":\"A\xed\xa0\x80\"}", utf8);
}

#[test]
fn discord_field_order_takes_data_lazily() {
    let json = br#"{"t":"X","s":1,"op":0,"d":{"a":[1,"]}"]} }"#;
    let lazy = Payload::scan(json).unwrap();
    assert!(!lazy.is_strict());
    assert_eq!(lazy.data(), r#"{"a":[1,"]}"]}"#);
    let strict = Payload::scan_strict(json).unwrap();
    assert!(strict.is_strict());
    assert_eq!(strict.data(), lazy.data());
    // Any other order is scanned strictly.
    assert!(
        Payload::scan(br#"{"d":{},"t":"X","s":1,"op":0}"#)
            .unwrap()
            .is_strict()
    );
    assert!(Payload::scan(br#"{"op":11,"d":null}"#).unwrap().is_strict());
}

#[test]
fn the_lazy_scan_accepts_whatever_the_strict_scan_does() {
    // Found by the json_nested fuzz target: `d` taken lazily hid a second
    // `op`, and the first was out of range.
    let json = "{\"t\" :\r\n\t\"G\\u0055IL\\u0044\u{e9}\",\"s\" :\r\n\tnull,\"op\" :\r\n\t256,\"d\" :\r\n\t\"lone \\ud800 surrogate\",\"op\":11,\"d\" :\r\n\t\"\\u0068\\u00E9\\u006Clo\"}";
    let strict = Payload::scan_strict(json.as_bytes()).unwrap();
    let lazy = Payload::scan(json.as_bytes()).unwrap();
    assert_eq!(lazy, strict);
    assert_eq!(
        (lazy.op(), lazy.event_type()),
        (11, Some("GUIL\u{44}\u{e9}"))
    );
    assert_eq!(lazy.data(), r#""\u0068\u00E9\u006Clo""#);
}

#[test]
fn lazy_scan_defers_validation_of_data_that_strict_scan_rejects() {
    let json = br#"{"t":"X","s":1,"op":0,"d":{"a":}}"#;
    let lazy = Payload::scan(json).unwrap();
    assert_eq!(lazy.data(), r#"{"a":}"#);
    assert!(matches!(
        Payload::scan_strict(json),
        Err(CodecError::InvalidJson { .. })
    ));
}

#[test]
fn lazy_scan_falls_back_when_data_does_not_look_like_one_value() {
    // `d` followed by a field whose value ends in a digit: not plausible as
    // one object, so the scan goes strict and finds the extra field.
    let json = br#"{"t":"X","s":1,"op":0,"d":{"a":1},"later":5}"#;
    let payload = Payload::scan(json).unwrap();
    assert!(payload.is_strict());
    assert_eq!(payload.data(), r#"{"a":1}"#);
    // Not a JSON value at all: strict scan reports it.
    let bad = br#"{"t":"X","s":1,"op":0,"d":nope}"#;
    assert!(matches!(
        Payload::scan(bad),
        Err(CodecError::InvalidJson { .. })
    ));
    // Still UTF-8 checked on the lazy path.
    let bad = b"{\"t\":\"X\",\"s\":1,\"op\":0,\"d\":\"\xff\"}";
    assert!(matches!(
        Payload::scan(bad),
        Err(CodecError::InvalidUtf8 { .. })
    ));
}
