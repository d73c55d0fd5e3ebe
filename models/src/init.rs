//! Named parameters and their reference initialisation (docs/MODELS.md §1.3, §2.5, §3.6).
//!
//! Every parameter is a [`Param`]: a VarStore variable together with its state-dict name and
//! the rule that initialises it. Constructors create parameters already initialised;
//! [`Param::reinit`] (called for every parameter by `SeqRecModel::init_weights`) draws them
//! again, e.g. after the training loop has seeded libtorch's generator.
//!
//! The rules replicate the references:
//! * pmixer SASRec `main.py`: `xavier_normal_` on every ≥2-D tensor (torch fans, so the fused
//!   `in_proj_weight` (3C, C) gets std √(2/(C+3C)) = √(1/(2C)) and a conv weight (C, C, 1) gets
//!   std √(1/C)); 1-D tensors keep their constructor defaults (LayerNorm 1/0, MHA biases 0,
//!   conv biases U(±1/√C)); rows 0 of `item_emb` and `pos_emb` are then zeroed;
//! * pmixer TiSASRec: `xavier_uniform_` on every ≥2-D tensor (Linear/conv biases keep
//!   U(±1/√fan_in)). See `tisasrec.rs` for the row-0 choice;
//! * mHC: φ = 0, identity-like static biases, gates α = `init_gate` (docs/MODELS.md §3.6);
//! * `--init normal_0.02` (SASRec+, RecBole, GPT-2): N(0, 0.02²) on embeddings and Linear/Conv1d
//!   weights (the attention output projection is a Linear), their biases 0; the fused
//!   in-projection is not a Linear and keeps torch's Xavier-uniform. [`InitRules`] holds either.

use sasrec_shared::config::{Backbone, InitScheme};
use tch::{nn, Tensor};

/// How a parameter is initialised.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamInit {
    /// Glorot normal, std = √(2/(fan_in + fan_out)), torch fans (`fan_in = size(1)·receptive`,
    /// `fan_out = size(0)·receptive`).
    XavierNormal,
    /// Glorot uniform, U(±√(6/(fan_in + fan_out))), torch fans.
    XavierUniform,
    /// U(lo, up) (torch's default Linear/Conv bias: ±1/√fan_in).
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        up: f64,
    },
    /// N(0, std²).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Every entry equal to the constant.
    Const(f64),
    /// Explicit values (e.g. the mHC static biases), copied in.
    Values(Vec<f64>),
}

/// A named, trainable parameter.
///
/// `name` is the full state-dict key (`attention_layers.0.in_proj_weight`); `padding_idx` marks
/// an embedding row that is kept at zero and receives no gradient (torch `padding_idx`).
#[derive(Debug)]
pub struct Param {
    name: String,
    tensor: Tensor,
    init: ParamInit,
    padding_idx: Option<i64>,
}

impl Param {
    /// Creates the variable `name` under `p` with shape `dims` and initialises it by `init`.
    pub fn new(p: &nn::Path, name: &str, dims: &[i64], init: ParamInit) -> Self {
        Self::embedding(p, name, dims, init, None)
    }

    /// Like [`Param::new`] for an embedding table whose row `padding_idx` is zero and gets no
    /// gradient.
    pub fn embedding(
        p: &nn::Path,
        name: &str,
        dims: &[i64],
        init: ParamInit,
        padding_idx: Option<i64>,
    ) -> Self {
        let tensor = p.zeros(name, dims);
        let param = Self {
            name: p.path(name),
            tensor,
            init,
            padding_idx,
        };
        param.reinit();
        param
    }

    /// A buffer under `p`: a tensor of the network's state that is not trained (torch
    /// `register_buffer`). It is not a VarStore variable, so neither optimised nor saved with
    /// the weights; [`Param::reinit`] leaves it alone.
    pub fn buffer(p: &nn::Path, name: &str, tensor: Tensor) -> Self {
        Self {
            name: p.path(name),
            tensor,
            init: ParamInit::Values(Vec::new()),
            padding_idx: None,
        }
    }

