use std::fmt;

use crate::inflate::{ZlibPayload, ZlibStream, ZstdStream};
use crate::{CodecError, Payload};

/// The transport compression of one gateway connection, as named in the
/// connection URL's `compress` parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// No transport compression. Text messages are JSON; binary messages are
    /// whole zlib streams (payload compression, Identify `compress: true`),
    /// or JSON when they do not start with a zlib header.
    None,
    /// `compress=zlib-stream`: one deflate stream for the whole connection.
    #[default]
    ZlibStream,
    /// `compress=zstd-stream`: one zstd frame for the whole connection.
    ZstdStream,
}

impl Compression {
    /// The value of the gateway URL's `compress` query parameter, if any.
    #[must_use]
    pub fn query_value(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::ZlibStream => Some("zlib-stream"),
            Self::ZstdStream => Some("zstd-stream"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.query_value().unwrap_or("uncompressed"))
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Self::None),
            "zlib-stream" => Ok(Self::ZlibStream),
            "zstd-stream" => Ok(Self::ZstdStream),
            other => Err(format!(
                "unknown compression `{other}`: expected zlib-stream, zstd-stream or none"
            )),
        }
    }
}

/// Whether a WebSocket message arrived in a text or a binary frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// A text message: JSON, whatever the transport compression.
    Text,
    /// A binary message: compressed bytes, or JSON without transport
    /// compression when it does not start with a zlib header.
    Binary,
}

