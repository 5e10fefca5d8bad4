//! Decodes a zlib-stream connection's worth of generated gateway traffic and
//! prints what arrived: the codec on its own, no network.
//!
//! Run with `cargo run -p shardwire-examples --example decode_stream`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports what it did on stdout"
)]

use std::collections::BTreeMap;

use anyhow::Result;
use shardwire::codec::{Compression, Decoded, Decoder, EventFilter, MessageKind};
use shardwire_corpus::{Corpus, ZlibStreamEncoder};
use twilight_model::gateway::event::{DispatchEvent, EventType, GatewayEvent};

fn main() -> Result<()> {
    // What a server would send: 500 events, compressed as one zlib stream.
    let corpus = Corpus::realistic(500, 1);
    let mut encoder = ZlibStreamEncoder::new();
    let messages: Vec<Vec<u8>> = corpus
        .payloads()
        .iter()
        .map(|p| encoder.encode(p))
        .collect();

    // What a bot does: decode every message, type only the events it handles.
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let filter = EventFilter::only([EventType::MessageCreate]);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut longest_message = String::new();
    for message in &messages {
        let Some(payload) = decoder.push(message, MessageKind::Binary)? else {
            continue;
        };
        *counts
            .entry(payload.event_type().unwrap_or("?").to_owned())
            .or_default() += 1;
        if let Decoded::Event(GatewayEvent::Dispatch(_, DispatchEvent::MessageCreate(message))) =
            payload.decode(&filter)
            && message.content.len() > longest_message.len()
        {
            longest_message = message.content.clone();
        }
    }
    let compressed: usize = messages.iter().map(Vec::len).sum();
    println!(
        "decoded {} payloads: {} bytes of JSON from {} compressed bytes",
        corpus.payloads().len(),
        corpus.total_bytes(),
        compressed
    );
    for (event, count) in counts {
        println!("  {event:<22} {count}");
    }
    println!("longest message: {longest_message:?}");
    Ok(())
}
