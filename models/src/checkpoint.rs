//! Weights as safetensors with the reference state-dict names (docs/MODELS.md §1.3,
//! §2.5), loadable by `safetensors.torch.load_file` and the PyTorch reference models.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Device, Tensor};

use crate::error::{Error, Result};

/// Writes every variable of `vs` to `path` in safetensors format, names sorted, fp32 on CPU
/// (whatever the extension of `path`).
pub fn save_weights(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let cpu: Vec<(String, Tensor)> = vars
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, path.as_ref())?;
    Ok(())
}

/// Names and shapes stored in a safetensors file, sorted by name.
pub fn read_shapes(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<i64>)>> {
    let mut v: Vec<(String, Vec<i64>)> = Tensor::read_safetensors(path.as_ref())?
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    v.sort();
    Ok(v)
}

/// Compares a checkpoint's tensors with the model's: every model tensor must be present with
/// the same shape and the checkpoint may hold nothing else. The first difference (in name
/// order) is returned as an error naming the tensor and both shapes.
pub fn check_names_and_shapes(
    path: &Path,
    model: &BTreeMap<String, Vec<i64>>,
    checkpoint: &BTreeMap<String, Vec<i64>>,
) -> Result<()> {
    for (name, expected) in model {
        match checkpoint.get(name) {
            None => {
                return Err(Error::MissingTensor {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    expected: expected.clone(),
                })
            }
            Some(got) if got != expected => {
                return Err(Error::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    expected: expected.clone(),
                    got: got.clone(),
                })
            }
            Some(_) => {}
        }
    }
    if let Some((name, got)) = checkpoint.iter().find(|(n, _)| !model.contains_key(*n)) {
        return Err(Error::UnexpectedTensor {
            path: path.to_path_buf(),
            name: name.clone(),
            got: got.clone(),
        });
    }
    Ok(())
}

/// Loads `path` into the variables of `vs` (copied in place, converted to each variable's dtype
/// and device) after checking names and shapes strictly ([`check_names_and_shapes`]). Nothing
/// is modified when the check fails.
pub fn load_weights(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let stored: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let model_shapes = vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    let stored_shapes = stored.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    check_names_and_shapes(path, &model_shapes, &stored_shapes)?;
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            let src = &stored[name];
            let mut dst = var.shallow_clone();
            dst.f_copy_(&src.to_kind(var.kind()).to_device(var.device()))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use sasrec_shared::config::Backbone;

    #[test]
    fn sasrec_names_and_shapes() {
        let cfg = small_cfg(Backbone::Sasrec, None);
        let (vs, _m) = build(&cfg);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_weights(&vs, &path).unwrap();
        let (c, t, i) = (C as i64, T, I as i64);
        let mut want: Vec<(String, Vec<i64>)> = vec![
            ("item_emb.weight".into(), vec![i + 1, c]),
            ("pos_emb.weight".into(), vec![t + 1, c]),
            ("last_layernorm.weight".into(), vec![c]),
            ("last_layernorm.bias".into(), vec![c]),
        ];
        for b in 0..2 {
            for (n, s) in [
                ("attention_layernorms.{b}.weight", vec![c]),
                ("attention_layernorms.{b}.bias", vec![c]),
                ("attention_layers.{b}.in_proj_weight", vec![3 * c, c]),
                ("attention_layers.{b}.in_proj_bias", vec![3 * c]),
                ("attention_layers.{b}.out_proj.weight", vec![c, c]),
                ("attention_layers.{b}.out_proj.bias", vec![c]),
                ("forward_layernorms.{b}.weight", vec![c]),
                ("forward_layernorms.{b}.bias", vec![c]),
                ("forward_layers.{b}.conv1.weight", vec![c, c, 1]),
                ("forward_layers.{b}.conv1.bias", vec![c]),
                ("forward_layers.{b}.conv2.weight", vec![c, c, 1]),
                ("forward_layers.{b}.conv2.bias", vec![c]),
            ] {
                want.push((n.replace("{b}", &b.to_string()), s));
            }
        }
        want.sort();
        assert_eq!(read_shapes(&path).unwrap(), want);
    }

    #[test]
    fn tisasrec_mhc_names() {
        let cfg = small_cfg(Backbone::Tisasrec, Some(4));
        let (vs, _m) = build(&cfg);
        let names: BTreeMap<String, Vec<i64>> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        let c = C as i64;
        assert_eq!(names["abs_pos_K_emb.weight"], [T, c]);
        assert_eq!(names["time_matrix_V_emb.weight"], [K as i64 + 1, c]);
        assert_eq!(names["attention_layers.1.Q_w.weight"], [c, c]);
        assert_eq!(names["attention_layers.1.V_w.bias"], [c]);
        assert_eq!(names["mhc_attention.1.phi"], [4 * c, 24]);
        assert_eq!(names["mhc_ffn.0.bias"], [24]);
        assert_eq!(names["mhc_ffn.1.alpha"], [3]);
        assert_eq!(names.len(), 5 + 2 * (4 + 6 + 4 + 6) + 2);
    }

    #[test]
    fn round_trip_restores_outputs() {
        for cfg in all_kinds() {
            let (vs, m) = build(&cfg);
            perturb(&vs);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.safetensors");
            save_weights(&vs, &path).unwrap();
            let (vs2, m2) = build(&cfg);
            load_weights(&vs2, &path).unwrap();
            let seq = sequences(3);
            let tm = cfg.is_time_aware().then(|| intervals(3));
            let a = m.feats(&seq, tm.as_ref(), false).unwrap();
            let b = m2.feats(&seq, tm.as_ref(), false).unwrap();
            assert_eq!(max_diff(&a, &b), 0.0, "{}", cfg.kind().as_str());
        }
    }

    #[test]
    fn mismatched_checkpoint_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let cfg = small_cfg(Backbone::Sasrec, None);
        let (vs, _m) = build(&cfg);
        save_weights(&vs, &path).unwrap();

        let mut bigger = cfg.clone();
        bigger.num_items = I + 5;
        let (vs2, _m2) = build(&bigger);
        let before = vs2.variables()["pos_emb.weight"].copy();
        let e = load_weights(&vs2, &path).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{msg}");
        assert!(msg.contains("`item_emb.weight`"), "{msg}");
        assert!(
            msg.contains("[21, 16]") && msg.contains("[26, 16]"),
            "{msg}"
        );
        assert_eq!(
            max_diff(&before, &vs2.variables()["pos_emb.weight"]),
            0.0,
            "partial load"
        );

        let (vs3, _m3) = build(&small_cfg(Backbone::Sasrec, Some(4)));
        let msg = load_weights(&vs3, &path).unwrap_err().to_string();
        assert!(
            msg.contains("`mhc_attention.0.alpha`") && msg.contains("missing"),
            "{msg}"
        );

        let (vs4, _m4) = build(&small_cfg(Backbone::Tisasrec, None));
        let msg = load_weights(&vs4, &path).unwrap_err().to_string();
        assert!(msg.contains("`abs_pos_K_emb.weight`"), "{msg}");

        let mut fewer = cfg.clone();
        fewer.num_blocks = 1;
        let (vs5, _m5) = build(&fewer);
        let msg = load_weights(&vs5, &path).unwrap_err().to_string();
        assert!(msg.contains("`attention_layernorms.1.bias`") && msg.contains("not a parameter"));
    }
}
