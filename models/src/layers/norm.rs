//! LayerNorm with the references' `eps = 1e-8` (docs/MODELS.md, pitfall 11; torch and tch default to 1e-5).

use tch::nn;

use crate::init::{Param, ParamInit};
use crate::ops::Ops;

/// LayerNorm epsilon of pmixer's SASRec and TiSASRec.
pub const LN_EPS: f64 = 1e-8;

/// `LN(x) = (x − E[x]) / √(Var[x] + 1e-8) · γ + β` over the channel dimension; `weight` γ = 1,
/// `bias` β = 0 at init (torch `nn.LayerNorm(C, eps=1e-8)`).
#[derive(Debug)]
pub struct LayerNorm {
    weight: Param,
    bias: Param,
}

impl LayerNorm {
    /// Creates `{p}.weight` and `{p}.bias`, both (C).
    pub fn new(p: &nn::Path, c: i64) -> Self {
        Self {
            weight: Param::new(p, "weight", &[c], ParamInit::Const(1.0)),
            bias: Param::new(p, "bias", &[c], ParamInit::Const(0.0)),
        }
    }

    /// `LN(x)`, any leading shape: (…, C) → (…, C).
    pub fn forward<O: Ops>(&self, o: &O, x: &O::T) -> O::T {
        o.layer_norm(x, &o.param(&self.weight), &o.param(&self.bias), LN_EPS)
    }

    /// The parameters, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }
}
