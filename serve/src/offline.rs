//! The batch subcommands: the server's answers for a whole file, written as JSON lines or
//! Parquet ([`crate::sink`]).
//!
//! * `sasrec-serve recommend`: every user of `--input` (read by the training reader,
//!   [`Dataset::read_with`], with `--format` / `--columns` as in training) becomes the request
//!   `POST /recommend` would get — the history in time order, with its timestamps for
//!   time-aware models, `k = --k`, `exclude_seen` unless `--include_seen` — prepared by the
//!   same [`crate::request::prepare`] and ranked by the same workers ([`crate::batcher`], one
//!   per core, one ONNX Runtime thread each), `--batch_size` users per run. Line:
//!   `{"user": raw id, "items": [raw ids, best first], "scores": [...]}`, users in the order
//!   of their index in the input's id map (numeric order of numeric ids).
//! * `sasrec-serve similar`: the answer of `POST /similar` for every item (or for the raw ids
//!   of `--items`), spread over the cores. Line: `{"item", "items", "scores"}`.
//!
//! An `--output` ending in `.parquet` gets the same rows as Parquet (ids as strings). The
//! output is written to a temporary file beside `--output`, synced and renamed, so a
//! reader never sees a partial file. A progress bar goes to standard error when it is a
//! terminal; a final line on standard output gives the count and the rate.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use sasrec_shared::dataset::{Dataset, ReadOptions};
use sasrec_shared::IdMap;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::api::{self, RecommendRequest};
use crate::batcher::{JobResult, Row};
use crate::cli::{Command, OfflineArgs, RecommendArgs, SimilarItemsArgs};
use crate::config::{BatchConfig, SimilarMetric};
use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::request::SimilarQuery;
use crate::sink::{write_answers, Sink};

/// Items per thread between two progress updates of `similar`.
const SIMILAR_BLOCK: usize = 256;

/// Runs a batch subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Recommend(args) => recommend(&args),
        Command::Similar(args) => similar(&args),
    }
}

impl OfflineArgs {
    /// Worker threads: `--workers`, or one per core.
    fn threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The model, loaded for batch work: one worker per [`OfflineArgs::threads`] with one
    /// intra-op thread each, runs of `batch_size` rows, room in the queue for every batch in
    /// flight.
    fn load(&self, batch_size: usize, metric: SimilarMetric) -> anyhow::Result<LoadedModel> {
        if batch_size == 0 {
            bail!("--batch_size: must be at least 1");
        }
        let workers = self.threads();
        let batch = BatchConfig {
            max_batch_size: batch_size,
            max_queue_delay: Duration::ZERO,
            max_queue: in_flight(workers) + 1,
            workers,
        };
        let retrieval = self.retrieval.resolve(0.0, metric)?;
        let session = self.runtime.session(1);
        let metrics = Arc::new(Metrics::new());
        LoadedModel::load_with(&self.model, &session, &batch, &retrieval, metrics)
            .with_context(|| format!("loading model {}", self.model.display()))
    }
}

/// Batches queued at once: two per worker, so a worker never waits for the writer.
fn in_flight(workers: usize) -> usize {
    2 * workers
}

/// `--k` lies in 1..=number of items (trained and added).
fn check_k(k: usize, model: &LoadedModel) -> anyhow::Result<()> {
    let n = model.catalogue().len();
    if k == 0 || k > n {
        bail!("--k {k}: must be between 1 and {n} (the number of items)");
    }
    Ok(())
}

/// `sasrec-serve recommend` ([module docs](self)).
pub fn recommend(args: &RecommendArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = ReadOptions {
        format: args.format,
        columns: args.columns.clone(),
    };
    let data = Dataset::read_with(&args.input, None, &options)?;
    let model = args.common.load(args.batch_size, SimilarMetric::Ip)?;
    check_k(args.k, &model)?;
    if model.info().time_aware && !data.has_timestamps() {
        bail!(
            "{}: no timestamps, but the model {} is time-aware and needs them",
            args.input.display(),
            model.id()
        );
    }
    let bar = progress(data.num_users());
    let mut unknown = 0;
    write_answers(&args.common.output, "user", |out| {
        unknown = recommend_users(&model, &data, args, &bar, out)?;
        Ok(())
    })?;
    bar.finish_and_clear();
    if unknown > 0 {
        tracing::warn!(
            entries = unknown,
            "history entries not in the model's item map were skipped"
        );
    }
    report(
        "recommend",
        data.num_users(),
        "users",
        started,
        &args.common.output,
    );
    Ok(())
}

/// A batch of users on its way through the workers.
struct InFlight<'a> {
    users: &'a [u32],
    answer: oneshot::Receiver<JobResult>,
}

/// Prepares, queues and writes every user of `data`, keeping [`in_flight`] batches queued;
/// returns the number of history entries not in the model's item map.
fn recommend_users(
    model: &LoadedModel,
    data: &Dataset,
    args: &RecommendArgs,
    bar: &ProgressBar,
    out: &mut dyn Sink,
) -> anyhow::Result<usize> {
    let users: Vec<u32> = (1..=data.num_users() as u32).collect();
    let mut queued: VecDeque<InFlight> = VecDeque::new();
    let mut unknown = 0;
    for batch in users.chunks(args.batch_size) {
        let mut rows = Vec::with_capacity(batch.len());
        for &u in batch {
            let (row, skipped) = user_row(model, data, u, args)?;
            rows.push(row);
            unknown += skipped;
        }
        let answer = model
            .submit(rows)
            .map_err(|e| anyhow!("queueing a batch: {e}"))?;
        queued.push_back(InFlight {
            users: batch,
            answer,
        });
        if queued.len() >= in_flight(model.info().workers) {
            if let Some(done) = queued.pop_front() {
                write_batch(model, &data.users, done, out, bar)?;
            }
        }
    }
    while let Some(done) = queued.pop_front() {
        write_batch(model, &data.users, done, out, bar)?;
    }
    Ok(unknown)
}

