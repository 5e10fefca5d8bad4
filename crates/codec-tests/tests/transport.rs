//! Transport and payload decompression, fed real encoder output at every split
//! point, in random multi-piece splits, and corrupted, truncated or inflated
//! into bombs.

use shardwire_codec::{CodecError, Compression, DEFAULT_PAYLOAD_LIMIT, Decoder, MessageKind};
use shardwire_corpus::{Corpus, Rng, ZlibStreamEncoder, ZstdStreamEncoder, zlib_payload};

fn zlib_messages(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut encoder = ZlibStreamEncoder::new();
    payloads.iter().map(|p| encoder.encode(p)).collect()
}

fn zstd_messages(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut encoder = ZstdStreamEncoder::new().expect("zstd context");
    payloads
        .iter()
        .map(|p| encoder.encode(p).expect("zstd encode"))
        .collect()
}

/// Feeds `pieces` of one payload and checks that only the last one completes
/// it, with exactly `expected` as the result.
fn feed_pieces(decoder: &mut Decoder, pieces: &[&[u8]], expected: &[u8]) {
    for (index, piece) in pieces.iter().enumerate() {
        let result = decoder
            .push_raw(piece, MessageKind::Binary)
            .unwrap_or_else(|error| panic!("piece {index} of {}: {error}", pieces.len()));
        if index + 1 < pieces.len() {
            assert!(
                result.is_none(),
                "piece {index} of {} completed early",
                pieces.len()
            );
        } else {
            assert_eq!(result, Some(expected), "payload differs");
        }
    }
}

#[test]
fn zlib_stream_whole_messages_decode_in_order() {
    let corpus = Corpus::realistic(300, 1);
    let messages = zlib_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZlibStream);
    for (message, payload) in messages.iter().zip(corpus.payloads()) {
        let json = decoder.push_raw(message, MessageKind::Binary).unwrap();
        assert_eq!(json, Some(payload.as_slice()));
    }
}

#[test]
fn zlib_stream_every_split_point_of_every_message() {
    let corpus = Corpus::small_events(12, 2);
    let messages = zlib_messages(corpus.payloads());
    let longest = messages.iter().map(Vec::len).max().unwrap();
    // One pass per split offset: each message is cut there (if long enough),
    // so every message is fed split at every point, on a live stream.
    for split in 1..longest {
        let mut decoder = Decoder::new(Compression::ZlibStream);
        for (message, payload) in messages.iter().zip(corpus.payloads()) {
            // A cut right after `00 00 ff ff` inside a payload is one no
            // receiver can tell from a payload's end; senders never make it.
            let ambiguous = message[..split.min(message.len())].ends_with(&[0, 0, 0xff, 0xff]);
            if split < message.len() && !ambiguous {
                let (head, tail) = message.split_at(split);
                feed_pieces(&mut decoder, &[head, tail], payload);
            } else {
                feed_pieces(&mut decoder, &[message], payload);
            }
        }
    }
}

#[test]
fn zlib_stream_random_multi_piece_splits_with_short_tails() {
    let corpus = Corpus::realistic(400, 3);
    let messages = zlib_messages(corpus.payloads());
    let mut rng = Rng::new(99);
    for round in 0..20 {
        let mut decoder = Decoder::new(Compression::ZlibStream);
        for (message, payload) in messages.iter().zip(corpus.payloads()) {
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| 1 + rng.below(message.len() as u64 - 1) as usize)
                .collect();
            // Every other message ends in a 1 to 3 byte piece: the suffix is
            // split across pieces and only the accumulated bytes show it.
            if round % 2 == 0 && message.len() > 4 {
                cuts.push(message.len() - 1 - rng.below(3) as usize);
            }
            cuts.retain(|&cut| !message[..cut].ends_with(&[0, 0, 0xff, 0xff]));
            cuts.sort_unstable();
            cuts.dedup();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&message[start..cut]);
                start = cut;
            }
            pieces.push(&message[start..]);
            feed_pieces(&mut decoder, &pieces, payload);
        }
    }
}

