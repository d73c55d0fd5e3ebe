"""PyTorch SASRec with pmixer/SASRec.pytorch's module structure and state_dict names.

Used (1) by the parity test: a `model.safetensors` written by sasrec-rs must load into this
module with `safetensors.torch.load_file` + `load_state_dict(strict=True)` and give the same
outputs; (2) as the same-machine PyTorch baseline of benches/epoch_speed.sh.

Written from the specification in docs/MODELS.md §1.3-1.5 of this repository
(torch.nn.MultiheadAttention with the fused in_proj, 1x1-conv FFN, LayerNorm eps 1e-8, last
LayerNorm, tied item embeddings) in the four block wirings of `block_wiring`: post_ln (the
default), pre_ln (also `norm_first`), original (the SASRec paper's code as SASRec+ adapted it,
Klenitskiy & Vasilev, RecSys 2023: Q = LN(x), x = Q + MHA(Q, x, x), y = LN'(x), x = (y + FFN(y))
times the non-padding mask) and gated (LiGR, arXiv 2502.03417: x = x + sigmoid(W x + b) * F(LN(x))
around each sub-layer, one nn.Linear gate per branch). `padding` (docs/MODELS.md §1.4): pmixer
(padded keys attend, the newest item at position T), masked (padded keys blocked by a float
attention mask) or right (also positions cumsum(seq != 0): the oldest item at 1,
as SASRec+'s right-padded window). With an `mhc` config,
SASRec + mHC (docs/MODELS.md §3.2-3.4: n streams, Pre-LN sub-layers F_att(u) = MHA(LN(u)),
F_ffn(u) = FFN(LN(u)), streams merged by their mean), using the `HyperConnection` module of
tisasrec_torch.py (written from the mHC paper's equations, arXiv:2512.24880).

  python sasrec_torch.py parity WEIGHTS.safetensors CASE.safetensors CONFIG.json
  python sasrec_torch.py init CONFIG.json SEED
  python sasrec_torch.py speed --batches N [--threads T]

`init` draws the module as SASRec+ initialises it (`normal_0.02`: every nn.Linear / nn.Conv1d
weight and nn.Embedding N(0, 0.02^2) with zero biases and padding rows, LayerNorm 1/0; the
MultiheadAttention in_proj is no nn.Linear and keeps torch's default) and prints each tensor's
mean, std and whether it is all zero.
"""
import json
import sys
import time

import torch
from torch import nn

from tisasrec_torch import HyperConnection, PointWiseFeedForward, expand_streams, merge_streams


