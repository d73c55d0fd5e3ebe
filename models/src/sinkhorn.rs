//! Sinkhorn-Knopp projection of the mHC residual-mixing logits onto (approximately) doubly
//! stochastic matrices (mHC paper Eq. 9; docs/MODELS.md §3.8):
//!
//! ```text
//! K = exp(L − max L)
//! repeat iters times:   M ← M / (Σ_rows M + ε)      (columns → 1)
//!                       M ← M / (Σ_cols M + ε)      (rows → 1)
//! with M = diag(u) K diag(v), u = v = 1 at the start:
//!                       v ← v / (v ∘ Kᵀu + ε),  u ← u / (u ∘ K v + ε),   ε = 1e-6
//! ```
//!
//! One definition, [`sinkhorn_unrolled`], generic over [`Ops`]: the ONNX recorder and CUDA run
//! it as written; `TchOps` on the CPU replaces it by an equal fused kernel (`csrc/sinkhorn.cpp`)
//! that uses the same [`SINKHORN_EPS`]. This module depends on the [`Ops`] trait only.

use crate::ops::Ops;

/// Added to every Sinkhorn denominator.
pub const SINKHORN_EPS: f64 = 1e-6;

/// Sinkhorn-Knopp projection onto (approximately) doubly stochastic matrices (Eq. 9).
///
/// `K = exp(L − max L)` per matrix, then `iters` rounds of column normalisation followed by
/// row normalisation (`M ← M / (Σ_rows M + ε)`, `M ← M / (Σ_cols M + ε)`), so the last step makes
/// every row (output stream) sum to 1. No clamping of the logits (max-subtraction suffices).
///
/// Computed in the equal scaling-vector form `M = diag(u) K diag(v)`: a column step is
/// `v ← v / (v ∘ Kᵀu + ε)`, a row step `u ← u / (u ∘ K v + ε)` (substitute M into the matrix
/// steps), so the iterations touch n-vectors instead of n×n matrices and autograd keeps n-vectors
/// per step. `logits`: (B, T, n, n) fp32 → (B, T, n, n).
///
/// This is the definition, as tensor operations (what the ONNX graph and CUDA run);
/// [`Ops::sinkhorn`] may replace it by an equal fused kernel (TchOps on the CPU).
pub fn sinkhorn_unrolled<O: Ops>(o: &O, logits: &O::T, iters: usize) -> O::T {
    let mx = o.max(&o.max(logits, -1, true), -2, true); // (B, T, 1, 1)
    let k = o.exp(&o.sub(logits, &mx)); // (B, T, n, n)
    let kt = o.transpose(&k, &[0, 1, 3, 2]); // (B, T, n, n)
    let ones = o.add_scalar(&o.mul_scalar(&o.sum(&k, -1, true), 0.0), 1.0); // (B, T, n, 1)
    let (mut u, mut v) = (o.identity(&ones), ones); // (B, T, n, 1) each
    for _ in 0..iters {
        let col = o.mul(&v, &o.matmul(&kt, &u)); // v ∘ Kᵀu: column sums of M
        v = o.div(&v, &o.add_scalar(&col, SINKHORN_EPS)); // columns → 1
        let row = o.mul(&u, &o.matmul(&k, &v)); // u ∘ K v: row sums of M
        u = o.div(&u, &o.add_scalar(&row, SINKHORN_EPS)); // rows → 1
    }
    o.mul(&o.mul(&u, &k), &o.transpose(&v, &[0, 1, 3, 2])) // diag(u) K diag(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mhc::static_bias;
    use crate::tch_ops::TchOps;
    use crate::test_util::max_diff;
    use sasrec_shared::config::HresProjection;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn sinkhorn_is_doubly_stochastic() {
        // 20 iterations. The last step normalises rows, so rows are exact; columns converge
        // geometrically, at a rate that depends on the spread of the logits: N(0, 0.5²) logits
        // reach 1e-6 (worst of 1e5 draws, checked with torch), N(0, 1) logits miss 1e-5 in
        // about 0.4% of draws, and near-permutation logits (6I − 3 + noise) keep column errors
        // of a few 1e-2 (the inexact backward gain of mHC paper §5.4).
        let sums = |h: &Tensor, dim: i64| {
            let s = h.sum_dim_intlist(dim, false, Kind::Float);
            max_diff(&s, &s.ones_like())
        };
        tch::manual_seed(11);
        let logits = Tensor::randn([2, 128, 4, 4], (Kind::Float, Device::Cpu)) * 0.5;
        let h = TchOps.sinkhorn(&logits, 20);
        assert!(sums(&h, -1) < 1e-5, "rows {}", sums(&h, -1));
        assert!(sums(&h, -2) < 1e-5, "columns {}", sums(&h, -2));
        assert!(h.min().double_value(&[]) > 0.0);
        let eye = Tensor::eye(4, (Kind::Float, Device::Cpu));
        let near_perm = eye * 6.0 - 3.0 + Tensor::randn([2, 128, 4, 4], (Kind::Float, Device::Cpu));
        let h = TchOps.sinkhorn(&near_perm, 20);
        assert!(sums(&h, -1) < 1e-5, "rows {}", sums(&h, -1));
        assert!(sums(&h, -2) < 0.1, "columns {}", sums(&h, -2));
        // identity-like static bias: diagonal 0.9926, off-diagonal 0.0025 (docs/MODELS.md §3.6)
        let b = Tensor::from_slice(&static_bias(4, 0, HresProjection::Sinkhorn)[8..])
            .reshape([1, 1, 4, 4])
            .to_kind(Kind::Float);
        let h = TchOps.sinkhorn(&b, 20).reshape([4, 4]);
        assert!((h.get(0).get(0).double_value(&[]) - 0.9926).abs() < 1e-4);
        assert!((h.get(0).get(1).double_value(&[]) - 0.0025).abs() < 1e-4);
    }

    /// Sinkhorn written as in the paper, on the matrix: the reference for the vector form.
    fn sinkhorn_matrix_form(logits: &Tensor, iters: usize) -> Tensor {
        let mx = logits.amax([-1, -2], true);
        let mut m = (logits - mx).exp();
        for _ in 0..iters {
            m = &m / (m.sum_dim_intlist(-2, true, Kind::Float) + SINKHORN_EPS);
            m = &m / (m.sum_dim_intlist(-1, true, Kind::Float) + SINKHORN_EPS);
        }
        m
    }

    /// The scaling-vector form as tensor ops and the fused CPU kernel both equal the matrix
    /// iterations, values and gradients (≤ 1e-6 absolute; entries and gradients are O(1)).
    #[test]
    fn sinkhorn_forms_equal_matrix_form() {
        tch::manual_seed(4);
        let eye = Tensor::eye(4, (Kind::Float, Device::Cpu));
        for logits in [
            Tensor::randn([3, 50, 4, 4], (Kind::Float, Device::Cpu)),
            eye * 6.0 - 3.0 + Tensor::randn([3, 50, 4, 4], (Kind::Float, Device::Cpu)) * 0.1,
        ] {
            for iters in [1, 3, 20] {
                type Form<'a> = (&'a str, &'a dyn Fn(&Tensor) -> Tensor);
                let forms: [Form; 2] = [
                    ("unrolled", &|x| sinkhorn_unrolled(&TchOps, x, iters)),
                    ("fused", &|x| TchOps.sinkhorn(x, iters)),
                ];
                for (what, form) in forms {
                    let a = logits.detach().set_requires_grad(true);
                    let b = logits.detach().set_requires_grad(true);
                    let (ha, hb) = (form(&a), sinkhorn_matrix_form(&b, iters));
                    let d = max_diff(&ha, &hb);
                    assert!(d < 1e-6, "{what} {iters}: {d}");
                    let w = Tensor::randn_like(&ha);
                    (&ha * &w).sum(Kind::Float).backward();
                    (&hb * &w).sum(Kind::Float).backward();
                    let d = max_diff(&a.grad(), &b.grad());
                    assert!(d < 1e-5, "{what} {iters}: gradients {d}");
                }
            }
        }
    }
}
