//! The run contract: every name and schema that crosses a crate boundary.
//!
//! `sasrec-train` writes a run directory ([`RunDir`], file names in [`files`]) whose
//! `config.json` starts with a [`ModelSpec`] (kind, network, intervals); `sasrec-export` reads
//! that spec and writes an ONNX graph with the I/O names of [`onnx_io`] and a
//! [`ModelManifest`] as its `metadata_props`; `sasrec-serve` reads the manifest back with
//! [`ModelManifest::from_metadata`]. Beside the model go the [`two_tower`] files (the user
//! tower and the item vectors), which the manifest names. Renaming a file, a graph input or a
//! metadata key is a one-line change here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
pub use crate::config::ModelKind;
use crate::error::{Error, Result};
use crate::time::Intervals;

/// Declares each run-directory file once: its name in [`files`] and its path on [`RunDir`].
macro_rules! run_files {
    ($($(#[$doc:meta])* $konst:ident, $method:ident => $name:literal;)*) => {
        /// File names inside a run directory.
        pub mod files {
            $($(#[$doc])* pub const $konst: &str = $name;)*
        }

        impl RunDir {
            $(
                #[doc = concat!("`", $name, "` in this run directory.")]
                pub fn $method(&self) -> PathBuf {
                    self.root.join(files::$konst)
                }
            )*
        }
    };
}

run_files! {
    /// Resolved hyper-parameters (`RunConfig`, beginning with a `ModelSpec`).
    CONFIG, config => "config.json";
    /// Best weights by validation NDCG@10, reference tensor names.
    MODEL, model => "model.safetensors";
    /// Item index ↔ raw item id.
    ITEMS, items => "items.tsv";
    /// The encoded item features of a model with features (not trained, so not in the
    /// weights): `item_features.<column>.values`, one row per item (docs/MODELS.md §6.2).
    ITEM_FEATURES, item_features => "item_features.safetensors";
    /// One JSON object per evaluation.
    METRICS, metrics => "metrics.jsonl";
    /// The resumable checkpoint (weights, Adam moments, loop state).
    CHECKPOINT, checkpoint => "checkpoint.safetensors";
    /// The training curves.
    PLOT, plot => "training_curve.png";
    /// Final summary.
    SUMMARY, summary => "summary.json";
    /// Metrics of `sasrec-train --inference_only`.
    INFERENCE, inference => "inference.json";
    /// Default name of the exported model.
    ONNX, onnx => "model.onnx";
}

/// A run directory (`--train_dir`) and the paths of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is created or checked).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rank<N>.safetensors` (`--dump_rank_weights`).
    pub fn rank_weights(&self, rank: usize) -> PathBuf {
        self.root.join(format!("rank{rank}.safetensors"))
    }
}

/// What every stage needs to rebuild the network: the head of `config.json` and the
/// `model_config` / `intervals` of the ONNX metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The model kind, redundant with `model` and checked against it.
    pub kind: ModelKind,
    /// The network.
    pub model: ModelConfig,
    /// TiSASRec interval settings; `Some` exactly for time-aware models.
    #[serde(default)]
    pub intervals: Option<Intervals>,
}

impl ModelSpec {
    /// The spec of `model`, its kind derived; `intervals` is dropped for models without time.
    pub fn new(model: ModelConfig, intervals: Option<Intervals>) -> Self {
        let intervals = intervals.filter(|_| model.is_time_aware());
        Self {
            kind: model.kind(),
            model,
            intervals,
        }
    }

    /// The invariants: a valid network, `kind` naming it, and `intervals` present with
    /// `span == time_span` exactly when the model is time-aware.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.model
            .validate()
            .map_err(|e| format!("invalid model config: {e}"))?;
        let kind = self.model.kind();
        if self.kind != kind {
            return Err(format!(
                "`kind` is `{}` but the model config describes `{kind}`",
                self.kind
            ));
        }
        match (&self.intervals, self.model.is_time_aware()) {
            (None, true) => Err(format!(
                "`{kind}` is time-aware but `intervals` (time unit and span) is missing"
            )),
            (Some(iv), true) if iv.span != self.model.time_span => Err(format!(
                "`intervals.span` {} differs from `model.time_span` {}",
                iv.span, self.model.time_span
            )),
            (Some(_), false) => Err(format!("`{kind}` has no time but `intervals` is set")),
            _ => Ok(()),
        }
    }

    /// Reads and validates the spec at the head of a run's `config.json` (other fields are
    /// ignored); errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config(format!("{}: {msg}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec: ModelSpec = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a sasrec-train config.json: {e}")))?;
        spec.validate().map_err(bad)?;
        Ok(spec)
    }
}