#[test]
fn zlib_stream_suffix_split_one_byte_at_a_time() {
    let corpus = Corpus::small_events(5, 4);
    let messages = zlib_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZlibStream);
    for (message, payload) in messages.iter().zip(corpus.payloads()) {
        let pieces: Vec<&[u8]> = message.chunks(1).collect();
        feed_pieces(&mut decoder, &pieces, payload);
    }
}

#[test]
fn zlib_stream_reset_starts_a_new_connection() {
    let corpus = Corpus::small_events(10, 5);
    let mut decoder = Decoder::new(Compression::ZlibStream);
    for _connection in 0..3 {
        // Each connection has its own stream, with its own zlib header.
        let messages = zlib_messages(corpus.payloads());
        for (message, payload) in messages.iter().zip(corpus.payloads()) {
            feed_pieces(&mut decoder, &[message], payload);
        }
        decoder.reset();
    }
}

#[test]
fn zlib_stream_reset_mid_payload_drops_the_partial_payload() {
    let corpus = Corpus::small_events(3, 6);
    let messages = zlib_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let half = messages[0].len() / 2;
    assert!(
        decoder
            .push_raw(&messages[0][..half], MessageKind::Binary)
            .unwrap()
            .is_none()
    );
    decoder.reset();
    let fresh = zlib_messages(corpus.payloads());
    feed_pieces(&mut decoder, &[&fresh[0]], &corpus.payloads()[0]);
}

#[test]
fn zstd_stream_decodes_every_message_completely() {
    let corpus = Corpus::realistic(300, 7);
    let messages = zstd_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZstdStream);
    for (message, payload) in messages.iter().zip(corpus.payloads()) {
        let json = decoder.push_raw(message, MessageKind::Binary).unwrap();
        assert_eq!(json, Some(payload.as_slice()));
    }
    decoder.reset();
    let messages = zstd_messages(corpus.payloads());
    let json = decoder.push_raw(&messages[0], MessageKind::Binary).unwrap();
    assert_eq!(json, Some(corpus.payloads()[0].as_slice()), "after reset");
}

#[test]
fn payload_compression_and_text_messages_mix_on_one_connection() {
    let corpus = Corpus::realistic(100, 8);
    let mut decoder = Decoder::new(Compression::None);
    for (index, payload) in corpus.payloads().iter().enumerate() {
        let json = if index % 2 == 0 {
            let compressed = zlib_payload(payload);
            decoder
                .push_raw(&compressed, MessageKind::Binary)
                .unwrap()
                .map(<[u8]>::to_vec)
        } else {
            decoder
                .push_raw(payload, MessageKind::Text)
                .unwrap()
                .map(<[u8]>::to_vec)
        };
        assert_eq!(json.as_deref(), Some(payload.as_slice()));
    }
}

#[test]
fn corrupt_zlib_stream_is_an_error_that_requires_reset_and_never_panics() {
    let corpus = Corpus::small_events(20, 9);
    let messages = zlib_messages(corpus.payloads());
    let mut rng = Rng::new(5);
    let mut corrupt_seen = 0;
    for trial in 0..200 {
        let mut decoder = Decoder::new(Compression::ZlibStream);
        let target = trial % messages.len();
        for (index, message) in messages.iter().enumerate() {
            let mut message = message.clone();
            if index == target {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(message.len() as u64) as usize;
                    message[at] ^= 1 << rng.below(8);
                }
            }
            if let Err(error) = decoder.push_raw(&message, MessageKind::Binary) {
                assert!(error.requires_reset(), "{error}");
                corrupt_seen += 1;
                // Poisoned until reset: a later message cannot silently
                // decode against a broken context.
                let next = decoder.push_raw(&messages[0], MessageKind::Binary);
                assert!(matches!(next, Err(CodecError::CorruptStream { .. })));
                break;
            }
        }
    }
    assert!(
        corrupt_seen > 50,
        "only {corrupt_seen} of 200 corruptions detected"
    );
}

