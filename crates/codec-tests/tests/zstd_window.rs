//! zstd-stream frames as a hostile gateway could write them: windows past
//! 8 MiB are refused before any memory is reserved for them; and a new frame
//! after the end of one (how the simulator splices its flood in) decodes.

use shardwire_codec::{CodecError, Compression, Decoder, MessageKind};
use shardwire_corpus::ZstdStreamEncoder;

const JSON: &[u8] = br#"{"op":11,"d":null,"s":null,"t":null}"#;

/// A zstd frame that stays open: its header, then `JSON` as one raw block
/// that is not the last. `descriptor` is what follows the magic number: the
/// frame header descriptor, then the window descriptor or the content size.
fn open_frame(descriptor: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd];
    frame.extend_from_slice(descriptor);
    // Block header, little-endian: not last (bit 0), raw (bits 1-2), size.
    let header = (JSON.len() as u32) << 3;
    frame.extend_from_slice(&header.to_le_bytes()[..3]);
    frame.extend_from_slice(JSON);
    frame
}

/// A frame whose window descriptor asks for 2^`log` bytes (mantissa 0).
fn frame_with_window_log(log: u8) -> Vec<u8> {
    // No content size, not single-segment, no checksum, no dictionary.
    open_frame(&[0x00, (log - 10) << 3])
}

fn push(decoder: &mut Decoder, message: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
    decoder
        .push_raw(message, MessageKind::Binary)
        .map(|json| json.map(<[u8]>::to_vec))
}

#[test]
fn a_window_of_up_to_8_mib_decodes() {
    for log in [10, 21, 23] {
        let mut decoder = Decoder::new(Compression::ZstdStream);
        let json = push(&mut decoder, &frame_with_window_log(log))
            .unwrap_or_else(|error| panic!("window 2^{log}: {error}"));
        assert_eq!(json.as_deref(), Some(JSON), "window 2^{log}");
    }
}

#[test]
fn a_window_past_8_mib_is_refused_and_needs_a_reset() {
    // 2^24 to 2^27 were taken before (zstd's own limit is 2^27), and 2^31
    // is past zstd's too.
    let mut decoder = Decoder::new(Compression::ZstdStream);
    for log in [24, 27, 31] {
        let error = push(&mut decoder, &frame_with_window_log(log)).unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::CorruptStream {
                    compression: Compression::ZstdStream,
                    ..
                }
            ),
            "window 2^{log}: {error:?}"
        );
        assert!(error.requires_reset(), "window 2^{log}");
        // The limit outlives the reset of the connection.
        decoder.reset();
    }
    let json = push(&mut decoder, &frame_with_window_log(21)).unwrap();
    assert_eq!(json.as_deref(), Some(JSON), "after the refusals");
}

#[test]
fn a_single_segment_frame_is_held_to_the_same_window() {
    // Single-segment: no window descriptor, the window is the content size
    // (8 bytes here). 16 MiB was taken before; 8 MiB still is.
    let single = |size: u64| {
        let mut descriptor = vec![0xe0];
        descriptor.extend_from_slice(&size.to_le_bytes());
        open_frame(&descriptor)
    };
    let mut decoder = Decoder::new(Compression::ZstdStream);
    let error = push(&mut decoder, &single(16 << 20)).unwrap_err();
    assert!(error.requires_reset(), "{error:?}");
    decoder.reset();
    let json = push(&mut decoder, &single(8 << 20)).unwrap();
    assert_eq!(json.as_deref(), Some(JSON));
}

#[test]
fn a_new_frame_after_the_end_of_one_decodes_in_the_same_message() {
    let mut encoder = ZstdStreamEncoder::new().unwrap();
    let mut decoder = Decoder::new(Compression::ZstdStream);
    let first = encoder.encode(JSON).unwrap();
    assert_eq!(push(&mut decoder, &first).unwrap().as_deref(), Some(JSON));
    // The end of the first frame and all of the next payload's, as the
    // simulator sends a flood's first event.
    let other = br#"{"op":1,"d":null,"s":null,"t":null}"#;
    let mut second = encoder.end_frame().unwrap();
    second.extend_from_slice(&encoder.encode(other).unwrap());
    assert_eq!(
        push(&mut decoder, &second).unwrap().as_deref(),
        Some(&other[..])
    );
    let third = encoder.encode(JSON).unwrap();
    assert_eq!(push(&mut decoder, &third).unwrap().as_deref(), Some(JSON));
}
