//! Evaluation inputs under both protocols (docs/MODELS.md §1.7, pitfalls 19–22).
//!
//! * **sampled**: the true item against 100 negatives drawn uniformly from the items the user
//!   never interacted with (train, valid and test excluded, as the TiSASRec reference does, so
//!   the true item can never also be a negative). The draws are keyed by
//!   `(seed, user, part)`, fixed once, so every model is scored on the same candidates.
//! * **full ranking**: the true item against every item, the items of the input history
//!   excluded (the training items for valid; training items + the validation item for test).
//!
//! Inputs are the left-padded last T items of the history: training items for valid, training
//! items + the validation item for test. Users without a hold-out (short users) are skipped.
//! When more than `max_users` users qualify, a seeded subset is evaluated (the references use
//! 10,000; `None` evaluates everyone).

use rand::seq::index::sample;
use rand::Rng;

use crate::error::{Error, Result};
use crate::rng::{rng_for, Stream};
use crate::split::{Part, Split};
use crate::time::{left_pad, time_codes, Intervals};

/// Number of sampled negatives per user in the sampled protocol.
pub const NUM_SAMPLED_NEGATIVES: usize = 100;

/// Evaluation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalConfig {
    /// Window length T.
    pub maxlen: usize,
    /// Seed of the fixed candidate lists and of the user subset.
    pub seed: u64,
    /// Evaluate at most this many users (seeded subset), `None` for all.
    pub max_users: Option<usize>,
    /// Interval matrices for time-aware models.
    pub intervals: Option<Intervals>,
}

/// The fixed evaluation set of one split part.
#[derive(Debug, Clone)]
pub struct EvalSet {
    split: Split,
    cfg: EvalConfig,
    part: Part,
    /// Evaluated users, ascending.
    pub users: Vec<u32>,
    /// `candidates[i]` = true item then the 100 negatives of `users[i]`.
    pub candidates: Vec<Vec<u32>>,
}

/// One batch of evaluation inputs.
#[derive(Debug, Clone)]
pub struct EvalBatch<'a> {
    /// Users of the rows.
    pub users: &'a [u32],
    /// Input windows (rows × T).
    pub seq: Vec<i64>,
    /// Interval buckets (rows × T × T), for time-aware models.
    pub intervals: Option<Vec<i32>>,
    /// Sampled-protocol candidates (rows × 101), the true item first.
    pub candidates: Vec<i64>,
    /// True items.
    pub targets: Vec<u32>,
    /// Items excluded from full ranking, per row (the input history).
    pub exclude: Vec<&'a [u32]>,
}

impl EvalSet {
    /// Draws the users and the candidate lists for `part`; fails when intervals are asked
    /// for but the data has no timestamps.
    pub fn new(split: &Split, part: Part, cfg: EvalConfig) -> Result<Self> {
        if cfg.intervals.is_some() && !split.data.has_timestamps() {
            return Err(Error::no_timestamps(&split.data.path));
        }
        let mut users: Vec<u32> = (1..=split.num_users() as u32)
            .filter(|&u| split.has_holdout(u as usize))
            .collect();
        if let Some(max) = cfg.max_users.filter(|&m| m < users.len()) {
            let mut rng = rng_for(cfg.seed, Stream::EvalUsers, part as u64, 0);
            let mut picked: Vec<u32> = sample(&mut rng, users.len(), max)
                .into_iter()
                .map(|i| users[i])
                .collect();
            picked.sort_unstable();
            users = picked;
        }
        let num_items = split.num_items() as u32;
        let candidates = users
            .iter()
            .map(|&u| {
                let (target, _) = split.holdout(u as usize, part).expect("held-out user");
                let mut seen = split.all(u as usize).to_vec();
                seen.sort_unstable();
                let mut rng = rng_for(cfg.seed, Stream::EvalCandidates, u as u64, part as u64);
                let mut c = Vec::with_capacity(NUM_SAMPLED_NEGATIVES + 1);
                c.push(target);
                let unseen = num_items as usize - seen.len().min(num_items as usize);
                let wanted = NUM_SAMPLED_NEGATIVES.min(unseen);
                while c.len() < wanted + 1 {
                    let cand = rng.random_range(1..=num_items);
                    if seen.binary_search(&cand).is_err() {
                        c.push(cand);
                    }
                }
                c
            })
            .collect();
        Ok(Self {
            split: split.clone(),
            cfg,
            part,
            users,
            candidates,
        })
    }

