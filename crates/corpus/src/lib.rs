//! Realistic Discord Gateway traffic, generated deterministically, and the
//! encoders that compress it the way Discord does.
//!
//! shardwire's tests, benchmarks, fuzz seeds and simulator all draw from
//! here, so every measurement in the repository is made on the same mix:
//! MESSAGE_CREATE, PRESENCE_UPDATE, TYPING_START, GUILD_MEMBER_UPDATE,
//! MESSAGE_REACTION_ADD and a few large GUILD_CREATE. No bot needs it.
//!
//! - [`Corpus`]: a sequence of whole dispatch payloads (JSON, fields in
//!   Discord's order), numbered from `s = 1`.
//! - [`EventGenerator`]: the `d` of one dispatch of each kind on demand, for
//!   guilds of the caller's choosing.
//! - [`ZlibStreamEncoder`], [`ZstdStreamEncoder`], [`zlib_payload`]: the
//!   gateway's transport compressions and its payload compression.
//! - [`server_frame`]: an unmasked WebSocket frame, as a server sends it
//!   (written by shardwire-codec's frame writer).
//! - [`Rng`]: the seeded SplitMix64 generator behind all of it.
//!
//! The same seed gives the same bytes on every machine and in every release
//! of this crate: recorded corpora, benchmark figures and fuzz seeds depend
//! on it. Of shardwire's crates it depends on the codec alone, for its frame
//! writer; the codec's tests that need its traffic are in
//! `crates/codec-tests`, so nothing cycles back.
//!
//! ```
//! use shardwire_corpus::{Corpus, ZlibStreamEncoder, server_frame};
//!
//! let corpus = Corpus::realistic(100, 7);
//! assert!(corpus.payloads()[0].starts_with(br#"{"t":""#));
//! let mut encoder = ZlibStreamEncoder::new();
//! let first = encoder.encode(&corpus.payloads()[0]);
//! assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
//! // One binary frame, as the gateway sends the compressed message.
//! let frame = server_frame(true, 2, &first);
//! assert_eq!(frame[0], 0x82);
//! ```

// `json!` for a whole GUILD_CREATE nests deeper than the default limit.
#![recursion_limit = "256"]

mod corpus;
mod encode;
mod frame;
mod generator;
mod rng;

pub use crate::corpus::Corpus;
pub use crate::encode::{ZlibStreamEncoder, ZstdStreamEncoder, zlib_payload};
pub use crate::frame::server_frame;
pub use crate::generator::EventGenerator;
pub use crate::rng::Rng;
