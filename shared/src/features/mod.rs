//! Item side features (docs/MODELS.md §6): a features file keyed by the item id
//! ([`FeatureTable`], columns declared as [`ColumnSpec`]s of a [`FeatureKind`]), the encoding
//! fitted on the training items ([`FeatureSchema`] → [`EncodedFeatures`]), how the file covers
//! the data's items ([`Coverage`]), one item's features given as JSON ([`item`]) and
//! converters from the MovieLens metadata ([`movielens`]).

pub mod encode;
pub mod item;
pub mod movielens;
pub mod spec;
pub mod table;

pub use encode::{item_rows, Coverage, EncodedFeatures, FeatureSchema, SchemaColumn, TokenIds};
pub use item::FieldError;
pub use spec::{parse_columns, ColumnSpec, ColumnSpecs, FeatureKind};
pub use table::{ColumnData, FeatureColumn, FeatureTable};