/// The exported graph's input and output names (interface table in sasrec-export's `graph`).
pub mod onnx_io {
    /// Input: the left-padded item window, int64 `[batch, maxlen]`.
    pub const SEQ: &str = "seq";
    /// Input of time-aware models: interval buckets, int64 `[batch, maxlen, maxlen]`.
    pub const TIME_MATRIX: &str = "time_matrix";
    /// Input: item indices excluded from the top-k, int64 `[batch, num_exclude]`.
    pub const EXCLUDE: &str = "exclude";
    /// Input: the number of items to return, int64 `[1]`.
    pub const K: &str = "k";
    /// Output: all scores, float32 `[batch, num_items + 1]`.
    pub const SCORES: &str = "scores";
    /// Output: top-k scores, float32 `[batch, k]`.
    pub const TOPK_SCORES: &str = "topk_scores";
    /// Output: top-k item indices, int64 `[batch, k]`.
    pub const TOPK_ITEMS: &str = "topk_items";
    /// The outputs, in graph order.
    pub const OUTPUTS: [&str; 3] = [SCORES, TOPK_SCORES, TOPK_ITEMS];

    /// The inputs, in graph order: the [`history_inputs`], then `exclude` and `k`.
    pub fn inputs(time_aware: bool) -> Vec<&'static str> {
        let mut v = history_inputs(time_aware);
        v.extend([EXCLUDE, K]);
        v
    }

    /// The inputs that describe the user's history: `seq`, and `time_matrix` for time-aware
    /// models (the whole input of the user tower).
    pub fn history_inputs(time_aware: bool) -> Vec<&'static str> {
        if time_aware {
            vec![SEQ, TIME_MATRIX]
        } else {
            vec![SEQ]
        }
    }
}

/// The two-tower artifacts `sasrec-export --onnx` writes beside `model.onnx`, from the same
/// model code: `score(u, i) = user_vector(u) · item_vectors[i]`, equal to `model.onnx`'s
/// `scores` (docs/MODELS.md §5). `model.onnx`'s metadata names them ([`two_tower::Files`]);
/// the server finds them with [`ModelManifest::two_tower_paths`].
pub mod two_tower {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use crate::error::{Error, Result};

    /// The user tower: `seq` (and `time_matrix` for time-aware models) → [`USER_VECTOR`].
    pub const USER_TOWER_FILE: &str = "user_tower.onnx";
    /// Output of the user tower: the hidden state at the last position, float32 `[batch, d]`.
    pub const USER_VECTOR: &str = "user_vector";
    /// The user tower's outputs, in graph order.
    pub const OUTPUTS: [&str; 1] = [USER_VECTOR];
    /// The scoring table: a safetensors file holding [`ITEM_VECTORS_TENSOR`], float32
    /// `[num_items + 1, d]`, row = item index, row 0 = padding (never recommended).
    pub const ITEM_VECTORS_FILE: &str = "item_vectors.safetensors";
    /// The tensor's name in [`ITEM_VECTORS_FILE`].
    pub const ITEM_VECTORS_TENSOR: &str = "item_vectors";
    /// The approximate nearest-neighbour index over rows 1..=I of the item vectors (key = item
    /// index, metric = inner product), built by `sasrec-export --ann` or by the server.
    pub const ANN_INDEX_FILE: &str = "items.usearch";
    /// The item tower of a model with item features: each feature column's encoded values →
    /// [`ITEM_VECTOR`] (docs/MODELS.md §6.3), so that a server can embed items it has never
    /// seen.
    pub const ITEM_TOWER_FILE: &str = "item_tower.onnx";
    /// Output of the item tower: the features' part of `e(i)`, float32 `[batch, d]`.
    pub const ITEM_VECTOR: &str = "item_vector";
    /// Prefix of the item tower's inputs: `item_features.<column>`, one per feature column.
    pub const ITEM_FEATURES_PREFIX: &str = "item_features.";
    /// The open user tower of a model with item features: the user tower with the item table
    /// as the input [`ITEM_ROWS`] instead of a weight, so that a server can read items added
    /// after training in histories (docs/MODELS.md §6.5).
    pub const OPEN_USER_TOWER_FILE: &str = "user_tower_open.onnx";
    /// Input of the open user tower: float32 `[rows, d]`, the item vectors that `seq` indexes
    /// (row 0 = the padding row; `seq` holds row numbers of this table).
    pub const ITEM_ROWS: &str = "item_rows";

