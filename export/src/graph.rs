//! The exported graphs: `SeqRecModel::forward_with` recorded on an [`OnnxRecorder`], followed
//! by `score_all_items`, the exclusion of given items and `TopK` (the scoring model), or by
//! nothing (the [user tower](self#user-tower)).
//!
//! # Interface
//!
//! | name | type | shape | meaning |
//! | --- | --- | --- | --- |
//! | input `seq` | int64 | `[batch, maxlen]` | left-padded item indices 1..=I, 0 = padding, newest last |
//! | input `time_matrix` (time-aware models only) | int64 | `[batch, maxlen, maxlen]` | interval buckets 0..=`time_span` |
//! | input `exclude` | int64 | `[batch, num_exclude]` | item indices that must not be recommended; 0 = no-op |
//! | input `k` | int64 | `[1]` | how many items `TopK` returns, 1 ≤ k ≤ I+1 |
//! | output `scores` | float32 | `[batch, num_items+1]` | next-item scores; column 0 (padding) = −∞; exclusions **not** applied |
//! | output `topk_scores` | float32 | `[batch, k]` | the k best scores after exclusion, descending |
//! | output `topk_items` | int64 | `[batch, k]` | their item indices (column = item index) |
//!
//! `time_matrix[b]` must be computed by [`sasrec_shared::time`] exactly as in training:
//! `time_codes(unit, timestamps)` for the user's timestamps, then `Intervals::window_matrix`
//! (the newest `maxlen` codes, left-padded), widened to int64.
//! The unit and span are in the model's metadata (`intervals`).
//!
//! `exclude` is applied after a wider `TopK` (see `top_k_excluding`): the `k + num_exclude`
//! best columns are taken and the excluded ones among them dropped, which is exact and never
//! copies `scores`; it costs `batch × (k + num_exclude) × num_exclude` comparisons, so callers
//! with long exclusion lists pass a zero-width `[batch, 0]` tensor and `k + n` instead, and
//! drop the excluded items themselves (as `sasrec-serve` does). Padding zeros in `exclude` are
//! harmless because column 0 is already −∞, so rows of different lengths are right- or
//! left-padded with 0 (passing the `seq` row itself excludes the history), and a zero-width
//! tensor excludes nothing. Ids outside 0..=I match no column and exclude nothing. `k` above
//! I+1 is an ONNX Runtime error; when k exceeds the number of items left after exclusion, the
//! tail of `topk_scores` is −∞ and callers drop those entries.
//!
//! Column 0 of `scores` is −∞ through the `MatMul` itself (see `score_all_items_padded`), whose
//! item side depends only on initializers and is folded by ONNX Runtime into one constant at
//! load time, so a run makes one pass over the `(batch, I+1)` scores for the `MatMul` and one
//! for the `TopK`.
//!
//! # User tower
//!
//! [`record_user_tower`] records the same forward up to the user vector, the row that the
//! scoring graph multiplies with the item table:
//!
//! | name | type | shape | meaning |
//! | --- | --- | --- | --- |
//! | input `seq` | int64 | `[batch, maxlen]` | as above |
//! | input `time_matrix` (time-aware models only) | int64 | `[batch, maxlen, maxlen]` | as above |
//! | output `user_vector` | float32 | `[batch, d]` | the last position's hidden state, d = `hidden_units` |
//!
//! so `scores[b, i] = user_vector[b] · item_vectors[i]` for every item i ≥ 1 (the table is
//! `item_vectors.safetensors`, [`crate::item_vectors`]; docs/MODELS.md §5). The tower holds the
//! item table too (its input side is tied), so it takes the same external-data path as the
//! scoring model.
//!
//! # Open user tower
//!
//! [`record_open_user_tower`] records, for a model with item features, the user tower with the
//! item table taken from an input instead of a weight:
//!
//! | name | type | shape | meaning |
//! | --- | --- | --- | --- |
//! | input `seq` | int64 | `[batch, maxlen]` | row numbers of `item_rows`, 0 = padding, newest last |
//! | input `time_matrix` (time-aware models only) | int64 | `[batch, maxlen, maxlen]` | as above |
//! | input `item_rows` | float32 | `[rows, d]` | the item vectors `seq` reads; row 0 = the padding row |
//! | output `user_vector` | float32 | `[batch, d]` | as the user tower's |
//!
//! Fed the whole item vectors table and the item indices, it is the user tower; fed only the
//! rows a batch reads (renumbered), it gives the same user vectors, and fed vectors of items
//! added after training (from the item tower), it reads those items in histories
//! (docs/MODELS.md §6.5). The only change to the recording is that the parameter
//! `item_emb.weight` of the folded model reads the input ([`OnnxRecorder::param_from_input`]).
//!
//! # Item tower
//!
//! [`record_item_tower`] records, for a model with item features, the features' part of the
//! item vector (`ItemTable::compose` without the ID row, docs/MODELS.md §6.3):
//!
//! | name | type | shape | meaning |
//! | --- | --- | --- | --- |
//! | input `item_features.<f>`, token column f | int64 | `[batch, width_f]` | value ids 1..=V_f of the column's vocabulary, 0 = none |
//! | input `item_features.<g>`, numeric or dense column g | float32 | `[batch, width_g]` | numeric: `(x − mean_g) / std_g` (0 = missing); dense: the vector |
//! | output `item_vector` | float32 | `[batch, d]` | `Σ_f mean E_f[v_f] + Σ_g W_g·x_g` |
//!
//! one input per column in the schema's order; vocabularies, means and standard deviations are
//! in its metadata (`model_config.item_features.schema`). Under `--item_repr features` the
//! output is the item's vector `e(i)` itself; under `id+features` it is `e(i)` of an item
//! without a trained ID row.
//!
//! The names are [`sasrec_shared::run::onnx_io`]'s and [`two_tower`]'s, the metadata
//! [`ModelManifest`]'s (the tower's with `tower` = `user` and its own `inputs` / `outputs`).
//!
//! Everything but the batch dimension is fixed: `maxlen` is baked into the position tables.

