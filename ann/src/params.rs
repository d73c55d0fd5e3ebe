//! How an index is built: the storage of its vectors ([`Quantization`]) and the HNSW
//! parameters ([`AnnParams`]); recorded in the index's sidecar.

use serde::{Deserialize, Serialize};
use usearch::ScalarKind;

/// How the index stores the item vectors. The ranking of the final answer does not depend
/// on it (candidates are re-scored from the float32 table); only which candidates are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// 4 bytes per component, as in the table.
    F32,
    /// 2 bytes per component (IEEE half precision; relative rounding error ≤ 2⁻¹¹).
    F16,
    /// 1 byte per component: `round(127 · x / m)` with `m` the largest `|x|` over all items
    /// (one scale for every item, so inner products keep their order up to rounding); the
    /// query is scaled by its own largest component.
    I8,
}

impl Quantization {
    /// The name used in flags and in the sidecar: `f32`, `f16` or `i8`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::I8 => "i8",
        }
    }

    pub(crate) fn scalar_kind(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [Quantization::F32, Quantization::F16, Quantization::I8]
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| format!("unknown quantization {s:?}; expected f32, f16 or i8"))
    }
}

/// How the HNSW graph is built.
///
/// Defaults: `connectivity` 16 (HNSW's `M`: 2·16 links of 4 bytes per item on the base layer),
/// `expansion_add` 128 (`efConstruction`, usearch's own default) and `quantization`
/// [`Quantization::F16`] (half the memory of f32; answers are re-scored in f32, so the storage
/// changes which candidates are found, never their order or scores). Recall against exact at
/// these and other settings, on generated and on trained (ML-1M) vectors, is in
/// docs/RESULTS.md ("Retrieval"): trained vectors find more of their exact top k with f32 and
/// a wider `expansion_add` or `connectivity`. i8 quarters the memory, but its one global scale
/// leaves items of small norm few levels, so it is an opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Graph edges per node (HNSW `M`).
    pub connectivity: usize,
    /// Beam width while inserting (HNSW `efConstruction`).
    pub expansion_add: usize,
    /// How the vectors are stored in the index.
    pub quantization: Quantization,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            quantization: Quantization::F16,
        }
    }
}