/// User `u`'s request as `POST /recommend` would get it, prepared by the same code: the row,
/// and how many history entries the model does not know.
fn user_row(
    model: &LoadedModel,
    data: &Dataset,
    u: u32,
    args: &RecommendArgs,
) -> anyhow::Result<(Row, usize)> {
    let u_idx = u as usize;
    let raw = |i: &u32| Value::String(data.items.raw_of(*i).unwrap_or_default().to_string());
    let timestamps = match &data.timestamps {
        Some(ts) if model.info().time_aware => Some(ts[u_idx].to_vec()),
        _ => None,
    };
    let request = RecommendRequest {
        history: data.sequences[u_idx].iter().map(raw).collect(),
        timestamps,
        k: Some(args.k as i64),
        exclude_seen: Some(!args.include_seen),
        candidates: None,
        exclude: None,
    };
    let prepared = model.prepare(&request).map_err(|e| {
        let user = data.users.raw_of(u).unwrap_or_default();
        anyhow!("{}: user {user}: {e}", args.input.display())
    })?;
    Ok((prepared.row, prepared.unknown.len()))
}

/// Waits for `batch`'s answers and writes one line per user.
fn write_batch(
    model: &LoadedModel,
    users: &IdMap,
    batch: InFlight,
    out: &mut dyn Sink,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let results = batch
        .answer
        .blocking_recv()
        .map_err(|_| anyhow!("an inference worker dropped a batch"))?
        .map_err(|e| anyhow!("inference failed: {e}"))?;
    if results.len() != batch.users.len() {
        bail!(
            "a worker answered {} rows for {} users",
            results.len(),
            batch.users.len()
        );
    }
    for (&u, result) in batch.users.iter().zip(results) {
        let user = api::raw_id_json(users.raw_of(u).unwrap_or_default());
        out.push(&user, &model.answer(result, Vec::new()).items)?;
    }
    bar.inc(batch.users.len() as u64);
    Ok(())
}

/// `sasrec-serve similar` ([module docs](self)).
pub fn similar(args: &SimilarItemsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = args.common.load(1, args.similar.similar_metric)?;
    check_k(args.k, &model)?;
    let items = match &args.items {
        Some(path) => read_item_list(path, model.items())?,
        None => (1..=model.items().len() as u32).collect(),
    };
    let bar = progress(items.len());
    write_answers(&args.common.output, "item", |out| {
        similar_items(&model, &items, args, &bar, out)
    })?;
    bar.finish_and_clear();
    report(
        "similar",
        items.len(),
        "items",
        started,
        &args.common.output,
    );
    Ok(())
}

/// The `/similar` answer of every item of `items`, computed in blocks spread over the
/// threads and written in order.
fn similar_items(
    model: &LoadedModel,
    items: &[u32],
    args: &SimilarItemsArgs,
    bar: &ProgressBar,
    out: &mut dyn Sink,
) -> anyhow::Result<()> {
    let threads = args.common.threads();
    let ask = |&item: &u32| {
        model.similar(SimilarQuery {
            item,
            k: args.k,
            exclude: Vec::new(),
            unknown: Vec::new(),
        })
    };
    for block in items.chunks(SIMILAR_BLOCK * threads) {
        for answer in parallel_map(block, threads, ask) {
            let answer = answer.map_err(|e| anyhow!("{e}"))?;
            out.push(&answer.item, &answer.items)?;
        }
        bar.inc(block.len() as u64);
    }
    Ok(())
}

/// `f` of every element of `items`, in order, computed by up to `threads` threads.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let size = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(size)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The item indices of the raw ids in `path`, one per line (surrounding spaces trimmed; blank
/// and `#` lines skipped); an id not in the item map is an error naming `path:line`.
fn read_item_list(path: &Path, items: &IdMap) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| sasrec_shared::Error::io(path, e))?;
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let id = line.trim();
        if id.is_empty() || id.starts_with('#') {
            continue;
        }
        let idx = items
            .index_of(id)
            .ok_or_else(|| sasrec_shared::Error::Parse {
                path: path.to_path_buf(),
                line: n + 1,
                msg: format!("item {id:?} is not in the model's item map"),
            })?;
        found.push(idx);
    }
    if found.is_empty() {
        bail!("{}: no item ids", path.display());
    }
    Ok(found)
}

/// A progress bar on standard error for `len` steps; hidden when it is not a terminal.
fn progress(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len as u64).with_style(style)
}

/// The final line: how many lines went where, and how fast.
fn report(command: &str, n: usize, what: &str, started: Instant, output: &Path) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sasrec-serve {command}: wrote {n} {what} to {} in {secs:.2} s ({:.0} {what}/s)",
        output.display(),
        n as f64 / secs.max(1e-9)
    );
}