    /// Metadata key of the scoring model naming its user tower.
    pub const USER_TOWER_KEY: &str = "user_tower";
    /// Metadata key of the scoring model naming its item vectors.
    pub const ITEM_VECTORS_KEY: &str = "item_vectors";
    /// Metadata key of the scoring model naming its item tower (models with item features).
    pub const ITEM_TOWER_KEY: &str = "item_tower";
    /// Metadata key of the scoring model naming its open user tower (models with item
    /// features).
    pub const OPEN_USER_TOWER_KEY: &str = "user_tower_open";

    /// The `__metadata__` keys of [`ITEM_VECTORS_FILE`] (values are text, as in every
    /// safetensors header).
    pub mod meta {
        /// Lower-case hex SHA-256 of the `model.safetensors` the table came from.
        pub const SOURCE_SHA256: &str = "source_sha256";
        /// I, the number of items (the table has I + 1 rows).
        pub const NUM_ITEMS: &str = "num_items";
        /// d, the size of a vector (`hidden_units`).
        pub const DIM: &str = "dim";
        /// The model kind (`sasrec`, `tisasrec-mhc`, …).
        pub const KIND: &str = "kind";
    }

    /// The user tower's inputs, in graph order: `model.onnx`'s without `exclude` and `k`.
    pub fn inputs(time_aware: bool) -> Vec<&'static str> {
        super::onnx_io::history_inputs(time_aware)
    }

    /// The open user tower's inputs, in graph order: the user tower's, then [`ITEM_ROWS`].
    pub fn open_inputs(time_aware: bool) -> Vec<&'static str> {
        let mut names = inputs(time_aware);
        names.push(ITEM_ROWS);
        names
    }

    /// The item tower's inputs, in graph order: `item_features.<column>` for each column of
    /// `schema` (token columns int64 `[batch, width]` value ids, 0 = none; numeric and dense
    /// columns float32 `[batch, width]`, numeric standardised by the schema's mean and std).
    pub fn item_tower_inputs(schema: &crate::features::FeatureSchema) -> Vec<String> {
        schema
            .columns
            .iter()
            .map(|c| format!("{ITEM_FEATURES_PREFIX}{}", c.name))
            .collect()
    }

    /// The two-tower file names an exported model lists in its metadata (keys
    /// [`USER_TOWER_KEY`] and [`ITEM_VECTORS_KEY`]), relative to the model's directory.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Files {
        /// The user tower (`.onnx`).
        pub user_tower: String,
        /// The item vectors (`.safetensors`).
        pub item_vectors: String,
        /// The item tower (`.onnx`), for models with item features.
        pub item_tower: Option<String>,
        /// The open user tower (`.onnx`), for models with item features.
        pub open_user_tower: Option<String>,
    }

    impl Default for Files {
        /// [`USER_TOWER_FILE`] and [`ITEM_VECTORS_FILE`], what `sasrec-export` writes.
        fn default() -> Self {
            Self {
                user_tower: USER_TOWER_FILE.into(),
                item_vectors: ITEM_VECTORS_FILE.into(),
                item_tower: None,
                open_user_tower: None,
            }
        }
    }

    /// The two-tower files of a model directory, each checked to exist.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Paths {
        /// The user tower (its `.onnx.data`, when split, lies beside it).
        pub user_tower: PathBuf,
        /// The item vectors.
        pub item_vectors: PathBuf,
        /// The item tower, for models with item features.
        pub item_tower: Option<PathBuf>,
        /// The open user tower, for models with item features.
        pub open_user_tower: Option<PathBuf>,
    }

    impl Files {
        /// These files with the item tower [`ITEM_TOWER_FILE`] and the open user tower
        /// [`OPEN_USER_TOWER_FILE`].
        pub fn with_item_tower(self) -> Self {
            Self {
                item_tower: Some(ITEM_TOWER_FILE.into()),
                open_user_tower: Some(OPEN_USER_TOWER_FILE.into()),
                ..self
            }
        }

        /// The metadata entries (`user_tower`, `item_vectors`; `item_tower` and
        /// `user_tower_open` when set).
        pub(super) fn put(&self, m: &mut BTreeMap<String, String>) {
            m.insert(USER_TOWER_KEY.into(), self.user_tower.clone());
            m.insert(ITEM_VECTORS_KEY.into(), self.item_vectors.clone());
            if let Some(t) = &self.item_tower {
                m.insert(ITEM_TOWER_KEY.into(), t.clone());
            }
            if let Some(t) = &self.open_user_tower {
                m.insert(OPEN_USER_TOWER_KEY.into(), t.clone());
            }
        }

        /// The names in `metadata`: `None` when neither key is there (a model exported before
        /// the two-tower files), an error when only one is or a value is not a plain file name.
        pub(super) fn from_metadata(
            metadata: &BTreeMap<String, String>,
        ) -> std::result::Result<Option<Self>, String> {
            let name = |key: &str| match metadata.get(key) {
                Some(v) if is_plain_name(v) => Ok(Some(v.clone())),
                Some(v) => Err(format!("metadata `{key}` = `{v}` is not a file name")),
                None => Ok(None),
            };
            match (name(USER_TOWER_KEY)?, name(ITEM_VECTORS_KEY)?) {
                (Some(user_tower), Some(item_vectors)) => Ok(Some(Self {
                    user_tower,
                    item_vectors,
                    item_tower: name(ITEM_TOWER_KEY)?,
                    open_user_tower: name(OPEN_USER_TOWER_KEY)?,
                })),
                (None, None) => Ok(None),
                (Some(_), None) => Err(format!(
                    "metadata has `{USER_TOWER_KEY}` but no `{ITEM_VECTORS_KEY}`"
                )),
                (None, Some(_)) => Err(format!(
                    "metadata has `{ITEM_VECTORS_KEY}` but no `{USER_TOWER_KEY}`"
                )),
            }
        }

        /// The files in `dir`, each checked to be an existing file; the error names the missing
        /// one and says how to make it.
        pub fn locate(&self, dir: &Path) -> Result<Paths> {
            let find = |name: &str| {
                let path = dir.join(name);
                if path.is_file() {
                    return Ok(path);
                }
                Err(Error::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "two-tower file named in the model's metadata is missing (copy it with \
                         the model, or export again with sasrec-export --onnx)",
                    ),
                ))
            };
            Ok(Paths {
                user_tower: find(&self.user_tower)?,
                item_vectors: find(&self.item_vectors)?,
                item_tower: self.item_tower.as_deref().map(find).transpose()?,
                open_user_tower: self.open_user_tower.as_deref().map(find).transpose()?,
            })
        }
    }

    /// A bare file name: no directory part, not `.` or `..`.
    fn is_plain_name(v: &str) -> bool {
        !v.is_empty() && !v.contains(['/', '\\']) && v != "." && v != ".."
    }
}

