//! Reading a training run directory and writing the exported model beside or elsewhere.
//!
//! The run directory (`sasrec-train --train_dir`, README "Training") holds `config.json` (the
//! resolved `RunConfig`; only `kind`, `model` and `intervals` are read here, other fields are
//! ignored), `model.safetensors` (reference tensor names) and `items.tsv` (index ↔ raw id).
//! Everything is read and checked before anything is written, and each output is written
//! atomically (temporary file, then rename): a failed export leaves no file behind.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tch::{nn, Device};

use sasrec_models::SeqRecModel;
use sasrec_shared::config::ModelConfig;
use sasrec_shared::time::Intervals;

use crate::error::{Error, Result};
use crate::graph::{self, Source, Variant};

/// File names inside a run directory (as `sasrec-train` writes them).
pub mod files {
    /// Resolved hyper-parameters.
    pub const CONFIG: &str = "config.json";
    /// Best weights, reference tensor names.
    pub const MODEL: &str = "model.safetensors";
    /// Item index ↔ raw item id.
    pub const ITEMS: &str = "items.tsv";
    /// Default name of the exported model.
    pub const ONNX: &str = "model.onnx";
}

/// The part of `config.json` that export needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunInfo {
    /// Model kind name (`sasrec`, `tisasrec`, `sasrec-mhc`, `tisasrec-mhc`).
    pub kind: String,
    /// The network.
    pub model: ModelConfig,
    /// TiSASRec interval settings; required for time-aware models.
    #[serde(default)]
    pub intervals: Option<Intervals>,
}

impl RunInfo {
    /// Reads and validates `config.json` at `path`: the model config must be valid, `kind`
    /// must name it, and a time-aware model needs `intervals` with `span == time_span`.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let info: RunInfo = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a sasrec-train config.json: {e}")))?;
        info.model
            .validate()
            .map_err(|e| bad(format!("invalid model config: {e}")))?;
        if info.kind != info.model.kind_name() {
            return Err(bad(format!(
                "`kind` is `{}` but the model config describes `{}`",
                info.kind,
                info.model.kind_name()
            )));
        }
        if info.model.is_time_aware() {
            match &info.intervals {
                None => {
                    return Err(bad(format!(
                        "`{}` is time-aware but `intervals` (time unit and span) is missing",
                        info.kind
                    )))
                }
                Some(iv) if iv.span != info.model.time_span => {
                    return Err(bad(format!(
                        "`intervals.span` {} differs from `model.time_span` {}",
                        iv.span, info.model.time_span
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(info)
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A model loaded from a run directory, ready to be recorded.
#[derive(Debug)]
pub struct LoadedRun {
    /// The variables (CPU); kept alive because the model's parameters live in it.
    pub vs: nn::VarStore,
    /// The network with the checkpoint's weights.
    pub model: SeqRecModel,
    /// `config.json`.
    pub info: RunInfo,
    /// SHA-256 of `model.safetensors`.
    pub sha256: String,
}

/// Loads `config.json` and `model.safetensors` from `train_dir` on the CPU, with the strict
/// name/shape check of `sasrec_models::load_weights`.
pub fn load(train_dir: &Path) -> Result<LoadedRun> {
    if !train_dir.is_dir() {
        return Err(Error::io(
            train_dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "training directory not found (--train_dir)",
            ),
        ));
    }
    let info = RunInfo::read(&train_dir.join(files::CONFIG))?;
    let ckpt = train_dir.join(files::MODEL);
    let bytes = std::fs::read(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
    let sha256 = sha256_hex(&bytes);
    drop(bytes);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SeqRecModel::new(&vs.root(), &info.model).map_err(|e| Error::Config {
        path: train_dir.join(files::CONFIG),
        msg: e.to_string(),
    })?;
    sasrec_models::load_weights(&vs, &ckpt)
        .map_err(|e| Error::checkpoint(&ckpt, &e.to_string()))?;
    Ok(LoadedRun {
        vs,
        model,
        info,
        sha256,
    })
}

/// What [`export`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The training run directory.
    pub train_dir: PathBuf,
    /// The `.onnx` file to write; default `<train_dir>/model.onnx`.
    pub output: Option<PathBuf>,
    /// Which forward to record.
    pub variant: Variant,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The ONNX model.
    pub onnx: PathBuf,
    /// The item map beside it (`items.tsv` of the run, copied when the output is elsewhere).
    pub items: PathBuf,
    /// Size of the ONNX file in bytes.
    pub bytes: usize,
    /// SHA-256 of the source checkpoint.
    pub source_sha256: String,
    /// The model kind.
    pub kind: String,
}

/// `sasrec-export --onnx`: loads the run, records the graph, writes `items.tsv` (when the
/// output is outside the run directory) and then the `.onnx`, both atomically. Nothing is
/// written unless the config, checkpoint, item map and graph are all valid.
pub fn export(opts: &ExportOptions) -> Result<Exported> {
    let run = load(&opts.train_dir)?;
    let items_src = opts.train_dir.join(files::ITEMS);
    let items = std::fs::read(&items_src).map_err(|e| Error::io(&items_src, e))?;
    let source = Source {
        sha256: run.sha256.clone(),
        intervals: run.info.intervals,
    };
    let onnx = graph::model_bytes(&run.model, &source, opts.variant)?;

    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| opts.train_dir.join(files::ONNX));
    let out_dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let items_dst = out_dir.join(files::ITEMS);
    if !same_file(&items_src, &items_dst) {
        sasrec_shared::io::write_atomic(&items_dst, |w| std::io::Write::write_all(w, &items))?;
    }
    sasrec_shared::io::write_atomic(&output, |w| std::io::Write::write_all(w, &onnx))?;
    Ok(Exported {
        onnx: output,
        items: items_dst,
        bytes: onnx.len(),
        source_sha256: run.sha256,
        kind: run.info.kind,
    })
}

/// Whether `a` and `b` are the same existing file (so copying would be a no-op).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
