//! Helpers shared by the export integration tests: small random models written as run
//! directories, input batches built with `sasrec_shared::time`, and an ONNX Runtime session.
#![allow(dead_code)] // each test binary uses a subset

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor as OrtTensor;
use sasrec_export::external_data::DEFAULT_THRESHOLD;
use sasrec_export::{export, ExportOptions, Exported, Variant};
#[allow(unused_imports)] // not every test binary iterates over the kinds
pub use sasrec_models::test_util::KINDS;
use sasrec_models::test_util::{self, random_model};
use sasrec_models::{save_weights, SeqRecModel};
use sasrec_shared::config::ModelConfig;
use sasrec_shared::run::ModelSpec;
use sasrec_shared::time::{left_pad, time_codes, Intervals, TimeUnit};
use tch::{nn, Tensor};

/// Items of the export tests' small models (the rest of the size is `sasrec_models::test_util`'s).
pub const I: usize = 40;
/// Window (`maxlen`) of the small models.
pub const T: usize = test_util::T as usize;

/// The model kind `name` (one of [`KINDS`]) at the small size with [`I`] items (mHC with n = 4):
/// 2 blocks, 2 heads, dropout 0.2 (inactive in inference).
pub fn kind(name: &str) -> ModelConfig {
    test_util::small_kind(name, I)
}

/// The interval settings used for a time-aware config (personal scale for plain TiSASRec, hours
/// for TiSASRec + mHC, so both code paths of `sasrec_shared::time` are exercised).
pub fn intervals_for(cfg: &ModelConfig) -> Option<Intervals> {
    cfg.is_time_aware().then(|| Intervals {
        unit: if cfg.mhc.is_some() {
            TimeUnit::Hour
        } else {
            TimeUnit::Personal
        },
        span: cfg.time_span,
    })
}

/// `config.json` as `sasrec-train` writes it: the [`ModelSpec`] head (the serialisation export
/// reads), then fields export ignores (included, so the test shows they do not get in the way).
pub fn config_json(cfg: &ModelConfig, intervals: Option<Intervals>) -> String {
    let mut v = serde_json::to_value(ModelSpec::new(cfg.clone(), intervals)).unwrap();
    let rest = serde_json::json!({
        "optim": {"lr": 0.001, "warmup_steps": 100, "lr_decay_step": 1000,
                  "lr_decay_rate": 0.95, "l2_emb": 0.0, "batch_size": 128, "loss": "bce",
                  "num_negatives": 256},
        "dataset": "synthetic.txt",
        "seed": 42,
        "versions": {"sasrec_rs": "0.1.0", "libtorch": "2.11.0"}
    });
    v.as_object_mut()
        .unwrap()
        .extend(rest.as_object().unwrap().clone());
    serde_json::to_string_pretty(&v).unwrap()
}

/// A run directory with `config.json`, `model.safetensors` and `items.tsv`.
pub struct Run {
    pub dir: tempfile::TempDir,
    pub vs: nn::VarStore,
    pub model: SeqRecModel,
    pub cfg: ModelConfig,
    pub intervals: Option<Intervals>,
}

impl Run {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `sasrec-export --onnx` of this run: `variant` to `output` (default `model.onnx` here),
    /// with the default `--external_data_threshold`.
    pub fn export(&self, variant: Variant, output: Option<PathBuf>) -> Exported {
        self.export_with_threshold(variant, output, DEFAULT_THRESHOLD)
    }

    /// [`Run::export`] with `--external_data_threshold threshold`.
    pub fn export_with_threshold(
        &self,
        variant: Variant,
        output: Option<PathBuf>,
        threshold: u64,
    ) -> Exported {
        export(&ExportOptions {
            train_dir: self.path().to_path_buf(),
            output,
            variant,
            external_data_threshold: threshold,
        })
        .unwrap()
    }
}

/// Writes a random model of `cfg` as a run directory.
impl Run {
    /// The error of an export that must fail (default output, default threshold).
    pub fn export_err(&self, variant: Variant) -> String {
        let opts = sasrec_export::ExportOptions {
            train_dir: self.path().to_path_buf(),
            output: None,
            variant,
            external_data_threshold: sasrec_export::external_data::DEFAULT_THRESHOLD,
        };
        sasrec_export::export(&opts).unwrap_err().to_string()
    }
}

pub fn make_run(cfg: &ModelConfig, seed: i64) -> Run {
    let (vs, model) = random_model(cfg, seed);
    let dir = tempfile::tempdir().unwrap();
    let intervals = intervals_for(cfg);
    save_weights(&vs, dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), config_json(cfg, intervals)).unwrap();
    let mut items = String::from("index\traw_id\n");
    for i in 1..=cfg.num_items {
        items.push_str(&format!("{i}\titem{}\n", 1000 + i));
    }
    std::fs::write(dir.path().join("items.tsv"), items).unwrap();
    Run {
        dir,
        vs,
        model,
        cfg: cfg.clone(),
        intervals,
    }
}

pub use sasrec_testutil::Rng;

