//! Seed derivation: independent, reproducible ChaCha streams keyed by (seed, purpose, ids).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; part of the key so that streams never collide.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// The user permutation of a training epoch.
    Permutation = 1,
    /// A user's training negatives in one epoch.
    TrainNegatives = 2,
    /// A user's fixed evaluation candidates.
    EvalCandidates = 3,
    /// The subset of evaluated users.
    EvalUsers = 4,
    /// The synthetic dataset generator.
    Synthetic = 5,
    /// The held-out items of `--cold_items`.
    ColdItems = 6,
}

/// SplitMix64's increment φ = 2⁶⁴/golden ratio (Steele et al., OOPSLA 2014).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output for state `z`: `z += φ`, then two xor-shift-multiply rounds.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ChaCha8 generator for `(seed, stream, a, b)`; the same key always gives the same stream,
/// whatever thread or rank asks for it.
pub fn rng_for(seed: u64, stream: Stream, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    let mut h = splitmix64(seed);
    for (chunk, word) in key.chunks_exact_mut(8).zip([stream as u64, a, b, 0x5A5A]) {
        h = splitmix64(h ^ word);
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}