use sasrec_models::{DType, Ops, SeqRecModel};
use sasrec_shared::config::ModelConfig;
use sasrec_shared::run::onnx_io::{EXCLUDE, K, SCORES, SEQ, TIME_MATRIX, TOPK_ITEMS, TOPK_SCORES};
use sasrec_shared::run::two_tower::{self, ITEM_ROWS, ITEM_VECTOR, USER_VECTOR};
use sasrec_shared::run::{GraphRole, ModelManifest, ModelSpec};
use sasrec_shared::time::Intervals;

use crate::error::{Error, Result};
use crate::proto::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::recorder::{Dim, OnnxRecorder, Value};

/// ONNX IR version written (ONNX Runtime 1.23 rejects IR versions above 11).
pub const IR_VERSION: i64 = 10;
/// Default-domain opset (LayerNormalization needs ≥ 17).
pub const OPSET: i64 = 17;
/// `producer_name` of the model.
pub const PRODUCER: &str = "sasrec-rs";

/// Which forward the graph records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// `last_only = true`: the final block queries only the last position (what serving uses).
    #[default]
    LastPosition,
    /// `last_only = false`, then the last row: every position is computed in every block. Same
    /// outputs, more work; kept to measure what the last-position path saves.
    FullSequence,
}

impl Variant {
    /// The metadata value (`last_position` / `full_sequence`).
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::LastPosition => "last_position",
            Variant::FullSequence => "full_sequence",
        }
    }
}

/// Where the weights came from, recorded in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Lower-case hex SHA-256 of the `model.safetensors` the weights were loaded from.
    pub sha256: String,
    /// TiSASRec interval settings (unit and span), `None` for models without time.
    pub intervals: Option<Intervals>,
    /// Whether an item tower is written beside the model (a model with item features).
    pub item_tower: bool,
}

