//! Dynamic batching: handlers enqueue jobs, worker threads run them through ONNX Runtime.
//!
//! A [`Job`] is one or more prepared [`Row`]s (one for `/recommend`, several for
//! `/recommend/batch`) plus a oneshot sender for the answer. Jobs go through a bounded
//! `crossbeam` channel of `max_queue` slots: when it is full, [`Batcher::submit`] fails at once
//! and the handler answers 503 with `Retry-After` (load shedding instead of unbounded latency).
//!
//! Each worker thread owns one ONNX Runtime session (`Session::run` takes `&mut self`, so no
//! handler ever touches a session and no lock is held across a run). A worker blocks for a
//! first job, then keeps taking jobs until the batch holds `max_batch_size` rows or
//! `max_queue_delay` has passed since that first job was *enqueued* (so a job that already
//! waited behind a running batch does not wait again), concatenates the rows and runs them,
//! in chunks of at most `max_batch_size` rows, as one ONNX Runtime call per chunk:
//! * the graph's `exclude` is a zero-width `[rows, 0]` tensor and its `k` is the largest
//!   `k + |exclude|` of the chunk (at most the number of items), so `topk_items` holds every
//!   row's best `k + |exclude|` items, best first, ties to the lower index; each row drops its
//!   excluded items there (a binary search in its sorted `exclude`) and keeps the first `k`.
//!   This is exact (at most `|exclude|` of those are excluded) and costs the graph nothing per
//!   excluded id, however long the row's history;
//! * entries whose score is not finite (−∞: padding, or fewer items left than `k`) are
//!   dropped;
//! * rows with `candidates` are ranked host-side from the graph's `scores` output
//!   ([`top_candidates`]).
//!
//! Runs go through an ONNX Runtime I/O binding ([`crate::session::run_bound`]): the item table
//! stays on the execution provider's device, and only `topk_scores` / `topk_items` come back
//! to the host; the `(rows, I+1)` `scores` matrix is fetched only for a chunk holding a row
//! with `candidates` (under CUDA the full matrix otherwise never leaves the GPU).
//!
//! Under `--retrieval ann` the workers run the user tower instead ([`crate::tower`]): the same
//! rows, batched the same way, give one user vector each, and each row is then ranked from the
//! item vectors ([`crate::retrieval`]). A worker runs its chunks through a [`RowRunner`]:
//! [`ExactRunner`] (the graph above) or [`crate::tower::TowerRunner`].
//!
//! With `max_batch_size = 1` (`--no_batching`) every run has one row. Jobs whose client has
//! gone away (the receiver was dropped, e.g. after a timeout) are skipped.
//!
//! When the last [`Batcher`] handle is dropped (after a model reload, once the requests
//! still using the old model are answered), the channel closes, the workers finish what is
//! queued and exit.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ort::session::{Session, SessionOutputs};
use ort::value::{PrimitiveTensorElementType, Tensor};
use sasrec_shared::run::onnx_io::{EXCLUDE, K, SCORES, SEQ, TIME_MATRIX, TOPK_ITEMS, TOPK_SCORES};
use tokio::sync::oneshot;

use crate::catalogue::AddedItems;
use crate::config::BatchConfig;
use crate::error::RunError;
use crate::metrics::Metrics;
use crate::session::run_bound;

/// One prepared input row of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `[maxlen]` left-padded item indices, newest last.
    pub seq: Vec<i64>,
    /// `[maxlen * maxlen]` interval buckets (time-aware models only).
    pub time_matrix: Option<Vec<i64>>,
    /// Item indices that must not be returned (sorted, distinct; may be empty).
    pub exclude: Vec<i64>,
    /// Score only these item indices (sorted, distinct), `None` for every item.
    pub candidates: Option<Vec<i64>>,
    /// How many items to return (1..=number of items).
    pub k: usize,
    /// The added items the request was prepared with ([`crate::catalogue`]), when the model
    /// takes additions: `seq`, `exclude` and `candidates` may hold their indices (> I).
    pub added: Option<Arc<AddedItems>>,
}

impl Row {
    /// An all-padding row asking for one item: what warm-up runs use.
    pub fn probe(shape: Shape) -> Self {
        Row {
            seq: vec![0; shape.maxlen],
            time_matrix: shape
                .time_aware
                .then(|| vec![0; shape.maxlen * shape.maxlen]),
            exclude: Vec::new(),
            candidates: None,
            k: 1,
            added: None,
        }
    }
}

/// The answer for one row: `(item index, score)`, best first.
pub type RowResult = Vec<(i64, f32)>;

/// What a job's sender receives: one result per row, or ONNX Runtime's error.
pub type JobResult = Result<Vec<RowResult>, String>;

