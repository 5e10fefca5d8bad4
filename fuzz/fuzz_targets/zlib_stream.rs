#![no_main]
//! zlib-stream with arbitrary chunking: garbage never panics or grows past the
//! limit; real streams cut anywhere decode to exactly what was sent, with the
//! decoder hibernating between payloads at random.

use libfuzzer_sys::fuzz_target;
use shardwire_corpus::ZlibStreamEncoder;
use shardwire_codec::{Compression, Decoder, MessageKind};

mod common;

fuzz_target!(|data: &[u8]| {
    let Some(mut input) = common::split(data) else {
        return;
    };
    let mut decoder = Decoder::with_limit(Compression::ZlibStream, common::LIMIT);
    if input.round_trip {
        let mut encoder = ZlibStreamEncoder::new();
        // A gateway payload is never empty (and an empty one compresses to
        // no bytes at all, so there would be no message to decode).
        for payload in input.body.split(|&b| b == b'\n').filter(|p| !p.is_empty()) {
            let message = encoder.encode(payload);
            let pieces = common::pieces(&mut input.rng, &message);
            for (index, piece) in pieces.iter().enumerate() {
                let result = decoder
                    .push_raw(piece, MessageKind::Binary)
                    .expect("a real stream decodes");
                if index + 1 == pieces.len() {
                    assert_eq!(result, Some(payload), "round trip differs");
                    // Sleeping between payloads changes nothing.
                    if input.rng.below(2) == 0 {
                        assert!(decoder.hibernate(), "between payloads it sleeps");
                    }
                } else {
                    assert!(result.is_none(), "completed before the last piece");
                }
            }
        }
    } else {
        for piece in common::pieces(&mut input.rng, input.body) {
            let _ = decoder.push(piece, MessageKind::Binary);
            assert!(decoder.buffer_capacity() <= common::LIMIT + 1);
        }
    }
});
