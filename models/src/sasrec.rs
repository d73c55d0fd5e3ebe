//! SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
//! arXiv:1808.09781) as implemented in `pmixer/SASRec.pytorch` (`python/model.py`, commit
//! `fde8a9c`), and SASRec + mHC (arXiv:2512.24880). Spec: docs/MODELS.md §1.3–1.6 and §3.4.
//!
//! Residual variants (`--block_wiring`, [`ModelConfig::wiring`]): [`NormPlacement::Post`] (pmixer
//! default), [`NormPlacement::Pre`] (`--norm_first`), [`NormPlacement::Original`] (the TF code,
//! pmixer before 2025-05 and SASRec+, with the timeline mask `X·¬pad` after every block). mHC
//! models always use Pre-LN inside the sub-layers: Post-LN is not defined for mHC, so the wiring
//! is ignored there.

use sasrec_shared::config::{ModelConfig, Padding};
use tch::nn;

use crate::init::{InitRules, Param};
use crate::item_table::ItemTable;
use crate::layers::attention::causal_mask;
use crate::layers::{Block, LayerNorm, MultiHeadSelfAttention, NormPlacement};
use crate::mhc::Streams;
use crate::ops::{DType, Ops};
use crate::query::queries;

/// The SASRec network: embeddings, `num_blocks` causal self-attention blocks, last LayerNorm.
///
/// State dict (pmixer names): `item_emb.weight` (I+1, C), `pos_emb.weight` (T+1, C), per block
/// `attention_layernorms.{i}.*`, `attention_layers.{i}.in_proj_weight` (3C, C), `.in_proj_bias`,
/// `.out_proj.weight/bias`, `forward_layernorms.{i}.*`, `forward_layers.{i}.conv{1,2}.weight`
/// (C, C, 1) and `.bias`, then `last_layernorm.*`; mHC adds `mhc_attention.{i}.*` and
/// `mhc_ffn.{i}.*`. ML-1M (I = 3416, C = 50, T = 200, 2 blocks): 212,000 parameters.
#[derive(Debug)]
pub struct SasRec {
    items: ItemTable,
    pos_emb: Param,
    blocks: Vec<Block<MultiHeadSelfAttention>>,
    last_layernorm: LayerNorm,
    streams: Streams,
    /// `X·¬pad` after every block (the original wiring).
    timeline_mask: bool,
    /// Padded keys in attention and the positions' origin (`--padding`).
    padding: Padding,
    c: i64,
    dropout: f64,
}