/// Rows waiting for a worker, with the channel for their answer.
#[derive(Debug)]
pub struct Job {
    rows: Vec<Row>,
    reply: oneshot::Sender<JobResult>,
    enqueued: Instant,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `max_queue` jobs.
    #[error("queue full ({0} jobs)")]
    Full(usize),
    /// The workers are gone.
    #[error("inference workers stopped")]
    Closed,
}

/// The graph's fixed dimensions, as the workers need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Window length T.
    pub maxlen: usize,
    /// Whether the graph takes `time_matrix`.
    pub time_aware: bool,
    /// Number of items I (the graph's `k` is at most I+1).
    pub num_items: usize,
}

/// What a worker runs each chunk of at most `max_batch_size` rows through: one answer per
/// row, in order, or the error every row of the chunk gets.
pub trait RowRunner: Send + 'static {
    /// Ranks `rows`.
    fn run(&mut self, rows: &[&Row]) -> Result<Vec<RowResult>, RunError>;
}

/// `model.onnx`: every item scored and the top k taken in the graph ([`run_rows`]).
pub struct ExactRunner {
    /// A session on `model.onnx`.
    pub session: Session,
    /// The graph's dimensions.
    pub shape: Shape,
}

impl RowRunner for ExactRunner {
    fn run(&mut self, rows: &[&Row]) -> Result<Vec<RowResult>, RunError> {
        run_rows(&mut self.session, rows, self.shape)
    }
}

/// The sending side of the job queue; dropping the last handle stops the workers.
#[derive(Debug)]
pub struct Batcher {
    tx: Sender<Job>,
    capacity: usize,
    workers: Vec<JoinHandle<()>>,
}

impl Batcher {
    /// Starts one worker thread per runner.
    pub fn spawn(
        runners: Vec<Box<dyn RowRunner>>,
        cfg: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let capacity = cfg.max_queue.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        let mut workers = Vec::with_capacity(runners.len());
        for (n, runner) in runners.into_iter().enumerate() {
            let rx = rx.clone();
            let metrics = metrics.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sasrec-infer-{n}"))
                .spawn(move || worker(runner, rx, cfg, &metrics))?;
            workers.push(handle);
        }
        Ok(Self {
            tx,
            capacity,
            workers,
        })
    }

    /// Queues `rows`; the receiver yields their results in order.
    pub fn submit(&self, rows: Vec<Row>) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            rows,
            reply,
            enqueued: Instant::now(),
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full(self.capacity)),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Jobs waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

fn worker(mut runner: Box<dyn RowRunner>, rx: Receiver<Job>, cfg: BatchConfig, metrics: &Metrics) {
    let max_rows = cfg.max_batch_size.max(1);
    while let Ok(first) = rx.recv() {
        let deadline = first.enqueued + cfg.max_queue_delay;
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        while rows < max_rows {
            let next = if cfg.max_queue_delay.is_zero() {
                rx.try_recv().ok()
            } else {
                // Timeout or all senders gone: run what we have.
                rx.recv_deadline(deadline).ok()
            };
            match next {
                Some(job) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                None => break,
            }
        }
        run_jobs(runner.as_mut(), jobs, max_rows, metrics);
    }
    tracing::debug!("inference worker stopped");
}

/// Runs the rows of `jobs` in chunks of `max_rows` and answers every job.
fn run_jobs(runner: &mut dyn RowRunner, jobs: Vec<Job>, max_rows: usize, m: &Metrics) {
    let started = Instant::now();
    // Skip jobs nobody waits for any more.
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    for j in &jobs {
        m.queue_wait
            .observe(started.duration_since(j.enqueued).as_secs_f64());
    }
    // (job, row) of every row, in order.
    let refs: Vec<(usize, &Row)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| job.rows.iter().map(move |r| (j, r)))
        .collect();
    let mut results: Vec<Result<Vec<RowResult>, String>> = jobs
        .iter()
        .map(|j| Ok(Vec::with_capacity(j.rows.len())))
        .collect();
    for chunk in refs.chunks(max_rows) {
        let rows: Vec<&Row> = chunk.iter().map(|(_, r)| *r).collect();
        let t0 = Instant::now();
        let out = runner.run(&rows);
        m.inference.observe(t0.elapsed().as_secs_f64());
        m.batch_size.observe(rows.len() as f64);
        match out {
            Ok(per_row) => {
                for ((j, _), r) in chunk.iter().zip(per_row) {
                    if let Ok(v) = &mut results[*j] {
                        v.push(r);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = rows.len(), "inference run failed");
                let msg = e.to_string();
                for (j, _) in chunk {
                    results[*j] = Err(msg.clone());
                }
            }
        }
    }
    for (job, res) in jobs.into_iter().zip(results) {
        // The receiver may have gone in the meantime; nothing to do then.
        let _ = job.reply.send(res);
    }
}

