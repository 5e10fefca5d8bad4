#![no_main]
//! zstd-stream: garbage never panics or grows past the limit; real streams
//! decode to exactly what was sent, one message per payload.

use libfuzzer_sys::fuzz_target;
use shardwire_corpus::ZstdStreamEncoder;
use shardwire_codec::{Compression, Decoder, MessageKind};

mod common;

fuzz_target!(|data: &[u8]| {
    let Some(mut input) = common::split(data) else {
        return;
    };
    let mut decoder = Decoder::with_limit(Compression::ZstdStream, common::LIMIT);
    if input.round_trip {
        let mut encoder = ZstdStreamEncoder::new().expect("zstd context");
        // A gateway payload is never empty (and an empty one compresses to
        // no bytes at all, so there would be no message to decode).
        for payload in input.body.split(|&b| b == b'\n').filter(|p| !p.is_empty()) {
            let message = encoder.encode(payload).expect("zstd encodes");
            let result = decoder
                .push_raw(&message, MessageKind::Binary)
                .expect("a real stream decodes");
            assert_eq!(result, Some(payload), "round trip differs");
        }
    } else {
        for piece in common::pieces(&mut input.rng, input.body) {
            if let Err(error) = decoder.push(piece, MessageKind::Binary)
                && error.requires_reset()
            {
                decoder.reset();
            }
            assert!(decoder.buffer_capacity() <= common::LIMIT + 1);
        }
    }
});
