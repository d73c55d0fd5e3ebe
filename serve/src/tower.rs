//! The user tower (`user_tower.onnx`) under `--retrieval ann`: the workers run it on the same
//! batched rows as `model.onnx` (same `seq` and `time_matrix`, built by [`crate::request`]),
//! get one user vector `q` per row (`user_vector` `[B, d]`) and rank each row from the item
//! vectors ([`Retriever::rank`]).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use ort::session::Session;
use sasrec_shared::run::two_tower::{self, USER_VECTOR};
use sasrec_shared::run::{GraphRole, ModelManifest};

use crate::batcher::{history_inputs, output, Row, RowResult, RowRunner, Shape};
use crate::error::{LoadError, RunError};
use crate::retrieval::Retriever;
use crate::session::{read_metadata, run_bound};

/// A worker's user-tower session and the retriever that ranks its rows.
pub struct TowerRunner {
    session: Session,
    shape: Shape,
    retriever: Arc<Retriever>,
}

impl TowerRunner {
    /// A runner on `session`, a user tower (loaded from `path`, checked with
    /// [`check_tower`]), warmed up with one all-padding row whose user vector must have the
    /// item vectors' dimension.
    pub fn new(
        mut session: Session,
        shape: Shape,
        retriever: Arc<Retriever>,
        path: &Path,
    ) -> Result<Self, LoadError> {
        let probe = Row::probe(shape);
        user_vectors(&mut session, &[&probe], shape, retriever.dim()).map_err(|e| {
            LoadError::Metadata {
                path: path.to_path_buf(),
                msg: format!("warm-up run failed: {e}"),
            }
        })?;
        Ok(Self {
            session,
            shape,
            retriever,
        })
    }
}

impl RowRunner for TowerRunner {
    fn run(&mut self, rows: &[&Row]) -> Result<Vec<RowResult>, RunError> {
        let dim = self.retriever.dim();
        let q = user_vectors(&mut self.session, rows, self.shape, dim)?;
        rows.iter()
            .zip(q.chunks_exact(dim))
            .map(|(row, q)| self.retriever.rank(row, q))
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

/// The user tower is the one of the model `model`: its metadata says it is a user tower of
/// the same checkpoint, and it takes exactly the history inputs and returns `user_vector`.
pub fn check_tower(session: &Session, model: &ModelManifest) -> Result<(), String> {
    let tower = ModelManifest::from_metadata(&read_metadata(session)?)?;
    if tower.role != GraphRole::UserTower {
        return Err("not a user tower (its metadata has no `tower` = `user`)".into());
    }
    if tower.source_sha256 != model.source_sha256 {
        return Err(format!(
            "exported from checkpoint {}, but model.onnx from {}; export again",
            tower.source_sha256, model.source_sha256
        ));
    }
    let inputs: HashSet<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let want: HashSet<&str> = two_tower::inputs(model.spec.model.is_time_aware())
        .into_iter()
        .collect();
    if inputs != want {
        return Err(format!("inputs are {inputs:?}, expected {want:?}"));
    }
    if !session.outputs().iter().any(|o| o.name() == USER_VECTOR) {
        return Err(format!("no `{USER_VECTOR}` output"));
    }
    Ok(())
}
