//! The training sampler (docs/MODELS.md §1.2, §2.4): `(seq, pos, neg[, intervals])` batches.
//!
//! For a user with training items `tr` (length m) the three length-T rows are the last ≤T
//! items of `tr[..m-1]` (`seq`), the same window shifted by one (`pos`, so `pos[t] ≠ 0`
//! exactly where `seq[t] ≠ 0`) and one negative per position drawn uniformly from `1..=I`
//! (`1..=W`, the warm items, under `--cold_items`), redrawn while it is one of the user's
//! training items (`neg`); all left-padded with 0.
//!
//! An epoch is one pass over a seeded permutation of the users with ≥ 2 training items
//! (users with fewer have no training pair; the references redraw such users at random,
//! which is the same in expectation), cut into `ceil(U'/batch_size)` global batches.
//! Everything random is keyed by `(seed, epoch, user)`, never by thread or rank, so:
//! * the same seed gives the same batches for any `num_workers`;
//! * with `world_size` ranks, global batch b is split into contiguous per-rank shards, and the
//!   union of the shards equals the single-rank batch (each rank has its own users and thus
//!   its own draws);
//! * resuming at epoch e reproduces epoch e exactly.
//!
//! Workers build batches `b ≡ w (mod num_workers)` ahead of the consumer into bounded
//! channels, and the iterator reads them back in order.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::error::{Error, Result};
use crate::rng::{rng_for, Stream};
use crate::split::Split;
use crate::time::{left_pad, time_codes, Intervals};

/// Sampler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Global batch size (over all ranks).
    pub batch_size: usize,
    /// Window length T.
    pub maxlen: usize,
    /// Base seed.
    pub seed: u64,
    /// Worker threads (0 = build batches on the calling thread).
    pub num_workers: usize,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Produce interval matrices for time-aware models.
    pub intervals: Option<Intervals>,
}

/// One training batch, row-major, `rows` users × T positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Global batch index within the epoch.
    pub index: usize,
    /// User indices of the rows.
    pub users: Vec<u32>,
    /// Input items (rows × T).
    pub seq: Vec<i64>,
    /// Next items (rows × T), 0 where `seq` is padding.
    pub pos: Vec<i64>,
    /// One negative per position (rows × T), 0 where `seq` is padding.
    pub neg: Vec<i64>,
    /// Interval buckets (rows × T × T), for time-aware models.
    pub intervals: Option<Vec<i32>>,
}

impl Batch {
    /// Number of rows: one per user, or one all-padding row for an empty shard.
    pub fn rows(&self) -> usize {
        self.users.len().max(1)
    }

    /// Whether this is an empty shard's all-padding row (a rank whose slice of the last
    /// global batch holds no user): no targets, but the rank still takes its step in lock
    /// step with the others.
    pub fn is_padding(&self) -> bool {
        self.users.is_empty()
    }
}

struct Inner {
    split: Split,
    cfg: SamplerConfig,
    /// Users with ≥ 2 training items, ascending.
    users: Vec<u32>,
}

/// Reproducible multi-threaded training sampler over a [`Split`].
#[derive(Clone)]
pub struct Sampler {
    inner: Arc<Inner>,
}

/// Batch size, window and rank placement that can work.
fn check_config(cfg: &SamplerConfig) -> Result<()> {
    if cfg.batch_size == 0 || cfg.maxlen == 0 {
        return Err(Error::Config(
            "--batch_size and --maxlen must be at least 1".into(),
        ));
    }
    if cfg.world_size == 0 || cfg.rank >= cfg.world_size {
        return Err(Error::Config(format!(
            "rank {} is outside a world of size {}",
            cfg.rank, cfg.world_size
        )));
    }
    if cfg.batch_size < cfg.world_size {
        return Err(Error::Config(format!(
            "--batch_size {} is smaller than the number of ranks {}",
            cfg.batch_size, cfg.world_size
        )));
    }
    Ok(())
}

/// A user's training items, sorted and deduplicated (for negative rejection), in `buf`.
fn train_set<'a>(train: &[u32], buf: &'a mut Vec<u32>) -> &'a [u32] {
    buf.clear();
    buf.extend_from_slice(train);
    buf.sort_unstable();
    buf.dedup();
    buf
}

impl Sampler {
    /// Prepares the sampler: the settings checked and the users with two or more training
    /// items; fails on invalid settings or, for time-aware models, missing timestamps. Nothing
    /// per interaction is copied: a batch derives its users' training sets (for negatives) and
    /// time codes from the split when it is built, so ranks that share a memory-mapped dataset
    /// ([`crate::pack`]) share all of it.
    pub fn new(split: Split, cfg: SamplerConfig) -> Result<Self> {
        check_config(&cfg)?;
        let n = split.num_users();
        let users: Vec<u32> = (1..=n as u32)
            .filter(|&u| split.train(u as usize).len() >= 2)
            .collect();
        if users.is_empty() {
            return Err(Error::Data("no user has two or more training items".into()));
        }
        if cfg.intervals.is_some() && !split.data.has_timestamps() {
            return Err(Error::no_timestamps(&split.data.path));
        }
        Ok(Self {
            inner: Arc::new(Inner { split, cfg, users }),
        })
    }

