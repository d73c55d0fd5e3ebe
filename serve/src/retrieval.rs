//! Two-tower retrieval: the item vectors `v_i` (`item_vectors.safetensors`, memory-mapped),
//! the HNSW index over them (`items.usearch`, under `--retrieval ann`), and the rankings
//! computed from them.
//!
//! * `/recommend` rows under `--retrieval ann` ([`Retriever::rank`]): the user tower gives the
//!   user vector `q` and `score_i = q · v_i` (equal to `model.onnx`'s `scores` within float
//!   rounding). A row with `candidates` is ranked exactly over them ([`sasrec_ann::rescore`]);
//!   any other row asks the index for `k + |exclude| + --ann_candidates` allowed items
//!   ([`ItemIndex::recommend`]: excluded items are skipped during the graph walk) and
//!   re-scores them exactly, so the scores and order are exact and only recall is approximate.
//!   Excluded items and the padding row 0 are never returned.
//! * `/similar` ([`Retriever::similar`]), in both modes: the neighbours of item `a` by
//!   `ip(a, i) = v_a · v_i` or `cosine(a, i) = v_a · v_i / (|v_a| |v_i|)` (0 when a norm is 0),
//!   `a` itself and the excluded items left out. Exactly by brute force under
//!   `--retrieval exact`; under `--retrieval ann` the candidates come from the inner-product
//!   index (`k + |exclude| + 1 + --ann_candidates` of them for `ip`; for `cosine` the best
//!   `k + --ann_candidates` by inner product, re-ranked by cosine, so an item of small norm
//!   with a high cosine can be missed).
//!
//! The index is loaded from `items.usearch` beside the model (its sidecar checked: a truncated,
//! corrupt or mismatched index is an error naming the file); when the file is missing it is
//! built on every core with the `--ann_*` build flags and saved there for the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sasrec_ann::{dot, exact_top_k, rescore, IndexInfo, ItemIndex, ItemVectors};
use sasrec_shared::run::two_tower::ANN_INDEX_FILE;
use sasrec_shared::run::ModelManifest;
use serde::Serialize;

use crate::batcher::{Row, RowResult};
use crate::config::{Retrieval, RetrievalConfig, SimilarMetric};
use crate::error::RunError;
use crate::metrics::Metrics;
use crate::shadow::Shadow;

pub use crate::ranking::{best_k, Scored};

/// The ANN index in use and where it came from.
#[derive(Debug)]
struct LoadedIndex {
    index: ItemIndex,
    path: PathBuf,
    build_seconds: Option<f64>,
}

/// The item vectors of a model, its ANN index under `--retrieval ann`, and the rankings
/// computed from them ([module docs](self)).
#[derive(Debug)]
pub struct Retriever {
    vectors: Arc<ItemVectors>,
    index: Option<LoadedIndex>,
    norms: Option<Vec<f32>>,
    cfg: RetrievalConfig,
    shadow: Option<Shadow>,
}

/// The ANN index as `GET /v1/model` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IndexReport {
    /// The index file.
    pub path: PathBuf,
    /// What it was built from and with (dimension, items, quantization, connectivity,
    /// expansion_add, source_sha256).
    #[serde(flatten)]
    pub built_with: IndexInfo,
    /// Search beam width (`--ann_ef`).
    pub ef: usize,
    /// Candidates beyond `k + |exclude|` (`--ann_candidates`).
    pub candidates: usize,
    /// Fraction of rows re-scored exactly in the background (`--ann_shadow_rate`).
    pub shadow_rate: f64,
    /// Seconds the server spent building it at load; `None` when it was read from the file.
    pub build_seconds: Option<f64>,
}

impl Retriever {
    /// Opens the item vectors at `vectors_path` for the model `manifest` (same item count and
    /// source checkpoint) and, under `--retrieval ann`, the index beside them in `dir`
    /// (built and saved when missing) and the shadow scoring of `cfg.shadow_rate`. Errors
    /// name the file at fault.
    pub fn open(
        vectors_path: &Path,
        manifest: &ModelManifest,
        dir: &Path,
        cfg: &RetrievalConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let vectors = Arc::new(ItemVectors::open(vectors_path).map_err(|e| e.to_string())?);
        check_vectors(&vectors, manifest)?;
        let norms = (cfg.similar_metric == SimilarMetric::Cosine).then(|| norms(&vectors));
        let (index, shadow) = match cfg.mode {
            Retrieval::Exact => (None, None),
            Retrieval::Ann => {
                let index = open_or_build(&dir.join(ANN_INDEX_FILE), &vectors, cfg)?;
                let shadow = (cfg.shadow_rate > 0.0)
                    .then(|| Shadow::spawn(vectors.clone(), cfg.shadow_rate, metrics.clone()))
                    .transpose()
                    .map_err(|e| format!("starting the ANN shadow thread: {e}"))?;
                (Some(index), shadow)
            }
        };
        Ok(Self {
            vectors,
            index,
            norms,
            cfg: cfg.clone(),
            shadow,
        })
    }

