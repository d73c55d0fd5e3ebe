//! Negatives of the sampled losses (`--loss sampled_softmax`, `--loss gbce`): N item indices
//! in 1..=I per step, shared by the batch (sampled softmax) or per sequence (gBCE), drawn with the torch generator (seeded per batch,
//! so runs are reproducible), optionally M more taken from the batch's own targets
//! (`--in_batch_negatives`), and the `log Q` table of the logQ correction of their mixture.

use sasrec_shared::Split;
use tch::{Device, Kind, Tensor};

use crate::config::NegativeSamplerKind;
use crate::config::OptimConfig;

/// The negatives of one step and the logQ table that corrects for how they were drawn.
///
/// N come from the sampler (`Q_s`: uniform or popularity). The M in-batch negatives are the
/// targets of M positions drawn uniformly from the batch's Ω, so they follow the items'
/// frequency as training targets, estimated by their training counts `Q_pop` (as Yi et al.,
/// RecSys 2019, estimate it by streaming frequency). All N + M together are a draw from the
/// mixture `Q(j) = (N·Q_s(j) + M·Q_pop(j)) / (N + M)` (mixed negative sampling, Yang et al.,
/// WWW 2020), and the loss subtracts `log Q(j)` from every logit. With M = 0 and a uniform
/// sampler, Q is constant and no correction is applied.
#[derive(Debug)]
pub struct Negatives {
    sampler: NegativeSampler,
    /// M.
    in_batch: i64,
    /// W, the items the negatives come from ([`Split::num_warm_items`]).
    num_items: usize,
    /// `log Q` (I+1) of the mixture; `None` when Q is uniform.
    log_q: Option<Tensor>,
}

impl Negatives {
    /// The negatives of `optim` (`--num_negatives`, `--negative_sampler`,
    /// `--in_batch_negatives`) over the items of `split`, on `device`.
    pub fn new(optim: &OptimConfig, split: &Split, device: Device) -> Self {
        let sampler = NegativeSampler::new(optim.negative_sampler, split, device);
        let in_batch = optim.in_batch_negatives as i64;
        let log_q = match in_batch {
            0 => sampler.log_q().map(Tensor::shallow_clone),
            m => {
                let n = optim.num_negatives as f64;
                let m = m as f64;
                let q_pop = NegativeSampler::popularity(split, device).q();
                let q = (sampler.q() * n + q_pop * m) / (n + m);
                Some(log_of(&q))
            }
        };
        Self {
            sampler,
            in_batch,
            log_q,
            num_items: split.num_warm_items(),
        }
    }

    /// `n` sampled negatives followed by the `--in_batch_negatives` targets of `targets`
    /// (B, T), 0 = padding: (n + M) int64 indices, shared by the batch.
    pub fn draw(&self, n: i64, targets: &Tensor) -> Tensor {
        let sampled = self.sampler.draw(n);
        if self.in_batch == 0 {
            return sampled;
        }
        let flat = targets.reshape([-1]).to_kind(Kind::Int64);
        let omega = flat.masked_select(&flat.ne(0)); // (|Ω|) the batch's targets
        let rows = omega.size()[0];
        if rows == 0 {
            return sampled;
        }
        let picks = Tensor::randint(rows, [self.in_batch], (Kind::Int64, omega.device()));
        let in_batch = omega.index_select(0, &picks).to_device(sampled.device());
        Tensor::cat(&[sampled, in_batch], 0)
    }

    /// `n` sampled negatives for each of `rows` sequences: (rows, n) int64 (gBCE, whose
    /// negatives are drawn per sequence, see `loss::gbce_loss`).
    pub fn draw_per_row(&self, rows: i64, n: i64) -> Tensor {
        self.sampler.draw(rows * n).reshape([rows, n])
    }

    /// W: the items negatives come from, all I or the warm ones under `--cold_items`.
    pub fn num_items(&self) -> usize {
        self.num_items
    }

    /// `log Q` for the logQ correction; `None` when the negatives are uniform.
    pub fn log_q(&self) -> Option<&Tensor> {
        self.log_q.as_ref()
    }
}

/// `log q` with items of probability 0 (never seen in training, and padding) clamped to a
/// finite −1e4.
fn log_of(q: &Tensor) -> Tensor {
    q.log().clamp_min(-1e4)
}

