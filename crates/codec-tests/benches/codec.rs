//! Codec benchmarks, each row beside its baseline in the same run.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p shardwire-codec`). divan
//! prints the fastest, slowest, median and mean time of every row, and the
//! throughput in bytes of decompressed JSON or in events.
//!
//! The corpus is `Corpus::realistic(2000, 42)`: 2,000 small dispatches of the
//! realistic mix plus one GUILD_CREATE of 2,000 members.

use std::sync::LazyLock;

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use shardwire_codec::{Compression, Decoded, Decoder, EventFilter, MessageKind, Payload};
use shardwire_corpus::{Corpus, ZlibStreamEncoder, ZstdStreamEncoder, zlib_payload};
use twilight_model::gateway::event::{EventType, GatewayEventDeserializer};

#[path = "common/typed.rs"]
mod candidates;

fn main() {
    divan::main();
}

struct Data {
    corpus: Corpus,
    small: Corpus,
    zlib: Vec<Vec<u8>>,
    zstd: Vec<Vec<u8>>,
    whole: Vec<Vec<u8>>,
    large: Vec<u8>,
    large_whole: Vec<u8>,
    json_bytes: u64,
    small_bytes: u64,
}

static DATA: LazyLock<Data> = LazyLock::new(|| {
    let corpus = Corpus::realistic(2000, 42);
    let small = Corpus::small_events(2000, 43);
    let mut zlib_encoder = ZlibStreamEncoder::new();
    let zlib = corpus
        .payloads()
        .iter()
        .map(|p| zlib_encoder.encode(p))
        .collect();
    let mut zstd_encoder = ZstdStreamEncoder::new().expect("zstd");
    let zstd = corpus
        .payloads()
        .iter()
        .map(|p| zstd_encoder.encode(p).expect("zstd"))
        .collect();
    let whole = small.payloads().iter().map(|p| zlib_payload(p)).collect();
    let json_bytes = corpus.total_bytes() as u64;
    let small_bytes = small.total_bytes() as u64;
    let large = Corpus::guild_create(2000, 44);
    let large_whole = zlib_payload(&large);
    Data {
        corpus,
        small,
        zlib,
        zstd,
        whole,
        large,
        large_whole,
        json_bytes,
        small_bytes,
    }
});

fn events() -> u64 {
    DATA.corpus.payloads().len() as u64
}

/// zlib-stream inflate: the streaming backend (zlib-rs) against miniz_oxide.
mod inflate {
    use super::*;

    /// shardwire's decoder on zlib-rs: inflate only, no scan.
    #[divan::bench]
    fn zlib_rs(bencher: Bencher<'_, '_>) {
        bencher.counter(BytesCount::new(DATA.json_bytes)).bench(|| {
            let mut decoder = Decoder::new(Compression::ZlibStream);
            for message in &DATA.zlib {
                black_box(decoder.push_raw(message, MessageKind::Binary).ok());
            }
        });
    }

    /// The same stream through miniz_oxide's streaming inflater.
    #[divan::bench]
    fn miniz_oxide(bencher: Bencher<'_, '_>) {
        use miniz_oxide::inflate::stream::{InflateState, inflate};
        use miniz_oxide::{DataFormat, MZFlush};
        bencher.counter(BytesCount::new(DATA.json_bytes)).bench(|| {
            let mut state = InflateState::new_boxed(DataFormat::Zlib);
            let mut out = vec![0u8; 64 * 1024];
            for message in &DATA.zlib {
                let mut input = message.as_slice();
                let mut written = 0;
                loop {
                    if written == out.len() {
                        out.resize(out.len() * 2, 0);
                    }
                    let result = inflate(&mut state, input, &mut out[written..], MZFlush::Sync);
                    input = &input[result.bytes_consumed..];
                    written += result.bytes_written;
                    if input.is_empty() && written < out.len() {
                        break;
                    }
                }
                black_box(&out[..written]);
            }
        });
    }

    /// zstd-stream, for reference (a different compressed stream of the same
    /// JSON).
    #[divan::bench]
    fn zstd(bencher: Bencher<'_, '_>) {
        bencher.counter(BytesCount::new(DATA.json_bytes)).bench(|| {
            let mut decoder = Decoder::new(Compression::ZstdStream);
            for message in &DATA.zstd {
                black_box(decoder.push_raw(message, MessageKind::Binary).ok());
            }
        });
    }
}