    /// Full state-dict name, e.g. `forward_layers.0.conv1.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying variable (shares storage with the VarStore).
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The padding row, if this is an embedding table with `padding_idx`.
    pub fn padding_idx(&self) -> Option<i64> {
        self.padding_idx
    }

    /// Number of scalar entries.
    pub fn numel(&self) -> i64 {
        self.tensor.size().iter().product()
    }

    /// `(fan_in, fan_out)` as torch's `_calculate_fan_in_and_fan_out` computes them.
    pub fn fans(&self) -> (f64, f64) {
        let s = self.tensor.size();
        let receptive: i64 = s.iter().skip(2).product();
        let fan_in = s.get(1).copied().unwrap_or(1) * receptive;
        let fan_out = s[0] * receptive;
        (fan_in as f64, fan_out as f64)
    }

    /// Draws the parameter again from its rule and re-zeroes the padding row.
    pub fn reinit(&self) {
        let (fan_in, fan_out) = self.fans();
        let t = &self.tensor;
        tch::no_grad(|| {
            let mut t = t.shallow_clone();
            match &self.init {
                ParamInit::XavierNormal => {
                    let std = (2.0 / (fan_in + fan_out)).sqrt();
                    let _ = t.normal_(0.0, std);
                }
                ParamInit::XavierUniform => {
                    let a = (6.0 / (fan_in + fan_out)).sqrt();
                    let _ = t.uniform_(-a, a);
                }
                ParamInit::Normal { std } => {
                    let _ = t.normal_(0.0, *std);
                }
                ParamInit::Uniform { lo, up } => {
                    let _ = t.uniform_(*lo, *up);
                }
                ParamInit::Const(v) => {
                    let _ = t.fill_(*v);
                }
                ParamInit::Values(v) => {
                    let src = Tensor::from_slice(v)
                        .to_kind(t.kind())
                        .to_device(t.device())
                        .reshape(t.size());
                    t.copy_(&src);
                }
            }
            if let Some(row) = self.padding_idx {
                let _ = t.get(row).zero_();
            }
        });
    }
}

/// Default bias of a torch `Linear`/`Conv1d` with `fan_in` inputs: U(±1/√fan_in).
pub fn torch_bias(fan_in: i64) -> ParamInit {
    let bound = 1.0 / (fan_in as f64).sqrt();
    ParamInit::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// How a network draws each kind of tensor (docs/MODELS.md §1.3): the `--init` scheme resolved
/// for a backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct InitRules {
    /// Embedding tables: items, positions, intervals, feature vocabularies.
    pub embedding: ParamInit,
    /// Linear and 1×1-convolution weights, the attention output projection, feature projections.
    pub weight: ParamInit,
    /// The fused (3C, C) attention in-projection `in_proj_weight`.
    pub in_proj: ParamInit,
    /// Linear and convolution biases: torch's U(±1/√fan_in) when `true`, else 0.
    torch_biases: bool,
}

impl InitRules {
    /// `scheme` for `backbone`: pmixer draws SASRec Xavier-normal and TiSASRec Xavier-uniform
    /// with torch's biases; `normal_0.02` is the same for both.
    pub fn new(scheme: InitScheme, backbone: Backbone) -> Self {
        let xavier = match backbone {
            Backbone::Sasrec => ParamInit::XavierNormal,
            Backbone::Tisasrec => ParamInit::XavierUniform,
        };
        match scheme {
            InitScheme::Pmixer => Self {
                embedding: xavier.clone(),
                weight: xavier.clone(),
                in_proj: xavier,
                torch_biases: true,
            },
            InitScheme::Normal002 => Self {
                embedding: ParamInit::Normal { std: 0.02 },
                weight: ParamInit::Normal { std: 0.02 },
                in_proj: ParamInit::XavierUniform,
                torch_biases: false,
            },
        }
    }

    /// The bias of a Linear or convolution with `fan_in` inputs.
    pub fn bias(&self, fan_in: i64) -> ParamInit {
        if self.torch_biases {
            torch_bias(fan_in)
        } else {
            ParamInit::Const(0.0)
        }
    }
}
