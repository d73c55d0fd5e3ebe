"""PyTorch TiSASRec and mHC, written from the specification, as an independent reference.

Used by the parity test (models/tests/pytorch_parity.rs): a `model.safetensors` written by
sasrec-rs must load into these modules with `safetensors.torch.load_file` +
`load_state_dict(strict=True)` and give the same features.

* TiSASRec: Li, Wang & McAuley, "Time Interval Aware Self-Attention for Sequential
  Recommendation" (WSDM 2020, arXiv:2004.11780), with the module structure and state_dict names
  of pmixer/TiSASRec.pytorch (`item_emb`, `abs_pos_{K,V}_emb`, `time_matrix_{K,V}_emb`,
  `attention_layernorms`, `attention_layers.{i}.{Q,K,V}_w`, `forward_layernorms`,
  `forward_layers.{i}.conv{1,2}`, `last_layernorm`; LayerNorm eps 1e-8). Written from
  docs/MODELS.md §2.5-2.6: the reference wiring (`norm_first = false`) and Pre-LN, with the
  interval terms in their literal dense form, the (B, T, T, C) gathers E_K[R] and E_V[R] (not
  the bucketed form of §2.9).
* mHC: Xie et al., "mHC: Manifold-Constrained Hyper-Connections" (arXiv:2512.24880), written from
  docs/MODELS.md §3.2-3.8: n streams, Eq. 3/7/8 for one hyper-connection, Sinkhorn-Knopp in its
  matrix form (§3.8), and mHC-lite's permutation mix (Yang et al., arXiv:2601.05732; §3.9).
  `HyperConnection` is also used by sasrec_torch.py for SASRec + mHC.

  python tisasrec_torch.py parity WEIGHTS.safetensors CASE.safetensors CONFIG.json

CASE holds `seq` (B, T) int64, `tm` (B, T, T) int64 interval buckets and the features `feats`
(B, T, C) computed by sasrec-rs; CONFIG is the serialized `ModelConfig`. Prints JSON with the
max abs error of the fp32 forward (`max_abs_err`) and of a float64 forward (`max_abs_err_f64`)
and exits 1 if either exceeds 1e-5.
"""
import itertools
import json
import math
import sys

import torch
from torch import nn

LN_EPS = 1e-8  # docs/MODELS.md, pitfall 11
MASK_FILL = -2.0 ** 32 + 1  # docs/MODELS.md §2.6, pitfall 9
RMS_EPS = 1e-6  # docs/MODELS.md §3.3: r = sqrt(mean(x^2) + 1e-6)
SINKHORN_EPS = 1e-6  # docs/MODELS.md §3.8


# ---------------------------------------------------------------------------------------------
# mHC (docs/MODELS.md §3)


def sinkhorn_knopp(logits, iters, eps=SINKHORN_EPS):
    """docs/MODELS.md §3.8, matrix form: K = exp(L - max L) per matrix, then `iters` rounds of
    column normalisation followed by row normalisation. (..., n, n) -> (..., n, n)."""
    m = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))
    for _ in range(iters):
        m = m / (m.sum(dim=-2, keepdim=True) + eps)  # sum over rows: every column -> 1
        m = m / (m.sum(dim=-1, keepdim=True) + eps)  # sum over columns: every row -> 1
    return m


def permutation_matrices(n):
    """The n! permutation matrices, P[i, sigma(i)] = 1, sigma in lexicographic order (the
    identity first): (n!, n, n)."""
    perms = list(itertools.permutations(range(n)))
    p = torch.zeros(len(perms), n, n)
    for k, sigma in enumerate(perms):
        for i, j in enumerate(sigma):
            p[k, i, j] = 1.0
    return p


