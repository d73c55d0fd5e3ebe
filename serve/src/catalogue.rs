//! The items a server knows: the trained ones (the item map, indices 1..=I) and those added
//! after training through `POST /v1/items` ([`AddedItems`], indices I+1..=I+A), with the
//! vectors of the added ones and the file that keeps them across restarts.
//!
//! An added item's vector is the item tower's output for its features (docs/MODELS.md §6.5),
//! so its score for a user vector `q` is `q · v` exactly as a trained item's. Additions are
//! copy-on-write: `POST /v1/items` builds a new [`AddedItems`] from the current one and swaps
//! it in with the model, so a request keeps the snapshot it started with.
//!
//! # The additions file
//!
//! `added_items.jsonl` beside the model (or `--added_items FILE`): one JSON object per line,
//! `{"id": "<raw id>", "features": {<column>: <value>, ...}}`, one line per added item in index
//! order, rewritten atomically (temporary file, fsync, rename) before each swap. The features
//! are kept rather than the vectors, so a re-exported model embeds them again at load with its
//! own item tower; an id the new model was trained on is then dropped with a warning.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use sasrec_ann::dot;
use sasrec_shared::IdMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ranking::{best_k, Scored};

/// File name of the additions beside the model ([module docs](self#the-additions-file)).
pub const ADDED_ITEMS_FILE: &str = "added_items.jsonl";

/// An item to add or update: its raw id and its features (the item tower's columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// The raw item id.
    pub id: String,
    /// `{column: value}` as `FeatureSchema::encode_json` reads them.
    pub features: Map<String, Value>,
}

/// Items added after training: index `I + 1 + j` is the j-th added item. Each keeps its
/// additions-file line (the JSON text of its [`NewItem`]) rather than the parsed features.
#[derive(Debug, Clone, PartialEq)]
pub struct AddedItems {
    trained: usize,
    dim: usize,
    items: Vec<Stored>,
    vectors: Vec<f32>,
    by_id: HashMap<String, u32>,
}

/// An added item as kept: its raw id and its line of the additions file.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    id: String,
    line: Box<str>,
}

impl From<NewItem> for Stored {
    fn from(item: NewItem) -> Self {
        let line = serde_json::to_string(&item).expect("JSON values serialise");
        Self {
            id: item.id,
            line: line.into(),
        }
    }
}

/// What [`AddedItems::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Upserted {
    /// Items that were new.
    pub added: usize,
    /// Items added before whose features (and vector) were replaced.
    pub updated: usize,
}

impl AddedItems {
    /// No added items, for a model of `trained` items with vectors of dimension `dim`.
    pub fn empty(trained: usize, dim: usize) -> Self {
        Self {
            trained,
            dim,
            items: Vec::new(),
            vectors: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    /// The number of added items A.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item was added.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The index of the added item `raw` (I+1..=I+A).
    pub fn index_of(&self, raw: &str) -> Option<u32> {
        self.by_id.get(raw).copied()
    }

    /// The raw id of index `idx`, when it is an added item.
    pub fn raw_of(&self, idx: u32) -> Option<&str> {
        self.slot(idx).map(|j| self.items[j].id.as_str())
    }

    /// The vector `v_idx` of index `idx`, when it is an added item.
    pub fn row(&self, idx: u32) -> Option<&[f32]> {
        self.slot(idx)
            .map(|j| &self.vectors[j * self.dim..(j + 1) * self.dim])
    }

    /// The position j of index `idx = I + 1 + j` among the added items.
    fn slot(&self, idx: u32) -> Option<usize> {
        let j = (idx as usize).checked_sub(self.trained + 1)?;
        (j < self.items.len()).then_some(j)
    }

    /// Adds `items` with their `vectors` (`[items.len() × d]`, row-major), or replaces the
    /// features and vector of an id added before (it keeps its index). The ids must be distinct
    /// and not trained items (the caller checks).
    pub fn upsert(&mut self, items: Vec<NewItem>, vectors: &[f32]) -> Upserted {
        assert_eq!(vectors.len(), items.len() * self.dim, "one vector per item");
        let mut done = Upserted::default();
        for (item, v) in items.into_iter().zip(vectors.chunks_exact(self.dim)) {
            match self.by_id.get(&item.id) {
                Some(&idx) => {
                    let j = idx as usize - self.trained - 1;
                    self.vectors[j * self.dim..(j + 1) * self.dim].copy_from_slice(v);
                    self.items[j] = item.into();
                    done.updated += 1;
                }
                None => {
                    let idx = (self.trained + 1 + self.items.len()) as u32;
                    self.by_id.insert(item.id.clone(), idx);
                    self.vectors.extend_from_slice(v);
                    self.items.push(item.into());
                    done.added += 1;
                }
            }
        }
        done
    }

    /// The number of items [`AddedItems::upsert`] would add for `ids` (those not added yet).
    pub fn count_new<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        ids.into_iter()
            .filter(|id| !self.by_id.contains_key(*id))
            .count()
    }

    /// The best `k` added items for the user vector `q` by `score = q · v` ([`dot`], as the
    /// trained items are scored), skipping `exclude` (sorted) and, when `candidates` (sorted)
    /// is given, every index not in it; best first, equal scores to the lower index.
    pub fn top_k(
        &self,
        q: &[f32],
        k: usize,
        exclude: &[i64],
        candidates: Option<&[i64]>,
    ) -> Vec<Scored> {
        let first = self.trained as u64 + 1;
        let allowed = |i: u64| {
            exclude.binary_search(&(i as i64)).is_err()
                && candidates.is_none_or(|c| c.binary_search(&(i as i64)).is_ok())
        };
        let scored = (first..first + self.len() as u64)
            .filter(|&i| allowed(i))
            .map(|i| (i, dot(q, self.row(i as u32).expect("an added index"))))
            .collect();
        best_k(scored, k)
    }

    /// Writes every added item to `path` as JSON lines, atomically.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        sasrec_shared::io::write_atomic(path, |w| {
            for item in &self.items {
                w.write_all(item.line.as_bytes())?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    }
}

/// The items of an additions file ([module docs](self#the-additions-file)); an error names the
/// file and line. Empty lines are skipped; a repeated id keeps its last features.
pub fn read_added(path: &Path) -> Result<Vec<NewItem>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut items: Vec<NewItem> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: NewItem = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{}: not an added item ({{\"id\", \"features\"}}): {e}",
                path.display(),
                n + 1
            )
        })?;
        match at.get(&item.id) {
            Some(&j) => items[j] = item,
            None => {
                at.insert(item.id.clone(), items.len());
                items.push(item);
            }
        }
    }
    Ok(items)
}

