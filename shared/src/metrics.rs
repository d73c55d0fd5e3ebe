//! Ranking metrics from ranks: HR@k, NDCG@k and MRR (docs/MODELS.md §1.7, pitfall 22).
//!
//! A rank is 0-based: the number of competing candidates that score strictly higher than the
//! true item, **plus** the number that tie with it (ties are resolved against the true item,
//! so a model that scores everything equally is ranked last, never first). A NaN score for
//! the true item ranks it last; NaN competitors count as higher.
//! `HR@k = 1[r < k]`, `NDCG@k = 1[r < k] / log2(r + 2)`, `MRR = 1/(r + 1)` and, at a cut-off,
//! `MRR@k = 1[r < k] / (r + 1)`.
//!
//! Beyond the true item's rank, the top-k lists themselves: catalogue coverage@k (the share of
//! the items that reach at least one user's top k) and the mean training-popularity rank of
//! the recommended items (docs/MODELS.md §1.7).

use serde::{Deserialize, Serialize};

/// Rank of `target` among `others` (see the module docs for ties and NaN).
#[inline]
pub fn rank_of(target: f32, others: impl Iterator<Item = f32>) -> usize {
    if target.is_nan() {
        return others.count();
    }
    // Not `s >= target`: a NaN competitor must count as higher.
    others
        .filter(|s| s.partial_cmp(&target) != Some(std::cmp::Ordering::Less))
        .count()
}

/// Ranks for the sampled protocol: each row of `scores` (rows × n) has the true item in
/// column 0 and the sampled negatives after it.
pub fn sampled_ranks(scores: &[f32], n: usize) -> Vec<usize> {
    scores
        .chunks_exact(n)
        .map(|row| rank_of(row[0], row[1..].iter().copied()))
        .collect()
}

/// Ranks for the full-ranking protocol: each row of `scores` (rows × (I+1)) holds a score per
/// item index (column 0 is padding and never competes); `targets[r]` is the true item and
/// `exclude[r]` the items that do not compete (the user's input history). The true item itself
/// is never excluded.
pub fn full_ranks(scores: &[f32], targets: &[u32], exclude: &[&[u32]]) -> Vec<usize> {
    let width = scores.len() / targets.len().max(1);
    let mut excluded = vec![false; width];
    scores
        .chunks_exact(width)
        .zip(targets.iter().zip(exclude))
        .map(|(row, (&t, ex))| {
            excluded[0] = true;
            for &i in ex.iter() {
                excluded[i as usize] = true;
            }
            excluded[t as usize] = false;
            let target = row[t as usize];
            let others = row
                .iter()
                .zip(&excluded)
                .enumerate()
                .filter(|&(i, (_, &x))| !x && i != t as usize)
                .map(|(_, (&s, _))| s);
            let r = rank_of(target, others);
            excluded[0] = false;
            for &i in ex.iter() {
                excluded[i as usize] = false;
            }
            r
        })
        .collect()
}

/// Running sums of HR@k, NDCG@k and MRR over users.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    k: usize,
    users: usize,
    hr: f64,
    ndcg: f64,
    mrr: f64,
}

/// Averaged metrics of one protocol on one split part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The cutoff k.
    pub k: usize,
    /// Users evaluated.
    pub users: usize,
    /// HR@k.
    pub hr: f64,
    /// NDCG@k.
    pub ndcg: f64,
    /// Mean reciprocal rank (no cutoff).
    pub mrr: f64,
}

impl Accumulator {
    /// An empty accumulator for cutoff `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            users: 0,
            hr: 0.0,
            ndcg: 0.0,
            mrr: 0.0,
        }
    }

    /// Adds a batch of 0-based ranks.
    pub fn add(&mut self, ranks: &[usize]) {
        for &r in ranks {
            self.users += 1;
            self.mrr += 1.0 / (r as f64 + 1.0);
            if r < self.k {
                self.hr += 1.0;
                self.ndcg += 1.0 / (r as f64 + 2.0).log2();
            }
        }
    }

    /// The averages (all zero when no user was added).
    pub fn finish(&self) -> Metrics {
        let n = self.users.max(1) as f64;
        Metrics {
            k: self.k,
            users: self.users,
            hr: self.hr / n,
            ndcg: self.ndcg / n,
            mrr: self.mrr / n,
        }
    }
}

