//! A `model.safetensors` written here loads into the PyTorch reference module
//! (benches/reference/sasrec_torch.py: pmixer's structure and state_dict names) with
//! `safetensors.torch.load_file` + `load_state_dict(strict=True)` and gives the same features
//! within 1e-5, for Post-LN and Pre-LN SASRec with 2 heads.

use std::path::PathBuf;
use std::process::Command;

use sasrec_models::{save_weights, SeqRecModel};
use sasrec_shared::config::{Backbone, ModelConfig};
use tch::{nn, Device, Kind, Tensor};

fn python() -> String {
    std::env::var("SASREC_PYTHON")
        .expect("SASREC_PYTHON is not set: run ./scripts/setup.sh (it writes .cargo/config.toml)")
}

#[test]
fn sasrec_checkpoint_matches_pytorch_reference() {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/reference/sasrec_torch.py");
    for norm_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ModelConfig {
            backbone: Backbone::Sasrec,
            num_items: 50,
            maxlen: 12,
            hidden_units: 16,
            num_blocks: 2,
            num_heads: 2,
            dropout_rate: 0.2,
            norm_first,
            time_span: 0,
            mhc: None,
            time_dropout: Default::default(),
        };
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SeqRecModel::new(&vs.root(), &cfg).unwrap();
        // Perturb the zero-initialised biases and LayerNorm gains so they are exercised too.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.ends_with("bias") || name.contains("layernorm") {
                    let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.1));
                }
            }
        });
        let seq = Tensor::randint_low(1, 51, [5, 12], (Kind::Int64, Device::Cpu));
        let _ = seq.narrow(1, 0, 7).narrow(0, 0, 2).fill_(0); // two short, left-padded users
        let feats = model.feats(&seq, None, false).unwrap();
        let weights = dir.path().join("model.safetensors");
        save_weights(&vs, &weights).unwrap();
        let case = dir.path().join("case.safetensors");
        Tensor::write_safetensors(&[("seq", &seq), ("feats", &feats)], &case).unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, serde_json::to_string(&cfg).unwrap()).unwrap();
        let out = Command::new(python())
            .arg(&script)
            .arg("parity")
            .args([&weights, &case, &config])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "norm_first={norm_first}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(v["max_abs_err"].as_f64().unwrap() <= 1e-5, "{v}");
    }
}