    /// The vector dimension `d`.
    pub fn dim(&self) -> usize {
        self.vectors.dim()
    }

    /// The item vectors `v_0..v_I`.
    pub fn vectors(&self) -> &ItemVectors {
        &self.vectors
    }

    /// The item vectors' file.
    pub fn vectors_path(&self) -> &Path {
        self.vectors.path()
    }

    /// The index as `GET /v1/model` shows it (`None` under `--retrieval exact`).
    pub fn index_report(&self) -> Option<IndexReport> {
        self.index.as_ref().map(|ix| IndexReport {
            path: ix.path.clone(),
            built_with: ix.index.info().clone(),
            ef: self.cfg.ef,
            candidates: self.cfg.candidates,
            shadow_rate: self.cfg.shadow_rate,
            build_seconds: ix.build_seconds,
        })
    }

    /// One `/recommend` row's answer from its user vector `q` (module docs): `(item, score)`
    /// best first, at most `row.k`, never an item of `row.exclude`, non-finite scores dropped
    /// (as in exact mode). Rows answered by the index are offered to the shadow scoring.
    pub fn rank(&self, row: &Row, q: &[f32]) -> Result<RowResult, RunError> {
        let allowed = |i: u64| row.exclude.binary_search(&(i as i64)).is_err();
        let ranked = match (&row.candidates, &self.index) {
            (Some(c), _) => {
                let c: Vec<u64> = c.iter().map(|&i| i as u64).collect();
                rescore(q, &self.vectors, &c, row.k, allowed)
            }
            // Asking for the whole catalogue: the exact scan is no slower and misses nothing.
            (None, Some(_)) if row.k + row.exclude.len() >= self.vectors.num_items() => {
                exact_top_k(q, &self.vectors, row.k, allowed)
            }
            (None, Some(ix)) => {
                let extra = row.exclude.len() + self.cfg.candidates;
                let r =
                    (ix.index).recommend(q, &self.vectors, row.k, extra, self.cfg.ef, allowed)?;
                if let Some(shadow) = &self.shadow {
                    shadow.offer(q, &row.exclude, row.k, &r);
                }
                r
            }
            (None, None) => exact_top_k(q, &self.vectors, row.k, allowed),
        };
        Ok(ranked
            .into_iter()
            .filter(|(_, s)| s.is_finite())
            .map(|(i, s)| (i as i64, s))
            .collect())
    }

    /// The `k` items most similar to item `item` (1..=I) under `--similar_metric`, best first,
    /// without `item` itself and the items of `exclude` (sorted); exact under
    /// `--retrieval exact`, from the index under `--retrieval ann` (module docs).
    pub fn similar(&self, item: u32, k: usize, exclude: &[i64]) -> Result<Vec<Scored>, RunError> {
        let item = u64::from(item);
        let query = self.vectors.row(item as usize);
        let allowed = |i: u64| i != item && exclude.binary_search(&(i as i64)).is_err();
        let (ef, margin, extra) = (self.cfg.ef, self.cfg.candidates, exclude.len() + 1);
        let found = match (&self.index, self.cfg.similar_metric) {
            (None, SimilarMetric::Ip) => return Ok(exact_top_k(query, &self.vectors, k, allowed)),
            (Some(ix), SimilarMetric::Ip) => {
                return Ok((ix.index).recommend(
                    query,
                    &self.vectors,
                    k,
                    extra + margin,
                    ef,
                    allowed,
                )?)
            }
            (None, SimilarMetric::Cosine) => (1..=self.vectors.num_items() as u64)
                .filter(|&i| allowed(i))
                .collect(),
            (Some(ix), SimilarMetric::Cosine) => (ix.index)
                .recommend(query, &self.vectors, k + margin, extra, ef, allowed)?
                .into_iter()
                .map(|(i, _)| i)
                .collect::<Vec<u64>>(),
        };
        Ok(self.cosine_top_k(item, &found, k))
    }

