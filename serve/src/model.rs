//! A loaded model: ONNX Runtime sessions (inside the [`Batcher`]), the item map, the
//! [`ModelManifest`] and the two-tower [`Retriever`]; requests are validated by
//! [`request::prepare`] and answered with raw item ids.
//!
//! Under `--retrieval exact` (the default) the workers run `model.onnx`, and the item vectors
//! are opened only for `/similar` (when they are missing or unusable the model still loads,
//! and `/similar` answers 404 `no_item_vectors` saying why). Under `--retrieval ann`
//! `model.onnx` is not opened at all (its scoring table would cost memory the ANN mode exists
//! to save): the workers run `user_tower.onnx` beside it, whose metadata carries the same
//! manifest (with `tower` = `user`) and names the item vectors; a missing or unusable
//! two-tower file or index is a load error.
//!
//! A model exported with item features takes items added after training
//! ([`crate::catalogue`], `POST /v1/items`) unless `--max_added_items 0`: in both retrieval
//! modes the workers then run `user_tower_open.onnx` ([`crate::tower::Tower::Open`]) instead of
//! `model.onnx` / `user_tower.onnx`, `item_tower.onnx` embeds the additions, and the additions
//! file beside the model is read (and its items embedded) at load. Adding items builds a new
//! [`LoadedModel`] sharing everything but the additions ([`LoadedModel::add_items`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ort::session::Session;
use sasrec_shared::run::{onnx_io, two_tower, ModelKind, ModelManifest};
use sasrec_shared::time::Intervals;
use sasrec_shared::IdMap;
use serde::Serialize;

use crate::api::{self, RecommendRequest, RecommendResponse, ScoredItem};
use crate::api::{SimilarRequest, SimilarResponse};
use crate::artifacts::resolve_paths;
use crate::batcher::{
    Batcher, ExactRunner, JobResult, Row, RowResult, RowRunner, Shape, SubmitError,
};
use crate::catalogue::{read_added, AddedItems, Catalogue, NewItem, Upserted, ADDED_ITEMS_FILE};
use crate::config::{BatchConfig, Retrieval, RetrievalConfig, SessionConfig, SimilarMetric};
use crate::error::{ApiError, LoadError};
use crate::item_tower::ItemTower;
use crate::metrics::Metrics;
use crate::request::{self, Prepared, SimilarQuery};
use crate::retrieval::{IndexReport, Retriever};
use crate::runtime;
use crate::session::{build_session, read_metadata};
use crate::tower::{check_open_tower, check_tower, Tower, TowerRunner};

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
    /// How `/recommend` ranks and what `/similar` uses.
    pub retrieval: RetrievalInfo,
    /// Trained and added items, and whether `POST /v1/items` works.
    pub items: ItemsInfo,
}

/// The `items` part of `GET /v1/model`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ItemsInfo {
    /// Items the model was trained on (I, indices 1..=I).
    pub trained: usize,
    /// Items added through `POST /v1/items` (A, indices I+1..=I+A).
    pub added: usize,
    /// `--max_added_items`, when the model takes additions.
    pub max_added: Option<usize>,
    /// The item tower that embeds additions.
    pub item_tower_path: Option<PathBuf>,
    /// The additions file.
    pub added_items_path: Option<PathBuf>,
    /// Why `POST /v1/items` answers 409 `no_additions`, when it does.
    pub additions_unavailable: Option<String>,
}

/// The retrieval part of `GET /v1/model`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetrievalInfo {
    /// `exact` or `ann` (`--retrieval`).
    pub mode: Retrieval,
    /// The user tower the workers run (under `--retrieval ann`).
    pub user_tower_path: Option<PathBuf>,
    /// The item vectors, when they are usable.
    pub item_vectors_path: Option<PathBuf>,
    /// The similarity of `/similar` (`--similar_metric`).
    pub similar_metric: SimilarMetric,
    /// Why `/similar` answers 404 `no_item_vectors`, when it does.
    pub similar_unavailable: Option<String>,
    /// The ANN index and its search settings (under `--retrieval ann`).
    pub index: Option<IndexReport>,
}

