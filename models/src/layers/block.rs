//! One transformer block (attention sub-layer, then FFN sub-layer) and its residual wiring.
//!
//! The wiring is decided once, in the constructor, as a [`Residual`]: either a plain residual
//! with one of the three [`NormPlacement`]s of docs/MODELS.md §1.4, or manifold-constrained
//! hyper-connections (docs/MODELS.md §3.4). [`Block::forward`] matches on it once, one arm per
//! equation pair.

use sasrec_shared::config::{BlockWiring, ModelConfig};
use tch::nn;

use crate::init::{InitRules, Param};
use crate::layers::ffn::PointWiseFeedForward;
use crate::layers::norm::LayerNorm;
use crate::mhc::HyperConnection;
use crate::ops::Ops;
use crate::query::queries;

/// Where the LayerNorms sit in a plain residual block (docs/MODELS.md §1.4 step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `X ← LN_att(X + A(X, X))`, `X ← LN_ffn(X + FFN(X))` (pmixer SASRec default).
    Post,
    /// `X ← X + A(LN_att(X), LN_att(X))`, `X ← X + FFN(LN_ffn(X))` (`--norm_first`).
    Pre,
    /// `Q = LN_att(X)`, `X ← Q + A(Q, X)`, `Y = LN_ffn(X)`, `X ← Y + FFN(Y)`: only the query is
    /// normalised and the residual comes from the normalised Q (original SASRec and TiSASRec).
    Original,
}

impl From<BlockWiring> for NormPlacement {
    /// The placement of a `--block_wiring`.
    fn from(w: BlockWiring) -> Self {
        match w {
            BlockWiring::PostLn => Self::Post,
            BlockWiring::PreLn => Self::Pre,
            BlockWiring::Original => Self::Original,
        }
    }
}

/// The residual connection of a block.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per block; boxing would only add an indirection
pub enum Residual {
    /// A single stream with one of the LayerNorm placements.
    Plain(NormPlacement),
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
    /// ignored: mHC sub-layers are always Pre-LN), else a plain residual with `placement`.
    pub fn new(
        root: &nn::Path,
        i: usize,
        c: i64,
        cfg: &ModelConfig,
        placement: NormPlacement,
    ) -> Self {
        match &cfg.mhc {
            Some(m) => Self::Mhc {
                attention: HyperConnection::new(&(root / "mhc_attention" / i), 2 * i, c, m),
                ffn: HyperConnection::new(&(root / "mhc_ffn" / i), 2 * i + 1, c, m),
            },
            None => Self::Plain(placement),
        }
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
                Block::new(p, i, c, attn, ffn, Residual::new(p, i, c, cfg, placement))
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
            Residual::Plain(NormPlacement::Pre) => {
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
        if let Residual::Mhc { attention, ffn } = &self.residual {
            v.extend(attention.params());
            v.extend(ffn.params());
        }
        v
    }
}
