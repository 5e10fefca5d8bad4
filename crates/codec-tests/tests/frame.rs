//! WebSocket frames: the server's read in the client's role (every length
//! encoding, fed whole or a byte at a time, fragmentation, control frames,
//! protocol errors and memory), the client's read in the server's role
//! (masked, unmasked in place), and the writer read back in both.

use shardwire_codec::MessageKind;
use shardwire_codec::frame::{Frame, FrameBuffer, FrameError, Role};
use shardwire_corpus::{Rng, server_frame as frame};

const LIMIT: usize = 1 << 20;

/// What came out, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
    Error(FrameError),
}

/// Puts bytes into the buffer as a reader does; returns how many it took.
type Put = fn(&mut FrameBuffer, &[u8]) -> usize;

/// Reads into the buffer's spare room, as much as fits.
fn read_in(frames: &mut FrameBuffer, bytes: &[u8]) -> usize {
    let spare = frames.spare();
    assert!(!spare.is_empty());
    let n = spare.len().min(bytes.len());
    spare[..n].copy_from_slice(&bytes[..n]);
    frames.filled(n);
    n
}

/// Copies bytes read elsewhere in, all of them.
fn extend(frames: &mut FrameBuffer, bytes: &[u8]) -> usize {
    frames.extend_from_slice(bytes);
    bytes.len()
}

/// Feeds `bytes` in pieces of at most `piece` bytes; collects every frame
/// up to the first error.
fn feed(frames: &mut FrameBuffer, bytes: &[u8], piece: usize) -> Vec<Got> {
    feed_with(frames, bytes, piece, read_in)
}

/// [`feed`], putting the bytes in with `put`.
fn feed_with(frames: &mut FrameBuffer, bytes: &[u8], piece: usize, put: Put) -> Vec<Got> {
    let mut got = Vec::new();
    let mut at = 0;
    loop {
        loop {
            let had_frame = frames.has_frame();
            let next = frames.next_frame();
            // Without a whole frame there is nothing to hand out yet.
            if !had_frame {
                assert!(matches!(next, Ok(None)), "{next:?}");
            }
            match next {
                Ok(Some(Frame::Message { payload, kind })) => got.push(match kind {
                    MessageKind::Text => Got::Text(payload.to_vec()),
                    _ => Got::Binary(payload.to_vec()),
                }),
                Ok(Some(Frame::Ping(p))) => got.push(Got::Ping(p.to_vec())),
                Ok(Some(Frame::Pong(p))) => got.push(Got::Pong(p.to_vec())),
                Ok(Some(Frame::Close { code, reason })) => {
                    got.push(Got::Close(code, reason.to_vec()))
                }
                Ok(Some(_)) => unreachable!("no other frames"),
                Ok(None) => {
                    assert!(!frames.has_frame(), "a frame was left behind");
                    break;
                }
                Err(error) => {
                    got.push(Got::Error(error));
                    return got;
                }
            }
        }
        if at == bytes.len() {
            return got;
        }
        let n = piece.min(bytes.len() - at);
        at += put(frames, &bytes[at..at + n]);
    }
}

fn pieces() -> [usize; 4] {
    [1, 7, 4096, usize::MAX]
}

/// Reads `bytes` a byte at a time, in small and large pieces and whole;
/// each time exactly `expect` comes out and nothing is left over.
fn each_piece_size(bytes: &[u8], expect: &[Got]) {
    each_piece_size_as(Role::Client, bytes, expect);
}

/// [`each_piece_size`], reading in `role`.
fn each_piece_size_as(role: Role, bytes: &[u8], expect: &[Got]) {
    for piece in pieces() {
        let mut frames = FrameBuffer::with_role(role, LIMIT);
        assert_eq!(feed(&mut frames, bytes, piece), expect, "pieces of {piece}");
        assert_eq!(frames.buffered(), 0);
    }
}

#[test]
fn every_length_encoding_whole_or_in_pieces() {
    let sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 200_000];
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        let opcode = if i % 2 == 0 { 1 } else { 2 };
        bytes.extend(frame(true, opcode, &payload));
        expect.push(if opcode == 1 {
            Got::Text(payload)
        } else {
            Got::Binary(payload)
        });
    }
    each_piece_size(&bytes, &expect);
}

