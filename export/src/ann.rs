//! `sasrec-export --ann`: the approximate nearest-neighbour index over the exported item
//! vectors (`items.usearch` and its checked sidecar, beside the model), so that
//! `sasrec-serve --retrieval ann` starts without building it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sasrec_ann::{AnnParams, ItemIndex, ItemVectors};
use sasrec_shared::run::two_tower::ANN_INDEX_FILE;

use crate::error::Result;

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct AnnIndexFile {
    /// `items.usearch` beside the item vectors.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Items indexed (rows 1..=I of the item vectors).
    pub items: usize,
    /// Seconds the build took (the save excluded).
    pub build_seconds: f64,
}

/// Builds the inner-product index over the item vectors at `item_vectors` with `params` on
/// `threads` threads (0 = one per core) and saves it beside them (atomically, with its sidecar).
pub fn build(item_vectors: &Path, params: &AnnParams, threads: usize) -> Result<AnnIndexFile> {
    let vectors = ItemVectors::open(item_vectors)?;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let started = Instant::now();
    let index = ItemIndex::build(&vectors, params, threads)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let path = item_vectors
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(ANN_INDEX_FILE);
    let sidecar = index.save(&path)?;
    tracing::info!(
        path = %path.display(),
        items = vectors.num_items(),
        seconds = build_seconds,
        "ANN index built"
    );
    Ok(AnnIndexFile {
        path,
        bytes: sidecar.index_bytes,
        items: vectors.num_items(),
        build_seconds,
    })
}
