//! The decompressors behind [`Decoder`](crate::Decoder), one per transport.
//!
//! Each one appends a payload's decompressed bytes to a caller-owned `Vec`
//! and never lets it grow past `limit + 1` bytes: one byte over the limit is
//! how a too-large payload is detected without decompressing the rest.

use flate2::{Decompress, FlushDecompress, Status};

use crate::{CodecError, Compression};

/// The four bytes of an empty stored deflate block that end every payload of a
/// zlib-stream connection (a `Z_SYNC_FLUSH`).
pub(crate) const ZLIB_SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How much output space to add when the buffer is full. Doubling from here
/// keeps the number of reallocations logarithmic in the payload size.
const MIN_GROW: usize = 16 * 1024;

/// Makes room for more output, never beyond `limit + 1` bytes in total.
/// Returns `false` when the buffer already holds more than `limit` bytes.
fn grow(out: &mut Vec<u8>, limit: usize) -> bool {
    let hard_cap = limit.saturating_add(1);
    if out.len() >= hard_cap {
        return false;
    }
    let spare = out.capacity() - out.len();
    if spare == 0 {
        let want = out.capacity().max(MIN_GROW);
        out.reserve_exact(want.min(hard_cap - out.len()));
    }
    true
}

fn too_large(limit: usize, reset_required: bool) -> CodecError {
    CodecError::PayloadTooLarge {
        limit,
        reset_required,
    }
}

/// How a run of the inflater over some input ended.
enum Drive {
    /// All input was taken and the inflater has no more output for it.
    NeedsInput,
    /// The deflate stream ended, with this many input bytes after its end.
    Ended { trailing: usize },
    /// Input was left, there was room to write, and nothing moved.
    Stuck,
}

/// Runs `inflater` over `input`, appending to `out`, which never holds more
/// than `limit + 1` bytes.
///
/// # Errors
///
/// `Err(None)` when the output passed `limit`; `Err(Some(detail))` when the
/// inflater reported corrupt data.
fn drive(
    inflater: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    flush: FlushDecompress,
) -> Result<Drive, Option<String>> {
    loop {
        if out.len() == out.capacity() && !grow(out, limit) {
            return Err(None);
        }
        let before_in = inflater.total_in();
        let before_out = out.len();
        let status = inflater
            .decompress_vec(input, out, flush)
            .map_err(|error| Some(error.to_string()))?;
        let consumed = (inflater.total_in() - before_in) as usize;
        input = &input[consumed..];
        if out.len() > limit {
            return Err(None);
        }
        if status == Status::StreamEnd {
            return Ok(Drive::Ended {
                trailing: input.len(),
            });
        }
        let out_full = out.len() == out.capacity();
        if input.is_empty() && !out_full {
            return Ok(Drive::NeedsInput);
        }
        if consumed == 0 && out.len() == before_out && !out_full {
            return Ok(Drive::Stuck);
        }
    }
}

/// The deflate window: how far back a zlib-stream payload may refer.
const WINDOW: usize = 32 * 1024;

/// zlib-stream: one inflate context for the whole connection, fed piece by
/// piece. A payload is complete when the bytes received since the previous
/// payload end with [`ZLIB_SUFFIX`]; that is checked on the accumulated bytes,
/// so a last piece of one to three bytes completes the payload too.
///
/// The two-byte zlib header is checked here and the rest inflated raw: the
/// stream never ends, so its Adler-32 trailer never comes, and computing the
/// checksum over every byte would be work for nothing.
///
/// Between payloads the context can [hibernate](Self::hibernate): the inflate
/// state (about 47 KiB with zlib-rs) is freed and only the window it needs,
/// compressed, is kept. The next push wakes it transparently.
pub(crate) struct ZlibStream {
    /// `None` while hibernating.
    inflater: Option<Decompress>,
    /// How many bytes of the zlib header were read (it has two).
    header_seen: u8,
    cmf: u8,
    /// The last (up to) four compressed bytes of the current payload, oldest
    /// first, and how many of them are real.
    tail: [u8; 4],
    tail_len: u8,
    /// Bytes decompressed on this connection (the window holds at most the
    /// last [`WINDOW`] of them).
    produced: u64,
    /// The first two bytes produced: a window that short cannot be read back
    /// with a back-reference (those copy three bytes at least).
    first: [u8; 2],
    /// While hibernating: the window, compressed.
    saved: Option<SavedWindow>,
}