    /// Global batches per epoch, `ceil(users / batch_size)`.
    pub fn num_batches(&self) -> usize {
        self.inner.users.len().div_ceil(self.inner.cfg.batch_size)
    }

    /// Users that yield training pairs.
    pub fn num_train_users(&self) -> usize {
        self.inner.users.len()
    }

    /// The users of this rank's shard of global batch `b` in `epoch`.
    fn shard(&self, perm: &[u32], b: usize) -> Vec<u32> {
        let cfg = &self.inner.cfg;
        let global = &perm[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(perm.len())];
        let (w, r) = (cfg.world_size, cfg.rank);
        let lo = global.len() * r / w;
        let hi = global.len() * (r + 1) / w;
        global[lo..hi].to_vec()
    }

    fn permutation(&self, epoch: u64) -> Vec<u32> {
        let mut perm = self.inner.users.clone();
        perm.shuffle(&mut rng_for(
            self.inner.cfg.seed,
            Stream::Permutation,
            epoch,
            0,
        ));
        perm
    }

    /// Builds one batch for the given users (rows in that order); no users give one
    /// all-padding row ([`Batch::is_padding`]).
    pub fn build(&self, index: usize, epoch: u64, users: Vec<u32>) -> Batch {
        let inner = &*self.inner;
        let t = inner.cfg.maxlen;
        let rows = users.len().max(1);
        let num_items = inner.split.num_warm_items() as u32;
        let mut seq = vec![0i64; rows * t];
        let mut pos = vec![0i64; rows * t];
        let mut neg = vec![0i64; rows * t];
        let mut intervals = inner.cfg.intervals.map(|_| vec![0i32; rows * t * t]);
        let mut buf = Vec::new();
        for (row, &u) in users.iter().enumerate() {
            let u = u as usize;
            let tr = inner.split.train(u);
            let m = tr.len();
            let r = row * t..(row + 1) * t;
            let pad = left_pad(&tr[..m - 1], 0i64, &mut seq[r.clone()]);
            left_pad(&tr[1..], 0i64, &mut pos[r.clone()]);
            let set = train_set(tr, &mut buf);
            let mut rng = rng_for(inner.cfg.seed, Stream::TrainNegatives, epoch, u as u64);
            for x in &mut neg[r.start + pad..r.end] {
                *x = loop {
                    let cand = rng.random_range(1..=num_items);
                    if set.binary_search(&cand).is_err() {
                        break cand as i64;
                    }
                };
            }
            if let (Some(out), Some(iv)) = (intervals.as_mut(), inner.cfg.intervals) {
                let times = inner.split.times(u).expect("checked by Sampler::new");
                iv.window_matrix(
                    &time_codes(iv.unit, times)[..m - 1],
                    t,
                    &mut out[row * t * t..(row + 1) * t * t],
                );
            }
        }
        Batch {
            index,
            users,
            seq,
            pos,
            neg,
            intervals,
        }
    }

    /// Iterates over this rank's batches of `epoch`, built by the worker threads.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let perm = Arc::new(self.permutation(epoch));
        let n = self.num_batches();
        let w = self.inner.cfg.num_workers;
        let mut receivers = Vec::with_capacity(w);
        let mut handles = Vec::with_capacity(w);
        for worker in 0..w {
            let (tx, rx) = bounded::<Batch>(4);
            let me = self.clone();
            let perm = Arc::clone(&perm);
            handles.push(std::thread::spawn(move || {
                for b in (worker..n).step_by(w) {
                    let batch = me.build(b, epoch, me.shard(&perm, b));
                    if tx.send(batch).is_err() {
                        return; // consumer dropped the iterator
                    }
                }
            }));
            receivers.push(rx);
        }
        EpochIter {
            sampler: self.clone(),
            epoch,
            perm,
            next: 0,
            n,
            receivers,
            handles,
        }
    }
}

/// The batches of one epoch, in order.
pub struct EpochIter {
    sampler: Sampler,
    epoch: u64,
    perm: Arc<Vec<u32>>,
    next: usize,
    n: usize,
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.n {
            return None;
        }
        let b = self.next;
        self.next += 1;
        if self.receivers.is_empty() {
            let users = self.sampler.shard(&self.perm, b);
            return Some(self.sampler.build(b, self.epoch, users));
        }
        let rx = &self.receivers[b % self.receivers.len()];
        // A worker only stops early when its channel is dropped, so recv fails only if the
        // worker panicked: rebuild the batch here rather than lose it.
        Some(rx.recv().unwrap_or_else(|_| {
            let users = self.sampler.shard(&self.perm, b);
            self.sampler.build(b, self.epoch, users)
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n - self.next, Some(self.n - self.next))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