/// Which graph an exported file holds; the metadata key `tower` is `user` for the user tower,
/// `user_open` for the open user tower, `item` for the item tower and absent for the scoring
/// model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphRole {
    /// `model.onnx`: scores and top-k ([`onnx_io`]).
    #[default]
    Scoring,
    /// `user_tower.onnx`: the user vector ([`two_tower`]).
    UserTower,
    /// `item_tower.onnx`: an item's vector from its features ([`two_tower::ITEM_TOWER_FILE`]).
    ItemTower,
    /// `user_tower_open.onnx`: the user vector from the history and the item rows it reads
    /// ([`two_tower::OPEN_USER_TOWER_FILE`]).
    OpenUserTower,
}

impl GraphRole {
    /// The graph's inputs for a model of `cfg`, in graph order (the item tower's: none when
    /// `cfg` has no item features).
    pub fn inputs(self, cfg: &ModelConfig) -> Vec<String> {
        let time_aware = cfg.is_time_aware();
        let owned = |v: Vec<&str>| v.into_iter().map(String::from).collect();
        match self {
            GraphRole::Scoring => owned(onnx_io::inputs(time_aware)),
            GraphRole::UserTower => owned(two_tower::inputs(time_aware)),
            GraphRole::OpenUserTower => owned(two_tower::open_inputs(time_aware)),
            GraphRole::ItemTower => cfg
                .item_features
                .as_ref()
                .map_or_else(Vec::new, |f| two_tower::item_tower_inputs(&f.schema)),
        }
    }