/// The window of a hibernating zlib-stream, zstd-compressed.
struct SavedWindow {
    /// Exactly as long as it needs to be.
    compressed: Box<[u8]>,
    len: usize,
}

impl ZlibStream {
    pub(crate) fn new() -> Self {
        Self {
            inflater: Some(Decompress::new(false)),
            header_seen: 0,
            cmf: 0,
            tail: [0; 4],
            tail_len: 0,
            produced: 0,
            first: [0; 2],
            saved: None,
        }
    }

    pub(crate) fn reset(&mut self) {
        match &mut self.inflater {
            Some(inflater) => inflater.reset(false),
            None => self.inflater = Some(Decompress::new(false)),
        }
        self.header_seen = 0;
        self.tail_len = 0;
        self.produced = 0;
        self.saved = None;
    }

    /// Whether the inflate state is freed until the next payload.
    pub(crate) fn is_hibernating(&self) -> bool {
        self.inflater.is_none()
    }

    /// Frees the inflate state between payloads, keeping only the window the
    /// next payload may refer to, compressed. Returns whether the stream is
    /// now hibernating; it stays awake mid-payload, and when the window
    /// cannot be saved (no memory for a zstd context).
    pub(crate) fn hibernate(&mut self) -> bool {
        // Mid-payload (or mid-header) the inflater holds more than a window.
        if self.tail_len != 0 {
            return false;
        }
        let Some(inflater) = &mut self.inflater else {
            return true;
        };
        let len = usize::try_from(self.produced).map_or(WINDOW, |n| n.min(WINDOW));
        let saved = match len {
            0 => SavedWindow {
                compressed: Box::default(),
                len: 0,
            },
            // Kept as it is: too short to read back or to compress.
            1 | 2 => SavedWindow {
                compressed: self.first[..len].into(),
                len,
            },
            // If the window cannot be saved, reading it left the inflater
            // as it was (see `read_window`), so it simply stays awake.
            _ => match save_window(inflater, len) {
                Some(packed) => {
                    // Free the inflater first: the allocator can then put
                    // the (much smaller) saved window where it was.
                    self.inflater = None;
                    let compressed = packed.as_slice().into();
                    give_back(packed);
                    SavedWindow { compressed, len }
                }
                None => return false,
            },
        };
        self.inflater = None;
        self.saved = Some(saved);
        true
    }

    /// Makes a fresh inflater whose window is the saved one.
    fn wake(&mut self) -> Result<&mut Decompress, String> {
        let saved = self.saved.take();
        let inflater = self.inflater.insert(Decompress::new(false));
        if let Some(saved) = saved.filter(|saved| saved.len > 0) {
            load_window(inflater, &saved)?;
        }
        Ok(inflater)
    }

    /// Reads the zlib header off the front of `input`; returns the rest.
    fn take_header<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], String> {
        while self.header_seen < 2 {
            let Some((&byte, rest)) = input.split_first() else {
                break;
            };
            input = rest;
            if self.header_seen == 0 {
                if byte & 0x0f != 8 || byte >> 4 > 7 {
                    return Err(format!(
                        "not a zlib header: the first byte is {byte:#04x}, not deflate"
                    ));
                }
                self.cmf = byte;
            } else {
                if (u16::from(self.cmf) << 8 | u16::from(byte)) % 31 != 0 {
                    return Err("not a zlib header: its check bits are wrong".into());
                }
                if byte & 0x20 != 0 {
                    return Err("the zlib header asks for a preset dictionary".into());
                }
            }
            self.header_seen += 1;
        }
        Ok(input)
    }

    /// Remembers the last four bytes seen of the current payload.
    fn track_tail(&mut self, piece: &[u8]) {
        if piece.len() >= 4 {
            self.tail.copy_from_slice(&piece[piece.len() - 4..]);
            self.tail_len = 4;
        } else {
            for &byte in piece {
                self.tail.copy_within(1.., 0);
                self.tail[3] = byte;
            }
            self.tail_len = (self.tail_len + piece.len() as u8).min(4);
        }
    }

    /// Inflates one WebSocket message into `out`. Returns whether the payload
    /// is now complete.
    pub(crate) fn push(
        &mut self,
        piece: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, CodecError> {
        let corrupt = |detail: String| CodecError::CorruptStream {
            compression: Compression::ZlibStream,
            detail,
        };
        self.track_tail(piece);
        let input = self.take_header(piece).map_err(corrupt)?;
        let inflater = match &mut self.inflater {
            Some(inflater) => inflater,
            None => self.wake().map_err(corrupt)?,
        };
        let before = out.len();
        let driven = drive(inflater, input, out, limit, FlushDecompress::Sync);
        if self.produced < 2 {
            for (slot, &byte) in self.first[self.produced as usize..]
                .iter_mut()
                .zip(&out[before..])
            {
                *slot = byte;
            }
        }
        self.produced += (out.len() - before) as u64;
        match driven {
            Ok(Drive::NeedsInput) => {}
            // Discord never ends the deflate stream; bytes after its end
            // cannot be decoded with this context.
            Ok(Drive::Ended { .. }) => {
                return Err(corrupt(
                    "the deflate stream ended; zlib-stream never ends".into(),
                ));
            }
            // Dropping the rest would lose data silently: the stream is
            // unusable.
            Ok(Drive::Stuck) => {
                return Err(corrupt(
                    "the inflater made no progress on the remaining input".into(),
                ));
            }
            Err(None) => return Err(too_large(limit, true)),
            Err(Some(detail)) => return Err(corrupt(detail)),
        }
        let complete = self.tail_len == 4 && self.tail == ZLIB_SUFFIX;
        if complete {
            self.tail_len = 0;
        }
        Ok(complete)
    }
}

