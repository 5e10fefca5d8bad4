//! Typed decoding of the realistic small events, with one candidate, for
//! counting instructions: the scan is done once up front, then every event
//! is decoded `passes` times. Run it under callgrind at two pass counts and
//! subtract, so the fixed costs cancel:
//!
//! ```sh
//! cargo build --release -p shardwire-codec-tests --example typed_instructions
//! valgrind --tool=callgrind target/release/examples/typed_instructions serde_json_str 2
//! ```
//!
//! The candidates are those of the divan benchmark's `typed` module.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a measuring tool reports on stdout, its usage on stderr"
)]

use shardwire_codec::Payload;
use shardwire_corpus::Corpus;

#[path = "../benches/common/typed.rs"]
mod typed;

use typed::{Candidate, Scratch};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let Some(candidate) = Candidate::ALL.into_iter().find(|c| c.name() == name) else {
        let names: Vec<_> = Candidate::ALL.iter().map(|c| c.name()).collect();
        eprintln!("usage: typed_instructions <{}> [passes]", names.join("|"));
        std::process::exit(2);
    };
    let passes: u32 = args.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    let corpus = Corpus::small_events(2000, 43);
    let scanned: Vec<Payload<'_>> = corpus
        .payloads()
        .iter()
        .filter_map(|json| Payload::scan(json).ok())
        .collect();
    let mut scratch = Scratch::default();
    let mut decoded = 0u64;
    for _ in 0..passes {
        for payload in &scanned {
            decoded += u64::from(typed::decode(candidate, payload, &mut scratch).is_some());
        }
    }
    println!(
        "{} events decoded of {}",
        decoded,
        u64::from(passes) * scanned.len() as u64
    );
}
