//! The exported scoring graph: `SeqRecModel::forward_with` recorded on an [`OnnxRecorder`],
//! followed by `score_all_items`, the exclusion of given items and `TopK`.
//!
//! # Interface
//!
//! | name | type | shape | meaning |
//! | --- | --- | --- | --- |
//! | input `seq` | int64 | `[batch, maxlen]` | left-padded item indices 1..=I, 0 = padding, newest last |
//! | input `time_matrix` (time-aware models only) | int64 | `[batch, maxlen, maxlen]` | interval buckets 0..=`time_span` |
//! | input `exclude` | int64 | `[batch, num_exclude]` | item indices that must not be recommended; 0 = no-op |
//! | input `k` | int64 | `[1]` | how many items `TopK` returns, 1 ≤ k ≤ I+1 |
//! | output `scores` | float32 | `[batch, P]` | next-item scores, column = item index; column 0 (padding) and columns past `num_items` = −∞; exclusions **not** applied |
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
//! `P` is `num_items + 1` for catalogues under [`TopKHead::MIN_BLOCKED_COLUMNS`] columns and
//! `num_items + 1` rounded up to a multiple of [`TopKHead::BLOCK_WIDTH`] from there on (the
//! two-stage top-k, see [`TopKHead`]; `sasrec-export` chooses it from the item count), so
//! consumers take the row width from the output's shape and index it by item.
//!
//! Column 0 and the padding columns of `scores` are −∞ through the `MatMul` itself (see
//! `score_all_items_padded`), whose item side depends only on initializers and is folded by
//! ONNX Runtime into one constant at load time, so a run makes one pass over the `(batch, P)`
//! scores for the `MatMul` and one for the top-k (`TopK`, or the block maxima of the two-stage
//! head).
//!
//! The names are [`sasrec_shared::run::onnx_io`]'s, the metadata [`ModelManifest`]'s.
//!
//! Everything but the batch dimension is fixed: `maxlen` is baked into the position tables.

use sasrec_models::{DType, Net, Ops, SeqRecModel};
use sasrec_shared::run::onnx_io::{EXCLUDE, K, SCORES, SEQ, TIME_MATRIX, TOPK_ITEMS, TOPK_SCORES};
use sasrec_shared::run::{ModelManifest, ModelSpec};
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
}

/// How the head finds the `k'` best columns of `scores` (see `top_k_excluding`).
///
/// [`TopKHead::for_columns`] is the choice [`crate::export`] makes from the item count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopKHead {
    /// One `TopK` over the `I+1` score columns.
    OneStage,
    /// Exact two-stage top-k over blocks of `width` columns: `scores` is padded with −∞ to
    /// `nb · width` columns, `nb = ⌈(I+1) / width⌉`, and `TopK` runs over the `nb` block maxima,
    /// then over the `k'` best blocks (see `top_k_blocked`).
    Blocked {
        /// Columns per block (≥ 1).
        width: i64,
    },
}

impl TopKHead {
    /// Block width of the two-stage head. The two stages cost about `nb + k'·W` comparisons
    /// per row after the block maxima, least near `W = √((I+1)/k')` (≈ 130 at a million columns
    /// and `k'` = 60), while `ReduceMax` over short blocks is slower per element; of 256 and
    /// 1024, 256 measured faster at a million items.
    pub const BLOCK_WIDTH: i64 = 256;
    /// Catalogues of at least this many columns (`I+1`) get the two-stage head. One `TopK`
    /// costs ≈ 0.43 ms a row at a million columns (2-core EPYC, one thread), so under ≈ 30 µs
    /// below this size: too little for the saving to show next to the rest of a run, and the
    /// small models keep the plain graph.
    pub const MIN_BLOCKED_COLUMNS: i64 = 65_536;

    /// The head for a catalogue of `columns = I+1` score columns: two-stage with
    /// [`Self::BLOCK_WIDTH`] from [`Self::MIN_BLOCKED_COLUMNS`] on, else one `TopK`.
    pub fn for_columns(columns: i64) -> Self {
        if columns >= Self::MIN_BLOCKED_COLUMNS {
            Self::Blocked {
                width: Self::BLOCK_WIDTH,
            }
        } else {
            Self::OneStage
        }
    }

