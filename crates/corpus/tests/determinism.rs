//! The corpus is part of the repository's record: benchmarks, tests and
//! fuzz seeds name a seed and expect the same bytes from it. These pin the
//! random sequence and a digest of the generated JSON (the figures the
//! corpus produced when it was still part of shardwire-codec), so a change
//! that would move them fails here first. Compressed bytes are not pinned:
//! they may change with the compressor's version.

use shardwire_corpus::{Corpus, EventGenerator, Rng};

/// FNV-1a over every payload, each followed by its length.
fn digest<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for payload in payloads {
        for &byte in payload.iter().chain(&(payload.len() as u64).to_le_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[test]
fn the_random_sequence_is_splitmix64() {
    let mut rng = Rng::new(0);
    let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
    assert_eq!(
        first,
        [
            0xe220_a839_7b1d_cdaf,
            0x6e78_9e6a_a1b9_65f4,
            0x06c4_5d18_8009_454f
        ]
    );
    let mut rng = Rng::new(42);
    assert_eq!(rng.below(1000), 413);
    assert_eq!(rng.unit().to_bits(), 0x3fc4_77f1_99d9_3378);
}

#[test]
fn generated_traffic_is_the_recorded_traffic() {
    let corpus = Corpus::realistic(2000, 42);
    assert_eq!(corpus.payloads().len(), 2001);
    assert_eq!(corpus.total_bytes(), 2_524_887);
    assert_eq!(
        digest(corpus.payloads().iter().map(Vec::as_slice)),
        0x41c3_fead_518a_926b
    );

    let small = Corpus::small_events(64, 5);
    assert_eq!(
        digest(small.payloads().iter().map(Vec::as_slice)),
        0x9f4e_7392_40fa_00a6
    );

    let mut generator = EventGenerator::new(11, 8);
    let events: Vec<String> = (0..50)
        .map(|_| generator.next_event().1.to_string())
        .collect();
    assert_eq!(
        digest(events.iter().map(String::as_bytes)),
        0x27b6_b644_0e0f_b984
    );
}
