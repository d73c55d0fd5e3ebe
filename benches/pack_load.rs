//! The data-loading half of `benches/scale.sh AXIS=pack`: one rank's view of a dataset, as a
//! training rank holds it. Reads DATASET (a text file or a data pack), builds the split and a
//! rank's sampler (`RANK` of `WORLD`), draws its first batch and touches every interaction;
//! then waits at a file barrier in DIR until all WORLD processes have loaded, reads its own
//! `/proc/self/smaps_rollup` (RSS, and PSS: shared pages divided among the processes that map
//! them), and waits again until every process has measured. Prints one JSON object.
//!
//! Usage: `pack-load DATASET DIR RANK WORLD`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sasrec_shared::sampler::SamplerConfig;
use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::{Dataset, Sampler, Split};

use sasrec_benches::sampler_config;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

/// Writes `DIR/<stage>.<rank>` and waits until WORLD such files exist.
fn barrier(dir: &Path, stage: &str, rank: usize, world: usize) {
    std::fs::write(dir.join(format!("{stage}.{rank}")), b"").unwrap_or_else(|e| fail(e));
    let count = || {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{stage}."))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    while count() < world {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (RSS, PSS) in MiB from `/proc/self/smaps_rollup`.
fn rss_pss() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("Rss:"), field("Pss:"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, dir, rank, world] = args.as_slice() else {
        fail("usage: pack-load DATASET DIR RANK WORLD");
    };
    let (path, dir) = (PathBuf::from(path), PathBuf::from(dir));
    let rank: usize = rank
        .parse()
        .unwrap_or_else(|_| fail("RANK must be a number"));
    let world: usize = world
        .parse()
        .unwrap_or_else(|_| fail("WORLD must be a number"));
    let started = Instant::now();
    let data = Dataset::read(&path, None).unwrap_or_else(|e| fail(e));
    let split = Split::new(Arc::new(data), DEFAULT_MIN_HOLDOUT_LEN);
    let cfg = SamplerConfig {
        rank,
        world_size: world,
        ..sampler_config(50, 1, None)
    };
    let sampler = Sampler::new(split.clone(), cfg).unwrap_or_else(|e| fail(e));
    let first = sampler.epoch(1).next().map_or(0, |b| b.rows());
    let load_seconds = started.elapsed().as_secs_f64();
    // Every interaction read once, as an epoch of training does.
    let checksum: u64 = split
        .data
        .sequences
        .values()
        .iter()
        .map(|&i| i as u64)
        .sum();
    barrier(&dir, "loaded", rank, world);
    std::thread::sleep(Duration::from_millis(300));
    let (rss, pss) = rss_pss();
    barrier(&dir, "measured", rank, world);
    let out = serde_json::json!({
        "dataset": path.display().to_string(),
        "rank": rank,
        "world": world,
        "users": split.num_users(),
        "interactions": split.data.sequences.values().len(),
        "mapped": split.data.sequences.is_mapped(),
        "load_seconds": load_seconds,
        "rss_mb": rss,
        "pss_mb": pss,
        "first_batch_rows": first,
        "checksum": checksum,
    });
    println!("{out}");
}
