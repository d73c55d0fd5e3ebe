//! Training losses on the features `F` (B, T, C) and the tied item table `E` (I+1, C)
//! (docs/MODELS.md §1.5, pitfalls 14–15). Scores are `s = Σ_c F·E(id)` with the unscaled table.
//! Every loss averages over Ω = {(b, t): pos[b, t] ≠ 0} and is computed in fp32.

use tch::{Kind, Reduction, Tensor};

/// `l2 · Σ E²` (squared Frobenius norm of the item table; pmixer SASRec since PR #50).
pub fn l2_penalty(item_emb: &Tensor, l2_emb: f64) -> Tensor {
    if l2_emb == 0.0 {
        return Tensor::zeros([], (Kind::Float, item_emb.device()));
    }
    item_emb.to_kind(Kind::Float).square().sum(Kind::Float) * l2_emb
}

/// Rows of `E` for `ids` with torch `padding_idx = 0` semantics (row 0 gets no gradient).
fn lookup(item_emb: &Tensor, ids: &Tensor) -> Tensor {
    let ids = ids_on(ids, item_emb);
    Tensor::embedding(&item_emb.to_kind(Kind::Float), &ids, 0, false, false)
}

/// Integer targets on the device of `like` (the sampler produces CPU int32/int64 tensors).
fn ids_on(ids: &Tensor, like: &Tensor) -> Tensor {
    ids.to_device(like.device()).to_kind(Kind::Int64)
}

/// The reference loss: `mean_Ω softplus(−s⁺) + mean_Ω softplus(s⁻) + l2·Σ E²`, i.e.
/// `BCEWithLogits(s⁺, 1) + BCEWithLogits(s⁻, 0)` each averaged over Ω, with
/// `s± = Σ_c F·E(pos/neg)`. `feats` (B, T, C), `pos`, `neg` (B, T) int, 0 = padding.
/// Returns a scalar (0 when Ω is empty, instead of the reference's NaN).
pub fn bce_loss(feats: &Tensor, item_emb: &Tensor, pos: &Tensor, neg: &Tensor, l2: f64) -> Tensor {
    let f = feats.to_kind(Kind::Float); // (B, T, C)
    let (pos, neg) = (&ids_on(pos, &f), &ids_on(neg, &f));
    let mask = pos.ne(0).to_kind(Kind::Float); // (B, T)
    let n = mask.sum(Kind::Float).clamp_min(1.0);
    let s_pos = (&f * lookup(item_emb, pos)).sum_dim_intlist(-1, false, Kind::Float); // (B, T)
    let s_neg = (&f * lookup(item_emb, neg)).sum_dim_intlist(-1, false, Kind::Float); // (B, T)
    let l_pos = ((-s_pos).softplus() * &mask).sum(Kind::Float) / &n;
    let l_neg = (s_neg.softplus() * &mask).sum(Kind::Float) / &n;
    l_pos + l_neg + l2_penalty(item_emb, l2)
}

/// Features and targets at the positions in Ω: ((|Ω|, C) fp32, (|Ω|) int64).
fn select_targets(feats: &Tensor, pos: &Tensor) -> (Tensor, Tensor) {
    let c = *feats.size().last().expect("feats is (B, T, C)");
    let pos = ids_on(pos, feats).reshape([-1]); // (B·T)
    let idx = pos.ne(0).nonzero().reshape([-1]); // (|Ω|)
    let f = feats
        .to_kind(Kind::Float)
        .reshape([-1, c])
        .index_select(0, &idx); // (|Ω|, C)
    (f, pos.index_select(0, &idx))
}

/// Full-softmax cross-entropy over all items: `logits = F Eᵀ` (|Ω|, I+1) with the padding
/// column 0 masked to −∞, `mean_Ω −log softmax(logits)[pos] + l2·Σ E²`.
pub fn ce_loss(feats: &Tensor, item_emb: &Tensor, pos: &Tensor, l2: f64) -> Tensor {
    let (f, target) = select_targets(feats, pos); // (|Ω|, C), (|Ω|)
    if target.size()[0] == 0 {
        return l2_penalty(item_emb, l2) + (feats.sum(Kind::Float) * 0.0);
    }
    let logits = f.matmul(&item_emb.to_kind(Kind::Float).tr()); // (|Ω|, I+1)
    let cols = Tensor::arange(logits.size()[1], (Kind::Int64, logits.device()));
    let logits = logits.masked_fill(&cols.eq(0), f64::NEG_INFINITY);
    let ce = logits.cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, -100, 0.0);
    ce + l2_penalty(item_emb, l2)
}

/// Sampled softmax with N negatives shared by the whole batch: `logits = [s⁺, F·E(neg)ᵀ]`
/// (|Ω|, 1+N), cross-entropy towards column 0; a negative equal to the position's positive is
/// masked out (no log-Q correction: negatives are drawn uniformly). `neg` (N) int.
pub fn sampled_softmax_loss(
    feats: &Tensor,
    item_emb: &Tensor,
    pos: &Tensor,
    neg: &Tensor,
    l2: f64,
) -> Tensor {
    let (f, target) = select_targets(feats, pos); // (|Ω|, C), (|Ω|)
    if target.size()[0] == 0 {
        return l2_penalty(item_emb, l2) + (feats.sum(Kind::Float) * 0.0);
    }
    let neg = ids_on(neg, &f).reshape([-1]); // (N)
    let s_pos = (&f * lookup(item_emb, &target)).sum_dim_intlist(-1, true, Kind::Float); // (|Ω|, 1)
    let s_neg = f.matmul(&lookup(item_emb, &neg).tr()); // (|Ω|, N)
    let hit = target.unsqueeze(1).eq_tensor(&neg.unsqueeze(0)); // (|Ω|, N)
    let s_neg = s_neg.masked_fill(&hit, f64::NEG_INFINITY);
    let logits = Tensor::cat(&[s_pos, s_neg], 1); // (|Ω|, 1+N)
    let zeros = Tensor::zeros([logits.size()[0]], (Kind::Int64, logits.device()));
    let ce = logits.cross_entropy_loss::<Tensor>(&zeros, None, Reduction::Mean, -100, 0.0);
    ce + l2_penalty(item_emb, l2)
}