class SASRec(nn.Module):
    def __init__(self, num_items, maxlen, c, blocks, heads, p, wiring, mhc=None,
                 padding="pmixer"):
        super().__init__()
        if padding not in ("pmixer", "masked", "right"):
            sys.exit(f"sasrec_torch.py: unknown padding {padding!r}")
        self.padding = padding
        self.heads = heads
        if wiring not in ("post_ln", "pre_ln", "original", "gated"):
            sys.exit(f"sasrec_torch.py: unknown block wiring {wiring!r}")
        self.wiring = wiring
        self.mhc = mhc
        self.item_emb = nn.Embedding(num_items + 1, c, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen + 1, c, padding_idx=0)
        self.emb_dropout = nn.Dropout(p)
        self.attention_layernorms = nn.ModuleList([nn.LayerNorm(c, eps=1e-8) for _ in range(blocks)])
        self.attention_layers = nn.ModuleList([nn.MultiheadAttention(c, heads, p) for _ in range(blocks)])
        self.forward_layernorms = nn.ModuleList([nn.LayerNorm(c, eps=1e-8) for _ in range(blocks)])
        self.forward_layers = nn.ModuleList([PointWiseFeedForward(c, p) for _ in range(blocks)])
        self.last_layernorm = nn.LayerNorm(c, eps=1e-8)
        if wiring == "gated":  # LiGR's gates, one Linear(C, C) per residual branch
            self.gate_attention = nn.ModuleList([nn.Linear(c, c) for _ in range(blocks)])
            self.gate_ffn = nn.ModuleList([nn.Linear(c, c) for _ in range(blocks)])
        if mhc is not None:
            self.mhc_attention = nn.ModuleList([HyperConnection(c, mhc) for _ in range(blocks)])
            self.mhc_ffn = nn.ModuleList([HyperConnection(c, mhc) for _ in range(blocks)])

    def log2feats(self, seq):  # (B, T) int64
        x = self.item_emb(seq) * self.item_emb.embedding_dim ** 0.5
        t = seq.shape[1]
        real = (seq != 0).long()
        if self.padding == "right":  # as SASRec+'s right-padded window: the oldest item at 1
            positions = torch.cumsum(real, 1) * real
        else:  # the newest item at T
            positions = torch.arange(1, t + 1, device=seq.device).unsqueeze(0) * real
        x = self.emb_dropout(x + self.pos_emb(positions))
        mask = ~torch.tril(torch.ones((t, t), dtype=torch.bool, device=seq.device))
        if self.padding != "pmixer":
            # Padded keys blocked too, by a float mask adding -1e30: blocked keys get weight 0
            # and a fully blocked (padding) row is uniform in float32 and float64 alike, as the
            # -2^32+1 fill of sasrec-rs gives.
            blocked = mask.unsqueeze(0) | (seq == 0).unsqueeze(1)  # (B, T, T)
            blocked = blocked.repeat_interleave(self.heads, 0)  # (B*h, T, T)
            mask = blocked.to(x.dtype) * -1e30
        if self.mhc is not None:
            return self.last_layernorm(merge_streams(self.mhc_blocks(x, mask)))
        keep = (seq != 0).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        for i, (ln_a, mha, ln_f, ffn) in enumerate(zip(
                self.attention_layernorms, self.attention_layers, self.forward_layernorms,
                self.forward_layers)):
            x = x.transpose(0, 1)  # (T, B, C)
            if self.wiring == "gated":  # x + sigmoid(W x + b) * F(LN(x)) around each sub-layer
                q = ln_a(x)
                a, _ = mha(q, q, q, attn_mask=mask, need_weights=False)
                x = (x + torch.sigmoid(self.gate_attention[i](x)) * a).transpose(0, 1)
                x = x + torch.sigmoid(self.gate_ffn[i](x)) * ffn(ln_f(x))
            elif self.wiring == "pre_ln":
                q = ln_a(x)
                a, _ = mha(q, q, q, attn_mask=mask, need_weights=False)
                x = (x + a).transpose(0, 1)
                x = x + ffn(ln_f(x))
            elif self.wiring == "original":
                q = ln_a(x)  # only the query is normalised; K and V read x
                a, _ = mha(q, x, x, attn_mask=mask, need_weights=False)
                y = ln_f((q + a).transpose(0, 1))
                x = (y + ffn(y)) * keep
            else:
                a, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
                x = ln_a(x + a).transpose(0, 1)
                x = ln_f(x + ffn(x))
        return self.last_layernorm(x)

    def mhc_blocks(self, x, mask):
        """The blocks with mHC residual streams: (B, T, C) -> (B, T, n, C)."""
        x = expand_streams(x, self.mhc["expansion_rate"])
        for i, (ln_a, mha, ln_f, ffn) in enumerate(zip(
                self.attention_layernorms, self.attention_layers, self.forward_layernorms,
                self.forward_layers)):

            def f_att(u):  # (B, T, C) -> (B, T, C); Q = K = V = LN(u)
                h = ln_a(u).transpose(0, 1)  # (T, B, C)
                a, _ = mha(h, h, h, attn_mask=mask, need_weights=False)
                return a.transpose(0, 1)

            x = self.mhc_attention[i](x, f_att)
            x = self.mhc_ffn[i](x, lambda u: ffn(ln_f(u)))
        return x

    def forward(self, seq, pos, neg):
        f = self.log2feats(seq)
        return (f * self.item_emb(pos)).sum(-1), (f * self.item_emb(neg)).sum(-1)