/// One ONNX Runtime run over `rows` (names in [`sasrec_shared::run::onnx_io`], interface in
/// `sasrec_export::graph`; how `k` and the exclusions are handled in the [module docs](self)),
/// through [`run_bound`]: `topk_scores` and `topk_items` are fetched, the `(rows, I+1)`
/// `scores` matrix only when a row ranks `candidates`.
pub fn run_rows(
    session: &mut Session,
    rows: &[&Row],
    shape: Shape,
) -> Result<Vec<RowResult>, RunError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let k = graph_k(rows, shape);
    let inputs = graph_inputs(rows, shape, k)?;
    let with_candidates = rows.iter().any(|r| r.candidates.is_some());
    let fetch: &[&str] = if with_candidates {
        &[TOPK_SCORES, TOPK_ITEMS, SCORES]
    } else {
        &[TOPK_SCORES, TOPK_ITEMS]
    };
    run_bound(session, &inputs, fetch, |out| {
        let (scores, items) = top_k_outputs(out, rows.len(), k)?;
        let all_scores = if with_candidates {
            output::<f32>(out, SCORES)?
        } else {
            &[]
        };
        Ok(answer_rows(rows, items, scores, k, all_scores))
    })
}

/// The graph's `k` for `rows`: `max(k + |exclude|)` over the rows, clamped to 1..=I+1, so that
/// every row keeps its best `k` after dropping its exclusions (module docs).
fn graph_k(rows: &[&Row], shape: Shape) -> usize {
    rows.iter()
        .map(|r| r.k + r.exclude.len())
        .max()
        .unwrap_or(1)
        .clamp(1, shape.num_items + 1)
}

/// The graph's inputs for the B `rows`: the [`history_inputs`], a zero-width `exclude`
/// `[B, 0]` and `k` `[1]`.
fn graph_inputs(
    rows: &[&Row],
    shape: Shape,
    k: usize,
) -> Result<Vec<(&'static str, Tensor<i64>)>, RunError> {
    let mut inputs = history_inputs(rows, shape)?;
    inputs.push((
        EXCLUDE,
        Tensor::from_array(([rows.len(), 0usize], Vec::<i64>::new()))?,
    ));
    inputs.push((K, Tensor::from_array(([1usize], vec![k as i64]))?));
    Ok(inputs)
}

/// The inputs describing the B `rows`' histories, shared by `model.onnx` and the user tower:
/// `seq` `[B, T]` and, for time-aware graphs, `time_matrix` `[B, T, T]`.
pub fn history_inputs(
    rows: &[&Row],
    shape: Shape,
) -> Result<Vec<(&'static str, Tensor<i64>)>, RunError> {
    history_inputs_with(rows, shape, stack_seqs(rows, shape.maxlen)?)
}

/// [`history_inputs`] with `seq` (`[B × T]`) given instead of the rows' own.
pub fn history_inputs_with(
    rows: &[&Row],
    shape: Shape,
    seq: Vec<i64>,
) -> Result<Vec<(&'static str, Tensor<i64>)>, RunError> {
    let (b, t) = (rows.len(), shape.maxlen);
    let mut inputs = vec![(SEQ, Tensor::from_array(([b, t], seq))?)];
    if shape.time_aware {
        let tm = stack_time_matrices(rows, t)?;
        inputs.push((TIME_MATRIX, Tensor::from_array(([b, t, t], tm))?));
    }
    Ok(inputs)
}

/// The rows' `seq`s one after the other (`[B, T]`), each checked to hold T entries.
pub fn stack_seqs(rows: &[&Row], t: usize) -> Result<Vec<i64>, RunError> {
    let mut seq = Vec::with_capacity(rows.len() * t);
    for (i, r) in rows.iter().enumerate() {
        if r.seq.len() != t {
            return Err(RunError::Shape(format!(
                "row {i}: seq has {} entries, expected {t}",
                r.seq.len()
            )));
        }
        seq.extend_from_slice(&r.seq);
    }
    Ok(seq)
}

/// The rows' interval matrices one after the other (`[B, T, T]`), each checked to be T×T.
fn stack_time_matrices(rows: &[&Row], t: usize) -> Result<Vec<i64>, RunError> {
    let mut tm = Vec::with_capacity(rows.len() * t * t);
    for (i, r) in rows.iter().enumerate() {
        match &r.time_matrix {
            Some(m) if m.len() == t * t => tm.extend_from_slice(m),
            _ => {
                return Err(RunError::Shape(format!(
                    "row {i}: time_matrix missing or not {t}x{t}"
                )))
            }
        }
    }
    Ok(tm)
}

