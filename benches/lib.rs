//! Benchmarks for sasrec-rs; see the `[[bench]]` targets (`cargo bench -p sasrec-benches`).
