//! The exact ranking every answer is measured against: `score_i = q · v_i` in float32, summed
//! in one fixed order ([`dot`]), best first, equal scores to the lower item index.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vectors::ItemVectors;

/// Accumulator lanes of [`dot`].
const LANES: usize = 8;

/// The inner product `q · v = Σ_j q_j v_j` in float32, summed in a fixed order: lane
/// `l ∈ 0..8` accumulates `q_j v_j` for `j ≡ l (mod 8)` over the whole 8-wide chunks, the
/// lanes are combined as `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`, then the
/// remaining `d mod 8` products are added in order. The same inputs give the same bits on
/// every call and machine (no fused multiply-add). Panics when the lengths differ.
pub fn dot(q: &[f32], v: &[f32]) -> f32 {
    assert_eq!(
        q.len(),
        v.len(),
        "dot of vectors of lengths {} and {}",
        q.len(),
        v.len()
    );
    let (qc, vc) = (q.chunks_exact(LANES), v.chunks_exact(LANES));
    let (q_tail, v_tail) = (qc.remainder(), vc.remainder());
    let mut a = [0.0f32; LANES];
    for (x, y) in qc.zip(vc) {
        for l in 0..LANES {
            a[l] += x[l] * y[l];
        }
    }
    let mut sum = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for (x, y) in q_tail.iter().zip(v_tail) {
        sum += x * y;
    }
    sum
}

/// The `k` items `1 ≤ i ≤ I` with `allowed(i)` of highest `score_i = q · v_i` ([`dot`]), by
/// brute force over every row, best first; equal scores rank the lower index first. Returns
/// `(item, score)` pairs, fewer than `k` when fewer items are allowed. Panics when
/// `query.len() != vectors.dim()`.
pub fn exact_top_k(
    query: &[f32],
    vectors: &ItemVectors,
    k: usize,
    allowed: impl Fn(u64) -> bool,
) -> Vec<(u64, f32)> {
    let items = (1..=vectors.num_items() as u64).filter(|&i| allowed(i));
    top_k(items.map(|i| (i, dot(query, vectors.row(i as usize)))), k)
}

/// The exact top `k` among `candidates`: each distinct candidate `1 ≤ i ≤ I` with
/// `allowed(i)` is scored `q · v_i` ([`dot`]) and ranked as in [`exact_top_k`] (best first,
/// equal scores to the lower index). Duplicates, the padding index 0 and indices past `I` are
/// ignored. With `candidates` = every item this equals [`exact_top_k`]. Panics when
/// `query.len() != vectors.dim()`.
pub fn rescore(
    query: &[f32],
    vectors: &ItemVectors,
    candidates: &[u64],
    k: usize,
    allowed: impl Fn(u64) -> bool,
) -> Vec<(u64, f32)> {
    let last = vectors.num_items() as u64;
    let mut items: Vec<u64> = candidates
        .iter()
        .copied()
        .filter(|&i| (1..=last).contains(&i) && allowed(i))
        .collect();
    items.sort_unstable();
    items.dedup();
    top_k(
        items
            .into_iter()
            .map(|i| (i, dot(query, vectors.row(i as usize)))),
        k,
    )
}

/// An `(item, score)` pair ordered best first: higher score, then lower item. Scores compare
/// by [`f32::total_cmp`] after mapping −0 to +0, so equal finite scores tie exactly.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    item: u64,
    score: f32,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.item.cmp(&other.item))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The best `k` of `scored`, best first, kept in a bounded heap whose top is the worst kept.
fn top_k(scored: impl Iterator<Item = (u64, f32)>, k: usize) -> Vec<(u64, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for (item, score) in scored {
        // `+ 0.0` turns −0 into +0 and leaves every other value as it is.
        let r = Ranked {
            item,
            score: score + 0.0,
        };
        if heap.len() < k {
            heap.push(r);
        } else if let Some(mut worst) = heap.peek_mut() {
            if r < *worst {
                *worst = r;
            }
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|r| (r.item, r.score))
        .collect()
}
