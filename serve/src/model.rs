//! A loaded model: ONNX Runtime sessions (inside the [`Batcher`]), the item map and the
//! [`ModelManifest`]; requests are validated by [`request::prepare`] and answered with raw item
//! ids.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ort::session::Session;
use sasrec_shared::run::{onnx_io, ModelKind, ModelManifest};
use sasrec_shared::time::Intervals;
use sasrec_shared::IdMap;
use serde::Serialize;

use crate::api::{self, RecommendRequest, RecommendResponse, ScoredItem};
use crate::artifacts::resolve_paths;
use crate::batcher::{Batcher, JobResult, Row, RowResult, Shape, SubmitError};
use crate::config::{BatchConfig, SessionConfig};
use crate::error::{ApiError, LoadError};
use crate::metrics::Metrics;
use crate::request::{self, Prepared};
use crate::runtime;
use crate::session::{build_session, read_metadata};

/// What `GET /v1/model` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    /// `<kind>@<digest prefix>`, as in every response.
    pub id: String,
    /// `sasrec`, `tisasrec`, `sasrec-mhc` or `tisasrec-mhc` (metadata `kind`).
    pub kind: ModelKind,
    /// SHA-256 of the source checkpoint (metadata `source_sha256`).
    pub source_sha256: String,
    /// Window length T.
    pub maxlen: usize,
    /// Number of items I.
    pub num_items: usize,
    /// Whether requests need timestamps.
    pub time_aware: bool,
    /// Interval settings of time-aware models.
    pub intervals: Option<Intervals>,
    /// The `.onnx` file.
    pub onnx_path: PathBuf,
    /// The item map.
    pub items_path: PathBuf,
    /// Execution provider in use (`cpu` or `cuda`).
    pub device: String,
    /// Worker threads (sessions).
    pub workers: usize,
    /// Unix seconds when the model was loaded.
    pub loaded_at: u64,
    /// Every `metadata_props` entry of the ONNX file.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// What `GET /v1/model` shows for `manifest`, loaded from `files` (`.onnx`, item map) on
    /// `device` with `workers` sessions; `loaded_at` is now.
    fn new(
        manifest: &ModelManifest,
        (onnx_path, items_path): (PathBuf, PathBuf),
        device: String,
        workers: usize,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        let model = &manifest.spec.model;
        Self {
            id: manifest.id(),
            kind: manifest.spec.kind,
            source_sha256: manifest.source_sha256.clone(),
            maxlen: model.maxlen,
            num_items: model.num_items,
            time_aware: model.is_time_aware(),
            intervals: manifest.spec.intervals,
            onnx_path,
            items_path,
            device,
            workers,
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            metadata,
        }
    }
}

