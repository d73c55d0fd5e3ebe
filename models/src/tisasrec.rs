//! TiSASRec (Li, Wang & McAuley, "Time Interval Aware Self-Attention for Sequential
//! Recommendation", WSDM 2020, arXiv:2004.11780) as ported in `pmixer/TiSASRec.pytorch`
//! (`model.py`, commit `b18341f`), and TiSASRec + mHC (arXiv:2512.24880).
//! Spec: docs/MODELS.md §2.5, §2.6 (pmixer masking) and §3.4.
//!
//! Residual variants: `norm_first = false` maps to [`NormPlacement::Original`], the reference
//! wiring (`Q = LN(X)`, `X ← Q + A(Q, X)`, `X ← LN_ffn(X)`, `X ← X + FFN(X)`, `X ← X·¬pad`);
//! `norm_first = true` maps to standard Pre-LN (`X ← X + A(LN(X), LN(X))`,
//! `X ← X + FFN(LN(X))`, `X ← X·¬pad`). Post-LN is available through
//! [`TiSasRec::with_placement`]. mHC models use Pre-LN sub-layers with `Q = K = V = LN(u)`
//! (docs/MODELS.md §3.4; K/V see `LN(u)`, not `u`, for scale stability).
//!
//! Row 0 of `item_emb`: pmixer draws it with `xavier_uniform_` and never re-zeroes it, but
//! `padding_idx = 0` freezes it. We zero it (as the TF code does) and keep `padding_idx = 0`.
//! This changes no output: padded inputs are multiplied by `¬pad` right after the lookup, and
//! item 0 is never a candidate (scores mask column 0). It only keeps checkpoints and the L2 term
//! free of a meaningless random row.

use sasrec_shared::config::{ModelConfig, TimeDropout};
use tch::nn;

use crate::init::{InitRules, Param};
use crate::item_table::ItemTable;
use crate::layers::attention::{causal_mask, split_heads_rel, Relation};
use crate::layers::{Block, LayerNorm, NormPlacement, TimeAwareAttention, TimeContext};
use crate::mhc::Streams;
use crate::ops::{DType, Ops};
use crate::query::queries;

/// The TiSASRec network.
///
/// State dict (pmixer names): `item_emb.weight` (I+1, C), `abs_pos_K_emb.weight`,
/// `abs_pos_V_emb.weight` (T, C), `time_matrix_K_emb.weight`, `time_matrix_V_emb.weight`
/// (k+1, C), per block `attention_layernorms.{i}.*`, `attention_layers.{i}.{Q,K,V}_w.weight`
/// (C, C) and `.bias` (C), `forward_layernorms.{i}.*`, `forward_layers.{i}.conv{1,2}.*`, then
/// `last_layernorm.*`; mHC adds `mhc_attention.{i}.*`, `mhc_ffn.{i}.*`.
/// Count: `(I+1)C + 2TC + 2(k+1)C + L·(2·2C + 3(C²+C) + 2(C²+C)) + 2C`.
#[derive(Debug)]
pub struct TiSasRec {
    items: ItemTable,
    abs_pos_k: Param,
    abs_pos_v: Param,
    time_k: Param,
    time_v: Param,
    blocks: Vec<Block<TimeAwareAttention>>,
    last_layernorm: LayerNorm,
    streams: Streams,
    c: i64,
    heads: i64,
    dropout: f64,
    time_span: i64,
    time_dropout: TimeDropout,
}

/// The two equal formulations of TiSASRec's interval terms (see [`Relation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationForm {
    /// The gathered (B, T, T, C) embeddings (the reference; element-wise dropout).
    Dense,
    /// Gather/scatter over k+1 buckets, O(B·h·T·(T + k)) memory.
    Bucketed,
}

