//! Shadow scoring: a fraction of the ANN-answered rows is ranked again exactly, off the request
//! path, to measure the index's recall in production.
//!
//! * Which rows: the n-th ANN-answered row of a loaded model (n = 0, 1, …, counted by the
//!   workers in the order they finish rows) is re-scored when `⌊(n+1)·R⌋ > ⌊n·R⌋` for
//!   `R = --ann_shadow_rate`: exactly `⌊N·R⌋` of the first N rows, evenly spread, no random
//!   numbers (R = 1: every row; R = 0.01: every hundredth).
//! * Off the request path: the worker only copies the row's user vector, exclusions, `k` and
//!   ANN answer into a bounded queue ([`QUEUE`] rows) and answers at once; one background
//!   thread per loaded model takes them from there. When the queue is full the row is dropped
//!   (`sasrec_ann_shadow_dropped_total`), so shadows never pile up or slow the answers.
//! * What is measured: `r = |ann top k ∩ exact top k| / |exact top k|` with the exact top k from
//!   [`sasrec_ann::exact_top_k`] under the same exclusions, fed to
//!   [`Metrics::observe_ann_recall`] (an exponential moving average, gauge
//!   `sasrec_ann_recall_at_k`, and the counter `sasrec_ann_shadow_total`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use sasrec_ann::{exact_top_k, ItemVectors};

use crate::metrics::Metrics;

/// Rows waiting for the shadow thread before new ones are dropped.
pub const QUEUE: usize = 64;

/// One ANN-answered row to check.
struct ShadowRow {
    query: Vec<f32>,
    exclude: Vec<i64>,
    k: usize,
    answer: Vec<u64>,
}

/// The sampling side of shadow scoring; dropping it stops its thread.
pub struct Shadow {
    rate: f64,
    seen: AtomicU64,
    tx: Sender<ShadowRow>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow").field("rate", &self.rate).finish()
    }
}

impl Shadow {
    /// Starts the shadow thread over `vectors` for the sampling rate `rate` (0 < rate ≤ 1).
    pub fn spawn(
        vectors: Arc<ItemVectors>,
        rate: f64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("sasrec-ann-shadow".into())
            .spawn(move || shadow_loop(&rx, &vectors, &thread_metrics))?;
        Ok(Self {
            rate,
            seen: AtomicU64::new(0),
            tx,
            metrics,
        })
    }

    /// Offers one ANN-answered row (user vector `query`, sorted `exclude`, `k`, the `answer`'s
    /// items); queued for exact scoring when it is picked (module docs) and the queue has
    /// room, dropped otherwise.
    pub fn offer(&self, query: &[f32], exclude: &[i64], k: usize, answer: &[(u64, f32)]) {
        if !picked(self.seen.fetch_add(1, Ordering::Relaxed), self.rate) {
            return;
        }
        let row = ShadowRow {
            query: query.to_vec(),
            exclude: exclude.to_vec(),
            k,
            answer: answer.iter().map(|&(i, _)| i).collect(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(row) {
            self.metrics.ann_shadow_dropped.inc();
        }
    }
}

/// Whether the n-th row is re-scored at rate `rate`: `⌊(n+1)·rate⌋ > ⌊n·rate⌋`.
fn picked(n: u64, rate: f64) -> bool {
    ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

/// Scores each queued row exactly and records its recall, until the [`Shadow`] is dropped.
fn shadow_loop(rx: &Receiver<ShadowRow>, vectors: &ItemVectors, metrics: &Metrics) {
    while let Ok(row) = rx.recv() {
        let allowed = |i: u64| row.exclude.binary_search(&(i as i64)).is_err();
        let exact = exact_top_k(&row.query, vectors, row.k, allowed);
        if let Some(r) = recall(&row.answer, &exact) {
            metrics.observe_ann_recall(r);
        }
    }
    tracing::debug!("ANN shadow thread stopped");
}

/// `|answer ∩ exact| / |exact|`, `None` when `exact` is empty (nothing was allowed).
fn recall(answer: &[u64], exact: &[(u64, f32)]) -> Option<f64> {
    if exact.is_empty() {
        return None;
    }
    let found: HashSet<u64> = answer.iter().copied().collect();
    let hits = exact.iter().filter(|(i, _)| found.contains(i)).count();
    Some(hits as f64 / exact.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_exactly_the_fraction_evenly() {
        let count = |rate: f64, n: u64| (0..n).filter(|&i| picked(i, rate)).count();
        assert_eq!(count(1.0, 100), 100);
        assert_eq!(count(0.0, 100), 0);
        assert_eq!(count(0.25, 100), 25);
        assert_eq!(count(0.01, 1000), 10);
        let quarter: Vec<u64> = (0..8).filter(|&i| picked(i, 0.25)).collect();
        assert_eq!(quarter, vec![3, 7]);
    }

    #[test]
    fn recall_is_the_overlap_over_the_exact_answer() {
        let exact = [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5)];
        assert_eq!(recall(&[1, 2, 3, 4], &exact), Some(1.0));
        assert_eq!(recall(&[4, 9, 1], &exact), Some(0.5));
        assert_eq!(recall(&[], &exact), Some(0.0));
        assert_eq!(recall(&[1], &[]), None);
    }
}
