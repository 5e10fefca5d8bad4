//! Hibernation of a zlib-stream: the inflater's window saved, compressed,
//! and read back into a fresh inflater through a deflate block that
//! reproduces it.

use flate2::{Decompress, FlushDecompress};

use super::{Drive, ZLIB_SUFFIX, drive};

/// The window of a hibernating zlib-stream, zstd-compressed.
pub(super) struct SavedWindow {
    /// Exactly as long as it needs to be.
    pub(super) compressed: Box<[u8]>,
    pub(super) len: usize,
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
pub(super) fn save_window(inflater: &mut Decompress, len: usize) -> Option<Vec<u8>> {
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
pub(super) fn give_back(block: Vec<u8>) {
    SCRATCH.with(|scratch| {
        if let Ok(mut scratch) = scratch.try_borrow_mut() {
            scratch.block = block;
        }
    });
}

/// Decompresses a saved window into a fresh inflater.
pub(super) fn load_window(inflater: &mut Decompress, saved: &SavedWindow) -> Result<(), String> {
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
#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression as Level, FlushCompress};

    use super::*;
    use crate::inflate::WINDOW;

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
