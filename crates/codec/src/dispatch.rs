//! One dispatch's `d` into twilight-model's `DispatchEvent`, in one pass.
//!
//! twilight-model derives `MessageCreate` as `channel_type` plus a
//! `#[serde(flatten)]` `Message`. serde's flatten first buffers the whole
//! object into its private `Content` tree (a `Vec` per object and array,
//! every key and value kept), then deserializes `Message` from that copy:
//! MESSAGE_CREATE, the largest of the common events, is read twice. Here
//! `Message` is deserialized straight from the JSON, and `channel_type` is
//! taken out of the object on its way past, so the result is the same
//! value, read once. Every other event goes through twilight-model's own
//! deserializer.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;
use twilight_model::channel::ChannelType;
use twilight_model::gateway::event::{DispatchEvent, DispatchEventWithTypeDeserializer};
use twilight_model::gateway::payload::incoming::MessageCreate;

/// Deserializes the `d` of a dispatch named `name`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    name: &str,
    deserializer: D,
) -> Result<DispatchEvent, D::Error> {
    if name == "MESSAGE_CREATE" {
        return message_create(deserializer)
            .map(|event| DispatchEvent::MessageCreate(Box::new(event)));
    }
    DispatchEventWithTypeDeserializer::new(name).deserialize(deserializer)
}

/// `MessageCreate` as twilight-model's derive reads it (an object only; a
/// second `channel_type` is a duplicate field), without the flatten buffer.
fn message_create<'de, D: Deserializer<'de>>(deserializer: D) -> Result<MessageCreate, D::Error> {
    let mut channel_type = None;
    let message = serde::Deserialize::deserialize(TakeChannelType {
        inner: deserializer,
        channel_type: &mut channel_type,
    })?;
    Ok(MessageCreate {
        channel_type: channel_type.flatten(),
        message,
    })
}

const CHANNEL_TYPE: &str = "channel_type";

/// `Option<Option<_>>`: not seen, seen as `null`, seen with a value.
type Slot = Option<Option<ChannelType>>;

/// A deserializer that hands its object to `Message`'s visitor with the
/// `channel_type` field taken out (into `channel_type`).
struct TakeChannelType<'s, D> {
    inner: D,
    channel_type: &'s mut Slot,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for TakeChannelType<'_, D> {
    type Error = D::Error;

    /// Every request is read as an object: `Message` asks for a struct, and
    /// twilight-model's flatten accepts nothing but an object either.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(ObjectVisitor {
            visitor,
            channel_type: self.channel_type,
        })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct ObjectVisitor<'s, V> {
    visitor: V,
    channel_type: &'s mut Slot,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(WithoutChannelType {
            map,
            channel_type: self.channel_type,
        })
    }
}

/// An object's fields less `channel_type`, which goes into its slot.
struct WithoutChannelType<'s, A> {
    map: A,
    channel_type: &'s mut Slot,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutChannelType<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            if key.as_str() != CHANNEL_TYPE {
                return match key {
                    Key::Borrowed(key) => seed.deserialize(BorrowedStrDeserializer::new(key)),
                    Key::Owned(key) => seed.deserialize(StringDeserializer::new(key)),
                }
                .map(Some);
            }
            if self.channel_type.is_some() {
                return Err(de::Error::duplicate_field(CHANNEL_TYPE));
            }
            *self.channel_type = Some(self.map.next_value()?);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A field name: borrowed from the input where the parser can (no escapes),
/// owned otherwise.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor(PhantomData))
    }
}