impl SasRec {
    /// Builds the network under `p` with the wiring of `cfg` ([`ModelConfig::wiring`]).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        Self::with_placement(p, cfg, cfg.wiring().into())
    }

    /// Builds the network with an explicit residual placement (ignored for mHC models).
    pub fn with_placement(p: &nn::Path, cfg: &ModelConfig, placement: NormPlacement) -> Self {
        let c = cfg.hidden_units as i64;
        let t = cfg.maxlen as i64;
        let init = InitRules::new(cfg.init, cfg.backbone); // pmixer: xavier_normal_ on ≥2-D tensors
        let items = ItemTable::new(p, cfg, &init);
        let pos_emb = Param::embedding(
            &(p / "pos_emb"),
            "weight",
            &[t + 1, c],
            init.embedding.clone(),
            Some(0),
        );
        let blocks = Block::stack(p, cfg, placement, &init, MultiHeadSelfAttention::new);
        Self {
            items,
            pos_emb,
            blocks,
            last_layernorm: LayerNorm::new(&(p / "last_layernorm"), c),
            streams: Streams::new(cfg.mhc.as_ref()),
            timeline_mask: cfg.mhc.is_none() && placement == NormPlacement::Original,
            padding: cfg.padding,
            c,
            dropout: cfg.dropout_rate,
        }
    }

    /// `X = Dropout(item_emb(s)·√C + pos_emb(p))` with `p[b, t] = (t+1)·[s[b, t] ≠ 0]`
    /// (docs/MODELS.md §1.4 steps 1–3): (B, T) int → (B, T, C).
    pub fn embed<O: Ops>(&self, o: &O, seq: &O::T, train: bool) -> O::T {
        let scale = (self.c as f64).sqrt(); // √C on the item embedding only (docs/MODELS.md, pitfall 3)
        let e = self.items.rows(o, seq); // (B, T, C), e(s) of docs/MODELS.md §6.2
        let e = o.mul_scalar(&e, scale);
        let real = o.cast(&o.not(&o.eq_scalar(seq, 0)), DType::I64); // (B, T)
        let column = o.add_scalar(&o.range_of(seq, 1), 1.0); // (T) 1..T
        let pos = match self.padding {
            // Counted from the oldest item: the column less the (leading) padding, 1..L.
            Padding::Right => {
                let pad = o.cast(&o.eq_scalar(seq, 0), DType::I64); // (B, T)
                o.sub(&column, &o.sum(&pad, 1, true)) // (B, T)
            }
            Padding::Pmixer | Padding::Masked => column, // the newest item at T
        };
        let pos = o.mul(&pos, &real); // (B, T), 0 = pad
        let x = o.add(&e, &o.gather_rows(&o.param(&self.pos_emb), &pos, Some(0))); // (B, T, C)
        o.dropout(&x, self.dropout, train)
    }

    /// `F = last_layernorm(merge(blocks(X)))` (docs/MODELS.md §1.4): `seq` (B, T) int64 →
    /// (B, T, C), or (B, 1, C) with `last_only` (the last block queries only the last position).
    pub fn forward<O: Ops>(&self, o: &O, seq: &O::T, last_only: bool, train: bool) -> O::T {
        let x = self.hidden(o, seq, last_only, train); // (B, Tq, C) or (B, Tq, n, C)
        let x = self.streams.merge(o, &x); // (B, Tq, C)
        self.last_layernorm.forward(o, &x)
    }

    /// The hidden state after the last block, before the stream merge and the last LayerNorm:
    /// (B, Tq, C), or the n residual streams (B, Tq, n, C) for mHC. The original wiring
    /// multiplies every block's output by `¬pad` (its padded rows are zero, as after `embed`).
    pub fn hidden<O: Ops>(&self, o: &O, seq: &O::T, last_only: bool, train: bool) -> O::T {
        let x = self.embed(o, seq, train); // (B, T, C)
        let causal = causal_mask(o, seq); // (T, T), true above the diagonal
        let pad_keys = (!self.padding.is_pmixer()).then(|| {
            o.unsqueeze(&o.unsqueeze(&o.eq_scalar(seq, 0), 1), 1) // (B, 1, 1, T) padded keys
        });
        let keep = (self.timeline_mask).then(|| o.cast(&o.not(&o.eq_scalar(seq, 0)), DType::F32)); // (B, T) ¬pad
        let mut x = self.streams.expand(o, &x); // (B, T, C) or (B, T, n, C)
        let nb = self.blocks.len();
        for (i, block) in self.blocks.iter().enumerate() {
            let last = last_only && i + 1 == nb;
            // The last query sees every earlier key: no causal mask for it.
            let masks: Vec<&O::T> = pad_keys.iter().chain((!last).then_some(&causal)).collect();
            let attend = |a: &MultiHeadSelfAttention, q: &O::T, kv: &O::T| {
                a.forward(o, q, kv, &masks, train)
            };
            x = block.forward(o, &x, attend, last, train);
            if let Some(keep) = &keep {
                x = self.streams.mask(o, &x, &queries(o, keep, last)); // (B, Tq, C)
            }
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
        v.push(&self.pos_emb);
        for b in &self.blocks {
            v.extend(b.attn.params());
            v.extend(b.own_params());
        }
        v.extend(self.last_layernorm.params());
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use sasrec_shared::config::ModelConfig;
    use tch::{nn, Device, Kind};

    use crate::model::SeqRecModel;

    /// pmixer's ML-1M setting: I = 3416, C = 50, T = 200, 2 blocks, 1 head.
    pub(crate) fn ml1m() -> ModelConfig {
        ModelConfig::sasrec_ml1m()
    }

    #[test]
    fn parameter_count_is_212000() {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = SeqRecModel::new(&vs.root(), &ml1m()).unwrap();
        assert_eq!(m.num_params(), 212_000);
        let total: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(total, 212_000);
    }

    /// docs/MODELS.md §1.3: Xavier-normal with torch fans, zero padding rows, 1-D defaults.
    #[test]
    fn init_statistics_match_pmixer() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = SeqRecModel::new(&vs.root(), &ml1m()).unwrap();
        m.init_weights();
        let v = vs.variables();
        let std = |name: &str| v[name].std(true).double_value(&[]);
        let within = |got: f64, want: f64| (got / want - 1.0).abs() < 0.05;
        let item = &v["item_emb.weight"];
        let item_std = item.narrow(0, 1, 3416).std(true).double_value(&[]);
        assert!(
            within(item_std, (2.0f64 / (3417.0 + 50.0)).sqrt()),
            "item_emb std {item_std}"
        );
        assert!(within(std("pos_emb.weight"), (2.0f64 / 251.0).sqrt()));
        assert!(within(
            std("attention_layers.0.in_proj_weight"),
            (1.0f64 / 100.0).sqrt()
        ));
        assert!(within(
            std("attention_layers.1.out_proj.weight"),
            (1.0f64 / 50.0).sqrt()
        ));
        assert!(within(
            std("forward_layers.0.conv1.weight"),
            (1.0f64 / 50.0).sqrt()
        ));
        for row0 in ["item_emb.weight", "pos_emb.weight"] {
            assert_eq!(v[row0].get(0).abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
        let abs_sum = |n: &str| v[n].abs().sum(Kind::Float).double_value(&[]);
        assert_eq!(abs_sum("attention_layers.0.in_proj_bias"), 0.0);
        assert_eq!(abs_sum("attention_layers.0.out_proj.bias"), 0.0);
        assert_eq!(abs_sum("last_layernorm.bias"), 0.0);
        assert_eq!(
            v["forward_layernorms.1.weight"]
                .mean(Kind::Float)
                .double_value(&[]),
            1.0
        );
        let b = &v["forward_layers.1.conv2.bias"];
        assert!(b.abs().max().double_value(&[]) <= 1.0 / 50f64.sqrt());
        assert!(b.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// `--padding`: a row without padding gets the same features in all three modes; a padded
    /// row's last position changes once padded keys are blocked (`masked`) and again once
    /// positions count from the oldest item (`right`).
    #[test]
    fn padding_modes_change_only_padded_rows() {
        use sasrec_shared::config::Padding;
        let mut cfg = ml1m();
        (cfg.num_items, cfg.maxlen, cfg.dropout_rate) = (40, 12, 0.0);
        let seq = tch::Tensor::randint_low(1, 41, [2, 12], (Kind::Int64, Device::Cpu));
        let _ = seq.get(1).narrow(0, 0, 5).fill_(0);
        let mut last = |padding: Padding| {
            cfg.padding = padding;
            tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            let m = SeqRecModel::new(&vs.root(), &cfg).unwrap();
            m.init_weights();
            m.feats(&seq, None, false).unwrap().select(1, 11) // (2, C)
        };
        let (p, k, r) = (
            last(Padding::Pmixer),
            last(Padding::Masked),
            last(Padding::Right),
        );
        let diff = |a: &tch::Tensor, b: &tch::Tensor, row: i64| {
            (a.get(row) - b.get(row)).abs().max().double_value(&[])
        };
        assert_eq!(diff(&p, &k, 0), 0.0);
        assert_eq!(diff(&k, &r, 0), 0.0);
        assert!(
            diff(&p, &k, 1) > 1e-3,
            "blocking padded keys changes nothing"
        );
        assert!(
            diff(&k, &r, 1) > 1e-3,
            "counting from the oldest changes nothing"
        );
    }
}