/// HR@k, NDCG@k and MRR@k of one protocol at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtK {
    /// HR@k = mean 1[r < k].
    pub hr: f64,
    /// NDCG@k = mean 1[r < k] / log2(r + 2).
    pub ndcg: f64,
    /// MRR@k = mean 1[r < k] / (r + 1).
    pub mrr: f64,
}

impl AtK {
    /// The means over `ranks` (0-based) at cut-off `k`, summed in order; all zero when empty.
    pub fn of(ranks: &[usize], k: usize) -> Self {
        let (mut hr, mut ndcg, mut mrr) = (0.0, 0.0, 0.0);
        for &r in ranks.iter().filter(|&&r| r < k) {
            hr += 1.0;
            ndcg += 1.0 / (r as f64 + 2.0).log2();
            mrr += 1.0 / (r as f64 + 1.0);
        }
        let n = ranks.len().max(1) as f64;
        Self {
            hr: hr / n,
            ndcg: ndcg / n,
            mrr: mrr / n,
        }
    }
}

/// Training-popularity rank of every item index: `rank(i) = 1 + #{j ≥ 1 : c_j > c_i}` from
/// the interaction counts `c` (index 0 is padding and gets rank 0), so the most popular item
/// has rank 1 and tied items share the better rank.
pub fn popularity_ranks(counts: &[u64]) -> Vec<u32> {
    let mut order: Vec<u64> = counts.iter().skip(1).copied().collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                0
            } else {
                1 + order.partition_point(|x| x > c) as u32
            }
        })
        .collect()
}

/// What the top-k lists recommend, over all users at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ListStats {
    /// Coverage@k: distinct items in the users' top k over the catalogue's I items.
    pub coverage: f64,
    /// Mean popularity rank@k: [`popularity_ranks`] averaged over every recommended
    /// (user, item) pair in the top k; 1 would mean every list is the most popular item.
    pub mean_popularity_rank: f64,
}

