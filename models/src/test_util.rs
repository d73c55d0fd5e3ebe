//! Helpers shared by the unit tests of this crate and, behind the `test-util` feature, by the
//! tests of the crates that build on it (the export tests use [`small_kind`] and
//! [`random_model`]): the small model configurations, random inputs, and [`ShapeLog`].

use sasrec_shared::config::{
    Backbone, ItemFeaturesConfig, ItemRepr, MhcConfig, ModelConfig, TimeDropout,
};
use sasrec_shared::features::{
    EncodedFeatures, FeatureKind, FeatureSchema, SchemaColumn, TokenIds,
};
use tch::{nn, Device, Kind, Tensor};

use crate::init::Param;
use crate::model::SeqRecModel;
use crate::ops::{DType, Ops};
use crate::tch_ops::TchOps;

/// Items of the small test models (other crates' tests pick their own with
/// [`small_cfg_items`]).
pub const I: usize = 20;
/// Window (`maxlen`) of the small test models.
pub const T: i64 = 8;
/// Hidden size of the small test models.
pub const C: usize = 16;
/// Interval buckets (`time_span`) of the small test models.
pub const K: usize = 5;

/// A small config with [`I`] items: 2 blocks, 2 heads, dropout 0.2.
pub fn small_cfg(backbone: Backbone, mhc: Option<usize>) -> ModelConfig {
    small_cfg_items(backbone, mhc, I)
}

/// [`small_cfg`] with `num_items` items: window [`T`], hidden size [`C`], span [`K`], 2 blocks,
/// 2 heads, dropout 0.2 (inactive in inference), mHC with `mhc` streams when given.
pub fn small_cfg_items(backbone: Backbone, mhc: Option<usize>, num_items: usize) -> ModelConfig {
    ModelConfig {
        backbone,
        num_items,
        maxlen: T as usize,
        hidden_units: C,
        num_blocks: 2,
        num_heads: 2,
        dropout_rate: 0.2,
        norm_first: false,
        block_wiring: None,
        init: Default::default(),
        padding: Default::default(),
        time_span: K,
        mhc: mhc.map(|n| MhcConfig {
            expansion_rate: n,
            ..MhcConfig::default()
        }),
        time_dropout: TimeDropout::Table,
        item_features: None,
    }
}

/// The four model kinds by name, in the order of [`all_kinds`].
pub const KINDS: [&str; 4] = ["sasrec", "tisasrec", "sasrec-mhc", "tisasrec-mhc"];

/// The model kind `name` (one of [`KINDS`]) at the small size with `num_items` items (mHC with
/// n = 4).
pub fn small_kind(name: &str, num_items: usize) -> ModelConfig {
    let (backbone, mhc) = match name {
        "sasrec" => (Backbone::Sasrec, None),
        "tisasrec" => (Backbone::Tisasrec, None),
        "sasrec-mhc" => (Backbone::Sasrec, Some(4)),
        "tisasrec-mhc" => (Backbone::Tisasrec, Some(4)),
        _ => panic!("unknown kind {name}"),
    };
    small_cfg_items(backbone, mhc, num_items)
}

/// The four model kinds at the small size (mHC with n = 4).
pub fn all_kinds() -> Vec<ModelConfig> {
    KINDS.iter().map(|name| small_kind(name, I)).collect()
}

/// A schema of a multi column (3 values, width 2), a numeric and a dense (width 2) column.
pub fn features_schema() -> FeatureSchema {
    let col = |name: &str, kind, vocab: &[&str], width| SchemaColumn {
        name: name.into(),
        kind,
        vocab: vocab.iter().map(|s| s.to_string()).collect(),
        width,
        mean: 0.0,
        std: 1.0,
    };
    FeatureSchema {
        columns: vec![
            col("genres", FeatureKind::Multi, &["a", "b", "c"], 2),
            col("year", FeatureKind::Numeric, &[], 1),
            col("emb", FeatureKind::Dense, &[], 2),
        ],
    }
}