    /// The best `k` of `items` by cosine similarity to item `a`, equal scores to the lower
    /// index.
    fn cosine_top_k(&self, a: u64, items: &[u64], k: usize) -> Vec<Scored> {
        let query = self.vectors.row(a as usize);
        let scored = items.iter().map(|&i| {
            let denominator = self.norm(a) * self.norm(i);
            let cos = if denominator > 0.0 {
                dot(query, self.vectors.row(i as usize)) / denominator
            } else {
                0.0
            };
            // `+ 0.0` turns −0 into +0, so equal scores tie exactly.
            (i, cos + 0.0)
        });
        best_k(scored.collect(), k)
    }

    /// `|v_i|`, precomputed under `--similar_metric cosine`.
    fn norm(&self, i: u64) -> f32 {
        match &self.norms {
            Some(n) => n[i as usize],
            None => {
                let v = self.vectors.row(i as usize);
                dot(v, v).sqrt()
            }
        }
    }
}

/// `|v_i| = √(v_i · v_i)` of every row (row 0 included, so the index is the item).
fn norms(vectors: &ItemVectors) -> Vec<f32> {
    (0..=vectors.num_items())
        .map(|i| dot(vectors.row(i), vectors.row(i)).sqrt())
        .collect()
}

/// The item vectors belong to the model: one row per item of the item map and the same
/// source checkpoint.
fn check_vectors(vectors: &ItemVectors, manifest: &ModelManifest) -> Result<(), String> {
    let want = (
        manifest.spec.model.num_items,
        manifest.source_sha256.as_str(),
    );
    let got = (vectors.num_items(), vectors.source_sha256());
    if got != want {
        return Err(format!(
            "{}: {} items from checkpoint {}, but the model {} scores {} items from checkpoint \
             {}; export the model again (sasrec-export --onnx)",
            vectors.path().display(),
            got.0,
            got.1,
            manifest.id(),
            want.0,
            want.1
        ));
    }
    Ok(())
}

/// The index at `path` for `vectors`: opened (and checked) when the file exists, else built on
/// every core with `cfg.params` and saved there.
fn open_or_build(
    path: &Path,
    vectors: &ItemVectors,
    cfg: &RetrievalConfig,
) -> Result<LoadedIndex, String> {
    if path.exists() {
        open_index(path, vectors, cfg)
    } else {
        build_index(path, vectors, cfg)
    }
}

/// The saved index at `path`, checked against `vectors` (errors name the file); its own build
/// parameters win over `cfg.params` (logged when they differ).
fn open_index(
    path: &Path,
    vectors: &ItemVectors,
    cfg: &RetrievalConfig,
) -> Result<LoadedIndex, String> {
    let index = ItemIndex::open(path, vectors).map_err(|e| {
        format!(
            "{e} (delete {} to have the server build a new index)",
            path.display()
        )
    })?;
    let info = index.info();
    let p = &cfg.params;
    if (info.quantization, info.connectivity, info.expansion_add)
        != (p.quantization, p.connectivity, p.expansion_add)
    {
        tracing::info!(
            path = %path.display(),
            quantization = %info.quantization,
            connectivity = info.connectivity,
            expansion_add = info.expansion_add,
            "the saved ANN index was built with other --ann_* parameters; using it as it is"
        );
    }
    Ok(LoadedIndex {
        index,
        path: path.to_path_buf(),
        build_seconds: None,
    })
}

/// A new index of `vectors`, built on every core with `cfg.params` and saved at `path` (a
/// failed save is logged; the index built is used anyway).
fn build_index(
    path: &Path,
    vectors: &ItemVectors,
    cfg: &RetrievalConfig,
) -> Result<LoadedIndex, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let index = ItemIndex::build(vectors, &cfg.params, threads).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        path = %path.display(),
        items = vectors.num_items(),
        threads,
        seconds,
        "ANN index built"
    );
    if let Err(e) = index.save(path) {
        tracing::warn!(error = %e, "could not save the ANN index; it will be built again");
    }
    Ok(LoadedIndex {
        index,
        path: path.to_path_buf(),
        build_seconds: Some(seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_k_orders_by_score_then_index() {
        let scored = vec![(5, 1.0), (2, 3.0), (9, 3.0), (1, -1.0), (7, 2.0)];
        assert_eq!(
            best_k(scored.clone(), 3),
            vec![(2, 3.0), (9, 3.0), (7, 2.0)]
        );
        assert_eq!(best_k(scored.clone(), 9).len(), 5);
        assert_eq!(best_k(scored, 0), vec![]);
    }
}
