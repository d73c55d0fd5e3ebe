//! One transformer block (attention sub-layer, then FFN sub-layer) and its residual wiring.
//!
//! The wiring is decided once, in the constructor, as a [`Residual`]: a plain residual with one
//! of the three LayerNorm placements of docs/MODELS.md §1.4, LiGR's gated residual (§1.4), or
//! manifold-constrained hyper-connections (docs/MODELS.md §3.4). [`Block::forward`] matches on it once, one arm per
//! equation pair.

use sasrec_shared::config::{BlockWiring, ModelConfig};
use tch::nn;

use crate::init::{InitRules, Param};
use crate::layers::ffn::PointWiseFeedForward;
use crate::layers::norm::LayerNorm;
use crate::mhc::HyperConnection;
use crate::ops::Ops;
use crate::query::queries;

/// Where the LayerNorms sit in a single-stream block, and whether its residual branches are
/// gated (docs/MODELS.md §1.4 step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `X ← LN_att(X + A(X, X))`, `X ← LN_ffn(X + FFN(X))` (pmixer SASRec default).
    Post,
    /// `X ← X + A(LN_att(X), LN_att(X))`, `X ← X + FFN(LN_ffn(X))` (`--norm_first`).
    Pre,
    /// `Q = LN_att(X)`, `X ← Q + A(Q, X)`, `Y = LN_ffn(X)`, `X ← Y + FFN(Y)`: only the query is
    /// normalised and the residual comes from the normalised Q (original SASRec and TiSASRec).
    Original,
    /// Pre-LN with a learned gate on each branch: `X ← X + σ(W_a X + b_a) ⊙ A(LN_att(X))`,
    /// `X ← X + σ(W_f X + b_f) ⊙ FFN(LN_ffn(X))` (LiGR, arXiv 2502.03417).
    Gated,
}

impl From<BlockWiring> for NormPlacement {
    /// The placement of a `--block_wiring`.
    fn from(w: BlockWiring) -> Self {
        match w {
            BlockWiring::PostLn => Self::Post,
            BlockWiring::PreLn => Self::Pre,
            BlockWiring::Original => Self::Original,
            BlockWiring::Gated => Self::Gated,
        }
    }
}

/// The residual connection of a block.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per block; boxing would only add an indirection
pub enum Residual {
    /// A single stream with one of the ungated LayerNorm placements.
    Plain(NormPlacement),
    /// A single Pre-LN stream whose two branches are scaled by learned gates.
    Gated {
        /// Gate of the attention branch (`gate_attention.{i}`).
        attention: Gate,
        /// Gate of the FFN branch (`gate_ffn.{i}`).
        ffn: Gate,
    },
    /// n residual streams mixed by one mHC module per sub-layer (Pre-LN inside the sub-layers).
    Mhc {
        /// Hyper-connection around the attention sub-layer (`mhc_attention.{i}`).
        attention: HyperConnection,
        /// Hyper-connection around the FFN sub-layer (`mhc_ffn.{i}`).
        ffn: HyperConnection,
    },
}

impl Residual {
    /// The residual of block `i`: mHC modules `mhc_attention.{i}` (sub-layer 2i) and
    /// `mhc_ffn.{i}` (sub-layer 2i+1) under `root` when `cfg.mhc` is set (then `placement` is
    /// ignored: mHC sub-layers are always Pre-LN), else gates `gate_attention.{i}` and
    /// `gate_ffn.{i}` drawn by `init` for [`NormPlacement::Gated`], else a plain residual.
    pub fn new(
        root: &nn::Path,
        i: usize,
        c: i64,
        cfg: &ModelConfig,
        placement: NormPlacement,
        init: &InitRules,
    ) -> Self {
        match (&cfg.mhc, placement) {
            (Some(m), _) => Self::Mhc {
                attention: HyperConnection::new(&(root / "mhc_attention" / i), 2 * i, c, m),
                ffn: HyperConnection::new(&(root / "mhc_ffn" / i), 2 * i + 1, c, m),
            },
            (None, NormPlacement::Gated) => Self::Gated {
                attention: Gate::new(&(root / "gate_attention" / i), c, init),
                ffn: Gate::new(&(root / "gate_ffn" / i), c, init),
            },
            (None, placement) => Self::Plain(placement),
        }
    }
}

