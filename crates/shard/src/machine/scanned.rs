//! What the machine keeps of each payload it scans, and the typed
//! dispatch the filter asks for.

use std::borrow::Cow;
use std::ops::Range;

use shardwire_codec::{Decoded, EventFilter, Payload};
use twilight_model::gateway::event::{Event, EventType, GatewayEvent};

/// What the machine keeps of a scanned payload, whose JSON was copied to
/// the end of the machine's `text`: `json` is its range there, and `d` a
/// range within it (`None`: absent).
pub(super) struct Scanned {
    pub(super) op: u8,
    pub(super) seq: Option<u64>,
    pub(super) event_type: Option<Cow<'static, str>>,
    data: Option<Range<usize>>,
    pub(super) json: Range<usize>,
    pub(super) typed: Option<Box<Event>>,
}

/// The typed dispatch of a payload's JSON, if the filter asks for it and it
/// deserializes.
pub(crate) fn typed_json(filter: &EventFilter, json: &str) -> Option<Box<Event>> {
    let payload = Payload::scan(json.as_bytes()).ok()?;
    typed(filter, &payload)
}

/// The typed dispatch, if the filter asks for it and it deserializes.
pub(super) fn typed(filter: &EventFilter, payload: &Payload<'_>) -> Option<Box<Event>> {
    if payload.op() != 0 || !filter.wants_any() {
        return None;
    }
    match payload.decode(filter) {
        Decoded::Event(GatewayEvent::Dispatch(_, event)) => Some(Box::new(Event::from(event))),
        Decoded::Failed(error) => {
            tracing::warn!(%error, "a dispatch did not deserialize; it comes out raw only");
            None
        }
        _ => None,
    }
}

impl Scanned {
    pub(super) fn with_typed(mut self, typed: Option<Box<Event>>) -> Self {
        self.typed = typed;
        self
    }

    /// The raw JSON of `d` (`null` when absent), as [`Payload::data`], out
    /// of the machine's `text`.
    pub(super) fn data<'t>(&self, text: &'t str) -> &'t str {
        self.data
            .clone()
            .and_then(|range| text.get(range))
            .unwrap_or("null")
    }
}

/// Event names, without an allocation for the ones twilight-model knows.
/// The last few names seen are checked first: a connection's traffic is
/// mostly a handful of event types.
#[derive(Default)]
pub(super) struct Names {
    recent: [Option<&'static str>; 4],
    next: usize,
}

impl Names {
    pub(super) fn get(&mut self, name: &str) -> Cow<'static, str> {
        if let Some(known) = self.recent.iter().flatten().find(|known| **known == name) {
            return Cow::Borrowed(known);
        }
        match EventType::try_from(name).ok().and_then(EventType::name) {
            Some(known) if known == name => {
                self.recent[self.next] = Some(known);
                self.next = (self.next + 1) % self.recent.len();
                Cow::Borrowed(known)
            }
            _ => Cow::Owned(name.to_owned()),
        }
    }
}

impl Scanned {
    /// `at`: where the payload's JSON starts in the machine's `text`.
    pub(super) fn new(payload: &Payload<'_>, at: usize, names: &mut Names) -> Self {
        let json = payload.json();
        let data = payload.data();
        // `d` is a slice of the payload unless it was absent.
        let start = (data.as_ptr() as usize).checked_sub(json.as_ptr() as usize);
        let data = start
            .filter(|start| start + data.len() <= json.len())
            .map(|start| at + start..at + start + data.len());
        Self {
            op: payload.op(),
            seq: payload.seq(),
            event_type: payload.event_type().map(|name| names.get(name)),
            data,
            json: at..at + json.len(),
            typed: None,
        }
    }
}
