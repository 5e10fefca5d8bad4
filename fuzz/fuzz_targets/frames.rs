#![no_main]
//! WebSocket frames, in both roles: garbage read in any pieces never
//! panics, never hangs and never holds much more than the limit, as a
//! client's reader or a server's; real frames built from the input
//! (unmasked for the client's reader, masked with random keys for the
//! server's), fragmented at random with pings in between, come out whole;
//! and the client frames the shard sends (each message encoded masked reads
//! back, header and payload, by an independent reading and by the server's
//! reader; the client's reader refuses it as masked).

use libfuzzer_sys::fuzz_target;
use shardwire_codec::frame::{
    ClientFrame, Frame, FrameBuffer, FrameError, Role, encode_client_frame, encode_frame,
};
use shardwire_corpus::Rng;

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

/// One frame as `role`'s peer sends it: masked with a random key when it
/// goes to a server.
fn frame(rng: &mut Rng, role: Role, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = (role == Role::Server).then(|| (rng.next_u64() as u32).to_le_bytes());
    let mut out = Vec::new();
    encode_frame(fin, opcode, mask, payload, &mut out);
    out
}

/// The input's messages as `role`'s peer sends them, fragmented at random
/// with pings in between, and what must come out.
fn real_frames(rng: &mut Rng, role: Role, body: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    for message in body.split(|&b| b == b'\n') {
        let parts = 1 + rng.below(3) as usize;
        let step = message.len().div_ceil(parts).max(1);
        let chunks: Vec<&[u8]> = if message.is_empty() {
            vec![message]
        } else {
            message.chunks(step).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = if i == 0 { 2 } else { 0 };
            bytes.extend(frame(rng, role, i + 1 == chunks.len(), opcode, chunk));
            if i + 1 < chunks.len() && rng.below(2) == 0 {
                bytes.extend(frame(rng, role, true, 9, b"ping"));
                expect.push(b"ping".to_vec());
            }
        }
        expect.push(message.to_vec());
    }
    (bytes, expect)
}

fuzz_target!(|data: &[u8]| {
    let Some(mut input) = common::split(data) else {
        return;
    };
    for role in [Role::Client, Role::Server] {
        let mut frames = FrameBuffer::with_role(role, common::LIMIT);
        if input.round_trip {
            let (bytes, expect) = real_frames(&mut input.rng, role, input.body);
            let (seen, failed) = read_all(&mut input.rng, &mut frames, &bytes);
            assert!(!failed, "real frames were refused ({role:?})");
            assert_eq!(seen, expect, "{role:?}");
        } else {
            let _ = read_all(&mut input.rng, &mut frames, input.body);
        }
    }
    if input.round_trip {
        for message in input.body.split(|&b| b == b'\n') {
            let mask = input.rng.next_u64().to_le_bytes();
            let mask = [mask[0], mask[1], mask[2], mask[3]];
            client_frame_reads_back(message, mask);
        }
    }
});

/// A client text frame of `message`, masked with `mask`, read back by hand.
fn client_frame_reads_back(message: &[u8], mask: [u8; 4]) {
    let mut frame = Vec::new();
    encode_client_frame(ClientFrame::Text(message), mask, &mut frame);
    assert_eq!(frame[0], 0x81, "FIN and text");
    assert_eq!(frame[1] & 0x80, 0x80, "masked");
    let (len, at) = match frame[1] & 0x7F {
        126 => (u64::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()), 10),
        len => (u64::from(len), 2),
    };
    assert_eq!(len, message.len() as u64);
    // The shortest length form, as RFC 6455 5.2 requires.
    let shortest = match message.len() {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    assert_eq!(at, shortest);
    assert_eq!(frame[at..at + 4], mask);
    let payload = &frame[at + 4..];
    assert_eq!(payload.len(), message.len());
    assert!(
        payload
            .iter()
            .enumerate()
            .all(|(i, b)| b ^ mask[i % 4] == message[i])
    );
    // A client's frame is not a server's: the shard's reader refuses it,
    // and a server's reads it back.
    let mut frames = FrameBuffer::new(common::LIMIT);
    frames.extend_from_slice(&frame);
    assert_eq!(frames.next_frame(), Err(FrameError::Masked));
    if message.len() <= common::LIMIT {
        let mut frames = FrameBuffer::with_role(Role::Server, common::LIMIT);
        frames.extend_from_slice(&frame);
        assert_eq!(
            frames.next_frame(),
            Ok(Some(Frame::Message {
                payload: message,
                kind: shardwire_codec::MessageKind::Text,
            }))
        );
    }
}
