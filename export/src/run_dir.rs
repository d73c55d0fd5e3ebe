//! Reading a training run directory and writing the exported model beside or elsewhere.
//!
//! The run directory (`sasrec-train --train_dir`, README "Training"; names in
//! [`sasrec_shared::run`]) holds `config.json` (the resolved run configuration, of which only
//! its [`ModelSpec`] head is read here), `model.safetensors` (reference tensor names) and
//! `items.tsv` (index ↔ raw id).
//! Everything is read and checked before anything is written, and each output is written
//! atomically (temporary file, then rename): a failed export leaves no file behind. Beside the
//! model go the two-tower files, `user_tower.onnx` and `item_vectors.safetensors`
//! ([`two_tower`], [`crate::item_vectors`]). Large models get their weights in a second file,
//! `<output>.data` ([`crate::external_data`]). The user tower always does
//! (`user_tower.onnx.data`): ONNX Runtime memory-maps external initializers, so the item table
//! inside the tower, which a request reads only at its history's rows, costs a server only the
//! pages of those rows instead of a resident copy of the whole table per session (at 10M items
//! × d 32, 1.28 GB each).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{nn, Device};

use sasrec_models::SeqRecModel;
use sasrec_shared::run::{files, two_tower, ModelKind, ModelSpec, RunDir};

use crate::error::{Error, Result};
use crate::external_data::{ExternalFile, ModelFiles};
use crate::graph::{self, Source, Variant};
use crate::item_vectors;

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
    /// The network with the checkpoint's weights; with item features, folded
    /// (`SeqRecModel::fold_item_features`: `item_emb.weight` = the composed table), which the
    /// scoring model, the user tower and the item vectors are made from.
    pub model: SeqRecModel,
    /// With item features: the network as trained, its feature tables and encoded values
    /// loaded, which the item tower is recorded from.
    pub with_features: Option<(nn::VarStore, SeqRecModel)>,
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
    match fold_features(&dir, &model)? {
        Some((fvs, folded)) => Ok(LoadedRun {
            vs: fvs,
            model: folded,
            with_features: Some((vs, model)),
            spec,
            sha256,
        }),
        None => Ok(LoadedRun {
            vs,
            model,
            with_features: None,
            spec,
            sha256,
        }),
    }
}

/// A model with item features: loads their encoded values (`item_features.safetensors`) into
/// `model` and returns the folded network (`SeqRecModel::fold_item_features`). `None` for a
/// model without features.
fn fold_features(dir: &RunDir, model: &SeqRecModel) -> Result<Option<(nn::VarStore, SeqRecModel)>> {
    if !model.items().has_features() {
        return Ok(None);
    }
    let path = dir.item_features();
    let bad = |e: &dyn std::fmt::Display| Error::checkpoint(&path, &e.to_string());
    let tensors = tch::Tensor::read_safetensors(&path).map_err(|e| bad(&e))?;
    model
        .items()
        .load_feature_tensors(&tensors)
        .map_err(|e| bad(&e))?;
    model.fold_item_features().map_err(|e| bad(&e))
}

/// What [`export`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The training run directory.
    pub train_dir: PathBuf,
    /// The `.onnx` file to write; default `<train_dir>/model.onnx`. The item map and the
    /// two-tower files ([`two_tower`]) are written beside it.
    pub output: Option<PathBuf>,
    /// Which forward to record (in both the scoring model and the user tower).
    pub variant: Variant,
    /// Initializer bytes above which the weights of each `.onnx` go to `<file>.data`
    /// ([`external_data`](crate::external_data); default
    /// [`DEFAULT_THRESHOLD`](crate::external_data::DEFAULT_THRESHOLD)).
    pub external_data_threshold: u64,
}

/// A `.onnx` file [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxFile {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: usize,
    /// Its external data file, when the initializers were moved out.
    pub external: Option<ExternalFile>,
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
    /// The user tower beside the model ([`two_tower::USER_TOWER_FILE`]).
    pub user_tower: OnnxFile,
    /// The item vectors beside the model ([`two_tower::ITEM_VECTORS_FILE`]).
    pub item_vectors: PathBuf,
    /// The item tower beside the model ([`two_tower::ITEM_TOWER_FILE`]), for a model with item
    /// features.
    pub item_tower: Option<OnnxFile>,
    /// The open user tower beside the model ([`two_tower::OPEN_USER_TOWER_FILE`]), for a
    /// model with item features.
    pub open_user_tower: Option<OnnxFile>,
    /// Size of the item vectors file in bytes.
    pub item_vectors_bytes: u64,
    /// SHA-256 of the source checkpoint.
    pub source_sha256: String,
    /// The model kind.
    pub kind: ModelKind,
}