impl TiSasRec {
    /// Builds the network under `p` with the wiring of `cfg` ([`ModelConfig::wiring`]: the
    /// reference wiring unless `--norm_first` or `--block_wiring` say otherwise).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        Self::with_placement(p, cfg, cfg.wiring().into())
    }

    /// Builds the network with an explicit residual placement (ignored for mHC models).
    pub fn with_placement(p: &nn::Path, cfg: &ModelConfig, placement: NormPlacement) -> Self {
        let c = cfg.hidden_units as i64;
        let t = cfg.maxlen as i64;
        let k1 = cfg.time_span as i64 + 1;
        let init = InitRules::new(cfg.init, cfg.backbone); // pmixer: xavier_uniform_ (docs/MODELS.md §4 item 13)
        let table = |name: &str, rows: i64, pad: Option<i64>| {
            Param::embedding(
                &(p / name),
                "weight",
                &[rows, c],
                init.embedding.clone(),
                pad,
            )
        };
        let blocks = Block::stack(p, cfg, placement, &init, TimeAwareAttention::new);
        Self {
            items: ItemTable::new(p, cfg, &init),
            abs_pos_k: table("abs_pos_K_emb", t, None),
            abs_pos_v: table("abs_pos_V_emb", t, None),
            time_k: table("time_matrix_K_emb", k1, None),
            time_v: table("time_matrix_V_emb", k1, None),
            blocks,
            last_layernorm: LayerNorm::new(&(p / "last_layernorm"), c),
            streams: Streams::new(cfg.mhc.as_ref()),
            c,
            heads: cfg.num_heads as i64,
            dropout: cfg.dropout_rate,
            time_span: cfg.time_span as i64,
            time_dropout: cfg.time_dropout,
        }
    }

    /// The form of the interval terms for a forward pass: the dense reference form only where it
    /// changes the result, i.e. training with `--time_dropout elementwise` and a non-zero rate.
    pub fn relation_form(&self, train: bool) -> RelationForm {
        if train && self.dropout > 0.0 && self.time_dropout == TimeDropout::Elementwise {
            RelationForm::Dense
        } else {
            RelationForm::Bucketed
        }
    }

    /// The shared attention inputs (docs/MODELS.md, TiSASRec step 2): positions 0..T−1 for every
    /// column (padding included), the interval terms of `tm` (B, T, T) int64 in `form`, the
    /// position and interval dropouts, and the pmixer masks (padded query rows; `j > i`).
    /// Phases: position embeddings, interval terms (`relation`), masks.
    pub fn time_context<O: Ops>(
        &self,
        o: &O,
        seq: &O::T,
        tm: &O::T,
        train: bool,
        form: RelationForm,
    ) -> TimeContext<O::T> {
        let pos = o.add(&o.mul_scalar(seq, 0.0), &o.range_of(seq, 1)); // (B, T): 0..T−1 per row
        let pk = self.dropped_rows(o, &self.abs_pos_k, &pos, train); // (B, T, C)
        let pv = self.dropped_rows(o, &self.abs_pos_v, &pos, train); // (B, T, C)
        let rel = self.relation(o, seq, tm, train, form);
        let pad = o.eq_scalar(seq, 0); // (B, T)
        let row_pad = o.unsqueeze(&o.unsqueeze(&pad, 1), -1); // (B, 1, T, 1)
        let causal = Some(causal_mask(o, seq)); // (T, T)
        TimeContext {
            pk,
            pv,
            rel,
            row_pad,
            causal,
        }
    }

    /// `Dropout(table[ids])`: rows of an embedding table without padding index, dropped out.
    fn dropped_rows<O: Ops>(&self, o: &O, table: &Param, ids: &O::T, train: bool) -> O::T {
        o.dropout(
            &o.gather_rows(&o.param(table), ids, None),
            self.dropout,
            train,
        )
    }

    /// The interval terms of `tm` (B, T, T) in `form`, head-split (see [`Relation`]).
    fn relation<O: Ops>(
        &self,
        o: &O,
        seq: &O::T,
        tm: &O::T,
        train: bool,
        form: RelationForm,
    ) -> Relation<O::T> {
        let (h, dh) = (self.heads, self.c / self.heads);
        match form {
            RelationForm::Dense => {
                let rk = self.dropped_rows(o, &self.time_k, tm, train); // (B, T, T, C)
                let rv = self.dropped_rows(o, &self.time_v, tm, train); // (B, T, T, C)
                Relation::Dense {
                    rk_t: o.transpose(&split_heads_rel(o, &rk, h, dh), &[0, 1, 2, 4, 3]), // (B, h, T, dh, T)
                    rv: split_heads_rel(o, &rv, h, dh), // (B, h, T, T, dh)
                }
            }
            RelationForm::Bucketed => {
                let k1 = self.time_span + 1;
                let heads = |table: &O::T| o.reshape(table, &[0, k1, h, dh]); // (B|1, k+1, h, dh)
                let ek = heads(&self.interval_table(o, &self.time_k, seq, train));
                let ev = heads(&self.interval_table(o, &self.time_v, seq, train));
                Relation::Bucketed {
                    ek_t: o.transpose(&ek, &[0, 2, 3, 1]), // (B|1, h, dh, k+1)
                    ev: o.transpose(&ev, &[0, 2, 1, 3]),   // (B|1, h, k+1, dh)
                    r: o.unsqueeze(tm, 1),                 // (B, 1, T, T)
                    buckets: k1,
                }
            }
        }
    }

    /// An interval table for the bucketed form: `E` as (1, k+1, C), or in training with dropout
    /// one dropped-out copy per sample, (B, k+1, C) (`--time_dropout table`).
    fn interval_table<O: Ops>(&self, o: &O, table: &Param, seq: &O::T, train: bool) -> O::T {
        let e = o.unsqueeze(&o.param(table), 0); // (1, k+1, C)
        if !(train && self.dropout > 0.0) {
            return e;
        }
        let first = o.slice(&o.mul_scalar(seq, 0.0), 1, 0, 1); // (B, 1) zeros
        let zeros = o.unsqueeze(&o.cast(&first, DType::F32), -1); // (B, 1, 1)
        o.dropout(&o.add(&e, &zeros), self.dropout, train) // (B, k+1, C)
    }

    /// `F = last_layernorm(merge(blocks(X)))` (docs/MODELS.md §2.5): `seq` (B, T) int64, `tm`
    /// (B, T, T) int64 with values 0..=k aligned with `seq` → (B, T, C), or (B, 1, C) with
    /// `last_only` (the last block queries only the last position).
    pub fn forward<O: Ops>(
        &self,
        o: &O,
        seq: &O::T,
        tm: &O::T,
        last_only: bool,
        train: bool,
    ) -> O::T {
        let x = self.hidden(o, seq, tm, last_only, train); // (B, Tq, C) or (B, Tq, n, C)
        let x = self.streams.merge(o, &x); // (B, Tq, C)
        self.last_layernorm.forward(o, &x)
    }

    /// The hidden state after the last block, before the stream merge and the last LayerNorm:
    /// (B, Tq, C), or the n residual streams (B, Tq, n, C) for mHC.
    pub fn hidden<O: Ops>(
        &self,
        o: &O,
        seq: &O::T,
        tm: &O::T,
        last_only: bool,
        train: bool,
    ) -> O::T {
        self.hidden_in(o, seq, tm, last_only, train, self.relation_form(train))
    }

    /// [`TiSasRec::hidden`] with the relation attention in an explicit `form` (both forms give
    /// the same result without interval dropout).
    pub fn hidden_in<O: Ops>(
        &self,
        o: &O,
        seq: &O::T,
        tm: &O::T,
        last_only: bool,
        train: bool,
        form: RelationForm,
    ) -> O::T {
        let scale = (self.c as f64).sqrt();
        let x = self.items.rows(o, seq); // (B, T, C), e(s) of docs/MODELS.md §6.2
        let x = o.dropout(&o.mul_scalar(&x, scale), self.dropout, train); // item dropout
        let keep = o.cast(&o.not(&o.eq_scalar(seq, 0)), DType::F32); // (B, T) ¬pad
        let x = o.mul(&x, &o.unsqueeze(&keep, -1)); // timeline mask, (B, T, C)
        let ctx = self.time_context(o, seq, tm, train, form);
        let last_ctx = last_only.then(|| ctx.last(o));
        let mut x = self.streams.expand(o, &x); // (B, T, C) or (B, T, n, C)
        let nb = self.blocks.len();
        for (i, block) in self.blocks.iter().enumerate() {
            let last = last_only && i + 1 == nb;
            let c = if last {
                last_ctx.as_ref().unwrap_or(&ctx)
            } else {
                &ctx
            };
            let attend =
                |a: &TimeAwareAttention, q: &O::T, kv: &O::T| a.forward(o, q, kv, c, train);
            x = block.forward(o, &x, attend, last, train);
            // X·¬pad after every block, as pmixer. For mHC this equals masking after every
            // sub-layer (docs/MODELS.md §3.5) at real positions: the FFN sub-layer and its
            // coefficients are per token, so padded tokens only reach padded tokens in between.
            let keep = queries(o, &keep, last); // (B, Tq)
            x = self.streams.mask(o, &x, &keep);
        }
        if last_only && nb == 0 {
            x = o.slice(&x, 1, -1, i64::MAX);
        }
        x
    }

    /// The tied item table `e` (I+1, C): `item_emb.weight`, or composed from features.
    pub fn items(&self) -> &ItemTable {
        &self.items
    }

    /// Every parameter of the network.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = self.items.params();
        v.extend([&self.abs_pos_k, &self.abs_pos_v, &self.time_k, &self.time_v]);
        for b in &self.blocks {
            v.extend(b.attn.params());
            v.extend(b.own_params());
        }
        v.extend(self.last_layernorm.params());
        v
    }
}