/// Payload compression: whole zlib streams, one per small event.
mod payload_compression {
    use super::*;

    /// zune-inflate, one call per message (its API returns a new `Vec`).
    #[divan::bench]
    fn zune_inflate(bencher: Bencher<'_, '_>) {
        bencher
            .counter(BytesCount::new(DATA.small_bytes))
            .bench(|| {
                for message in &DATA.whole {
                    black_box(zune(message));
                }
            });
    }

    /// The decoder, on zlib-rs: one context reset per message, buffer reused.
    #[divan::bench]
    fn zlib_rs(bencher: Bencher<'_, '_>) {
        bencher
            .counter(BytesCount::new(DATA.small_bytes))
            .bench(|| {
                let mut decoder = Decoder::new(Compression::None);
                for message in &DATA.whole {
                    black_box(decoder.push_raw(message, MessageKind::Binary).ok());
                }
            });
    }
}

/// Payload compression of one large GUILD_CREATE (2,000 members).
mod payload_compression_large {
    use super::*;

    #[divan::bench]
    fn zune_inflate(bencher: Bencher<'_, '_>) {
        bencher
            .counter(BytesCount::new(DATA.large.len()))
            .bench(|| black_box(zune(&DATA.large_whole)));
    }

    #[divan::bench]
    fn zlib_rs(bencher: Bencher<'_, '_>) {
        let mut decoder = Decoder::new(Compression::None);
        bencher
            .counter(BytesCount::new(DATA.large.len()))
            .bench_local(|| {
                black_box(
                    decoder
                        .push_raw(&DATA.large_whole, MessageKind::Binary)
                        .ok()
                        .flatten()
                        .map(<[u8]>::len),
                )
            });
    }
}

/// The lazy path against its floor: inflate + scan against inflate alone.
mod lazy {
    use super::*;

    /// Inflate alone: the floor.
    #[divan::bench]
    fn inflate_only(bencher: Bencher<'_, '_>) {
        bencher.counter(BytesCount::new(DATA.json_bytes)).bench(|| {
            let mut decoder = Decoder::new(Compression::ZlibStream);
            for message in &DATA.zlib {
                black_box(decoder.push_raw(message, MessageKind::Binary).ok());
            }
        });
    }

    /// Inflate and scan `op`, `s`, `t`, `d`, validating the JSON.
    #[divan::bench]
    fn inflate_scan(bencher: Bencher<'_, '_>) {
        bencher.counter(BytesCount::new(DATA.json_bytes)).bench(|| {
            let mut decoder = Decoder::new(Compression::ZlibStream);
            for message in &DATA.zlib {
                let payload = decoder.push(message, MessageKind::Binary);
                black_box(
                    payload
                        .ok()
                        .flatten()
                        .map(|p| (p.op(), p.seq(), p.data().len())),
                );
            }
        });
    }

    /// Inflate, scan and typed decode of every event: the full path.
    #[divan::bench]
    fn inflate_scan_typed(bencher: Bencher<'_, '_>) {
        let filter = EventFilter::all();
        bencher.counter(ItemsCount::new(events())).bench(|| {
            let mut decoder = Decoder::new(Compression::ZlibStream);
            for message in &DATA.zlib {
                if let Ok(Some(payload)) = decoder.push(message, MessageKind::Binary) {
                    black_box(payload.decode(&filter));
                }
            }
        });
    }

    /// What twilight-gateway does per message: inflate (flate2, same
    /// backend), find op/s/t by string search, then serde_json over the
    /// whole payload into twilight-model.
    #[divan::bench]
    fn twilight_style_inflate_typed(bencher: Bencher<'_, '_>) {
        bencher.counter(ItemsCount::new(events())).bench(|| {
            let mut decoder = Decoder::new(Compression::ZlibStream);
            for message in &DATA.zlib {
                if let Ok(Some(json)) = decoder.push_raw(message, MessageKind::Binary) {
                    black_box(candidates::twilight_gateway(json));
                }
            }
        });
    }
}

/// zune-inflate with the settings the decoder used when it was built on it.
fn zune(message: &[u8]) -> Option<usize> {
    let options = zune_inflate::DeflateOptions::default()
        .set_limit(shardwire_codec::DEFAULT_PAYLOAD_LIMIT)
        .set_size_hint(message.len() * 4)
        .set_confirm_checksum(true);
    zune_inflate::DeflateDecoder::new_with_options(message, options)
        .decode_zlib()
        .ok()
        .map(|v| v.len())
}