def wiring(cfg):
    """The config's block wiring; configs written before `block_wiring` have `norm_first`."""
    return cfg.get("block_wiring") or ("pre_ln" if cfg["norm_first"] else "post_ln")


def model(cfg):
    return SASRec(cfg["num_items"], cfg["maxlen"], cfg["hidden_units"], cfg["num_blocks"],
                  cfg["num_heads"], cfg["dropout_rate"], wiring(cfg), cfg.get("mhc"),
                  cfg.get("padding", "pmixer"))


def normal_002(module):
    """SASRec+'s `_init_weights`, applied to every submodule."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)


def init_stats(config, seed):
    cfg = json.load(open(config))
    torch.manual_seed(int(seed))
    m = model(cfg)
    m.apply(normal_002)
    stats = {}
    for name, t in m.state_dict().items():
        rows = t[1:] if name in ("item_emb.weight", "pos_emb.weight") else t
        stats[name] = {"mean": rows.mean().item(), "std": rows.std().item(),
                       "zero": bool((t == 0).all()), "row0_zero": bool((t[0] == 0).all())}
    print(json.dumps(stats))
    return 0


def parity(weights, case, config):
    from safetensors.torch import load_file
    cfg = json.load(open(config))
    if cfg["backbone"] != "sasrec":
        sys.exit(f"sasrec_torch.py: backbone {cfg['backbone']!r}; use tisasrec_torch.py")
    m = model(cfg)
    m.load_state_dict(load_file(weights), strict=True)
    m.eval()
    data = load_file(case)
    with torch.no_grad():
        feats = m.log2feats(data["seq"].long())
    if feats.shape != data["feats"].shape:
        sys.exit(f"features have shape {tuple(feats.shape)}, sasrec-rs gave "
                 f"{tuple(data['feats'].shape)}")
    err = (feats - data["feats"]).abs().max().item()
    print(json.dumps({"max_abs_err": err}))
    return 0 if err <= float(cfg.get("tolerance", 1e-5)) else 1


def speed(batches, threads, device="cpu"):
    """Seconds for `batches` training steps of the reference loop on 128x200 batches (ML-1M
    shapes) on `device`, after 5 warm-up steps (CUDA context, kernel selection)."""
    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    m = SASRec(3416, 200, 50, 2, 1, 0.2, "post_ln").to(device)
    for _, p in m.named_parameters():
        try:
            nn.init.xavier_normal_(p.data)
        except ValueError:
            pass
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.9, 0.98))
    bce = nn.BCEWithLogitsLoss()
    seq = torch.randint(1, 3417, (128, 200), device=device)
    pos = torch.randint(1, 3417, (128, 200), device=device)
    neg = torch.randint(1, 3417, (128, 200), device=device)
    m.train()

    def step():
        pl, nl = m(seq, pos, neg)
        idx = torch.where(pos != 0)
        loss = bce(pl[idx], torch.ones_like(pl[idx])) + bce(nl[idx], torch.zeros_like(nl[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5 if device != "cpu" else 0):
        step()
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    if device != "cpu":
        torch.cuda.synchronize()
    print(json.dumps({"batches": batches, "seconds": time.perf_counter() - start, "device": device}))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "parity":
        sys.exit(parity(*sys.argv[2:5]))
    if sys.argv[1] == "init":
        sys.exit(init_stats(*sys.argv[2:4]))
    if sys.argv[1] == "speed":
        args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
        sys.exit(speed(int(args.get("--batches", 48)), int(args.get("--threads", 0)),
                       args.get("--device", "cpu")))
    sys.exit(f"unknown mode {sys.argv[1]}")
