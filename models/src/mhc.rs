//! Manifold-constrained hyper-connections (mHC; Xie et al., arXiv:2512.24880), paper-faithful
//! as in docs/MODELS.md §3.
//!
//! The hidden state is n residual streams x ∈ R^{n×C} per token, kept across sub-layers. Around
//! every sub-layer F (attention, FFN) one [`HyperConnection`] computes (Eq. 3, 7, 8)
//!
//! ```text
//! x⃗ = vec(x) ∈ R^{nC},  r = √(mean(x⃗²) + 1e-6),  m = x⃗ φ / r                 (RMSNorm, no gain)
//! H̃_pre = α_pre·m[0:n] + b_pre,  H̃_post = α_post·m[n:2n] + b_post,
//! H̃_res = α_res·mat(m[2n:]) + b_res                                       (α outside b)
//! H_pre = σ(H̃_pre),  H_post = 2σ(H̃_post),  H_res = SinkhornKnopp(H̃_res)
//! x ← H_res x + H_postᵀ F(H_pre x)      i.e. x'ᵢ = Σⱼ H_res[i,j] xⱼ + H_post[i]·F(Σⱼ H_pre[j] xⱼ)
//! ```
//!
//! Rows of H_res index the output streams; Sinkhorn ends with the row normalisation, so every
//! output stream is a convex combination of the inputs (forward gain 1; docs/MODELS.md, pitfall 28). The
//! coefficients, Sinkhorn and the mixing run in fp32 with autocast switched off (docs/MODELS.md, pitfall 27).
//!
//! Initialisation (docs/MODELS.md §3.6): φ = 0, so the model starts purely static; b_pre = +3 on the
//! sub-layer's home stream `l mod n` and −3 elsewhere, b_post = 0 (H_post = 1), b_res = 6I − 3
//! (H_res ≈ I); α = `init_gate` for all three. φ still gets a gradient because α ≠ 0; α gets a
//! zero gradient on the very first step (its input x⃗φ is 0) and a non-zero one afterwards.

use sasrec_shared::config::{HresProjection, MhcConfig};
use tch::nn;

use crate::init::{Param, ParamInit};
use crate::ops::{DType, Ops};
use crate::query::queries;

// The Sinkhorn projection of `H̃_res` lives in `crate::sinkhorn`; re-exported under its
// earlier path `mhc::sinkhorn_unrolled`.
pub use crate::sinkhorn::{sinkhorn_unrolled, SINKHORN_EPS};

/// RMSNorm epsilon of the coefficient input, inside the square root (TileKernels default).
pub const RMS_EPS: f64 = 1e-6;