    /// Width of the `scores` output: `I+1`, or `I+1` rounded up to a multiple of the block
    /// width (the extra columns are −∞).
    pub fn scores_width(self, columns: i64) -> i64 {
        match self {
            Self::OneStage => columns,
            Self::Blocked { width } => (columns + width - 1) / width * width,
        }
    }
}

/// Records the scoring graph of `model` with the top-k `head` (interface in the
/// [module docs](self)).
pub fn record(model: &SeqRecModel, variant: Variant, head: TopKHead) -> Result<GraphProto> {
    let cfg = model.config();
    let t = cfg.maxlen as i64;
    let columns = cfg.num_items as i64 + 1;
    if let TopKHead::Blocked { width } = head {
        if width < 1 {
            return Err(Error::Graph(format!("block width {width} is not positive")));
        }
    }
    let padded = head.scores_width(columns);
    let batch = || Dim::named("batch");
    let rec = OnnxRecorder::new();

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
    let exclude = rec.input(
        EXCLUDE,
        DType::I64,
        &[batch(), Dim::named("num_exclude")],
        "item indices set to -inf before top-k (0 = no-op)",
    );
    let k = rec.input(K, DType::I64, &[Dim::Fixed(1)], "number of items to return");

    let last_only = variant == Variant::LastPosition;
    let h = model
        .forward_with(&rec, &seq, tm.as_ref(), last_only, false)
        .map_err(|e| Error::Graph(e.to_string()))?; // (B, 1, C) or (B, T, C)
    let h = match variant {
        Variant::LastPosition => h,
        Variant::FullSequence => rec.slice(&h, 1, -1, i64::MAX), // (B, 1, C)
    };
    let item_emb = match model.net() {
        Net::SasRec(m) => m.item_emb(),
        Net::TiSasRec(m) => m.item_emb(),
    };
    let table = rec.param(item_emb);
    let scores = score_all_items_padded(&rec, &h, &table, cfg.hidden_units as i64, columns, padded);
    let (top_s, top_i) = top_k_excluding(&rec, &scores, &exclude, &k, columns, head); // (B, k)

    let scores_dims = [batch(), Dim::Fixed(padded)];
    let k_dims = [batch(), Dim::named("k")];
    rec.output(
        &scores,
        SCORES,
        &scores_dims,
        "next-item scores, column = item index, column 0 and columns past num_items = -inf; \
         exclusions not applied",
    );
    rec.output(
        &top_s,
        TOPK_SCORES,
        &k_dims,
        "top-k scores after exclusion, descending",
    );
    rec.output(&top_i, TOPK_ITEMS, &k_dims, "top-k item indices");
    rec.finish(&format!("{}_{}", cfg.kind(), variant.as_str()))
}

/// `score_all_items` in one `MatMul`: `[h, 1] · [Eᵀ 0; m]` with `m_0 = −∞`, `m_j = 0`
/// (1 ≤ j ≤ I) and `m_j = −∞`, zero item columns, for `I+1 ≤ j < P`, so
/// `scores[b, j] = h_b·E_j + 0` for the items and −∞ for column 0 and the `P − (I+1)` padding
/// columns of the two-stage head.
///
/// `h` is `(B, 1, C)`, `E` the `(I+1, C)` item table, `P = width ≥ I+1`. Everything right of the
/// `MatMul` depends only on initializers, so ONNX Runtime folds it into one `(C+1, P)` constant
/// at load time; at run time this is a single pass over the `(B, P)` scores instead of a
/// `MatMul` followed by a broadcast `Where` over the whole matrix (what dominated a run at a
/// million items), and padding the scores here is free where a `Pad` of them would copy the
/// whole matrix on every run.
fn score_all_items_padded(
    rec: &OnnxRecorder,
    h: &Value,
    table: &Value,
    hidden: i64,
    columns: i64,
    width: i64,
) -> Value {
    let h = rec.reshape(h, &[0, -1]); // (B, C)
    let ones = rec.full_like(&rec.slice(&h, 1, 0, 1), DType::F32, 1.0); // (B, 1)
    let h1 = rec.concat(&[&h, &ones], 1); // (B, C+1)
    let pad = rec.eq_scalar(&rec.range_of(table, 0), 0); // (I+1)
    let zeros = rec.full_like(&pad, DType::F32, 0.0);
    let m = rec.unsqueeze(&rec.masked_fill(&zeros, &pad, f64::NEG_INFINITY), 0); // (1, I+1)
    let wt = rec.concat(&[&rec.transpose(table, &[1, 0]), &m], 0); // (C+1, I+1)
    let tail = width - columns;
    if tail == 0 {
        return rec.matmul(&h1, &wt);
    }
    let mut last = vec![0.0; hidden as usize + 1];
    last[hidden as usize] = f64::NEG_INFINITY;
    let column = rec.constant_like(table, &last, &[hidden + 1, 1]); // (C+1, 1): 0…0, −∞
    let zeros = rec.constant_like(table, &vec![0.0; tail as usize], &[1, tail]);
    let padding = rec.add(&column, &zeros); // (C+1, P − (I+1))
    rec.matmul(&h1, &rec.concat(&[&wt, &padding], 1)) // (B, P)
}