/// Whether `message` starts with a zlib header (RFC 1950: deflate with a
/// window of at most 32 KiB, and a check value that makes the first two
/// bytes a multiple of 31). No JSON text starts that way.
fn starts_as_zlib(message: &[u8]) -> bool {
    match message {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// The default limit on one payload's decompressed size: 64 MiB.
///
/// A GUILD_CREATE of a 25,000-member guild is about 10 MiB of JSON; the
/// default leaves room for much larger guilds while still stopping a
/// decompression bomb long before it hurts.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// Output capacity kept between payloads. A buffer that grew past this for a
/// large payload is shrunk back when the next payload starts, so an idle
/// connection does not keep the memory of its largest message.
const RETAINED_CAPACITY: usize = 256 * 1024;

enum Transport {
    /// No transport compression; the payload inflater is made on the first
    /// binary message, so connections without payload compression never
    /// pay for its memory.
    None(Option<Box<ZlibPayload>>),
    Zlib(Box<ZlibStream>),
    Zstd(ZstdStream),
}

/// Turns the messages of one gateway connection into payloads.
///
/// Create one per connection with the connection's [`Compression`], feed it
/// every WebSocket message in order with [`Decoder::push`], and
/// [`reset`](Decoder::reset) it before the next connection. A push returns
/// `Ok(None)` while a zlib-stream payload is still incomplete.
///
/// The decompressed payload lives in a buffer that the decoder reuses for the
/// next message; the [`Payload`] borrows it.
///
/// On zlib-stream, a payload is complete when the bytes received since the
/// previous one end with `00 00 ff ff`, as the protocol defines. Compressed
/// data can contain those bytes mid-payload, so a sender that splits a
/// payload over several messages must not cut right after them: no receiver
/// could tell that cut from the end of a payload. Discord does not.
///
/// ```
/// use shardwire_codec::{Compression, Decoder, MessageKind};
///
/// let mut decoder = Decoder::new(Compression::None);
/// let payload = decoder
///     .push(br#"{"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null}"#, MessageKind::Text)?
///     .unwrap();
/// assert_eq!(payload.op(), 10);
/// assert_eq!(payload.data(), r#"{"heartbeat_interval":41250}"#);
/// # Ok::<(), shardwire_codec::CodecError>(())
/// ```
pub struct Decoder {
    compression: Compression,
    transport: Transport,
    out: Vec<u8>,
    limit: usize,
    /// The previous push completed a payload, so `out` holds a finished one.
    finished: bool,
    /// An earlier error left the compression context unusable.
    poisoned: bool,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("compression", &self.compression)
            .field("limit", &self.limit)
            .field("buffered", &self.out.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for a new connection, with [`DEFAULT_PAYLOAD_LIMIT`].
    #[must_use]
    pub fn new(compression: Compression) -> Self {
        Self::with_limit(compression, DEFAULT_PAYLOAD_LIMIT)
    }

    /// A decoder whose payloads may not decompress to more than `limit` bytes.
    #[must_use]
    pub fn with_limit(compression: Compression, limit: usize) -> Self {
        let mut decoder = Self {
            compression,
            transport: Transport::None(None),
            out: Vec::new(),
            limit,
            finished: false,
            poisoned: false,
        };
        decoder.reset();
        decoder
    }

    /// The compression this decoder expects.
    #[must_use]
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The limit on one payload's decompressed size.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes of memory the decoder's output buffer holds right now. It
    /// never exceeds the payload limit plus one byte, and drops back to a few
    /// hundred KiB at the next payload after a large one.
    #[must_use]
    pub fn buffer_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// Forgets the connection: a fresh compression context and an empty
    /// buffer, ready for the next connection.
    pub fn reset(&mut self) {
        self.poisoned = false;
        self.finished = false;
        self.out.clear();
        self.shrink();
        self.transport = match (&mut self.transport, self.compression) {
            (Transport::Zlib(stream), Compression::ZlibStream) => {
                stream.reset();
                return;
            }
            (Transport::Zstd(stream), Compression::ZstdStream) => {
                if stream.reset().is_ok() {
                    return;
                }
                Self::zstd_or_poisoned(&mut self.poisoned)
            }
            (_, Compression::ZlibStream) => Transport::Zlib(Box::new(ZlibStream::new())),
            (_, Compression::ZstdStream) => Self::zstd_or_poisoned(&mut self.poisoned),
            (_, Compression::None) => Transport::None(None),
        };
    }

    /// Frees what an idle connection does not need, and returns whether the
    /// compression state is now asleep.
    ///
    /// The output buffer is freed between payloads. On zlib-stream, between
    /// payloads, the inflate state (about 47 KiB) is freed too and only the
    /// window the next payload may refer to is kept, compressed: a few KiB.
    /// The next [`push`](Self::push) restores it, at the cost of a
    /// decompression of at most 32 KiB. Without transport compression there
    /// is no state to keep. A zlib-stream in the middle of a payload stays
    /// awake, and so does a zstd-stream context, always: besides its window
    /// (as large as the frame asks, at most 8 MiB; zstd's level 3 asks for
    /// 2 MiB) it keeps entropy tables and repeat offsets that later blocks
    /// may reuse and that zstd cannot take back, so it cannot be rebuilt
    /// from a saved window as zlib-stream's is.
    ///
    /// Call it when a connection has gone quiet; decoding is the same with or
    /// without it.
    pub fn hibernate(&mut self) -> bool {
        if self.poisoned {
            return false;
        }
        let between_payloads = self.finished || self.out.is_empty();
        let asleep = match &mut self.transport {
            Transport::Zlib(stream) => stream.hibernate(),
            Transport::Zstd(_) => false,
            Transport::None(payload) => {
                *payload = None;
                true
            }
        };
        if between_payloads {
            self.finished = false;
            self.out = Vec::new();
        }
        asleep
    }

    /// Whether the compression state is asleep (see
    /// [`hibernate`](Self::hibernate)); the next push wakes it.
    #[must_use]
    pub fn is_hibernating(&self) -> bool {
        match &self.transport {
            Transport::Zlib(stream) => stream.is_hibernating(),
            Transport::Zstd(_) => false,
            Transport::None(payload) => payload.is_none(),
        }
    }

    fn zstd_or_poisoned(poisoned: &mut bool) -> Transport {
        // Creating a zstd context only fails when memory allocation fails;
        // the decoder then reports every push as corrupt instead of panicking.
        match ZstdStream::new() {
            Ok(stream) => Transport::Zstd(stream),
            Err(_) => {
                *poisoned = true;
                Transport::None(None)
            }
        }
    }

    fn shrink(&mut self) {
        if self.out.capacity() > RETAINED_CAPACITY {
            self.out.shrink_to(RETAINED_CAPACITY);
        }
    }

    /// Decompresses one WebSocket message and returns the decompressed JSON
    /// of a completed payload, without parsing it.
    ///
    /// Returns `Ok(None)` while a zlib-stream payload is incomplete.
    ///
    /// # Errors
    ///
    /// [`CodecError::CorruptStream`] and [`CodecError::PayloadTooLarge`]; see
    /// [`CodecError::requires_reset`].
    pub fn push_raw<'a>(
        &'a mut self,
        message: &'a [u8],
        kind: MessageKind,
    ) -> Result<Option<&'a [u8]>, CodecError> {
        if self.poisoned {
            return Err(CodecError::CorruptStream {
                compression: self.compression,
                detail: "an earlier error lost the compression context; reset the decoder".into(),
            });
        }
        if self.finished {
            self.finished = false;
            self.out.clear();
            self.shrink();
        }
        let limit = self.limit;
        // A text message is JSON on any transport (compressed bytes are
        // binary), and so is a binary message without transport compression
        // unless it starts as a zlib stream does: then it is the payload
        // itself, with no copy.
        let plain = match (&self.transport, kind) {
            (_, MessageKind::Text) => true,
            (Transport::None(_), MessageKind::Binary) => !starts_as_zlib(message),
            _ => false,
        };
        if plain {
            if message.len() > limit {
                return Err(CodecError::PayloadTooLarge {
                    limit,
                    reset_required: false,
                });
            }
            return Ok(Some(message));
        }
        let result = match &mut self.transport {
            Transport::Zlib(stream) => stream.push(message, &mut self.out, limit),
            Transport::Zstd(stream) => stream.push(message, &mut self.out, limit).map(|()| true),
            Transport::None(payload) => payload
                .get_or_insert_with(|| Box::new(ZlibPayload::new()))
                .push(message, &mut self.out, limit)
                .map(|()| true),
        };
        match result {
            Ok(true) => {
                self.finished = true;
                Ok(Some(&self.out))
            }
            Ok(false) => Ok(None),
            Err(error) => {
                self.out.clear();
                self.shrink();
                if error.requires_reset() {
                    self.poisoned = true;
                }
                Err(error)
            }
        }
    }

    /// Decompresses one WebSocket message and scans a completed payload.
    ///
    /// Returns `Ok(None)` while a zlib-stream payload is incomplete.
    ///
    /// # Errors
    ///
    /// Any [`CodecError`] of decompression or of the scan; see
    /// [`CodecError::requires_reset`].
    pub fn push<'a>(
        &'a mut self,
        message: &'a [u8],
        kind: MessageKind,
    ) -> Result<Option<Payload<'a>>, CodecError> {
        match self.push_raw(message, kind)? {
            Some(json) => Payload::scan(json).map(Some),
            None => Ok(None),
        }
    }
}
