//! The approximate index: a usearch HNSW graph over the item vectors with the inner-product
//! metric (keys = item indices 1..=I), whose candidates are re-scored exactly.

use std::path::Path;
use std::time::Instant;

use usearch::{Index, IndexOptions, MetricKind, VectorType};

use crate::error::{Error, Result};
use crate::exact::rescore;
use crate::gate::Gate;
pub use crate::params::{AnnParams, Quantization};
use crate::sidecar::{file_digest, IndexInfo, Sidecar};
use crate::vectors::ItemVectors;

/// The beam width of a search (HNSW `ef`) used where the caller has no reason to pick
/// another; the recall test holds it to recall@10 ≥ 0.99 on a generated catalogue with the
/// default [`AnnParams`] and the server's 100 extra candidates. usearch widens the beam to the number of candidates asked for when that
/// is larger.
pub const DEFAULT_EF: usize = 64;

/// A usearch HNSW index over the item vectors `v_1..v_I` with the inner-product metric
/// (usearch's distance is `1 − q·v_i`), key = item index. Searches may run concurrently from
/// any number of threads (see [`ItemIndex::search`]).
pub struct ItemIndex {
    index: Index,
    info: IndexInfo,
    gate: Gate,
}

impl std::fmt::Debug for ItemIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemIndex")
            .field("info", &self.info)
            .finish()
    }
}

impl ItemIndex {
    /// Builds the index of items 1..=I of `vectors` with `threads` threads (at least one)
    /// inserting in parallel. With one thread the graph is the same on every run; with more
    /// it depends on the interleaving.
    pub fn build(vectors: &ItemVectors, params: &AnnParams, threads: usize) -> Result<Self> {
        let started = Instant::now();
        let info = IndexInfo {
            dim: vectors.dim(),
            num_items: vectors.num_items(),
            quantization: params.quantization,
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            source_sha256: vectors.source_sha256().to_string(),
        };
        let index = new_index(&info)?;
        let threads = threads.max(1);
        index
            .reserve_capacity_and_threads(info.num_items, threads)
            .map_err(|e| Error::Invalid(format!("usearch could not reserve the index: {e}")))?;
        add_all(&index, vectors, info.quantization, threads)?;
        tracing::info!(
            items = info.num_items,
            dim = info.dim,
            quantization = %info.quantization,
            threads,
            secs = started.elapsed().as_secs_f64(),
            "ANN index built"
        );
        Self::ready(index, info)
    }

    /// Saves the index to `path` atomically, then its sidecar ([`crate::sidecar_path`])
    /// recording the build parameters and the index file's length and SHA-256; returns the
    /// sidecar. A crash between the two leaves a sidecar that no longer matches, which
    /// [`ItemIndex::open`] reports.
    pub fn save(&self, path: &Path) -> Result<Sidecar> {
        utf8(path)?;
        let mut digest = None;
        sasrec_shared::io::write_atomic_path(path, |tmp| -> Result<()> {
            self.index
                .save(utf8(tmp)?)
                .map_err(|e| Error::file(tmp, format!("usearch could not save the index: {e}")))?;
            digest = Some(file_digest(tmp)?);
            Ok(())
        })?;
        let (bytes, sha256) = digest.expect("the digest is taken before the rename");
        let sidecar = Sidecar::new(self.info.clone(), bytes, sha256);
        sidecar.write(path)?;
        tracing::info!(path = %path.display(), bytes, "ANN index saved");
        Ok(sidecar)
    }

