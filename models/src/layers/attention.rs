//! Causal multi-head attention: one core and two thin wrappers.
//!
//! [`attention_core`] does everything after the projections: scores → optional interval term →
//! scale → mask → softmax → dropout → weighted sum plus optional interval values. Heads live in
//! a (B, h, T, dh) layout: head `i` owns channels `i·dh .. (i+1)·dh`, which is what both torch's
//! `MultiheadAttention` and TiSASRec's head-major batch stacking compute (docs/MODELS.md, pitfall 8).
//!
//! * [`MultiHeadSelfAttention`]: SASRec, `torch.nn.MultiheadAttention` with the fused
//!   `in_proj_weight` (3C, C) and `out_proj` (docs/MODELS.md §1.4 step 5).
//! * [`TimeAwareAttention`]: TiSASRec, `Q_w`/`K_w`/`V_w` with bias and no output projection
//!   (docs/MODELS.md §2.5).

use tch::nn;

use crate::init::{InitRules, Param, ParamInit};
use crate::ops::Ops;

/// Fill value for blocked scores, −2³²+1 as in TiSASRec (docs/MODELS.md, pitfall 9): finite, so a fully masked
/// row gives a uniform distribution instead of NaN. [`Ops::masked_fill`] clamps it in fp16.
pub const MASK_VALUE: f64 = -4_294_967_295.0;

/// The head geometry and attention dropout both wrappers share: C channels in `h` heads of
/// `dh = C / h` channels each.
#[derive(Debug, Clone, Copy)]
struct Heads {
    c: i64,
    h: i64,
    dropout: f64,
}

impl Heads {
    fn new(c: i64, h: i64, dropout: f64) -> Self {
        Self { c, h, dropout }
    }

    /// Channels per head.
    fn dh(&self) -> i64 {
        self.c / self.h
    }

    /// (B, T, C) → (B, h, T, dh).
    fn split<O: Ops>(&self, o: &O, x: &O::T) -> O::T {
        split_heads(o, x, self.h, self.dh())
    }

    /// [`attention_core`] on head-split `q`, `k`, `v` with this dropout, heads merged back:
    /// (B, Tq, C).
    fn attend<O: Ops>(
        &self,
        o: &O,
        (q, k, v): (&O::T, &O::T, &O::T),
        rel: Option<&Relation<O::T>>,
        masks: &[&O::T],
        train: bool,
    ) -> O::T {
        let a = attention_core(o, q, k, v, rel, masks, self.dh(), self.dropout, train);
        merge_heads(o, &a, self.c) // (B, Tq, C)
    }
}

/// (B, T, C) → (B, h, T, dh).
fn split_heads<O: Ops>(o: &O, x: &O::T, h: i64, dh: i64) -> O::T {
    let x = o.reshape(x, &[0, 0, h, dh]); // (B, T, h, dh)
    o.transpose(&x, &[0, 2, 1, 3]) // (B, h, T, dh)
}

/// (B, h, T, dh) → (B, T, C).
fn merge_heads<O: Ops>(o: &O, x: &O::T, c: i64) -> O::T {
    let x = o.transpose(x, &[0, 2, 1, 3]); // (B, T, h, dh)
    o.reshape(&x, &[0, 0, c]) // (B, T, C)
}

/// TiSASRec's interval terms `RKᵢⱼ = E_K[rᵢⱼ]`, `RVᵢⱼ = E_V[rᵢⱼ]` in one of two equal forms
/// (docs/MODELS.md, "Relation attention").
#[derive(Debug)]
pub enum Relation<T> {
    /// The reference form: the gathered embeddings themselves, `rk_t` (B, h, Tq, dh, Tk) and
    /// `rv` (B, h, Tq, Tk, dh), B·T·T·C elements each. Needed only to drop each (i, j, c)
    /// element out independently (`--time_dropout elementwise`).
    Dense {
        /// `RK`, head-split and transposed: (B, h, Tq, dh, Tk).
        rk_t: T,
        /// `RV`, head-split: (B, h, Tq, Tk, dh).
        rv: T,
    },
    /// The bucketed form, O(B·h·T·(T + k)) memory: `Qᵢ·RKᵢⱼ = (Q E_Kᵀ)ᵢ[rᵢⱼ]` and
    /// `Σⱼ Pᵢⱼ RVᵢⱼ = (Σⱼ Pᵢⱼ·onehot(rᵢⱼ)) E_V`.
    Bucketed {
        /// `E_K` head-split and transposed: (B or 1, h, dh, k+1).
        ek_t: T,
        /// `E_V` head-split: (B or 1, h, k+1, dh).
        ev: T,
        /// The interval buckets `r`, int64 (B, 1, Tq, Tk).
        r: T,
        /// k + 1, the number of buckets.
        buckets: i64,
    },
}

