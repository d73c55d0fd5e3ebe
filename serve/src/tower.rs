//! The user towers the workers run instead of `model.onnx`: they get one user vector `q` per
//! row (`user_vector` `[B, d]`) and rank each row from the item vectors ([`Retriever::rank`]).
//!
//! * [`TowerRunner`] on [`Tower::User`]: `user_tower.onnx` under `--retrieval ann`, on the same
//!   batched rows as `model.onnx` (same `seq` and `time_matrix`, built by [`crate::request`]).
//! * [`TowerRunner`] on [`Tower::Open`]: `user_tower_open.onnx` for a model that takes added items
//!   ([`crate::catalogue`]), in both retrieval modes. The batch's `seq` is renumbered to the
//!   rows of the item table it reads ([`read_rows`]: trained rows from the item vectors, added
//!   rows from the row's snapshot of the additions), which the graph takes as `item_rows`; the
//!   gathered vectors are the same as from the whole table, so the user vectors are too. Each
//!   row is ranked over the trained items as on `user_tower.onnx` and over the added items
//!   exactly ([`crate::catalogue::AddedItems::top_k`]), the two merged by score.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use ort::session::Session;
use sasrec_shared::run::two_tower::{self, USER_VECTOR};
use sasrec_shared::run::{GraphRole, ModelManifest};

use ort::value::Tensor;
use sasrec_ann::ItemVectors;
use sasrec_shared::run::two_tower::ITEM_ROWS;

use crate::batcher::{
    history_inputs, history_inputs_with, output, Row, RowResult, RowRunner, Shape,
};
use crate::error::{LoadError, RunError};
use crate::ranking::best_k;
use crate::retrieval::Retriever;
use crate::session::{read_metadata, run_bound};

/// Which user tower a [`TowerRunner`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    /// `user_tower.onnx`: the rows' own `seq`.
    User,
    /// `user_tower_open.onnx`: `seq` renumbered to the item rows it reads ([`read_rows`]).
    Open,
}

/// A worker's user-tower session and the retriever that ranks its rows.
pub struct TowerRunner {
    session: Session,
    shape: Shape,
    retriever: Arc<Retriever>,
    tower: Tower,
}

impl TowerRunner {
    /// A runner on `session`, a `tower` (loaded from `path`, checked with [`check_tower`] or
    /// [`check_open_tower`]), warmed up with one all-padding row whose user vector must have
    /// the item vectors' dimension.
    pub fn new(
        session: Session,
        shape: Shape,
        retriever: Arc<Retriever>,
        (path, tower): (&Path, Tower),
    ) -> Result<Self, LoadError> {
        let mut runner = Self {
            session,
            shape,
            retriever,
            tower,
        };
        let probe = Row::probe(shape);
        runner
            .user_vectors(&[&probe])
            .map_err(|e| LoadError::Metadata {
                path: path.to_path_buf(),
                msg: format!("warm-up run failed: {e}"),
            })?;
        Ok(runner)
    }

    /// The user vectors of `rows` from this runner's tower.
    fn user_vectors(&mut self, rows: &[&Row]) -> Result<Vec<f32>, RunError> {
        let (session, shape, retriever) = (&mut self.session, self.shape, &*self.retriever);
        match self.tower {
            Tower::User => user_vectors(session, rows, shape, retriever.dim()),
            Tower::Open => open_user_vectors(session, rows, shape, retriever),
        }
    }
}

impl RowRunner for TowerRunner {
    fn run(&mut self, rows: &[&Row]) -> Result<Vec<RowResult>, RunError> {
        let dim = self.retriever.dim();
        let q = self.user_vectors(rows)?;
        rows.iter()
            .zip(q.chunks_exact(dim))
            .map(|(row, q)| rank_with_added(&self.retriever, row, q))
            .collect()
    }
}

/// The user vectors of `rows`, `[B, d]` row-major: one run of the user tower on the rows'
/// `seq` (and `time_matrix`), checked to hold `B × dim` values.
pub fn user_vectors(
    session: &mut Session,
    rows: &[&Row],
    shape: Shape,
    dim: usize,
) -> Result<Vec<f32>, RunError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let inputs = history_inputs(rows, shape)?;
    run_bound(session, &inputs, &[USER_VECTOR], |out| {
        let q = output::<f32>(out, USER_VECTOR)?;
        if q.len() != rows.len() * dim {
            return Err(RunError::Shape(format!(
                "`{USER_VECTOR}` has {} values for {} rows; the item vectors have dimension {dim}",
                q.len(),
                rows.len()
            )));
        }
        Ok(q.to_vec())
    })
}