#[test]
fn garbage_in_every_mode_never_panics_never_decodes_and_a_reset_recovers() {
    let hello = br#"{"op":10,"d":{"heartbeat_interval":41250}}"#;
    // The first message of a fresh connection, in each mode.
    let fresh = |compression: Compression| match compression {
        Compression::ZlibStream => ZlibStreamEncoder::new().encode(hello),
        Compression::ZstdStream => ZstdStreamEncoder::new().unwrap().encode(hello).unwrap(),
        _ => hello.to_vec(),
    };
    let mut rng = Rng::new(11);
    for compression in [
        Compression::ZlibStream,
        Compression::ZstdStream,
        Compression::None,
    ] {
        let mut decoder = Decoder::with_limit(compression, 1 << 20);
        let (mut refused, mut resets) = (0, 0);
        for round in 0..500 {
            let len = rng.below(300) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            match decoder.push(&garbage, MessageKind::Binary) {
                Ok(Some(payload)) => {
                    panic!(
                        "{compression} round {round}: garbage decoded to op {}",
                        payload.op()
                    )
                }
                // A stream waits for the rest of a payload.
                Ok(None) => assert_ne!(compression, Compression::None, "round {round}"),
                Err(error) => {
                    refused += 1;
                    if error.requires_reset() {
                        resets += 1;
                        decoder.reset();
                        // Reset, the decoder reads a new connection's
                        // first message as if nothing had happened.
                        let message = fresh(compression);
                        let payload = decoder
                            .push(&message, MessageKind::Binary)
                            .unwrap_or_else(|error| {
                                panic!("{compression} round {round}: after a reset: {error}")
                            })
                            .expect("a whole payload");
                        assert_eq!(payload.op(), 10);
                    }
                }
            }
        }
        assert!(
            refused > 100,
            "{compression}: only {refused} of 500 refused"
        );
        if compression != Compression::None {
            assert!(resets > 0, "{compression}: corrupt streams ask for a reset");
        }
    }
}

#[test]
fn truncated_messages_do_not_complete_or_corrupt_silently() {
    let corpus = Corpus::small_events(4, 12);
    // zlib: a message cut before its suffix is simply incomplete.
    let messages = zlib_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let cut = &messages[0][..messages[0].len() - 5];
    assert_eq!(decoder.push_raw(cut, MessageKind::Binary).unwrap(), None);
    // zstd: each message must be whole; a cut one yields a short payload
    // that the scan then rejects, never a wrong but valid-looking payload.
    let messages = zstd_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZstdStream);
    let cut = &messages[0][..messages[0].len() / 2];
    match decoder.push(cut, MessageKind::Binary) {
        Err(CodecError::InvalidJson { .. } | CodecError::CorruptStream { .. }) => {}
        other => panic!("a truncated zstd message gave {other:?}"),
    }
    // Payload compression: a truncated zlib stream is corrupt.
    let mut decoder = Decoder::new(Compression::None);
    let whole = zlib_payload(&corpus.payloads()[0]);
    let result = decoder.push_raw(&whole[..whole.len() - 6], MessageKind::Binary);
    assert!(
        matches!(result, Err(CodecError::CorruptStream { .. })),
        "{result:?}"
    );
}