/// Draws the negatives of one step.
#[derive(Debug)]
pub enum NegativeSampler {
    /// `Q(j) = 1/W` for j in 1..=W, the items training may use (all I, or the warm ones
    /// under `--cold_items`), 0 for the cold items W+1..=I.
    Uniform {
        /// W.
        num_items: i64,
        /// I + 1, the length of Q.
        rows: i64,
        /// Where the indices are made.
        device: Device,
    },
    /// `Q(j) = count(j)/Σ count`, the items' frequencies in the training data.
    Popularity {
        /// Q (I+1), fp32, `Q(0) = 0`.
        q: Tensor,
        /// `log Q` (I+1), items that never occur in training clamped to a finite −1e4.
        log_q: Tensor,
    },
}

impl NegativeSampler {
    /// The sampler of `kind` for the items of `split`, on `device`.
    pub fn new(kind: NegativeSamplerKind, split: &Split, device: Device) -> Self {
        match kind {
            NegativeSamplerKind::Uniform => Self::Uniform {
                num_items: split.num_warm_items() as i64,
                rows: split.num_items() as i64 + 1,
                device,
            },
            NegativeSamplerKind::Popularity => Self::popularity(split, device),
        }
    }

    /// The popularity sampler of the training counts of `split`.
    pub fn popularity(split: &Split, device: Device) -> Self {
        let counts: Vec<f64> = split
            .train_item_counts()
            .iter()
            .map(|&c| c as f64)
            .collect();
        Self::from_counts(&counts, device)
    }

    /// The popularity sampler of `counts` (I+1, `counts[0]` for padding is ignored).
    pub fn from_counts(counts: &[f64], device: Device) -> Self {
        let c = Tensor::from_slice(counts)
            .to_kind(Kind::Float)
            .to_device(device);
        let _ = c.get(0).fill_(0.0);
        let q = &c / c.sum(Kind::Float);
        let log_q = log_of(&q);
        Self::Popularity { q, log_q }
    }

    /// The distribution Q (I+1) the draws follow, `Q(0) = 0`.
    pub fn q(&self) -> Tensor {
        match self {
            Self::Uniform {
                num_items,
                rows,
                device,
            } => {
                let q = Tensor::zeros([*rows], (Kind::Float, *device));
                let _ = q.narrow(0, 1, *num_items).fill_(1.0 / *num_items as f64);
                q
            }
            Self::Popularity { q, .. } => q.shallow_clone(),
        }
    }

    /// `n` item indices (int64), with replacement.
    pub fn draw(&self, n: i64) -> Tensor {
        match self {
            Self::Uniform {
                num_items, device, ..
            } => Tensor::randint_low(1, num_items + 1, [n], (Kind::Int64, *device)),
            Self::Popularity { q, .. } => q.multinomial(n, true),
        }
    }

