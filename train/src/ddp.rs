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
//! * A row-sparse gradient (the item table under a row-sparse `--item_optimizer`,
//!   docs/MODELS.md §7) is not all-reduced: the ranks all-gather their touched rows and
//!   `n_r`-weighted values, and every rank sums them in rank order into the same coalesced
//!   gradient, `g ← Σ_r n_r·g_r / Σ_r n_r` on the union of the rows. A rank sends
//!   16 + m·(8 + 4·C) bytes, m = the most rows any rank touched, instead of (I+1)·C·4.
//! * Every rank then takes the same Adam step on the same averaged gradients, so the
//!   parameters stay bit-identical without further communication.

use tch::{Kind, Tensor};

use crate::dist::ProcessGroup;
use crate::error::bail;
use crate::error::Result;
use crate::optim::{defined_grads, touched_rows};

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
    let grads: Vec<Tensor> = defined_grads(params)
        .into_iter()
        .filter(|g| !g.is_sparse())
        .collect();
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

/// Averages the row-sparse gradients among `params` (name, parameter) across the ranks of `pg`
/// with the weights of [`average_gradients`], by all-gathering the touched rows ([module
/// docs](self)); the gradient is replaced in place by the coalesced average. Returns the bytes
/// this rank sent.
pub fn average_row_gradients(
    pg: &ProcessGroup,
    params: &[(String, Tensor)],
    weight: &Tensor,
) -> Result<u64> {
    let mut sent = 0;
    for (name, p) in params {
        let mut g = p.grad();
        if !g.defined() || !g.is_sparse() {
            continue;
        }
        let (rows, values) = touched_rows(&g, name)?;
        let (avg, bytes) = tch::no_grad(|| gather_rows(pg, &rows, &values, weight, p.size()))?;
        let _ = g.copy_(&avg);
        sent += bytes;
    }
    Ok(sent)
}

/// The weighted average of every rank's `(rows, values)` as a coalesced sparse tensor of
/// `size`, and the bytes this rank sent.
fn gather_rows(
    pg: &ProcessGroup,
    rows: &Tensor,
    values: &Tensor,
    weight: &Tensor,
    size: Vec<i64>,
) -> Result<(Tensor, u64)> {
    let (n, c, device) = (rows.size()[0], size[1], values.device());
    let w = weight.to_kind(Kind::Double).reshape([1]);
    let meta = Tensor::cat(
        &[Tensor::from(n as f64).to_device(device).reshape([1]), w],
        0,
    );
    let meta = Vec::<f64>::try_from(pg.all_gather(&meta)?.to_device(tch::Device::Cpu))?;
    let (counts, weights): (Vec<i64>, Vec<f64>) =
        meta.chunks(2).map(|m| (m[0] as i64, m[1])).unzip();
    let total: f64 = weights.iter().sum();
    let most = counts.iter().copied().max().unwrap_or(0);
    if total <= 0.0 {
        bail!("no target positions on any rank: nothing to average");
    }
    let pad = most - n;
    let rows_p = Tensor::cat(
        &[
            rows.shallow_clone(),
            Tensor::zeros([pad], (Kind::Int64, device)),
        ],
        0,
    );
    let scaled = values.to_kind(Kind::Float) * weight.to_kind(Kind::Float);
    let values_p = Tensor::cat(&[scaled, Tensor::zeros([pad, c], (Kind::Float, device))], 0);
    let (all_rows, all_values) = (pg.all_gather(&rows_p)?, pg.all_gather(&values_p)?);
    // Each rank's first n_r entries, in rank order.
    let keep: Vec<i64> = counts
        .iter()
        .enumerate()
        .flat_map(|(r, &k)| (0..k).map(move |i| r as i64 * most + i))
        .collect();
    let keep = Tensor::from_slice(&keep).to_device(device);
    let sum = Tensor::sparse_coo_tensor_indices_size(
        &all_rows.index_select(0, &keep).unsqueeze(0),
        &all_values.index_select(0, &keep),
        size.as_slice(),
        (Kind::Float, device),
        false,
    )
    .coalesce();
    let avg = (sum / total).to_kind(values.kind());
    let sent = 16 + most as u64 * (8 + 4 * c as u64);
    Ok((avg, sent))
}
