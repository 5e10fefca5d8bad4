use crate::Compression;

/// Everything that can go wrong while decoding gateway bytes or encoding a
/// command.
///
/// Each variant is one failure. [`CodecError::requires_reset`] tells whether the
/// [`Decoder`](crate::Decoder) that returned it can keep decoding the same
/// connection, or whether its compression context is lost: then the connection
/// must be closed and the decoder [reset](crate::Decoder::reset) before the next
/// one (a resume keeps the session, so no event is lost).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The compressed bytes could not be decompressed.
    #[error("corrupt {compression} data: {detail}")]
    CorruptStream {
        /// The compression in use when the corruption was found.
        compression: Compression,
        /// What the decompressor reported.
        detail: String,
    },
    /// One payload decompressed to more than the configured limit. Decoding
    /// stopped at the limit, so memory did not grow past it.
    #[error("payload exceeds the decompression limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes of decompressed payload.
        limit: usize,
        /// Whether the stream's context had to be abandoned mid-payload.
        reset_required: bool,
    },
    /// The payload is not valid UTF-8.
    #[error("payload is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    InvalidUtf8 {
        /// How many leading bytes were valid.
        valid_up_to: usize,
    },
    /// The payload is not a valid JSON object.
    #[error("payload is not valid JSON: {detail}")]
    InvalidJson {
        /// What the parser reported.
        detail: String,
    },
    /// The payload is a JSON object without an integer `op` field.
    #[error("payload has no integer `op` field")]
    MissingOp,
    /// An outgoing command encodes to more bytes than the gateway accepts. It
    /// was not sent: the gateway would have closed the connection with 4002.
    #[error(
        "command encodes to {size} bytes, over the gateway's {limit}-byte limit; it was not sent"
    )]
    CommandTooLarge {
        /// The encoded size.
        size: usize,
        /// The gateway's limit, [`MAX_COMMAND_SIZE`](crate::MAX_COMMAND_SIZE).
        limit: usize,
    },
    /// An outgoing command has a field the gateway would reject.
    #[error("invalid command: {reason}")]
    InvalidCommand {
        /// Which field is wrong and why.
        reason: String,
    },
}

impl CodecError {
    /// Whether the decoder's compression context is lost.
    ///
    /// `true` means: stop reading this connection, close it with a resumable
    /// code, [`reset`](crate::Decoder::reset) the decoder and reconnect.
    /// `false` means: this one message was bad, the next one can be decoded.
    #[must_use]
    pub fn requires_reset(&self) -> bool {
        match self {
            // With payload compression every message is a stream of its own,
            // so one corrupt message does not affect the next.
            Self::CorruptStream { compression, .. } => *compression != Compression::None,
            Self::PayloadTooLarge { reset_required, .. } => *reset_required,
            Self::InvalidUtf8 { .. }
            | Self::InvalidJson { .. }
            | Self::MissingOp
            | Self::CommandTooLarge { .. }
            | Self::InvalidCommand { .. } => false,
        }
    }
}