/// A payload that compresses ~1000:1: a JSON string of `size` spaces.
fn bomb(size: usize) -> Vec<u8> {
    let mut json = br#"{"t":"MESSAGE_CREATE","s":1,"op":0,"d":{"content":""#.to_vec();
    json.resize(json.len() + size, b' ');
    json.extend_from_slice(br#""}}"#);
    json
}

#[test]
fn decompression_bombs_stop_at_the_limit_in_every_mode() {
    const LIMIT: usize = 1 << 20;
    let huge = bomb(64 << 20);
    let zlib = ZlibStreamEncoder::new().encode(&huge);
    let zstd = ZstdStreamEncoder::new().unwrap().encode(&huge).unwrap();
    let whole = zlib_payload(&huge);
    assert!(
        zlib.len() < 200_000 && zstd.len() < 200_000,
        "the bomb compresses well"
    );

    for (compression, message, reset_required) in [
        (Compression::ZlibStream, &zlib, true),
        (Compression::ZstdStream, &zstd, true),
        (Compression::None, &whole, false),
    ] {
        let mut decoder = Decoder::with_limit(compression, LIMIT);
        match decoder.push_raw(message, MessageKind::Binary) {
            Err(CodecError::PayloadTooLarge { limit, .. }) if limit == LIMIT => {}
            other => panic!("{compression}: expected PayloadTooLarge, got {other:?}"),
        }
        assert!(
            decoder.buffer_capacity() <= 256 * 1024 + 1,
            "{compression}: buffer kept"
        );
        let error = decoder.push_raw(message, MessageKind::Binary).unwrap_err();
        assert_eq!(
            error.requires_reset(),
            reset_required,
            "{compression}: {error}"
        );
    }
    // Uncompressed text over the limit is refused too.
    let mut decoder = Decoder::with_limit(Compression::None, LIMIT);
    let result = decoder.push_raw(&huge, MessageKind::Text);
    assert!(matches!(
        result,
        Err(CodecError::PayloadTooLarge {
            reset_required: false,
            ..
        })
    ));
}

#[test]
fn output_never_grows_past_the_limit_while_decoding_a_bomb() {
    const LIMIT: usize = 300_000;
    let huge = bomb(10 << 20);
    let zlib = ZlibStreamEncoder::new().encode(&huge);
    let mut decoder = Decoder::with_limit(Compression::ZlibStream, LIMIT);
    // Feed in small pieces and watch the buffer between them.
    let mut peak = 0;
    for piece in zlib.chunks(97) {
        let failed = decoder.push_raw(piece, MessageKind::Binary).is_err();
        peak = peak.max(decoder.buffer_capacity());
        if failed {
            break;
        }
    }
    assert!(
        peak <= LIMIT + 1,
        "buffer grew to {peak} bytes with a limit of {LIMIT}"
    );
}

#[test]
fn a_25000_member_guild_create_fits_the_default_limit() {
    let payload = Corpus::guild_create(25_000, 13);
    assert!(
        payload.len() > 8 << 20,
        "realistic size: {} bytes",
        payload.len()
    );
    assert!(
        payload.len() * 4 < DEFAULT_PAYLOAD_LIMIT,
        "room to spare: {} bytes",
        payload.len()
    );
    for compression in [Compression::ZlibStream, Compression::ZstdStream] {
        let message = match compression {
            Compression::ZlibStream => ZlibStreamEncoder::new().encode(&payload),
            _ => ZstdStreamEncoder::new().unwrap().encode(&payload).unwrap(),
        };
        let mut decoder = Decoder::new(compression);
        let scanned = decoder
            .push(&message, MessageKind::Binary)
            .unwrap()
            .unwrap();
        assert_eq!(scanned.event_type(), Some("GUILD_CREATE"));
        assert_eq!(scanned.json().len(), payload.len());
    }
}

#[test]
fn buffer_shrinks_back_after_a_large_payload() {
    let corpus = Corpus::small_events(2, 14);
    let big = Corpus::guild_create(5_000, 14);
    let mut encoder = ZlibStreamEncoder::new();
    let mut decoder = Decoder::new(Compression::ZlibStream);
    decoder
        .push_raw(&encoder.encode(&big), MessageKind::Binary)
        .unwrap()
        .unwrap();
    assert!(decoder.buffer_capacity() >= big.len());
    decoder
        .push_raw(&encoder.encode(&corpus.payloads()[0]), MessageKind::Binary)
        .unwrap()
        .unwrap();
    assert!(
        decoder.buffer_capacity() <= 256 * 1024,
        "kept {}",
        decoder.buffer_capacity()
    );
}

#[test]
fn payload_compression_rejects_bytes_after_the_stream_and_recovers() {
    let corpus = Corpus::small_events(2, 15);
    let mut message = zlib_payload(&corpus.payloads()[0]);
    message.extend_from_slice(b"junk");
    let mut decoder = Decoder::new(Compression::None);
    let error = decoder.push_raw(&message, MessageKind::Binary).unwrap_err();
    assert!(matches!(error, CodecError::CorruptStream { .. }), "{error}");
    // Each binary message is its own stream: no reset needed, the next one
    // decodes on the same decoder.
    assert!(!error.requires_reset());
    let next = zlib_payload(&corpus.payloads()[1]);
    let json = decoder.push_raw(&next, MessageKind::Binary).unwrap();
    assert_eq!(json, Some(corpus.payloads()[1].as_slice()));
}

#[test]
fn zlib_stream_hibernating_between_payloads_decodes_the_same() {
    // Over 32 KiB of output, so the window is both partly and fully used.
    let corpus = Corpus::realistic(400, 21);
    let messages = zlib_messages(corpus.payloads());
    let mut rng = Rng::new(8);
    for every in [1u64, 2, 7] {
        let mut decoder = Decoder::new(Compression::ZlibStream);
        let mut slept = 0;
        for (index, (message, payload)) in messages.iter().zip(corpus.payloads()).enumerate() {
            let json = decoder.push_raw(message, MessageKind::Binary).unwrap();
            assert_eq!(json, Some(payload.as_slice()), "payload {index}");
            if rng.below(every) == 0 {
                assert!(decoder.hibernate(), "payload {index}");
                assert!(decoder.is_hibernating());
                assert_eq!(decoder.buffer_capacity(), 0);
                // A second call changes nothing.
                assert!(decoder.hibernate());
                slept += 1;
            }
        }
        assert!(slept > 40, "hibernated only {slept} times");
    }
}

#[test]
fn zlib_stream_hibernating_before_the_first_message_and_after_a_reset() {
    let corpus = Corpus::small_events(20, 4);
    let messages = zlib_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZlibStream);
    assert!(decoder.hibernate(), "nothing decoded yet: nothing to keep");
    for _ in 0..2 {
        for (message, payload) in messages.iter().zip(corpus.payloads()) {
            let json = decoder.push_raw(message, MessageKind::Binary).unwrap();
            assert_eq!(json, Some(payload.as_slice()));
            assert!(decoder.hibernate());
        }
        decoder.reset();
        assert!(!decoder.is_hibernating());
    }
}