/// The encoded features of [`features_schema`] for `num_items` items: item i has genres
/// (i mod 4, (i + 1) mod 4; 0 = none), year i/10, vector (i, −i)/20.
pub fn encoded_features(num_items: usize) -> EncodedFeatures {
    let rows = num_items + 1;
    let mut ids = vec![0i64; rows * 2];
    let mut numeric = vec![0f32; rows * 3];
    for i in 1..rows {
        ids[2 * i] = (i % 4) as i64;
        ids[2 * i + 1] = ((i + 1) % 4) as i64;
        numeric[3 * i] = i as f32 / 10.0;
        numeric[3 * i + 1] = i as f32 / 20.0;
        numeric[3 * i + 2] = -(i as f32) / 20.0;
    }
    EncodedFeatures {
        tokens: vec![TokenIds { width: 2, ids }],
        numeric,
        numeric_width: 3,
    }
}

/// `cfg` with the columns of [`features_schema`] under `repr`.
pub fn with_features(cfg: &ModelConfig, repr: ItemRepr) -> ModelConfig {
    ModelConfig {
        item_features: Some(ItemFeaturesConfig {
            repr,
            schema: features_schema(),
        }),
        ..cfg.clone()
    }
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

/// A model with random weights: reference init under `seed`, then [`perturb`]ed, so that no
/// bias, gate or φ is trivially zero.
pub fn random_model(cfg: &ModelConfig, seed: i64) -> (nn::VarStore, SeqRecModel) {
    tch::manual_seed(seed);
    let (vs, m) = build(cfg);
    perturb(&vs);
    (vs, m)
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

/// [`TchOps`] that also records the shape of every tensor it returns, to assert
/// which tensors a formulation builds (not how long it takes).
#[derive(Debug, Default)]
pub struct ShapeLog {
    shapes: std::cell::RefCell<Vec<Vec<i64>>>,
}

impl ShapeLog {
    /// Every recorded shape, in call order.
    pub fn shapes(&self) -> Vec<Vec<i64>> {
        self.shapes.borrow().clone()
    }

    fn log(&self, t: Tensor) -> Tensor {
        self.shapes.borrow_mut().push(t.size());
        t
    }
}

macro_rules! logged {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> Tensor {
            self.log(TchOps.$name($($arg),*))
        })*
    };
}

impl Ops for ShapeLog {
    type T = Tensor;
    fn param(&self, p: &Param) -> Tensor {
        self.log(TchOps.param(p))
    }
    logged! {
        identity(x: &Tensor);
        gather_rows(table: &Tensor, ids: &Tensor, padding_idx: Option<i64>);
        range_of(x: &Tensor, dim: i64);
        reshape(x: &Tensor, shape: &[i64]);
        transpose(x: &Tensor, perm: &[i64]);
        unsqueeze(x: &Tensor, dim: i64);
        concat(xs: &[&Tensor], dim: i64);
        slice(x: &Tensor, dim: i64, start: i64, end: i64);
        cast(x: &Tensor, dtype: DType);
        add(a: &Tensor, b: &Tensor);
        sub(a: &Tensor, b: &Tensor);
        mul(a: &Tensor, b: &Tensor);
        div(a: &Tensor, b: &Tensor);
        constant_like(like: &Tensor, values: &[f64], shape: &[i64]);
        add_scalar(x: &Tensor, v: f64);
        mul_scalar(x: &Tensor, v: f64);
        sqrt(x: &Tensor);
        exp(x: &Tensor);
        relu(x: &Tensor);
        sigmoid(x: &Tensor);
        eq_scalar(x: &Tensor, v: i64);
        gt(a: &Tensor, b: &Tensor);
        not(x: &Tensor);
        masked_fill(x: &Tensor, mask: &Tensor, v: f64);
        sum(x: &Tensor, dim: i64, keepdim: bool);
        mean(x: &Tensor, dim: i64, keepdim: bool);
        max(x: &Tensor, dim: i64, keepdim: bool);
        take_along_last(x: &Tensor, idx: &Tensor);
        scatter_add_last(src: &Tensor, idx: &Tensor, buckets: i64);
        sinkhorn(logits: &Tensor, iters: usize);
        matmul(a: &Tensor, b: &Tensor);
        linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>);
        layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64);
        softmax(x: &Tensor, dim: i64);
        dropout(x: &Tensor, p: f64, train: bool);
    }
}
