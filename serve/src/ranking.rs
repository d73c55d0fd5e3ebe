//! Rankings as `(item index, score)` pairs: the order every answer uses.

/// An `(item index, score)` pair, best first in every ranking.
pub type Scored = (u64, f32);

/// The best `k` of `scored`: higher score first, equal scores to the lower index.
pub fn best_k(mut scored: Vec<Scored>, k: usize) -> Vec<Scored> {
    let order = |a: &Scored, b: &Scored| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && scored.len() > k {
        scored.select_nth_unstable_by(k - 1, order);
    }
    scored.truncate(k);
    scored.sort_by(order);
    scored
}
