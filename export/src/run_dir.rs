//! Reading a training run directory and writing the exported model beside or elsewhere.
//!
//! The run directory (`sasrec-train --train_dir`, README "Training"; names in
//! [`sasrec_shared::run`]) holds `config.json` (the resolved run configuration, of which only
//! its [`ModelSpec`] head is read here), `model.safetensors` (reference tensor names) and
//! `items.tsv` (index ↔ raw id).
//! Everything is read and checked before anything is written, and each output is written
//! atomically (temporary file, then rename): a failed export leaves no file behind. Large
//! models get their weights in a second file, `<output>.data` ([`crate::external_data`]).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{nn, Device};

use sasrec_models::SeqRecModel;
use sasrec_shared::run::{ModelKind, ModelSpec, RunDir};

use crate::error::{Error, Result};
use crate::external_data::{ExternalFile, ModelFiles};
use crate::graph::{self, Source, Variant};

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
    /// The head of `config.json`.
    pub spec: ModelSpec,
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
    let dir = RunDir::new(train_dir);
    let spec = ModelSpec::read(&dir.config())?;
    let ckpt = dir.model();
    let bytes = std::fs::read(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
    let sha256 = sha256_hex(&bytes);
    drop(bytes);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SeqRecModel::new(&vs.root(), &spec.model).map_err(|e| Error::Config {
        path: dir.config(),
        msg: e.to_string(),
    })?;
    sasrec_models::load_weights(&vs, &ckpt)
        .map_err(|e| Error::checkpoint(&ckpt, &e.to_string()))?;
    Ok(LoadedRun {
        vs,
        model,
        spec,
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
    /// Initializer bytes above which the weights go to `<output>.data`
    /// ([`external_data`](crate::external_data); default
    /// [`DEFAULT_THRESHOLD`](crate::external_data::DEFAULT_THRESHOLD)).
    pub external_data_threshold: u64,
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
    /// The external data file beside the `.onnx`, when the initializers were moved out.
    pub external: Option<ExternalFile>,
    /// SHA-256 of the source checkpoint.
    pub source_sha256: String,
    /// The model kind.
    pub kind: ModelKind,
}

/// `sasrec-export --onnx`: loads the run, records the graph and lays out the model files
/// ([`ModelFiles`]), then writes `items.tsv` (when the output is outside the run directory),
/// the external data file (when there is one) and the `.onnx`, each atomically. Nothing is
/// written unless the config, checkpoint, item map, output path and graph are all valid.
pub fn export(opts: &ExportOptions) -> Result<Exported> {
    let run = load(&opts.train_dir)?;
    let dir = RunDir::new(&opts.train_dir);
    let items_src = dir.items();
    let items = std::fs::read(&items_src).map_err(|e| Error::io(&items_src, e))?;
    let output = opts.output.clone().unwrap_or_else(|| dir.onnx());
    if output.is_dir() {
        return Err(Error::Output {
            path: output,
            msg: "is a directory (--output names the .onnx file)".into(),
        });
    }
    let source = Source {
        sha256: run.sha256.clone(),
        intervals: run.spec.intervals,
    };
    let model = graph::model_proto(&run.model, &source, opts.variant)?;
    let files = ModelFiles::new(model, &output, opts.external_data_threshold)?;

    let out_dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let items_dst = RunDir::new(&out_dir).items();
    if !same_file(&items_src, &items_dst) {
        sasrec_shared::io::write_atomic(&items_dst, |w| std::io::Write::write_all(w, &items))?;
    }
    let written = files.write()?;
    Ok(Exported {
        onnx: output,
        items: items_dst,
        bytes: written.onnx_bytes,
        external: written.external,
        source_sha256: run.sha256,
        kind: run.spec.kind,
    })
}

/// Whether `a` and `b` are the same existing file (so copying would be a no-op).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