/// The `k` best columns of `scores` `(B, P)` (`P ≥ I+1`, the columns past `I` −∞) that are
/// not in the row's `exclude` `(B, E)`, without copying `scores`:
///
/// 1. the best `k' = min(k + E, I+1)` columns, ties to the lower index: one `TopK` or, for
///    [`TopKHead::Blocked`], `top_k_blocked` (same columns, same order);
/// 2. `hit[b, j] = Σ_e [i_bj = exclude_be] > 0` over `(B, k', E)`;
/// 3. `TopK(k)` of the `k'` scores with the hits set to −∞, mapped back to columns.
///
/// Exact: at most `E` of a row's columns are excluded, so its `k` best allowed columns are
/// among its `k + E` best, and step 3 keeps step 1's order (score, then column) among equal
/// scores. The padding columns come after every item in that order (−∞, higher index), so
/// with `k' ≤ I+1` they are never taken. `ScatterElements` of −∞ into `scores` would be simpler
/// but, `scores` being a graph output, ONNX Runtime copies the whole `(B, P)` matrix for it on
/// every run.
fn top_k_excluding(
    rec: &OnnxRecorder,
    scores: &Value,
    exclude: &Value,
    k: &Value,
    columns: i64,
    head: TopKHead,
) -> (Value, Value) {
    let width = rec.sum(
        &rec.full_like(&rec.slice(exclude, 0, 0, 1), DType::I64, 1.0),
        1,
        false,
    ); // (1) = E
    let k_wide = at_most(rec, &rec.add(k, &width), columns); // (1) = k'
    let (s, i) = match head {
        TopKHead::OneStage => rec.topk(scores, &k_wide),
        TopKHead::Blocked { width } => top_k_blocked(
            rec,
            scores,
            &k_wide,
            width,
            head.scores_width(columns) / width,
        ),
    }; // (B, k')
    let diff = rec.sub(&rec.unsqueeze(&i, 2), &rec.unsqueeze(exclude, 1)); // (B, k', E)
    let hits = rec.sum(&rec.cast(&rec.eq_scalar(&diff, 0), DType::I64), 2, false); // (B, k')
    let allowed = rec.masked_fill(&s, &rec.not(&rec.eq_scalar(&hits, 0)), f64::NEG_INFINITY);
    let (top_s, pos) = rec.topk(&allowed, k); // (B, k)
    (top_s, rec.take_along_last(&i, &pos))
}

/// `min(x, cap)` of a 1-element int64 tensor.
fn at_most(rec: &OnnxRecorder, x: &Value, cap: i64) -> Value {
    let c = rec.full_like(x, DType::I64, cap as f64);
    rec.masked_fill(x, &rec.gt(x, &c), cap as f64)
}