class HyperConnection(nn.Module):
    """One mHC module around a sub-layer F (docs/MODELS.md §3.3, mHC Eq. 3, 7, 8).

    `phi` (nC, 2n + r) with columns [pre (n) | post (n) | res (r)], `bias` (2n + r) in the same
    layout, `alpha` (3) = [alpha_pre, alpha_post, alpha_res]; r = n^2 (Sinkhorn, H_res row-major
    with rows = output streams) or n! (mHC-lite, one logit per permutation).
    """

    def __init__(self, c, mhc):
        super().__init__()
        self.n = n = mhc["expansion_rate"]
        self.iters = mhc["sinkhorn_iter"]
        self.lite = mhc.get("h_res", "sinkhorn") == "lite"
        r = math.factorial(n) if self.lite else n * n
        self.phi = nn.Parameter(torch.zeros(n * c, 2 * n + r))
        self.bias = nn.Parameter(torch.zeros(2 * n + r))
        self.alpha = nn.Parameter(torch.zeros(3))
        if self.lite:
            self.register_buffer("perms", permutation_matrices(n), persistent=False)

    def coefficients(self, x):
        """H_pre (B, T, n), H_post (B, T, n), H_res (B, T, n, n) for streams x (B, T, n, C)."""
        b, t, n, c = x.shape
        xv = x.reshape(b, t, n * c)  # vec(x), stream-major: xv[s*C + c] = x[s, c]
        r = torch.sqrt(xv.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS)
        m = xv @ self.phi / r  # (B, T, 2n + r)
        a_pre, a_post, a_res = self.alpha[0], self.alpha[1], self.alpha[2]
        ht_pre = a_pre * m[..., :n] + self.bias[:n]
        ht_post = a_post * m[..., n:2 * n] + self.bias[n:2 * n]
        ht_res = a_res * m[..., 2 * n:] + self.bias[2 * n:]
        h_pre = torch.sigmoid(ht_pre)
        h_post = 2.0 * torch.sigmoid(ht_post)
        if self.lite:  # H_res = sum_k softmax(a)_k P_k (§3.9)
            w = torch.softmax(ht_res, dim=-1)  # (B, T, n!)
            h_res = torch.einsum("btk,kij->btij", w, self.perms.to(w.dtype))
        else:
            h_res = sinkhorn_knopp(ht_res.reshape(b, t, n, n), self.iters)
        return h_pre, h_post, h_res

    def forward(self, x, f):
        """x <- H_res x + H_post^T F(H_pre x): x (B, T, n, C), f (B, T, C) -> (B, T, C)."""
        h_pre, h_post, h_res = self.coefficients(x)
        u = torch.einsum("btj,btjc->btc", h_pre, x)  # H_pre x: (B, T, C)
        y = f(u)  # (B, T, C)
        mixed = torch.einsum("btij,btjc->btic", h_res, x)  # rows of H_res = output streams
        return mixed + h_post.unsqueeze(-1) * y.unsqueeze(-2)  # (B, T, n, C)


def expand_streams(x, n):
    """n copies of the embedding (docs/MODELS.md §3.2): (B, T, C) -> (B, T, n, C)."""
    return torch.stack([x] * n, dim=2)


def merge_streams(x):
    """The mean of the streams (docs/MODELS.md §3.2): (B, T, n, C) -> (B, T, C)."""
    return x.mean(dim=2)


# ---------------------------------------------------------------------------------------------
# TiSASRec (docs/MODELS.md §2)


class PointWiseFeedForward(nn.Module):
    """FFN(x) = Dropout(W2 ReLU(Dropout(W1 x))) with 1x1 convolutions; no residual inside (the
    wirings below write it out)."""

    def __init__(self, c, p):
        super().__init__()
        self.conv1 = nn.Conv1d(c, c, kernel_size=1)
        self.dropout1 = nn.Dropout(p)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(c, c, kernel_size=1)
        self.dropout2 = nn.Dropout(p)

    def forward(self, x):  # (B, T, C)
        y = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(x.transpose(-1, -2))))))
        return y.transpose(-1, -2)


