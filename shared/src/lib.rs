//! The sasrec-rs data layer, pure Rust (no libtorch, no ONNX Runtime).
//!
//! Data flows one way: a file is read into a [`Dataset`] (raw ids mapped to contiguous
//! indices by [`IdMap`]), split leave-one-out into a [`Split`], sampled into training
//! [`Batch`]es by the [`Sampler`] and scored by [`eval`] and [`metrics`] under the sampled and
//! the full-ranking protocol. [`time`] holds the one implementation of TiSASRec's intervals.
//!
//! ```
//! use sasrec_shared::{synthetic, Dataset, Split};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("synthetic.txt");
//! let cfg = synthetic::SyntheticConfig { users: 50, ..Default::default() };
//! synthetic::write(&cfg, &path).unwrap();
//! let data = Dataset::read(&path, None).unwrap();
//! assert_eq!(data.num_users(), 50);
//! let split = Split::new(data.into(), sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN);
//! assert!(split.has_holdout(1));
//! ```
#![deny(missing_docs)]

pub mod cold;
pub mod config;
pub mod convert;
pub mod csr;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod features;
pub mod format;
pub mod idmap;
pub mod io;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod pack;
pub mod rng;
pub mod run;
pub mod sampler;
pub mod split;
pub mod synthetic;
pub mod time;

pub use dataset::{Dataset, KCore};
pub use error::{Error, Result};
pub use idmap::IdMap;
pub use sampler::{Batch, Sampler, SamplerConfig};
pub use split::{Part, Split};
