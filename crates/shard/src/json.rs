//! [`Json`]: the JSON of one received payload, sharing its batch's buffer.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// The JSON of one received payload, as [`ShardEvent::Dispatch`] and
/// [`ShardEvent::Message`] carry it.
///
/// It reads as a `&str` (it derefs to one: `serde_json::from_str(&json)`,
/// `json.len()`, `println!("{json}")`) and clones cheaply.
///
/// The events a shard hands over together keep their JSON in one shared
/// buffer, so an event costs no allocation or copy of its own. The buffer
/// is freed when the last `Json` pointing into it is dropped: a `Json`
/// kept for long keeps all of it (some 16 KiB of other events' JSON, or one
/// large payload). [`Json::into_string`] copies the JSON out to keep it
/// apart.
///
/// [`ShardEvent::Dispatch`]: crate::ShardEvent::Dispatch
/// [`ShardEvent::Message`]: crate::ShardEvent::Message
#[derive(Clone)]
pub struct Json(Repr);

#[derive(Clone)]
enum Repr {
    /// A part of a batch's buffer.
    Part(Arc<String>, Range<usize>),
    /// JSON with a buffer of its own.
    Whole(Arc<str>),
}

impl Json {
    /// The part `range` of a shared buffer; a range outside it (which
    /// nothing in this crate makes) reads as empty rather than panicking.
    pub(crate) fn shared(text: &Arc<String>, range: Range<usize>) -> Self {
        let range = if text.get(range.clone()).is_some() {
            range
        } else {
            0..0
        };
        Self(Repr::Part(Arc::clone(text), range))
    }

    /// The JSON.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Part(text, range) => text.get(range.clone()).unwrap_or_default(),
            Repr::Whole(text) => text,
        }
    }

    /// The JSON as a `String` of its own, copied out of the shared buffer
    /// unless this `Json` is the whole of a buffer nothing else shares.
    #[must_use]
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Part(text, range) if range == (0..text.len()) => {
                Arc::try_unwrap(text).unwrap_or_else(|text| text.as_str().to_owned())
            }
            Repr::Part(text, range) => text.get(range).unwrap_or_default().to_owned(),
            Repr::Whole(text) => String::from(&*text),
        }
    }
}

impl Default for Json {
    fn default() -> Self {
        Self::from("")
    }
}

impl Deref for Json {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Json {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Json {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Json {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Json {
    fn from(text: String) -> Self {
        let range = 0..text.len();
        Self(Repr::Part(Arc::new(text), range))
    }
}

impl From<&str> for Json {
    /// One allocation, for the JSON's own buffer.
    fn from(text: &str) -> Self {
        Self(Repr::Whole(Arc::from(text)))
    }
}

impl From<Json> for String {
    fn from(json: Json) -> Self {
        json.into_string()
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Json {}

impl PartialOrd for Json {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Json {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Json {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Json {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Json {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Json {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Json> for str {
    fn eq(&self, other: &Json) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Json> for &str {
    fn eq(&self, other: &Json) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Json> for String {
    fn eq(&self, other: &Json) -> bool {
        self == other.as_str()
    }
}

impl serde::Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_one_buffer_read_as_their_own_json() {
        let text = Arc::new(String::from(r#"{"a":1}{"b":2}"#));
        let (a, b) = (Json::shared(&text, 0..7), Json::shared(&text, 7..14));
        assert_eq!((a.as_str(), &*b), (r#"{"a":1}"#, r#"{"b":2}"#));
        assert_eq!(a, r#"{"a":1}"#);
        assert_eq!(format!("{b} {b:?}"), r#"{"b":2} "{\"b\":2}""#);
        assert_eq!(Arc::strong_count(&text), 3, "no copies, only handles");
        drop((a, b));
        assert_eq!(Arc::strong_count(&text), 1);
    }

    #[test]
    fn a_range_outside_the_buffer_reads_as_empty_never_a_panic() {
        let text = Arc::new(String::from("é{}"));
        assert_eq!(Json::shared(&text, 2..40).as_str(), "");
        // Not on a character boundary.
        assert_eq!(Json::shared(&text, 1..3).as_str(), "");
    }

    #[test]
    fn into_string_copies_a_part_and_takes_a_whole_unshared_buffer() {
        let text = Arc::new(String::from("[1][2]"));
        let part = Json::shared(&text, 3..6);
        assert_eq!(part.into_string(), "[2]");
        let whole = Json::from(String::with_capacity(64) + "[3]");
        let pointer = whole.as_ptr();
        let owned = whole.into_string();
        assert_eq!((owned.as_str(), owned.as_ptr()), ("[3]", pointer));
        let shared = Json::from("[4]");
        let other = shared.clone();
        assert_eq!(
            (String::from(shared), other.as_str()),
            ("[4]".into(), "[4]")
        );
    }
}