    /// The graph's outputs, in graph order.
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            GraphRole::Scoring => &onnx_io::OUTPUTS,
            GraphRole::UserTower | GraphRole::OpenUserTower => &two_tower::OUTPUTS,
            GraphRole::ItemTower => &[two_tower::ITEM_VECTOR],
        }
    }

    /// The metadata value of `tower` (`None` for the scoring model).
    fn tower_name(self) -> Option<&'static str> {
        match self {
            GraphRole::Scoring => None,
            GraphRole::UserTower => Some(keys::USER),
            GraphRole::OpenUserTower => Some(keys::USER_OPEN),
            GraphRole::ItemTower => Some(keys::ITEM),
        }
    }

    /// The role named by `metadata`'s `tower` key (absent: the scoring model).
    fn from_metadata(metadata: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        match metadata.get(keys::TOWER).map(String::as_str) {
            None => Ok(GraphRole::Scoring),
            Some(keys::USER) => Ok(GraphRole::UserTower),
            Some(keys::ITEM) => Ok(GraphRole::ItemTower),
            Some(keys::USER_OPEN) => Ok(GraphRole::OpenUserTower),
            Some(v) => Err(format!(
                "metadata `{}` = `{v}` is not `{}`, `{}` or `{}`",
                keys::TOWER,
                keys::USER,
                keys::USER_OPEN,
                keys::ITEM
            )),
        }
    }
}

/// Metadata keys of an exported model whose values the manifest is rebuilt from; every
/// other key is derived from them and checked on reading.
mod keys {
    pub const MODEL_CONFIG: &str = "model_config";
    pub const INTERVALS: &str = "intervals";
    pub const SOURCE_SHA256: &str = "source_sha256";
    pub const GRAPH_VARIANT: &str = "graph_variant";
    pub const VERSION: &str = "sasrec_rs_version";
    /// Present (= [`USER`], [`USER_OPEN`] or [`ITEM`]) on the towers only
    /// ([`super::GraphRole`]).
    pub const TOWER: &str = "tower";
    pub const USER: &str = "user";
    pub const USER_OPEN: &str = "user_open";
    pub const ITEM: &str = "item";
}

/// What an exported model says about itself (its ONNX `metadata_props`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelManifest {
    /// Kind, network and intervals.
    pub spec: ModelSpec,
    /// Lower-case hex SHA-256 of the `model.safetensors` the weights came from.
    pub source_sha256: String,
    /// Which forward was recorded (`last_position` / `full_sequence`).
    pub graph_variant: String,
    /// The sasrec-rs version that wrote it.
    pub version: String,
    /// Which graph the file holds (the scoring model or the user tower).
    pub role: GraphRole,
    /// The two-tower files beside the model; `None` for models exported before them.
    pub two_tower: Option<two_tower::Files>,
}

impl ModelManifest {
    /// A manifest written by this version.
    pub fn new(spec: ModelSpec, source_sha256: String, graph_variant: &str) -> Self {
        Self {
            spec,
            source_sha256,
            graph_variant: graph_variant.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: GraphRole::Scoring,
            two_tower: None,
        }
    }

    /// This manifest naming the two-tower files `files` beside the model.
    pub fn with_two_tower(self, files: two_tower::Files) -> Self {
        Self {
            two_tower: Some(files),
            ..self
        }
    }

    /// This manifest for the graph `role` of the same model.
    pub fn with_role(self, role: GraphRole) -> Self {
        Self { role, ..self }
    }

    /// The two-tower files of the model in `dir` (the directory of the `.onnx` this manifest
    /// was read from), each checked to exist; errors name the missing file, or the directory
    /// when the model was exported before the two-tower files.
    pub fn two_tower_paths(&self, dir: &Path) -> Result<two_tower::Paths> {
        match &self.two_tower {
            Some(files) => files.locate(dir),
            None => Err(Error::Data(format!(
                "{}: the model {} names no two-tower files (exported before them): export it \
                 again with sasrec-export --onnx",
                dir.display(),
                self.id()
            ))),
        }
    }

    /// `<kind>@<first 12 hex digits of the source digest>`, the id in every response.
    pub fn id(&self) -> String {
        let d = &self.source_sha256;
        format!("{}@{}", self.spec.kind, &d[..d.len().min(12)])
    }

