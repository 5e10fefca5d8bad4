//! The Discord Gateway wire codec of shardwire: bytes in, payloads out;
//! commands in, bytes out. No tokio, no sockets.
//!
//! The key types:
//! - [`Decoder`]: one per connection. Feed it each WebSocket message with
//!   [`Decoder::push`]; it undoes the transport compression (zlib-stream,
//!   zstd-stream) or payload compression, reusing its buffers, and returns a
//!   [`Payload`] once one is complete.
//! - [`Payload`]: `op`, `s`, `t` and the raw JSON of `d`, found by a validating
//!   scan that builds no tree. [`Payload::decode`] turns it into a
//!   twilight-model [`GatewayEvent`](twilight_model::gateway::event::GatewayEvent)
//!   when an [`EventFilter`] wants it.
//! - [`Command`]: what a client sends (Identify, Resume, Heartbeat, presence,
//!   voice state, member, soundboard and channel-info requests), encoded with
//!   the gateway's 4096-byte limit enforced.
//! - [`frame::FrameBuffer`]: a connection's receive buffer, handing out each
//!   WebSocket message where it was received, for a client (the server's
//!   frames) or a server (the client's, unmasked in place);
//!   [`frame::FrameHeader`] and [`frame::encode_frame`] write frames for
//!   either end.
//! - [`CodecError`]: every failure, and whether the connection's decoder can
//!   go on ([`CodecError::requires_reset`]).
//!
//! ```
//! use shardwire_codec::{Compression, Decoded, Decoder, EventFilter, MessageKind};
//! use twilight_model::gateway::event::{EventType, GatewayEvent};
//!
//! let mut decoder = Decoder::new(Compression::None);
//! let filter = EventFilter::only([EventType::Resumed]);
//! let message = br#"{"t":"RESUMED","s":7,"op":0,"d":{}}"#;
//! let payload = decoder.push(message, MessageKind::Text)?.unwrap();
//! assert_eq!((payload.op(), payload.seq(), payload.event_type()), (0, Some(7), Some("RESUMED")));
//! assert!(matches!(payload.decode(&filter), Decoded::Event(GatewayEvent::Dispatch(7, _))));
//! # Ok::<(), shardwire_codec::CodecError>(())
//! ```

mod command;
mod decoder;
mod dispatch;
mod error;
mod event;
pub mod frame;
mod inflate;
mod json;
mod payload;
mod token;

pub use crate::command::{
    Activity, ChannelInfoField, Command, ConnectionProperties, Identify, MAX_COMMAND_SIZE,
    MemberSelection, RequestChannelInfo, RequestGuildMembers, RequestSoundboardSounds, Resume,
    UpdatePresence, UpdateVoiceState,
};
pub use crate::decoder::{Compression, DEFAULT_PAYLOAD_LIMIT, Decoder, MessageKind};
pub use crate::error::CodecError;
pub use crate::event::{Decoded, EventDecodeError, EventFilter};
#[doc(hidden)]
pub use crate::event::{DispatchSeed, TypedParser};
pub use crate::json::MAX_DEPTH;
pub use crate::payload::Payload;
pub use crate::token::Token;