/// Buffers and zstd contexts reused by every hibernation and wake on one
/// thread, so that either allocates only what it keeps.
#[derive(Default)]
struct Scratch {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// The window, plain.
    window: Vec<u8>,
    /// A deflate block around the window, or the compressed window.
    block: Vec<u8>,
    /// Inflater output that is only checked.
    out: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The last `len` bytes the inflater produced, zstd-compressed, in a scratch
/// buffer to [`give_back`]. `None` when they could not be read or compressed
/// (no memory for a context).
fn save_window(inflater: &mut Decompress, len: usize) -> Option<Vec<u8>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().ok()?;
        let Scratch {
            compressor,
            window,
            block,
            ..
        } = &mut *scratch;
        read_window(inflater, len, block, window)?;
        let compressor = match compressor {
            Some(compressor) => compressor,
            None => compressor.insert(zstd::bulk::Compressor::new(1).ok()?),
        };
        block.clear();
        block.reserve(zstd::compress_bound(len));
        compressor.compress_to_buffer(&window[..], block).ok()?;
        Some(std::mem::take(block))
    })
}

/// Returns the scratch buffer [`save_window`] lent.
fn give_back(block: Vec<u8>) {
    SCRATCH.with(|scratch| {
        if let Ok(mut scratch) = scratch.try_borrow_mut() {
            scratch.block = block;
        }
    });
}

/// Decompresses a saved window into a fresh inflater.
fn load_window(inflater: &mut Decompress, saved: &SavedWindow) -> Result<(), String> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch
            .try_borrow_mut()
            .map_err(|_| "the window scratch space is in use".to_owned())?;
        let Scratch {
            decompressor,
            window,
            block,
            out,
            ..
        } = &mut *scratch;
        let decompressor = match decompressor {
            Some(decompressor) => decompressor,
            None => decompressor.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|error| format!("no zstd context for the window: {error}"))?,
            ),
        };
        window.clear();
        if saved.len < 3 {
            // Kept uncompressed (see `ZlibStream::hibernate`).
            window.extend_from_slice(&saved.compressed);
        } else {
            window.reserve(saved.len);
            decompressor
                .decompress_to_buffer(&saved.compressed[..], window)
                .map_err(|error| format!("the saved window did not decompress: {error}"))?;
        }
        if window.len() != saved.len {
            return Err("the saved window came back short".into());
        }
        prime(inflater, window, block, out)
    })
}

/// Deflate bits, least significant first, appended to a buffer.
struct BitWriter<'a> {
    bytes: &'a mut Vec<u8>,
    bits: u32,
    count: u32,
}