/// LiGR's residual gate `g(x) = σ(W x + b)` (arXiv 2502.03417; RecTools' `LiGRLayer`
/// `gating_linear_*`): per position and channel, from the block's unnormalised input.
#[derive(Debug)]
pub struct Gate {
    /// `{p}.weight` (C, C), drawn as the other Linear weights.
    w: Param,
    /// `{p}.bias` (C).
    b: Param,
}

impl Gate {
    /// Creates `{p}.weight` by `init.weight` and `{p}.bias` by `init.bias(C)`.
    pub fn new(p: &nn::Path, c: i64, init: &InitRules) -> Self {
        Self {
            w: Param::new(p, "weight", &[c, c], init.weight.clone()),
            b: Param::new(p, "bias", &[c], init.bias(c)),
        }
    }

    /// `x ← x + g(x) ⊙ f` for the branch output `f`: (B, T, C) → (B, T, C).
    pub fn add_gated<O: Ops>(&self, o: &O, x: &O::T, f: &O::T) -> O::T {
        let g = o.sigmoid(&o.linear(x, &o.param(&self.w), Some(&o.param(&self.b))));
        o.add(x, &o.mul(&g, f))
    }

    /// The parameters, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        vec![&self.w, &self.b]
    }
}

/// A transformer block over an attention module `A` (SASRec's MHA or TiSASRec's time-aware one).
///
/// Parameters `attention_layernorms.{i}`, `attention_layers.{i}`, `forward_layernorms.{i}`,
/// `forward_layers.{i}` (the reference state-dict layout, shared by both backbones), plus
/// `mhc_attention.{i}` and `mhc_ffn.{i}` in mHC models.
#[derive(Debug)]
pub struct Block<A> {
    /// `attention_layernorms.{i}`.
    pub attn_norm: LayerNorm,
    /// `attention_layers.{i}`.
    pub attn: A,
    /// `forward_layernorms.{i}`.
    pub ffn_norm: LayerNorm,
    /// `forward_layers.{i}`.
    pub ffn: PointWiseFeedForward,
    /// The residual wiring.
    pub residual: Residual,
}

impl<A> Block<A> {
    /// Assembles block `i`: the norms and FFN are created under `root`, the attention module is
    /// built by the caller under `attention_layers.{i}`.
    pub fn new(
        root: &nn::Path,
        i: usize,
        c: i64,
        attn: A,
        ffn: PointWiseFeedForward,
        residual: Residual,
    ) -> Self {
        Self {
            attn_norm: LayerNorm::new(&(root / "attention_layernorms" / i), c),
            attn,
            ffn_norm: LayerNorm::new(&(root / "forward_layernorms" / i), c),
            ffn,
            residual,
        }
    }

    /// The `cfg.num_blocks` blocks of a backbone under `p`, the state-dict layout both backbones
    /// share: block `i` gets the attention module `attention(attention_layers.{i}, C, heads,
    /// dropout, init)`, the FFN `forward_layers.{i}` initialised by `init`, and the residual of
    /// [`Residual::new`] with `placement` (parameters created in that order).
    pub fn stack(
        p: &nn::Path,
        cfg: &ModelConfig,
        placement: NormPlacement,
        init: &InitRules,
        attention: impl Fn(&nn::Path, i64, i64, f64, &InitRules) -> A,
    ) -> Vec<Self> {
        let c = cfg.hidden_units as i64;
        (0..cfg.num_blocks)
            .map(|i| {
                let h = cfg.num_heads as i64;
                let attn_p = p / "attention_layers" / i;
                let attn = attention(&attn_p, c, h, cfg.dropout_rate, init);
                let ffn_p = p / "forward_layers" / i;
                let ffn = PointWiseFeedForward::new(&ffn_p, c, cfg.dropout_rate, init);
                let residual = Residual::new(p, i, c, cfg, placement, init);
                Block::new(p, i, c, attn, ffn, residual)
            })
            .collect()
    }

