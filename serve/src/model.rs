//! A loaded model: ONNX Runtime sessions (inside the [`Batcher`]), the item map, the metadata,
//! and the translation of a [`RecommendRequest`] into a graph [`Row`].
//!
//! # From request to row
//!
//! 1. `k` defaults to 10 and must lie in 1..=number of items (422 `invalid_k`).
//! 2. History entries must be JSON strings or numbers (422 `invalid_history`); numbers are
//!    looked up by their JSON text (`1193` → `"1193"`).
//! 3. `timestamps` are required by time-aware models (422 `missing_timestamps`) and, when
//!    present, must have one entry per history entry (422 `length_mismatch`). When present,
//!    the history is **stably sorted** by them, as training sorts each user's events, so
//!    out-of-order timestamps are accepted, not rejected.
//! 4. Entries not in the item map are skipped and reported in `unknown_items` (with their
//!    timestamps).
//! 5. `seq` is the newest `maxlen` known items, left-padded with 0
//!    ([`sasrec_shared::time::left_pad`]).
//! 6. Time-aware models: codes = `time_codes(unit, timestamps of all known entries)` (the
//!    personal scale uses the whole given history, as training uses the user's whole
//!    sequence), left-padded to `maxlen`, then `Intervals::relation_matrix` — exactly
//!    `sasrec_shared::eval::EvalSet::batch`.
//! 7. `exclude_seen` (default true) excludes every known history item, not only the window.
//!
//! An empty known history (no entries, or only unknown ones) is not an error: the model
//! scores the all-padding sequence, which gives a fixed, history-independent ranking (what
//! the model learned as a prior); `unknown_items` tells the client why.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use sasrec_shared::time::{left_pad, time_codes, Intervals};
use sasrec_shared::IdMap;
use serde::Serialize;

use crate::api::{self, RecommendRequest, RecommendResponse, ScoredItem};
use crate::batcher::{Batcher, JobResult, Row, RowResult, Shape, SubmitError};
use crate::config::{BatchConfig, Device, SessionConfig};
use crate::error::{ApiError, LoadError};
use crate::metrics::Metrics;
use crate::runtime;

/// What `GET /v1/model` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    /// `<kind>@<digest prefix>`, as in every response.
    pub id: String,
    /// `sasrec`, `tisasrec`, `sasrec_mhc`, ... (metadata `kind`).
    pub kind: String,
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
    items: IdMap,
    batcher: Batcher,
}

/// A request turned into a graph row.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The row for the batcher.
    pub row: Row,
    /// History entries not in the item map.
    pub unknown: Vec<serde_json::Value>,
}

/// `PATH` → (`.onnx` file, `items.tsv`).
pub fn resolve_paths(path: &Path) -> Result<(PathBuf, PathBuf), LoadError> {
    let bad = |msg: &str| LoadError::Path {
        path: path.to_path_buf(),
        msg: msg.into(),
    };
    let onnx = if path.is_dir() {
        path.join("model.onnx")
    } else {
        path.to_path_buf()
    };
    if !onnx.is_file() {
        return Err(bad(if path.is_dir() {
            "directory has no model.onnx (run `sasrec-export --onnx --train_dir DIR`)"
        } else {
            "no such file"
        }));
    }
    let items = onnx
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("items.tsv");
    if !items.is_file() {
        return Err(bad(
            "no items.tsv beside the model (sasrec-export writes it)",
        ));
    }
    Ok((onnx, items))
}

