//! From a read [`FeatureTable`] to the numbers the model takes (docs/MODELS.md §6): a
//! [`FeatureSchema`] fitted on the training items — each token column's vocabulary, each
//! numeric column's mean and standard deviation — and the [`EncodedFeatures`] of every item of
//! the model's item map under it; plus the file's [`Coverage`] of that map.
//!
//! Fitting on the training items only keeps the held-out (cold) items out of every statistic:
//! a token seen only on cold items is not in the vocabulary (it encodes as "none", so such an
//! item is represented by its other features), and a cold item's year does not move the mean.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::features::spec::FeatureKind;
use crate::features::table::{ColumnData, FeatureTable};
use crate::IdMap;

/// How one feature column becomes numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaColumn {
    /// The column's name.
    pub name: String,
    /// Its kind.
    pub kind: FeatureKind,
    /// Token columns: value v (1..=V) is `vocab[v - 1]`; 0 means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vocab: Vec<String>,
    /// Token columns: most values of one item (1 for categorical); numeric: 1; dense: the
    /// vector length.
    pub width: usize,
    /// Numeric: the training items' mean (0 otherwise).
    #[serde(default)]
    pub mean: f64,
    /// Numeric: the training items' standard deviation (1 when it is 0 or there are no
    /// values); 1 for the other kinds.
    #[serde(default = "one")]
    pub std: f64,
}

fn one() -> f64 {
    1.0
}

/// The encoding of every feature column, fitted on the training items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// The columns, in declaration order.
    pub columns: Vec<SchemaColumn>,
}

/// One token column's value ids for every item.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIds {
    /// Values per item (the column's width).
    pub width: usize,
    /// `[(I + 1) × width]` row-major value ids, 0 = none; row 0 is the padding item.
    pub ids: Vec<i64>,
}

/// The features of every item of the model's item map, encoded by a [`FeatureSchema`].
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedFeatures {
    /// One per token column, in schema order.
    pub tokens: Vec<TokenIds>,
    /// `[(I + 1) × numeric_width]` row-major: the numeric columns standardised, then the dense
    /// vectors, in schema order; a missing value is 0 (a numeric column's mean).
    pub numeric: Vec<f32>,
    /// Σ widths of the numeric and dense columns.
    pub numeric_width: usize,
}

/// Row of `table` holding each model item (index 0, the padding item, has none).
pub fn item_rows(table: &FeatureTable, items: &IdMap) -> Vec<Option<usize>> {
    let by_id = table.rows_by_id();
    let mut rows = vec![None; items.len() + 1];
    for (i, row) in rows.iter_mut().enumerate().skip(1) {
        *row = items
            .raw_of(i as u32)
            .and_then(|raw| by_id.get(raw).copied());
    }
    rows
}