/// Model inputs for a batch of users, built the way the server will build them.
pub struct Batch {
    pub b: usize,
    /// (B, T) left-padded item indices.
    pub seq: Vec<i64>,
    /// (B, T, T) interval buckets for time-aware models.
    pub tm: Option<Vec<i64>>,
}

/// A batch whose rows have the given history lengths (0 = empty, > T = truncated to the newest
/// T). Timestamps grow by random gaps of 0..3 days (zero gaps included); the interval matrix is
/// computed with `time_codes` + `Intervals::window_matrix`, the code the server calls.
pub fn batch(
    cfg: &ModelConfig,
    intervals: Option<Intervals>,
    lens: &[usize],
    rng: &mut Rng,
) -> Batch {
    let t = cfg.maxlen;
    let mut seq = vec![0i64; lens.len() * t];
    let mut tm = intervals.map(|_| vec![0i64; lens.len() * t * t]);
    for (r, &n) in lens.iter().enumerate() {
        let items: Vec<i64> = (0..n).map(|_| rng.range(1, cfg.num_items as i64)).collect();
        left_pad(&items, 0i64, &mut seq[r * t..(r + 1) * t]);
        if let (Some(iv), Some(tm)) = (intervals, tm.as_mut()) {
            let mut ts = 978_300_000i64;
            let stamps: Vec<i64> = (0..n)
                .map(|_| {
                    ts += rng.range(0, 3 * 86_400);
                    ts
                })
                .collect();
            let mut out = vec![0i32; t * t];
            iv.window_matrix(&time_codes(iv.unit, &stamps), t, &mut out);
            for (d, s) in tm[r * t * t..(r + 1) * t * t].iter_mut().zip(&out) {
                *d = i64::from(*s);
            }
        }
    }
    Batch {
        b: lens.len(),
        seq,
        tm,
    }
}

/// `SeqRecModel::score_all` (tch) on the batch: (B, I+1) row-major.
pub fn tch_scores(m: &SeqRecModel, batch: &Batch) -> Vec<f32> {
    let t = m.config().maxlen as i64;
    let b = batch.b as i64;
    let seq = Tensor::from_slice(&batch.seq).reshape([b, t]);
    let tm = batch
        .tm
        .as_ref()
        .map(|x| Tensor::from_slice(x).reshape([b, t, t]));
    let s = m.score_all(&seq, tm.as_ref()).unwrap();
    Vec::<f32>::try_from(&s.reshape([-1])).unwrap()
}

/// An ONNX Runtime session (CPU, one intra-op thread) on `path`. The shared library comes
/// from `ORT_DYLIB_PATH`, which `.cargo/config.toml` sets.
pub fn session(path: &Path) -> Session {
    Session::builder(ort_env())
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(path)
        .unwrap()
}

/// The process-wide ONNX Runtime environment, loaded from `ORT_DYLIB_PATH`.
pub fn ort_env() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = std::env::var("ORT_DYLIB_PATH").expect(
            "ORT_DYLIB_PATH is not set (scripts/setup.sh writes it into .cargo/config.toml)",
        );
        ort::init_from(&lib)
            .unwrap_or_else(|e| panic!("loading ONNX Runtime from {lib}: {e}"))
            .build()
            .unwrap()
    })
}

/// ONNX outputs: scores (B, I+1), topk_scores (B, k), topk_items (B, k).
pub struct OnnxOut {
    pub scores: Vec<f32>,
    pub topk_scores: Vec<f32>,
    pub topk_items: Vec<i64>,
}

/// The graph inputs `seq` (B, T) and, for time-aware batches, `time_matrix` (B, T, T), named.
fn history_inputs(batch: &Batch, t: usize) -> Vec<(Cow<'static, str>, SessionInputValue<'static>)> {
    let b = batch.b;
    let seq = OrtTensor::from_array(([b, t], batch.seq.clone())).unwrap();
    let mut inputs = ort::inputs!["seq" => seq];
    if let Some(tm) = &batch.tm {
        let tm = OrtTensor::from_array(([b, t, t], tm.clone())).unwrap();
        inputs.push(("time_matrix".into(), tm.into()));
    }
    inputs
}

/// Runs the exported graph; `exclude` is (B, E) row-major.
pub fn run_onnx(s: &mut Session, batch: &Batch, exclude: &[i64], k: i64, t: usize) -> OnnxOut {
    let b = batch.b;
    let e = exclude.len() / b;
    let exc = OrtTensor::from_array(([b, e], exclude.to_vec())).unwrap();
    let kk = OrtTensor::from_array(([1usize], vec![k])).unwrap();
    let mut inputs = history_inputs(batch, t);
    inputs.extend(ort::inputs!["exclude" => exc, "k" => kk]);
    let out = s.run(inputs).unwrap();
    let f = |name: &str| {
        let (shape, data) = out[name].try_extract_tensor::<f32>().unwrap();
        (shape.to_vec(), data.to_vec())
    };
    let (shape, scores) = f("scores");
    assert_eq!(shape, [b as i64, (scores.len() / b) as i64]);
    let (kshape, topk_scores) = f("topk_scores");
    assert_eq!(kshape, [b as i64, k]);
    let (ishape, topk_items) = out["topk_items"].try_extract_tensor::<i64>().unwrap();
    assert_eq!(ishape.to_vec(), [b as i64, k]);
    OnnxOut {
        scores,
        topk_scores,
        topk_items: topk_items.to_vec(),
    }
}

