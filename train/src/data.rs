//! Where a run's interactions come from, as plain values: the file, how to read it, the
//! k-core filter and the split's short-user threshold ([`DataSource`]), and reading them into
//! a [`Split`].

use std::time::Instant;

use sasrec_shared::dataset::{resolve_dataset, ReadOptions};
use sasrec_shared::{Dataset, KCore, Split};

use crate::error::Result;

/// A dataset to read and split (`--dataset`, `--format`, `--columns`, the k-core flags and
/// `--min_holdout_len`).
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    /// A file, or NAME for `data/NAME.txt(.gz)`.
    pub dataset: String,
    /// File layout and column roles.
    pub read: ReadOptions,
    /// k-core filtering, `None` when off.
    pub kcore: Option<KCore>,
    /// Users with fewer interactions are training-only.
    pub min_holdout_len: usize,
}

impl DataSource {
    /// Resolves the name, reads the file and splits it leave-one-out.
    pub fn load(&self) -> Result<Split> {
        let path = resolve_dataset(&self.dataset)?;
        let started = Instant::now();
        let data = Dataset::read_with(&path, self.kcore, &self.read)?;
        tracing::info!(
            path = %path.display(),
            users = data.num_users(),
            items = data.num_items(),
            interactions = data.report.interactions_read - data.report.removed_by_kcore,
            seconds = started.elapsed().as_secs_f64(),
            "dataset loaded"
        );
        Ok(Split::new(data.into(), self.min_holdout_len))
    }
}
