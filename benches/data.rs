//! Data-layer benchmarks: loading + indexing ML-1M (1M lines) and sampler throughput for
//! 128×200 batches with 1 and 2 worker threads.
//!
//! `cargo bench -p sasrec-benches --bench data`. Needs ../shared/data (or `SASREC_DATA`).
//! The sampler groups report batches/s, to compare with the rate the training loop consumes
//! (docs/RESULTS.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::time::{Intervals, TimeUnit};
use sasrec_shared::{Dataset, KCore, Sampler, Split};

use sasrec_benches::{sampler_config, WORKERS};

fn data(rel: &str) -> PathBuf {
    let root = std::env::var("SASREC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    root.join(rel)
}

fn load(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let path = data("ml-1m/ml-1m.sasrec.txt.gz");
    g.throughput(Throughput::Elements(999_611));
    g.bench_function("ml-1m.sasrec.txt.gz (gzip, 1M lines)", |b| {
        b.iter(|| Dataset::read(&path, None).unwrap())
    });
    let tis = data("ml-1m/ml-1m.tisasrec_u1-2999.txt.gz");
    g.throughput(Throughput::Elements(487_650));
    g.bench_function("ml-1m.tisasrec (4 cols, sort, 5-filter)", |b| {
        b.iter(|| {
            Dataset::read(
                &tis,
                Some(KCore {
                    min_user: 5,
                    min_item: 5,
                    iterative: false,
                }),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn sampler(c: &mut Criterion) {
    let split = Split::new(
        Arc::new(Dataset::read(&data("ml-1m/ml-1m.sasrec.txt.gz"), None).unwrap()),
        DEFAULT_MIN_HOLDOUT_LEN,
    );
    let timed = Split::new(
        Arc::new(Dataset::read(&data("ml-1m/ml-1m.tisasrec_u1-2999.txt.gz"), None).unwrap()),
        DEFAULT_MIN_HOLDOUT_LEN,
    );
    let mut g = c.benchmark_group("sampler");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let cases = [
        ("sasrec 128x200", &split, 200, None),
        (
            "tisasrec 128x50 (+50x50 intervals)",
            &timed,
            50,
            Some(Intervals {
                unit: TimeUnit::Personal,
                span: 256,
            }),
        ),
    ];
    for (name, split, maxlen, intervals) in cases {
        for workers in WORKERS {
            let s =
                Sampler::new(split.clone(), sampler_config(maxlen, workers, intervals)).unwrap();
            g.throughput(Throughput::Elements(s.num_batches() as u64));
            g.bench_function(format!("{name}, {workers} worker(s), one epoch"), |b| {
                let mut epoch = 0;
                b.iter(|| {
                    epoch += 1;
                    s.epoch(epoch).map(|b| b.rows()).sum::<usize>()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, load, sampler);
criterion_main!(benches);