impl ModelInfo {
    /// What `GET /v1/model` shows for `manifest`, loaded from `files` (`.onnx`, item map) on
    /// `device` with `workers` sessions; `loaded_at` is now.
    fn new(
        manifest: &ModelManifest,
        (onnx_path, items_path): (PathBuf, PathBuf),
        (device, workers): (String, usize),
        metadata: BTreeMap<String, String>,
        (retrieval, items): (RetrievalInfo, ItemsInfo),
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
            retrieval,
            items,
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
/// here (and a reload keeps the old model) rather than on a request; then one
/// [`ExactRunner`] per session.
fn exact_runners(
    sessions: Vec<Session>,
    shape: Shape,
    onnx: &Path,
) -> Result<Vec<Box<dyn RowRunner>>, LoadError> {
    let probe = Row::probe(shape);
    let mut runners: Vec<Box<dyn RowRunner>> = Vec::with_capacity(sessions.len());
    for mut session in sessions {
        crate::batcher::run_rows(&mut session, &[&probe], shape).map_err(|e| {
            LoadError::Metadata {
                path: onnx.to_path_buf(),
                msg: format!("warm-up run failed: {e}"),
            }
        })?;
        runners.push(Box::new(ExactRunner { session, shape }));
    }
    Ok(runners)
}

/// The manifest of `session` (loaded from `onnx`, with all its metadata), checked against the
/// item map and by `check` (the graph's interface).
fn read_manifest(
    session: &Session,
    onnx: &Path,
    (items, items_path): (&IdMap, &Path),
    check: CheckFn,
) -> Result<(BTreeMap<String, String>, ModelManifest), LoadError> {
    let metadata_err = |msg: String| LoadError::Metadata {
        path: onnx.to_path_buf(),
        msg,
    };
    let metadata = read_metadata(session).map_err(metadata_err)?;
    let manifest = ModelManifest::from_metadata(&metadata).map_err(metadata_err)?;
    check_item_map(&manifest, items, items_path).map_err(metadata_err)?;
    check(session, &manifest).map_err(metadata_err)?;
    Ok((metadata, manifest))
}

/// The model's two-tower side.
enum TwoTower {
    /// `--retrieval exact`: the retriever of `/similar`, or why there is none.
    Similar(Result<Arc<Retriever>, String>),
    /// `--retrieval ann`, or a model taking additions: the retriever of every row and the
    /// user tower the workers run.
    Tower {
        retriever: Arc<Retriever>,
        user_tower: PathBuf,
    },
}

impl TwoTower {
    /// Opens the two-tower files the manifest names, in `dir`: the retriever over the item
    /// vectors and the user tower's path.
    fn locate(
        manifest: &ModelManifest,
        dir: &Path,
        rcfg: &RetrievalConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<(Arc<Retriever>, PathBuf), String> {
        let paths = manifest.two_tower_paths(dir).map_err(|e| e.to_string())?;
        let r = Retriever::open(&paths.item_vectors, manifest, dir, rcfg, metrics)?;
        Ok((Arc::new(r), paths.user_tower))
    }

    /// `--retrieval exact`: the retriever of `/similar`; when the files are missing or
    /// unusable, a logged warning and no `/similar`.
    fn similar(
        manifest: &ModelManifest,
        dir: &Path,
        rcfg: &RetrievalConfig,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let opened = Self::locate(manifest, dir, rcfg, metrics);
        if let Err(e) = &opened {
            tracing::warn!(error = %e, "POST /similar is unavailable: no usable item vectors");
        }
        TwoTower::Similar(opened.map(|(r, _)| r))
    }

    /// The retriever of every row, for the user tower `tower` the workers run, which must be
    /// the one the manifest names (`named`: its user tower or its open user tower); anything
    /// missing is an error.
    fn tower(
        manifest: &ModelManifest,
        tower: &Path,
        rcfg: &RetrievalConfig,
        metrics: &Arc<Metrics>,
        named: NamedFn,
    ) -> Result<(Self, two_tower::Paths), LoadError> {
        let dir = tower.parent().unwrap_or_else(|| Path::new("."));
        let err = |e: String| LoadError::Retrieval(format!("{}: {e}", tower.display()));
        let paths = manifest
            .two_tower_paths(dir)
            .map_err(|e| err(e.to_string()))?;
        let r = Retriever::open(&paths.item_vectors, manifest, dir, rcfg, metrics).map_err(err)?;
        if named(&paths) != Some(tower) {
            return Err(err(format!(
                "the model's metadata names {:?} for this graph, not this file",
                named(&paths)
            )));
        }
        let two_tower = TwoTower::Tower {
            retriever: Arc::new(r),
            user_tower: tower.to_path_buf(),
        };
        Ok((two_tower, paths))
    }

    /// The retriever, or why `/similar` is unavailable.
    fn retriever(&self) -> Result<Arc<Retriever>, String> {
        match self {
            TwoTower::Similar(r) => r.clone(),
            TwoTower::Tower { retriever, .. } => Ok(retriever.clone()),
        }
    }

    /// What `GET /v1/model` shows of it.
    fn info(&self, rcfg: &RetrievalConfig) -> RetrievalInfo {
        let retriever = self.retriever();
        RetrievalInfo {
            mode: rcfg.mode,
            user_tower_path: match self {
                TwoTower::Tower { user_tower, .. } => Some(user_tower.clone()),
                TwoTower::Similar(_) => None,
            },
            item_vectors_path: retriever.as_ref().ok().map(|r| r.vectors_path().into()),
            similar_metric: rcfg.similar_metric,
            similar_unavailable: retriever.as_ref().err().cloned(),
            index: retriever.ok().and_then(|r| r.index_report()),
        }
    }
}

/// The workers' side of a loaded model: one runner per session, the execution provider, the
/// metadata and manifest of the graph they run, the two-tower side, and the additions when
/// the model takes them.
struct Workers {
    runners: Vec<Box<dyn RowRunner>>,
    device: String,
    metadata: BTreeMap<String, String>,
    manifest: ModelManifest,
    two_tower: TwoTower,
    additions: Option<Additions>,
}

/// What every load needs: the ONNX Runtime environment, the item map and its path, the
/// session settings and the number of workers.
struct LoadCtx<'a> {
    env: &'a ort::environment::Environment,
    items: (&'a IdMap, &'a Path),
    scfg: &'a SessionConfig,
    workers: usize,
}

/// The open user tower beside `onnx`, when the model takes additions: `--max_added_items` is
/// positive and the file exists (`sasrec-export` writes it for models with item features).
fn open_tower(onnx: &Path, rcfg: &RetrievalConfig) -> Option<PathBuf> {
    let path = onnx.with_file_name(two_tower::OPEN_USER_TOWER_FILE);
    (rcfg.max_added_items > 0 && path.is_file()).then_some(path)
}

/// `--retrieval exact`: `workers` sessions on `model.onnx` (`onnx`), checked against the item
/// map and the interface and warmed up; the item vectors only for `/similar`.
fn exact_workers(
    ctx: &LoadCtx,
    onnx: &Path,
    rcfg: &RetrievalConfig,
    metrics: &Arc<Metrics>,
) -> Result<Workers, LoadError> {
    let (sessions, device) = build_sessions(ctx.env, onnx, ctx.scfg, ctx.workers)?;
    let (metadata, manifest) = read_manifest(&sessions[0], onnx, ctx.items, check_inputs)?;
    let dir = onnx.parent().unwrap_or_else(|| Path::new("."));
    let two_tower = TwoTower::similar(&manifest, dir, rcfg, metrics);
    let runners = exact_runners(sessions, graph_shape(&manifest), onnx)?;
    Ok(Workers {
        runners,
        device,
        metadata,
        manifest,
        two_tower,
        additions: None,
    })
}

/// `workers` sessions on the user tower `path` of kind `tower` (read for the manifest and
/// checked with [`check_tower`] / [`check_open_tower`]), the retriever over the trained item
/// vectors (with the index under `--retrieval ann`) and one warmed-up [`TowerRunner`] per
/// session; for the open tower, the additions too ([`Additions::load`]). `--retrieval ann`
/// runs `user_tower.onnx` beside `model.onnx`; a model that takes additions runs
/// `user_tower_open.onnx` in either mode.
fn tower_workers(
    ctx: &LoadCtx,
    (path, tower): (&Path, Tower),
    rcfg: &RetrievalConfig,
    metrics: &Arc<Metrics>,
) -> Result<Workers, LoadError> {
    let (check, named): (CheckFn, NamedFn) = match tower {
        Tower::User => (check_tower, user_tower_of),
        Tower::Open => (check_open_tower, open_tower_of),
    };
    let (sessions, device) = build_sessions(ctx.env, path, ctx.scfg, ctx.workers)?;
    let (metadata, manifest) = read_manifest(&sessions[0], path, ctx.items, check)?;
    let (two_tower, paths) = TwoTower::tower(&manifest, path, rcfg, metrics, named)?;
    let retriever = two_tower.retriever().map_err(LoadError::Retrieval)?;
    let additions = match tower {
        Tower::Open => Some(Additions::load(ctx, &paths, &manifest, rcfg)?),
        Tower::User => None,
    };
    let shape = graph_shape(&manifest);
    let mut runners: Vec<Box<dyn RowRunner>> = Vec::with_capacity(sessions.len());
    for session in sessions {
        let runner = TowerRunner::new(session, shape, retriever.clone(), (path, tower))?;
        runners.push(Box::new(runner));
    }
    Ok(Workers {
        runners,
        device,
        metadata,
        manifest,
        two_tower,
        additions,
    })
}

/// Checks a graph's interface against the model's manifest.
type CheckFn = fn(&Session, &ModelManifest) -> Result<(), String>;

/// Which file of the two-tower files a graph must be.
type NamedFn = fn(&two_tower::Paths) -> Option<&Path>;

/// The user tower of the two-tower files.
fn user_tower_of(p: &two_tower::Paths) -> Option<&Path> {
    Some(&p.user_tower)
}

/// The open user tower of the two-tower files.
fn open_tower_of(p: &two_tower::Paths) -> Option<&Path> {
    p.open_user_tower.as_deref()
}

/// What a model that takes additions holds for them: the item tower, the current additions
/// (swapped as a whole), their file and their limit.
#[derive(Debug, Clone)]
struct Additions {
    tower: Arc<ItemTower>,
    added: Arc<AddedItems>,
    path: PathBuf,
    max: usize,
}

impl Additions {
    /// The item tower named by `paths` and the additions file (`--added_items`, else beside
    /// the model) read and embedded; ids the model was trained on are dropped with a warning.
    /// A file that cannot be read, holds invalid features or more than `--max_added_items`
    /// items is an error naming it.
    fn load(
        ctx: &LoadCtx,
        paths: &two_tower::Paths,
        manifest: &ModelManifest,
        rcfg: &RetrievalConfig,
    ) -> Result<Self, LoadError> {
        let tower_path = paths.item_tower.as_deref().ok_or_else(|| {
            LoadError::Retrieval("the model names an open user tower but no item tower".into())
        })?;
        let tower = Arc::new(ItemTower::open(ctx.env, tower_path, ctx.scfg, manifest)?);
        let dir = paths
            .item_vectors
            .parent()
            .unwrap_or_else(|| Path::new("."));
        let path = rcfg
            .added_items
            .clone()
            .unwrap_or_else(|| dir.join(ADDED_ITEMS_FILE));
        let (trained, dim) = (ctx.items.0, manifest.spec.model.hidden_units);
        let mut added = AddedItems::empty(trained.len(), dim);
        if path.exists() {
            let bad = |msg: String| LoadError::Additions(format!("{}: {msg}", path.display()));
            let mut items = read_added(&path).map_err(LoadError::Additions)?;
            items.retain(|it| {
                let trained = trained.index_of(&it.id).is_some();
                if trained {
                    tracing::warn!(item = %it.id, file = %path.display(), "an added item is now a trained item; dropping the addition");
                }
                !trained
            });
            if items.len() > rcfg.max_added_items {
                return Err(bad(format!(
                    "{} items, more than --max_added_items {}",
                    items.len(),
                    rcfg.max_added_items
                )));
            }
            let encoded = tower
                .encode(&items)
                .map_err(|(i, e)| bad(format!("item {}: {e}", items[i].id)))?;
            let vectors = tower.embed(&encoded).map_err(|e| bad(e.to_string()))?;
            if let Some(i) = tower.first_non_finite(&vectors) {
                let id = &items[i].id;
                return Err(bad(format!(
                    "item {id}: the item tower gives a non-finite vector"
                )));
            }
            added.upsert(items, &vectors);
            tracing::info!(file = %path.display(), items = added.len(), "added items loaded");
        }
        Ok(Self {
            tower,
            added: Arc::new(added),
            path,
            max: rcfg.max_added_items,
        })
    }
}

/// The `items` of `GET /v1/model`.
fn items_info(
    manifest: &ModelManifest,
    additions: Option<&Additions>,
    rcfg: &RetrievalConfig,
) -> ItemsInfo {
    let open = manifest
        .two_tower
        .as_ref()
        .and_then(|f| f.open_user_tower.as_ref());
    let unavailable = match (additions, open) {
        (Some(_), _) => None,
        (None, Some(_)) if rcfg.max_added_items == 0 => Some(
            "--max_added_items is 0 (start the server with --max_added_items N to add up to N \
             items)"
                .to_string(),
        ),
        (None, Some(name)) => Some(format!(
            "the model names the open user tower {name}, but it is not beside the model; \
             export again with sasrec-export --onnx"
        )),
        (None, None) => Some(
            "the model has no item tower and open user tower (sasrec-export --onnx writes \
             them for models trained with --item_features)"
                .to_string(),
        ),
    };
    ItemsInfo {
        trained: manifest.spec.model.num_items,
        added: additions.map_or(0, |a| a.added.len()),
        max_added: additions.map(|a| a.max),
        item_tower_path: additions.map(|a| a.tower.path().to_path_buf()),
        added_items_path: additions.map(|a| a.path.clone()),
        additions_unavailable: unavailable,
    }
}

/// A model ready to serve.
#[derive(Debug)]
pub struct LoadedModel {
    info: ModelInfo,
    manifest: ModelManifest,
    items: Arc<IdMap>,
    batcher: Arc<Batcher>,
    retriever: Result<Arc<Retriever>, String>,
    additions: Option<Additions>,
}

impl LoadedModel {
    /// [`LoadedModel::load_with`] under `--retrieval exact` with the default settings.
    pub fn load(
        path: &Path,
        scfg: &SessionConfig,
        bcfg: &BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        Self::load_with(path, scfg, bcfg, &RetrievalConfig::default(), metrics)
    }

    /// Loads `path` (a `.onnx` file or a directory with `model.onnx`): creates one session
    /// per worker (on `model.onnx`, or on the user tower beside it under `--retrieval ann`),
    /// reads the manifest from the first, checks the item map and the interface, opens the
    /// two-tower files ([module docs](self)), runs one warm-up inference per session and
    /// starts the workers.
    pub fn load_with(
        path: &Path,
        scfg: &SessionConfig,
        bcfg: &BatchConfig,
        rcfg: &RetrievalConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let (onnx, items_path) = resolve_paths(path)?;
        let env = runtime::environment(&runtime::resolve_dylib(scfg.ort_lib.as_deref())?)?;
        let items = load_items(&items_path)?;
        let ctx = LoadCtx {
            env,
            items: (&items, &items_path),
            scfg,
            workers: bcfg.workers.max(1),
        };
        let w = match (open_tower(&onnx, rcfg), rcfg.mode) {
            (Some(open), _) => tower_workers(&ctx, (&open, Tower::Open), rcfg, &metrics)?,
            (None, Retrieval::Exact) => exact_workers(&ctx, &onnx, rcfg, &metrics)?,
            (None, Retrieval::Ann) => {
                let user = onnx.with_file_name(two_tower::USER_TOWER_FILE);
                tower_workers(&ctx, (&user, Tower::User), rcfg, &metrics)?
            }
        };
        let batcher = Batcher::spawn(w.runners, *bcfg, metrics)
            .map_err(|e| LoadError::Runtime(format!("starting worker threads: {e}")))?;
        let run = (w.device, batcher.workers());
        let retrieval = w.two_tower.info(rcfg);
        let items_info = items_info(&w.manifest, w.additions.as_ref(), rcfg);
        let files = (onnx, items_path.clone());
        let info = ModelInfo::new(&w.manifest, files, run, w.metadata, (retrieval, items_info));
        Ok(Self {
            info,
            manifest: w.manifest,
            items: Arc::new(items),
            batcher: Arc::new(batcher),
            retriever: w.two_tower.retriever(),
            additions: w.additions,
        })
    }

    /// `POST /v1/items`: the model with `items` added (new ids) or updated (ids added before),
    /// embedded by the item tower from their features, and the additions file rewritten
    /// (atomically) first; everything else is shared with `self`, which keeps serving the
    /// requests that hold it. Blocking (runs the item tower, writes the file). Errors: 409
    /// `no_additions` when the model takes none, 422 `invalid_items` (repeated or trained
    /// ids, too many items) or `invalid_features` naming the item and column, 500
    /// `add_failed` when the file cannot be written (nothing changes then).
    pub fn add_items(&self, items: Vec<NewItem>) -> Result<(LoadedModel, Upserted), ApiError> {
        let additions = self.additions.as_ref().ok_or_else(|| ApiError::Conflict {
            code: "no_additions",
            message: self
                .info
                .items
                .additions_unavailable
                .clone()
                .unwrap_or_default(),
        })?;
        self.check_new_items(additions, &items)?;
        let encoded = additions.tower.encode(&items).map_err(|(i, e)| {
            ApiError::invalid(
                "invalid_features",
                format!("items[{i}] (id {}): {e}", items[i].id),
            )
        })?;
        let vectors = additions
            .tower
            .embed(&encoded)
            .map_err(|e| ApiError::Internal(format!("item tower: {e}")))?;
        if let Some(i) = additions.tower.first_non_finite(&vectors) {
            return Err(ApiError::invalid(
                "invalid_features",
                format!(
                    "items[{i}] (id {}): the item tower gives a non-finite vector for these \
                     features (a value too large?)",
                    items[i].id
                ),
            ));
        }
        let mut added = (*additions.added).clone();
        let done = added.upsert(items, &vectors);
        added
            .save(&additions.path)
            .map_err(|e| ApiError::AddFailed(format!("{}: {e}", additions.path.display())))?;
        Ok((self.with_added(Arc::new(added)), done))
    }

    /// `items` can be added: distinct ids, none a trained item, and no more than
    /// `--max_added_items` added items afterwards (422 `invalid_items` naming the first
    /// offender).
    fn check_new_items(&self, additions: &Additions, items: &[NewItem]) -> Result<(), ApiError> {
        let bad = |msg: String| ApiError::invalid("invalid_items", msg);
        let mut seen = std::collections::HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if !seen.insert(item.id.as_str()) {
                return Err(bad(format!("items[{i}]: id {} appears twice", item.id)));
            }
            if self.items.index_of(&item.id).is_some() {
                return Err(bad(format!(
                    "items[{i}]: id {} is a trained item; its vector comes from training",
                    item.id
                )));
            }
        }
        let new = additions
            .added
            .count_new(items.iter().map(|it| it.id.as_str()));
        if additions.added.len() + new > additions.max {
            return Err(bad(format!(
                "{new} new items would make {} added items, more than --max_added_items {}",
                additions.added.len() + new,
                additions.max
            )));
        }
        Ok(())
    }

    /// This model with the additions `added` (everything else shared).
    fn with_added(&self, added: Arc<AddedItems>) -> LoadedModel {
        let mut info = self.info.clone();
        info.items.added = added.len();
        let additions = self.additions.clone().map(|a| Additions { added, ..a });
        LoadedModel {
            info,
            manifest: self.manifest.clone(),
            items: self.items.clone(),
            batcher: self.batcher.clone(),
            retriever: self.retriever.clone(),
            additions,
        }
    }

    /// Raw id ↔ index over the trained and the added items.
    pub fn catalogue(&self) -> Catalogue<'_> {
        Catalogue {
            trained: &self.items,
            added: self.additions.as_ref().map(|a| &*a.added),
        }
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

    /// Validates `req` and builds its graph row ([`request::prepare`]), which carries this
    /// model's additions.
    pub fn prepare(&self, req: &RecommendRequest) -> Result<Prepared, ApiError> {
        let mut p = request::prepare(req, &self.manifest.spec, &self.catalogue(), &self.info.id)?;
        p.row.added = self.additions.as_ref().map(|a| a.added.clone());
        Ok(p)
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
            items: self.scored_items(result),
            model: self.info.id.clone(),
            unknown_items: unknown,
        }
    }

