//! Leave-one-out split: last item test, second-to-last validation, the rest training.

use std::sync::Arc;

use crate::dataset::Dataset;

/// Users with fewer interactions than this keep everything for training and are not evaluated.
/// 4 is pmixer/SASRec.pytorch's current threshold (`len < 4`, PR #50); the TF code and
/// TiSASRec use 3 (docs/MODELS.md §1.1, pitfall 17). Either way a held-out user keeps ≥ 1 (resp. 2)
/// training items.
pub const DEFAULT_MIN_HOLDOUT_LEN: usize = 4;

/// The length from which a user has validation and test items, for `--min_holdout_len`
/// (at least 3, so that a held-out user keeps a training item).
pub fn holdout_threshold(min_holdout_len: usize) -> usize {
    min_holdout_len.max(3)
}

/// Which held-out item is being predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The second-to-last item; input = training items.
    Valid,
    /// The last item; input = training items + the validation item (docs/MODELS.md, pitfall 19).
    Test,
}

/// A leave-one-out view of a [`Dataset`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Split {
    /// The underlying dataset.
    pub data: Arc<Dataset>,
    /// The short-user threshold in use.
    pub min_holdout_len: usize,
}

impl Split {
    /// Splits `data`; users shorter than `min_holdout_len` are training-only.
    pub fn new(data: Arc<Dataset>, min_holdout_len: usize) -> Self {
        Self {
            data,
            min_holdout_len: holdout_threshold(min_holdout_len),
        }
    }

    /// Number of users (indices 1..=U).
    pub fn num_users(&self) -> usize {
        self.data.num_users()
    }

    /// Number of items (indices 1..=I).
    pub fn num_items(&self) -> usize {
        self.data.num_items()
    }

    /// Items 1..=W that training may use: all I, or the warm ones under `--cold_items` (the
    /// cold items are W+1..=I, [`crate::cold`]).
    pub fn num_warm_items(&self) -> usize {
        self.num_items() - self.data.cold_items
    }

    /// Whether `item` is held out of training (`--cold_items`).
    pub fn is_cold(&self, item: u32) -> bool {
        item as usize > self.num_warm_items()
    }

    /// Whether user `u` has validation and test items.
    pub fn has_holdout(&self, u: usize) -> bool {
        self.data.sequences[u].len() >= self.min_holdout_len
    }

    fn train_len(&self, u: usize) -> usize {
        let n = self.data.sequences[u].len();
        if n >= self.min_holdout_len {
            n - 2
        } else {
            n
        }
    }

    /// User `u`'s training items, oldest first.
    pub fn train(&self, u: usize) -> &[u32] {
        &self.data.sequences[u][..self.train_len(u)]
    }

    /// User `u`'s whole sequence (train, valid, test).
    pub fn all(&self, u: usize) -> &[u32] {
        &self.data.sequences[u]
    }

    /// User `u`'s whole timestamp sequence, when the data has timestamps.
    pub fn times(&self, u: usize) -> Option<&[i64]> {
        self.data.timestamps.as_ref().map(|t| &t[u])
    }

    /// The target item and the length of the input prefix of `all(u)` for `part`, or `None`
    /// for a training-only user. Valid: input = train; test: input = train + valid.
    pub fn holdout(&self, u: usize, part: Part) -> Option<(u32, usize)> {
        if !self.has_holdout(u) {
            return None;
        }
        let n = self.data.sequences[u].len();
        let prefix = match part {
            Part::Valid => n - 2,
            Part::Test => n - 1,
        };
        Some((self.data.sequences[u][prefix], prefix))
    }

    /// How often each item occurs in the training parts (index 0, padding, is 0): the
    /// popularity distribution of `--negative_sampler popularity`.
    pub fn train_item_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.num_items() + 1];
        for u in 1..=self.num_users() {
            for &i in self.train(u) {
                counts[i as usize] += 1;
            }
        }
        counts
    }

    /// Total number of training interactions.
    pub fn num_train_interactions(&self) -> usize {
        (1..=self.num_users()).map(|u| self.train_len(u)).sum()
    }
}