#[test]
fn fragments_are_assembled_around_control_frames() {
    let mut bytes = frame(false, 2, b"he");
    bytes.extend(frame(true, 9, b"are you there"));
    bytes.extend(frame(false, 0, b"ll"));
    bytes.extend(frame(true, 10, b"pong"));
    bytes.extend(frame(true, 0, b"o"));
    bytes.extend(frame(true, 1, b"whole"));
    bytes.extend(frame(false, 1, b"sec"));
    bytes.extend(frame(true, 0, b"ond"));
    bytes.extend(frame(true, 8, &[0x0f, 0xa0, b'b', b'y', b'e']));
    bytes.extend(frame(true, 8, b""));
    let expect = vec![
        Got::Ping(b"are you there".to_vec()),
        Got::Pong(b"pong".to_vec()),
        Got::Binary(b"hello".to_vec()),
        Got::Text(b"whole".to_vec()),
        Got::Text(b"second".to_vec()),
        Got::Close(Some(4000), b"bye".to_vec()),
        Got::Close(None, Vec::new()),
    ];
    each_piece_size(&bytes, &expect);
}

#[test]
fn protocol_errors_are_reported_not_skipped() {
    let big = vec![0u8; 200];
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (vec![0x81 | 0x40, 0], FrameError::ReservedBits),
        (vec![0x81, 0x80 | 1, 1, 2, 3, 4, b'x'], FrameError::Masked),
        (frame(true, 3, b"x"), FrameError::UnknownOpcode(3)),
        (frame(true, 9, &big), FrameError::InvalidControl),
        (frame(false, 9, b"x"), FrameError::InvalidControl),
        (frame(true, 0, b"x"), FrameError::UnexpectedContinuation),
        (
            [frame(false, 1, b"a"), frame(true, 1, b"b")].concat(),
            FrameError::Interleaved,
        ),
        (frame(true, 8, b"x"), FrameError::InvalidClose),
        (
            frame(true, 2, &vec![0; LIMIT + 1]),
            FrameError::TooLarge { limit: LIMIT },
        ),
        (
            [
                frame(false, 2, &vec![0; LIMIT / 2 + 1]),
                frame(true, 0, &vec![0; LIMIT / 2]),
            ]
            .concat(),
            FrameError::TooLarge { limit: LIMIT },
        ),
        // A length no machine could hold.
        (
            [vec![0x82, 127], u64::MAX.to_be_bytes().to_vec()].concat(),
            FrameError::TooLarge { limit: LIMIT },
        ),
    ];
    for (bytes, error) in cases {
        for piece in pieces() {
            let mut frames = FrameBuffer::new(LIMIT);
            let got = feed(&mut frames, &bytes, piece);
            assert_eq!(got.last(), Some(&Got::Error(error.clone())), "{bytes:02x?}");
        }
    }
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_buffered() {
    let mut frames = FrameBuffer::new(LIMIT);
    let header = [vec![0x82, 127], (LIMIT as u64 * 100).to_be_bytes().to_vec()].concat();
    let got = feed(&mut frames, &header, usize::MAX);
    assert_eq!(got, vec![Got::Error(FrameError::TooLarge { limit: LIMIT })]);
    assert!(frames.capacity() < 64 * 1024);
}

#[test]
fn memory_follows_the_traffic() {
    let mut frames = FrameBuffer::new(4 * LIMIT);
    assert_eq!(frames.capacity(), 0, "nothing before the first read");
    let large = frame(true, 2, &vec![7; 3 * LIMIT]);
    assert_eq!(feed(&mut frames, &large, usize::MAX).len(), 1);
    assert!(frames.capacity() >= 3 * LIMIT);
    // The next read after it does not keep the large frame's memory.
    let small = frame(true, 1, b"{}");
    assert_eq!(
        feed(&mut frames, &small, usize::MAX),
        vec![Got::Text(b"{}".to_vec())]
    );
    assert!(frames.capacity() <= 64 * 1024, "{}", frames.capacity());
    frames.shrink();
    assert_eq!(frames.capacity(), 0);
    // Half a frame stays through a shrink.
    let half = &small[..2];
    assert!(feed(&mut frames, half, usize::MAX).is_empty());
    frames.shrink();
    assert_eq!(frames.buffered(), 2);
    assert_eq!(
        feed(&mut frames, &small[2..], usize::MAX),
        vec![Got::Text(b"{}".to_vec())]
    );
}

