//! The tensor operations every network in this crate is written against.
//!
//! Each network has exactly one definition, generic over [`Ops`]. [`TchOps`](crate::TchOps)
//! runs it on libtorch (training, evaluation); the export crate adds a second implementation that records the same
//! calls as an ONNX graph (opset 17). Every method therefore maps onto one or a few ONNX
//! operators, named in its doc comment, and the trait stays small on purpose:
//!
//! * parameters are fetched by [`Param`], which carries the state-dict name, so a recorder can
//!   emit an initializer named exactly like the checkpoint tensor;
//! * shapes never bake in the batch size: [`Ops::reshape`] follows ONNX `Reshape` semantics
//!   (`0` copies the input dimension, `-1` is inferred), and index ranges are derived from the
//!   input with [`Ops::range_of`];
//! * dropout takes the `train` flag; a recorder only ever sees `train = false`.
//!
//! This module holds the trait only and depends on nothing but [`Param`]; the libtorch
//! implementation is in `tch_ops`, the Sinkhorn definition in `sinkhorn`.

use crate::init::Param;

/// Element types the networks use (`Cast` targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float: parameters, activations, the mHC coefficients.
    F32,
    /// 64-bit integer: item ids, positions, interval buckets.
    I64,
    /// Boolean masks.
    Bool,
}

/// Tensor operations, each mapping to ONNX operators (opset 17).
///
/// Dimensions may be negative (counted from the end) wherever a `dim` is taken. Binary
/// operations broadcast numpy-style, as ONNX does.
pub trait Ops {
    /// A tensor handle (a libtorch tensor, or a node output in a recorded graph).
    type T;

    /// The value of a parameter (ONNX initializer named [`Param::name`]). May be called several
    /// times for the same parameter; implementations must return the same value every time.
    fn param(&self, p: &Param) -> Self::T;

    /// `x` unchanged (ONNX `Identity`, or the same node).
    fn identity(&self, x: &Self::T) -> Self::T;

    /// Rows of a table: `out[..., :] = table[ids[...], :]` (ONNX `Gather`, axis 0). With
    /// `padding_idx = Some(p)`, training gives table row `p` no gradient (torch `padding_idx`).
    fn gather_rows(&self, table: &Self::T, ids: &Self::T, padding_idx: Option<i64>) -> Self::T;

    /// [`Ops::gather_rows`] whose training gradient is row-sparse: `(unique ids, rows)` instead
    /// of a dense table-sized tensor (torch `nn.Embedding(sparse=True)`). The value is the same;
    /// only training cares, so a recorder keeps this default.
    fn gather_rows_sparse_grad(
        &self,
        table: &Self::T,
        ids: &Self::T,
        padding_idx: Option<i64>,
    ) -> Self::T {
        self.gather_rows(table, ids, padding_idx)
    }

    /// `[0, 1, …, x.size(dim) − 1]` as int64 (ONNX `Shape` → `Gather` → `Range`).
    fn range_of(&self, x: &Self::T, dim: i64) -> Self::T;

    /// ONNX `Reshape`: `0` copies the input dimension at that index, `-1` is inferred.
    fn reshape(&self, x: &Self::T, shape: &[i64]) -> Self::T;

    /// Permutes the dimensions (ONNX `Transpose`).
    fn transpose(&self, x: &Self::T, perm: &[i64]) -> Self::T;

    /// Inserts a dimension of size 1 at `dim` (ONNX `Unsqueeze`).
    fn unsqueeze(&self, x: &Self::T, dim: i64) -> Self::T;

    /// Concatenates along `dim` (ONNX `Concat`).
    fn concat(&self, xs: &[&Self::T], dim: i64) -> Self::T;

    /// `x[.., start:end, ..]` along `dim`, negative indices from the end, `end = i64::MAX` for
    /// "to the end" (ONNX `Slice`).
    fn slice(&self, x: &Self::T, dim: i64, start: i64, end: i64) -> Self::T;

    /// Converts the element type (ONNX `Cast`).
    fn cast(&self, x: &Self::T, dtype: DType) -> Self::T;

    /// `a + b` (ONNX `Add`).
    fn add(&self, a: &Self::T, b: &Self::T) -> Self::T;

    /// `a − b` (ONNX `Sub`).
    fn sub(&self, a: &Self::T, b: &Self::T) -> Self::T;

    /// `a · b` elementwise (ONNX `Mul`).
    fn mul(&self, a: &Self::T, b: &Self::T) -> Self::T;

    /// `a / b` elementwise (ONNX `Div`).
    fn div(&self, a: &Self::T, b: &Self::T) -> Self::T;

    /// A constant fp32 tensor of `shape` holding `values` (row-major), on `like`'s device
    /// (ONNX `Constant`).
    fn constant_like(&self, like: &Self::T, values: &[f64], shape: &[i64]) -> Self::T;

