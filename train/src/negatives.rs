//! Negatives of the sampled losses (`--loss sampled_softmax`, `--loss gbce`): N item indices
//! in 1..=I per step, shared by the batch, drawn with the torch generator (seeded per epoch,
//! so runs are reproducible), and the `log Q` table of the logQ correction.

use sasrec_shared::Split;
use tch::{Device, Kind, Tensor};

use crate::cli::NegativeSamplerKind;

/// Draws the negatives of one step.
#[derive(Debug)]
pub enum NegativeSampler {
    /// `Q(j) = 1/I` for j in 1..=I.
    Uniform {
        /// I.
        num_items: i64,
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
                num_items: split.num_items() as i64,
                device,
            },
            NegativeSamplerKind::Popularity => {
                let counts: Vec<f64> = split
                    .train_item_counts()
                    .iter()
                    .map(|&c| c as f64)
                    .collect();
                Self::from_counts(&counts, device)
            }
        }
    }

    /// The popularity sampler of `counts` (I+1, `counts[0]` for padding is ignored).
    pub fn from_counts(counts: &[f64], device: Device) -> Self {
        let c = Tensor::from_slice(counts)
            .to_kind(Kind::Float)
            .to_device(device);
        let _ = c.get(0).fill_(0.0);
        let q = &c / c.sum(Kind::Float);
        let log_q = q.log().clamp_min(-1e4);
        Self::Popularity { q, log_q }
    }

    /// `n` item indices (int64), with replacement.
    pub fn draw(&self, n: i64) -> Tensor {
        match self {
            Self::Uniform { num_items, device } => {
                Tensor::randint_low(1, num_items + 1, [n], (Kind::Int64, *device))
            }
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

    #[test]
    fn uniform_draws_stay_in_range_and_need_no_correction() {
        let s = NegativeSampler::Uniform {
            num_items: 5,
            device: Device::Cpu,
        };
        tch::manual_seed(3);
        let ids = Vec::<i64>::try_from(s.draw(10_000)).unwrap();
        assert!(ids.iter().all(|&i| (1..=5).contains(&i)));
        assert!((1..=5).all(|j| ids.contains(&j)));
        assert!(s.log_q().is_none());
    }
}