/// Runs the user tower on `batch`: `user_vector` (B, d) row-major, and d.
pub fn run_user_tower(s: &mut Session, batch: &Batch, t: usize) -> (Vec<f32>, usize) {
    let out = s.run(history_inputs(batch, t)).unwrap();
    let (shape, data) = out["user_vector"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(shape.len(), 2, "user_vector shape {shape:?}");
    assert_eq!(shape[0], batch.b as i64, "user_vector shape {shape:?}");
    (data.to_vec(), shape[1] as usize)
}

/// Runs the open user tower on `batch` with `seq` replaced by `seq` (row numbers of `rows`)
/// and `item_rows` = `rows` (`[rows.len() / d, d]`): the user vectors.
pub fn run_open_user_tower(
    s: &mut Session,
    batch: &Batch,
    t: usize,
    (seq, rows, d): (&[i64], &[f32], usize),
) -> Vec<f32> {
    let renumbered = Batch {
        b: batch.b,
        seq: seq.to_vec(),
        tm: batch.tm.clone(),
    };
    let mut inputs = history_inputs(&renumbered, t);
    let table = OrtTensor::from_array(([rows.len() / d, d], rows.to_vec())).unwrap();
    inputs.push(("item_rows".into(), table.into()));
    let out = s.run(inputs).unwrap();
    let (shape, data) = out["user_vector"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(shape.to_vec(), [batch.b as i64, d as i64]);
    data.to_vec()
}

/// Runs `onnx.checker.check_model(path, full_check=True)` (the path form, which also checks
/// external data files) in the venv's Python and returns the model's header as JSON:
/// `ir_version`, `opsets`, `producer`, `metadata`, `inputs`, `outputs`, `initializers`.
pub fn python_check(path: &Path) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys, onnx
onnx.checker.check_model(sys.argv[1], full_check=True)
m = onnx.load(sys.argv[1], load_external_data=False)
dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
print(json.dumps({
    "ir_version": m.ir_version,
    "opsets": {o.domain: o.version for o in m.opset_import},
    "producer": m.producer_name,
    "metadata": {p.key: p.value for p in m.metadata_props},
    "inputs": {i.name: [i.type.tensor_type.elem_type, dims(i)] for i in m.graph.input},
    "outputs": {o.name: [o.type.tensor_type.elem_type, dims(o)] for o in m.graph.output},
    "initializers": sorted(t.name for t in m.graph.initializer),
}))
"#;
    serde_json::from_slice(&python(SCRIPT, &[path], "onnx.checker")).unwrap()
}

/// Runs `script` in the venv's Python (`SASREC_PYTHON`) with `args`; fails the test with
/// `what` and Python's stderr when it exits non-zero. Returns stdout.
pub fn python(script: &str, args: &[&Path], what: &str) -> Vec<u8> {
    let py = std::env::var("SASREC_PYTHON")
        .expect("SASREC_PYTHON is not set (scripts/setup.sh writes it into .cargo/config.toml)");
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed on {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Files in `dir` (names, sorted).
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `sasrec-export` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sasrec-export"))
}

/// The files of a [`make_run`] directory after the binary wrote `written` into it (e.g.
/// `model.onnx`), sorted as [`list`] returns them.
pub fn run_dir_files(written: &[&str]) -> Vec<String> {
    sorted(&[&["config.json", "items.tsv", "model.safetensors"], written])
}

/// The names of `groups`, sorted.
fn sorted(groups: &[&[&str]]) -> Vec<String> {
    let mut v: Vec<String> = groups.concat().iter().map(|f| f.to_string()).collect();
    v.sort();
    v
}

/// What an export with the default output adds to a run directory: the model and the two-tower
/// files (the user tower always with its external data).
pub const EXPORTED: [&str; 4] = [
    "item_vectors.safetensors",
    "model.onnx",
    "user_tower.onnx",
    "user_tower.onnx.data",
];

/// The model's external data file (`--external_data_threshold 0`).
pub const EXTERNAL: [&str; 1] = ["model.onnx.data"];

/// The files of a directory that an export to `<dir>/model.onnx` wrote into: the item map,
/// [`EXPORTED`] and `extra` (e.g. [`EXTERNAL`]), sorted as [`list`] returns them.
pub fn beside_model(extra: &[&str]) -> Vec<String> {
    sorted(&[&["items.tsv"], &EXPORTED, extra])
}

/// The binary's stderr as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the binary exited with status 0 (its stderr in the message otherwise).
pub fn assert_success(out: &std::process::Output) {
    assert!(out.status.success(), "{}", stderr(out));
}