impl LoadedModel {
    /// Loads `path` (a `.onnx` file or a directory with `model.onnx`), creates one session per
    /// worker, checks the interface, runs one warm-up inference per session and starts the
    /// workers.
    pub fn load(
        path: &Path,
        scfg: &SessionConfig,
        bcfg: &BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let (onnx, items_path) = resolve_paths(path)?;
        let dylib = runtime::resolve_dylib(scfg.ort_lib.as_deref())?;
        let env = runtime::environment(&dylib)?;
        let items = IdMap::load(&items_path).map_err(|source| LoadError::Items {
            path: items_path.clone(),
            source,
        })?;
        let workers = bcfg.workers.max(1);
        let mut sessions = Vec::with_capacity(workers);
        let mut device = String::new();
        for _ in 0..workers {
            let (s, d) = build_session(env, &onnx, scfg)?;
            sessions.push(s);
            device = d;
        }
        let meta_err = |msg: String| LoadError::Metadata {
            path: onnx.clone(),
            msg,
        };
        let metadata = read_metadata(&sessions[0]).map_err(meta_err)?;
        let get = |k: &str| {
            metadata.get(k).cloned().ok_or_else(|| {
                meta_err(format!(
                    "metadata has no `{k}` (not written by sasrec-export?)"
                ))
            })
        };
        let num = |k: &str| -> Result<usize, LoadError> {
            let v = get(k)?;
            v.parse()
                .map_err(|_| meta_err(format!("metadata `{k}` = `{v}` is not a number")))
        };
        let kind = get("kind")?;
        let maxlen = num("maxlen")?;
        let num_items = num("num_items")?;
        let time_aware = get("time_aware")? == "true";
        let source_sha256 = get("source_sha256")?;
        let intervals: Option<Intervals> = match metadata.get("intervals") {
            Some(j) => serde_json::from_str(j)
                .map_err(|e| meta_err(format!("metadata `intervals` is not valid: {e}")))?,
            None => None,
        };
        if time_aware && intervals.is_none() {
            return Err(meta_err(
                "time-aware model without `intervals` metadata".into(),
            ));
        }
        if maxlen == 0 || num_items == 0 {
            return Err(meta_err("maxlen and num_items must be positive".into()));
        }
        if items.len() != num_items {
            return Err(meta_err(format!(
                "{} has {} items but the model scores {num_items}",
                items_path.display(),
                items.len()
            )));
        }
        let mut expected = vec!["seq", "exclude", "k"];
        if time_aware {
            expected.push("time_matrix");
        }
        let names: HashSet<&str> = sessions[0].inputs().iter().map(|o| o.name()).collect();
        let want: HashSet<&str> = expected.iter().copied().collect();
        if names != want {
            return Err(meta_err(format!(
                "graph inputs are {names:?}, expected {want:?}"
            )));
        }
        let shape = Shape { maxlen, time_aware };
        // Warm-up: fails here (and a reload keeps the old model) rather than on a request.
        let probe = Row {
            seq: vec![0; maxlen],
            time_matrix: time_aware.then(|| vec![0; maxlen * maxlen]),
            exclude: Vec::new(),
            k: 1,
        };
        for s in &mut sessions {
            crate::batcher::run_rows(s, &[&probe], shape)
                .map_err(|e| meta_err(format!("warm-up run failed: {e}")))?;
        }
        let info = ModelInfo {
            id: format!("{kind}@{}", &source_sha256[..source_sha256.len().min(12)]),
            kind,
            source_sha256,
            maxlen,
            num_items,
            time_aware,
            intervals: intervals.filter(|_| time_aware),
            onnx_path: onnx.clone(),
            items_path,
            device,
            workers,
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            metadata,
        };
        let batcher = Batcher::spawn(sessions, shape, *bcfg, metrics)
            .map_err(|e| LoadError::Runtime(format!("starting worker threads: {e}")))?;
        Ok(Self {
            info,
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

    /// Validates `req` and builds its graph row (rules in the [module docs](self)).
    pub fn prepare(&self, req: &RecommendRequest) -> Result<Prepared, ApiError> {
        let info = &self.info;
        let k = req.k.unwrap_or(api::DEFAULT_K);
        if k < 1 || k > info.num_items as i64 {
            return Err(ApiError::invalid(
                "invalid_k",
                format!(
                    "k = {k}: must be between 1 and {} (the number of items)",
                    info.num_items
                ),
            ));
        }
        if let Some(ts) = &req.timestamps {
            if ts.len() != req.history.len() {
                return Err(ApiError::invalid(
                    "length_mismatch",
                    format!(
                        "timestamps has {} entries but history has {}",
                        ts.len(),
                        req.history.len()
                    ),
                ));
            }
        } else if info.time_aware {
            return Err(ApiError::invalid(
                "missing_timestamps",
                format!(
                    "model {} is time-aware: `timestamps` (unix seconds, one per history entry) \
                     is required",
                    info.id
                ),
            ));
        }
        let mut keys = Vec::with_capacity(req.history.len());
        for (i, v) in req.history.iter().enumerate() {
            match api::history_key(v) {
                Some(key) => keys.push(key),
                None => {
                    return Err(ApiError::invalid(
                        "invalid_history",
                        format!("history[{i}] = {v}: item ids must be JSON strings or numbers"),
                    ))
                }
            }
        }
        // Stable sort by time, as training orders each user's events.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        if let Some(ts) = &req.timestamps {
            order.sort_by_key(|&i| ts[i]);
        }
        let mut known = Vec::with_capacity(keys.len());
        let mut known_ts = Vec::with_capacity(keys.len());
        let mut unknown = Vec::new();
        let mut unknown_seen = HashSet::new();
        for &i in &order {
            match self.items.index_of(&keys[i]) {
                Some(idx) => {
                    known.push(i64::from(idx));
                    if let Some(ts) = &req.timestamps {
                        known_ts.push(ts[i]);
                    }
                }
                None => {
                    if unknown_seen.insert(keys[i].as_str()) {
                        unknown.push(req.history[i].clone());
                    }
                }
            }
        }
        let t = info.maxlen;
        let mut seq = vec![0i64; t];
        let pad = left_pad(&known, 0i64, &mut seq);
        let time_matrix = match (info.time_aware, info.intervals) {
            (true, Some(iv)) => {
                let codes = time_codes(iv.unit, &known_ts);
                let mut window = vec![0i64; t];
                left_pad(&codes, 0i64, &mut window);
                let mut out = vec![0i32; t * t];
                iv.relation_matrix(&window, pad, &mut out);
                Some(out.into_iter().map(i64::from).collect())
            }
            _ => None,
        };
        let exclude = if req.exclude_seen.unwrap_or(true) {
            let mut e = known;
            e.sort_unstable();
            e.dedup();
            e
        } else {
            Vec::new()
        };
        Ok(Prepared {
            row: Row {
                seq,
                time_matrix,
                exclude,
                k: k as usize,
            },
            unknown,
        })
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

/// Every `metadata_props` entry.
fn read_metadata(session: &Session) -> Result<BTreeMap<String, String>, String> {
    let meta = session.metadata().map_err(|e| e.to_string())?;
    let keys = meta.custom_keys().map_err(|e| e.to_string())?;
    Ok(keys
        .into_iter()
        .filter_map(|k| meta.custom(&k).map(|v| (k, v)))
        .collect())
}

/// One session on the requested device; returns it with the execution provider in use.
fn build_session(
    env: &ort::environment::Environment,
    onnx: &Path,
    cfg: &SessionConfig,
) -> Result<(Session, String), LoadError> {
    let session_err = |msg: String| LoadError::Session {
        path: onnx.to_path_buf(),
        msg,
    };
    let base = || -> Result<ort::session::builder::SessionBuilder, LoadError> {
        let b = Session::builder(env).map_err(|e| session_err(e.to_string()))?;
        if cfg.intra_threads > 0 {
            return b
                .with_intra_threads(cfg.intra_threads)
                .map_err(|e| session_err(e.to_string()));
        }
        Ok(b)
    };
    let commit = |mut b: ort::session::builder::SessionBuilder| {
        b.commit_from_file(onnx)
            .map_err(|e| session_err(e.to_string()))
    };
    if cfg.device == Device::Cuda {
        let fallback = |why: String| -> Result<(Session, String), LoadError> {
            if cfg.strict_device {
                return Err(LoadError::Device(why));
            }
            tracing::warn!("--device cuda: {why}; falling back to the CPU execution provider");
            Ok((commit(base()?)?, "cpu".into()))
        };
        match ep::CUDA::is_available() {
            Ok(true) => {}
            Ok(false) => {
                return fallback(
                    "this ONNX Runtime build has no CUDA execution provider (install \
                     onnxruntime-gpu)"
                        .into(),
                )
            }
            Err(e) => return fallback(format!("cannot query the CUDA execution provider: {e}")),
        }
        let with_cuda = base()?
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| e.to_string());
        return match with_cuda {
            Ok(b) => match commit(b) {
                Ok(s) => {
                    tracing::info!("using the CUDA execution provider");
                    Ok((s, "cuda".into()))
                }
                Err(e) => fallback(e.to_string()),
            },
            Err(e) => fallback(format!("registering the CUDA execution provider: {e}")),
        };
    }
    Ok((commit(base()?)?, "cpu".into()))
}