#[cfg(test)]
mod tests {
    use sasrec_shared::config::{Backbone, HresProjection, MhcConfig, ModelConfig, TimeDropout};
    use tch::{nn, Device, Kind, Tensor};

    use super::{RelationForm, TiSasRec};
    use crate::model::{Net, SeqRecModel};
    use crate::tch_ops::TchOps;
    use crate::test_util::*;

    #[test]
    fn parameter_count_formula() {
        let mut cfg = crate::sasrec::tests::ml1m();
        cfg.backbone = Backbone::Tisasrec;
        cfg.time_span = 256;
        let (i, c, t, k, l) = (3416i64, 50i64, 200i64, 256i64, 2i64);
        let per_block = 2 * 2 * c + 3 * (c * c + c) + 2 * (c * c + c);
        let want = (i + 1) * c + 2 * t * c + 2 * (k + 1) * c + l * per_block + 2 * c;
        let vs = nn::VarStore::new(Device::Cpu);
        let m = SeqRecModel::new(&vs.root(), &cfg).unwrap();
        assert_eq!(m.num_params(), want);
        assert_eq!(want, 242_550);
        // mHC adds 2 modules per block of nC(n²+2n) + n²+2n + 3 values each.
        cfg.mhc = Some(MhcConfig::default());
        let vs = nn::VarStore::new(Device::Cpu);
        let m = SeqRecModel::new(&vs.root(), &cfg).unwrap();
        assert_eq!(m.num_params(), want + 4 * 4_827);
    }