/// Records the scoring graph of `model` (interface in the [module docs](self)), in four phases:
/// the graph inputs, the user vector, the scores with their top-k, the outputs.
pub fn record(model: &SeqRecModel, variant: Variant) -> Result<GraphProto> {
    let cfg = model.config();
    let columns = cfg.num_items as i64 + 1;
    let rec = OnnxRecorder::new();
    let inputs = Inputs::declare(&rec, cfg);
    let u = user_vector(&rec, model, &inputs.history, variant)?; // (B, C)
    let scores = score_all_items_padded(&rec, &u, &model.items().table_with(&rec)); // (B, I+1)
    let (top_s, top_i) = top_k_excluding(&rec, &scores, &inputs.exclude, &inputs.k, columns); // (B, k)
    declare_outputs(&rec, columns, &scores, &top_s, &top_i);
    rec.finish(&format!("{}_{}", cfg.kind(), variant.as_str()))
}

/// Records the user tower of `model` ([module docs](self#user-tower)): the history inputs and
/// the user vector of [`record`]'s graph as the output `user_vector` `(batch, d)`.
pub fn record_user_tower(model: &SeqRecModel, variant: Variant) -> Result<GraphProto> {
    let rec = OnnxRecorder::new();
    let history = History::declare(&rec, model.config());
    user_tower_output(rec, model, &history, variant, "user_tower")
}

/// Records the open user tower of `model` ([module docs](self#open-user-tower)): the user
/// tower with the item table `item_emb.weight` read from the input `item_rows`, so `seq`
/// holds row numbers of that input. `model` is a folded model (an ID table and nothing else
/// on the item side), as every model `sasrec-export` records.
pub fn record_open_user_tower(model: &SeqRecModel, variant: Variant) -> Result<GraphProto> {
    let cfg = model.config();
    let table = model
        .items()
        .id_param()
        .filter(|_| !model.items().has_features());
    let Some(table) = table else {
        return Err(Error::Graph(
            "the open user tower is recorded from a model whose item table is an ID table \
             (fold the item features first)"
                .into(),
        ));
    };
    let rec = OnnxRecorder::new();
    let history = History::declare(&rec, cfg);
    let rows = rec.input(
        ITEM_ROWS,
        DType::F32,
        &[Dim::named("rows"), Dim::Fixed(cfg.hidden_units as i64)],
        "the item vectors seq reads: row 0 = padding, seq holds row numbers of this table",
    );
    rec.param_from_input(table.name(), &rows);
    user_tower_output(rec, model, &history, variant, "user_tower_open")
}

/// The user vector of `history` on `rec` as the output `user_vector` `(batch, d)`, and the
/// finished graph named `<kind>_<name>_<variant>`.
fn user_tower_output(
    rec: OnnxRecorder,
    model: &SeqRecModel,
    history: &History,
    variant: Variant,
    name: &str,
) -> Result<GraphProto> {
    let cfg = model.config();
    let u = user_vector(&rec, model, history, variant)?; // (B, C)
    let dims = [batch(), Dim::Fixed(cfg.hidden_units as i64)];
    rec.output(
        &u,
        USER_VECTOR,
        &dims,
        "the last position's hidden state; score of item i = user_vector · item_vectors[i]",
    );
    rec.finish(&format!("{}_{name}_{}", cfg.kind(), variant.as_str()))
}

/// Records the item tower of `model` ([module docs](self#item-tower)); `None` for a model
/// without item features.
pub fn record_item_tower(model: &SeqRecModel) -> Result<Option<GraphProto>> {
    let cfg = model.config();
    let Some(features) = &cfg.item_features else {
        return Ok(None);
    };
    let rec = OnnxRecorder::new();
    let names = two_tower::item_tower_inputs(&features.schema);
    let (mut tokens, mut numbers) = (Vec::new(), Vec::new());
    for (col, name) in features.schema.columns.iter().zip(&names) {
        let dims = [batch(), Dim::Fixed(col.width as i64)];
        if col.kind.is_token() {
            let doc = "value ids of the column's vocabulary (1..=V), 0 = none";
            tokens.push(rec.input(name, DType::I64, &dims, doc));
        } else {
            let doc = "numeric: (x - mean) / std, 0 = missing; dense: the vector";
            numbers.push(rec.input(name, DType::F32, &dims, doc));
        }
    }
    let e = model.items().compose(&rec, None, &tokens, &numbers); // (B, C)
    let dims = [batch(), Dim::Fixed(cfg.hidden_units as i64)];
    rec.output(
        &e,
        ITEM_VECTOR,
        &dims,
        "the features' part of the item vector",
    );
    Ok(Some(rec.finish(&format!("{}_item_tower", cfg.kind()))?))
}