    /// The `metadata_props` entries, sorted by key.
    ///
    /// Keys: `kind`, `maxlen`, `num_items`, `hidden_units`, `num_blocks`, `num_heads`,
    /// `norm_first`, `block_wiring` (plain models), `time_aware`, `time_unit` / `time_span` (`none` without time), `mhc`
    /// (`true`/`false`) and, for mHC, `mhc_expansion_rate`, `mhc_sinkhorn_iter`, `mhc_hres`,
    /// `mhc_init_gate`, `mhc_no_amp`; `model_config` and `intervals` (JSON, as in
    /// `config.json`), `source_sha256`, `source_file`, `sasrec_rs_version`, `graph_variant`,
    /// the interface names `inputs` / `outputs` (the [`GraphRole`]'s), `tower` = `user` on
    /// the user tower, and the two-tower file names `user_tower` / `item_vectors` when set.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.derived();
        let json = |v: serde_json::Result<String>| v.expect("config types serialise");
        m.insert(
            keys::MODEL_CONFIG.into(),
            json(serde_json::to_string(&self.spec.model)),
        );
        m.insert(
            keys::INTERVALS.into(),
            json(serde_json::to_string(&self.spec.intervals)),
        );
        m.insert(keys::SOURCE_SHA256.into(), self.source_sha256.clone());
        m.insert(keys::GRAPH_VARIANT.into(), self.graph_variant.clone());
        m.insert(keys::VERSION.into(), self.version.clone());
        if let Some(tower) = self.role.tower_name() {
            m.insert(keys::TOWER.into(), tower.into());
        }
        if let Some(files) = &self.two_tower {
            files.put(&mut m);
        }
        m
    }

    /// The manifest of `metadata`, rebuilt from `model_config`, `intervals`, `source_sha256`,
    /// `graph_variant`, `sasrec_rs_version`, `tower` and the two-tower file names (the last
    /// two optional: models exported before them read as the scoring model without them),
    /// validated, and with every derived key (`kind`, `maxlen`, `inputs`, …) checked against
    /// them. Extra keys are allowed.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let get = |k: &str| {
            metadata
                .get(k)
                .cloned()
                .ok_or_else(|| format!("metadata has no `{k}` (not written by sasrec-export?)"))
        };
        let model: ModelConfig = serde_json::from_str(&get(keys::MODEL_CONFIG)?)
            .map_err(|e| format!("metadata `{}` is not valid: {e}", keys::MODEL_CONFIG))?;
        let intervals: Option<Intervals> = serde_json::from_str(&get(keys::INTERVALS)?)
            .map_err(|e| format!("metadata `{}` is not valid: {e}", keys::INTERVALS))?;
        let spec = ModelSpec {
            kind: model.kind(),
            model,
            intervals,
        };
        spec.validate().map_err(|e| format!("metadata: {e}"))?;
        let manifest = Self {
            spec,
            source_sha256: get(keys::SOURCE_SHA256)?,
            graph_variant: get(keys::GRAPH_VARIANT)?,
            version: get(keys::VERSION)?,
            role: GraphRole::from_metadata(metadata)?,
            two_tower: two_tower::Files::from_metadata(metadata)?,
        };
        for (k, want) in manifest.derived() {
            let got = get(&k)?;
            if got != want {
                return Err(format!(
                    "metadata `{k}` = `{got}` disagrees with `{}` (which gives `{want}`)",
                    keys::MODEL_CONFIG
                ));
            }
        }
        Ok(manifest)
    }

    /// The keys derived from the spec: flat copies for people and tools reading the file.
    fn derived(&self) -> BTreeMap<String, String> {
        let cfg = &self.spec.model;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("kind", self.spec.kind.to_string());
        put("maxlen", cfg.maxlen.to_string());
        put("num_items", cfg.num_items.to_string());
        put("hidden_units", cfg.hidden_units.to_string());
        put("num_blocks", cfg.num_blocks.to_string());
        put("num_heads", cfg.num_heads.to_string());
        put("norm_first", cfg.norm_first.to_string());
        if cfg.mhc.is_none() {
            put("block_wiring", cfg.wiring().as_str().to_string());
        }
        put("time_aware", cfg.is_time_aware().to_string());
        let (unit, span) = match &self.spec.intervals {
            Some(iv) => (iv.unit.to_string(), iv.span.to_string()),
            None => ("none".into(), "none".into()),
        };
        put("time_unit", unit);
        put("time_span", span);
        put("mhc", cfg.mhc.is_some().to_string());
        if let Some(h) = &cfg.mhc {
            put("mhc_expansion_rate", h.expansion_rate.to_string());
            put("mhc_sinkhorn_iter", h.sinkhorn_iter.to_string());
            put("mhc_hres", h.h_res.as_str().into());
            put("mhc_init_gate", h.init_gate.to_string());
            put("mhc_no_amp", h.no_amp.to_string());
        }
        put("source_file", files::MODEL.into());
        put("inputs", self.role.inputs(cfg).join(","));
        put("outputs", self.role.outputs().join(","));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backbone, MhcConfig};
    use crate::time::TimeUnit;

    fn tisasrec_mhc() -> ModelSpec {
        let mut model = ModelConfig::sasrec_ml1m();
        model.backbone = Backbone::Tisasrec;
        model.time_span = 256;
        model.mhc = Some(MhcConfig::default());
        ModelSpec::new(
            model,
            Some(Intervals {
                unit: TimeUnit::Personal,
                span: 256,
            }),
        )
    }

    #[test]
    fn manifest_round_trips_through_metadata() {
        for spec in [
            tisasrec_mhc(),
            ModelSpec::new(ModelConfig::sasrec_ml1m(), None),
        ] {
            let m = ModelManifest::new(spec, "ab".repeat(32), "last_position");
            let md = m.to_metadata();
            assert_eq!(ModelManifest::from_metadata(&md).unwrap(), m);
            assert_eq!(md["kind"], m.spec.kind.as_str());
        }
        let m = ModelManifest::new(tisasrec_mhc(), "cd".repeat(32), "last_position");
        assert_eq!(m.id(), "tisasrec-mhc@cdcdcdcdcdcd");
        let md = m.to_metadata();
        assert_eq!(md["inputs"], "seq,time_matrix,exclude,k");
        assert_eq!(md["time_unit"], "personal");
        assert_eq!(md["mhc_hres"], "sinkhorn");
    }

    #[test]
    fn manifest_rejects_missing_and_inconsistent_keys() {
        let m = ModelManifest::new(tisasrec_mhc(), "ef".repeat(32), "last_position");
        let mut md = m.to_metadata();
        md.insert("maxlen".into(), "50".into());
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata `maxlen` = `50` disagrees with `model_config` (which gives `200`)"
        );
        let mut md = m.to_metadata();
        md.remove("source_sha256");
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata has no `source_sha256` (not written by sasrec-export?)"
        );
        let mut md = m.to_metadata();
        md.insert("intervals".into(), "null".into());
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata: `tisasrec-mhc` is time-aware but `intervals` (time unit and span) is \
             missing"
        );
    }

    #[test]
    fn manifest_names_the_two_tower_files_and_the_tower() {
        let m = ModelManifest::new(tisasrec_mhc(), "ab".repeat(32), "last_position")
            .with_two_tower(two_tower::Files::default());
        let md = m.to_metadata();
        assert_eq!(md["user_tower"], "user_tower.onnx");
        assert_eq!(md["item_vectors"], "item_vectors.safetensors");
        assert!(!md.contains_key("tower"));
        assert_eq!(ModelManifest::from_metadata(&md).unwrap(), m);

        let tower = m.clone().with_role(GraphRole::UserTower);
        let md = tower.to_metadata();
        assert_eq!(md["tower"], "user");
        assert_eq!(md["inputs"], "seq,time_matrix");
        assert_eq!(md["outputs"], "user_vector");
        assert_eq!(ModelManifest::from_metadata(&md).unwrap(), tower);

        // a tower's metadata with the scoring model's interface is refused
        let mut md = m.to_metadata();
        md.insert("tower".into(), "user".into());
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata `inputs` = `seq,time_matrix,exclude,k` disagrees with `model_config` \
             (which gives `seq,time_matrix`)"
        );
        md.insert("tower".into(), "item".into());
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata `inputs` = `seq,time_matrix,exclude,k` disagrees with `model_config` \
             (which gives ``)"
        );
        md.insert("tower".into(), "items".into());
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata `tower` = `items` is not `user`, `user_open` or `item`"
        );
    }

    #[test]
    fn the_item_tower_names_one_input_per_feature_column() {
        use crate::config::{ItemFeaturesConfig, ItemRepr};
        use crate::features::{FeatureKind, FeatureSchema, SchemaColumn};
        let col = |name: &str, kind| SchemaColumn {
            name: name.into(),
            kind,
            vocab: vec!["x".into()],
            width: 1,
            mean: 0.0,
            std: 1.0,
        };
        let mut model = ModelConfig::sasrec_ml1m();
        model.item_features = Some(ItemFeaturesConfig {
            repr: ItemRepr::Features,
            schema: FeatureSchema {
                columns: vec![
                    col("genres", FeatureKind::Multi),
                    col("year", FeatureKind::Numeric),
                ],
            },
        });
        let spec = ModelSpec::new(model, None);
        let files = two_tower::Files::default().with_item_tower();
        let m = ModelManifest::new(spec, "ab".repeat(32), "last_position")
            .with_two_tower(files)
            .with_role(GraphRole::ItemTower);
        let md = m.to_metadata();
        assert_eq!(md["tower"], "item");
        assert_eq!(md["item_tower"], "item_tower.onnx");
        assert_eq!(md["inputs"], "item_features.genres,item_features.year");
        assert_eq!(md["outputs"], "item_vector");
        assert_eq!(md["user_tower_open"], "user_tower_open.onnx");
        assert_eq!(ModelManifest::from_metadata(&md).unwrap(), m);

        let open = m.with_role(GraphRole::OpenUserTower);
        let md = open.to_metadata();
        assert_eq!(md["tower"], "user_open");
        assert_eq!(md["inputs"], "seq,item_rows");
        assert_eq!(md["outputs"], "user_vector");
        assert_eq!(ModelManifest::from_metadata(&md).unwrap(), open);
    }

    #[test]
    fn old_models_read_without_two_tower_files_and_half_a_pair_is_refused() {
        let m = ModelManifest::new(tisasrec_mhc(), "ab".repeat(32), "last_position");
        let old = ModelManifest::from_metadata(&m.to_metadata()).unwrap();
        assert_eq!(old.two_tower, None);
        assert_eq!(old.role, GraphRole::Scoring);
        let err = old.two_tower_paths(Path::new("/models/a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/models/a: the model tisasrec-mhc@abababababab names no two-tower files (exported \
             before them): export it again with sasrec-export --onnx"
        );

        let full = m.with_two_tower(two_tower::Files::default()).to_metadata();
        let mut md = full.clone();
        md.remove("item_vectors");
        assert_eq!(
            ModelManifest::from_metadata(&md).unwrap_err(),
            "metadata has `user_tower` but no `item_vectors`"
        );
        for bad in ["../user_tower.onnx", "/etc/passwd", "", ".."] {
            let mut md = full.clone();
            md.insert("user_tower".into(), bad.into());
            assert_eq!(
                ModelManifest::from_metadata(&md).unwrap_err(),
                format!("metadata `user_tower` = `{bad}` is not a file name")
            );
        }
    }

    #[test]
    fn two_tower_paths_name_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = ModelManifest::new(tisasrec_mhc(), "ab".repeat(32), "last_position")
            .with_two_tower(two_tower::Files::default());
        std::fs::write(dir.path().join(two_tower::USER_TOWER_FILE), b"onnx").unwrap();
        let err = m.two_tower_paths(dir.path()).unwrap_err().to_string();
        let missing = dir.path().join(two_tower::ITEM_VECTORS_FILE);
        assert!(
            err.starts_with(&format!("{}: two-tower file", missing.display())),
            "{err}"
        );
        std::fs::write(&missing, b"st").unwrap();
        assert_eq!(
            m.two_tower_paths(dir.path()).unwrap(),
            two_tower::Paths {
                user_tower: dir.path().join("user_tower.onnx"),
                item_vectors: missing,
                item_tower: None,
                open_user_tower: None,
            }
        );
    }

    #[test]
    fn spec_checks_kind_and_intervals() {
        let mut s = tisasrec_mhc();
        s.kind = ModelKind::Sasrec;
        assert_eq!(
            s.validate().unwrap_err(),
            "`kind` is `sasrec` but the model config describes `tisasrec-mhc`"
        );
        let mut s = tisasrec_mhc();
        s.intervals.as_mut().unwrap().span = 7;
        assert_eq!(
            s.validate().unwrap_err(),
            "`intervals.span` 7 differs from `model.time_span` 256"
        );
        let json = serde_json::to_string(&tisasrec_mhc()).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"tisasrec-mhc","model":{"#),
            "{json}"
        );
    }

    #[test]
    fn run_dir_names_its_files() {
        let d = RunDir::new("/runs/a");
        assert_eq!(d.config(), Path::new("/runs/a/config.json"));
        assert_eq!(d.checkpoint(), Path::new("/runs/a/checkpoint.safetensors"));
        assert_eq!(d.rank_weights(2), Path::new("/runs/a/rank2.safetensors"));
    }
}
