//! Data parallelism over a c10d process group: what `torch.nn.parallel.DistributedDataParallel`
//! does for this trainer, written out.
//!
//! * At start (and after loading a checkpoint) rank 0's parameters, Adam moments and loop
//!   counters are broadcast, so every rank starts from the same state.
//! * After every backward pass the gradients are averaged across ranks in flattened buckets,
//!   one all-reduce per bucket. The average is weighted by each rank's number of target
//!   positions `n_r`: `g ← Σ_r n_r·g_r / Σ_r n_r`. Every loss here is a mean over target
//!   positions, so this is exactly the gradient of the loss of the global batch, whatever the
//!   padding of each shard (DDP's plain mean of per-rank means is not, when shards differ).
//!   Terms identical on every rank (the L2 penalty) keep their value, since the weights sum to
//!   one. `n_r` travels as one extra element of each bucket.
//! * Every rank then takes the same Adam step on the same averaged gradients, so the
//!   parameters stay bit-identical without further communication.

use tch::{Kind, Tensor};

use crate::dist::ProcessGroup;
use crate::error::Result;
use crate::optim::defined_grads;

/// Elements per all-reduce bucket (25 Mi floats = 100 MB, DDP's default is 25 MB of
/// gradients; one bucket holds the whole reference model).
const BUCKET_ELEMS: i64 = 25 << 20;

/// Rank 0's values of `tensors`, copied in place into every rank's tensors (one broadcast of
/// their flattened concatenation per dtype group; all must share one device and kind).
pub fn broadcast_from_rank0(pg: &ProcessGroup, tensors: &[Tensor]) -> Result<()> {
    if tensors.is_empty() {
        return Ok(());
    }
    let mut flat = tch::no_grad(|| {
        Tensor::cat(
            &tensors
                .iter()
                .map(|t| t.detach().reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        )
    });
    pg.broadcast(&mut flat, 0)?;
    tch::no_grad(|| unflatten_into(&flat, tensors));
    Ok(())
}

/// Copies consecutive slices of `flat` into `dst`.
fn unflatten_into(flat: &Tensor, dst: &[Tensor]) {
    let mut off = 0;
    for t in dst {
        let n = t.numel() as i64;
        t.shallow_clone()
            .copy_(&flat.narrow(0, off, n).view_as(t).to_kind(t.kind()));
        off += n;
    }
}

/// Averages the gradients of `params` across the ranks of `pg`, weighted by `weight` (this
/// rank's number of target positions, a 0-dim float tensor on the parameters' device).
/// Parameters whose gradient is undefined (on every rank alike: the graph is the same)
/// contribute nothing and stay undefined.
pub fn average_gradients(pg: &ProcessGroup, params: &[Tensor], weight: &Tensor) -> Result<()> {
    let grads = defined_grads(params);
    let w = weight.to_kind(Kind::Float).reshape([1]);
    let mut start = 0;
    while start < grads.len() {
        let mut end = start;
        let mut elems = 0;
        while end < grads.len()
            && (end == start || elems + grads[end].numel() as i64 <= BUCKET_ELEMS)
        {
            elems += grads[end].numel() as i64;
            end += 1;
        }
        let bucket = &grads[start..end];
        let mut flat = tch::no_grad(|| {
            let mut parts: Vec<Tensor> = bucket
                .iter()
                .map(|g| g.to_kind(Kind::Float).reshape([-1]) * &w)
                .collect();
            parts.push(w.shallow_clone());
            Tensor::cat(&parts, 0)
        });
        pg.all_reduce_sum(&mut flat)?;
        tch::no_grad(|| {
            let total = flat.narrow(0, elems, 1);
            let avg = flat.narrow(0, 0, elems) / total;
            unflatten_into(&avg, bucket);
        });
        start = end;
    }
    Ok(())
}
