//! Batched evaluation under both protocols (no autograd, dropout off).

use sasrec_models::SeqRecModel;
use sasrec_shared::eval::EvalSet;
use sasrec_shared::metrics::{Accumulator, Metrics};
use tch::{Kind, Tensor};

/// Metrics of one split part under both protocols.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartMetrics {
    /// True item against the 100 fixed sampled negatives.
    pub sampled: Metrics,
    /// True item against all items, the input history excluded.
    pub full: Metrics,
}

/// 0-based ranks (rows) of `target` (rows, 1) among the columns of `others` (rows, m) where
/// `competing` is true: the count of competitors not strictly below the target, so ties count
/// against the true item and NaN competitors count as higher; a NaN target ranks last. The
/// same rule as [`sasrec_shared::metrics::rank_of`], computed on the scores' device.
pub fn ranks(target: &Tensor, others: &Tensor, competing: Option<&Tensor>) -> Tensor {
    let higher = others.lt_tensor(target).logical_not();
    let higher = match competing {
        Some(c) => higher.logical_and(c),
        None => higher,
    };
    higher.sum_dim_intlist(1, false, Kind::Int64)
}

/// Full-ranking ranks of `targets` in `scores` (rows, I+1) on the scores' device: column 0,
/// the user's input history (`exclude`) and the true item itself do not compete.
pub fn full_ranking_ranks(scores: &Tensor, targets: &[u32], exclude: &[&[u32]]) -> Tensor {
    let (rows, width) = (targets.len() as i64, scores.size()[1]);
    let device = scores.device();
    let mut off: Vec<i64> = Vec::new();
    for (r, (&t, ex)) in targets.iter().zip(exclude).enumerate() {
        let base = r as i64 * width;
        off.push(base);
        off.push(base + t as i64);
        off.extend(ex.iter().map(|&i| base + i as i64));
    }
    let competing = Tensor::ones([rows * width], (Kind::Bool, device)).index_fill(
        0,
        &Tensor::from_slice(&off).to_device(device),
        0,
    );
    let tgt: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let tgt = Tensor::from_slice(&tgt).view([rows, 1]).to_device(device);
    ranks(
        &scores.gather(1, &tgt, false),
        scores,
        Some(&competing.view([rows, width])),
    )
}

/// Scores every user of `set` in batches of `batch_size` and returns HR@10, NDCG@10 and MRR
/// under the sampled and the full-ranking protocol. Scoring and ranking run on the model's
/// device; only the ranks (one integer per user and protocol) come back to the host.
pub fn evaluate(
    model: &SeqRecModel,
    set: &EvalSet,
    batch_size: usize,
) -> sasrec_models::Result<PartMetrics> {
    let t = model.config().maxlen as i64;
    let mut sampled = Accumulator::new(10);
    let mut full = Accumulator::new(10);
    let n_cand = set.num_candidates() as i64;
    let to_usize = |r: Tensor| -> sasrec_models::Result<Vec<usize>> {
        Ok(Vec::<i64>::try_from(r)?
            .into_iter()
            .map(|x| x as usize)
            .collect())
    };
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
        let cand_scores = scores.gather(1, &cand, false); // (rows, 101), true item first
        sampled.add(&to_usize(ranks(
            &cand_scores.narrow(1, 0, 1),
            &cand_scores.narrow(1, 1, n_cand - 1),
            None,
        ))?);
        full.add(&to_usize(full_ranking_ranks(
            &scores, &b.targets, &b.exclude,
        ))?);
        start = end;
    }
    Ok(PartMetrics {
        sampled: sampled.finish(),
        full: full.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sasrec_shared::metrics::{full_ranks, sampled_ranks};

    /// The device-side ranks equal the reference host implementation, ties and NaN included.
    #[test]
    fn tensor_ranks_equal_the_host_ranks() {
        let nan = f32::NAN;
        let scores: Vec<f32> = vec![
            0.0, 1.0, 2.0, 2.0, 0.5, 3.0, -1.0, 2.0, // target 2 ties with 3 and 7; 5 excluded
            9.0, nan, 0.1, 0.2, 0.3, 0.1, 0.0, 0.4, // NaN competitor counts as higher
            0.0, 0.3, nan, 0.2, 0.1, 0.5, 0.6, 0.7, // NaN target ranks last
            5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, // all tie; column 0 never competes
        ];
        let targets = [2u32, 4, 2, 1];
        let ex: Vec<Vec<u32>> = vec![vec![5, 6], vec![2], vec![1, 2], vec![]];
        let exclude: Vec<&[u32]> = ex.iter().map(|v| v.as_slice()).collect();
        let t = Tensor::from_slice(&scores).view([4, 8]);
        let got: Vec<i64> = Vec::try_from(full_ranking_ranks(&t, &targets, &exclude)).unwrap();
        let want = full_ranks(&scores, &targets, &exclude);
        assert_eq!(got.iter().map(|&x| x as usize).collect::<Vec<_>>(), want);
        assert_eq!(want, [2, 2, 5, 6]);
        let got: Vec<i64> =
            Vec::try_from(ranks(&t.narrow(1, 0, 1), &t.narrow(1, 1, 7), None)).unwrap();
        let want = sampled_ranks(&scores, 8);
        assert_eq!(got.iter().map(|&x| x as usize).collect::<Vec<_>>(), want);
    }
}
