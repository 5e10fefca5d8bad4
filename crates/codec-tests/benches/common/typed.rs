//! The candidate ways to turn a scanned dispatch into twilight-model types,
//! shared by the divan benchmark (`benches/codec.rs`, module `typed`) and
//! the instruction counter (`examples/typed_instructions.rs`).

use serde::de::DeserializeSeed;
use shardwire_codec::{Decoded, DispatchSeed, EventFilter, Payload, TypedParser};
use twilight_model::gateway::event::{
    DispatchEvent, DispatchEventWithTypeDeserializer, GatewayEvent, GatewayEventDeserializer,
};

/// One way to decode a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Candidate {
    /// The codec's: serde_json over `d` as text, MESSAGE_CREATE in one pass.
    SerdeJsonStr,
    /// The codec's, `d` read as bytes (serde_json checks UTF-8 again).
    SerdeJsonSlice,
    /// serde_json over `d` with twilight-model's own seed.
    TwilightModelSeed,
    /// sonic-rs's serde over `d`, one-pass seed.
    SonicRs,
    /// simd-json's serde over a copy of `d` (it parses in place), with
    /// twilight-model's seed.
    SimdJsonTwilightSeed,
    /// simd-json's serde over a copy of `d`, one-pass seed.
    SimdJson,
    /// What twilight-gateway does from the whole payload: `from_json`'s
    /// string search, then serde_json over all of it.
    TwilightGateway,
}

impl Candidate {
    pub(crate) const ALL: [Candidate; 7] = [
        Candidate::SerdeJsonStr,
        Candidate::SerdeJsonSlice,
        Candidate::TwilightModelSeed,
        Candidate::SonicRs,
        Candidate::SimdJsonTwilightSeed,
        Candidate::SimdJson,
        Candidate::TwilightGateway,
    ];

    #[allow(
        dead_code,
        reason = "divan names the rows by `Debug`; the instruction counter by this"
    )]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Candidate::SerdeJsonStr => "serde_json_str",
            Candidate::SerdeJsonSlice => "serde_json_slice",
            Candidate::TwilightModelSeed => "twilight_model_seed",
            Candidate::SonicRs => "sonic_rs",
            Candidate::SimdJsonTwilightSeed => "simd_json_twilight_seed",
            Candidate::SimdJson => "simd_json",
            Candidate::TwilightGateway => "twilight_gateway",
        }
    }
}

/// Reused state: simd-json's scratch copy and its buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    copy: Vec<u8>,
    buffers: Option<simd_json::Buffers>,
}

/// Decodes one scanned dispatch with `candidate`; `None` if it failed.
pub(crate) fn decode(
    candidate: Candidate,
    payload: &Payload<'_>,
    scratch: &mut Scratch,
) -> Option<DispatchEvent> {
    let codec = |parser| match payload.decode_with(&EventFilter::all(), parser) {
        Decoded::Event(GatewayEvent::Dispatch(_, event)) => Some(event),
        _ => None,
    };
    let name = payload.event_type()?;
    match candidate {
        Candidate::SerdeJsonStr => codec(TypedParser::SerdeJson),
        Candidate::SerdeJsonSlice => codec(TypedParser::SerdeJsonBytes),
        Candidate::TwilightModelSeed => codec(TypedParser::TwilightModel),
        Candidate::SonicRs => codec(TypedParser::SonicRs),
        Candidate::SimdJsonTwilightSeed => simd_json(
            payload,
            scratch,
            DispatchEventWithTypeDeserializer::new(name),
        ),
        Candidate::SimdJson => simd_json(payload, scratch, DispatchSeed::new(name)),
        Candidate::TwilightGateway => match twilight_gateway(payload.json().as_bytes())? {
            GatewayEvent::Dispatch(_, event) => Some(event),
            _ => None,
        },
    }
}

fn simd_json(
    payload: &Payload<'_>,
    scratch: &mut Scratch,
    seed: impl for<'de> DeserializeSeed<'de, Value = DispatchEvent>,
) -> Option<DispatchEvent> {
    let Scratch { copy, buffers } = scratch;
    copy.clear();
    copy.extend_from_slice(payload.data().as_bytes());
    let buffers = buffers.get_or_insert_with(|| simd_json::Buffers::new(copy.len()));
    let mut de = simd_json::Deserializer::from_slice_with_buffers(copy, buffers).ok()?;
    seed.deserialize(&mut de).ok()
}

/// twilight-gateway's `parse`, less its event-type filter: the envelope by
/// string search, then serde_json over the whole payload.
pub(crate) fn twilight_gateway(json: &[u8]) -> Option<GatewayEvent> {
    let text = std::str::from_utf8(json).ok()?;
    let seed = GatewayEventDeserializer::from_json(text)?;
    let mut de = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut de).ok()
}
