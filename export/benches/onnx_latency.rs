//! CPU latency of next-item scoring for an ML-1M-shaped SASRec (I = 3416, T = 200, C = 50,
//! 2 blocks, 1 head; random weights): ONNX Runtime on the exported last-position graph, ONNX
//! Runtime on the full-sequence graph, and tch (`SeqRecModel::score_all`), at batch 1, 8, 32.
//!
//! Every row is a full window of 200 items (the worst case); the ONNX graphs also exclude the
//! row's history and return the top 10, which tch's `score_all` does not do.
//!
//! ```text
//! nice -n 10 cargo bench -p sasrec-export --bench onnx_latency
//! SASREC_BENCH_THREADS=2 nice -n 10 cargo bench -p sasrec-export --bench onnx_latency
//! ```
//!
//! Both engines use `SASREC_BENCH_THREADS` intra-op threads (default 1). ONNX Runtime is loaded
//! from `ORT_DYLIB_PATH` (set by `.cargo/config.toml`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;
use sasrec_export::{model_bytes, Source, Variant};
use sasrec_models::SeqRecModel;
use sasrec_shared::config::ModelConfig;
use tch::{nn, Device, Kind, Tensor};

const BATCHES: [usize; 3] = [1, 8, 32];
const K: i64 = 10;

fn ml1m() -> ModelConfig {
    ModelConfig::sasrec_ml1m()
}

fn threads() -> usize {
    std::env::var("SASREC_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn session(env: &Environment, bytes: &[u8]) -> Session {
    Session::builder(env)
        .expect("session builder")
        .with_intra_threads(threads())
        .unwrap_or_else(|e| panic!("intra threads: {e}"))
        .commit_from_memory(bytes)
        .expect("ONNX Runtime loads the exported model")
}

fn bench(c: &mut Criterion) {
    let lib = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH (set by .cargo/config.toml)");
    let env = ort::init_from(&lib)
        .unwrap_or_else(|e| panic!("loading ONNX Runtime from {lib}: {e}"))
        .build()
        .expect("ONNX Runtime environment");
    tch::set_num_threads(threads() as i32);
    tch::manual_seed(0);
    let cfg = ml1m();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SeqRecModel::new(&vs.root(), &cfg).expect("valid config");
    let source = Source {
        sha256: "random".into(),
        intervals: None,
        item_tower: false,
    };
    let last = model_bytes(&model, &source, Variant::LastPosition).expect("export");
    let full = model_bytes(&model, &source, Variant::FullSequence).expect("export");
    let mut s_last = session(&env, &last);
    let mut s_full = session(&env, &full);

    let t = cfg.maxlen;
    let mut group = c.benchmark_group(format!("ml1m_sasrec_threads{}", threads()));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for &b in &BATCHES {
        let seq_t = Tensor::randint_low(
            1,
            cfg.num_items as i64 + 1,
            [b as i64, t as i64],
            (Kind::Int64, Device::Cpu),
        );
        let seq: Vec<i64> = Vec::try_from(&seq_t.reshape([-1])).expect("int64 data");
        let run_ort = |s: &mut Session| {
            let inputs = ort::inputs![
                "seq" => OrtTensor::from_array(([b, t], seq.clone())).expect("seq"),
                "exclude" => OrtTensor::from_array(([b, t], seq.clone())).expect("exclude"),
                "k" => OrtTensor::from_array(([1usize], vec![K])).expect("k"),
            ];
            let out = s.run(inputs).expect("run");
            let (_, items) = out["topk_items"]
                .try_extract_tensor::<i64>()
                .expect("items");
            std::hint::black_box(items[0]);
        };
        group.bench_with_input(BenchmarkId::new("ort_last_position", b), &b, |bench, _| {
            bench.iter(|| run_ort(&mut s_last))
        });
        group.bench_with_input(BenchmarkId::new("ort_full_sequence", b), &b, |bench, _| {
            bench.iter(|| run_ort(&mut s_full))
        });
        group.bench_with_input(BenchmarkId::new("tch_score_all", b), &b, |bench, _| {
            bench.iter(|| {
                let s = model.score_all(&seq_t, None).expect("score_all");
                std::hint::black_box(s.double_value(&[0, 1]));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