class TimeAwareMultiHeadAttention(nn.Module):
    """docs/MODELS.md §2.5 step 4 and §2.6, literally:
    S_ij = Q'_i . (K'_j + PK_j + RK_ij) / sqrt(dh) per head, blocked where the query row is
    padding or j > i (fill -2^32+1), P = Dropout(softmax_j S), out_i = sum_j P_ij (V'_j + PV_j +
    RV_ij); no output projection."""

    def __init__(self, c, heads, p):
        super().__init__()
        self.heads = heads
        self.Q_w = nn.Linear(c, c)
        self.K_w = nn.Linear(c, c)
        self.V_w = nn.Linear(c, c)
        self.dropout = nn.Dropout(p)

    def forward(self, queries, keys, pad, pk, pv, rk, rv):
        # queries, keys (B, T, C); pad (B, T) bool; pk, pv (T, C); rk, rv (B, T, T, C)
        b, t, c = queries.shape
        h, dh = self.heads, c // self.heads
        q = self.Q_w(queries).reshape(b, t, h, dh)  # Q'_i, head i owns channels i*dh..(i+1)*dh
        k_full = self.K_w(keys)[:, None, :, :] + pk[None, None] + rk  # (B, T_i, T_j, C)
        v_full = self.V_w(keys)[:, None, :, :] + pv[None, None] + rv  # (B, T_i, T_j, C)
        s = torch.einsum("bihd,bijhd->bhij", q, k_full.reshape(b, t, t, h, dh)) / math.sqrt(dh)
        causal = torch.ones(t, t, dtype=torch.bool, device=pad.device).triu(1)  # j > i
        blocked = pad[:, None, :, None] | causal[None, None]  # (B, 1, T, T)
        s = s.masked_fill(blocked, MASK_FILL)
        attn = self.dropout(torch.softmax(s, dim=-1))  # (B, h, T_i, T_j)
        out = torch.einsum("bhij,bijhd->bihd", attn, v_full.reshape(b, t, t, h, dh))
        return out.reshape(b, t, c)


