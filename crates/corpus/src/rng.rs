//! The corpus's random numbers.

/// A small, fast, seedable pseudo-random generator (SplitMix64), so the
/// corpus is the same on every machine and for every build.
///
/// Its sequence is part of the corpus's contract: recorded seeds, benchmark
/// corpora and fuzz seeds depend on it, so it never changes. It is the same
/// algorithm as shardwire-heartbeat's `Jitter`, whose sequence the corpus
/// used before it had a generator of its own.
///
/// ```
/// use shardwire_corpus::Rng;
///
/// let mut rng = Rng::new(7);
/// let again = Rng::new(7).next_u64();
/// assert_eq!(rng.next_u64(), again);
/// assert!((0.0..1.0).contains(&rng.unit()));
/// assert!(rng.below(10) < 10);
/// ```
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; 0 is taken as 1).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A float in `[0, 1)`: the top 53 bits of the next value.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One element of a non-empty slice.
    ///
    /// # Panics
    ///
    /// When `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
