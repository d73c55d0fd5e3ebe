//! A `model.safetensors` written here loads into an independent PyTorch implementation with
//! `safetensors.torch.load_file` + `load_state_dict(strict=True)` and gives the same features
//! (`SeqRecModel::feats`, eval mode, every position including padded ones) within 1e-5 max
//! absolute error. Kinds covered, each with 2 blocks and 2 heads:
//!
//! * SASRec, Post-LN and Pre-LN (benches/reference/sasrec_torch.py: pmixer's structure and
//!   state_dict names);
//! * SASRec + mHC, Sinkhorn-Knopp H_res and mHC-lite (sasrec_torch.py with the hyper-connections
//!   of tisasrec_torch.py);
//! * TiSASRec, the reference wiring (`norm_first = false`) and Pre-LN (`norm_first = true`)
//!   (benches/reference/tisasrec_torch.py: pmixer/TiSASRec.pytorch's structure and names, the
//!   literal dense (B, T, T, C) interval terms of docs/MODELS.md §2.5);
//! * TiSASRec + mHC, Sinkhorn-Knopp H_res and mHC-lite (tisasrec_torch.py: mHC written from
//!   docs/MODELS.md §3.3–3.9, Sinkhorn in its matrix form).
//!
//! The PyTorch side also runs in float64; that error (`max_abs_err_f64`) must be within 1e-5 too.
//! The Python interpreter is `SASREC_PYTHON` (set by scripts/setup.sh in .cargo/config.toml);
//! without it, or without torch and safetensors there, the tests fail with the reason.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use sasrec_models::{save_weights, SeqRecModel};
use sasrec_shared::config::{
    Backbone, BlockWiring, HresProjection, InitScheme, MhcConfig, ModelConfig, Padding,
};
use tch::{nn, Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-5;
const B: i64 = 5;
const T: i64 = 12;
const TIME_SPAN: i64 = 8;

fn python() -> String {
    std::env::var("SASREC_PYTHON")
        .expect("SASREC_PYTHON is not set: run ./scripts/setup.sh (it writes .cargo/config.toml)")
}

/// The small configuration of every case: I = 50, T = 12, C = 16, 2 blocks, 2 heads, k = 8.
fn config(backbone: Backbone, norm_first: bool, mhc: Option<HresProjection>) -> ModelConfig {
    ModelConfig {
        backbone,
        num_items: 50,
        maxlen: T as usize,
        hidden_units: 16,
        num_blocks: 2,
        num_heads: 2,
        dropout_rate: 0.2,
        norm_first,
        block_wiring: None,
        init: Default::default(),
        padding: Default::default(),
        time_span: TIME_SPAN as usize,
        mhc: mhc.map(|h_res| MhcConfig {
            expansion_rate: 4,
            sinkhorn_iter: 20,
            h_res,
            ..MhcConfig::default()
        }),
        time_dropout: Default::default(),
        item_features: None,
    }
}

/// Perturbs the parameters that start at a constant so that they are exercised too: biases and
/// LayerNorms get N(0, 0.1²) noise (this includes the mHC static biases `mhc_*.bias`), mHC's φ
/// (initialised to 0) N(0, 0.05²), and the gates α (0.01) are set to 1 + N(0, 0.1²), so that
/// the dynamic part α·x⃗φ/r of every coefficient is of order 0.1–1.
fn perturb(vs: &nn::VarStore) {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0)); // a HashMap: fix the order of the draws
    tch::no_grad(|| {
        for (name, mut t) in vars {
            if name.ends_with("bias") || name.contains("layernorm") {
                let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.1));
            } else if name.ends_with(".phi") {
                let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.05));
            } else if name.ends_with(".alpha") {
                t.copy_(&(Tensor::randn_like(&t) * 0.1 + 1.0));
            }
        }
    });
}

/// Five users, the first two left-padded (5 items and 1 item), ids in 1..=50.
fn sequences() -> Tensor {
    let seq = Tensor::randint_low(1, 51, [B, T], (Kind::Int64, Device::Cpu));
    let _ = seq.narrow(1, 0, 7).narrow(0, 0, 2).fill_(0);
    let _ = seq.narrow(1, 0, T - 1).narrow(0, 1, 1).fill_(0);
    seq
}

