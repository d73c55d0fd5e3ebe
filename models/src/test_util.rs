//! Helpers shared by the unit tests.

use sasrec_shared::config::{Backbone, MhcConfig, ModelConfig};
use tch::{nn, Device, Kind, Tensor};

use crate::SeqRecModel;

/// Items, window, hidden size and interval buckets of the small test models.
pub const I: usize = 20;
pub const T: i64 = 8;
pub const C: usize = 16;
pub const K: usize = 5;

/// A small config: 2 blocks, 2 heads, dropout 0.2.
pub fn small_cfg(backbone: Backbone, mhc: Option<usize>) -> ModelConfig {
    ModelConfig {
        backbone,
        num_items: I,
        maxlen: T as usize,
        hidden_units: C,
        num_blocks: 2,
        num_heads: 2,
        dropout_rate: 0.2,
        norm_first: false,
        time_span: K,
        mhc: mhc.map(|n| MhcConfig {
            expansion_rate: n,
            ..MhcConfig::default()
        }),
    }
}

/// The four model kinds at the small size (mHC with n = 4).
pub fn all_kinds() -> Vec<ModelConfig> {
    vec![
        small_cfg(Backbone::Sasrec, None),
        small_cfg(Backbone::Tisasrec, None),
        small_cfg(Backbone::Sasrec, Some(4)),
        small_cfg(Backbone::Tisasrec, Some(4)),
    ]
}

/// A model in its own CPU VarStore.
pub fn build(cfg: &ModelConfig) -> (nn::VarStore, SeqRecModel) {
    let vs = nn::VarStore::new(Device::Cpu);
    let m = SeqRecModel::new(&vs.root(), cfg).unwrap();
    (vs, m)
}

/// Adds N(0, 0.1²) noise to every parameter so that no test relies on a special init (φ = 0,
/// zero biases, …).
pub fn perturb(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let noise = Tensor::randn_like(&v) * 0.1;
            let _ = v.g_add_(&noise);
        }
    });
}

/// Left-padded sequences (B, T): row b has `T − b` real items (at least 2).
pub fn sequences(b: i64) -> Tensor {
    let s = Tensor::randint_low(1, I as i64 + 1, [b, T], (Kind::Int64, Device::Cpu));
    for r in 0..b {
        let pad = r.min(T - 2);
        if pad > 0 {
            let _ = s.get(r).narrow(0, 0, pad).fill_(0);
        }
    }
    s
}

/// Random interval matrices (B, T, T) with values 0..=K.
pub fn intervals(b: i64) -> Tensor {
    Tensor::randint(K as i64 + 1, [b, T, T], (Kind::Int64, Device::Cpu))
}

/// Largest absolute difference.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}