impl<T> Relation<T> {
    /// The terms for queries at the last position only (Tq = 1).
    pub fn last<O: Ops<T = T>>(&self, o: &O) -> Self {
        let last = |t: &T| o.slice(t, 2, -1, i64::MAX);
        match self {
            Self::Dense { rk_t, rv } => Self::Dense {
                rk_t: last(rk_t), // (B, h, 1, dh, Tk)
                rv: last(rv),     // (B, h, 1, Tk, dh)
            },
            Self::Bucketed {
                ek_t,
                ev,
                r,
                buckets,
            } => Self::Bucketed {
                ek_t: o.identity(ek_t),
                ev: o.identity(ev),
                r: last(r), // (B, 1, 1, Tk)
                buckets: *buckets,
            },
        }
    }

    /// `[Qᵢ·RKᵢⱼ]` for `q` (B, h, Tq, dh) → (B, h, Tq, Tk).
    fn scores<O: Ops<T = T>>(&self, o: &O, q: &T) -> T {
        match self {
            Self::Dense { rk_t, .. } => {
                let sr = o.matmul(&o.unsqueeze(q, 3), rk_t); // (B, h, Tq, 1, Tk)
                o.reshape(&sr, &[0, 0, 0, -1])
            }
            Self::Bucketed { ek_t, r, .. } => {
                let qe = o.matmul(q, ek_t); // (B, h, Tq, k+1)
                o.take_along_last(&qe, r) // (B, h, Tq, Tk)
            }
        }
    }

    /// `[Σⱼ Pᵢⱼ RVᵢⱼ]` for attention weights `p` (B, h, Tq, Tk) → (B, h, Tq, dh).
    fn values<O: Ops<T = T>>(&self, o: &O, p: &T) -> T {
        match self {
            Self::Dense { rv, .. } => {
                let or = o.matmul(&o.unsqueeze(p, 3), rv); // (B, h, Tq, 1, dh)
                o.reshape(&or, &[0, 0, 0, -1])
            }
            Self::Bucketed { ev, r, buckets, .. } => {
                let w = o.scatter_add_last(p, r, *buckets); // (B, h, Tq, k+1)
                o.matmul(&w, ev) // (B, h, Tq, dh)
            }
        }
    }
}

/// Scaled dot-product attention with optional TiSASRec interval terms.
///
/// `S = (q kᵀ + [q·RKᵢⱼ]) / √dh`, masked entries set to [`MASK_VALUE`], `P = Dropout(softmax_j S)`,
/// `out = P v + [Σⱼ Pᵢⱼ RVᵢⱼ]`.
///
/// Shapes: `q` (B, h, Tq, dh); `k`, `v` (B, h, Tk, dh); `rel` the interval terms in either
/// [`Relation`] form; every mask is bool, broadcastable to (B, h, Tq, Tk), `true` = blocked
/// (torch `MultiheadAttention` convention). Returns (B, h, Tq, dh).
#[allow(clippy::too_many_arguments)]
pub fn attention_core<O: Ops>(
    o: &O,
    q: &O::T,
    k: &O::T,
    v: &O::T,
    rel: Option<&Relation<O::T>>,
    masks: &[&O::T],
    dh: i64,
    dropout: f64,
    train: bool,
) -> O::T {
    let kt = o.transpose(k, &[0, 1, 3, 2]); // (B, h, dh, Tk)
    let mut s = o.matmul(q, &kt); // (B, h, Tq, Tk)
    if let Some(rel) = rel {
        s = o.add(&s, &rel.scores(o, q)); // (B, h, Tq, Tk)
    }
    let mut s = o.mul_scalar(&s, 1.0 / (dh as f64).sqrt()); // scale by √(C/h)
    for m in masks {
        s = o.masked_fill(&s, m, MASK_VALUE);
    }
    let p = o.softmax(&s, -1); // (B, h, Tq, Tk)
    let p = o.dropout(&p, dropout, train); // on the probabilities, as torch's MHA
    let out = o.matmul(&p, v); // (B, h, Tq, dh)
    match rel {
        Some(rel) => o.add(&out, &rel.values(o, &p)), // (B, h, Tq, dh)
        None => out,
    }
}

