//! Item retrieval for the two-tower export: "the top-k items for a user vector `q`" under the
//! score `score_i = q · v_i`, exactly or approximately.
//!
//! - [`ItemVectors`] memory-maps and validates `item_vectors.safetensors` (float32
//!   `[num_items + 1, d]`, row = item index, row 0 = padding) and writes it atomically.
//! - [`exact_top_k`] and [`rescore`] define "exact": float32 inner products from one [`dot`]
//!   summed in a fixed order, best first, equal scores to the lower item index.
//! - [`ItemIndex`] is an HNSW graph (usearch) over items 1..=I with the inner-product metric:
//!   [`ItemIndex::recommend`] asks it for `k + extra` allowed candidates and re-scores them
//!   exactly, so the answer's order and scores are exact and only recall is approximate. It is
//!   saved with a JSON sidecar (`items.usearch.json`, [`Sidecar`]) recording what it was built
//!   from and the file's length and SHA-256, verified before the file is memory-mapped.
//!
//! Why usearch: it is maintained (regular releases, a Rust binding in the main repository),
//! supports inner product natively (no reduction of maximum-inner-product search to L2 with an
//! extra dimension), stores vectors as f32, f16 or i8, filters during the graph walk (excluded
//! items take no candidate slot), and saves, loads and memory-maps (`view`) its index file, so
//! a server opens a large index without reading it into memory.
#![deny(missing_docs)]

pub mod error;
pub mod exact;
mod gate;
pub mod index;
pub mod params;
pub mod sidecar;
pub mod vectors;

pub use error::{Error, Result};
pub use exact::{dot, exact_top_k, rescore};
pub use index::{AnnParams, ItemIndex, Quantization, DEFAULT_EF};
pub use sidecar::{sidecar_path, IndexInfo, Sidecar};
pub use vectors::{ItemVectors, VectorsMeta};