/// The inputs that describe the users' histories, shared by both graphs.
struct History {
    /// `seq` (batch, maxlen) int64.
    seq: Value,
    /// `time_matrix` (batch, maxlen, maxlen) int64, time-aware models only.
    tm: Option<Value>,
}

impl History {
    /// Declares `seq` and, for time-aware models, `time_matrix`.
    fn declare(rec: &OnnxRecorder, cfg: &ModelConfig) -> Self {
        let t = cfg.maxlen as i64;
        let seq = rec.input(
            SEQ,
            DType::I64,
            &[batch(), Dim::Fixed(t)],
            "left-padded item indices (0 = padding), newest last",
        );
        let tm = cfg.is_time_aware().then(|| {
            rec.input(
                TIME_MATRIX,
                DType::I64,
                &[batch(), Dim::Fixed(t), Dim::Fixed(t)],
                "interval buckets 0..=time_span from sasrec_shared::time (time_codes + \
                 Intervals::window_matrix)",
            )
        });
        Self { seq, tm }
    }
}

/// The scoring graph's inputs (names in [`sasrec_shared::run::onnx_io`]).
struct Inputs {
    /// `seq` and `time_matrix`.
    history: History,
    /// `exclude` (batch, num_exclude) int64.
    exclude: Value,
    /// `k` (1) int64.
    k: Value,
}

impl Inputs {
    /// Declares the inputs of a model of `cfg`, in interface order.
    fn declare(rec: &OnnxRecorder, cfg: &ModelConfig) -> Self {
        let history = History::declare(rec, cfg);
        let exclude = rec.input(
            EXCLUDE,
            DType::I64,
            &[batch(), Dim::named("num_exclude")],
            "item indices set to -inf before top-k (0 = no-op)",
        );
        let k = rec.input(K, DType::I64, &[Dim::Fixed(1)], "number of items to return");
        Self {
            history,
            exclude,
            k,
        }
    }
}

/// The symbolic batch dimension of every input and output.
fn batch() -> Dim {
    Dim::named("batch")
}

/// `SeqRecModel::forward_with` in inference mode, reduced to the last position: the user
/// vector (B, C). [`Variant::LastPosition`] queries only that position in the last block;
/// [`Variant::FullSequence`] computes every position and slices the last row.
fn user_vector(
    rec: &OnnxRecorder,
    model: &SeqRecModel,
    history: &History,
    variant: Variant,
) -> Result<Value> {
    let last_only = variant == Variant::LastPosition;
    let h = model
        .forward_with(rec, &history.seq, history.tm.as_ref(), last_only, false)
        .map_err(|e| Error::Graph(e.to_string()))?; // (B, 1, C) or (B, T, C)
    let h = match variant {
        Variant::LastPosition => h,
        Variant::FullSequence => rec.slice(&h, 1, -1, i64::MAX), // (B, 1, C)
    };
    Ok(rec.reshape(&h, &[0, -1])) // (B, C)
}

/// Declares the outputs `scores` (batch, I+1), `topk_scores` and `topk_items` (batch, k).
fn declare_outputs(rec: &OnnxRecorder, columns: i64, scores: &Value, top_s: &Value, top_i: &Value) {
    let scores_dims = [batch(), Dim::Fixed(columns)];
    let k_dims = [batch(), Dim::named("k")];
    rec.output(
        scores,
        SCORES,
        &scores_dims,
        "next-item scores, column = item index, column 0 = -inf; exclusions not applied",
    );
    rec.output(
        top_s,
        TOPK_SCORES,
        &k_dims,
        "top-k scores after exclusion, descending",
    );
    rec.output(top_i, TOPK_ITEMS, &k_dims, "top-k item indices");
}

