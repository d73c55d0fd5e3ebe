//! Test helpers shared by the workspace's tests (a dev-dependency of each crate that uses
//! them): [`Rng`], a small seeded generator; [`fuzz`], the fuzz harness of the fuzz targets;
//! [`readme`], the README's flag tables against a binary's `--help`.

pub mod fuzz;
pub mod readme;

/// SplitMix64 (Steele et al., OOPSLA 2014): small, seedable, the same on every platform, so
/// generated inputs do not depend on test order. Its mixing step is
/// [`sasrec_shared::rng::splitmix64`].
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits: `mix(s += φ)` with φ = 0x9E3779B97F4A7C15.
    pub fn next(&mut self) -> u64 {
        let out = sasrec_shared::rng::splitmix64(self.0);
        self.0 = self.0.wrapping_add(sasrec_shared::rng::GOLDEN_GAMMA);
        out
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}