    /// One block. `x` is (B, T, C) for a plain residual and (B, T, n, C) for mHC; `attend(a, q,
    /// kv)` runs the attention module with queries `q` (B, Tq, C) over keys/values `kv`
    /// (B, T, C). With `last_only`, only the last position is queried and the result has
    /// T = 1.
    pub fn forward<O: Ops>(
        &self,
        o: &O,
        x: &O::T,
        attend: impl Fn(&A, &O::T, &O::T) -> O::T,
        last_only: bool,
        train: bool,
    ) -> O::T {
        match &self.residual {
            Residual::Plain(NormPlacement::Post) => {
                let q = queries(o, x, last_only); // (B, Tq, C)
                let x = self
                    .attn_norm
                    .forward(o, &o.add(&q, &attend(&self.attn, &q, x)));
                let f = self.ffn.forward(o, &x, train); // (B, Tq, C)
                self.ffn_norm.forward(o, &o.add(&x, &f))
            }
            // A plain Gated placement is never built (`Residual::new` gives it its gates).
            Residual::Plain(NormPlacement::Pre | NormPlacement::Gated) => {
                let h = self.attn_norm.forward(o, x); // (B, T, C)
                let hq = queries(o, &h, last_only); // (B, Tq, C)
                let x = o.add(&queries(o, x, last_only), &attend(&self.attn, &hq, &h));
                let f = self.ffn.forward(o, &self.ffn_norm.forward(o, &x), train);
                o.add(&x, &f) // (B, Tq, C)
            }
            Residual::Plain(NormPlacement::Original) => {
                let q = queries(o, &self.attn_norm.forward(o, x), last_only); // (B, Tq, C)
                let x = o.add(&q, &attend(&self.attn, &q, x)); // K, V from the unnormalised X
                let y = self.ffn_norm.forward(o, &x); // (B, Tq, C)
                o.add(&y, &self.ffn.forward(o, &y, train))
            }
            Residual::Gated { attention, ffn } => {
                let h = self.attn_norm.forward(o, x); // (B, T, C)
                let a = attend(&self.attn, &queries(o, &h, last_only), &h); // (B, Tq, C)
                let x = attention.add_gated(o, &queries(o, x, last_only), &a);
                let f = self.ffn.forward(o, &self.ffn_norm.forward(o, &x), train);
                ffn.add_gated(o, &x, &f) // (B, Tq, C)
            }
            Residual::Mhc { attention, ffn } => {
                // F_att(u) = A(LN(u), LN(u)), F_ffn(u) = FFN(LN(u)): own pre-norm, no residual.
                let f_att = |u: &O::T| {
                    let h = self.attn_norm.forward(o, u); // (B, T, C)
                    attend(&self.attn, &queries(o, &h, last_only), &h) // (B, Tq, C)
                };
                let x = attention.forward(o, x, f_att, last_only); // (B, Tq, n, C)
                let f_ffn = |u: &O::T| self.ffn.forward(o, &self.ffn_norm.forward(o, u), train);
                ffn.forward(o, &x, f_ffn, false) // (B, Tq, n, C)
            }
        }
    }

    /// Parameters of the norms, the FFN and the mHC modules (the attention module's are
    /// listed by the model, which knows its type).
    pub fn own_params(&self) -> Vec<&Param> {
        let mut v = self.attn_norm.params();
        v.extend(self.ffn_norm.params());
        v.extend(self.ffn.params());
        match &self.residual {
            Residual::Mhc { attention, ffn } => {
                v.extend(attention.params());
                v.extend(ffn.params());
            }
            Residual::Gated { attention, ffn } => {
                v.extend(attention.params());
                v.extend(ffn.params());
            }
            Residual::Plain(_) => {}
        }
        v
    }
}
