//! The sasrec-rs data layer, pure Rust (no libtorch, no ONNX Runtime).
//!
//! Data flows one way: a file is read into a [`Dataset`](dataset::Dataset) (raw ids mapped to
//! contiguous indices), split leave-one-out into a [`Split`](split::Split), sampled into
//! training batches by the [`Sampler`](sampler::Sampler) and scored by [`eval`].
#![deny(missing_docs)]

pub mod config;
pub mod error;

pub use error::{Error, Result};