/// `score_all_items` in one `MatMul`: `[h, 1] · [Eᵀ; m]` with `m_0 = −∞`, `m_j = 0` (j ≥ 1),
/// so `scores[b, 0] = h_b·E_0 − ∞ = −∞` and `scores[b, j] = h_b·E_j + 0` for the items.
///
/// `h` is the `(B, C)` user vector, `E` the `(I+1, C)` item table. Everything right of the `MatMul` depends
/// only on initializers, so ONNX Runtime folds it into one `(C+1, I+1)` constant at load time;
/// at run time this is a single pass over the `(B, I+1)` scores instead of a `MatMul` followed by
/// a broadcast `Where` over the whole matrix (what dominated a run at a million items).
fn score_all_items_padded(rec: &OnnxRecorder, h: &Value, table: &Value) -> Value {
    let ones = rec.full_like(&rec.slice(h, 1, 0, 1), DType::F32, 1.0); // (B, 1)
    let h1 = rec.concat(&[h, &ones], 1); // (B, C+1)
    let pad = rec.eq_scalar(&rec.range_of(table, 0), 0); // (I+1)
    let zeros = rec.full_like(&pad, DType::F32, 0.0);
    let m = rec.unsqueeze(&rec.masked_fill(&zeros, &pad, f64::NEG_INFINITY), 0); // (1, I+1)
    let wt = rec.concat(&[&rec.transpose(table, &[1, 0]), &m], 0); // (C+1, I+1)
    rec.matmul(&h1, &wt)
}

/// The `k` best columns of `scores` `(B, I+1)` that are not in the row's `exclude` `(B, E)`,
/// without copying `scores`:
///
/// 1. `TopK` with `k' = min(k + E, I+1)`: the best `k'` columns, ties to the lower index;
/// 2. `hit[b, j] = Σ_e [i_bj = exclude_be] > 0` over `(B, k', E)`;
/// 3. `TopK(k)` of the `k'` scores with the hits set to −∞, mapped back to columns.
///
/// Exact: at most `E` of a row's columns are excluded, so its `k` best allowed columns are
/// among its `k + E` best, and step 3 keeps step 1's order (score, then column) among equal
/// scores. `ScatterElements` of −∞ into `scores` would be simpler but, `scores` being a graph
/// output, ONNX Runtime copies the whole `(B, I+1)` matrix for it on every run.
fn top_k_excluding(
    rec: &OnnxRecorder,
    scores: &Value,
    exclude: &Value,
    k: &Value,
    columns: i64,
) -> (Value, Value) {
    let width = rec.sum(
        &rec.full_like(&rec.slice(exclude, 0, 0, 1), DType::I64, 1.0),
        1,
        false,
    ); // (1) = E
    let wide = rec.add(k, &width);
    let cap = rec.full_like(k, DType::I64, columns as f64);
    let k_wide = rec.masked_fill(&wide, &rec.gt(&wide, &cap), columns as f64); // (1) = k'
    let (s, i) = rec.topk(scores, &k_wide); // (B, k')
    let diff = rec.sub(&rec.unsqueeze(&i, 2), &rec.unsqueeze(exclude, 1)); // (B, k', E)
    let hits = rec.sum(&rec.cast(&rec.eq_scalar(&diff, 0), DType::I64), 2, false); // (B, k')
    let allowed = rec.masked_fill(&s, &rec.not(&rec.eq_scalar(&hits, 0)), f64::NEG_INFINITY);
    let (top_s, pos) = rec.topk(&allowed, k); // (B, k)
    (top_s, rec.take_along_last(&i, &pos))
}

/// The manifest of the exported scoring model: its spec, source digest, graph variant and the
/// two-tower files written beside it (`metadata_props` keys in [`ModelManifest::to_metadata`]).
pub fn manifest(model: &SeqRecModel, source: &Source, variant: Variant) -> ModelManifest {
    let files = two_tower::Files::default();
    let files = match source.item_tower {
        true => files.with_item_tower(),
        false => files,
    };
    ModelManifest::new(
        ModelSpec::new(model.config().clone(), source.intervals),
        source.sha256.clone(),
        variant.as_str(),
    )
    .with_two_tower(files)
}