    /// pmixer TiSASRec: xavier_uniform_ on ≥2-D tensors; we keep row 0 of item_emb at zero.
    #[test]
    fn init_is_xavier_uniform() {
        let mut cfg = crate::sasrec::tests::ml1m();
        cfg.backbone = Backbone::Tisasrec;
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = SeqRecModel::new(&vs.root(), &cfg).unwrap();
        let v = vs.variables();
        let bound = (6.0f64 / 100.0).sqrt();
        let w = &v["attention_layers.0.Q_w.weight"];
        assert!(w.abs().max().double_value(&[]) <= bound);
        let std = w.std(true).double_value(&[]);
        assert!((std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.05, "{std}");
        assert_eq!(
            v["item_emb.weight"]
                .get(0)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert!(
            v["abs_pos_K_emb.weight"]
                .get(0)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
        assert_eq!(v["time_matrix_V_emb.weight"].size(), [101, 50]);
    }

    /// The time-aware wirings: reference ("original"), Pre-LN, mHC with Sinkhorn and mHC-lite.
    fn time_aware_cases() -> Vec<ModelConfig> {
        let plain = small_cfg(Backbone::Tisasrec, None);
        let pre = ModelConfig {
            norm_first: true,
            ..plain.clone()
        };
        let mhc = small_cfg(Backbone::Tisasrec, Some(4));
        let mut lite = mhc.clone();
        lite.mhc.as_mut().unwrap().h_res = HresProjection::Lite;
        vec![plain, pre, mhc, lite]
    }

    fn tisasrec(m: &SeqRecModel) -> &TiSasRec {
        match m.net() {
            Net::TiSasRec(n) => n,
            Net::SasRec(_) => unreachable!("time-aware config"),
        }
    }

    /// Bucketed and dense relation attention agree in eval mode (≤ 1e-5 relative), on a batch
    /// with padding and mixed lengths, over all positions and on the last-position path.
    #[test]
    fn bucketed_equals_dense_in_eval() {
        for cfg in time_aware_cases() {
            let (_vs, m) = random_model(&cfg, 21);
            let (seq, tm) = (sequences(6), intervals(6));
            let net = tisasrec(&m);
            for last_only in [false, true] {
                let run = |form| net.hidden_in(&TchOps, &seq, &tm, last_only, false, form);
                let (a, b) = (run(RelationForm::Bucketed), run(RelationForm::Dense));
                let d = max_diff(&a, &b) / b.abs().max().double_value(&[]);
                assert!(
                    d < 1e-5,
                    "{} last_only={last_only}: {d}",
                    cfg.kind().as_str()
                );
            }
            // and eval picks the bucketed form whatever --time_dropout says
            assert_eq!(net.relation_form(false), RelationForm::Bucketed);
        }
    }

    /// With dropout 0 the two forms train identically: equal gradients on every parameter.
    #[test]
    fn bucketed_gradients_equal_dense_without_dropout() {
        for mut cfg in time_aware_cases() {
            cfg.dropout_rate = 0.0;
            let (vs, m) = random_model(&cfg, 22);
            let (seq, tm) = (sequences(6), intervals(6));
            let w = Tensor::randn([6, T, C as i64], (Kind::Float, Device::Cpu));
            let grads = |form| {
                for (_, mut v) in vs.variables() {
                    v.zero_grad();
                }
                let h = tisasrec(&m).hidden_in(&TchOps, &seq, &tm, false, true, form);
                let h = if cfg.mhc.is_some() {
                    h.mean_dim(2, false, Kind::Float)
                } else {
                    h
                };
                (h * &w).sum(Kind::Float).backward();
                // every parameter but last_layernorm (applied after `hidden`) has a gradient
                m.params()
                    .iter()
                    .filter(|p| !p.name().starts_with("last_layernorm"))
                    .map(|p| (p.name().to_string(), p.tensor().grad().copy()))
                    .collect::<Vec<_>>()
            };
            let (a, b) = (grads(RelationForm::Bucketed), grads(RelationForm::Dense));
            // relative to the largest gradient entry: K_w.bias, whose exact gradient is 0
            // (softmax ignores a per-row constant), only carries rounding noise
            let scale = b
                .iter()
                .map(|(_, g)| g.abs().max().double_value(&[]))
                .fold(0.0, f64::max);
            for ((name, ga), (_, gb)) in a.iter().zip(&b) {
                let d = max_diff(ga, gb) / scale;
                assert!(d < 1e-5, "{} {name}: {d}", cfg.kind().as_str());
            }
            assert!(
                a.iter().any(|(n, g)| n.starts_with("time_matrix_V")
                    && g.abs().sum(Kind::Float).double_value(&[]) > 0.0),
                "the interval tables get gradient"
            );
        }
    }

    /// The bucketed form never builds a (B, T, T, C)-sized tensor, in training (with its
    /// per-sample table dropout) or in eval; the dense form does (so the check can fail).
    #[test]
    fn bucketed_form_builds_no_b_t_t_c_tensor() {
        let b = 3i64;
        let dense_numel = b * T * T * C as i64;
        for cfg in time_aware_cases() {
            let (_vs, m) = build(&cfg);
            let (seq, tm) = (sequences(b), intervals(b));
            let largest = |form, train| {
                let log = ShapeLog::default();
                let _ = tisasrec(&m).hidden_in(&log, &seq, &tm, false, train, form);
                log.shapes()
                    .iter()
                    .map(|s| s.iter().product::<i64>())
                    .max()
                    .unwrap()
            };
            for train in [false, true] {
                let big = largest(RelationForm::Bucketed, train);
                assert!(
                    big < dense_numel,
                    "{} train={train}: a tensor of {big} ≥ B·T·T·C = {dense_numel} elements",
                    cfg.kind().as_str()
                );
            }
            assert!(largest(RelationForm::Dense, true) >= dense_numel);
        }
    }

    /// `--time_dropout elementwise` trains with the dense form, the default with the bucketed one.
    #[test]
    fn time_dropout_picks_the_form() {
        let mut cfg = small_cfg(Backbone::Tisasrec, None);
        let (_vs, m) = build(&cfg);
        assert_eq!(tisasrec(&m).relation_form(true), RelationForm::Bucketed);
        cfg.time_dropout = TimeDropout::Elementwise;
        let (_vs, m) = build(&cfg);
        assert_eq!(tisasrec(&m).relation_form(true), RelationForm::Dense);
        assert_eq!(tisasrec(&m).relation_form(false), RelationForm::Bucketed);
    }
}
