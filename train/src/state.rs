//! The resumable checkpoint `checkpoint.safetensors`: weights, Adam moments and the loop state
//! (epoch, step, best-so-far, loss history) in one file, written atomically, so a `kill -9`
//! at any moment leaves the previous complete checkpoint.
//!
//! Tensors are stored as `model.<name>`, `adam.m.<name>`, `adam.v.<name>` (and the item
//! optimizer's own state, `rowwise_adagrad.sum.<name>`); the loop state is
//! JSON in a `uint8` tensor named `__state__`. Randomness needs no saved generator state:
//! sampling is keyed by (seed, epoch, user) and dropout is re-seeded from (seed, epoch, batch)
//! before every step, so a resumed epoch, or the rest of one (`--checkpoint_every_steps`),
//! replays exactly.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{bail, Context, Result};
use crate::evaluate::PartMetrics;
use crate::optimizers::Optimizers;

const STATE: &str = "__state__";

/// An evaluation's metrics under both protocols, validation and test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epoch after which it ran.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub step: u64,
    /// Mean training loss of that epoch.
    pub train_loss: f64,
    /// Validation under both protocols.
    pub valid: PartMetrics,
    /// Test under both protocols.
    pub test: PartMetrics,
    /// Training seconds so far (evaluation excluded).
    pub train_seconds: f64,
    /// Seconds this evaluation took.
    pub eval_seconds: f64,
}

/// The loop state saved with the weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// Mean loss of every completed epoch.
    pub losses: Vec<f64>,
    /// Seconds spent training (evaluation excluded).
    pub train_seconds: f64,
    /// Best validation score so far and its evaluation.
    pub best: Option<(f64, EvalRecord)>,
    /// Evaluations since the last improvement.
    pub bad_evals: usize,
    /// Every evaluation so far (also in metrics.jsonl).
    pub evals: Vec<EvalRecord>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// fp16 loss scaling: (scale, clean steps since its last change).
    #[serde(default)]
    pub grad_scale: Option<(f64, i64)>,
    /// The epoch in progress when a `--checkpoint_every_steps` checkpoint was written, `None`
    /// at an epoch boundary.
    #[serde(default)]
    pub partial: Option<PartialEpoch>,
}

/// How far the epoch in progress had come: a resumed run skips these batches of the epoch
/// (they are keyed by seed, epoch and user, so the rest are the uninterrupted run's) and
/// continues the epoch's loss sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Global batches of the epoch already trained.
    pub batches: usize,
    /// Sum of their (non-padding) losses over all ranks.
    pub loss_sum: f64,
    /// Their number of non-padding batches.
    pub loss_batches: usize,
    /// Seconds they took.
    pub seconds: f64,
}

/// Writes the checkpoint atomically (temporary file, fsync, rename, directory fsync): a
/// failed write names the file and leaves the previous checkpoint intact.
pub fn save(
    path: &Path,
    params: &[(String, Tensor)],
    opt: &Optimizers,
    state: &LoopState,
) -> Result<()> {
    let adam = &opt.adam;
    let json = serde_json::to_vec(state)?;
    let mut named: Vec<(String, Tensor)> = Vec::with_capacity(3 * params.len() + 1);
    let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).contiguous();
    for (name, p) in params {
        named.push((format!("model.{name}"), cpu(p)));
    }
    for ((name, m), v) in adam.names().zip(&adam.m).zip(&adam.v) {
        named.push((format!("adam.m.{name}"), cpu(m)));
        named.push((format!("adam.v.{name}"), cpu(v)));
    }
    for (name, t) in opt.extra_state() {
        named.push((name, cpu(&t)));
    }
    named.push((STATE.to_string(), Tensor::from_slice(&json)));
    named.push((
        "__adam_t__".to_string(),
        Tensor::from_slice(&[adam.t as i64]),
    ));
    sasrec_shared::io::write_atomic_path(path, |tmp| Tensor::write_safetensors(&named, tmp))
        .with_context(|| "writing the checkpoint; the previous one is kept".to_string())?;
    Ok(())
}

/// Restores weights and Adam state in place and returns the loop state.
pub fn load(path: &Path, params: &[(String, Tensor)], opt: &mut Optimizers) -> Result<LoopState> {
    let stored: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("{}: not a readable checkpoint", path.display()))?
        .into_iter()
        .collect();
    let get = |key: &str, like: &Tensor| -> Result<Tensor> {
        let t = stored
            .get(key)
            .with_context(|| format!("{}: tensor `{key}` is missing", path.display()))?;
        if t.size() != like.size() {
            bail!(
                "{}: `{key}` has shape {:?}, the model needs {:?}",
                path.display(),
                t.size(),
                like.size()
            );
        }
        Ok(t.to_kind(like.kind()).to_device(like.device()))
    };
    let (state, t) = loop_state(path, &stored)?;
    // Check everything before touching the model: the weights and the item optimizer's own
    // state are restored in place, Adam's moments replaced.
    let in_place: Vec<(String, Tensor)> = params
        .iter()
        .map(|(name, p)| (format!("model.{name}"), p.shallow_clone()))
        .chain(opt.extra_state())
        .collect();
    let mut restored = Vec::new();
    for (key, t) in &in_place {
        restored.push(get(key, t)?);
    }
    let adam = &mut opt.adam;
    let mut ms = Vec::new();
    let mut vs = Vec::new();
    for ((name, m), v) in adam.names().zip(&adam.m).zip(&adam.v) {
        ms.push(get(&format!("adam.m.{name}"), m)?);
        vs.push(get(&format!("adam.v.{name}"), v)?);
    }
    tch::no_grad(|| {
        for ((_, dst), src) in in_place.iter().zip(&restored) {
            dst.shallow_clone().copy_(src);
        }
    });
    adam.m = ms;
    adam.v = vs;
    adam.t = t;
    Ok(state)
}

/// The loop state and Adam's step count stored in the checkpoint at `path`.
fn loop_state(path: &Path, stored: &HashMap<String, Tensor>) -> Result<(LoopState, u64)> {
    let state_bytes = stored
        .get(STATE)
        .with_context(|| format!("{}: no loop state", path.display()))?;
    let bytes: Vec<u8> = Vec::<u8>::try_from(state_bytes.to_kind(Kind::Uint8).flatten(0, -1))?;
    let state: LoopState = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: corrupt loop state", path.display()))?;
    let t: Vec<i64> = Vec::<i64>::try_from(
        stored
            .get("__adam_t__")
            .with_context(|| format!("{}: no Adam step", path.display()))?,
    )?;
    Ok((state, t.first().copied().unwrap_or(0) as u64))
}
