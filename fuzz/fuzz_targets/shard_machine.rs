#![no_main]
//! The sans-IO shard on arbitrary gateway messages: never a panic, and every
//! dispatch event carries exactly the JSON of a message it was fed, in the
//! order fed.
//!
//! The input is messages separated by 0xFF (a byte UTF-8 text never holds),
//! fed as uncompressed text messages to a connected shard. The harness
//! carries out the shard's orders at once (identify turns granted, closes
//! acknowledged, connections opened) and advances a virtual clock between
//! messages by the message's first byte in seconds, so timeouts fire too.
//! Events are taken after every message.

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shardwire_codec::{Compression, MessageKind, Token};
use shardwire_shard::{Json, Order, ShardConfig, ShardEvent, ShardMachine};
use twilight_model::gateway::Intents;

fuzz_target!(|data: &[u8]| {
    let mut config = ShardConfig::new(
        Token::new("fuzz-token"),
        Intents::GUILDS,
        0,
        1,
        "wss://gateway.example",
    );
    config.compression = Compression::None;
    let mut shard = ShardMachine::new(config);
    let mut now = Instant::now();
    shard.connect(now);
    let mut fed: Vec<&[u8]> = Vec::new();
    let mut dispatched: Vec<Json> = Vec::new();
    for message in data.split(|&byte| byte == 0xFF) {
        now += Duration::from_secs(u64::from(message.first().copied().unwrap_or(0) % 64));
        while shard.poll_timeout().is_some_and(|at| at <= now) {
            shard.handle_timeout(now);
        }
        while let Some(order) = shard.poll_order() {
            match order {
                Order::Connect { .. } => shard.handle_connected(now),
                Order::Close { code } => shard.handle_close(now, Some(code)),
                Order::WaitIdentifyTurn => shard.handle_identify_turn(now),
                _ => {}
            }
        }
        shard.handle_message(now, message, MessageKind::Text);
        fed.push(message);
        while shard.poll_transmit().is_some() {}
        while let Some(event) = shard.poll_event() {
            if let ShardEvent::Dispatch { json, .. } = event {
                dispatched.push(json);
            }
        }
    }
    // Each dispatch is a whole message fed, and they come in the order fed.
    let mut rest = fed.iter();
    for json in &dispatched {
        assert!(
            rest.any(|message| *message == json.as_bytes()),
            "a dispatch's JSON is not the next message fed: {json:?}"
        );
    }
});
