//! A loaded model: ONNX Runtime sessions (inside the [`Batcher`]), the item map and the
//! [`ModelManifest`]; requests are validated by [`request::prepare`] and answered with raw item
//! ids.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
        let dylib = runtime::resolve_dylib(scfg.ort_lib.as_deref())?;
        let env = runtime::environment(&dylib)?;
        let started = Instant::now();
        let items = IdMap::load(&items_path).map_err(|source| LoadError::Items {
            path: items_path.clone(),
            source,
        })?;
        tracing::info!(
            path = %items_path.display(),
            items = items.len(),
            seconds = started.elapsed().as_secs_f64(),
            "item map loaded"
        );
        let mut sessions = Vec::with_capacity(bcfg.workers.max(1));
        let mut device = String::new();
        for _ in 0..bcfg.workers.max(1) {
            let (s, d) = build_session(env, &onnx, scfg)?;
            sessions.push(s);
            device = d;
        }
        let meta_err = |msg: String| LoadError::Metadata {
            path: onnx.clone(),
            msg,
        };
        let metadata = read_metadata(&sessions[0]).map_err(meta_err)?;
        let manifest = ModelManifest::from_metadata(&metadata).map_err(meta_err)?;
        let model = &manifest.spec.model;
        if items.len() != model.num_items {
            return Err(meta_err(format!(
                "{} has {} items but the model scores {}",
                items_path.display(),
                items.len(),
                model.num_items
            )));
        }
        let names: HashSet<&str> = sessions[0].inputs().iter().map(|o| o.name()).collect();
        let want: HashSet<&str> = onnx_io::inputs(model.is_time_aware()).into_iter().collect();
        if names != want {
            return Err(meta_err(format!(
                "graph inputs are {names:?}, expected {want:?}"
            )));
        }
        let shape = Shape {
            maxlen: model.maxlen,
            time_aware: model.is_time_aware(),
            num_items: model.num_items,
        };
        // Warm-up: fails here (and a reload keeps the old model) rather than on a request.
        let probe = Row {
            seq: vec![0; shape.maxlen],
            time_matrix: shape
                .time_aware
                .then(|| vec![0; shape.maxlen * shape.maxlen]),
            exclude: Vec::new(),
            candidates: None,
            k: 1,
        };
        for s in &mut sessions {
            crate::batcher::run_rows(s, &[&probe], shape)
                .map_err(|e| meta_err(format!("warm-up run failed: {e}")))?;
        }
        let batcher = Batcher::spawn(sessions, shape, *bcfg, metrics)
            .map_err(|e| LoadError::Runtime(format!("starting worker threads: {e}")))?;
        let info = ModelInfo {
            id: manifest.id(),
            kind: manifest.spec.kind,
            source_sha256: manifest.source_sha256.clone(),
            maxlen: model.maxlen,
            num_items: model.num_items,
            time_aware: model.is_time_aware(),
            intervals: manifest.spec.intervals,
            onnx_path: onnx,
            items_path,
            device,
            workers: batcher.workers(),
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            metadata,
        };
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