/// `sasrec-export --onnx`: loads the run, records the graphs and lays out their files
/// ([`ModelFiles`]), then writes `items.tsv` (when the output is outside the run directory),
/// the user tower, the item tower and the open user tower (a model with item features), the
/// item vectors and last the
/// model, whose metadata names the others, each atomically. Nothing is written unless the config, checkpoint, item map, output path and
/// graphs are all valid.
pub fn export(opts: &ExportOptions) -> Result<Exported> {
    let run = load(&opts.train_dir)?;
    let layout = Layout::new(&opts.train_dir, opts.output.clone())?;
    let items_src = RunDir::new(&opts.train_dir).items();
    let items = std::fs::read(&items_src).map_err(|e| Error::io(&items_src, e))?;
    let source = Source {
        sha256: run.sha256.clone(),
        intervals: run.spec.intervals,
        item_tower: run.with_features.is_some(),
    };
    let threshold = opts.external_data_threshold;
    let model = graph::model_proto(&run.model, &source, opts.variant)?;
    let model = ModelFiles::new(model, &layout.onnx, threshold)?;
    let tower = graph::user_tower_proto(&run.model, &source, opts.variant)?;
    let tower = ModelFiles::always_external(tower, &layout.user_tower)?;
    let item_tower = match &run.with_features {
        Some((_, m)) => graph::item_tower_proto(m, &source)?
            .map(|p| ModelFiles::new(p, &layout.item_tower, threshold))
            .transpose()?,
        None => None,
    };
    let open_tower = match &run.with_features {
        Some(_) => {
            let p = graph::open_user_tower_proto(&run.model, &source, opts.variant)?;
            Some(ModelFiles::new(p, &layout.open_user_tower, threshold)?)
        }
        None => None,
    };

    std::fs::create_dir_all(&layout.dir).map_err(|e| Error::io(&layout.dir, e))?;
    if !same_file(&items_src, &layout.items) {
        sasrec_shared::io::write_atomic(&layout.items, |w| std::io::Write::write_all(w, &items))?;
    }
    if item_tower.is_none() {
        layout.remove_feature_towers()?;
    }
    let user_tower = onnx_file(tower, &layout.user_tower)?; // dropped before the table is copied
    let item_tower = item_tower
        .map(|t| onnx_file(t, &layout.item_tower))
        .transpose()?;
    let open_user_tower = open_tower
        .map(|t| onnx_file(t, &layout.open_user_tower))
        .transpose()?;
    let item_vectors_bytes = item_vectors::write(&run.model, &run.sha256, &layout.item_vectors)?;
    let written = model.write()?;
    Ok(Exported {
        onnx: layout.onnx,
        items: layout.items,
        bytes: written.onnx_bytes,
        external: written.external,
        user_tower,
        item_vectors: layout.item_vectors,
        item_tower,
        open_user_tower,
        item_vectors_bytes,
        source_sha256: run.sha256,
        kind: run.spec.kind,
    })
}

/// Writes `files` and describes what was written at `path`.
fn onnx_file(files: ModelFiles, path: &Path) -> Result<OnnxFile> {
    let written = files.write()?;
    Ok(OnnxFile {
        path: path.to_path_buf(),
        bytes: written.onnx_bytes,
        external: written.external,
    })
}

/// Where [`export`] writes: the model and, in its directory, the item map and the two-tower
/// files.
struct Layout {
    onnx: PathBuf,
    dir: PathBuf,
    items: PathBuf,
    user_tower: PathBuf,
    item_vectors: PathBuf,
    item_tower: PathBuf,
    open_user_tower: PathBuf,
}

impl Layout {
    /// The files for `output` (default `<train_dir>/model.onnx`); refuses a directory and a
    /// model named like a file written beside it.
    fn new(train_dir: &Path, output: Option<PathBuf>) -> Result<Self> {
        let onnx = output.unwrap_or_else(|| RunDir::new(train_dir).onnx());
        let refuse = |msg: &str| {
            Err(Error::Output {
                path: onnx.clone(),
                msg: msg.into(),
            })
        };
        if onnx.is_dir() {
            return refuse("is a directory (--output names the .onnx file)");
        }
        let name = onnx.file_name().and_then(|n| n.to_str());
        if [
            two_tower::USER_TOWER_FILE,
            two_tower::ITEM_VECTORS_FILE,
            two_tower::ITEM_TOWER_FILE,
            two_tower::OPEN_USER_TOWER_FILE,
            files::ITEMS,
        ]
        .iter()
        .any(|f| name == Some(*f))
        {
            return refuse("is the name of a file written beside the model (--output)");
        }
        let dir = match onnx.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Self {
            items: RunDir::new(&dir).items(),
            user_tower: dir.join(two_tower::USER_TOWER_FILE),
            item_vectors: dir.join(two_tower::ITEM_VECTORS_FILE),
            item_tower: dir.join(two_tower::ITEM_TOWER_FILE),
            open_user_tower: dir.join(two_tower::OPEN_USER_TOWER_FILE),
            onnx,
            dir,
        })
    }
}

impl Layout {
    /// Removes the item tower and the open user tower (and their external data) left in the
    /// directory by an earlier export of a model with features, so that a server does not
    /// take them for this model's.
    fn remove_feature_towers(&self) -> Result<()> {
        for onnx in [&self.item_tower, &self.open_user_tower] {
            let data = PathBuf::from(format!("{}.data", onnx.display()));
            for path in [onnx, &data] {
                match std::fs::remove_file(path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a stale feature tower")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
        }
        Ok(())
    }
}

/// Whether `a` and `b` are the same existing file (so copying would be a no-op).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
