//! Training losses on the features `F` (B, T, C) and the tied item table `E` (I+1, C)
//! (docs/MODELS.md §1.5, pitfalls 14–15). Scores are `s = Σ_c F·E(id)` with the unscaled table.
//! Every loss averages over Ω = {(b, t): pos[b, t] ≠ 0} and is computed in fp32.
//!
//! The table reaches a loss as an [`ItemLookup`]: a plain tensor (the ID table), or a model's
//! item table composed from features (`crate::item_table`, docs/MODELS.md §6.2), of which the
//! sampled losses compose only the rows they gather and CE the whole table.

use tch::{Kind, Reduction, Tensor};

/// The item side of a loss: rows of the tied table `E`, the whole table, and its L2 penalty.
pub trait ItemLookup {
    /// `E(ids)`: `ids` (…) integer → (…, C) fp32, with torch `padding_idx = 0` semantics (row
    /// 0 gets no gradient).
    fn rows(&self, ids: &Tensor) -> Tensor;
    /// `E` (I+1, C) fp32.
    fn table(&self) -> Tensor;
    /// `l2 · Σ θ²` over the table's parameters.
    fn l2_penalty(&self, l2: f64) -> Tensor;
}

impl ItemLookup for Tensor {
    fn rows(&self, ids: &Tensor) -> Tensor {
        lookup(self, ids)
    }

    fn table(&self) -> Tensor {
        self.to_kind(Kind::Float)
    }

    fn l2_penalty(&self, l2: f64) -> Tensor {
        l2_penalty(self, l2)
    }
}

/// The items 0..rows of an item table: what the full-softmax CE scores under `--cold_items`,
/// which keeps the cold items W+1..=I out of training (docs/MODELS.md §6.4).
pub struct TablePrefix<'a> {
    /// The whole table.
    pub items: &'a dyn ItemLookup,
    /// W + 1.
    pub rows: i64,
}