/// Reads the item map `items.tsv` (and logs how long it took).
fn load_items(path: &Path) -> Result<IdMap, LoadError> {
    let started = Instant::now();
    let items = IdMap::load(path).map_err(|source| LoadError::Items {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(
        path = %path.display(),
        items = items.len(),
        seconds = started.elapsed().as_secs_f64(),
        "item map loaded"
    );
    Ok(items)
}

/// `n` (≥ 1) sessions on `onnx`, one per worker, with the execution provider they use.
fn build_sessions(
    env: &ort::environment::Environment,
    onnx: &Path,
    scfg: &SessionConfig,
    n: usize,
) -> Result<(Vec<Session>, String), LoadError> {
    let mut sessions = Vec::with_capacity(n);
    let mut device = String::new();
    for _ in 0..n {
        let (s, d) = build_session(env, onnx, scfg)?;
        sessions.push(s);
        device = d;
    }
    Ok((sessions, device))
}

/// The item map has one entry per item the model scores (I).
fn check_item_map(manifest: &ModelManifest, items: &IdMap, path: &Path) -> Result<(), String> {
    let num_items = manifest.spec.model.num_items;
    if items.len() != num_items {
        return Err(format!(
            "{} has {} items but the model scores {num_items}",
            path.display(),
            items.len(),
        ));
    }
    Ok(())
}

/// The graph's inputs are exactly those `sasrec-export` writes for the model's kind
/// ([`onnx_io::inputs`]).
fn check_inputs(session: &Session, manifest: &ModelManifest) -> Result<(), String> {
    let names: HashSet<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let time_aware = manifest.spec.model.is_time_aware();
    let want: HashSet<&str> = onnx_io::inputs(time_aware).into_iter().collect();
    if names != want {
        return Err(format!("graph inputs are {names:?}, expected {want:?}"));
    }
    Ok(())
}

/// The graph's fixed dimensions, from the manifest.
fn graph_shape(manifest: &ModelManifest) -> Shape {
    let model = &manifest.spec.model;
    Shape {
        maxlen: model.maxlen,
        time_aware: model.is_time_aware(),
        num_items: model.num_items,
    }
}

/// One run of an all-padding row per session, so that a model ONNX Runtime cannot run fails
/// here (and a reload keeps the old model) rather than on a request.
fn warm_up(sessions: &mut [Session], shape: Shape) -> Result<(), String> {
    let probe = Row {
        seq: vec![0; shape.maxlen],
        time_matrix: shape
            .time_aware
            .then(|| vec![0; shape.maxlen * shape.maxlen]),
        exclude: Vec::new(),
        candidates: None,
        k: 1,
    };
    for s in sessions {
        crate::batcher::run_rows(s, &[&probe], shape)
            .map_err(|e| format!("warm-up run failed: {e}"))?;
    }
    Ok(())
}

/// A model ready to serve.
#[derive(Debug)]
pub struct LoadedModel {
    info: ModelInfo,
    manifest: ModelManifest,
    items: IdMap,
    batcher: Batcher,
}

impl LoadedModel {
    /// Loads `path` (a `.onnx` file or a directory with `model.onnx`), creates one session per
    /// worker, reads the manifest, checks the item map and the interface, runs one warm-up
    /// inference per session and starts the workers.
    pub fn load(
        path: &Path,
        scfg: &SessionConfig,
        bcfg: &BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let (onnx, items_path) = resolve_paths(path)?;
        let env = runtime::environment(&runtime::resolve_dylib(scfg.ort_lib.as_deref())?)?;
        let items = load_items(&items_path)?;
        let (mut sessions, device) = build_sessions(env, &onnx, scfg, bcfg.workers.max(1))?;
        let metadata_err = |msg: String| LoadError::Metadata {
            path: onnx.clone(),
            msg,
        };
        let metadata = read_metadata(&sessions[0]).map_err(metadata_err)?;
        let manifest = ModelManifest::from_metadata(&metadata).map_err(metadata_err)?;
        check_item_map(&manifest, &items, &items_path).map_err(metadata_err)?;
        check_inputs(&sessions[0], &manifest).map_err(metadata_err)?;
        let shape = graph_shape(&manifest);
        warm_up(&mut sessions, shape).map_err(metadata_err)?;
        let batcher = Batcher::spawn(sessions, shape, *bcfg, metrics)
            .map_err(|e| LoadError::Runtime(format!("starting worker threads: {e}")))?;
        let files = (onnx, items_path);
        let info = ModelInfo::new(&manifest, files, device, batcher.workers(), metadata);
        Ok(Self {
            info,
            manifest,
            items,
            batcher,
        })
    }

    /// Metadata for `GET /v1/model`.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// `<kind>@<digest prefix>`.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Jobs waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.batcher.queue_len()
    }

    /// Validates `req` and builds its graph row ([`request::prepare`]).
    pub fn prepare(&self, req: &RecommendRequest) -> Result<Prepared, ApiError> {
        request::prepare(req, &self.manifest.spec, &self.items, &self.info.id)
    }

    /// Queues rows for inference.
    pub fn submit(
        &self,
        rows: Vec<Row>,
    ) -> Result<tokio::sync::oneshot::Receiver<JobResult>, SubmitError> {
        self.batcher.submit(rows)
    }

    /// The response for one row's result.
    pub fn answer(&self, result: RowResult, unknown: Vec<serde_json::Value>) -> RecommendResponse {
        RecommendResponse {
            items: result
                .into_iter()
                .filter_map(|(idx, score)| {
                    let raw = self.items.raw_of(u32::try_from(idx).ok()?)?;
                    Some(ScoredItem {
                        item: api::raw_id_json(raw),
                        score,
                    })
                })
                .collect(),
            model: self.info.id.clone(),
            unknown_items: unknown,
        }
    }
}