impl BitWriter<'_> {
    fn put(&mut self, value: u32, count: u32) {
        self.bits |= value << self.count;
        self.count += count;
        while self.count >= 8 {
            self.bytes.push(self.bits as u8);
            self.bits >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code: deflate sends those most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    /// A literal/length symbol of the fixed Huffman code (RFC 1951, 3.2.6).
    fn fixed_symbol(&mut self, symbol: u32) {
        match symbol {
            0..=143 => self.code(0x30 + symbol, 8),
            144..=255 => self.code(0x190 + symbol - 144, 9),
            256..=279 => self.code(symbol - 256, 7),
            _ => self.code(0xc0 + symbol - 280, 8),
        }
    }

    /// An empty stored block: the stream is byte-aligned after it, between
    /// blocks, as a `Z_SYNC_FLUSH` leaves it.
    fn sync(mut self) {
        self.put(0, 3);
        if self.count > 0 {
            self.put(0, 8 - self.count);
        }
        self.bytes.extend_from_slice(&ZLIB_SUFFIX);
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The table entry for `value`: the last base not above it.
fn bucket(bases: &[u16], value: usize) -> usize {
    bases
        .iter()
        .rposition(|&base| usize::from(base) <= value)
        .unwrap_or(0)
}

/// Writes into `block` (cleared first) a deflate block that copies the last
/// `len` bytes of the window (3 to 32,768), then an empty stored block:
/// inflating it outputs the window.
fn window_copy_block(len: usize, block: &mut Vec<u8>) {
    block.clear();
    let mut bits = BitWriter {
        bytes: block,
        bits: 0,
        count: 0,
    };
    // Not the last block; fixed Huffman codes.
    bits.put(0, 1);
    bits.put(1, 2);
    let distance = bucket(&DISTANCE_BASE, len);
    let mut remaining = len;
    while remaining > 0 {
        // Copies are 3 to 258 bytes; never leave one or two over.
        let take = match remaining {
            0..=258 => remaining,
            259..=260 => remaining - 3,
            _ => 258,
        };
        let length = bucket(&LENGTH_BASE, take);
        bits.fixed_symbol(257 + length as u32);
        bits.put(
            (take - usize::from(LENGTH_BASE[length])) as u32,
            u32::from(LENGTH_EXTRA[length]),
        );
        bits.code(distance as u32, 5);
        bits.put(
            (len - usize::from(DISTANCE_BASE[distance])) as u32,
            u32::from(DISTANCE_EXTRA[distance]),
        );
        remaining -= take;
    }
    // End of block.
    bits.fixed_symbol(256);
    bits.sync();
}

/// Reads into `window` the last `len` bytes the inflater produced, by
/// inflating a block (built in `block`) that copies them. The inflater stays
/// usable: the copy re-appends bytes already at the same distances, so every
/// later reference resolves to the same bytes.
fn read_window(
    inflater: &mut Decompress,
    len: usize,
    block: &mut Vec<u8>,
    window: &mut Vec<u8>,
) -> Option<()> {
    window_copy_block(len, block);
    window.clear();
    window.reserve(len + 1);
    match drive(inflater, block, window, len, FlushDecompress::Sync) {
        Ok(Drive::NeedsInput) if window.len() == len => Some(()),
        _ => None,
    }
}

/// Loads `window` into a fresh raw inflater: one stored block holding it,
/// whose output is thrown away.
fn prime(
    inflater: &mut Decompress,
    window: &[u8],
    block: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let len = u16::try_from(window.len()).map_err(|_| "the saved window is too long")?;
    block.clear();
    // Not the last block, stored: three header bits, padded to a byte.
    block.push(0);
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(&(!len).to_le_bytes());
    block.extend_from_slice(window);
    out.clear();
    out.reserve(window.len() + 1);
    match drive(inflater, block, out, window.len(), FlushDecompress::Sync) {
        Ok(Drive::NeedsInput) if out[..] == *window => Ok(()),
        _ => Err("the saved window did not load".into()),
    }
}

/// zstd-stream: one decompression context for the whole connection. Every
/// message is one payload, but the frame never ends, so each message is
/// decompressed until the context has consumed all of it and holds no more
/// output.
pub(crate) struct ZstdStream {
    context: zstd::stream::raw::Decoder<'static>,
}

impl ZstdStream {
    pub(crate) fn new() -> Result<Self, CodecError> {
        let context = zstd::stream::raw::Decoder::new().map_err(|error| zstd_error(&error))?;
        Ok(Self { context })
    }

    pub(crate) fn reset(&mut self) -> Result<(), CodecError> {
        use zstd::stream::raw::Operation;
        self.context.reinit().map_err(|error| zstd_error(&error))
    }

    pub(crate) fn push(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), CodecError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(message);
        loop {
            if out.len() == out.capacity() && !grow(out, limit) {
                return Err(too_large(limit, true));
            }
            let start = out.len();
            let consumed_before = input.pos();
            let mut output = OutBuffer::around_pos(out, start);
            self.context
                .run(&mut input, &mut output)
                .map_err(|error| zstd_error(&error))?;
            let written = output.pos();
            // `OutBuffer` on a `Vec` sets its length to the bytes written.
            debug_assert_eq!(written, out.len());
            if out.len() > limit {
                return Err(too_large(limit, true));
            }
            // Done when all input is consumed and the last call left output
            // space unused: the context has nothing more buffered.
            let out_full = out.len() == out.capacity();
            if input.pos() == message.len() && !out_full {
                return Ok(());
            }
            if input.pos() == consumed_before && written == start && !out_full {
                return Err(CodecError::CorruptStream {
                    compression: Compression::ZstdStream,
                    detail: "the decompressor made no progress on the remaining input".into(),
                });
            }
        }
    }
}

fn zstd_error(error: &std::io::Error) -> CodecError {
    CodecError::CorruptStream {
        compression: Compression::ZstdStream,
        detail: error.to_string(),
    }
}

/// Payload compression: one binary message is one whole zlib stream.
///
/// Decoded with zlib-rs (through flate2), one context reset per message and
/// the decoder's output buffer reused. zune-inflate was the first choice; it
/// measured slower and cannot reuse buffers (see the README).
pub(crate) struct ZlibPayload {
    inflater: Decompress,
}

impl ZlibPayload {
    pub(crate) fn new() -> Self {
        Self {
            inflater: Decompress::new(true),
        }
    }

    pub(crate) fn push(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), CodecError> {
        let corrupt = |detail: String| CodecError::CorruptStream {
            compression: Compression::None,
            detail: format!("zlib payload: {detail}"),
        };
        self.inflater.reset(true);
        match drive(
            &mut self.inflater,
            message,
            out,
            limit,
            FlushDecompress::Finish,
        ) {
            Ok(Drive::Ended { trailing: 0 }) => Ok(()),
            Ok(Drive::Ended { trailing }) => Err(corrupt(format!(
                "{trailing} bytes after the end of the stream"
            ))),
            Ok(Drive::NeedsInput | Drive::Stuck) => Err(corrupt("the stream is truncated".into())),
            Err(None) => Err(too_large(limit, false)),
            Err(Some(detail)) => Err(corrupt(detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression as Level, FlushCompress};

    use super::*;

    /// Raw deflate of `data`, sync-flushed, as zlib-stream sends it.
    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new(Level::new(6), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        compress
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }

    fn data(len: usize) -> Vec<u8> {
        // Text with repeats and noise, like JSON.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 5 == 0 {
                    b'a' + (state % 26) as u8
                } else {
                    b"{\"id\":\"12\"}"[i % 11]
                }
            })
            .collect()
    }

    /// Inflates all of `input`, which must need no more.
    fn inflate_all(inflater: &mut Decompress, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let driven = drive(
            inflater,
            input,
            &mut out,
            usize::MAX - 1,
            FlushDecompress::Sync,
        );
        assert!(matches!(driven, Ok(Drive::NeedsInput)));
        out
    }

    #[test]
    fn the_window_reads_back_at_every_length() {
        let data = data(40_000);
        let compressed = deflate(&data);
        let lengths = (3..=600).chain([1_000, 4_097, 16_385, 32_767, 32_768]);
        for len in lengths {
            let mut inflater = Decompress::new(false);
            assert_eq!(inflate_all(&mut inflater, &compressed), data);
            let (mut block, mut window) = (Vec::new(), Vec::new());
            read_window(&mut inflater, len, &mut block, &mut window).expect("the window");
            assert_eq!(window, data[data.len() - len..], "length {len}");
        }
    }

    #[test]
    fn a_primed_inflater_continues_the_stream() {
        let first = data(50_000);
        let second = data(20_000);
        let mut compress = Compress::new(Level::new(6), false);
        let mut one = Vec::with_capacity(60_000);
        compress
            .compress_vec(&first, &mut one, FlushCompress::Sync)
            .unwrap();
        let mut two = Vec::with_capacity(30_000);
        compress
            .compress_vec(&second, &mut two, FlushCompress::Sync)
            .unwrap();
        let mut fresh = Decompress::new(false);
        let (mut block, mut scratch) = (Vec::new(), Vec::new());
        prime(
            &mut fresh,
            &first[first.len() - WINDOW..],
            &mut block,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(inflate_all(&mut fresh, &two), second);
    }
}