#[test]
fn zlib_stream_stays_awake_in_the_middle_of_a_payload() {
    let corpus = Corpus::small_events(6, 5);
    let messages = zlib_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZlibStream);
    for (message, payload) in messages.iter().zip(corpus.payloads()) {
        let (first, rest) = message.split_at(message.len() / 2);
        assert_eq!(decoder.push_raw(first, MessageKind::Binary).unwrap(), None);
        assert!(!decoder.hibernate(), "half a payload cannot sleep");
        assert!(!decoder.is_hibernating());
        let json = decoder.push_raw(rest, MessageKind::Binary).unwrap();
        assert_eq!(json, Some(payload.as_slice()));
    }
}

#[test]
fn hibernating_without_zlib_stream() {
    // zstd-stream keeps its context; only the buffer goes.
    let corpus = Corpus::small_events(10, 6);
    let messages = zstd_messages(corpus.payloads());
    let mut decoder = Decoder::new(Compression::ZstdStream);
    for (message, payload) in messages.iter().zip(corpus.payloads()) {
        let json = decoder.push_raw(message, MessageKind::Binary).unwrap();
        assert_eq!(json, Some(payload.as_slice()));
        assert!(!decoder.hibernate());
        assert_eq!(decoder.buffer_capacity(), 0);
    }
    // Without transport compression the payload inflater is dropped.
    let mut decoder = Decoder::new(Compression::None);
    for payload in corpus.payloads() {
        let message = zlib_payload(payload);
        let json = decoder.push_raw(&message, MessageKind::Binary).unwrap();
        assert_eq!(json, Some(payload.as_slice()));
        assert!(!decoder.is_hibernating());
        assert!(decoder.hibernate());
        assert!(decoder.is_hibernating());
    }
}

