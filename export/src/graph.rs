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
//! | output `scores` | float32 | `[batch, num_items+1]` | next-item scores; column 0 (padding) = −∞; exclusions **not** applied |
//! | output `topk_scores` | float32 | `[batch, k]` | the k best scores after exclusion, descending |
//! | output `topk_items` | int64 | `[batch, k]` | their item indices (column = item index) |
//!
//! `time_matrix[b]` must be computed by [`sasrec_shared::time`] exactly as in training:
//! `time_codes(unit, timestamps)` for the user's timestamps, then `Intervals::window_matrix`
//! (the newest `maxlen` codes, left-padded), widened to int64.
//! The unit and span are in the model's metadata (`intervals`).
//!
//! `exclude` is applied with `ScatterElements` (−∞ at the given columns) before `TopK`; padding
//! zeros in it are harmless because column 0 is already −∞, so rows of different lengths are
//! right- or left-padded with 0 (passing the `seq` row itself excludes the history), and a
//! zero-width `[batch, 0]` tensor excludes nothing. Every id must lie in 0..=I: ONNX Runtime
//! rejects ids above I with an error, and ONNX gives negative ids Python semantics (−1 = item
//! I), so callers must never pass them. `k` above I+1 is an ONNX Runtime error; when k exceeds
//! the number of items left after exclusion, the tail of `topk_scores` is −∞ and callers drop
//! those entries.
//!
//! The names are [`sasrec_shared::run::onnx_io`]'s, the metadata [`ModelManifest`]'s.
//!
//! Everything but the batch dimension is fixed: `maxlen` is baked into the position tables.

use sasrec_models::model::score_all_items;
use sasrec_models::{DType, Net, Ops, SeqRecModel};
use sasrec_shared::run::onnx_io::{EXCLUDE, K, SCORES, SEQ, TIME_MATRIX, TOPK_ITEMS, TOPK_SCORES};
use sasrec_shared::run::{ModelManifest, ModelSpec};
use sasrec_shared::time::Intervals;

use crate::error::{Error, Result};
use crate::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::recorder::{Dim, OnnxRecorder};

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

/// Records the scoring graph of `model` (interface in the [module docs](self)).
pub fn record(model: &SeqRecModel, variant: Variant) -> Result<crate::proto::GraphProto> {
    let cfg = model.config();
    let t = cfg.maxlen as i64;
    let columns = cfg.num_items as i64 + 1;
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
    let scores = score_all_items(&rec, &h, item_emb); // (B, I+1), column 0 = −∞
    let neg_inf = rec.full_like(&exclude, DType::F32, f64::NEG_INFINITY); // (B, E)
    let masked = rec.scatter_elements(&scores, &exclude, &neg_inf, 1); // (B, I+1)
    let (top_s, top_i) = rec.topk(&masked, &k); // (B, k)

    let scores_dims = [batch(), Dim::Fixed(columns)];
    let k_dims = [batch(), Dim::named("k")];
    rec.output(
        &scores,
        SCORES,
        &scores_dims,
        "next-item scores, column = item index, column 0 = -inf; exclusions not applied",
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

/// The manifest of an exported model: its spec, source digest and graph variant
/// (`metadata_props` keys in [`ModelManifest::to_metadata`]).
pub fn manifest(model: &SeqRecModel, source: &Source, variant: Variant) -> ModelManifest {
    ModelManifest::new(
        ModelSpec::new(model.config().clone(), source.intervals),
        source.sha256.clone(),
        variant.as_str(),
    )
}

/// The complete model: the recorded graph, opset 17, IR version 10, producer `sasrec-rs`, and
/// the [`manifest`]'s metadata.
pub fn model_proto(model: &SeqRecModel, source: &Source, variant: Variant) -> Result<ModelProto> {
    let graph = record(model, variant)?;
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
pub fn model_bytes(model: &SeqRecModel, source: &Source, variant: Variant) -> Result<Vec<u8>> {
    use prost::Message;
    Ok(model_proto(model, source, variant)?.encode_to_vec())
}