#[test]
fn random_streams_cut_anywhere_come_out_whole() {
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let mut bytes = Vec::new();
        let mut expect = Vec::new();
        for _ in 0..1 + rng.below(20) {
            let len = match rng.below(4) {
                0 => rng.below(126),
                1 => 126 + rng.below(2000),
                2 => rng.below(70_000),
                _ => 0,
            } as usize;
            let payload: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            // Sometimes fragmented, with a ping in between.
            let parts = 1 + rng.below(3) as usize;
            let step = len.div_ceil(parts).max(1);
            let chunks: Vec<&[u8]> = if len == 0 {
                vec![&[]]
            } else {
                payload.chunks(step).collect()
            };
            for (i, chunk) in chunks.iter().enumerate() {
                let opcode = if i == 0 { 1 } else { 0 };
                bytes.extend(frame(i + 1 == chunks.len(), opcode, chunk));
                if i + 1 < chunks.len() && rng.below(2) == 0 {
                    bytes.extend(frame(true, 9, b"p"));
                    expect.push(Got::Ping(b"p".to_vec()));
                }
            }
            expect.push(Got::Text(payload));
        }
        let piece = 1 + rng.below(9000) as usize;
        let mut frames = FrameBuffer::new(LIMIT);
        assert_eq!(feed(&mut frames, &bytes, piece), expect);
        assert_eq!(frames.buffered(), 0);
        // Copied in from elsewhere (a quiet connection's first read), in
        // pieces up to twice the largest read buffer.
        let piece = 1 + rng.below(128 * 1024) as usize;
        let mut frames = FrameBuffer::new(LIMIT);
        assert_eq!(feed_with(&mut frames, &bytes, piece, extend), expect);
        assert_eq!(frames.buffered(), 0);
    }
}

#[test]
fn bytes_copied_in_make_the_same_frames_as_bytes_read_in() {
    let payload: Vec<u8> = (0..100_000u32).map(|b| (b % 251) as u8).collect();
    let bytes = [frame(true, 2, &payload), frame(true, 1, b"{}")].concat();
    let expect = vec![Got::Binary(payload), Got::Text(b"{}".to_vec())];
    for piece in pieces() {
        let mut frames = FrameBuffer::new(LIMIT);
        assert_eq!(frames.capacity(), 0);
        assert_eq!(feed_with(&mut frames, &bytes, piece, extend), expect);
        assert_eq!(frames.buffered(), 0);
    }
    // Nothing copied, nothing allocated.
    let mut frames = FrameBuffer::new(LIMIT);
    frames.extend_from_slice(&[]);
    assert_eq!(frames.capacity(), 0);
}

mod client_frames {
    use shardwire_codec::frame::{ClientFrame, encode_client_frame};

    fn encode(frame: ClientFrame<'_>, mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_client_frame(frame, mask, &mut out);
        out
    }

