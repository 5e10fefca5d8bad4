#![no_main]
//! The sans-IO shard on arbitrary gateway messages: never a panic, and every
//! dispatch event carries exactly the JSON of a message it was fed, in the
//! order fed.
//!
//! The input's first byte picks how messages travel: as text, zlib-stream
//! or zstd-stream (each compressed by a real encoder, as Discord does), or
//! as binary frames without compression (JSON, or a zlib payload). The
//! rest is messages separated by 0xFF (a byte UTF-8 text never holds),
//! fed to a connected shard. The harness
//! carries out the shard's orders at once (identify turns granted, closes
//! acknowledged, connections opened) and advances a virtual clock between
//! messages by the message's first byte in seconds, so timeouts fire too.
//! Events are taken after every message.

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shardwire_corpus::{ZlibStreamEncoder, ZstdStreamEncoder, zlib_payload};
use shardwire_codec::{Compression, MessageKind, Token};
use shardwire_shard::{Json, Order, ShardConfig, ShardEvent, ShardMachine};
use twilight_model::gateway::Intents;

/// How the messages travel.
enum Transport {
    Text,
    Zlib(ZlibStreamEncoder),
    Zstd(Box<ZstdStreamEncoder>),
    Binary,
}

impl Transport {
    fn compression(&self) -> Compression {
        match self {
            Self::Zlib(_) => Compression::ZlibStream,
            Self::Zstd(_) => Compression::ZstdStream,
            Self::Text | Self::Binary => Compression::None,
        }
    }

    /// The message on the wire. A new connection starts a new stream.
    fn encode(&mut self, message: &[u8]) -> (Vec<u8>, MessageKind) {
        match self {
            Self::Text => (message.to_vec(), MessageKind::Text),
            Self::Zlib(encoder) => (encoder.encode(message), MessageKind::Binary),
            Self::Zstd(encoder) => (
                encoder.encode(message).unwrap_or_default(),
                MessageKind::Binary,
            ),
            Self::Binary if message.len() % 2 == 0 => (zlib_payload(message), MessageKind::Binary),
            Self::Binary => (message.to_vec(), MessageKind::Binary),
        }
    }

    fn restart(&mut self) {
        match self {
            Self::Zlib(encoder) => *encoder = ZlibStreamEncoder::new(),
            Self::Zstd(encoder) => {
                if let Ok(fresh) = ZstdStreamEncoder::new() {
                    **encoder = fresh;
                }
            }
            Self::Text | Self::Binary => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut transport = match mode % 4 {
        0 => Transport::Text,
        1 => Transport::Zlib(ZlibStreamEncoder::new()),
        2 => match ZstdStreamEncoder::new() {
            Ok(encoder) => Transport::Zstd(Box::new(encoder)),
            Err(_) => return,
        },
        _ => Transport::Binary,
    };
    let mut config = ShardConfig::new(
        Token::new("fuzz-token"),
        Intents::GUILDS,
        0,
        1,
        "wss://gateway.example",
    );
    config.compression = transport.compression();
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
                Order::Connect { .. } => {
                    transport.restart();
                    shard.handle_connected(now);
                }
                Order::Close { code } => shard.handle_close(now, Some(code)),
                Order::WaitIdentifyTurn => shard.handle_identify_turn(now),
                _ => {}
            }
        }
        // Empty messages compress to nothing: a gateway never sends one.
        if message.is_empty() && !matches!(transport, Transport::Text) {
            continue;
        }
        let (wire, kind) = transport.encode(message);
        shard.handle_message(now, &wire, kind);
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
