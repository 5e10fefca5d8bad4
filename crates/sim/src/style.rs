//! Writes a payload's JSON the way a [`PayloadStyle`] asks: another field
//! order, pretty-printed, names escaped. Always valid JSON, meaning the
//! same as the payload Discord would send; a client must read it alike.

use serde::Serialize;
use serde_json::Value;

use crate::observe::{FieldOrder, PayloadStyle};

/// `json` in `style`; `None` when the style is Discord's own, or when
/// `json` is not a JSON object (a hostile `d` is sent as it is).
pub(crate) fn restyle(json: &[u8], style: PayloadStyle) -> Option<Vec<u8>> {
    if style == PayloadStyle::default() {
        return None;
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(json) else {
        return None;
    };
    let order: &[&str] = match style.order {
        FieldOrder::Discord => &["t", "s", "op", "d"],
        FieldOrder::DataFirst => &["d", "op", "s", "t"],
        FieldOrder::DataInside => &["op", "d", "t", "s"],
    };
    let known = order.iter().filter_map(|name| {
        fields
            .get_key_value(*name)
            .map(|(name, value)| (name.as_str(), value))
    });
    let others = fields
        .iter()
        .filter(|(name, _)| !order.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value));
    let (open, between, colon, close) = if style.pretty {
        ("{\r\n\t", ",\r\n\t", " :\t", "\r\n}\r\n")
    } else {
        ("{", ",", ":", "}")
    };
    let mut out = open.to_owned();
    for (index, (name, value)) in known.chain(others).enumerate() {
        if index > 0 {
            out.push_str(between);
        }
        out.push_str(&string(name, style.escaped_names));
        out.push_str(colon);
        match value {
            Value::String(text) if name == "t" => out.push_str(&string(text, style.escaped_names)),
            value if style.pretty => out.push_str(&pretty(value)),
            value => out.push_str(&value.to_string()),
        }
    }
    out.push_str(close);
    Some(out.into_bytes())
}

/// A JSON string of `text`, every ASCII character as a `\u` escape when
/// `escaped`.
fn string(text: &str, escaped: bool) -> String {
    if !escaped {
        return Value::from(text).to_string();
    }
    let mut out = String::from("\"");
    for ch in text.chars() {
        if ch.is_ascii() {
            out.push_str(&format!("\\u{:04x}", u32::from(ch)));
        } else {
            out.push(ch);
        }
    }
    out.push('"');
    out
}

/// `value` indented with tabs, lines ending in CRLF: inside strings line
/// breaks are escapes, so every raw one is white space between tokens.
fn pretty(value: &Value) -> String {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    if value.serialize(&mut serializer).is_err() {
        return value.to_string();
    }
    String::from_utf8_lossy(&bytes).replace('\n', "\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] =
        br#"{"t":"MESSAGE_CREATE","s":7,"op":0,"d":{"content":"a\nb","n":[1,{"x":null}]}}"#;

    #[test]
    fn every_style_means_the_same_payload() {
        let original: Value = serde_json::from_slice(PAYLOAD).unwrap();
        for order in [
            FieldOrder::Discord,
            FieldOrder::DataFirst,
            FieldOrder::DataInside,
        ] {
            for pretty in [false, true] {
                for escaped_names in [false, true] {
                    let style = PayloadStyle {
                        order,
                        pretty,
                        escaped_names,
                    };
                    let Some(styled) = restyle(PAYLOAD, style) else {
                        assert_eq!(style, PayloadStyle::default());
                        continue;
                    };
                    let text = String::from_utf8(styled).unwrap();
                    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), original);
                    assert_eq!(text.contains("\r\n\t"), pretty, "{text}");
                    assert_eq!(text.contains(r"\u006f\u0070"), escaped_names, "{text}");
                }
            }
        }
    }

    #[test]
    fn what_is_not_an_object_goes_as_it_is() {
        let style = PayloadStyle {
            pretty: true,
            ..PayloadStyle::default()
        };
        assert_eq!(restyle(br#"{"op":0,"d":[[[}"#, style), None);
    }
}