impl ItemLookup for TablePrefix<'_> {
    fn rows(&self, ids: &Tensor) -> Tensor {
        self.items.rows(ids)
    }

    fn table(&self) -> Tensor {
        self.items.table().narrow(0, 0, self.rows)
    }

    fn l2_penalty(&self, l2: f64) -> Tensor {
        self.items.l2_penalty(l2)
    }
}

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
pub fn bce_loss(
    feats: &Tensor,
    items: &dyn ItemLookup,
    pos: &Tensor,
    neg: &Tensor,
    l2: f64,
) -> Tensor {
    let f = feats.to_kind(Kind::Float); // (B, T, C)
    let (pos, neg) = (&ids_on(pos, &f), &ids_on(neg, &f));
    let mask = pos.ne(0).to_kind(Kind::Float); // (B, T)
    let n = mask.sum(Kind::Float).clamp_min(1.0);
    let s_pos = (&f * items.rows(pos)).sum_dim_intlist(-1, false, Kind::Float); // (B, T)
    let s_neg = (&f * items.rows(neg)).sum_dim_intlist(-1, false, Kind::Float); // (B, T)
    let l_pos = ((-s_pos).softplus() * &mask).sum(Kind::Float) / &n;
    let l_neg = (s_neg.softplus() * &mask).sum(Kind::Float) / &n;
    l_pos + l_neg + items.l2_penalty(l2)
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

/// Full-softmax cross-entropy over all items, `mean_Ω −log softmax(F Eᵀ)[pos] + l2·Σ E²`
/// (column 0, padding, never competes), computed in blocks of `chunk` items so that no
/// (|Ω|, I+1) logit matrix exists: peak memory O(|Ω|·chunk) instead of O(|Ω|·I).
///
/// Two passes over the item blocks without autograd: the log-sum-exp `lse = log Σ_j e^{s_j}`
/// (running maximum), then the gradients `∂L/∂F = (softmax·E − E(pos))/|Ω|` and
/// `∂L/∂E = (softmaxᵀ F − onehot(pos)ᵀ F)/|Ω|`, each block's softmax recomputed from `lse`.
/// They reach autograd through `S − detach(S)` with `S = Σ F ∘ ∂L/∂F + Σ E ∘ ∂L/∂E`, which is
/// exactly 0 in value and has exactly those gradients; the returned value is the loss itself.
/// Equal to the one-matrix form (loss and gradients within float tolerance; tests).
pub fn ce_loss(
    feats: &Tensor,
    items: &dyn ItemLookup,
    pos: &Tensor,
    l2: f64,
    chunk: usize,
) -> Tensor {
    let (f, target) = select_targets(feats, pos); // (|Ω|, C), (|Ω|)
    let rows = target.size()[0];
    if rows == 0 {
        return items.l2_penalty(l2) + (feats.sum(Kind::Float) * 0.0);
    }
    let e = items.table(); // (I+1, C)
    let (value, grad_f, grad_e) = tch::no_grad(|| chunked_softmax_ce(&f, &e, &target, chunk));
    let s = (&f * grad_f).sum(Kind::Float) + (&e * grad_e).sum(Kind::Float);
    &s - s.detach() + value + items.l2_penalty(l2)
}

/// The value and gradients of the mean full-softmax CE of [`ce_loss`], block by block.
fn chunked_softmax_ce(
    f: &Tensor,
    e: &Tensor,
    target: &Tensor,
    chunk: usize,
) -> (Tensor, Tensor, Tensor) {
    let (rows, width) = (f.size()[0], e.size()[0]);
    let chunk = (chunk as i64).clamp(1, (width - 1).max(1));
    // Items 1..=I in blocks; column 0 (padding) never competes and its row gets no gradient.
    let blocks = || {
        (1..width)
            .step_by(chunk as usize)
            .map(move |s| (s, chunk.min(width - s)))
    };
    let logits = |start: i64, len: i64| f.matmul(&e.narrow(0, start, len).tr()); // (|Ω|, len)
    let mut max = Tensor::full([rows, 1], f64::NEG_INFINITY, (Kind::Float, f.device()));
    let mut sum = Tensor::zeros([rows, 1], (Kind::Float, f.device()));
    for (start, len) in blocks() {
        let l = logits(start, len);
        let new_max = max.maximum(&l.amax([1], true));
        sum = sum * (&max - &new_max).exp()
            + (l - &new_max).exp().sum_dim_intlist(1, true, Kind::Float);
        max = new_max;
    }
    let lse = sum.log() + max; // (|Ω|, 1)
    let scale = 1.0 / rows as f64;
    let mut grad_f = f.zeros_like();
    let grad_e = e.zeros_like();
    for (start, len) in blocks() {
        let p = (logits(start, len) - &lse).exp() * scale; // (|Ω|, len) softmax / |Ω|
        grad_f += p.matmul(&e.narrow(0, start, len));
        grad_e.narrow(0, start, len).copy_(&p.tr().matmul(f));
    }
    let e_pos = e.index_select(0, target); // (|Ω|, C)
    grad_f -= &e_pos * scale;
    let grad_e = grad_e.index_add(0, target, &(f * -scale));
    let s_pos = (f * &e_pos).sum_dim_intlist(1, true, Kind::Float);
    let value = (lse - s_pos).mean(Kind::Float);
    (value, grad_f, grad_e)
}

/// gBCE of gSASRec (Petrov & Macdonald, RecSys 2023) with N uniform negatives per sequence,
/// `neg` (B, N): with the sampling rate `α = N/(I−1)` and `β = α(t(1 − 1/α) + 1/α)` (`t` =
/// `--gbce_t`; t = 0 gives β = 1, plain BCE with N negatives), and the logits offset by the
/// prior `z = s − δ`, `δ = ln(I − 1)`,
/// `L = mean_Ω [β·softplus(−z⁺) + Σ_j softplus(z⁻_j)] / (N + 1) + l2·Σ E²`, i.e. BCE on the
/// generalised positive probability `σ(z⁺)^β` and the negatives, averaged over the N + 1 terms
/// of a position as in gSASRec. A negative equal to the position's positive is left out.
///
/// Two departures from gSASRec's code, with their ablation in docs/MODELS.md §1.5:
/// * **The prior offset δ.** A calibrated model gives a random item the probability ≈ 1/I, so
///   the fixed offset starts σ at the prior π = 1/(I−1) instead of ½ — the prior
///   initialisation of a rare-class logit bias, `−ln((1 − π)/π)` (Lin et al., focal loss, ICCV
///   2017). Without it the first hundreds of steps push every negative's score from 0 to
///   ≈ −ln I, which with the tied item table moves all item embeddings along one shared
///   direction and stalls ranking for ~700 steps. A constant shift of every score changes no
///   ranking, so serving and evaluation are unaffected. gSASRec has an untied output table.
/// * **Negatives per sequence** rather than per position (gSASRec) or per batch: the scores
///   are one (B, T, N) batched product, the size of a batch-shared draw's, without the
///   (B, T, N, C) gather per-position negatives need; sharing one draw across the batch
///   learned far slower.
pub fn gbce_loss(
    feats: &Tensor,
    items: &dyn ItemLookup,
    pos: &Tensor,
    neg: &Tensor,
    num_items: usize,
    t: f64,
    l2: f64,
) -> Tensor {
    let f = feats.to_kind(Kind::Float); // (B, T, C)
    let pos = ids_on(pos, &f); // (B, T)
    let neg = ids_on(neg, &f); // (B, N)
    let n = neg.size()[1];
    let mask = pos.ne(0).to_kind(Kind::Float); // (B, T)
    let beta = gbce_beta(n as f64, num_items, t);
    let delta = gbce_prior_offset(num_items);
    let z_pos = (&f * items.rows(&pos)).sum_dim_intlist(-1, false, Kind::Float) - delta; // (B, T)
    let z_neg = f.matmul(&items.rows(&neg).transpose(1, 2)) - delta; // (B, T, N)
    let keep = pos
        .unsqueeze(2)
        .ne_tensor(&neg.unsqueeze(1))
        .to_kind(Kind::Float); // (B, T, N)
    let per_pos = (-z_pos).softplus() * beta
        + (z_neg.softplus() * keep).sum_dim_intlist(-1, false, Kind::Float); // (B, T)
    let omega = mask.sum(Kind::Float).clamp_min(1.0);
    (per_pos * &mask).sum(Kind::Float) / omega / (n as f64 + 1.0) + items.l2_penalty(l2)
}

/// gBCE's logit offset `δ = ln(I − 1) = −logit(π)` for the prior `π = 1/(I − 1)`.
pub fn gbce_prior_offset(num_items: usize) -> f64 {
    ((num_items.max(2) - 1) as f64).ln()
}

/// gSASRec's β for N negatives among `num_items` items and calibration `t`:
/// `α = N/(I−1)`, `β = α(t(1 − 1/α) + 1/α)`.
pub fn gbce_beta(num_negatives: f64, num_items: usize, t: f64) -> f64 {
    let alpha = num_negatives / (num_items.max(2) - 1) as f64;
    alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
}

/// Sampled softmax with N negatives shared by the whole batch: `logits = [s⁺, F·E(neg)ᵀ]`
/// (|Ω|, 1+N), cross-entropy towards column 0; a negative equal to the position's positive is
/// masked out. With `log_q` (I+1) — `log Q(j)` of the distribution the negatives were drawn
/// from — every logit is corrected to `s_j − log Q(j)`, the positive's too (the logQ correction
/// of Yi et al., RecSys 2019, as TensorFlow's `sampled_softmax_loss`), which makes the loss an
/// unbiased estimate of full softmax for a non-uniform Q; for uniform Q it changes nothing.
/// `neg` (N) int.
pub fn sampled_softmax_loss(
    feats: &Tensor,
    items: &dyn ItemLookup,
    pos: &Tensor,
    neg: &Tensor,
    log_q: Option<&Tensor>,
    l2: f64,
) -> Tensor {
    let (f, target) = select_targets(feats, pos); // (|Ω|, C), (|Ω|)
    if target.size()[0] == 0 {
        return items.l2_penalty(l2) + (feats.sum(Kind::Float) * 0.0);
    }
    let neg = ids_on(neg, &f).reshape([-1]); // (N)
    let s_pos = (&f * items.rows(&target)).sum_dim_intlist(-1, true, Kind::Float); // (|Ω|, 1)
    let s_neg = f.matmul(&items.rows(&neg).tr()); // (|Ω|, N)
    let hit = target.unsqueeze(1).eq_tensor(&neg.unsqueeze(0)); // (|Ω|, N)
    let (s_pos, s_neg) = match log_q {
        Some(lq) => {
            let lq = lq.to_device(f.device()).to_kind(Kind::Float);
            (
                s_pos - lq.index_select(0, &target).unsqueeze(1),
                s_neg - lq.index_select(0, &neg).unsqueeze(0),
            )
        }
        None => (s_pos, s_neg),
    };
    let s_neg = s_neg.masked_fill(&hit, f64::NEG_INFINITY);
    let logits = Tensor::cat(&[s_pos, s_neg], 1); // (|Ω|, 1+N)
    let zeros = Tensor::zeros([logits.size()[0]], (Kind::Int64, logits.device()));
    let ce = logits.cross_entropy_loss::<Tensor>(&zeros, None, Reduction::Mean, -100, 0.0);
    ce + items.l2_penalty(l2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The one-matrix form `cross_entropy(F Eᵀ with column 0 at −∞, pos)`, the reference the
    /// chunked CE must equal.
    fn ce_reference(feats: &Tensor, item_emb: &Tensor, pos: &Tensor) -> Tensor {
        let (f, target) = select_targets(feats, pos);
        let logits = f.matmul(&item_emb.to_kind(Kind::Float).tr());
        let cols = Tensor::arange(logits.size()[1], (Kind::Int64, Device::Cpu));
        let logits = logits.masked_fill(&cols.eq(0), f64::NEG_INFINITY);
        logits.cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, -100, 0.0)
    }

    /// Random features (B, T, C), table (I+1, C) and positives with padding, as leaf tensors.
    fn case(seed: i64, items: i64) -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(seed);
        let feats = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let emb = Tensor::randn([items + 1, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let pos = Tensor::randint_low(1, items + 1, [3, 5], (Kind::Int64, Device::Cpu));
        let _ = pos.narrow(1, 0, 2).narrow(0, 0, 1).fill_(0); // a left-padded row
        (feats, emb, pos)
    }

    fn grads(loss: &Tensor, feats: &Tensor, emb: &Tensor) -> (Tensor, Tensor) {
        let g = Tensor::run_backward(&[loss], &[feats, emb], false, false);
        (g[0].shallow_clone(), g[1].shallow_clone())
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn chunked_ce_equals_the_one_matrix_form_in_value_and_gradients() {
        let items = 20;
        let (feats, emb, pos) = case(3, items);
        let want = ce_reference(&feats, &emb, &pos);
        let (wf, we) = grads(&want, &feats, &emb);
        for chunk in [1, 3, 7, 20, 21, 4096] {
            let got = ce_loss(&feats, &emb, &pos, 0.0, chunk);
            let (gf, ge) = grads(&got, &feats, &emb);
            let d = (got.double_value(&[]) - want.double_value(&[])).abs();
            assert!(d <= 1e-5, "chunk {chunk}: loss differs by {d}");
            assert!(max_diff(&gf, &wf) <= 1e-6, "chunk {chunk}: ∂F differs");
            assert!(max_diff(&ge, &we) <= 1e-6, "chunk {chunk}: ∂E differs");
            // Row 0 of the table (padding) never competes and gets no gradient.
            assert_eq!(ge.get(0).abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }

    #[test]
    fn logq_correction_with_a_uniform_q_changes_nothing() {
        let items = 30;
        let (feats, emb, pos) = case(5, items);
        let neg = Tensor::randint_low(1, items + 1, [12], (Kind::Int64, Device::Cpu));
        let plain = sampled_softmax_loss(&feats, &emb, &pos, &neg, None, 0.0);
        let log_q = Tensor::full(
            [items + 1],
            -(items as f64).ln(),
            (Kind::Float, Device::Cpu),
        );
        let corrected = sampled_softmax_loss(&feats, &emb, &pos, &neg, Some(&log_q), 0.0);
        let d = (plain.double_value(&[]) - corrected.double_value(&[])).abs();
        assert!(d <= 1e-6, "uniform logQ moved the loss by {d}");
        // A non-uniform Q does move it.
        let skewed =
            Tensor::arange(items + 1, (Kind::Float, Device::Cpu)).log_softmax(0, Kind::Float);
        let moved = sampled_softmax_loss(&feats, &emb, &pos, &neg, Some(&skewed), 0.0);
        assert!((moved.double_value(&[]) - plain.double_value(&[])).abs() > 1e-3);
    }

    #[test]
    fn gbce_matches_its_formula_on_hand_computed_values() {
        // Two sequences of one position each: F = (1, 2) and (0, 1); items 1..=4 with
        // E(1) = (0.5, 0), E(2) = (0, 1), E(3) = (−1, 0.25), E(4) = (0, 0); positives 2 and 4,
        // negatives {1, 3, 2} and {2, 2, 1}: a negative equal to its row's positive is left out.
        let feats = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 1.0]).view([2, 1, 2]);
        let emb = Tensor::from_slice(&[0.0f32, 0.0, 0.5, 0.0, 0.0, 1.0, -1.0, 0.25, 0.0, 0.0])
            .view([5, 2]);
        let pos = Tensor::from_slice(&[2i64, 4]).view([2, 1]);
        let neg = Tensor::from_slice(&[1i64, 3, 2, 2, 2, 1]).view([2, 3]);
        let (t, n, items) = (0.75, 3.0, 4usize);
        // α = 3/3 = 1, so β = 1·(0.75·0 + 1) = 1; δ = ln 3.
        let softplus = |x: f64| (1.0 + x.exp()).ln();
        let alpha: f64 = n / (items as f64 - 1.0);
        let beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha);
        assert_eq!(beta, 1.0);
        let d = 3f64.ln();
        assert!((gbce_prior_offset(items) - d).abs() < 1e-15);
        // Row 1: s⁺ = 2, s⁻ = 0.5, −0.5 (item 2 left out). Row 2: s⁺ = 0, s⁻ = 1, 1, 0.
        let row1 = beta * softplus(-(2.0 - d)) + softplus(0.5 - d) + softplus(-0.5 - d);
        let row2 = beta * softplus(d) + 2.0 * softplus(1.0 - d) + softplus(-d);
        let want = (row1 + row2) / 2.0 / (n + 1.0);
        let got = gbce_loss(&feats, &emb, &pos, &neg, items, t, 0.0).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // With 1 negative among 1,001 items, α = 0.001 and β = 0.001·(0.75·(1 − 1000) + 1000)
        // = 0.25075: the positive term is down-weighted; δ = ln 1000. Padding positions count
        // for nothing.
        let b = gbce_beta(1.0, 1001, 0.75);
        assert!((b - 0.25075).abs() < 1e-12, "{b}");
        assert_eq!(gbce_beta(256.0, 3417, 0.0), 1.0); // t = 0: plain BCE
        let pos = Tensor::from_slice(&[2i64, 0]).view([2, 1]);
        let one_neg = Tensor::from_slice(&[3i64, 1]).view([2, 1]);
        let got = gbce_loss(&feats, &emb, &pos, &one_neg, 1001, 0.75, 0.0).double_value(&[]);
        let d = 1000f64.ln();
        let want = (b * softplus(-(2.0 - d)) + softplus(-0.5 - d)) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
