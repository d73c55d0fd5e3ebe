//! [`SeqRecModel`]: the one model type the training loop, evaluation and export use, whatever
//! the kind (`sasrec`, `tisasrec`, `sasrec-mhc`, `tisasrec-mhc`).

use sasrec_shared::config::{Backbone, ModelConfig};
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::init::Param;
use crate::item_table::ItemTable;
use crate::layers::NormPlacement;
use crate::ops::Ops;
use crate::sasrec::SasRec;
use crate::tch_ops::TchOps;
use crate::tisasrec::TiSasRec;

/// The backbone network.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per model; boxing would only add an indirection
pub enum Net {
    /// SASRec or SASRec + mHC.
    SasRec(SasRec),
    /// TiSASRec or TiSASRec + mHC.
    TiSasRec(TiSasRec),
}

/// A sequential recommender built from a [`ModelConfig`].
///
/// Inputs are left-padded item sequences `seq` (B, T) with T = `maxlen`, ids 0..=I (0 =
/// padding), int32 or int64 on any device (moved to the model's device), and, for TiSASRec, the
/// interval matrix (B, T, T) with values 0..=`time_span`, aligned with `seq`.
#[derive(Debug)]
pub struct SeqRecModel {
    cfg: ModelConfig,
    net: Net,
}

/// `Σ_c h·E` for every item: `h` (B, 1, C) → (B, I+1), the padding column 0 set to −∞.
pub fn score_all_items<O: Ops>(o: &O, h: &O::T, items: &ItemTable) -> O::T {
    let w = items.table_with(o); // (I+1, C)
    let h = o.reshape(h, &[0, -1]); // (B, C)
    let s = o.matmul(&h, &o.transpose(&w, &[1, 0])); // (B, I+1)
    let pad = o.eq_scalar(&o.range_of(&w, 0), 0); // (I+1)
    o.masked_fill(&s, &pad, f64::NEG_INFINITY)
}

/// `Σ_c h·E(candidates)`: `h` (B, 1, C), `candidates` (B, N) int64 → (B, N) (pmixer `predict`).
pub fn score_candidates<O: Ops>(o: &O, h: &O::T, items: &ItemTable, candidates: &O::T) -> O::T {
    let e = items.rows(o, candidates); // (B, N, C)
    let s = o.matmul(&e, &o.transpose(h, &[0, 2, 1])); // (B, N, 1)
    o.reshape(&s, &[0, -1]) // (B, N)
}

