//! The item tower in the server (`item_tower.onnx`, docs/MODELS.md §6.3): raw features →
//! item vectors, for `POST /v1/items` and the additions file read at load
//! ([`crate::catalogue`]).
//!
//! Features are encoded by the schema in the tower's own metadata
//! ([`FeatureSchema::encode_json`]: vocabularies and numeric moments of training), then the
//! tower runs once per request on all its items: `v = Σ_f mean E_f[values_f] + Σ_g W_g·x_g`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use sasrec_shared::features::{EncodedFeatures, FeatureSchema, FieldError};
use sasrec_shared::run::two_tower::{self, ITEM_VECTOR};
use sasrec_shared::run::{GraphRole, ModelManifest};

use crate::catalogue::NewItem;
use crate::config::SessionConfig;
use crate::error::{LoadError, RunError};
use crate::session::{build_session, read_metadata};

/// A session on the item tower and the feature schema it was exported with.
#[derive(Debug)]
pub struct ItemTower {
    session: Mutex<Session>,
    schema: FeatureSchema,
    dim: usize,
    path: PathBuf,
}

impl ItemTower {
    /// Opens the item tower at `path` for the model `model`: its metadata must say it is the
    /// item tower of the same checkpoint, carry the feature schema, and its inputs must be the
    /// schema's columns.
    pub fn open(
        env: &ort::environment::Environment,
        path: &Path,
        scfg: &SessionConfig,
        model: &ModelManifest,
    ) -> Result<Self, LoadError> {
        let (session, _) = build_session(env, path, scfg)?;
        let schema = check_item_tower(&session, model).map_err(|msg| LoadError::Metadata {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(Self {
            session: Mutex::new(session),
            schema,
            dim: model.spec.model.hidden_units,
            path: path.to_path_buf(),
        })
    }

    /// The tower's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The features of `items` encoded by the schema; the error gives the item's position and
    /// the column at fault.
    pub fn encode(&self, items: &[NewItem]) -> Result<Vec<EncodedFeatures>, (usize, FieldError)> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.schema.encode_json(&item.features).map_err(|e| (i, e)))
            .collect()
    }

    /// The position of the first item whose vector (`vectors`, `[n × d]`) is not finite: an
    /// extreme numeric value can overflow the standardisation or `W·x`, and such a vector
    /// would make every history that reads the item score nothing.
    pub fn first_non_finite(&self, vectors: &[f32]) -> Option<usize> {
        vectors
            .chunks_exact(self.dim)
            .position(|v| !v.iter().all(|x| x.is_finite()))
    }

    /// The item vectors of `encoded` (`[n × d]`, row-major): one run of the tower. Blocking.
    pub fn embed(&self, encoded: &[EncodedFeatures]) -> Result<Vec<f32>, RunError> {
        if encoded.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = self.inputs(encoded)?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let out = session.run(inputs)?;
        let (_, v) = out[ITEM_VECTOR].try_extract_tensor::<f32>()?;
        if v.len() != encoded.len() * self.dim {
            return Err(RunError::Shape(format!(
                "`{ITEM_VECTOR}` has {} values for {} items of dimension {}",
                v.len(),
                encoded.len(),
                self.dim
            )));
        }
        Ok(v.to_vec())
    }

    /// One `[n, width]` tensor per schema column: token value ids (int64) or the column's
    /// slice of the numeric values (float32).
    fn inputs(
        &self,
        encoded: &[EncodedFeatures],
    ) -> Result<Vec<(Cow<'static, str>, SessionInputValue<'static>)>, RunError> {
        let n = encoded.len();
        let names = two_tower::item_tower_inputs(&self.schema);
        let (mut token, mut offset) = (0, 0);
        let mut inputs = Vec::with_capacity(names.len());
        for (col, name) in self.schema.columns.iter().zip(names) {
            let w = col.width;
            let value: SessionInputValue<'static> = if col.kind.is_token() {
                let t = token;
                token += 1;
                let ids = encoded.iter().flat_map(|e| e.tokens[t].ids.iter().copied());
                Tensor::from_array(([n, w], ids.collect::<Vec<i64>>()))?.into()
            } else {
                let at = offset;
                offset += w;
                let x = encoded.iter().flat_map(|e| e.numeric[at..at + w].iter());
                Tensor::from_array(([n, w], x.copied().collect::<Vec<f32>>()))?.into()
            };
            inputs.push((Cow::Owned(name), value));
        }
        Ok(inputs)
    }
}

/// The item tower's schema, after checking that `session` is the item tower of `model`.
fn check_item_tower(session: &Session, model: &ModelManifest) -> Result<FeatureSchema, String> {
    let tower = ModelManifest::from_metadata(&read_metadata(session)?)?;
    if tower.role != GraphRole::ItemTower {
        return Err("not an item tower (its metadata has no `tower` = `item`)".into());
    }
    if tower.source_sha256 != model.source_sha256 {
        return Err(format!(
            "exported from checkpoint {}, but the model from {}; export again",
            tower.source_sha256, model.source_sha256
        ));
    }
    let schema = match tower.spec.model.item_features {
        Some(f) => f.schema,
        None => return Err("its metadata carries no feature schema".into()),
    };
    let inputs: HashSet<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let want = two_tower::item_tower_inputs(&schema);
    if inputs != want.iter().map(String::as_str).collect() {
        return Err(format!("inputs are {inputs:?}, expected {want:?}"));
    }
    if !session.outputs().iter().any(|o| o.name() == ITEM_VECTOR) {
        return Err(format!("no `{ITEM_VECTOR}` output"));
    }
    Ok(schema)
}