/// The n! permutation matrices of n streams in lexicographic order (the identity first), each
/// flattened row-major: an (n!, n²) table of 0/1 values, `P_k[i, σ_k(i)] = 1`.
pub fn permutation_matrices(n: usize) -> Vec<f64> {
    fn extend(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<f64>) {
        if prefix.len() == n {
            for &col in prefix.iter() {
                out.extend((0..n).map(|j| if j == col { 1.0 } else { 0.0 }));
            }
            return;
        }
        for next in 0..n {
            if !prefix.contains(&next) {
                prefix.push(next);
                extend(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::with_capacity(n), n, &mut out);
    out
}

/// `n!`.
fn factorial(n: usize) -> usize {
    (1..=n).product()
}

/// mHC-lite (arXiv:2601.05732): `H_res = Σ_k softmax(a)_k P_k`, a convex combination of the n!
/// permutation matrices, hence exactly doubly stochastic (Birkhoff–von Neumann).
/// `logits` a (…, n!) fp32, `perms` the (n!, n²) table of [`permutation_matrices`] → (…, n, n).
pub fn lite_mix<O: Ops>(o: &O, logits: &O::T, perms: &O::T, n: i64) -> O::T {
    let w = o.softmax(logits, -1); // (…, n!)
    let flat = o.matmul(&w, perms); // (…, n²)
    o.reshape(&flat, &[0, 0, n, n]) // (…, n, n)
}

/// n copies of the embedding: (B, T, C) → (B, T, n, C) (docs/MODELS.md §3.2).
pub fn expand_streams<O: Ops>(o: &O, x: &O::T, n: usize) -> O::T {
    let x = o.cast(&o.unsqueeze(x, 2), DType::F32); // (B, T, 1, C)
    if n == 1 {
        return x;
    }
    let copies = vec![&x; n];
    o.concat(&copies, 2) // (B, T, n, C)
}

/// Mean over the streams: (B, T, n, C) → (B, T, C) (docs/MODELS.md §3.2).
pub fn merge_streams<O: Ops>(o: &O, x: &O::T) -> O::T {
    o.mean(x, 2, false)
}

/// The static biases `[b_pre (n) | b_post (n) | b_res]` of sub-layer `layer` (attention of
/// block i is 2i, its FFN 2i+1). For Sinkhorn `b_res` is n×n, row-major, rows = outputs,
/// `6I − 3`; for mHC-lite it is one logit per permutation: `ln(99·(n! − 1))` for the identity
/// and 0 for the others, so that the identity carries weight 0.99 at initialisation.
pub fn static_bias(n: usize, layer: usize, h_res: HresProjection) -> Vec<f64> {
    let home = layer % n;
    let pre = (0..n).map(|i| if i == home { 3.0 } else { -3.0 });
    let post = (0..n).map(|_| 0.0);
    let res: Vec<f64> = match h_res {
        HresProjection::Sinkhorn => (0..n * n)
            .map(|k| if k / n == k % n { 3.0 } else { -3.0 }) // 6I − 3
            .collect(),
        HresProjection::Lite => {
            let others = factorial(n) - 1;
            let identity = if others == 0 {
                0.0
            } else {
                (99.0 * others as f64).ln()
            };
            std::iter::once(identity)
                .chain(std::iter::repeat_n(0.0, others))
                .collect()
        }
    };
    pre.chain(post).chain(res).collect()
}

/// The three groups of coefficient logits of one sub-layer, each (B, T, ·).
#[derive(Debug)]
struct Logits<T> {
    /// `H̃_pre`, (B, T, n).
    pre: T,
    /// `H̃_post`, (B, T, n).
    post: T,
    /// `H̃_res`, (B, T, r): n² Sinkhorn logits or n! permutation logits.
    res: T,
}

impl<T> Logits<T> {
    fn map(self, f: impl Fn(&T) -> T) -> Self {
        Self {
            pre: f(&self.pre),
            post: f(&self.post),
            res: f(&self.res),
        }
    }
}

/// One mHC module around one sub-layer.
///
/// Parameters under `p` (e.g. `mhc_attention.0`): `phi` (nC, 2n + r) fused dynamic projection
/// (columns: pre | post | res), `bias` (2n + r) static part in the same layout, `alpha` (3) the
/// gates `[α_pre, α_post, α_res]`, where r = n² for Sinkhorn and r = n! for mHC-lite. For n = 4,
/// C = 50 with Sinkhorn: 4,800 + 24 + 3 = 4,827 values.
#[derive(Debug)]
pub struct HyperConnection {
    phi: Param,
    bias: Param,
    alpha: Param,
    n: i64,
    h_res: HresProjection,
    /// mHC-lite's (n!, n²) permutation table, built once; empty for Sinkhorn.
    perms: Vec<f64>,
    sinkhorn_iter: usize,
    no_amp: bool,
}

impl HyperConnection {
    /// Creates the module for sub-layer number `layer` (0-based over all sub-layers).
    pub fn new(p: &nn::Path, layer: usize, c: i64, cfg: &MhcConfig) -> Self {
        let n = cfg.expansion_rate;
        let res = match cfg.h_res {
            HresProjection::Sinkhorn => n * n,
            HresProjection::Lite => factorial(n),
        };
        let width = (2 * n + res) as i64;
        let bias = static_bias(n, layer, cfg.h_res);
        let n = n as i64;
        Self {
            phi: Param::new(p, "phi", &[n * c, width], ParamInit::Const(0.0)),
            bias: Param::new(p, "bias", &[width], ParamInit::Values(bias)),
            alpha: Param::new(p, "alpha", &[3], ParamInit::Const(cfg.init_gate)),
            n,
            h_res: cfg.h_res,
            perms: match cfg.h_res {
                HresProjection::Sinkhorn => Vec::new(),
                HresProjection::Lite => permutation_matrices(n as usize),
            },
            sinkhorn_iter: cfg.sinkhorn_iter,
            no_amp: cfg.no_amp,
        }
    }

    /// The coefficient logits `H̃_pre`, `H̃_post`, `H̃_res` for fp32 streams `x` (B, T, n, C)
    /// (Eq. 7).
    fn logits<O: Ops>(&self, o: &O, x: &O::T) -> Logits<O::T> {
        let n = self.n;
        let flat = o.reshape(x, &[0, 0, -1]); // (B, T, nC)
        let ms = o.mean(&o.mul(&flat, &flat), -1, true); // (B, T, 1)
        let r = o.sqrt(&o.add_scalar(&ms, RMS_EPS)); // (B, T, 1)
        let m = o.div(&o.matmul(&flat, &o.param(&self.phi)), &r); // (B, T, 2n + r)
        let (alpha, bias) = (o.param(&self.alpha), o.param(&self.bias));
        let part = |k: i64, lo: i64, hi: i64| {
            let a = o.slice(&alpha, 0, k, k + 1); // (1)
            o.add(
                &o.mul(&o.slice(&m, -1, lo, hi), &a),
                &o.slice(&bias, 0, lo, hi),
            )
        };
        Logits {
            pre: part(0, 0, n),            // (B, T, n)
            post: part(1, n, 2 * n),       // (B, T, n)
            res: part(2, 2 * n, i64::MAX), // (B, T, r)
        }
    }

    /// `(H_post = 2σ(H̃_post) (B, T, n), H_res (B, T, n, n))` from the logits (Eq. 8).
    fn mixing<O: Ops>(&self, o: &O, logits: &Logits<O::T>) -> (O::T, O::T) {
        let n = self.n;
        let h_post = o.mul_scalar(&o.sigmoid(&logits.post), 2.0); // (B, T, n)
        let res = &logits.res; // (B, T, r)
        let h_res = match self.h_res {
            HresProjection::Sinkhorn => {
                o.sinkhorn(&o.reshape(res, &[0, 0, n, n]), self.sinkhorn_iter)
            }
            HresProjection::Lite => {
                let rows = factorial(n as usize) as i64;
                let perms = o.constant_like(res, &self.perms, &[rows, n * n]); // (n!, n²)
                lite_mix(o, res, &perms, n)
            }
        }; // (B, T, n, n)
        (h_post, h_res)
    }

    /// `(H_pre (B, T, n), H_post (B, T, n), H_res (B, T, n, n))` for fp32 streams
    /// `x` (B, T, n, C) (Eq. 7–8).
    pub fn coefficients<O: Ops>(&self, o: &O, x: &O::T) -> (O::T, O::T, O::T) {
        let logits = self.logits(o, x);
        let (h_post, h_res) = self.mixing(o, &logits);
        (o.sigmoid(&logits.pre), h_post, h_res)
    }

    /// `x ← H_res x + H_postᵀ F(H_pre x)` (Eq. 3) for streams `x` (B, T, n, C). `f` maps
    /// (B, T, C) to (B, Tq, C); with `last_only`, Tq = 1 and only the last position's streams
    /// are returned: (B, Tq, n, C), and `H_post`, `H_res` are only computed there.
    pub fn forward<O: Ops>(
        &self,
        o: &O,
        x: &O::T,
        f: impl FnOnce(&O::T) -> O::T,
        last_only: bool,
    ) -> O::T {
        let x = o.cast(x, DType::F32); // (B, T, n, C)
        let (logits, u) = o.full_precision(|| {
            let logits = self.logits(o, &x);
            let w = o.unsqueeze(&o.sigmoid(&logits.pre), 2); // (B, T, 1, n): H_pre
            let u = o.reshape(&o.matmul(&w, &x), &[0, 0, -1]); // (B, T, C)
            (logits, u)
        });
        let y = if self.no_amp {
            o.full_precision(|| f(&u))
        } else {
            f(&u)
        }; // (B, Tq, C)
        let last = |t: &O::T| queries(o, t, last_only);
        let (x, logits) = (last(&x), logits.map(last));
        o.full_precision(|| {
            let (h_post, h_res) = self.mixing(o, &logits); // (B, Tq, n), (B, Tq, n, n)
            let mixed = o.matmul(&h_res, &x); // (B, Tq, n, C)
            let y = o.unsqueeze(&o.cast(&y, DType::F32), 2); // (B, Tq, 1, C)
            o.add(&mixed, &o.mul(&o.unsqueeze(&h_post, -1), &y)) // (B, Tq, n, C)
        })
    }

    /// The parameters, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        vec![&self.phi, &self.bias, &self.alpha]
    }
}

/// How many residual streams a model carries: the one place that knows whether a model is mHC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// Plain residual: the hidden state is (B, T, C).
    Single,
    /// mHC with n streams: the hidden state is (B, T, n, C) in fp32.
    Multi(usize),
}

impl Streams {
    /// `Multi(expansion_rate)` when `mhc` is set, else `Single`.
    pub fn new(mhc: Option<&MhcConfig>) -> Self {
        mhc.map_or(Self::Single, |m| Self::Multi(m.expansion_rate))
    }

    /// Embedding (B, T, C) → initial hidden state.
    pub fn expand<O: Ops>(&self, o: &O, x: &O::T) -> O::T {
        match self {
            Self::Single => o.identity(x),
            Self::Multi(n) => expand_streams(o, x, *n), // (B, T, n, C)
        }
    }

    /// Hidden state → (B, T, C) for the last LayerNorm.
    pub fn merge<O: Ops>(&self, o: &O, x: &O::T) -> O::T {
        match self {
            Self::Single => o.identity(x),
            Self::Multi(_) => merge_streams(o, x), // (B, T, C)
        }
    }

    /// Multiplies the hidden state by a (B, T) float mask (TiSASRec's `X·¬pad`).
    pub fn mask<O: Ops>(&self, o: &O, x: &O::T, keep: &O::T) -> O::T {
        let m = o.unsqueeze(keep, -1); // (B, T, 1)
        match self {
            Self::Single => o.mul(x, &m),                     // (B, T, C)
            Self::Multi(_) => o.mul(x, &o.unsqueeze(&m, -1)), // (B, T, n, C)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss;
    use crate::model::{Net, SeqRecModel};
    use crate::tch_ops::TchOps;
    use crate::test_util::*;
    use sasrec_shared::config::{Backbone, ModelConfig};
    use tch::nn::OptimizerConfig;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn permutation_matrices_are_the_n_factorial_permutations() {
        for n in 1..=5usize {
            let p = permutation_matrices(n);
            let count = factorial(n);
            assert_eq!(p.len(), count * n * n);
            let t = Tensor::from_slice(&p).reshape([count as i64, n as i64, n as i64]);
            let ones = Tensor::ones([count as i64, n as i64], (Kind::Double, Device::Cpu));
            assert!(t.sum_dim_intlist(-1, false, Kind::Double).equal(&ones));
            assert!(t.sum_dim_intlist(-2, false, Kind::Double).equal(&ones));
            let distinct: std::collections::HashSet<Vec<u64>> = p
                .chunks(n * n)
                .map(|m| m.iter().map(|x| x.to_bits()).collect())
                .collect();
            assert_eq!(distinct.len(), count, "n = {n}: all distinct");
            let eye: Vec<f64> = (0..n * n)
                .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
                .collect();
            assert_eq!(&p[..n * n], &eye[..], "identity first");
        }
    }

    /// mHC-lite's H_res has rows and columns summing to 1 (≤ 1e-6) for any logits, and starts
    /// with weight 0.99 on the identity.
    #[test]
    fn lite_is_exactly_doubly_stochastic() {
        tch::manual_seed(8);
        for n in [2i64, 3, 4] {
            let rows = factorial(n as usize) as i64;
            let perms = Tensor::from_slice(&permutation_matrices(n as usize))
                .reshape([rows, n * n])
                .to_kind(Kind::Float);
            let logits = Tensor::randn([4, 30, rows], (Kind::Float, Device::Cpu)) * 3.0;
            let h = lite_mix(&TchOps, &logits, &perms, n);
            for dim in [-1, -2] {
                let s = h.sum_dim_intlist(dim, false, Kind::Float);
                assert!(max_diff(&s, &s.ones_like()) < 1e-6, "n = {n}, dim {dim}");
            }
            assert!(h.min().double_value(&[]) >= 0.0);
            let b = static_bias(n as usize, 0, HresProjection::Lite);
            let init = Tensor::from_slice(&b[2 * n as usize..])
                .reshape([1, 1, rows])
                .to_kind(Kind::Float);
            let w = init.softmax(-1, Kind::Float);
            assert!((w.double_value(&[0, 0, 0]) - 0.99).abs() < 1e-6);
        }
    }

    #[test]
    fn lite_refuses_too_many_streams() {
        let mut cfg = small_cfg(Backbone::Sasrec, Some(6));
        cfg.mhc.as_mut().unwrap().h_res = HresProjection::Lite;
        let e = SeqRecModel::new(&nn::VarStore::new(Device::Cpu).root(), &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--mhc_expansion_rate 6 would need 720 of them (at most n = 5)"),
            "{e}"
        );
    }

    #[test]
    fn static_bias_layout() {
        let b = static_bias(4, 5, HresProjection::Sinkhorn); // home stream 5 mod 4 = 1
        assert_eq!(&b[..4], &[-3.0, 3.0, -3.0, -3.0]);
        assert_eq!(&b[4..8], &[0.0; 4]);
        assert_eq!(b[8], 3.0);
        assert_eq!(b[9], -3.0);
        assert_eq!(b[8 + 5], 3.0);
        assert_eq!(b.len(), 24);
    }

    #[test]
    fn module_has_4827_parameters() {
        let vs = nn::VarStore::new(Device::Cpu);
        let hc = HyperConnection::new(
            &(vs.root() / "mhc_attention" / 0),
            0,
            50,
            &MhcConfig::default(),
        );
        assert_eq!(hc.params().iter().map(|p| p.numel()).sum::<i64>(), 4_827);
        let names: Vec<&str> = hc.params().iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "mhc_attention.0.phi",
                "mhc_attention.0.bias",
                "mhc_attention.0.alpha"
            ]
        );
        assert_eq!(hc.params()[0].tensor().size(), [200, 24]);
        assert!((hc.params()[2].tensor().double_value(&[0]) - 0.01).abs() < 1e-9);
    }

    /// Under autocast (bf16 on the CPU here) the coefficients, Sinkhorn and the stream mix stay
    /// fp32; the sub-layer runs in bf16 unless `no_amp`, which keeps the whole path in fp32.
    #[test]
    fn mhc_path_stays_fp32_under_autocast() {
        use crate::amp::{autocast, AmpDtype};
        tch::manual_seed(3);
        let (n, c) = (4usize, 8i64);
        let x = Tensor::randn([2, 3, n as i64, c], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([c, c], (Kind::Float, Device::Cpu));
        let phi0 = Tensor::randn([n as i64 * c, 24], (Kind::Float, Device::Cpu)) * 0.5;
        let run = |no_amp: bool, amp: bool| {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = MhcConfig {
                no_amp,
                ..MhcConfig::default()
            };
            let hc = HyperConnection::new(&(vs.root() / "mhc_ffn" / 0), 1, c, &cfg);
            tch::no_grad(|| {
                let phi = hc.params()[0].tensor();
                phi.shallow_clone().copy_(&phi0);
            });
            let o = TchOps;
            let mut sub_kind = None;
            let mut go = || {
                let coeffs = o.full_precision(|| hc.coefficients(&o, &x));
                let y = hc.forward(
                    &o,
                    &x,
                    |u| {
                        let y = u.matmul(&w);
                        sub_kind = Some(y.kind());
                        y
                    },
                    false,
                );
                (coeffs, y)
            };
            let ((pre, post, res), y) = if amp {
                autocast(Device::Cpu, AmpDtype::Bf16, go)
            } else {
                go()
            };
            (vec![pre, post, res, y], sub_kind.unwrap())
        };
        let (fp32, k) = run(false, false);
        assert_eq!(k, Kind::Float);
        let (mixed, k) = run(false, true);
        assert_eq!(k, Kind::BFloat16, "the sub-layer runs in bf16");
        let (no_amp, k) = run(true, true);
        assert_eq!(k, Kind::Float, "--mhc_no_amp keeps the sub-layer in fp32");
        for i in 0..3 {
            assert_eq!(mixed[i].kind(), Kind::Float);
            assert!(
                mixed[i].equal(&fp32[i]),
                "coefficient {i} is computed in fp32"
            );
        }
        assert_eq!(mixed[3].kind(), Kind::Float, "streams stay fp32");
        let diff = (&mixed[3] - &fp32[3]).abs().max().double_value(&[]);
        let scale = fp32[3].abs().max().double_value(&[]);
        assert!(
            diff > 0.0 && diff < 2e-2 * scale,
            "bf16 sub-layer: diff {diff}, scale {scale}"
        );
        assert!(
            no_amp[3].equal(&fp32[3]),
            "--mhc_no_amp: bit-identical to fp32"
        );
    }

    /// One BCE step's gradients on every mHC tensor, split into its pre/post/res groups.
    fn group_grads(m: &SeqRecModel, n: i64) -> Vec<(String, f64)> {
        let mut out = vec![];
        for p in m.params().iter().filter(|p| p.name().starts_with("mhc_")) {
            let g = p.tensor().grad();
            let groups: Vec<(&str, Tensor)> = if p.name().ends_with("alpha") {
                vec![
                    ("pre", g.narrow(0, 0, 1)),
                    ("post", g.narrow(0, 1, 1)),
                    ("res", g.narrow(0, 2, 1)),
                ]
            } else {
                let d = g.dim() as i64 - 1;
                vec![
                    ("pre", g.narrow(d, 0, n)),
                    ("post", g.narrow(d, n, n)),
                    ("res", g.narrow(d, 2 * n, g.size()[d as usize] - 2 * n)),
                ]
            };
            for (k, t) in groups {
                out.push((
                    format!("{}[{k}]", p.name()),
                    t.abs().sum(Kind::Float).double_value(&[]),
                ));
            }
        }
        out
    }

    fn bce_step(m: &SeqRecModel, seq: &Tensor, tm: Option<&Tensor>) -> Tensor {
        let f = m.feats(seq, tm, true).unwrap();
        let pos = seq.roll([-1], [1]) * seq.ne(0);
        let neg = Tensor::randint_low(1, I as i64 + 1, seq.size(), (Kind::Int64, Device::Cpu));
        loss::bce_loss(&f, m.items(), &pos, &neg, 0.0)
    }

    /// φ starts at 0 but gets a gradient through α ≠ 0; α's gradient is zero on the first step
    /// (x⃗φ = 0) and b_res's nearly so (identical streams). After two Adam steps every group
    /// (φ, b, α for pre, post and res) of every module has a non-zero gradient.
    /// Both backbones with both H_res projections.
    fn mhc_cases(n: usize) -> Vec<ModelConfig> {
        let mut out = vec![];
        for backbone in [Backbone::Sasrec, Backbone::Tisasrec] {
            for h_res in [HresProjection::Sinkhorn, HresProjection::Lite] {
                let mut cfg = small_cfg(backbone, Some(n));
                cfg.mhc.as_mut().unwrap().h_res = h_res;
                out.push(cfg);
            }
        }
        out
    }

    #[test]
    fn every_mhc_parameter_gets_gradient() {
        for cfg in mhc_cases(4) {
            let backbone = (cfg.backbone, cfg.mhc.unwrap().h_res);
            tch::manual_seed(3);
            let (vs, m) = build(&cfg);
            let seq = sequences(8);
            let tm = cfg.is_time_aware().then(|| intervals(8));
            let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
            opt.zero_grad();
            bce_step(&m, &seq, tm.as_ref()).backward();
            for (name, g) in group_grads(&m, 4) {
                if name.contains("phi[pre]")
                    || name.contains("phi[post]")
                    || name.contains("bias[p")
                {
                    assert!(g > 0.0, "first step: {name} has zero gradient");
                }
                if name.contains("alpha") {
                    assert_eq!(g, 0.0, "first step: {name}");
                }
            }
            for _ in 0..2 {
                opt.zero_grad();
                let l = bce_step(&m, &seq, tm.as_ref());
                l.backward();
                opt.step();
            }
            opt.zero_grad();
            bce_step(&m, &seq, tm.as_ref()).backward();
            for (name, g) in group_grads(&m, 4) {
                assert!(g > 0.0, "{backbone:?}: {name} has zero gradient");
            }
        }
    }

    /// n = 1 reduces to the plain Pre-LN model: H_post = 2σ(0) = 1, H_res = SK(3) ≈ 1 and
    /// H_pre = σ(3) is absorbed by the sub-layer's LayerNorm.
    #[test]
    fn single_stream_equals_pre_ln() {
        for cfg in mhc_cases(1) {
            let backbone = (cfg.backbone, cfg.mhc.unwrap().h_res);
            let (vs_mhc, m_mhc) = build(&cfg);
            let mut plain_cfg = cfg.clone();
            plain_cfg.mhc = None;
            plain_cfg.norm_first = true;
            let (vs_plain, m_plain) = build(&plain_cfg);
            perturb(&vs_mhc);
            let src = vs_mhc.variables();
            tch::no_grad(|| {
                for (name, mut v) in vs_plain.variables() {
                    v.copy_(&src[&name]);
                }
            });
            // the mHC modules keep their init (φ = 0, identity-like static part)
            for p in m_mhc
                .params()
                .iter()
                .filter(|p| p.name().starts_with("mhc_"))
            {
                p.reinit();
            }
            let seq = sequences(5);
            let tm = cfg.is_time_aware().then(|| intervals(5));
            let a = m_mhc.feats(&seq, tm.as_ref(), false).unwrap();
            let b = m_plain.feats(&seq, tm.as_ref(), false).unwrap();
            // Relative to the output scale: the Sinkhorn ε makes H_res = 1/(1+ε)-ish ≈ 1 − 1e-6
            // per sub-layer, a bias of a few 1e-6 on O(1) LayerNorm outputs.
            let d = max_diff(&a, &b) / b.abs().max().double_value(&[]);
            assert!(d < 1e-5, "{backbone:?}: {d}");
        }
    }

    /// With copy initialisation the n streams start identical; training makes them differ.
    #[test]
    fn streams_diverge_during_training() {
        for backbone in [Backbone::Sasrec, Backbone::Tisasrec] {
            let cfg = small_cfg(backbone, Some(4));
            tch::manual_seed(5);
            let (vs, m) = build(&cfg);
            let seq = sequences(8);
            let tm = cfg.is_time_aware().then(|| intervals(8));
            let spread = |m: &SeqRecModel| {
                let x = match m.net() {
                    Net::SasRec(n) => n.hidden(&TchOps, &seq, false, false),
                    Net::TiSasRec(n) => n.hidden(&TchOps, &seq, tm.as_ref().unwrap(), false, false),
                }; // (B, T, n, C)
                let mean = x.mean_dim(2, true, Kind::Float);
                (x - mean).abs().max().double_value(&[])
            };
            let s0 = spread(&m);
            assert!(s0 < 1e-5, "streams differ at init ({s0})");
            let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
            for _ in 0..5 {
                let l = bce_step(&m, &seq, tm.as_ref());
                opt.backward_step(&l);
            }
            let s = spread(&m);
            assert!(s > 1e-3, "{backbone:?}: streams still identical ({s})");
        }
    }
}
