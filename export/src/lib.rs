//! `sasrec-export`: a trained run directory to an ONNX model that ONNX Runtime serves.
//!
//! The networks of `sasrec-models` are written once against the `Ops` trait; this crate adds
//! [`recorder::OnnxRecorder`], an `Ops` implementation that records ONNX nodes (opset 17,
//! IR version 10), and replays `SeqRecModel::forward_with` (last position only) plus
//! `score_all_items` on it, so the exported graph is the trained network itself rather than a
//! second copy. [`graph`] documents the interface (inputs `seq`, `time_matrix`, `exclude`, `k`;
//! outputs `scores`, `topk_scores`, `topk_items`) and the metadata; [`run_dir`] reads the run
//! directory and writes the model atomically, with its initializers in `<model>.onnx.data`
//! ([`external_data`]) when they exceed `--external_data_threshold`.
//!
//! Beside the model go the two-tower files of retrieval, from the same model code: the user
//! tower `user_tower.onnx` (the same forward, output `user_vector` `[batch, d]`,
//! [`graph::record_user_tower`]) and the item table it is scored against,
//! `item_vectors.safetensors` ([`item_vectors`]); `user_vector · item_vectors[i]` is the
//! model's `scores[:, i]`.
//!
//! ```no_run
//! use sasrec_export::{export, ExportOptions, Variant};
//! let out = export(&ExportOptions {
//!     train_dir: "runs/ml1m-sasrec".into(),
//!     output: None, // runs/ml1m-sasrec/model.onnx
//!     variant: Variant::LastPosition,
//!     external_data_threshold: sasrec_export::external_data::DEFAULT_THRESHOLD,
//! })?;
//! println!("{} ({} bytes)", out.onnx.display(), out.bytes);
//! println!("{} and {}", out.user_tower.path.display(), out.item_vectors.display());
//! # Ok::<(), sasrec_export::Error>(())
//! ```
#![deny(missing_docs)]

pub mod ann;
pub mod error;
pub mod external_data;
pub mod graph;
pub mod item_vectors;
pub mod proto;
pub mod recorder;
pub mod run_dir;

pub use error::{Error, Result};
pub use graph::{model_bytes, model_proto, user_tower_proto, Source, Variant};
pub use recorder::OnnxRecorder;
pub use run_dir::{export, load, ExportOptions, Exported, OnnxFile};