#[test]
fn zlib_headers_are_checked() {
    let corpus = Corpus::small_events(2, 7);
    let good = zlib_messages(corpus.payloads());
    let cases: [(&[u8], &str); 3] = [
        (&[0x79, 0x9c], "not deflate"),
        (&[0x78, 0x9d], "check bits"),
        // FDICT set, check bits right: 0x78 << 8 | 0xbb is a multiple of 31.
        (&[0x78, 0xbb], "preset dictionary"),
    ];
    for (header, expect) in cases {
        let mut message = good[0].clone();
        message[..2].copy_from_slice(header);
        let mut decoder = Decoder::new(Compression::ZlibStream);
        let error = decoder
            .push_raw(&message, MessageKind::Binary)
            .expect_err("a bad header");
        assert!(error.to_string().contains(expect), "{error}");
        assert!(error.requires_reset());
    }
    // The header may arrive a byte at a time.
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let (one, rest) = good[0].split_at(1);
    assert_eq!(decoder.push_raw(one, MessageKind::Binary).unwrap(), None);
    let json = decoder.push_raw(rest, MessageKind::Binary).unwrap();
    assert_eq!(json, Some(corpus.payloads()[0].as_slice()));
}

#[test]
fn zlib_stream_hibernates_after_a_payload_of_one_or_two_bytes() {
    let corpus = Corpus::small_events(8, 9);
    for first in [&b"7"[..], b"{}", b"[1]"] {
        let mut payloads = vec![first.to_vec()];
        payloads.extend(corpus.payloads().iter().cloned());
        let messages = zlib_messages(&payloads);
        let mut decoder = Decoder::new(Compression::ZlibStream);
        for (message, payload) in messages.iter().zip(&payloads) {
            let json = decoder.push_raw(message, MessageKind::Binary).unwrap();
            assert_eq!(json, Some(payload.as_slice()));
            assert!(decoder.hibernate(), "after {first:?}");
        }
    }
}

#[test]
fn json_in_a_binary_message_without_transport_compression_is_read_as_json() {
    let json = br#"{"t":"MESSAGE_CREATE","s":5,"op":0,"d":{"content":"hi"}}"#;
    let mut decoder = Decoder::new(Compression::None);
    let payload = decoder.push(json, MessageKind::Binary).unwrap().unwrap();
    assert_eq!((payload.op(), payload.seq()), (0, Some(5)));
    // A zlib payload on the same connection still inflates.
    let compressed = zlib_payload(json);
    let inflated = decoder.push_raw(&compressed, MessageKind::Binary).unwrap();
    assert_eq!(inflated, Some(&json[..]));
    // Bytes that are neither are an error for this message alone.
    let error = decoder
        .push(b"\x00\x01garbage", MessageKind::Binary)
        .unwrap_err();
    assert!(!error.requires_reset(), "{error}");
}

#[test]
fn a_text_message_on_a_compressed_transport_is_json_and_keeps_the_stream() {
    let corpus = Corpus::small_events(4, 3);
    for compression in [Compression::ZlibStream, Compression::ZstdStream] {
        let mut decoder = Decoder::new(compression);
        let mut zlib = ZlibStreamEncoder::new();
        let mut zstd = ZstdStreamEncoder::new().unwrap();
        for payload in corpus.payloads() {
            let text = br#"{"op":11,"d":null}"#;
            assert_eq!(
                decoder.push_raw(text, MessageKind::Text).unwrap(),
                Some(&text[..])
            );
            let message = match compression {
                Compression::ZlibStream => zlib.encode(payload),
                _ => zstd.encode(payload).unwrap(),
            };
            let json = decoder.push_raw(&message, MessageKind::Binary).unwrap();
            assert_eq!(json, Some(payload.as_slice()), "{compression}");
        }
    }
}
