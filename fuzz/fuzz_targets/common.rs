//! Input layout shared by the stream targets.
//!
//! Byte 0 picks the mode. Even: the rest is raw compressed bytes, cut into
//! messages at fuzzer-chosen points, to throw garbage at the decompressor.
//! Odd: bytes 1..9 seed the cuts and the rest is payloads separated by `\n`,
//! compressed with a real encoder, cut, decoded and compared: a round trip
//! that must reproduce every payload exactly.
//!
//! Each target includes this file and uses part of it.
#![allow(dead_code)]

use shardwire_corpus::Rng;

pub const LIMIT: usize = 1 << 20;

pub struct Input<'a> {
    pub round_trip: bool,
    pub rng: Rng,
    pub body: &'a [u8],
}

pub fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&mode, rest) = data.split_first()?;
    if rest.len() < 8 {
        return None;
    }
    let (seed, body) = rest.split_at(8);
    let seed = u64::from_le_bytes(seed.try_into().ok()?);
    Some(Input {
        round_trip: mode % 2 == 1,
        rng: Rng::new(seed),
        body,
    })
}

/// Cuts `bytes` into up to five pieces at random points (1 to 3 byte tails
/// included, since a cut can land anywhere).
pub fn pieces<'a>(rng: &mut Rng, bytes: &'a [u8]) -> Vec<&'a [u8]> {
    if bytes.len() < 2 {
        return vec![bytes];
    }
    let mut cuts: Vec<usize> = (0..rng.below(5))
        .map(|_| 1 + rng.below(bytes.len() as u64 - 1) as usize)
        .collect();
    // A cut right after bytes `00 00 ff ff` inside a payload makes the
    // pieces so far look like a whole payload: the protocol itself cannot
    // tell them apart, so a conforming sender never cuts there.
    cuts.retain(|&cut| !bytes[..cut].ends_with(&[0, 0, 0xff, 0xff]));
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}
