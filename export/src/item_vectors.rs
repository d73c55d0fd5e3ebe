//! `item_vectors.safetensors`: the item side of the two-tower export.
//!
//! One float32 tensor, [`ITEM_VECTORS_TENSOR`] `[num_items + 1, d]`, holding exactly the table
//! the scoring model multiplies the user vector with (`SeqRecModel::item_vectors`, the tied
//! `item_emb.weight`): row i is item i, row 0 the padding row (never recommended; the scoring
//! model sets its column to −∞). The safetensors `__metadata__` holds the source checkpoint's
//! SHA-256, I, d and the model kind ([`meta`]), so a reader can check the table belongs to the
//! user tower beside it.
//!
//! The bytes are copied once out of the tensor (at 10M items × d = 32, 1.28 GB) and written by
//! the `safetensors` crate into a temporary sibling, which is then synced and renamed over the
//! file (`sasrec_shared::io::write_atomic_path`).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sasrec_models::SeqRecModel;
use sasrec_shared::run::two_tower::{meta, ITEM_VECTORS_TENSOR};

use crate::error::{Error, Result};
use crate::recorder::f32_le_bytes;

/// The `__metadata__` of the item vectors of `model`, loaded from a checkpoint whose SHA-256 is
/// `source_sha256`.
pub fn metadata(model: &SeqRecModel, source_sha256: &str) -> HashMap<String, String> {
    let cfg = model.config();
    HashMap::from([
        (meta::SOURCE_SHA256.into(), source_sha256.into()),
        (meta::NUM_ITEMS.into(), cfg.num_items.to_string()),
        (meta::DIM.into(), cfg.hidden_units.to_string()),
        (meta::KIND.into(), cfg.kind().to_string()),
    ])
}

/// Writes the item table of `model` to `path` atomically (module docs) and returns the file's
/// size in bytes; errors name `path`.
pub fn write(model: &SeqRecModel, source_sha256: &str, path: &Path) -> Result<u64> {
    let fail = |msg: String| Error::Output {
        path: path.to_path_buf(),
        msg,
    };
    let (dims, bytes) = f32_le_bytes(&model.item_vectors())
        .map_err(|e| fail(format!("reading the item table: {e}")))?;
    let shape = dims.iter().map(|&d| d as usize).collect();
    let view = TensorView::new(Dtype::F32, shape, &bytes)
        .map_err(|e| fail(format!("the item table is not a tensor: {e}")))?;
    let info = Some(metadata(model, source_sha256));
    sasrec_shared::io::write_atomic_path(path, |tmp| {
        safetensors::serialize_to_file([(ITEM_VECTORS_TENSOR, view)], info, tmp)
    })?;
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    tracing::info!(
        "wrote {} ({size} bytes): {ITEM_VECTORS_TENSOR} {dims:?} float32",
        path.display()
    );
    Ok(size)
}