    /// Reads a client frame back, independently of the encoder: FIN, the
    /// opcode, the mask bit, the length in its three forms, and the payload
    /// unmasked.
    fn decode(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0xF0, 0x80, "FIN, no reserved bits");
        assert_eq!(frame[1] & 0x80, 0x80, "masked");
        let (len, at) = match frame[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => {
                let len = u64::from_be_bytes(frame[2..10].try_into().unwrap());
                (usize::try_from(len).unwrap(), 10)
            }
            len => (usize::from(len), 2),
        };
        let mask = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len, "the length says what follows");
        let plain = payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4])
            .collect();
        (frame[0] & 0x0F, plain)
    }

    #[test]
    fn the_masked_hello_of_rfc_6455_section_5_7() {
        assert_eq!(
            encode(ClientFrame::Text(b"Hello"), [0x37, 0xfa, 0x21, 0x3d]),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn every_length_form_reads_back() {
        for len in [0, 1, 125, 126, 127, 4096, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let frame = encode(ClientFrame::Text(&payload), [1, 2, 3, 4]);
            let header = match len {
                0..=125 => 6,
                126..=65_535 => 8,
                _ => 14,
            };
            assert_eq!(frame.len(), header + len, "{len}");
            assert_eq!(decode(&frame), (0x1, payload), "{len}");
        }
    }

    #[test]
    fn control_frames_carry_what_rfc_6455_allows() {
        let ping = [9u8; 200];
        let (opcode, payload) = decode(&encode(ClientFrame::Pong(&ping), [5, 6, 7, 8]));
        assert_eq!((opcode, payload.len()), (0xA, 125));
        assert_eq!(
            decode(&encode(ClientFrame::Close(Some(4000)), [0, 0, 0, 0])),
            (0x8, 4000u16.to_be_bytes().to_vec())
        );
        assert_eq!(
            decode(&encode(ClientFrame::Close(None), [9, 9, 9, 9])),
            (0x8, vec![])
        );
    }
}

/// The client's frames, read in the server's role.
mod server_role {
    use shardwire_codec::frame::{FrameHeader, encode_frame};

    use super::*;

    /// A client frame, masked with a key from `rng`.
    fn masked(rng: &mut Rng, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mask = (rng.next_u64() as u32).to_be_bytes();
        encode_frame(fin, opcode, Some(mask), payload, &mut out);
        out
    }

    #[test]
    fn masked_frames_are_unmasked_where_they_were_received() {
        let mut rng = Rng::new(3);
        let sizes = [0, 1, 7, 8, 9, 125, 126, 65_535, 65_536, 200_000];
        let mut bytes = Vec::new();
        let mut expect = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..size).map(|b| (b * 13 + i) as u8).collect();
            let opcode = if i % 2 == 0 { 1 } else { 2 };
            bytes.extend(masked(&mut rng, true, opcode, &payload));
            expect.push(if opcode == 1 {
                Got::Text(payload)
            } else {
                Got::Binary(payload)
            });
        }
        each_piece_size_as(Role::Server, &bytes, &expect);
    }

    #[test]
    fn the_masked_hello_of_rfc_6455_section_5_7_reads_as_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        each_piece_size_as(Role::Server, &bytes, &[Got::Text(b"Hello".to_vec())]);
    }

    #[test]
    fn fragments_are_assembled_around_control_frames() {
        let mut rng = Rng::new(5);
        let mut bytes = masked(&mut rng, false, 1, b"{\"op\":");
        bytes.extend(masked(&mut rng, true, 9, b"are you there"));
        bytes.extend(masked(&mut rng, false, 0, b"1,"));
        bytes.extend(masked(&mut rng, true, 10, b"pong"));
        bytes.extend(masked(&mut rng, true, 0, b"\"d\":3}"));
        bytes.extend(masked(&mut rng, true, 8, &[0x03, 0xe8, b'o', b'k']));
        let expect = vec![
            Got::Ping(b"are you there".to_vec()),
            Got::Pong(b"pong".to_vec()),
            Got::Text(b"{\"op\":1,\"d\":3}".to_vec()),
            Got::Close(Some(1000), b"ok".to_vec()),
        ];
        each_piece_size_as(Role::Server, &bytes, &expect);
    }

    #[test]
    fn protocol_errors_are_reported_as_for_a_client() {
        let mut rng = Rng::new(7);
        let big = vec![0u8; 200];
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            // RFC 6455 5.1: a server closes on an unmasked client frame.
            (frame(true, 1, b"{}"), FrameError::Unmasked),
            (frame(true, 9, b""), FrameError::Unmasked),
            (
                [masked(&mut rng, false, 1, b"{"), frame(true, 0, b"}")].concat(),
                FrameError::Unmasked,
            ),
            (
                [0x81 | 0x40, 0x80, 1, 2, 3, 4].to_vec(),
                FrameError::ReservedBits,
            ),
            (
                masked(&mut rng, true, 3, b"x"),
                FrameError::UnknownOpcode(3),
            ),
            (masked(&mut rng, true, 9, &big), FrameError::InvalidControl),
            (masked(&mut rng, false, 8, b""), FrameError::InvalidControl),
            (
                masked(&mut rng, true, 0, b"x"),
                FrameError::UnexpectedContinuation,
            ),
            (
                [
                    masked(&mut rng, false, 2, b"a"),
                    masked(&mut rng, true, 1, b"b"),
                ]
                .concat(),
                FrameError::Interleaved,
            ),
            (masked(&mut rng, true, 8, b"x"), FrameError::InvalidClose),
            (
                masked(&mut rng, true, 2, &vec![0; LIMIT + 1]),
                FrameError::TooLarge { limit: LIMIT },
            ),
            (
                [
                    masked(&mut rng, false, 2, &vec![0; LIMIT / 2 + 1]),
                    masked(&mut rng, true, 0, &vec![0; LIMIT / 2]),
                ]
                .concat(),
                FrameError::TooLarge { limit: LIMIT },
            ),
            // Refused from the length alone, before any masking key.
            (
                [vec![0x82, 0x80 | 127], u64::MAX.to_be_bytes().to_vec()].concat(),
                FrameError::TooLarge { limit: LIMIT },
            ),
        ];
        for (bytes, error) in cases {
            for piece in pieces() {
                let mut frames = FrameBuffer::with_role(Role::Server, LIMIT);
                let got = feed(&mut frames, &bytes, piece);
                assert_eq!(got.last(), Some(&Got::Error(error.clone())), "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn a_masked_frame_still_fails_the_client_role() {
        let mut rng = Rng::new(9);
        let mut frames = FrameBuffer::new(LIMIT);
        frames.extend_from_slice(&masked(&mut rng, true, 1, b"{}")[..2]);
        // Refused from the first two bytes, as before the server role.
        assert_eq!(frames.next_frame(), Err(FrameError::Masked));
    }

    /// Reads one frame's header back by hand: FIN, opcode, mask bit, the
    /// length and its form, and the masking key.
    fn parse_header(bytes: &[u8]) -> (bool, u8, Option<[u8; 4]>, u64, usize) {
        let (len, at) = match bytes[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()), 10),
            len => (u64::from(len), 2),
        };
        let mask = (bytes[1] & 0x80 != 0).then(|| bytes[at..at + 4].try_into().unwrap());
        let end = at + if mask.is_some() { 4 } else { 0 };
        (bytes[0] & 0x80 != 0, bytes[0] & 0x0f, mask, len, end)
    }

    #[test]
    fn headers_written_read_back_in_both_roles() {
        let mut rng = Rng::new(13);
        let boundaries = [0, 1, 125, 126, 127, 65_535, 65_536, 65_537];
        for round in 0..40 {
            let len = if round < boundaries.len() {
                boundaries[round]
            } else {
                boundaries[rng.below(boundaries.len() as u64) as usize] + rng.below(3) as usize
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let opcode = 1 + rng.below(2) as u8;
            for role in [Role::Client, Role::Server] {
                let mask = (role == Role::Server).then(|| (rng.next_u64() as u32).to_be_bytes());
                let header = FrameHeader::new(true, opcode, mask, len);
                let shortest = match len {
                    0..=125 => 2,
                    126..=65_535 => 4,
                    _ => 10,
                } + if mask.is_some() { 4 } else { 0 };
                assert_eq!(header.as_bytes().len(), shortest, "{len}");
                assert_eq!(
                    parse_header(header.as_bytes()),
                    (true, opcode, mask, len as u64, shortest)
                );
                let mut bytes = Vec::new();
                encode_frame(true, opcode, mask, &payload, &mut bytes);
                assert_eq!(&bytes[..shortest], header.as_bytes());
                let expect = if opcode == 1 {
                    Got::Text(payload.clone())
                } else {
                    Got::Binary(payload.clone())
                };
                let piece = 1 + rng.below(70_000) as usize;
                let mut frames = FrameBuffer::with_role(role, LIMIT);
                assert_eq!(feed(&mut frames, &bytes, piece), vec![expect], "{len}");
                // The other role refuses it.
                let mut other = FrameBuffer::with_role(
                    if role == Role::Client {
                        Role::Server
                    } else {
                        Role::Client
                    },
                    LIMIT,
                );
                other.extend_from_slice(&bytes);
                let refused = if role == Role::Client {
                    FrameError::Unmasked
                } else {
                    FrameError::Masked
                };
                assert_eq!(other.next_frame(), Err(refused), "{len}");
            }
        }
    }

    #[test]
    fn fragments_and_odd_frames_are_written_as_asked() {
        let header = FrameHeader::new(false, 0, None, 3);
        assert_eq!(header.as_bytes(), [0x00, 3]);
        let header = FrameHeader::new(true, 0xB, Some([1, 2, 3, 4]), 0);
        assert_eq!(header.as_bytes(), [0x8B, 0x80, 1, 2, 3, 4]);
        // Only four bits of opcode: never the reserved bits.
        assert_eq!(FrameHeader::new(true, 0x71, None, 0).as_bytes(), [0x81, 0]);
        assert_eq!(frame(false, 2, b"ab"), [0x02, 2, b'a', b'b']);
    }
}