/// The fetched output `name`, flattened.
pub(crate) fn output<'a, T: PrimitiveTensorElementType>(
    out: &'a SessionOutputs<'_>,
    name: &str,
) -> Result<&'a [T], RunError> {
    let value = out
        .get(name)
        .ok_or_else(|| RunError::Shape(format!("no `{name}` output")))?;
    Ok(value.try_extract_tensor::<T>()?.1)
}

/// `topk_scores` and `topk_items`, each checked to hold `b × k` entries.
fn top_k_outputs<'a>(
    out: &'a SessionOutputs<'_>,
    b: usize,
    k: usize,
) -> Result<(&'a [f32], &'a [i64]), RunError> {
    let scores = output::<f32>(out, TOPK_SCORES)?;
    let items = output::<i64>(out, TOPK_ITEMS)?;
    if scores.len() != b * k || items.len() != b * k {
        return Err(RunError::Shape(format!(
            "top-k outputs have {} / {} entries, expected {}",
            scores.len(),
            items.len(),
            b * k
        )));
    }
    Ok((scores, items))
}

/// Each row's answer: from its `k` entries of the graph's top-k (`items`, `scores`: `[B, k]`)
/// through [`top_allowed`], or, for a row with `candidates`, from its row of the `scores`
/// matrix (`all_scores`: `[B, I+1]`) through [`top_candidates`].
fn answer_rows(
    rows: &[&Row],
    items: &[i64],
    scores: &[f32],
    k: usize,
    all_scores: &[f32],
) -> Vec<RowResult> {
    let width = all_scores.len() / rows.len();
    rows.iter()
        .enumerate()
        .map(|(i, r)| match &r.candidates {
            Some(c) => top_candidates(&all_scores[i * width..(i + 1) * width], c, &r.exclude, r.k),
            None => top_allowed(
                &items[i * k..(i + 1) * k],
                &scores[i * k..(i + 1) * k],
                &r.exclude,
                r.k,
            ),
        })
        .collect()
}

/// The first `k` entries of a row of the graph's top-k (`items`, `scores`: best first) that
/// are not in `exclude` (sorted) and have a finite score.
pub fn top_allowed(items: &[i64], scores: &[f32], exclude: &[i64], k: usize) -> RowResult {
    items
        .iter()
        .zip(scores)
        .filter(|(it, s)| s.is_finite() && exclude.binary_search(it).is_err())
        .map(|(&it, &s)| (it, s))
        .take(k)
        .collect()
}

/// The best `k` of `candidates` in one row of the graph's `scores`, leaving out `exclude`
/// (sorted) and non-finite scores; ties go to the lower index, as ONNX `TopK`.
pub fn top_candidates(scores: &[f32], candidates: &[i64], exclude: &[i64], k: usize) -> RowResult {
    let mut scored: Vec<(i64, f32)> = candidates
        .iter()
        .filter(|c| exclude.binary_search(c).is_err())
        .filter_map(|&c| scores.get(c as usize).map(|&s| (c, s)))
        .filter(|(_, s)| s.is_finite())
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_candidates_ranks_ties_by_index_and_drops_excluded_and_non_finite() {
        // Column 0 is padding (−∞); item 4 is NaN; items 2 and 5 tie.
        let scores = [f32::NEG_INFINITY, 0.5, 2.0, 1.0, f32::NAN, 2.0, 3.0];
        let got = top_candidates(&scores, &[0, 1, 2, 4, 5, 6, 9], &[6], 3);
        assert_eq!(got, vec![(2, 2.0), (5, 2.0), (1, 0.5)]);
        assert_eq!(top_candidates(&scores, &[3, 6], &[3, 6], 2), vec![]);
    }

    #[test]
    fn top_allowed_skips_excluded_and_non_finite_and_keeps_order() {
        let items = [6, 2, 5, 1, 3, 0];
        let scores = [3.0, 2.0, 2.0, 0.5, f32::NEG_INFINITY, f32::NEG_INFINITY];
        assert_eq!(
            top_allowed(&items, &scores, &[2, 6], 2),
            vec![(5, 2.0), (1, 0.5)]
        );
        // Fewer allowed finite entries than k: all of them.
        assert_eq!(
            top_allowed(&items, &scores, &[1], 9),
            vec![(6, 3.0), (2, 2.0), (5, 2.0)]
        );
        assert_eq!(top_allowed(&items, &scores, &[], 1), vec![(6, 3.0)]);
    }
}