impl ListStats {
    /// The statistics of the first `k` entries of each row of `lists` (rows × `width` item
    /// indices, best first; a negative index marks a list shorter than `width`), against the
    /// item ranks `popularity` (I + 1 entries, from [`popularity_ranks`]).
    pub fn of(lists: &[i64], width: usize, k: usize, popularity: &[u32]) -> Self {
        let mut seen = vec![false; popularity.len()];
        let (mut sum, mut entries) = (0.0, 0usize);
        for row in lists.chunks_exact(width.max(1)) {
            for &i in row.iter().take(k).filter(|&&i| i > 0) {
                seen[i as usize] = true;
                sum += f64::from(popularity[i as usize]);
                entries += 1;
            }
        }
        let items = popularity.len().saturating_sub(1).max(1);
        Self {
            coverage: seen.iter().filter(|&&s| s).count() as f64 / items as f64,
            mean_popularity_rank: sum / entries.max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_higher_and_ties() {
        assert_eq!(sampled_ranks(&[0.5, 0.1, 0.9, 0.5, 0.2], 5), vec![2]);
        assert_eq!(sampled_ranks(&[1.0, 0.0, 0.0], 3), vec![0]);
        assert_eq!(sampled_ranks(&[f32::NAN, 0.0, 0.0], 3), vec![2]);
        assert_eq!(sampled_ranks(&[1.0, f32::NAN, 0.0], 3), vec![1]);
        assert_eq!(
            sampled_ranks(&[3.0, 2.0, 3.0, 4.0, 1.0, 0.0], 3),
            vec![1, 0]
        );
    }

    #[test]
    fn full_ranks_skip_padding_and_excluded() {
        // items 1..=5; column 0 is padding with a huge score that must not count.
        let scores = [9.0, 0.1, 0.8, 0.3, 0.9, 0.5, 9.0, 0.1, 0.8, 0.3, 0.9, 0.5];
        let ex1: &[u32] = &[4];
        let ex2: &[u32] = &[2, 3];
        // row 1: target 3 (0.3); 4 excluded; higher: 2 (0.8), 5 (0.5) → 2
        // row 2: target 3 is in the exclusion list but is the target, so it competes;
        //        2 excluded; higher: 4 (0.9), 5 (0.5) → 2
        assert_eq!(full_ranks(&scores, &[3, 3], &[ex1, ex2]), vec![2, 2]);
        assert_eq!(full_ranks(&scores, &[4, 1], &[&[], &[]]), vec![0, 4]);
    }

    #[test]
    fn metrics_from_hand_computed_ranks() {
        let mut acc = Accumulator::new(10);
        acc.add(&[0, 1, 9, 10, 99]);
        let m = acc.finish();
        assert_eq!(m.users, 5);
        assert!((m.hr - 3.0 / 5.0).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 3f64.log2() + 1.0 / 11f64.log2()) / 5.0;
        assert!((m.ndcg - ndcg).abs() < 1e-12, "{} vs {ndcg}", m.ndcg);
        let mrr = (1.0 + 0.5 + 0.1 + 1.0 / 11.0 + 0.01) / 5.0;
        assert!((m.mrr - mrr).abs() < 1e-12);
        assert_eq!(Accumulator::new(10).finish().hr, 0.0);
    }

    #[test]
    fn metrics_at_cutoffs_from_hand_computed_ranks() {
        let ranks = [0, 1, 4, 9, 19, 99];
        let m = AtK::of(&ranks, 5);
        assert!((m.hr - 3.0 / 6.0).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 3f64.log2() + 1.0 / 6f64.log2()) / 6.0;
        assert!((m.ndcg - ndcg).abs() < 1e-12, "{} vs {ndcg}", m.ndcg);
        assert!((m.mrr - (1.0 + 0.5 + 0.2) / 6.0).abs() < 1e-12);
        assert_eq!(AtK::of(&ranks, 1).hr, 1.0 / 6.0);
        assert_eq!(AtK::of(&ranks, 1).ndcg, 1.0 / 6.0);
        assert_eq!(AtK::of(&ranks, 100).hr, 1.0);
        // At k = 10 the three agree with the accumulator's HR@10 and NDCG@10.
        let mut acc = Accumulator::new(10);
        acc.add(&ranks);
        let (a, b) = (acc.finish(), AtK::of(&ranks, 10));
        assert_eq!((a.hr, a.ndcg), (b.hr, b.ndcg));
        assert_eq!(AtK::of(&[], 10).hr, 0.0);
    }

    #[test]
    fn popularity_ranks_share_ties_and_skip_padding() {
        // items 1..=5 with counts 3, 9, 3, 0, 7
        assert_eq!(
            popularity_ranks(&[0, 3, 9, 3, 0, 7]),
            vec![0, 3, 1, 3, 5, 2]
        );
        assert_eq!(popularity_ranks(&[5]), vec![0]);
    }

    #[test]
    fn coverage_and_popularity_of_hand_made_lists() {
        let popularity = [0, 3, 1, 3, 5, 2]; // 5 items
                                             // two users, lists of width 3; the second list is one item short (−1)
        let lists = [2, 5, 1, 2, 4, -1];
        let at1 = ListStats::of(&lists, 3, 1, &popularity);
        assert_eq!(at1.coverage, 1.0 / 5.0); // {2}
        assert_eq!(at1.mean_popularity_rank, 1.0);
        let at2 = ListStats::of(&lists, 3, 2, &popularity);
        assert_eq!(at2.coverage, 3.0 / 5.0); // {2, 5, 4}
        assert_eq!(at2.mean_popularity_rank, (1.0 + 2.0 + 1.0 + 5.0) / 4.0);
        let at3 = ListStats::of(&lists, 3, 3, &popularity);
        assert_eq!(at3.coverage, 4.0 / 5.0); // {1, 2, 4, 5}; item 1 once, the −1 skipped
        assert_eq!(
            at3.mean_popularity_rank,
            (1.0 + 2.0 + 3.0 + 1.0 + 5.0) / 5.0
        );
    }
}