/// `torch.nn.MultiheadAttention(C, h, dropout)` as used by pmixer SASRec:
/// `MHA(Q, K, V) = concat_h(softmax(Q W_qʰ (K W_kʰ)ᵀ/√dh + M) V W_vʰ) W_oᵀ + b_o`.
///
/// Parameters `{p}.in_proj_weight` (3C, C) = [W_q; W_k; W_v], `{p}.in_proj_bias` (3C) = 0,
/// `{p}.out_proj.weight` (C, C), `{p}.out_proj.bias` (C) = 0.
#[derive(Debug)]
pub struct MultiHeadSelfAttention {
    in_proj_weight: Param,
    in_proj_bias: Param,
    out_proj_weight: Param,
    out_proj_bias: Param,
    heads: Heads,
}

impl MultiHeadSelfAttention {
    /// Creates the four tensors under `p`: `init.in_proj` and `init.weight` for the two weight
    /// matrices (the fused in_proj fan gives std √(1/(2C)) under Xavier-normal; docs/MODELS.md,
    /// §4 item 12), biases 0 as torch's `MultiheadAttention`.
    pub fn new(p: &nn::Path, c: i64, heads: i64, dropout: f64, init: &InitRules) -> Self {
        let po = p / "out_proj";
        Self {
            in_proj_weight: Param::new(p, "in_proj_weight", &[3 * c, c], init.in_proj.clone()),
            in_proj_bias: Param::new(p, "in_proj_bias", &[3 * c], ParamInit::Const(0.0)),
            out_proj_weight: Param::new(&po, "weight", &[c, c], init.weight.clone()),
            out_proj_bias: Param::new(&po, "bias", &[c], ParamInit::Const(0.0)),
            heads: Heads::new(c, heads, dropout),
        }
    }

    /// `MHA(q_in, kv_in, kv_in)`: `q_in` (B, Tq, C), `kv_in` (B, Tk, C), `masks` bool,
    /// broadcastable to (B, h, Tq, Tk), `true` = blocked (none, or the causal (Tq, Tk) and the
    /// padded keys (B, 1, 1, Tk)). Returns (B, Tq, C).
    pub fn forward<O: Ops>(
        &self,
        o: &O,
        q_in: &O::T,
        kv_in: &O::T,
        masks: &[&O::T],
        train: bool,
    ) -> O::T {
        let (hd, c) = (&self.heads, self.heads.c);
        let w = o.param(&self.in_proj_weight); // (3C, C)
        let b = o.param(&self.in_proj_bias); // (3C)
        let (wq, bq) = (o.slice(&w, 0, 0, c), o.slice(&b, 0, 0, c)); // (C, C), (C)
        let (wk, bk) = (o.slice(&w, 0, c, 2 * c), o.slice(&b, 0, c, 2 * c));
        let (wv, bv) = (o.slice(&w, 0, 2 * c, 3 * c), o.slice(&b, 0, 2 * c, 3 * c));
        let q = hd.split(o, &o.linear(q_in, &wq, Some(&bq))); // (B, h, Tq, dh)
        let k = hd.split(o, &o.linear(kv_in, &wk, Some(&bk))); // (B, h, Tk, dh)
        let v = hd.split(o, &o.linear(kv_in, &wv, Some(&bv))); // (B, h, Tk, dh)
        let a = hd.attend(o, (&q, &k, &v), None, masks, train); // (B, Tq, C)
        let wo = o.param(&self.out_proj_weight);
        o.linear(&a, &wo, Some(&o.param(&self.out_proj_bias))) // (B, Tq, C)
    }

    /// The parameters, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        vec![
            &self.in_proj_weight,
            &self.in_proj_bias,
            &self.out_proj_weight,
            &self.out_proj_bias,
        ]
    }
}

/// Everything TiSASRec's attention layers share within one forward pass, built once by the model
/// (like candle's shared rotary table): dropped-out position and interval embeddings and masks.
#[derive(Debug)]
pub struct TimeContext<T> {
    /// `Dropout(abs_pos_K_emb(0..T−1))`, (B, Tk, C).
    pub pk: T,
    /// `Dropout(abs_pos_V_emb(0..T−1))`, (B, Tk, C).
    pub pv: T,
    /// The interval terms `RK`, `RV`.
    pub rel: Relation<T>,
    /// Query rows that are padding, bool (B, 1, Tq, 1) (pmixer masks query rows, not keys).
    pub row_pad: T,
    /// Causal mask `j > i`, bool (Tq, Tk); `None` when the only query is the last position.
    pub causal: Option<T>,
}