/// The user vectors of `rows` from the open user tower: their `seq`s renumbered to the item
/// rows they read ([`read_rows`]), which go in as `item_rows`.
fn open_user_vectors(
    session: &mut Session,
    rows: &[&Row],
    shape: Shape,
    retriever: &Retriever,
) -> Result<Vec<f32>, RunError> {
    let dim = retriever.dim();
    let (seq, table) = read_rows(rows, shape.maxlen, retriever.vectors())?;
    let mut inputs: Vec<_> = history_inputs_with(rows, shape, seq)?
        .into_iter()
        .map(|(name, t)| (name, t.into_dyn()))
        .collect();
    let item_rows = Tensor::from_array(([table.len() / dim, dim], table))?;
    inputs.push((ITEM_ROWS, item_rows.into_dyn()));
    run_bound(session, &inputs, &[USER_VECTOR], |out| {
        let q = output::<f32>(out, USER_VECTOR)?;
        if q.len() != rows.len() * dim {
            return Err(RunError::Shape(format!(
                "`{USER_VECTOR}` has {} values for {} rows of dimension {dim}",
                q.len(),
                rows.len()
            )));
        }
        Ok(q.to_vec())
    })
}

/// The item rows the `rows`' `seq`s read, renumbered: `(seq, table)` with `seq` `[B × T]`
/// holding row numbers of `table` (`[L × d]`), row 0 the padding row `v_0`, then each distinct
/// item in order of first reading: a trained item `i ≤ I` from the item vectors, an added one
/// from the row's own snapshot (so two snapshots' versions of an updated item stay apart).
pub fn read_rows(
    rows: &[&Row],
    maxlen: usize,
    vectors: &ItemVectors,
) -> Result<(Vec<i64>, Vec<f32>), RunError> {
    let trained = vectors.num_items() as i64;
    let mut table = vectors.row(0).to_vec();
    let mut number: HashMap<(i64, usize), i64> = HashMap::new();
    let mut seq = Vec::with_capacity(rows.len() * maxlen);
    for (b, row) in rows.iter().enumerate() {
        if row.seq.len() != maxlen {
            return Err(RunError::Shape(format!(
                "row {b}: seq has {} entries, expected {maxlen}",
                row.seq.len()
            )));
        }
        let snapshot = row.added.as_ref().map_or(0, |a| Arc::as_ptr(a) as usize);
        for &i in &row.seq {
            if i == 0 {
                seq.push(0);
                continue;
            }
            let key = (i, if i <= trained { 0 } else { snapshot });
            let next = (table.len() / vectors.dim()) as i64;
            let n = match number.entry(key) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    table.extend_from_slice(item_row(i, trained, row, vectors)?);
                    *e.insert(next)
                }
            };
            seq.push(n);
        }
    }
    Ok((seq, table))
}

/// `v_i`: a trained item's row of the item vectors, or an added item's of the row's snapshot.
fn item_row<'a>(
    i: i64,
    trained: i64,
    row: &'a Row,
    vectors: &'a ItemVectors,
) -> Result<&'a [f32], RunError> {
    let added = row
        .added
        .as_deref()
        .and_then(|a| a.row(u32::try_from(i).ok()?));
    match i {
        1.. if i <= trained => Ok(vectors.row(i as usize)),
        _ => added.ok_or_else(|| RunError::Shape(format!("seq holds {i}, not an item index"))),
    }
}

/// One row's answer: the trained items ranked by [`Retriever::rank`] merged with the added
/// items of the row's snapshot ranked exactly ([`crate::catalogue::AddedItems::top_k`]); the
/// best `k` by score, equal scores to the lower index, non-finite scores dropped.
pub fn rank_with_added(retriever: &Retriever, row: &Row, q: &[f32]) -> Result<RowResult, RunError> {
    let trained = retriever.rank(row, q)?;
    let Some(added) = row.added.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(trained);
    };
    let mut scored: Vec<(u64, f32)> = trained.into_iter().map(|(i, s)| (i as u64, s)).collect();
    let extra = added.top_k(q, row.k, &row.exclude, row.candidates.as_deref());
    scored.extend(extra.into_iter().filter(|(_, s)| s.is_finite()));
    Ok(best_k(scored, row.k)
        .into_iter()
        .map(|(i, s)| (i as i64, s))
        .collect())
}