impl FeatureSchema {
    /// Fits every column of `table` on the model items `i` with `trained[i]` (module docs);
    /// `rows` from [`item_rows`].
    pub fn fit(table: &FeatureTable, rows: &[Option<usize>], trained: &[bool]) -> Self {
        let fit_rows: Vec<usize> = rows
            .iter()
            .zip(trained)
            .filter_map(|(r, &t)| r.filter(|_| t))
            .collect();
        let all_rows: Vec<usize> = rows.iter().flatten().copied().collect();
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let (name, kind) = (c.spec.name.clone(), c.spec.kind);
                let mut col = SchemaColumn {
                    name,
                    kind,
                    vocab: Vec::new(),
                    width: 1,
                    mean: 0.0,
                    std: 1.0,
                };
                match &c.data {
                    ColumnData::Tokens { .. } => {
                        col.vocab = vocabulary(&c.data, &fit_rows);
                        let most = all_rows.iter().map(|&r| c.data.tokens(r).len()).max();
                        col.width = most.unwrap_or(1).max(1);
                    }
                    ColumnData::Numbers(v) => (col.mean, col.std) = moments(v, &fit_rows),
                    ColumnData::Vectors { dim, .. } => col.width = *dim,
                }
                col
            })
            .collect();
        Self { columns }
    }

    /// Σ widths of the numeric and dense columns.
    pub fn numeric_width(&self) -> usize {
        self.columns
            .iter()
            .filter(|c| !c.kind.is_token())
            .map(|c| c.width)
            .sum()
    }

    /// The features of every model item (`rows` from [`item_rows`], one per item index).
    pub fn encode(&self, table: &FeatureTable, rows: &[Option<usize>]) -> EncodedFeatures {
        let n = rows.len();
        let numeric_width = self.numeric_width();
        let mut out = EncodedFeatures {
            tokens: Vec::new(),
            numeric: vec![0.0; n * numeric_width],
            numeric_width,
        };
        let mut offset = 0;
        for (col, data) in self
            .columns
            .iter()
            .zip(table.columns.iter().map(|c| &c.data))
        {
            if col.kind.is_token() {
                out.tokens.push(encode_tokens(col, data, rows));
                continue;
            }
            for (i, r) in rows.iter().enumerate() {
                let dst = &mut out.numeric[i * numeric_width + offset..][..col.width];
                match (r, data) {
                    (Some(r), ColumnData::Numbers(v)) => {
                        if let Some(x) = v[*r] {
                            dst[0] = ((x - col.mean) / col.std) as f32;
                        }
                    }
                    (Some(r), ColumnData::Vectors { rows: vs, .. }) => {
                        if let Some(v) = &vs[*r] {
                            dst.copy_from_slice(v);
                        }
                    }
                    _ => {}
                }
            }
            offset += col.width;
        }
        out
    }
}

/// The sorted distinct tokens of `rows` in a token column.
fn vocabulary(data: &ColumnData, rows: &[usize]) -> Vec<String> {
    let set: BTreeSet<&String> = rows.iter().flat_map(|&r| data.tokens(r)).collect();
    set.into_iter().cloned().collect()
}

/// Mean and population standard deviation of the present values at `rows` (0 and 1 when there
/// are none; a standard deviation of 0 becomes 1).
fn moments(values: &[Option<f64>], rows: &[usize]) -> (f64, f64) {
    let xs: Vec<f64> = rows.iter().filter_map(|&r| values[r]).collect();
    if xs.is_empty() {
        return (0.0, 1.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (mean, if std > 1e-12 { std } else { 1.0 })
}

/// A token column's value ids for every item: tokens outside the vocabulary are dropped.
fn encode_tokens(col: &SchemaColumn, data: &ColumnData, rows: &[Option<usize>]) -> TokenIds {
    let index: std::collections::HashMap<&str, i64> = col
        .vocab
        .iter()
        .enumerate()
        .map(|(v, t)| (t.as_str(), v as i64 + 1))
        .collect();
    let mut ids = vec![0i64; rows.len() * col.width];
    for (i, r) in rows.iter().enumerate() {
        let Some(r) = r else { continue };
        let known = data.tokens(*r).iter().filter_map(|t| index.get(t.as_str()));
        for (slot, &v) in ids[i * col.width..][..col.width].iter_mut().zip(known) {
            *slot = v;
        }
    }
    TokenIds {
        width: col.width,
        ids,
    }
}

/// How one column covers the model's items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnCoverage {
    /// The column.
    pub name: String,
    /// Its kind.
    pub kind: FeatureKind,
    /// Model items with a value in it.
    pub items_with_value: usize,
    /// Token columns: distinct values among the model's items.
    pub distinct_values: Option<usize>,
}

/// How a features file covers the model's item map (`data stats --item_features`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    /// Data rows of the file.
    pub rows: usize,
    /// Items of the model (I).
    pub items: usize,
    /// Model items with a row.
    pub with_features: usize,
    /// Model items without a row.
    pub without_features: usize,
    /// Rows whose id is no item of the data (not trained; a server can add them later).
    pub unknown_ids: usize,
    /// The first few unknown ids.
    pub unknown_examples: Vec<String>,
    /// Per declared column.
    pub columns: Vec<ColumnCoverage>,
    /// Header columns read past.
    pub ignored: Vec<String>,
}

