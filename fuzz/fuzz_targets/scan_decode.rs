#![no_main]
//! The scan and typed decoding on arbitrary bytes: never a panic; whatever the
//! scan accepts is consistent; and every payload serde_json accepts as a
//! gateway envelope, the scan accepts with the same `op`, `s` and `t`.

use libfuzzer_sys::fuzz_target;
use shardwire_codec::{EventFilter, Payload, TypedParser};

fuzz_target!(|data: &[u8]| {
    let scanned = Payload::scan(data);
    if let Ok(payload) = &scanned {
        assert_eq!(payload.json().as_bytes(), data);
        // `d` is a slice of the payload, or the literal `null` when absent.
        let json = payload.json();
        let (data, base) = (payload.data().as_ptr() as usize, json.as_ptr() as usize);
        let inside = data
            .checked_sub(base)
            .is_some_and(|offset| offset + payload.data().len() <= json.len());
        assert!(
            inside || payload.data() == "null",
            "d is neither in the payload nor null"
        );
        for parser in [TypedParser::SerdeJson, TypedParser::SonicRs] {
            let _ = payload.decode_with(&EventFilter::all(), parser);
        }
    }
    // Differential check against serde_json, for inputs without escapes
    // (an escaped key such as "\u006fp" is "op" to serde_json but not to the
    // scan, by design: Discord never escapes its field names).
    if data.contains(&b'\\') {
        return;
    }
    // serde_json reads `-0` as 0; the scan refuses a sign on `op` and `s`.
    // With a duplicate key, serde_json keeps the last value while the scan
    // stops at the first invalid one. Neither happens on the gateway.
    let count = |needle: &[u8]| data.windows(needle.len()).filter(|w| *w == needle).count();
    if count(b"-0") > 0 || count(b"\"op\"") > 1 || count(b"\"s\"") > 1 || count(b"\"t\"") > 1 {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Some(object) = value.as_object() else {
        return;
    };
    let Some(op) = object.get("op").and_then(serde_json::Value::as_u64) else {
        return;
    };
    if op > 255 {
        return;
    }
    let seq = match object.get("s") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => match s.as_u64() {
            Some(s) => Some(s),
            None => return,
        },
    };
    let event_type = match object.get("t") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) => match t.as_str() {
            Some(t) => Some(t.to_owned()),
            None => return,
        },
    };
    // serde_json accepts `1.0` or `1e2` only as floats, so `as_u64` already
    // rejected those; a duplicate key makes serde_json keep the last value,
    // as the scan does.
    let payload = scanned.unwrap_or_else(|error| {
        panic!(
            "serde_json accepts {:?} but the scan says {error}",
            String::from_utf8_lossy(data)
        )
    });
    assert_eq!(u64::from(payload.op()), op);
    assert_eq!(payload.seq(), seq);
    assert_eq!(payload.event_type().map(str::to_owned), event_type);
});