/// Random interval buckets in 0..=k: (B, T, T) int64. Not symmetric (real relation matrices
/// are), so that the test also pins which index of R is the query (row i) and which the key.
fn time_matrix() -> Tensor {
    Tensor::randint_low(0, TIME_SPAN + 1, [B, T, T], (Kind::Int64, Device::Cpu))
}

/// libtorch's generator is global and the tests run in parallel: hold this while seeding and
/// drawing, so that every case gets the same weights and inputs on every run.
static RNG: Mutex<()> = Mutex::new(());

/// `python benches/reference/SCRIPT ARGS…`: its stdout as JSON; the run must succeed.
fn run_reference(script: &str, args: &[&std::ffi::OsStr], label: &str) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/reference")
        .join(script);
    let py = python();
    let out = Command::new(&py)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{label}: cannot run {py} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{label}: {} failed ({}): {stdout} {stderr}",
        script.display(),
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{label}: no JSON on stdout ({e}): {stdout} {stderr}"))
}

/// Builds `cfg` under a fixed seed, perturbs it, computes the features of a random batch and
/// checks them against the PyTorch reference of the backbone. Returns the script's JSON.
fn check_against_pytorch(cfg: &ModelConfig, label: &str) -> serde_json::Value {
    let script = match cfg.backbone {
        Backbone::Sasrec => "sasrec_torch.py",
        Backbone::Tisasrec => "tisasrec_torch.py",
    };
    let dir = tempfile::tempdir().unwrap();
    let (vs, model, seq, tm) = {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SeqRecModel::new(&vs.root(), cfg).unwrap();
        perturb(&vs);
        let seq = sequences();
        let tm = cfg.is_time_aware().then(time_matrix);
        (vs, model, seq, tm)
    };
    let feats = model.feats(&seq, tm.as_ref(), false).unwrap();
    assert_eq!(feats.size(), [B, T, 16], "{label}");

    let weights = dir.path().join("model.safetensors");
    save_weights(&vs, &weights).unwrap();
    let case = dir.path().join("case.safetensors");
    let mut tensors = vec![("seq", &seq), ("feats", &feats)];
    if let Some(tm) = &tm {
        tensors.push(("tm", tm));
    }
    Tensor::write_safetensors(&tensors, &case).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, serde_json::to_string(cfg).unwrap()).unwrap();

    let args = [
        "parity".as_ref(),
        weights.as_os_str(),
        case.as_os_str(),
        config.as_os_str(),
    ];
    let v = run_reference(script, &args, label);
    eprintln!("{label}: {v}");
    let err = v["max_abs_err"]
        .as_f64()
        .unwrap_or_else(|| panic!("{label}: no max_abs_err in {v}"));
    assert!(err <= TOLERANCE, "{label}: {v}");
    if let Some(err64) = v.get("max_abs_err_f64") {
        assert!(err64.as_f64().unwrap() <= TOLERANCE, "{label}: {v}");
    }

    if cfg.mhc.is_some() {
        // The comparison must see the dynamic coefficients: without φ the features change.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.ends_with(".phi") {
                    let _ = t.zero_();
                }
            }
        });
        let static_only = model.feats(&seq, tm.as_ref(), false).unwrap();
        let d = (&static_only - &feats).abs().max().double_value(&[]);
        assert!(d > 1e-3, "{label}: φ changes the features by only {d}");
    }
    v
}

/// A plain backbone in each residual wiring its reference writes out (`--block_wiring`).
fn check_plain(backbone: Backbone, label: &str, wirings: &[BlockWiring]) {
    for &w in wirings {
        let mut cfg = config(backbone, w == BlockWiring::PreLn, None);
        cfg.block_wiring = Some(w);
        check_against_pytorch(&cfg, &format!("{label} {}", w.as_str()));
    }
    // configs written before --block_wiring: norm_first and the backbone decide
    for norm_first in [false, true] {
        let cfg = config(backbone, norm_first, None);
        check_against_pytorch(&cfg, &format!("{label} norm_first={norm_first}"));
    }
}

/// A backbone with mHC, with both H_res projections (Sinkhorn-Knopp and mHC-lite).
fn check_mhc(backbone: Backbone, label: &str) {
    for h_res in [HresProjection::Sinkhorn, HresProjection::Lite] {
        let cfg = config(backbone, false, Some(h_res));
        check_against_pytorch(&cfg, &format!("{label} {}", h_res.as_str()));
    }
}