/// Raw id ↔ index lookups over the trained items and, when the model takes additions, the
/// added ones.
#[derive(Debug, Clone, Copy)]
pub struct Catalogue<'a> {
    /// The item map of the trained items (1..=I).
    pub trained: &'a IdMap,
    /// The added items (I+1..=I+A).
    pub added: Option<&'a AddedItems>,
}

impl<'a> Catalogue<'a> {
    /// The trained items `items` alone.
    pub fn trained(items: &'a IdMap) -> Self {
        Self {
            trained: items,
            added: None,
        }
    }

    /// The index of `raw`: a trained item, else an added one.
    pub fn index_of(&self, raw: &str) -> Option<u32> {
        self.trained
            .index_of(raw)
            .or_else(|| self.added.and_then(|a| a.index_of(raw)))
    }

    /// The raw id of `idx`.
    pub fn raw_of(&self, idx: u32) -> Option<&'a str> {
        self.trained
            .raw_of(idx)
            .or_else(|| self.added.and_then(|a| a.raw_of(idx)))
    }

    /// The number of items, I + A.
    pub fn len(&self) -> usize {
        self.trained.len() + self.added.map_or(0, AddedItems::len)
    }

    /// Whether there are no items (never, for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, g: &str) -> NewItem {
        let features = serde_json::json!({ "genres": g });
        NewItem {
            id: id.into(),
            features: features.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn upsert_appends_new_ids_and_replaces_added_ones_in_place() {
        let mut a = AddedItems::empty(10, 2);
        let done = a.upsert(vec![item("x", "A"), item("y", "B")], &[1., 0., 0., 1.]);
        assert_eq!(
            done,
            Upserted {
                added: 2,
                updated: 0
            }
        );
        assert_eq!((a.index_of("x"), a.index_of("y")), (Some(11), Some(12)));
        assert_eq!(a.raw_of(12), Some("y"));
        assert_eq!((a.raw_of(10), a.raw_of(13)), (None, None));
        let done = a.upsert(vec![item("y", "C"), item("z", "D")], &[2., 2., 3., 3.]);
        assert_eq!(
            done,
            Upserted {
                added: 1,
                updated: 1
            }
        );
        assert_eq!(a.row(12), Some(&[2f32, 2.][..]));
        assert_eq!(a.row(13), Some(&[3f32, 3.][..]));
        assert_eq!(a.count_new(["x", "w", "v"]), 2);
        // q = (1, 0.5): x 1, y 3, z 4.5; y excluded; candidates {11, 12}
        assert_eq!(
            a.top_k(&[1., 0.5], 5, &[12], None),
            vec![(13, 4.5), (11, 1.0)]
        );
        assert_eq!(
            a.top_k(&[1., 0.5], 5, &[], Some(&[11, 12])),
            vec![(12, 3.0), (11, 1.0)]
        );
        assert_eq!(a.top_k(&[1., 0.5], 1, &[], None), vec![(13, 4.5)]);
    }

    #[test]
    fn the_additions_file_round_trips_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADDED_ITEMS_FILE);
        let mut a = AddedItems::empty(3, 1);
        a.upsert(vec![item("x", "A"), item("y", "B")], &[1., 2.]);
        a.upsert(vec![item("x", "C")], &[3.]);
        a.save(&path).unwrap();
        assert_eq!(
            read_added(&path).unwrap(),
            vec![item("x", "C"), item("y", "B")]
        );
        std::fs::write(&path, "{\"id\": \"x\", \"features\": {}}\n\n{\"id\": 3}\n").unwrap();
        let e = read_added(&path).unwrap_err();
        assert!(
            e.starts_with(&format!("{}:3: not an added item", path.display())),
            "{e}"
        );
    }
}