/// Scan time per payload, on decompressed JSON.
mod scan {
    use super::*;

    /// shardwire's validating scan.
    #[divan::bench]
    fn shardwire(bencher: Bencher<'_, '_>) {
        bencher
            .counter(BytesCount::new(DATA.json_bytes))
            .counter(ItemsCount::new(events()))
            .bench(|| {
                for json in DATA.corpus.payloads() {
                    black_box(Payload::scan(json).ok());
                }
            });
    }

    /// shardwire's strict scan, which validates `d` too.
    #[divan::bench]
    fn shardwire_strict(bencher: Bencher<'_, '_>) {
        bencher
            .counter(BytesCount::new(DATA.json_bytes))
            .counter(ItemsCount::new(events()))
            .bench(|| {
                for json in DATA.corpus.payloads() {
                    black_box(Payload::scan_strict(json).ok());
                }
            });
    }

    /// twilight-model's envelope finder (string search, no validation).
    #[divan::bench]
    fn twilight_from_json(bencher: Bencher<'_, '_>) {
        bencher
            .counter(BytesCount::new(DATA.json_bytes))
            .counter(ItemsCount::new(events()))
            .bench(|| {
                for json in DATA.corpus.payloads() {
                    let text = std::str::from_utf8(json).ok();
                    black_box(
                        text.and_then(GatewayEventDeserializer::from_json)
                            .map(|d| d.op()),
                    );
                }
            });
    }

    /// serde_json into an envelope with a borrowed raw `d`.
    #[divan::bench]
    fn serde_json_raw_value(bencher: Bencher<'_, '_>) {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            op: u8,
            s: Option<u64>,
            #[serde(borrow)]
            t: Option<&'a str>,
            #[serde(borrow)]
            d: Option<&'a serde_json::value::RawValue>,
        }
        bencher
            .counter(BytesCount::new(DATA.json_bytes))
            .counter(ItemsCount::new(events()))
            .bench(|| {
                for json in DATA.corpus.payloads() {
                    let envelope: Option<Envelope<'_>> = serde_json::from_slice(json).ok();
                    black_box(envelope.map(|e| (e.op, e.s, e.t, e.d.map(|d| d.get().len()))));
                }
            });
    }
}

/// Typed decode of small events (scan done): every candidate way of
/// deserializing into twilight-model (see `common/typed.rs`), and
/// twilight-gateway's way from the whole payload as the baseline.
/// `examples/typed_instructions.rs` counts the same candidates' instructions.
mod typed {
    use super::*;
    use candidates::{Candidate, Scratch};

    fn small_events() -> u64 {
        DATA.small.payloads().len() as u64
    }

    #[divan::bench(args = Candidate::ALL)]
    fn candidate(bencher: Bencher<'_, '_>, candidate: Candidate) {
        let scanned: Vec<Payload<'_>> = DATA
            .small
            .payloads()
            .iter()
            .filter_map(|json| Payload::scan(json).ok())
            .collect();
        let mut scratch = Scratch::default();
        bencher
            .counter(ItemsCount::new(small_events()))
            .bench_local(|| {
                for payload in &scanned {
                    black_box(candidates::decode(candidate, payload, &mut scratch));
                }
            });
    }

    /// Scan and typed decode together, from the JSON.
    #[divan::bench]
    fn shardwire_scan_and_decode(bencher: Bencher<'_, '_>) {
        let filter = EventFilter::all();
        bencher.counter(ItemsCount::new(small_events())).bench(|| {
            for json in DATA.small.payloads() {
                if let Ok(payload) = Payload::scan(json) {
                    black_box(payload.decode(&filter));
                }
            }
        });
    }

    /// With a filter that wants only MESSAGE_CREATE (30% of the mix): the
    /// rest costs a scan.
    #[divan::bench]
    fn shardwire_filtered_message_create(bencher: Bencher<'_, '_>) {
        let filter = EventFilter::only([EventType::MessageCreate]);
        bencher.counter(ItemsCount::new(small_events())).bench(|| {
            for json in DATA.small.payloads() {
                if let Ok(payload) = Payload::scan(json) {
                    black_box(matches!(payload.decode(&filter), Decoded::Event(_)));
                }
            }
        });
    }
}