impl SeqRecModel {
    /// Validates `cfg` and builds the network under `p` with the default residual placement
    /// (SASRec: Post-LN, or Pre-LN with `norm_first`; TiSASRec: the reference "original"
    /// wiring, or Pre-LN with `norm_first`; mHC: always Pre-LN sub-layers). Parameters are
    /// initialised as in the references.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let net = match cfg.backbone {
            Backbone::Sasrec => Net::SasRec(SasRec::new(p, cfg)),
            Backbone::Tisasrec => Net::TiSasRec(TiSasRec::new(p, cfg)),
        };
        Ok(Self {
            cfg: cfg.clone(),
            net,
        })
    }

    /// Like [`SeqRecModel::new`] with an explicit LayerNorm placement (ignored for mHC).
    pub fn with_placement(
        p: &nn::Path,
        cfg: &ModelConfig,
        placement: NormPlacement,
    ) -> Result<Self> {
        cfg.validate()?;
        let net = match cfg.backbone {
            Backbone::Sasrec => Net::SasRec(SasRec::with_placement(p, cfg, placement)),
            Backbone::Tisasrec => Net::TiSasRec(TiSasRec::with_placement(p, cfg, placement)),
        };
        Ok(Self {
            cfg: cfg.clone(),
            net,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The backbone network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Device of the parameters (read from the variables, so `VarStore::set_device` is seen).
    pub fn device(&self) -> Device {
        self.items().device()
    }

    /// Every parameter with its state-dict name.
    pub fn params(&self) -> Vec<&Param> {
        match &self.net {
            Net::SasRec(m) => m.params(),
            Net::TiSasRec(m) => m.params(),
        }
    }

    /// Number of trainable scalars (212,000 for SASRec on ML-1M, C = 50, T = 200, 2 blocks).
    pub fn num_params(&self) -> i64 {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// The item side: the tied table `e` (I+1, C) of docs/MODELS.md §6.2.
    pub fn items(&self) -> &ItemTable {
        match &self.net {
            Net::SasRec(m) => m.items(),
            Net::TiSasRec(m) => m.items(),
        }
    }

    /// The item vectors `e(0..=I)` (I+1, C) the model scores with: `item_emb.weight` itself
    /// (sharing its storage) without features, else composed from them.
    pub fn item_vectors(&self) -> Tensor {
        self.items().table()
    }

    /// The same network with its item table folded into an ID table (docs/MODELS.md §6.2):
    /// `item_emb.weight` holds the composed `e(0..=I)`, the features are gone, and every other
    /// parameter is copied, so user vectors and scores are equal; built with the default
    /// placement (as [`SeqRecModel::new`]) on the model's device. `None` without features.
    /// This is what the export records: `model.onnx` and the user tower keep their interface.
    pub fn fold_item_features(&self) -> Result<Option<(nn::VarStore, SeqRecModel)>> {
        if !self.items().has_features() {
            return Ok(None);
        }
        let cfg = ModelConfig {
            item_features: None,
            ..self.cfg.clone()
        };
        let vs = nn::VarStore::new(self.device());
        let folded = SeqRecModel::new(&vs.root(), &cfg)?;
        let own: std::collections::HashMap<&str, &Tensor> = self
            .params()
            .into_iter()
            .map(|p| (p.name(), p.tensor()))
            .collect();
        tch::no_grad(|| -> Result<()> {
            let table = self.item_vectors();
            for p in folded.params() {
                let src = match p.name() {
                    "item_emb.weight" => &table,
                    name => own.get(name).copied().ok_or_else(|| {
                        Error::Input(format!("folding the item table: no parameter `{name}`"))
                    })?,
                };
                p.tensor().shallow_clone().copy_(src);
            }
            Ok(())
        })?;
        Ok(Some((vs, folded)))
    }

    /// Re-draws every parameter from its reference rule (docs/MODELS.md §1.3, §2.5, §3.6) and zeroes
    /// the padding rows. The constructor already did this; call it again after seeding.
    pub fn init_weights(&self) {
        for p in self.params() {
            p.reinit();
        }
    }

    /// The generic forward for any [`Ops`] (training: `TchOps`; export: a graph recorder).
    /// `seq` (B, T) int64, `tm` (B, T, T) int64 → (B, T, C), or (B, 1, C) with `last_only`.
    pub fn forward_with<O: Ops>(
        &self,
        o: &O,
        seq: &O::T,
        tm: Option<&O::T>,
        last_only: bool,
        train: bool,
    ) -> Result<O::T> {
        match &self.net {
            Net::SasRec(m) => Ok(m.forward(o, seq, last_only, train)),
            Net::TiSasRec(m) => {
                let tm = tm.ok_or(Error::MissingTimeMatrix(self.cfg.kind().as_str()))?;
                Ok(m.forward(o, seq, tm, last_only, train))
            }
        }
    }

    /// Checks the input and moves it to the model's device as int64.
    fn prepare(&self, seq: &Tensor, tm: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let dims = seq.size();
        let t = self.cfg.maxlen as i64;
        if dims.len() != 2 || dims[1] != t {
            return Err(Error::Input(format!(
                "seq has shape {dims:?}, expected [B, {t}]"
            )));
        }
        // Checked where the input lives (the host, for batches from the sampler), so that a
        // CUDA step does not wait for the device; pinned inputs are copied asynchronously.
        check_range("seq", seq, self.cfg.num_items as i64)?;
        let seq = seq.to_device_(self.device(), Kind::Int64, true, false);
        let tm = match (self.cfg.is_time_aware(), tm) {
            (false, _) => None,
            (true, None) => return Err(Error::MissingTimeMatrix(self.cfg.kind().as_str())),
            (true, Some(tm)) => {
                let want = [dims[0], t, t];
                if tm.size() != want {
                    return Err(Error::Input(format!(
                        "time matrix has shape {:?}, expected {want:?}",
                        tm.size()
                    )));
                }
                check_range("time matrix", tm, self.cfg.time_span as i64)?;
                Some(tm.to_device_(self.device(), Kind::Int64, true, false))
            }
        };
        Ok((seq, tm))
    }

    /// Features `F` (B, T, C) of every position (training forward, dropout when `train`).
    pub fn feats(&self, seq: &Tensor, tm: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (seq, tm) = self.prepare(seq, tm)?;
        self.forward_with(&TchOps, &seq, tm.as_ref(), false, train)
    }

    /// `F[:, -1, :]` (B, C), computed with last-position queries only in the final block
    /// (dropout off; equals the last row of [`SeqRecModel::feats`]).
    pub fn last_hidden(&self, seq: &Tensor, tm: Option<&Tensor>) -> Result<Tensor> {
        let (seq, tm) = self.prepare(seq, tm)?;
        let h = self.forward_with(&TchOps, &seq, tm.as_ref(), true, false)?; // (B, 1, C)
        Ok(h.squeeze_dim(1))
    }

    /// Scores of all items for the next position (B, I+1); column 0 (padding) is −∞. Runs
    /// without autograd and with dropout off.
    pub fn score_all(&self, seq: &Tensor, tm: Option<&Tensor>) -> Result<Tensor> {
        let (seq, tm) = self.prepare(seq, tm)?;
        tch::no_grad(|| {
            let h = self.forward_with(&TchOps, &seq, tm.as_ref(), true, false)?; // (B, 1, C)
            Ok(score_all_items(&TchOps, &h, self.items()))
        })
    }

    /// Scores of `candidates` (B, N) item ids for the next position: (B, N) (pmixer `predict`).
    /// Runs without autograd and with dropout off.
    pub fn predict(
        &self,
        seq: &Tensor,
        tm: Option<&Tensor>,
        candidates: &Tensor,
    ) -> Result<Tensor> {
        let (seq, tm) = self.prepare(seq, tm)?;
        let cd = candidates.size();
        if cd.len() != 2 || cd[0] != seq.size()[0] {
            return Err(Error::Input(format!(
                "candidates have shape {cd:?}, expected [{}, N]",
                seq.size()[0]
            )));
        }
        let cand = candidates.to_device(self.device()).to_kind(Kind::Int64);
        check_range("candidates", &cand, self.cfg.num_items as i64)?;
        tch::no_grad(|| {
            let h = self.forward_with(&TchOps, &seq, tm.as_ref(), true, false)?; // (B, 1, C)
            Ok(score_candidates(&TchOps, &h, self.items(), &cand))
        })
    }
}

/// Index tensors must lie in 0..=max (an out-of-range lookup aborts a CUDA kernel).
fn check_range(what: &str, x: &Tensor, max: i64) -> Result<()> {
    if x.numel() == 0 {
        return Ok(());
    }
    let (lo, hi) = (x.min().int64_value(&[]), x.max().int64_value(&[]));
    if lo < 0 || hi > max {
        return Err(Error::Input(format!(
            "{what} has values in {lo}..={hi}, allowed 0..={max}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use sasrec_shared::config::Backbone;

    fn tm_for(cfg: &ModelConfig, b: i64) -> Option<Tensor> {
        cfg.is_time_aware().then(|| intervals(b))
    }

    /// Dropout off: changing item t+1 (and its interval row/column) leaves outputs ≤ t unchanged.
    #[test]
    fn causality_all_kinds() {
        for cfg in all_kinds() {
            let (vs, m) = build(&cfg);
            perturb(&vs);
            let seq = sequences(4);
            let tm = tm_for(&cfg, 4);
            let f = m.feats(&seq, tm.as_ref(), false).unwrap();
            for t in 2..(T - 1) {
                let seq2 = seq.copy();
                let _ = seq2.narrow(1, t + 1, 1).fill_(7);
                let tm2 = tm.as_ref().map(|x| {
                    let x = x.copy();
                    let _ = x.narrow(1, t + 1, 1).fill_(3);
                    let _ = x.narrow(2, t + 1, 1).fill_(3);
                    x
                });
                let f2 = m.feats(&seq2, tm2.as_ref(), false).unwrap();
                let d = max_diff(&f.narrow(1, 0, t + 1), &f2.narrow(1, 0, t + 1));
                assert!(
                    d < 1e-6,
                    "{}: position ≤ {t} changed by {d}",
                    cfg.kind().as_str()
                );
                let later = max_diff(&f.narrow(1, t + 1, 1), &f2.narrow(1, t + 1, 1));
                assert!(
                    later > 1e-4,
                    "{}: position {} did not change",
                    cfg.kind().as_str(),
                    t + 1
                );
            }
        }
    }

    /// The last-position-only inference path equals the last row of the full forward.
    #[test]
    fn last_only_equals_full_last_row() {
        for cfg in all_kinds() {
            let placements = [
                NormPlacement::Post,
                NormPlacement::Pre,
                NormPlacement::Original,
                NormPlacement::Gated,
            ];
            for placement in placements {
                let vs = nn::VarStore::new(Device::Cpu);
                let m = SeqRecModel::with_placement(&vs.root(), &cfg, placement).unwrap();
                perturb(&vs);
                let seq = sequences(5);
                let tm = tm_for(&cfg, 5);
                let full = m.feats(&seq, tm.as_ref(), false).unwrap().select(1, T - 1);
                let last = m.last_hidden(&seq, tm.as_ref()).unwrap();
                assert_eq!(last.size(), [5, C as i64]);
                let d = max_diff(&full, &last);
                assert!(d < 1e-5, "{} {placement:?}: {d}", cfg.kind().as_str());
                // score_all / predict agree with each other and with the full features.
                let all = m.score_all(&seq, tm.as_ref()).unwrap();
                assert_eq!(all.size(), [5, I as i64 + 1]);
                assert_eq!(all.select(1, 0).double_value(&[0]), f64::NEG_INFINITY);
                let cand = Tensor::randint_low(1, I as i64 + 1, [5, 6], (Kind::Int64, Device::Cpu));
                let p = m.predict(&seq, tm.as_ref(), &cand).unwrap();
                assert!(max_diff(&p, &all.gather(1, &cand, false)) < 1e-5);
                let want = full
                    .unsqueeze(1)
                    .matmul(
                        &m.item_vectors()
                            .index_select(0, &cand.reshape([-1]))
                            .reshape([5, 6, -1])
                            .transpose(1, 2),
                    )
                    .squeeze_dim(1);
                assert!(max_diff(&p, &want) < 1e-4);
            }
        }
    }

    /// TiSASRec: padded query rows are masked and then zeroed, so their interval entries (and
    /// anything else in those rows) never reach a real position.
    #[test]
    fn tisasrec_padding_rows_do_not_leak() {
        for cfg in [
            small_cfg(Backbone::Tisasrec, None),
            small_cfg(Backbone::Tisasrec, Some(4)),
        ] {
            let (vs, m) = build(&cfg);
            perturb(&vs);
            let seq = sequences(4); // row 3 has 3 leading pads
            let tm = intervals(4);
            let f = m.feats(&seq, Some(&tm), false).unwrap();
            let tm2 = tm.copy();
            let _ = tm2.get(3).narrow(0, 0, 3).fill_(K as i64); // rows of the padded queries
            let f2 = m.feats(&seq, Some(&tm2), false).unwrap();
            assert!(max_diff(&f.narrow(1, 3, T - 3), &f2.narrow(1, 3, T - 3)) < 1e-6);
            // Padded positions leave the blocks as exact zeros: F = last_layernorm(0) = β.
            let beta = vs.variables()["last_layernorm.bias"].shallow_clone();
            assert!(max_diff(&f.get(3).get(0), &beta) < 1e-6);
        }
    }

    /// SASRec: the embedding of a padded position is exactly zero (item and position row 0).
    /// Positions are window-relative and padded keys are not masked (as pmixer), so the number
    /// of pads does change real outputs; only this weaker property holds.
    #[test]
    fn sasrec_padding_embeds_to_zero() {
        let cfg = small_cfg(Backbone::Sasrec, None);
        let (_vs, m) = build(&cfg);
        let Net::SasRec(net) = m.net() else {
            unreachable!()
        };
        let seq = sequences(4);
        let x = net.embed(&TchOps, &seq, false);
        assert_eq!(
            x.get(3)
                .narrow(0, 0, 3)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert!(x.get(3).get(3).abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// padding_idx semantics: rows 0 of the padded tables get exactly zero gradient.
    #[test]
    fn padding_rows_get_no_gradient() {
        for cfg in all_kinds() {
            let (vs, m) = build(&cfg);
            let seq = sequences(4);
            let tm = tm_for(&cfg, 4);
            let f = m.feats(&seq, tm.as_ref(), true).unwrap();
            let pos = seq.roll([-1], [1]);
            let neg = Tensor::randint_low(1, I as i64 + 1, [4, T], (Kind::Int64, Device::Cpu));
            let l = crate::loss::bce_loss(&f, m.items(), &pos, &neg, 0.0)
                + crate::loss::ce_loss(&f, m.items(), &pos, 0.0, 4096);
            l.backward();
            for p in m.params().iter().filter(|p| p.padding_idx().is_some()) {
                let g = p.tensor().grad();
                assert_eq!(
                    g.get(0).abs().sum(Kind::Float).double_value(&[]),
                    0.0,
                    "{}",
                    p.name()
                );
                assert!(
                    g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{}",
                    p.name()
                );
            }
            // every VarStore variable is a listed Param
            assert_eq!(
                m.params().len(),
                vs.variables().len(),
                "{}",
                cfg.kind().as_str()
            );
        }
    }

    #[test]
    fn input_errors_are_clear() {
        let cfg = small_cfg(Backbone::Tisasrec, None);
        let (_vs, m) = build(&cfg);
        let seq = sequences(2);
        let e = m.feats(&seq, None, false).unwrap_err().to_string();
        assert!(
            e.contains("time-interval matrix") && e.contains("--no_time"),
            "{e}"
        );
        let e = m
            .feats(&seq.narrow(1, 0, 4), Some(&intervals(2)), false)
            .unwrap_err();
        assert!(e.to_string().contains("[2, 4]"), "{e}");
        let e = m
            .feats(&seq, Some(&(intervals(2) + 10)), false)
            .unwrap_err();
        assert!(e.to_string().contains("time matrix"), "{e}");
        let e = m
            .feats(&(seq + 100), Some(&intervals(2)), false)
            .unwrap_err();
        assert!(e.to_string().contains("seq has values"), "{e}");
    }

    /// A tiny synthetic problem (next item = item + 1): the loss falls over 30 Adam steps.
    #[test]
    fn loss_falls_on_synthetic_task() {
        use tch::nn::OptimizerConfig;
        let mut cases: Vec<(ModelConfig, &str)> =
            all_kinds().into_iter().map(|c| (c, "bce")).collect();
        cases.push((small_cfg(Backbone::Sasrec, None), "ce"));
        cases.push((small_cfg(Backbone::Tisasrec, Some(4)), "sampled"));
        for (mut cfg, loss) in cases {
            cfg.dropout_rate = 0.1;
            tch::manual_seed(0);
            let (vs, m) = build(&cfg);
            let mut opt = nn::Adam {
                beta1: 0.9,
                beta2: 0.98,
                wd: 0.0,
                eps: 1e-8,
                amsgrad: false,
            }
            .build(&vs, 5e-3)
            .unwrap();
            let b = 16;
            let start = Tensor::randint_low(1, (I as i64) - T, [b, 1], (Kind::Int64, Device::Cpu));
            let seq = &start + Tensor::arange(T, (Kind::Int64, Device::Cpu)); // consecutive ids
            let pos = &seq + 1;
            let tm = tm_for(&cfg, b).map(|_| {
                let r = Tensor::arange(T, (Kind::Int64, Device::Cpu));
                (r.unsqueeze(0) - r.unsqueeze(1))
                    .abs()
                    .clamp_max(K as i64)
                    .expand([b, T, T], true)
            });
            let mut losses = vec![];
            for _ in 0..30 {
                let f = m.feats(&seq, tm.as_ref(), true).unwrap();
                let neg = Tensor::randint_low(1, I as i64 + 1, [b, T], (Kind::Int64, Device::Cpu));
                let l = match loss {
                    "bce" => crate::loss::bce_loss(&f, m.items(), &pos, &neg, 0.0),
                    "ce" => crate::loss::ce_loss(&f, m.items(), &pos, 0.0, 4096),
                    _ => crate::loss::sampled_softmax_loss(
                        &f,
                        m.items(),
                        &pos,
                        &neg.get(0),
                        None,
                        0.0,
                    ),
                };
                opt.backward_step(&l);
                losses.push(l.double_value(&[]));
            }
            // single batches with fresh random negatives are noisy: compare averages
            let first = losses[..3].iter().sum::<f64>() / 3.0;
            let last = losses[25..].iter().sum::<f64>() / 5.0;
            assert!(
                last < 0.75 * first,
                "{} {loss}: {first} → {last}",
                cfg.kind().as_str()
            );
        }
    }
}