class TiSASRec(nn.Module):
    """TiSASRec (docs/MODELS.md §2.5), optionally with mHC residual streams (§3.4-3.5)."""

    def __init__(self, num_items, maxlen, c, blocks, heads, p, time_span, norm_first, mhc=None):
        super().__init__()
        self.norm_first = norm_first
        self.mhc = mhc
        self.item_emb = nn.Embedding(num_items + 1, c, padding_idx=0)
        self.item_emb_dropout = nn.Dropout(p)
        self.abs_pos_K_emb = nn.Embedding(maxlen, c)
        self.abs_pos_V_emb = nn.Embedding(maxlen, c)
        self.time_matrix_K_emb = nn.Embedding(time_span + 1, c)
        self.time_matrix_V_emb = nn.Embedding(time_span + 1, c)
        self.abs_pos_K_emb_dropout = nn.Dropout(p)
        self.abs_pos_V_emb_dropout = nn.Dropout(p)
        self.time_matrix_K_dropout = nn.Dropout(p)
        self.time_matrix_V_dropout = nn.Dropout(p)
        self.attention_layernorms = nn.ModuleList([nn.LayerNorm(c, eps=LN_EPS) for _ in range(blocks)])
        self.attention_layers = nn.ModuleList(
            [TimeAwareMultiHeadAttention(c, heads, p) for _ in range(blocks)])
        self.forward_layernorms = nn.ModuleList([nn.LayerNorm(c, eps=LN_EPS) for _ in range(blocks)])
        self.forward_layers = nn.ModuleList([PointWiseFeedForward(c, p) for _ in range(blocks)])
        self.last_layernorm = nn.LayerNorm(c, eps=LN_EPS)
        if mhc is not None:
            self.mhc_attention = nn.ModuleList([HyperConnection(c, mhc) for _ in range(blocks)])
            self.mhc_ffn = nn.ModuleList([HyperConnection(c, mhc) for _ in range(blocks)])

    def log2feats(self, seq, tm):  # seq (B, T) int64, tm (B, T, T) int64 in 0..=k
        c = self.item_emb.embedding_dim
        pad = seq == 0  # (B, T)
        keep = (~pad).unsqueeze(-1).to(self.item_emb.weight.dtype)  # (B, T, 1)
        x = self.item_emb_dropout(self.item_emb(seq) * c ** 0.5) * keep  # step 1
        positions = torch.arange(seq.shape[1], device=seq.device)  # 0..T-1, padding included
        pk = self.abs_pos_K_emb_dropout(self.abs_pos_K_emb(positions))  # (T, C)
        pv = self.abs_pos_V_emb_dropout(self.abs_pos_V_emb(positions))
        rk = self.time_matrix_K_dropout(self.time_matrix_K_emb(tm))  # (B, T, T, C) = E_K[R]
        rv = self.time_matrix_V_dropout(self.time_matrix_V_emb(tm))  # (B, T, T, C) = E_V[R]
        if self.mhc is not None:
            x = expand_streams(x, self.mhc["expansion_rate"])  # (B, T, n, C)
        for i in range(len(self.attention_layers)):
            ln_a, attn = self.attention_layernorms[i], self.attention_layers[i]
            ln_f, ffn = self.forward_layernorms[i], self.forward_layers[i]

            def attend(q_in, kv_in):
                return attn(q_in, kv_in, pad, pk, pv, rk, rv)

            if self.mhc is not None:  # §3.4: F_att(u) = A(LN(u), LN(u)), F_ffn(u) = FFN(LN(u))
                x = self.mhc_attention[i](x, lambda u: attend(ln_a(u), ln_a(u)))
                x = self.mhc_ffn[i](x, lambda u: ffn(ln_f(u)))
                x = x * keep.unsqueeze(-1)  # §3.5: every stream, after every block
            elif self.norm_first:  # Pre-LN
                h = ln_a(x)
                x = x + attend(h, h)
                x = x + ffn(ln_f(x))
                x = x * keep
            else:  # the reference wiring (§2.5 step 3)
                q = ln_a(x)
                x = q + attend(q, x)
                x = ln_f(x)
                x = x + ffn(x)
                x = x * keep
        if self.mhc is not None:
            x = merge_streams(x)
        return self.last_layernorm(x)  # (B, T, C)


def parity(weights, case, config):
    from safetensors.torch import load_file
    cfg = json.load(open(config))
    if cfg["backbone"] != "tisasrec":
        sys.exit(f"tisasrec_torch.py: backbone {cfg['backbone']!r}; use sasrec_torch.py")
    m = TiSASRec(cfg["num_items"], cfg["maxlen"], cfg["hidden_units"], cfg["num_blocks"],
                 cfg["num_heads"], cfg["dropout_rate"], cfg["time_span"], cfg["norm_first"],
                 cfg.get("mhc"))
    m.load_state_dict(load_file(weights), strict=True)
    m.eval()
    data = load_file(case)
    seq, tm, want = data["seq"].long(), data["tm"].long(), data["feats"]
    errs = {}
    with torch.no_grad():
        for key, dtype in [("max_abs_err", torch.float32), ("max_abs_err_f64", torch.float64)]:
            feats = m.to(dtype).log2feats(seq, tm)
            if feats.shape != want.shape:
                sys.exit(f"features have shape {tuple(feats.shape)}, sasrec-rs gave "
                         f"{tuple(want.shape)}")
            errs[key] = (feats - want.to(dtype)).abs().max().item()
    print(json.dumps(errs))
    tol = float(cfg.get("tolerance", 1e-5))
    return 0 if max(errs.values()) <= tol else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "parity":
        sys.exit(parity(*sys.argv[2:5]))
    sys.exit(__doc__)