/// The open user tower is the one of the model `model`: its metadata says so, it comes from
/// the same checkpoint, and it takes the history inputs and `item_rows`.
pub fn check_open_tower(session: &Session, model: &ModelManifest) -> Result<(), String> {
    check_role(session, model, GraphRole::OpenUserTower, "user_open")?;
    let want = two_tower::open_inputs(model.spec.model.is_time_aware());
    check_io(session, &want)
}

/// The user tower is the one of the model `model`: its metadata says it is a user tower of
/// the same checkpoint, and it takes exactly the history inputs and returns `user_vector`.
pub fn check_tower(session: &Session, model: &ModelManifest) -> Result<(), String> {
    check_role(session, model, GraphRole::UserTower, "user")?;
    check_io(
        session,
        &two_tower::inputs(model.spec.model.is_time_aware()),
    )
}

/// `session`'s metadata names the graph `role` (metadata `tower` = `tower`) of the checkpoint
/// `model` comes from.
fn check_role(
    session: &Session,
    model: &ModelManifest,
    role: GraphRole,
    tower_name: &str,
) -> Result<(), String> {
    let tower = ModelManifest::from_metadata(&read_metadata(session)?)?;
    if tower.role != role {
        return Err(format!(
            "not a {} (its metadata has no `tower` = `{tower_name}`)",
            match role {
                GraphRole::OpenUserTower => "open user tower",
                _ => "user tower",
            }
        ));
    }
    if tower.source_sha256 != model.source_sha256 {
        return Err(format!(
            "exported from checkpoint {}, but model.onnx from {}; export again",
            tower.source_sha256, model.source_sha256
        ));
    }
    Ok(())
}

/// `session` takes exactly the inputs `want` and returns `user_vector`.
fn check_io(session: &Session, want: &[&str]) -> Result<(), String> {
    let inputs: HashSet<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let want: HashSet<&str> = want.iter().copied().collect();
    if inputs != want {
        return Err(format!("inputs are {inputs:?}, expected {want:?}"));
    }
    if !session.outputs().iter().any(|o| o.name() == USER_VECTOR) {
        return Err(format!("no `{USER_VECTOR}` output"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sasrec_ann::VectorsMeta;
    use serde_json::Map;

    use super::*;
    use crate::catalogue::{AddedItems, NewItem};

    /// Three trained items `v_i = (i, -i)`, row 0 zero.
    fn trained(dir: &Path) -> ItemVectors {
        let path = dir.join("v.safetensors");
        let rows = [0., 0., 1., -1., 2., -2., 3., -3.];
        let meta = VectorsMeta {
            source_sha256: "ab".repeat(32),
            kind: "sasrec".into(),
            extra: BTreeMap::new(),
        };
        ItemVectors::write(&path, &rows, 2, &meta).unwrap();
        ItemVectors::open(&path).unwrap()
    }

    fn row(seq: Vec<i64>, added: &Arc<AddedItems>) -> Row {
        Row {
            seq,
            time_matrix: None,
            exclude: Vec::new(),
            candidates: None,
            k: 1,
            added: Some(added.clone()),
        }
    }

    fn item(id: &str) -> NewItem {
        NewItem {
            id: id.into(),
            features: Map::new(),
        }
    }

    #[test]
    fn rows_are_renumbered_and_each_snapshot_keeps_its_version_of_an_added_item() {
        let dir = tempfile::tempdir().unwrap();
        let vectors = trained(dir.path());
        let mut a = AddedItems::empty(3, 2);
        a.upsert(vec![item("x"), item("y")], &[9., 9., 8., 8.]); // 4, 5
        let old = Arc::new(a.clone());
        a.upsert(vec![item("x")], &[7., 7.]); // 4 updated
        let new = Arc::new(a);
        let r1 = row(vec![0, 2, 4, 2], &old);
        let r2 = row(vec![0, 0, 4, 5], &new);
        let (seq, table) = read_rows(&[&r1, &r2], 4, &vectors).unwrap();
        assert_eq!(seq, [0, 1, 2, 1, 0, 0, 3, 4]);
        assert_eq!(table, [0., 0., 2., -2., 9., 9., 7., 7., 8., 8.]);

        let bad = row(vec![0, 0, 0, 6], &new);
        let e = read_rows(&[&bad], 4, &vectors).unwrap_err().to_string();
        assert_eq!(e, "seq holds 6, not an item index");
        let e = read_rows(&[&r1], 3, &vectors).unwrap_err().to_string();
        assert_eq!(e, "row 0: seq has 4 entries, expected 3");
    }
}