    /// Number of evaluated users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is evaluated.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether each evaluated user's target is a cold item (`--cold_items`), in
    /// [`EvalSet::users`] order; `None` when no item is held out.
    pub fn cold_targets(&self) -> Option<Vec<bool>> {
        if self.split.data.cold_items == 0 {
            return None;
        }
        let target = |&u: &u32| {
            self.split
                .holdout(u as usize, self.part)
                .expect("held out")
                .0
        };
        Some(
            self.users
                .iter()
                .map(|u| self.split.is_cold(target(u)))
                .collect(),
        )
    }

    /// Ranks of every evaluated user under both protocols `(sampled, full)` for a fixed,
    /// strict order of the items (`position[i]`, 0 = best, for items 1..=I; e.g.
    /// [`crate::cold::category_popularity_order`]): the candidates, resp. the items outside
    /// the input history, placed before the target.
    pub fn ranks_by_order(&self, position: &[u32]) -> (Vec<i64>, Vec<i64>) {
        let (mut sampled, mut full) = (Vec::new(), Vec::new());
        for (&u, cands) in self.users.iter().zip(&self.candidates) {
            let (target, prefix) = self.split.holdout(u as usize, self.part).expect("held out");
            let at = position[target as usize];
            let before = |i: &&u32| **i != target && position[**i as usize] < at;
            sampled.push(cands[1..].iter().filter(before).count() as i64);
            let mut history = self.split.all(u as usize)[..prefix].to_vec();
            history.sort_unstable();
            history.dedup();
            let hidden = history.iter().filter(before).count();
            full.push(at as i64 - hidden as i64);
        }
        (sampled, full)
    }

    /// Candidates per user in the sampled protocol (101 unless the catalogue is tiny).
    pub fn num_candidates(&self) -> usize {
        self.candidates.iter().map(Vec::len).min().unwrap_or(0)
    }

    /// The inputs of users `range` (indices into [`EvalSet::users`]).
    pub fn batch(&self, range: std::ops::Range<usize>) -> EvalBatch<'_> {
        let t = self.cfg.maxlen;
        let users = &self.users[range.clone()];
        let rows = users.len();
        let n_cand = self.num_candidates();
        let mut seq = vec![0i64; rows * t];
        let mut intervals = self.cfg.intervals.map(|_| vec![0i32; rows * t * t]);
        let mut candidates = Vec::with_capacity(rows * n_cand);
        let mut targets = Vec::with_capacity(rows);
        let mut exclude = Vec::with_capacity(rows);
        for (row, (&u, cands)) in users.iter().zip(&self.candidates[range]).enumerate() {
            let u = u as usize;
            let (target, prefix) = self.split.holdout(u, self.part).expect("held-out user");
            let history = &self.split.all(u)[..prefix];
            left_pad(history, 0i64, &mut seq[row * t..(row + 1) * t]);
            if let (Some(out), Some(iv), Some(times)) =
                (intervals.as_mut(), self.cfg.intervals, self.split.times(u))
            {
                let codes = time_codes(iv.unit, times);
                iv.window_matrix(
                    &codes[..prefix],
                    t,
                    &mut out[row * t * t..(row + 1) * t * t],
                );
            }
            candidates.extend(cands[..n_cand].iter().map(|&c| c as i64));
            targets.push(target);
            exclude.push(history);
        }
        EvalBatch {
            users,
            seq,
            intervals,
            candidates,
            targets,
            exclude,
        }
    }
}
