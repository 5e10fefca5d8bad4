#![no_main]
//! Server WebSocket frames: garbage read in any pieces never panics, never
//! hangs and never holds much more than the limit; real frames built from
//! the input (fragmented at random, pings in between) come out whole.

use libfuzzer_sys::fuzz_target;
use shardwire_corpus::{Rng, server_frame as frame};
use shardwire_codec::frame::{Frame, FrameBuffer};

mod common;

/// Reads `bytes` into `frames` in random pieces; returns the messages (and
/// pings) seen, and whether a protocol error ended it.
fn read_all(rng: &mut Rng, frames: &mut FrameBuffer, bytes: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut seen = Vec::new();
    let mut at = 0;
    loop {
        loop {
            match frames.next_frame() {
                Ok(Some(Frame::Message { payload, .. })) => seen.push(payload.to_vec()),
                Ok(Some(Frame::Ping(payload))) => seen.push(payload.to_vec()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return (seen, true),
            }
        }
        assert!(!frames.has_frame(), "a whole frame was left unread");
        assert!(frames.capacity() <= 3 * common::LIMIT + 64 * 1024);
        if at == bytes.len() {
            return (seen, false);
        }
        // Sometimes as a quiet connection reads: released, then the bytes
        // copied in from a small read of its own.
        if rng.below(8) == 0 {
            frames.shrink();
            let n = (1 + rng.below(1024) as usize).min(bytes.len() - at);
            frames.extend_from_slice(&bytes[at..at + n]);
            at += n;
            continue;
        }
        let spare = frames.spare();
        assert!(!spare.is_empty());
        let n = spare
            .len()
            .min(1 + rng.below(5000) as usize)
            .min(bytes.len() - at);
        spare[..n].copy_from_slice(&bytes[at..at + n]);
        frames.filled(n);
        at += n;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(mut input) = common::split(data) else {
        return;
    };
    let mut frames = FrameBuffer::new(common::LIMIT);
    if input.round_trip {
        let mut bytes = Vec::new();
        let mut expect = Vec::new();
        for message in input.body.split(|&b| b == b'\n') {
            let parts = 1 + input.rng.below(3) as usize;
            let step = message.len().div_ceil(parts).max(1);
            let chunks: Vec<&[u8]> = if message.is_empty() {
                vec![message]
            } else {
                message.chunks(step).collect()
            };
            for (i, chunk) in chunks.iter().enumerate() {
                bytes.extend(frame(
                    i + 1 == chunks.len(),
                    if i == 0 { 2 } else { 0 },
                    chunk,
                ));
                if i + 1 < chunks.len() && input.rng.below(2) == 0 {
                    bytes.extend(frame(true, 9, b"ping"));
                    expect.push(b"ping".to_vec());
                }
            }
            expect.push(message.to_vec());
        }
        let (seen, failed) = read_all(&mut input.rng, &mut frames, &bytes);
        assert!(!failed, "real frames were refused");
        assert_eq!(seen, expect);
    } else {
        let _ = read_all(&mut input.rng, &mut frames, input.body);
    }
});