    /// Opens the index saved at `path` for `vectors`: reads its sidecar (missing or malformed
    /// is an error naming the sidecar), checks that it was built for these vectors (same
    /// dimension, item count and `source_sha256`), that the file has the recorded length
    /// (else truncated) and SHA-256 (else corrupt), then memory-maps it. Errors name the file.
    pub fn open(path: &Path, vectors: &ItemVectors) -> Result<Self> {
        let started = Instant::now();
        let sidecar = Sidecar::read(path)?;
        if let Some(why) = sidecar.info.mismatch(vectors) {
            return Err(Error::file(path, why));
        }
        sidecar.verify_file(path)?;
        let info = sidecar.info;
        let index = new_index(&info)?;
        index
            .view(utf8(path)?)
            .map_err(|e| Error::file(path, format!("usearch cannot map the index: {e}")))?;
        if index.size() != info.num_items || index.dimensions() != info.dim {
            return Err(Error::file(
                path,
                format!(
                    "holds {} vectors of dim {}, the sidecar records {} of dim {}",
                    index.size(),
                    index.dimensions(),
                    info.num_items,
                    info.dim
                ),
            ));
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(path = %path.display(), items = info.num_items, secs, "ANN index opened");
        Self::ready(index, info)
    }

    /// What the index was built from and with.
    pub fn info(&self) -> &IndexInfo {
        &self.info
    }

    /// The keys of up to `count` items of highest approximate `q · v_i`, nearest first, found
    /// with beam width `max(ef, count)`. Searches run concurrently, up to one per available
    /// CPU; more wait, and so does a search whose `ef` differs from the running ones'.
    pub fn search(&self, query: &[f32], count: usize, ef: usize) -> Result<Vec<u64>> {
        self.search_where(query, count, ef, None)
    }

    /// The exact top `k` allowed items for `query` among the index's candidates: the index is
    /// searched for `k + extra` allowed items (disallowed ones are skipped during the graph
    /// walk, so they take no candidate slot), which [`rescore`] ranks by `score_i = q · v_i`
    /// from `vectors` (best first, equal scores to the lower index). The answer never holds
    /// an item with `allowed(i) == false`. `extra` buys recall: the serving side passes
    /// |exclude| + |seen| + a margin. `allowed` is called from the search and must not panic.
    pub fn recommend(
        &self,
        query: &[f32],
        vectors: &ItemVectors,
        k: usize,
        extra: usize,
        ef: usize,
        allowed: impl Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>> {
        if let Some(why) = self.info.mismatch(vectors) {
            return Err(Error::file(vectors.path(), why));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let filter: &dyn Fn(u64) -> bool = &allowed;
        let candidates = self.search_where(query, k.saturating_add(extra), ef, Some(filter))?;
        Ok(rescore(query, vectors, &candidates, k, allowed))
    }

    /// An index ready for concurrent searches: search contexts reserved, gate set up.
    fn ready(index: Index, info: IndexInfo) -> Result<Self> {
        let slots = std::thread::available_parallelism().map_or(1, |n| n.get());
        index
            .reserve_capacity_and_threads(info.num_items, slots)
            .map_err(|e| {
                Error::Invalid(format!("usearch could not reserve {slots} searches: {e}"))
            })?;
        index.change_expansion_search(DEFAULT_EF);
        let gate = Gate::new(slots, DEFAULT_EF);
        Ok(Self { index, info, gate })
    }

    /// [`ItemIndex::search`], skipping the items `allowed` rejects when it is given.
    fn search_where(
        &self,
        query: &[f32],
        count: usize,
        ef: usize,
        allowed: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<u64>> {
        if query.len() != self.info.dim || !query.iter().all(|x| x.is_finite()) {
            return Err(Error::Invalid(format!(
                "the query must be {} finite floats, got {} (finite: {})",
                self.info.dim,
                query.len(),
                query.iter().all(|x| x.is_finite())
            )));
        }
        let count = count.min(self.info.num_items);
        if count == 0 {
            return Ok(Vec::new());
        }
        let set_ef = |ef| self.index.change_expansion_search(ef);
        let keys = self.gate.run(ef, set_ef, || match self.info.quantization {
            Quantization::I8 => search_typed(&self.index, &quantize_query(query), count, allowed),
            Quantization::F32 | Quantization::F16 => {
                search_typed(&self.index, query, count, allowed)
            }
        });
        keys.map_err(|e| Error::Invalid(format!("usearch search failed: {e}")))
    }
}

/// An empty usearch index for `info` (inner product, one vector per key).
fn new_index(info: &IndexInfo) -> Result<Index> {
    let options = IndexOptions {
        dimensions: info.dim,
        metric: MetricKind::IP,
        quantization: info.quantization.scalar_kind(),
        connectivity: info.connectivity,
        expansion_add: info.expansion_add,
        expansion_search: DEFAULT_EF,
        multi: false,
    };
    Index::new(&options)
        .map_err(|e| Error::Invalid(format!("usearch could not create an index: {e}")))
}

/// Inserts items 1..=I, item `i` by thread `(i − 1) mod threads`.
fn add_all(
    index: &Index,
    vectors: &ItemVectors,
    quant: Quantization,
    threads: usize,
) -> Result<()> {
    let scale = match quant {
        Quantization::I8 => {
            i8_scale((1..=vectors.num_items()).flat_map(|i| vectors.row(i).iter().copied()))
        }
        Quantization::F32 | Quantization::F16 => 1.0,
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || add_stride(index, vectors, quant, scale, t, threads)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("an index-building thread panicked"))
    })
}

/// Inserts items `1 + first`, `1 + first + step`, … (i8 rows scaled by `scale`).
fn add_stride(
    index: &Index,
    vectors: &ItemVectors,
    quant: Quantization,
    scale: f32,
    first: usize,
    step: usize,
) -> Result<()> {
    let mut buf = Vec::with_capacity(vectors.dim());
    for i in (1 + first..=vectors.num_items()).step_by(step) {
        let row = vectors.row(i);
        let added = match quant {
            Quantization::I8 => {
                quantize_i8(row, scale, &mut buf);
                index.add(i as u64, &buf)
            }
            Quantization::F32 | Quantization::F16 => index.add(i as u64, row),
        };
        added.map_err(|e| Error::Invalid(format!("usearch could not add item {i}: {e}")))?;
    }
    Ok(())
}

/// The keys found by a plain or filtered usearch search.
fn search_typed<T: VectorType>(
    index: &Index,
    query: &[T],
    count: usize,
    allowed: Option<&dyn Fn(u64) -> bool>,
) -> std::result::Result<Vec<u64>, String> {
    let matches = match allowed {
        Some(allowed) => index.filtered_search(query, count, allowed),
        None => index.search(query, count),
    };
    matches.map(|m| m.keys).map_err(|e| e.to_string())
}

/// `127 / max |x|` over `values` (1 when all are zero).
fn i8_scale(values: impl Iterator<Item = f32>) -> f32 {
    let max = values.fold(0.0f32, |m, x| m.max(x.abs()));
    if max > 0.0 {
        127.0 / max
    } else {
        1.0
    }
}

/// `round(scale · x)` clamped to ±127, into `out`.
fn quantize_i8(values: &[f32], scale: f32, out: &mut Vec<i8>) {
    out.clear();
    out.extend(
        values
            .iter()
            .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8),
    );
}

/// The query in i8, scaled by its own largest component (a positive factor, which keeps the
/// order of `q · v_i`).
fn quantize_query(query: &[f32]) -> Vec<i8> {
    let mut out = Vec::with_capacity(query.len());
    quantize_i8(query, i8_scale(query.iter().copied()), &mut out);
    out
}

/// `path` as UTF-8, which usearch's file functions need.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::file(path, "the path is not UTF-8, which usearch needs"))
}
