//! Batched evaluation under both protocols (no autograd, dropout off).

use sasrec_models::SeqRecModel;
use sasrec_shared::eval::EvalSet;
use sasrec_shared::metrics::{full_ranks, sampled_ranks, Accumulator, Metrics};
use tch::{Kind, Tensor};

/// Metrics of one split part under both protocols.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PartMetrics {
    /// True item against the 100 fixed sampled negatives.
    pub sampled: Metrics,
    /// True item against all items, the input history excluded.
    pub full: Metrics,
}

/// Scores every user of `set` in batches of `batch_size` and returns HR@10, NDCG@10 and MRR
/// under the sampled and the full-ranking protocol.
pub fn evaluate(
    model: &SeqRecModel,
    set: &EvalSet,
    batch_size: usize,
) -> sasrec_models::Result<PartMetrics> {
    let t = model.config().maxlen as i64;
    let mut sampled = Accumulator::new(10);
    let mut full = Accumulator::new(10);
    let n_cand = set.num_candidates() as i64;
    let mut start = 0;
    while start < set.len() {
        let end = (start + batch_size.max(1)).min(set.len());
        let b = set.batch(start..end);
        let rows = (end - start) as i64;
        let seq = Tensor::from_slice(&b.seq).view([rows, t]);
        let tm = b
            .intervals
            .as_ref()
            .map(|iv| Tensor::from_slice(iv).view([rows, t, t]));
        let scores = model.score_all(&seq, tm.as_ref())?.to_kind(Kind::Float); // (rows, I+1)
        let cand = Tensor::from_slice(&b.candidates)
            .view([rows, n_cand])
            .to_device(scores.device());
        let cand_scores: Vec<f32> = Vec::try_from(scores.gather(1, &cand, false).flatten(0, -1))?;
        sampled.add(&sampled_ranks(&cand_scores, n_cand as usize));
        let all: Vec<f32> = Vec::try_from(scores.flatten(0, -1))?;
        full.add(&full_ranks(&all, &b.targets, &b.exclude));
        start = end;
    }
    Ok(PartMetrics {
        sampled: sampled.finish(),
        full: full.finish(),
    })
}