impl<T> TimeContext<T> {
    /// The context for queries at the last position only: (Tq = 1); keys are unchanged.
    pub fn last<O: Ops<T = T>>(&self, o: &O) -> Self {
        Self {
            pk: o.identity(&self.pk),
            pv: o.identity(&self.pv),
            rel: self.rel.last(o),
            row_pad: o.slice(&self.row_pad, 2, -1, i64::MAX), // (B, 1, 1, 1)
            causal: None,                                     // the last query may see every key
        }
    }
}

/// pmixer TiSASRec's `TimeAwareMultiHeadAttention`:
/// `Sᵢⱼ = Qᵢ·(Kⱼ + PKⱼ + RKᵢⱼ)/√dh`, `outᵢ = Σⱼ softmax(S)ᵢⱼ (Vⱼ + PVⱼ + RVᵢⱼ)`, with
/// `Q = q_in W_Qᵀ + b_Q`, `K = kv_in W_Kᵀ + b_K`, `V = kv_in W_Vᵀ + b_V` and no output projection.
///
/// Parameters `{p}.Q_w.weight/bias`, `{p}.K_w.weight/bias`, `{p}.V_w.weight/bias` (C, C)/(C).
#[derive(Debug)]
pub struct TimeAwareAttention {
    q_w: Param,
    q_b: Param,
    k_w: Param,
    k_b: Param,
    v_w: Param,
    v_b: Param,
    heads: Heads,
}

impl TimeAwareAttention {
    /// Creates the three Linear(C, C) layers: weights by `init.weight`, biases by
    /// `init.bias(C)` (torch's U(±1/√C) under pmixer).
    pub fn new(p: &nn::Path, c: i64, heads: i64, dropout: f64, init: &InitRules) -> Self {
        let lin = |name: &str| {
            let pl = p / name;
            (
                Param::new(&pl, "weight", &[c, c], init.weight.clone()),
                Param::new(&pl, "bias", &[c], init.bias(c)),
            )
        };
        let (q_w, q_b) = lin("Q_w");
        let (k_w, k_b) = lin("K_w");
        let (v_w, v_b) = lin("V_w");
        Self {
            q_w,
            q_b,
            k_w,
            k_b,
            v_w,
            v_b,
            heads: Heads::new(c, heads, dropout),
        }
    }

    /// Attention of `q_in` (B, Tq, C) over `kv_in` (B, Tk, C) with the shared `ctx`.
    /// Returns (B, Tq, C).
    pub fn forward<O: Ops>(
        &self,
        o: &O,
        q_in: &O::T,
        kv_in: &O::T,
        ctx: &TimeContext<O::T>,
        train: bool,
    ) -> O::T {
        let hd = &self.heads;
        let q = o.linear(q_in, &o.param(&self.q_w), Some(&o.param(&self.q_b))); // (B, Tq, C)
        let k = o.linear(kv_in, &o.param(&self.k_w), Some(&o.param(&self.k_b))); // (B, Tk, C)
        let v = o.linear(kv_in, &o.param(&self.v_w), Some(&o.param(&self.v_b))); // (B, Tk, C)
        let q = hd.split(o, &q); // (B, h, Tq, dh)
        let k = hd.split(o, &o.add(&k, &ctx.pk)); // (B, h, Tk, dh)  K + PK
        let v = hd.split(o, &o.add(&v, &ctx.pv)); // (B, h, Tk, dh)  V + PV
        let mut masks = vec![&ctx.row_pad];
        masks.extend(ctx.causal.as_ref());
        hd.attend(o, (&q, &k, &v), Some(&ctx.rel), &masks, train) // (B, Tq, C)
    }

    /// The parameters, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        vec![
            &self.q_w, &self.q_b, &self.k_w, &self.k_b, &self.v_w, &self.v_b,
        ]
    }
}

/// Causal mask `j > i` (true = blocked) for a (B, T, …) input: bool (T, T).
pub fn causal_mask<O: Ops>(o: &O, x: &O::T) -> O::T {
    let r = o.range_of(x, 1); // (T)
    let rows = o.unsqueeze(&r, 1); // (T, 1) query index i
    let cols = o.unsqueeze(&r, 0); // (1, T) key index j
    o.gt(&cols, &rows) // (T, T)
}

/// Helper shared by the wrappers: split heads of an interval embedding (B, Tq, Tk, C) into
/// (B, h, Tq, Tk, dh).
pub fn split_heads_rel<O: Ops>(o: &O, r: &O::T, h: i64, dh: i64) -> O::T {
    let r = o.reshape(r, &[0, 0, 0, h, dh]); // (B, Tq, Tk, h, dh)
    o.transpose(&r, &[0, 3, 1, 2, 4]) // (B, h, Tq, Tk, dh)
}