struct KeyVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for KeyVisitor<'de> {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(key.to_owned()))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
        Ok(Key::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What twilight-model's own seed makes of `d`, and what ours makes:
    /// the same value, or both an error.
    fn both(name: &str, d: &str) -> (Result<DispatchEvent, String>, Result<DispatchEvent, String>) {
        let theirs = {
            let mut de = serde_json::Deserializer::from_str(d);
            DispatchEventWithTypeDeserializer::new(name)
                .deserialize(&mut de)
                .and_then(|event| de.end().map(|()| event))
                .map_err(|e| e.to_string())
        };
        let ours = {
            let mut de = serde_json::Deserializer::from_str(d);
            deserialize(name, &mut de)
                .and_then(|event| de.end().map(|()| event))
                .map_err(|e| e.to_string())
        };
        (theirs, ours)
    }

    fn agree(d: &str) -> Option<DispatchEvent> {
        match both("MESSAGE_CREATE", d) {
            (Ok(theirs), Ok(ours)) => {
                assert_eq!(theirs, ours, "{d}");
                Some(ours)
            }
            (Err(_), Err(_)) => None,
            (theirs, ours) => panic!("{d}: twilight-model {theirs:?}, ours {ours:?}"),
        }
    }

    const AUTHOR: &str = r#""author":{"id":"3","username":"a","discriminator":"0","avatar":null}"#;
    const REST: &str = r#""attachments":[],"channel_id":"2","content":"hi","edited_timestamp":null,"embeds":[],"id":"1","mention_everyone":false,"mention_roles":[],"mentions":[],"pinned":false,"timestamp":"2026-01-01T00:00:00.000000+00:00","tts":false,"type":0"#;

    fn channel_type(event: &DispatchEvent) -> Option<ChannelType> {
        match event {
            DispatchEvent::MessageCreate(message) => message.channel_type,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn channel_type_is_read_wherever_it_is() {
        for d in [
            format!(r#"{{"channel_type":5,{AUTHOR},{REST}}}"#),
            format!(r#"{{{AUTHOR},"channel_type":5,{REST}}}"#),
            format!(r#"{{{AUTHOR},{REST},"channel_type":5}}"#),
            format!(r#"{{{AUTHOR},{REST},"channel\u005ftype":5}}"#),
        ] {
            let event = agree(&d).expect("a MESSAGE_CREATE");
            assert_eq!(
                channel_type(&event),
                Some(ChannelType::GuildAnnouncement),
                "{d}"
            );
        }
        for d in [
            format!(r#"{{{AUTHOR},{REST}}}"#),
            format!(r#"{{"channel_type":null,{AUTHOR},{REST}}}"#),
        ] {
            assert_eq!(
                channel_type(&agree(&d).expect("a MESSAGE_CREATE")),
                None,
                "{d}"
            );
        }
    }

    #[test]
    fn the_message_is_the_same_as_twilight_models() {
        // Escaped names and text, unknown fields of every shape, a member.
        let d = format!(
            r#"{{{AUTHOR},"c\u006fntent":"a \"quoted\" \u00e9","x":{{"y":[1,{{"z":null}}]}},"member":{{"roles":[],"joined_at":null,"deaf":false,"mute":false,"flags":0,"nick":"n\n"}},"channel_id":"2","edited_timestamp":null,"embeds":[],"id":"1","mention_everyone":false,"mention_roles":["7"],"mentions":[],"pinned":false,"timestamp":"2026-01-01T00:00:00.000000+00:00","tts":false,"type":0,"attachments":[],"channel_type":0}}"#
        );
        let event = agree(&d).expect("a MESSAGE_CREATE");
        let DispatchEvent::MessageCreate(message) = event else {
            panic!("not a MESSAGE_CREATE");
        };
        assert_eq!(message.content, "a \"quoted\" \u{e9}");
        assert_eq!(
            message.member.as_ref().and_then(|m| m.nick.as_deref()),
            Some("n\n")
        );
    }

    #[test]
    fn what_twilight_model_refuses_is_refused() {
        let refused = [
            // A second `channel_type`, or a second field of the message.
            format!(r#"{{"channel_type":0,{AUTHOR},{REST},"channel_type":0}}"#),
            format!(r#"{{"channel_type":0,{AUTHOR},{REST},"content":"x"}}"#),
            // A wrong type, a missing field.
            format!(r#"{{"channel_type":"0",{AUTHOR},{REST}}}"#),
            format!(r#"{{{REST}}}"#),
            // Not an object: the derive would take an array as a struct.
            r#"["1"]"#.to_owned(),
            "null".to_owned(),
            // Cut short.
            format!(r#"{{{AUTHOR},{REST}"#),
        ];
        for d in refused {
            assert!(agree(&d).is_none(), "{d}");
        }
    }

    #[test]
    fn a_deep_unknown_field_is_skipped_where_the_flatten_buffer_refused_it() {
        // serde_json skips an unknown value without recursion and without
        // its depth limit; the flatten buffer copied it, recursing, and
        // stopped at 128 levels. The message itself is read alike.
        let d = format!(
            r#"{{"x":{}{},{AUTHOR},{REST}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let (theirs, ours) = both("MESSAGE_CREATE", &d);
        assert!(theirs.unwrap_err().contains("recursion limit"));
        let plain = agree(&format!(r#"{{{AUTHOR},{REST}}}"#)).expect("a MESSAGE_CREATE");
        assert_eq!(ours.unwrap(), plain);
    }

    #[test]
    fn other_events_are_twilight_models_own() {
        let d = r#"{"user_id":"3","timestamp":1,"channel_id":"2"}"#;
        let (theirs, ours) = both("TYPING_START", d);
        assert_eq!(theirs.unwrap(), ours.unwrap());
    }
}
