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
fn keys_with_escapes_are_not_envelope_fields() {
    // "\u006fp" spells "op" once unescaped; the scan does not treat it as op.
    check_err(br#"{"\u006fp":1}"#, |e| matches!(e, CodecError::MissingOp));
    check(r#"{"o\"p":5,"op":2}"#, (2, None, None, "null"));
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
