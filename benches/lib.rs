//! Benchmarks for sasrec-rs; see the `[[bench]]` targets (`cargo bench -p sasrec-benches`).
//! The library holds what the data benchmarks share.

use sasrec_shared::time::Intervals;
use sasrec_shared::SamplerConfig;

/// Rows per training batch in the sampler benchmarks (the reference's batch size).
pub const BATCH_SIZE: usize = 128;

/// The sampler thread counts the benchmarks compare.
pub const WORKERS: [usize; 2] = [1, 2];

/// The sampler settings the data benchmarks time: [`BATCH_SIZE`] rows of `maxlen` items,
/// seed 1, a single rank, `num_workers` threads and `intervals` for time-aware batches.
pub fn sampler_config(
    maxlen: usize,
    num_workers: usize,
    intervals: Option<Intervals>,
) -> SamplerConfig {
    SamplerConfig {
        batch_size: BATCH_SIZE,
        maxlen,
        seed: 1,
        num_workers,
        rank: 0,
        world_size: 1,
        intervals,
    }
}