    /// `log Q` for the logQ correction; `None` for the uniform sampler, where it would shift
    /// every logit by the same constant.
    pub fn log_q(&self) -> Option<&Tensor> {
        match self {
            Self::Uniform { .. } => None,
            Self::Popularity { log_q, .. } => Some(log_q),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded draw of 200,000 follows the counts (Pearson's χ² below the 0.999 quantile of
    /// its 4 degrees of freedom, 18.47) and never yields padding or a never-seen item.
    #[test]
    fn popularity_draws_follow_the_counts_and_never_padding() {
        let counts = [7.0, 1.0, 2.0, 0.0, 3.0, 4.0, 10.0]; // index 0 (padding) is ignored
        let s = NegativeSampler::from_counts(&counts, Device::Cpu);
        tch::manual_seed(11);
        let n = 200_000;
        let ids = Vec::<i64>::try_from(s.draw(n)).unwrap();
        let mut seen = [0f64; 7];
        for &i in &ids {
            seen[i as usize] += 1.0;
        }
        assert_eq!(seen[0], 0.0, "padding drawn");
        assert_eq!(seen[3], 0.0, "an item with count 0 drawn");
        let total: f64 = counts[1..].iter().sum();
        let chi2: f64 = [1, 2, 4, 5, 6]
            .iter()
            .map(|&j| {
                let want = n as f64 * counts[j] / total;
                (seen[j] - want).powi(2) / want
            })
            .sum();
        assert!(chi2 < 18.47, "χ² = {chi2}, counts {seen:?}");
        let lq = Vec::<f32>::try_from(s.log_q().unwrap()).unwrap();
        assert!((lq[6] as f64 - (10.0f64 / 20.0).ln()).abs() < 1e-6);
        assert_eq!(lq[0], -1e4);
    }

    /// A small split of generated data and sampled-softmax settings with N = 6.
    fn split_and_optim(in_batch: usize) -> (tempfile::TempDir, Split, OptimConfig) {
        let (dir, split) = crate::test_support::synthetic_split(30, 40, 20);
        let optim = OptimConfig {
            lr: 0.001,
            warmup_steps: 0,
            lr_decay_step: 1000,
            lr_decay_rate: 1.0,
            l2_emb: 0.0,
            batch_size: 2,
            loss: crate::config::LossKind::SampledSoftmax,
            num_negatives: 6,
            negative_sampler: NegativeSamplerKind::Uniform,
            in_batch_negatives: in_batch,
            gbce_t: crate::config::DEFAULT_GBCE_T,
            ce_chunk_size: crate::config::DEFAULT_CE_CHUNK_SIZE,
            item_optimizer: crate::config::ItemOptimizer::Adam,
            item_lr: None,
            adam_beta2: crate::config::DEFAULT_ADAM_BETA2,
        };
        (dir, split, optim)
    }

    /// In-batch negatives are targets of the batch (never padding), follow the N sampled
    /// ones, and `log Q` is the log of the mixture `(N/I + M·c_j/Σc)/(N + M)`.
    #[test]
    fn in_batch_negatives_come_from_the_targets_and_are_corrected_by_the_mixture() {
        let (_dir, split, optim) = split_and_optim(4);
        let negs = Negatives::new(&optim, &split, Device::Cpu);
        let targets = Tensor::from_slice(&[0i64, 0, 7, 9, 0, 3, 3, 9]).reshape([2, 4]);
        tch::manual_seed(5);
        for _ in 0..50 {
            let ids = Vec::<i64>::try_from(negs.draw(6, &targets)).unwrap();
            assert_eq!(ids.len(), 10);
            let items = split.num_items() as i64;
            assert!(ids[..6].iter().all(|i| (1..=items).contains(i)), "{ids:?}");
            assert!(ids[6..].iter().all(|i| [7, 9, 3].contains(i)), "{ids:?}");
        }
        let counts = split.train_item_counts();
        let total: u64 = counts[1..].iter().sum();
        let items = split.num_items() as f64;
        let lq = Vec::<f32>::try_from(negs.log_q().expect("a mixture is corrected")).unwrap();
        assert_eq!(lq[0], -1e4, "padding");
        for j in 1..counts.len() {
            let q = (6.0 / items + 4.0 * counts[j] as f64 / total as f64) / 10.0;
            assert!(
                (lq[j] as f64 - q.ln()).abs() < 1e-5,
                "item {j}: {} vs {}",
                lq[j],
                q.ln()
            );
        }
        // A batch without targets keeps the N sampled negatives only.
        assert_eq!(
            negs.draw(6, &Tensor::zeros([2, 4], (Kind::Int64, Device::Cpu)))
                .size(),
            [6]
        );
        // Without in-batch negatives, uniform draws need no correction.
        let (_dir, split, optim) = split_and_optim(0);
        let negs = Negatives::new(&optim, &split, Device::Cpu);
        assert!(negs.log_q().is_none());
        assert_eq!(negs.draw(6, &targets).size(), [6]);
    }

    #[test]
    fn uniform_draws_stay_in_range_and_need_no_correction() {
        let s = NegativeSampler::Uniform {
            num_items: 5,
            rows: 6,
            device: Device::Cpu,
        };
        tch::manual_seed(3);
        let ids = Vec::<i64>::try_from(s.draw(10_000)).unwrap();
        assert!(ids.iter().all(|&i| (1..=5).contains(&i)));
        assert!((1..=5).all(|j| ids.contains(&j)));
        assert!(s.log_q().is_none());
    }

    /// Under `--cold_items` the uniform negatives come from the warm items 1..=W only, and Q
    /// (I+1 long) is 0 on the cold ones, so it mixes with the in-batch popularity.
    #[test]
    fn cold_items_are_never_negatives() {
        let s = NegativeSampler::Uniform {
            num_items: 3,
            rows: 6,
            device: Device::Cpu,
        };
        tch::manual_seed(4);
        let ids = Vec::<i64>::try_from(s.draw(10_000)).unwrap();
        assert!(ids.iter().all(|&i| (1..=3).contains(&i)));
        let q = Vec::<f32>::try_from(s.q()).unwrap();
        assert_eq!(q, [0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
    }
}
