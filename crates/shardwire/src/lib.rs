//! shardwire keeps Discord bots connected to the Discord Gateway.
//!
//! This facade re-exports the layers of shardwire. Today it offers the wire
//! codec, [`codec`] (transport decompression for zlib-stream and zstd-stream,
//! payload decompression, a lazy JSON scan, typed events through
//! twilight-model, outgoing commands), and the heartbeat scheduler,
//! [`heartbeat`]. The shard, the cluster and the `shardwire` command follow
//! in later releases.
//!
//! ```
//! use shardwire::codec::{Compression, Decoder, MessageKind};
//!
//! let mut decoder = Decoder::new(Compression::None);
//! let payload = decoder
//!     .push(br#"{"op":11,"d":null}"#, MessageKind::Text)?
//!     .expect("an uncompressed message is always a whole payload");
//! assert_eq!(payload.op(), 11);
//! # Ok::<(), shardwire::codec::CodecError>(())
//! ```

pub use shardwire_codec as codec;
pub use shardwire_heartbeat as heartbeat;