impl Coverage {
    /// The coverage of `items` by `table`.
    pub fn of(table: &FeatureTable, items: &IdMap) -> Self {
        let rows = item_rows(table, items);
        let present: Vec<usize> = rows.iter().flatten().copied().collect();
        let unknown: Vec<&String> = table
            .ids
            .iter()
            .filter(|id| items.index_of(id).is_none())
            .collect();
        let columns = table
            .columns
            .iter()
            .map(|c| ColumnCoverage {
                name: c.spec.name.clone(),
                kind: c.spec.kind,
                items_with_value: present.iter().filter(|&&r| c.data.has_value(r)).count(),
                distinct_values: c
                    .spec
                    .kind
                    .is_token()
                    .then(|| vocabulary(&c.data, &present).len()),
            })
            .collect();
        Self {
            rows: table.ids.len(),
            items: items.len(),
            with_features: present.len(),
            without_features: items.len() - present.len(),
            unknown_ids: unknown.len(),
            unknown_examples: unknown.iter().take(5).map(|s| s.to_string()).collect(),
            columns,
            ignored: table.ignored.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> (tempfile::TempDir, FeatureTable) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, text).unwrap();
        let t = FeatureTable::read(&p, None).unwrap();
        (dir, t)
    }

    fn items(ids: &[&str]) -> IdMap {
        IdMap::from_tokens(ids.iter().map(|s| s.to_string()).collect())
    }

    const FILE: &str = "item,genres:multi,year:numeric,emb:dense\n\
                        10,A|B,1990,1 2\n\
                        20,B,2000,\n\
                        30,C|A,,3 4\n\
                        99,A,1980,5 6\n";

    #[test]
    fn fits_on_trained_items_and_encodes_every_item() {
        let (_d, t) = table(FILE);
        let map = items(&["10", "20", "30", "40"]);
        let rows = item_rows(&t, &map);
        assert_eq!(rows, [None, Some(0), Some(1), Some(2), None]);
        // item 30 (index 3) is cold: its token C and its row stay out of the fit
        let trained = [false, true, true, false, true];
        let s = FeatureSchema::fit(&t, &rows, &trained);
        assert_eq!(s.columns[0].vocab, ["A", "B"]);
        assert_eq!(s.columns[0].width, 2);
        assert_eq!((s.columns[1].mean, s.columns[1].std), (1995.0, 5.0));
        assert_eq!(s.columns[2].width, 2);
        assert_eq!(s.numeric_width(), 3);
        let e = s.encode(&t, &rows);
        assert_eq!(e.tokens[0].ids, [0, 0, 1, 2, 2, 0, 1, 0, 0, 0]);
        #[rustfmt::skip]
        assert_eq!(e.numeric, [
            0.0, 0.0, 0.0,
            -1.0, 1.0, 2.0,
            1.0, 0.0, 0.0,
            0.0, 3.0, 4.0,
            0.0, 0.0, 0.0,
        ]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<FeatureSchema>(&json).unwrap(), s);
    }

    #[test]
    fn coverage_counts_items_and_unknown_ids() {
        let (_d, t) = table(FILE);
        let c = Coverage::of(&t, &items(&["10", "20", "30", "40"]));
        assert_eq!(
            (c.rows, c.items, c.with_features, c.without_features),
            (4, 4, 3, 1)
        );
        assert_eq!(
            (c.unknown_ids, c.unknown_examples.clone()),
            (1, vec!["99".to_string()])
        );
        let per: Vec<_> = c
            .columns
            .iter()
            .map(|k| (k.name.as_str(), k.items_with_value, k.distinct_values))
            .collect();
        assert_eq!(
            per,
            [("genres", 3, Some(3)), ("year", 2, None), ("emb", 2, None)]
        );
    }
}