#[test]
fn sasrec_checkpoint_matches_pytorch_reference() {
    use BlockWiring::*;
    check_plain(
        Backbone::Sasrec,
        "sasrec",
        &[PostLn, PreLn, Original, Gated],
    );
}

/// `--padding masked` and `right` (padded keys blocked; positions from the newest or the oldest
/// item) in the original and Pre-LN wirings and with mHC, on rows with 0 to T − 1 padded
/// columns.
#[test]
fn sasrec_padding_modes_match_pytorch_reference() {
    for padding in [Padding::Masked, Padding::Right] {
        for w in [BlockWiring::Original, BlockWiring::PreLn] {
            let mut cfg = config(Backbone::Sasrec, w == BlockWiring::PreLn, None);
            (cfg.block_wiring, cfg.padding) = (Some(w), padding);
            check_against_pytorch(&cfg, &format!("sasrec {} {}", w.as_str(), padding.as_str()));
        }
        let mut cfg = config(Backbone::Sasrec, false, Some(HresProjection::Sinkhorn));
        cfg.padding = padding;
        check_against_pytorch(&cfg, &format!("sasrec-mhc {}", padding.as_str()));
    }
}

#[test]
fn sasrec_mhc_checkpoint_matches_pytorch_reference() {
    check_mhc(Backbone::Sasrec, "sasrec-mhc");
}

#[test]
fn tisasrec_checkpoint_matches_pytorch_reference() {
    check_plain(
        Backbone::Tisasrec,
        "tisasrec",
        &[BlockWiring::Original, BlockWiring::PreLn],
    );
}

#[test]
fn tisasrec_mhc_checkpoint_matches_pytorch_reference() {
    check_mhc(Backbone::Tisasrec, "tisasrec-mhc");
}

/// `--init normal_0.02` draws what SASRec+'s `_init_weights` draws (sasrec_torch.py `init`): the
/// same tensors are all zero, LayerNorm weights are 1, padding rows are 0, and every drawn
/// tensor's std is within 5% of the reference's (C = 64, I = 2000, T = 200: at least 4,096
/// entries each;
/// N(0, 0.02²) for embeddings and Linear/Conv weights, Xavier-uniform √(1/(2C)) = 0.088 for the
/// fused in-projection).
#[test]
fn normal_init_matches_sasrec_plus() {
    let mut cfg = config(Backbone::Sasrec, false, None);
    (cfg.hidden_units, cfg.num_items, cfg.num_heads, cfg.maxlen) = (64, 2000, 1, 200);
    cfg.block_wiring = Some(BlockWiring::Original);
    cfg.init = InitScheme::Normal002;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, serde_json::to_string(&cfg).unwrap()).unwrap();
    let reference = run_reference(
        "sasrec_torch.py",
        &["init".as_ref(), config.as_os_str(), "3".as_ref()],
        "init",
    );
    let vs = nn::VarStore::new(Device::Cpu);
    {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        SeqRecModel::new(&vs.root(), &cfg).unwrap();
    }
    let ours = vs.variables();
    let want = reference.as_object().unwrap();
    assert_eq!(ours.len(), want.len(), "tensor count");
    for (name, r) in want {
        let t = ours.get(name).unwrap_or_else(|| panic!("no {name} here"));
        let rows = match name.as_str() {
            "item_emb.weight" | "pos_emb.weight" => t.narrow(0, 1, t.size()[0] - 1),
            _ => t.shallow_clone(),
        };
        let zero = t.abs().max().double_value(&[]) == 0.0;
        assert_eq!(zero, r["zero"].as_bool().unwrap(), "{name}: all zero");
        let row0_zero = t.get(0).abs().max().double_value(&[]) == 0.0;
        assert_eq!(
            row0_zero,
            r["row0_zero"].as_bool().unwrap(),
            "{name}: row 0"
        );
        let (std, want_std) = (rows.std(true).double_value(&[]), r["std"].as_f64().unwrap());
        if want_std == 0.0 {
            let mean = rows.mean(Kind::Float).double_value(&[]);
            assert_eq!((std, mean), (0.0, r["mean"].as_f64().unwrap()), "{name}");
        } else {
            assert!(
                (std / want_std - 1.0).abs() < 0.05,
                "{name}: std {std} vs {want_std}"
            );
        }
    }
}
