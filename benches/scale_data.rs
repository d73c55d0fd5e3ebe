//! The data half of `benches/scale.sh`: reads one `user item [timestamp]` file, builds the
//! leave-one-out split, then draws one epoch of 128 × `maxlen` training batches with 1 and 2
//! sampler threads. Prints one JSON object: sizes, load + index seconds, batches/s.
//!
//! Usage: `scale-data DATASET [MAXLEN]` (MAXLEN default 50).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::{Dataset, Sampler, Split};

use sasrec_benches::{sampler_config, WORKERS};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        fail("usage: scale-data DATASET [MAXLEN]");
    };
    let maxlen: usize = match args.next().map(|m| m.parse()) {
        None => 50,
        Some(Ok(m)) if m > 0 => m,
        Some(_) => fail("MAXLEN must be a positive integer"),
    };
    let started = Instant::now();
    let data = Dataset::read(&path, None).unwrap_or_else(|e| fail(e));
    let split = Split::new(Arc::new(data), DEFAULT_MIN_HOLDOUT_LEN);
    let load_seconds = started.elapsed().as_secs_f64();
    let mut batches_per_s = serde_json::Map::new();
    for workers in WORKERS {
        let sampler = Sampler::new(split.clone(), sampler_config(maxlen, workers, None))
            .unwrap_or_else(|e| fail(e));
        let t = Instant::now();
        let batches = sampler.epoch(1).count();
        let rate = batches as f64 / t.elapsed().as_secs_f64();
        batches_per_s.insert(format!("{workers}_workers"), rate.into());
    }
    let out = serde_json::json!({
        "dataset": path.display().to_string(),
        "users": split.num_users(),
        "items": split.num_items(),
        "interactions": split.data.stats().interactions,
        "load_index_seconds": load_seconds,
        "maxlen": maxlen,
        "sampler_batches_per_s": batches_per_s,
    });
    println!("{out}");
}