/// `TopK(k')` of `scores` `(B, nb·W)` in two stages, exact and in `TopK`'s order (score
/// descending, ties to the lower column):
///
/// 1. block maxima `M[b, β] = max_w scores[b, βW + w]` (a `Reshape` to `(B, nb, W)`, free,
///    and `ReduceMax`);
/// 2. the `k_b = min(k', nb)` blocks with the largest maxima (`TopK`, ties to the lower block),
///    sorted by block index (a `TopK` of the negated indices);
/// 3. `TopK(k')` over those blocks' `k_b·W` scores gathered in block order (`GatherND`),
///    positions mapped back to columns `βW + w`.
///
/// Exact, ties included: let column `c` (score `s`, block `β`) be among the `k'` best in
/// `TopK`'s order. If `β` were not picked, each of the `k_b = k'` picked blocks `γ` has
/// `M_γ > M_β ≥ s`, or `M_γ = M_β` and `γ < β`; either way the first column holding `M_γ` comes
/// before `c` (a higher score, or the same score at a lower column, since every column of `γ`
/// is below every column of `β`): `k'` columns before `c`, a contradiction. So the picked
/// blocks hold the `k'` best columns; they are gathered in column order, so `TopK`'s ties to
/// the lower position are ties to the lower column. `k' ≤ k_b·W` always (`k' ≤ I+1 ≤ nb·W`
/// when every block is picked).
///
/// Cost per row: one vectorised pass over the scores for the maxima, then `TopK` over `nb`
/// maxima and over `k_b·W` scores, instead of `TopK`'s scalar pass over all `nb·W`.
fn top_k_blocked(
    rec: &OnnxRecorder,
    scores: &Value,
    k: &Value,
    width: i64,
    blocks: i64,
) -> (Value, Value) {
    let tiles = rec.reshape(scores, &[0, blocks, width]); // (B, nb, W)
    let maxima = rec.max(&tiles, 2, false); // (B, nb)
    let k_blocks = at_most(rec, k, blocks); // (1) = k_b
    let (_, best) = rec.topk(&maxima, &k_blocks); // (B, k_b), by maximum
    let (neg, _) = rec.topk(&rec.mul_scalar(&best, -1.0), &k_blocks);
    let picked = rec.unsqueeze(&rec.mul_scalar(&neg, -1.0), 2); // (B, k_b, 1), ascending
    let gathered = rec.gather_rows_per_batch(&tiles, &picked); // (B, k_b, W)
    let (s, pos) = rec.topk(&rec.reshape(&gathered, &[0, -1]), k); // (B, k')
    let first = rec.mul_scalar(&picked, width as f64); // (B, k_b, 1) = βW
    let cols = rec.add(&first, &rec.range_of(&tiles, 2)); // (B, k_b, W) = βW + w
    (s, rec.take_along_last(&rec.reshape(&cols, &[0, -1]), &pos))
}

/// The manifest of an exported model: its spec, source digest and graph variant
/// (`metadata_props` keys in [`ModelManifest::to_metadata`]).
pub fn manifest(model: &SeqRecModel, source: &Source, variant: Variant) -> ModelManifest {
    ModelManifest::new(
        ModelSpec::new(model.config().clone(), source.intervals),
        source.sha256.clone(),
        variant.as_str(),
    )
}

/// The complete model: the graph [`record`]ed with `head`, opset 17, IR version 10, producer
/// `sasrec-rs`, and the [`manifest`]'s metadata.
pub fn model_proto(
    model: &SeqRecModel,
    source: &Source,
    variant: Variant,
    head: TopKHead,
) -> Result<ModelProto> {
    let graph = record(model, variant, head)?;
    let metadata_props = manifest(model, source, variant)
        .to_metadata()
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key: Some(key),
            value: Some(value),
        })
        .collect();
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some(PRODUCER.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "{} next-item scoring exported by sasrec-export ({}); inputs seq [batch, maxlen] \
             int64{}, exclude [batch, n] int64, k [1] int64; outputs scores, topk_scores, \
             topk_items",
            model.config().kind(),
            variant.as_str(),
            if model.config().is_time_aware() {
                ", time_matrix [batch, maxlen, maxlen] int64"
            } else {
                ""
            }
        )),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    })
}

/// [`model_proto`] serialised to protobuf bytes (the content of a `.onnx` file).
pub fn model_bytes(
    model: &SeqRecModel,
    source: &Source,
    variant: Variant,
    head: TopKHead,
) -> Result<Vec<u8>> {
    use prost::Message;
    Ok(model_proto(model, source, variant, head)?.encode_to_vec())
}
