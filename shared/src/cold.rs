//! Cold-start evaluation (`sasrec-train --cold_items FRACTION`, docs/MODELS.md §6.4): a seeded
//! set of items is held out of training, so that evaluation can score items nobody has
//! interacted with in training, and the category-popularity baseline scored beside it.
//!
//! [`ColdItems::apply`] picks `round(f · I)` items (at least 1, at most I − 1) uniformly with
//! the run's seed and renumbers the catalogue so that the warm items are 1..=W (in their old
//! order) and the cold ones W+1..=I, recorded as [`Dataset::cold_items`]; negatives and the
//! full softmax then draw from 1..=W only ([`crate::Split::num_warm_items`]). Every interaction
//! with a cold item is removed from the users' training parts; the validation and test items
//! stay, so a cold item can be a target and (for the test target) part of the input history.
//! A user whose training part becomes too short for a hold-out loses their cold
//! interactions everywhere and becomes training-only.

use crate::csr::Csr;
use rand::seq::index::sample;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::features::TokenIds;
use crate::idmap::IdMap;
use crate::rng::{rng_for, Stream};
use crate::split::holdout_threshold;

/// `--cold_items FRACTION` with the run's seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdItems {
    /// The share of the catalogue held out, 0 < f < 1.
    pub fraction: f64,
    /// Seed of the draw.
    pub seed: u64,
}

/// What [`ColdItems::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdReport {
    /// Items held out.
    pub items: usize,
    /// Interactions removed from the training parts.
    pub interactions_removed: usize,
    /// Users who had a hold-out and became training-only.
    pub users_without_holdout: usize,
}

impl ColdItems {
    /// Checks the fraction: `--cold_items` must lie strictly between 0 and 1.
    pub fn new(fraction: f64, seed: u64) -> Result<Self> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::Config(format!(
                "--cold_items: {fraction} is not a fraction strictly between 0 and 1"
            )));
        }
        Ok(Self { fraction, seed })
    }

    /// The items held out of `num_items`: a seeded draw of `round(f · I)` (1 ≤ n ≤ I − 1).
    pub fn draw(&self, num_items: usize) -> Vec<bool> {
        let n = ((self.fraction * num_items as f64).round() as usize).clamp(1, num_items - 1);
        let mut rng = rng_for(self.seed, Stream::ColdItems, num_items as u64, 0);
        let mut cold = vec![false; num_items + 1];
        for i in sample(&mut rng, num_items, n) {
            cold[i + 1] = true;
        }
        cold
    }

    /// `data` with the cold items renumbered last and removed from the training parts
    /// ([module docs](self)); users of fewer than [`holdout_threshold`]`(min_holdout_len)`
    /// interactions are training-only, as in [`crate::Split`].
    pub fn apply(
        &self,
        mut data: Dataset,
        min_holdout_len: usize,
    ) -> Result<(Dataset, ColdReport)> {
        let num_items = data.num_items();
        if num_items < 2 {
            return Err(Error::Config(format!(
                "--cold_items: {} has {num_items} item(s); at least 2 are needed",
                data.path.display()
            )));
        }
        let cold = self.draw(num_items);
        let order: Vec<u32> = (1..=num_items as u32)
            .filter(|&i| !cold[i as usize])
            .chain((1..=num_items as u32).filter(|&i| cold[i as usize]))
            .collect();
        let mut remap = vec![0u32; num_items + 1];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32 + 1;
        }
        let raw = order
            .iter()
            .map(|&i| data.items.raw_of(i).expect("item index"));
        data.items = IdMap::from_ordered(raw);
        let threshold = holdout_threshold(min_holdout_len);
        let mut report = ColdReport {
            items: cold.iter().filter(|&&c| c).count(),
            interactions_removed: 0,
            users_without_holdout: 0,
        };
        let kept: Vec<Vec<usize>> = data
            .sequences
            .iter()
            .map(|seq| kept_positions(seq, &cold, threshold, &mut report))
            .collect();
        let rows = |seq: &[u32], keep: &Vec<usize>| -> Vec<u32> {
            keep.iter().map(|&j| remap[seq[j] as usize]).collect()
        };
        data.sequences = Csr::from_rows(data.sequences.iter().zip(&kept).map(|(s, k)| rows(s, k)));
        if let Some(ts) = data.timestamps.as_ref() {
            let times = ts
                .iter()
                .zip(&kept)
                .map(|(t, k)| k.iter().map(|&j| t[j]).collect::<Vec<i64>>());
            data.timestamps = Some(Csr::from_rows(times));
        }
        data.cold_items = report.items;
        Ok((data, report))
    }
}

/// Positions of `seq` that stay: the training part without cold items, then the validation
/// and test items; everything but the cold items when that leaves no hold-out.
fn kept_positions(
    seq: &[u32],
    cold: &[bool],
    threshold: usize,
    report: &mut ColdReport,
) -> Vec<usize> {
    let n = seq.len();
    let warm = |j: &usize| !cold[seq[*j] as usize];
    if n >= threshold {
        let keep: Vec<usize> = (0..n - 2).filter(warm).chain([n - 2, n - 1]).collect();
        if keep.len() >= threshold {
            report.interactions_removed += n - keep.len();
            return keep;
        }
        report.users_without_holdout += 1;
    }
    let keep: Vec<usize> = (0..n).filter(warm).collect();
    report.interactions_removed += n - keep.len();
    keep
}

/// Category popularity, the cold-start baseline: a strict order of the items 1..=I (position
/// 0 = best) by the mean training count of the warm items sharing each of the item's values
/// of one token column, averaged over its values (0 without values), ties broken by a seeded
/// shuffle (so tied items rank as a random order would, not all against the target).
/// `counts` from [`crate::Split::train_item_counts`] (cold items count 0 and do not enter the
/// means); `tokens` the column's encoded value ids. Returns `position[i]` (index 0 unused).
pub fn category_popularity_order(
    counts: &[u64],
    tokens: &TokenIds,
    num_warm: usize,
    seed: u64,
) -> Vec<u32> {
    let rows = counts.len();
    let values = |i: usize| tokens.ids[i * tokens.width..(i + 1) * tokens.width].iter();
    let vocab = tokens.ids.iter().copied().max().unwrap_or(0) as usize + 1;
    let (mut sum, mut items) = (vec![0f64; vocab], vec![0f64; vocab]);
    for i in 1..=num_warm {
        for &v in values(i).filter(|&&v| v != 0) {
            sum[v as usize] += counts[i] as f64;
            items[v as usize] += 1.0;
        }
    }
    let mean = |v: usize| {
        if items[v] > 0.0 {
            sum[v] / items[v]
        } else {
            0.0
        }
    };
    let score: Vec<f64> = (0..rows)
        .map(|i| {
            let vs: Vec<usize> = values(i)
                .filter(|&&v| v != 0)
                .map(|&v| v as usize)
                .collect();
            match vs.len() {
                0 => 0.0,
                n => vs.iter().map(|&v| mean(v)).sum::<f64>() / n as f64,
            }
        })
        .collect();
    let mut rng = rng_for(seed, Stream::ColdItems, rows as u64, 1);
    let shuffle: Vec<usize> = sample(&mut rng, rows, rows).into_vec();
    let mut tie = vec![0usize; rows];
    for (k, &i) in shuffle.iter().enumerate() {
        tie[i] = k;
    }
    let mut order: Vec<usize> = (1..rows).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(tie[a].cmp(&tie[b])));
    let mut position = vec![u32::MAX; rows];
    for (p, &i) in order.iter().enumerate() {
        position[i] = p as u32;
    }
    position
}