/// The complete scoring model: the recorded graph, opset 17, IR version 10, producer
/// `sasrec-rs`, and the [`manifest`]'s metadata.
pub fn model_proto(model: &SeqRecModel, source: &Source, variant: Variant) -> Result<ModelProto> {
    let doc = format!(
        "{} next-item scoring exported by sasrec-export ({}); inputs {}, exclude [batch, n] \
         int64, k [1] int64; outputs scores, topk_scores, topk_items",
        model.config().kind(),
        variant.as_str(),
        history_doc(model.config()),
    );
    let graph = record(model, variant)?;
    Ok(wrap(graph, &manifest(model, source, variant), doc))
}

/// The complete user tower ([module docs](self#user-tower)): as [`model_proto`], with the
/// [`manifest`] of the user tower's role.
pub fn user_tower_proto(
    model: &SeqRecModel,
    source: &Source,
    variant: Variant,
) -> Result<ModelProto> {
    let doc = format!(
        "{} user tower exported by sasrec-export ({}); inputs {}; output user_vector [batch, \
         {}] float32, scored against item_vectors.safetensors",
        model.config().kind(),
        variant.as_str(),
        history_doc(model.config()),
        model.config().hidden_units,
    );
    let graph = record_user_tower(model, variant)?;
    let manifest = manifest(model, source, variant).with_role(GraphRole::UserTower);
    Ok(wrap(graph, &manifest, doc))
}

/// The complete open user tower ([module docs](self#open-user-tower)): as
/// [`user_tower_proto`], in the open user tower's role.
pub fn open_user_tower_proto(
    model: &SeqRecModel,
    source: &Source,
    variant: Variant,
) -> Result<ModelProto> {
    let doc = format!(
        "{} open user tower exported by sasrec-export ({}); inputs {}, item_rows [rows, {}] \
         float32 (seq holds its row numbers); output user_vector [batch, {}] float32",
        model.config().kind(),
        variant.as_str(),
        history_doc(model.config()),
        model.config().hidden_units,
        model.config().hidden_units,
    );
    let graph = record_open_user_tower(model, variant)?;
    let manifest = manifest(model, source, variant).with_role(GraphRole::OpenUserTower);
    Ok(wrap(graph, &manifest, doc))
}

/// The complete item tower of `model` (with features; [module docs](self#item-tower)): the
/// manifest of the unfolded model, whose config carries the feature schema, in the item
/// tower's role. `None` without features.
pub fn item_tower_proto(model: &SeqRecModel, source: &Source) -> Result<Option<ModelProto>> {
    let Some(graph) = record_item_tower(model)? else {
        return Ok(None);
    };
    let doc = format!(
        "{} item tower exported by sasrec-export; inputs item_features.<column> per feature \
         column; output item_vector [batch, {}] float32",
        model.config().kind(),
        model.config().hidden_units,
    );
    let manifest = manifest(model, source, Variant::LastPosition).with_role(GraphRole::ItemTower);
    Ok(Some(wrap(graph, &manifest, doc)))
}

/// The history inputs for a `doc_string`.
fn history_doc(cfg: &ModelConfig) -> &'static str {
    if cfg.is_time_aware() {
        "seq [batch, maxlen] int64, time_matrix [batch, maxlen, maxlen] int64"
    } else {
        "seq [batch, maxlen] int64"
    }
}

/// `graph` as a model: opset 17, IR version 10, producer `sasrec-rs`, `manifest` as metadata.
fn wrap(graph: GraphProto, manifest: &ModelManifest, doc: String) -> ModelProto {
    let metadata_props = manifest
        .to_metadata()
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key: Some(key),
            value: Some(value),
        })
        .collect();
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some(PRODUCER.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    }
}

/// [`model_proto`] serialised to protobuf bytes (the content of a `.onnx` file).
pub fn model_bytes(model: &SeqRecModel, source: &Source, variant: Variant) -> Result<Vec<u8>> {
    use prost::Message;
    Ok(model_proto(model, source, variant)?.encode_to_vec())
}
