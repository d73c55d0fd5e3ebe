//! [`TchOps`]: the [`Ops`] implementation on libtorch tensors (training, evaluation), with the
//! fused CPU Sinkhorn kernel and autocast-off regions of `amp`.

use tch::{Kind, Tensor};

use crate::amp;
use crate::fused::{sinkhorn_cpu, MAX_SINKHORN_STREAMS};
use crate::init::Param;
use crate::ops::{DType, Ops};
use crate::sinkhorn::sinkhorn_unrolled;

/// [`Ops`] on libtorch tensors: the implementation used for training and evaluation.
///
/// Constants are created on the device of the tensor they combine with, so the same code runs
/// on CPU and CUDA.
#[derive(Debug, Clone, Copy, Default)]
pub struct TchOps;

impl TchOps {
    /// Resolves ONNX-style `0` entries ("copy this input dimension") to concrete sizes.
    fn resolve_shape(x: &Tensor, shape: &[i64]) -> Vec<i64> {
        let dims = x.size();
        shape
            .iter()
            .enumerate()
            .map(|(i, &s)| if s == 0 { dims[i] } else { s })
            .collect()
    }

    fn is_integral(x: &Tensor) -> bool {
        matches!(
            x.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        )
    }
}

impl Ops for TchOps {
    type T = Tensor;

    fn param(&self, p: &Param) -> Tensor {
        p.tensor().shallow_clone()
    }

    fn identity(&self, x: &Tensor) -> Tensor {
        x.shallow_clone()
    }

    fn gather_rows(&self, table: &Tensor, ids: &Tensor, padding_idx: Option<i64>) -> Tensor {
        // ATen's embedding backward skips `padding_idx`, exactly like torch.nn.Embedding.
        Tensor::embedding(table, ids, padding_idx.unwrap_or(-1), false, false)
    }

    fn gather_rows_sparse_grad(
        &self,
        table: &Tensor,
        ids: &Tensor,
        padding_idx: Option<i64>,
    ) -> Tensor {
        // ATen's `embedding_sparse_backward`: a COO gradient over the gathered rows, without
        // the `padding_idx` entries.
        Tensor::embedding(table, ids, padding_idx.unwrap_or(-1), false, true)
    }

    fn range_of(&self, x: &Tensor, dim: i64) -> Tensor {
        let dims = x.size();
        let d = if dim < 0 {
            dims.len() as i64 + dim
        } else {
            dim
        };
        Tensor::arange(dims[d as usize], (Kind::Int64, x.device()))
    }

    fn reshape(&self, x: &Tensor, shape: &[i64]) -> Tensor {
        x.reshape(Self::resolve_shape(x, shape))
    }

    fn transpose(&self, x: &Tensor, perm: &[i64]) -> Tensor {
        x.permute(perm)
    }

    fn unsqueeze(&self, x: &Tensor, dim: i64) -> Tensor {
        x.unsqueeze(dim)
    }

    fn concat(&self, xs: &[&Tensor], dim: i64) -> Tensor {
        Tensor::cat(xs, dim)
    }

    fn slice(&self, x: &Tensor, dim: i64, start: i64, end: i64) -> Tensor {
        x.slice(dim, start, end, 1)
    }

    fn cast(&self, x: &Tensor, dtype: DType) -> Tensor {
        let kind = match dtype {
            DType::F32 => Kind::Float,
            DType::I64 => Kind::Int64,
            DType::Bool => Kind::Bool,
        };
        if x.kind() == kind {
            x.shallow_clone()
        } else {
            x.to_kind(kind)
        }
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }

    fn sub(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a - b
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a * b
    }

    fn div(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a / b
    }

    fn constant_like(&self, like: &Tensor, values: &[f64], shape: &[i64]) -> Tensor {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        Tensor::from_slice(&v)
            .reshape(shape)
            .to_device(like.device())
    }

    fn add_scalar(&self, x: &Tensor, v: f64) -> Tensor {
        // An f64 scalar would promote an integer tensor to float (torch type promotion).
        if Self::is_integral(x) {
            x + (v as i64)
        } else {
            x + v
        }
    }

    fn mul_scalar(&self, x: &Tensor, v: f64) -> Tensor {
        if Self::is_integral(x) {
            x * (v as i64)
        } else {
            x * v
        }
    }

    fn sqrt(&self, x: &Tensor) -> Tensor {
        x.sqrt()
    }

    fn exp(&self, x: &Tensor) -> Tensor {
        x.exp()
    }

    fn relu(&self, x: &Tensor) -> Tensor {
        x.relu()
    }

    fn sigmoid(&self, x: &Tensor) -> Tensor {
        x.sigmoid()
    }

    fn eq_scalar(&self, x: &Tensor, v: i64) -> Tensor {
        x.eq(v)
    }

    fn gt(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a.gt_tensor(b)
    }

    fn not(&self, x: &Tensor) -> Tensor {
        x.logical_not()
    }

    fn masked_fill(&self, x: &Tensor, mask: &Tensor, v: f64) -> Tensor {
        let v = match x.kind() {
            Kind::Half => v.clamp(-65504.0, 65504.0),
            _ => v,
        };
        x.masked_fill(mask, v)
    }

    fn sum(&self, x: &Tensor, dim: i64, keepdim: bool) -> Tensor {
        x.sum_dim_intlist(dim, keepdim, None::<Kind>)
    }

    fn mean(&self, x: &Tensor, dim: i64, keepdim: bool) -> Tensor {
        x.mean_dim(dim, keepdim, None::<Kind>)
    }

    fn max(&self, x: &Tensor, dim: i64, keepdim: bool) -> Tensor {
        x.amax(dim, keepdim)
    }

    fn take_along_last(&self, x: &Tensor, idx: &Tensor) -> Tensor {
        let mut shape = x.size();
        *shape.last_mut().expect("take_along_last needs a dimension") = *idx
            .size()
            .last()
            .expect("take_along_last needs a dimension");
        x.gather(-1, &idx.expand(&shape, false), false)
    }

    fn scatter_add_last(&self, src: &Tensor, idx: &Tensor, buckets: i64) -> Tensor {
        let mut shape = src.size();
        let idx = idx.expand(&shape, false);
        *shape
            .last_mut()
            .expect("scatter_add_last needs a dimension") = buckets;
        Tensor::zeros(&shape, (src.kind(), src.device())).scatter_add(-1, &idx, src)
    }

    fn sinkhorn(&self, logits: &Tensor, iters: usize) -> Tensor {
        // One autograd node on the CPU (csrc/sinkhorn.cpp); CUDA runs the tensor operations.
        let n = *logits.size().last().expect("Sinkhorn logits are (…, n, n)");
        if logits.device() == tch::Device::Cpu
            && logits.kind() == Kind::Float
            && n <= MAX_SINKHORN_STREAMS
        {
            sinkhorn_cpu(logits, iters)
        } else {
            sinkhorn_unrolled(self, logits, iters)
        }
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a.matmul(b)
    }

    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        x.linear(w, b)
    }

    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let c = *x
            .size()
            .last()
            .expect("layer_norm input has at least one dimension");
        x.layer_norm([c], Some(w), Some(b), eps, true)
    }

    fn softmax(&self, x: &Tensor, dim: i64) -> Tensor {
        x.softmax(dim, None::<Kind>)
    }

    fn dropout(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        if train && p > 0.0 {
            x.dropout(p, true)
        } else {
            x.shallow_clone()
        }
    }

    fn full_precision<R>(&self, f: impl FnOnce() -> R) -> R {
        amp::full_precision(f)
    }
}
