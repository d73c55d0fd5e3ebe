//! SASRec, TiSASRec and their mHC variants on tch (libtorch).
//!
//! * SASRec: Kang & McAuley, ICDM 2018, arXiv:1808.09781, as in `pmixer/SASRec.pytorch`
//!   (docs/MODELS.md §1).
//! * TiSASRec: Li, Wang & McAuley, WSDM 2020, arXiv:2004.11780, as in
//!   `pmixer/TiSASRec.pytorch` (docs/MODELS.md §2).
//! * mHC: Xie et al., "Manifold-Constrained Hyper-Connections", arXiv:2512.24880, on top of
//!   Hyper-Connections (Zhu et al., arXiv:2409.19606), paper-faithful (docs/MODELS.md §3).
//!
//! Each network is written once, generic over the tensor operations of [`Ops`]; [`TchOps`] runs
//! it on libtorch, and a graph recorder can replay it as ONNX. [`SeqRecModel`] is the entry point
//! for training and evaluation:
//!
//! ```no_run
//! use sasrec_models::{loss, SeqRecModel};
//! # fn run(cfg: &sasrec_shared::config::ModelConfig, seq: &tch::Tensor, pos: &tch::Tensor,
//! #        neg: &tch::Tensor) -> sasrec_models::Result<()> {
//! let vs = tch::nn::VarStore::new(tch::Device::cuda_if_available());
//! let model = SeqRecModel::new(&vs.root(), cfg)?;
//! let feats = model.feats(seq, None, true)?; // (B, T, C)
//! let l = loss::bce_loss(&feats, model.items(), pos, neg, 0.0);
//! sasrec_models::save_weights(&vs, "model.safetensors")?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod amp;
pub mod checkpoint;
pub mod error;
mod fused;
pub mod init;
pub mod item_table;
pub mod layers;
pub mod loss;
pub mod mhc;
pub mod model;
pub mod ops;
mod query;
pub mod sasrec;
pub mod sinkhorn;
pub mod tch_ops;
pub mod tisasrec;

pub use checkpoint::{load_weights, read_shapes, save_weights};
pub use error::{Error, Result};
pub use init::{Param, ParamInit};
pub use layers::NormPlacement;
pub use model::{Net, SeqRecModel};
pub use ops::{DType, Ops};
pub use tch_ops::TchOps;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
