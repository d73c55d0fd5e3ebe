//! Where a run's interactions come from, as plain values: the file, how to read it, the
//! k-core filter and the split's short-user threshold ([`DataSource`]), and reading them into
//! a [`Split`].

use std::path::PathBuf;
use std::time::Instant;

use sasrec_shared::cold::ColdItems;
use sasrec_shared::config::{ItemFeaturesConfig, ItemRepr};
use sasrec_shared::dataset::{resolve_dataset, ReadOptions};
use sasrec_shared::features::{
    item_rows, ColumnSpec, Coverage, EncodedFeatures, FeatureSchema, FeatureTable,
};
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
    /// The item features file and its declared columns, when given.
    pub features: Option<FeaturesSource>,
    /// `--cold_items`: the items held out of training, when given.
    pub cold_items: Option<ColdItems>,
}

/// An item features file (`--item_features`) and the columns `--item_feature_columns`
/// declares (`None`: the header's `name:kind` cells).
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturesSource {
    /// The file.
    pub path: PathBuf,
    /// The declared columns.
    pub columns: Option<Vec<ColumnSpec>>,
}

impl FeaturesSource {
    /// Reads the file ([`FeatureTable::read`]) and logs what it holds.
    pub fn read(&self) -> Result<FeatureTable> {
        let started = Instant::now();
        let table = FeatureTable::read(&self.path, self.columns.as_deref())?;
        tracing::info!(
            path = %self.path.display(),
            rows = table.ids.len(),
            columns = table.columns.len(),
            seconds = started.elapsed().as_secs_f64(),
            "item features loaded"
        );
        Ok(table)
    }
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
        let data = match self.cold_items {
            Some(cold) => hold_out(cold, data, self.min_holdout_len)?,
            None => data,
        };
        Ok(Split::new(data.into(), self.min_holdout_len))
    }
}

/// `data` with the items of `cold` held out of training ([`ColdItems::apply`]), logged.
fn hold_out(cold: ColdItems, data: Dataset, min_holdout_len: usize) -> Result<Dataset> {
    let (data, report) = cold.apply(data, min_holdout_len)?;
    tracing::info!(
        fraction = cold.fraction,
        cold_items = report.items,
        warm_items = data.num_items() - report.items,
        interactions_removed = report.interactions_removed,
        users_now_training_only = report.users_without_holdout,
        "cold items held out of training"
    );
    Ok(data)
}

/// The item features of a training run: the file and the representation (`--item_repr`).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFeatures {
    /// `--item_features` and `--item_feature_columns`.
    pub source: FeaturesSource,
    /// `id+features` or `features`.
    pub repr: ItemRepr,
}

impl ItemFeatures {
    /// Reads the file and encodes every item of `split` (docs/MODELS.md §6): the schema is
    /// fitted on the items with training interactions; logs the coverage.
    pub fn encode(&self, split: &Split) -> Result<(ItemFeaturesConfig, EncodedFeatures)> {
        let table = self.source.read()?;
        let items = &split.data.items;
        let c = Coverage::of(&table, items);
        tracing::info!(
            items = c.items,
            with_features = c.with_features,
            without_features = c.without_features,
            unknown_ids = c.unknown_ids,
            repr = %self.repr,
            "item features"
        );
        let rows = item_rows(&table, items);
        let mut trained: Vec<bool> = split.train_item_counts().iter().map(|&n| n > 0).collect();
        trained.resize(rows.len(), false);
        let schema = FeatureSchema::fit(&table, &rows, &trained);
        let encoded = schema.encode(&table, &rows);
        let config = ItemFeaturesConfig {
            repr: self.repr,
            schema,
        };
        Ok((config, encoded))
    }
}