    /// The item map of the trained items (index ↔ raw id).
    pub fn items(&self) -> &IdMap {
        &self.items
    }

    /// Validates a `/similar` request ([`request::prepare_similar`]); 404 `no_item_vectors`
    /// first when the model has no usable item vectors.
    pub fn prepare_similar(&self, req: &SimilarRequest) -> Result<SimilarQuery, ApiError> {
        self.retriever()?;
        request::prepare_similar(req, &Catalogue::trained(&self.items))
    }

    /// The answer to a prepared `/similar` query ([`Retriever::similar`]). Blocking: under
    /// `--retrieval exact` it scores every item.
    pub fn similar(&self, query: SimilarQuery) -> Result<SimilarResponse, ApiError> {
        let found = self
            .retriever()?
            .similar(query.item, query.k, &query.exclude)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let raw = self.items.raw_of(query.item).unwrap_or_default();
        Ok(SimilarResponse {
            model: self.info.id.clone(),
            item: api::raw_id_json(raw),
            items: self.scored_items(found),
            unknown_items: query.unknown,
        })
    }

    /// The retriever of `/similar`, or 404 `no_item_vectors` saying why there is none.
    fn retriever(&self) -> Result<&Retriever, ApiError> {
        self.retriever.as_deref().map_err(|why| {
            ApiError::NoItemVectors(format!(
                "the model {} has no usable item vectors for POST /similar: {why}",
                self.info.id
            ))
        })
    }

    /// `(item index, score)` pairs as raw ids; indices outside the item map are dropped.
    fn scored_items<I: TryInto<u32>>(
        &self,
        ranked: impl IntoIterator<Item = (I, f32)>,
    ) -> Vec<ScoredItem> {
        ranked
            .into_iter()
            .filter_map(|(idx, score)| {
                let raw = self.catalogue().raw_of(idx.try_into().ok()?)?;
                Some(ScoredItem {
                    item: api::raw_id_json(raw),
                    score,
                })
            })
            .collect()
    }
}