    /// `x + v` with a constant of `x`'s element type (ONNX `Add` with a `Constant`).
    fn add_scalar(&self, x: &Self::T, v: f64) -> Self::T;

    /// `x · v` with a constant of `x`'s element type (ONNX `Mul` with a `Constant`).
    fn mul_scalar(&self, x: &Self::T, v: f64) -> Self::T;

    /// `√x` (ONNX `Sqrt`).
    fn sqrt(&self, x: &Self::T) -> Self::T;

    /// `eˣ` (ONNX `Exp`).
    fn exp(&self, x: &Self::T) -> Self::T;

    /// `max(x, 0)` (ONNX `Relu`).
    fn relu(&self, x: &Self::T) -> Self::T;

    /// `1 / (1 + e⁻ˣ)` (ONNX `Sigmoid`).
    fn sigmoid(&self, x: &Self::T) -> Self::T;

    /// `x == v` as a bool mask (ONNX `Equal` with a `Constant`).
    fn eq_scalar(&self, x: &Self::T, v: i64) -> Self::T;

    /// `a > b` as a bool mask (ONNX `Greater`).
    fn gt(&self, a: &Self::T, b: &Self::T) -> Self::T;

    /// Logical not of a bool mask (ONNX `Not`).
    fn not(&self, x: &Self::T) -> Self::T;

    /// `mask ? v : x` (ONNX `Where` with a `Constant`). `v` is clamped to the finite range of
    /// `x`'s element type, so −2³²+1 stays finite in fp16 (docs/MODELS.md, pitfall 9).
    fn masked_fill(&self, x: &Self::T, mask: &Self::T, v: f64) -> Self::T;

    /// Sum over `dim` (ONNX `ReduceSum`).
    fn sum(&self, x: &Self::T, dim: i64, keepdim: bool) -> Self::T;

    /// Mean over `dim` (ONNX `ReduceMean`).
    fn mean(&self, x: &Self::T, dim: i64, keepdim: bool) -> Self::T;

    /// Maximum over `dim` (ONNX `ReduceMax`).
    fn max(&self, x: &Self::T, dim: i64, keepdim: bool) -> Self::T;

    /// `out[…, i, j] = x[…, i, idx[…, i, j]]`: entries picked along the last axis. `idx` is int64
    /// of the same rank as `x`, each leading dimension equal to `x`'s or 1 (broadcast); the
    /// result has `x`'s leading dimensions and `idx`'s last one (ONNX `Expand` → `GatherElements`
    /// on axis −1; torch `gather`).
    fn take_along_last(&self, x: &Self::T, idx: &Self::T) -> Self::T;

    /// `out[…, b] = Σⱼ src[…, j]·[idx[…, j] = b]` for `b` in `0..buckets`: sums of `src` into
    /// `buckets` bins along the last axis. `idx` is int64 of `src`'s rank, each leading dimension
    /// equal to `src`'s or 1, values in `0..buckets` (ONNX `ConstantOfShape` + `Expand` →
    /// `ScatterElements` with `reduction = "add"`, opset ≥ 16; torch `scatter_add`).
    fn scatter_add_last(&self, src: &Self::T, idx: &Self::T, buckets: i64) -> Self::T;

    /// Sinkhorn-Knopp projection of mHC logits (B, T, n, n) → (B, T, n, n), as defined by
    /// `sinkhorn::sinkhorn_unrolled` (ONNX: those unrolled operations), which implementations
    /// call. An implementation may run an equal fused kernel instead.
    fn sinkhorn(&self, logits: &Self::T, iters: usize) -> Self::T;

    /// Batched matrix product over the last two dimensions (ONNX `MatMul`).
    fn matmul(&self, a: &Self::T, b: &Self::T) -> Self::T;

    /// `x Wᵀ + b` over the last dimension, `w` of shape (out, in) (ONNX `MatMul` + `Add`, or
    /// `Gemm` on 2-D input).
    fn linear(&self, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Self::T;

    /// `(x − E[x]) / √(Var[x] + eps) · w + b` over the last dimension (ONNX
    /// `LayerNormalization`, axis −1).
    fn layer_norm(&self, x: &Self::T, w: &Self::T, b: &Self::T, eps: f64) -> Self::T;

    /// `exp(xᵢ) / Σⱼ exp(xⱼ)` along `dim` (ONNX `Softmax`).
    fn softmax(&self, x: &Self::T, dim: i64) -> Self::T;

    /// Inverted dropout with rate `p` when `train`, identity otherwise (inference graphs only see
    /// `train = false`).
    fn dropout(&self, x: &Self::T, p: f64, train: bool) -> Self::T;

    /// Runs `f` with mixed precision switched off, so that its matrix products stay fp32 (the
    /// mHC coefficients, Sinkhorn and stream mixing; mHC paper §4.3.1). Graph recorders, which
    /// are fp32 throughout, keep the default.
    fn full_precision<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}
