//! The item side of every network (docs/MODELS.md §6.2): the vector of item i,
//!
//! ```text
//! e(i) = E_id[i] + Σ_f mean_k E_f[v_f(i)_k] + Σ_g W_g · x_g(i)
//! ```
//!
//! with `E_id` the ID table `item_emb.weight` (I+1, C) (absent under `--item_repr features`),
//! one embedding table `item_features.<f>.weight` (V_f+1, C) per token column f (row 0 = "no
//! value": zero, no gradient; the mean runs over the item's values, `v_f(i)_k ≠ 0`), and one
//! matrix `item_features.<g>.weight` (C, width_g) per numeric or dense column g. The same
//! `e(i)` is what the network reads at the input (before the √C scale) and what it scores
//! with (the tied table). Without features it is `item_emb.weight` itself, bit for bit.
//!
//! The items' encoded features `v_f`, `x_g` (`sasrec_shared::features::EncodedFeatures`) are
//! buffers, not parameters: they are not trained and not in the checkpoint, but saved beside
//! it ([`ItemTable::feature_tensors`]).
//!
//! With [`ItemTable::set_sparse_id_grad`] (a row-sparse item optimizer, docs/MODELS.md §7) the
//! ID rows are gathered with a row-sparse gradient: a step's gradient of `E_id` holds only the
//! rows it read, and no (I+1, C) gradient exists. Every training use of `E_id` must then gather
//! rows (the input and the sampled losses do; the full-softmax CE and the dense L2 penalty do
//! not, and the trainer refuses them with a row-sparse optimizer).

use std::sync::atomic::{AtomicBool, Ordering};

use sasrec_shared::config::{ItemRepr, ModelConfig};
use sasrec_shared::features::EncodedFeatures;
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::init::{InitRules, Param};
use crate::loss::{l2_penalty, ItemLookup};
use crate::ops::{DType, Ops};
use crate::tch_ops::TchOps;

/// A token column: its embedding table and every item's value ids.
#[derive(Debug)]
struct TokenFeature {
    /// `item_features.<f>.weight` (V+1, C).
    table: Param,
    /// `item_features.<f>.values` (I+1, width) int64, 0 = none.
    values: Param,
}

/// A numeric or dense column: its linear map and every item's numbers.
#[derive(Debug)]
struct NumberFeature {
    /// `item_features.<g>.weight` (C, width).
    weight: Param,
    /// `item_features.<g>.values` (I+1, width) float32.
    values: Param,
}

/// The item vectors `e(i)` of a network ([module docs](self)).
#[derive(Debug)]
pub struct ItemTable {
    num_items: i64,
    id: Option<Param>,
    tokens: Vec<TokenFeature>,
    numbers: Vec<NumberFeature>,
    /// Whether training gathers ID rows with a row-sparse gradient ([module docs](self)).
    sparse_id_grad: AtomicBool,
}

impl ItemTable {
    /// The item side of `cfg` under `p`: tables drawn by `init.embedding`, feature projections
    /// by `init.weight`; the feature buffers start at zero until [`ItemTable::set_features`].
    pub fn new(p: &nn::Path, cfg: &ModelConfig, init: &InitRules) -> Self {
        let (rows, c) = (cfg.num_items as i64 + 1, cfg.hidden_units as i64);
        let repr = cfg.item_features.as_ref().map_or(ItemRepr::Id, |f| f.repr);
        let id = repr.has_id().then(|| {
            Param::embedding(
                &(p / "item_emb"),
                "weight",
                &[rows, c],
                init.embedding.clone(),
                Some(0),
            )
        });
        let (mut tokens, mut numbers) = (Vec::new(), Vec::new());
        let columns = cfg.item_features.iter().flat_map(|f| &f.schema.columns);
        for col in columns {
            let q = p / "item_features" / col.name.as_str();
            let width = col.width as i64;
            if col.kind.is_token() {
                let v = col.vocab.len() as i64 + 1;
                tokens.push(TokenFeature {
                    table: Param::embedding(&q, "weight", &[v, c], init.embedding.clone(), Some(0)),
                    values: Param::buffer(
                        &q,
                        "values",
                        Tensor::zeros([rows, width], (Kind::Int64, p.device())),
                    ),
                });
            } else {
                numbers.push(NumberFeature {
                    weight: Param::new(&q, "weight", &[c, width], init.weight.clone()),
                    values: Param::buffer(
                        &q,
                        "values",
                        Tensor::zeros([rows, width], (Kind::Float, p.device())),
                    ),
                });
            }
        }
        Self {
            num_items: rows - 1,
            id,
            tokens,
            numbers,
            sparse_id_grad: AtomicBool::new(false),
        }
    }

    /// From now on the ID rows reach autograd with a row-sparse gradient (`sparse = true`) or a
    /// dense one (the default) ([module docs](self)).
    pub fn set_sparse_id_grad(&self, sparse: bool) {
        self.sparse_id_grad.store(sparse, Ordering::Relaxed);
    }

    /// Whether [`ItemTable::set_sparse_id_grad`] asked for row-sparse ID gradients.
    pub fn sparse_id_grad(&self) -> bool {
        self.sparse_id_grad.load(Ordering::Relaxed)
    }

    /// Whether the vectors are composed from features (`--item_repr id+features|features`).
    pub fn has_features(&self) -> bool {
        !self.tokens.is_empty() || !self.numbers.is_empty()
    }

    /// The ID table `item_emb.weight`, when the representation has one.
    pub fn id_param(&self) -> Option<&Param> {
        self.id.as_ref()
    }

    /// The trainable parameters: `item_emb.weight`, then each column's table or matrix in
    /// schema order (token columns first).
    pub fn params(&self) -> Vec<&Param> {
        let tokens = self.tokens.iter().map(|f| &f.table);
        let numbers = self.numbers.iter().map(|f| &f.weight);
        self.id.iter().chain(tokens).chain(numbers).collect()
    }

    /// The buffers: every column's encoded values, named `item_features.<col>.values`.
    fn buffers(&self) -> impl Iterator<Item = &Param> {
        let tokens = self.tokens.iter().map(|f| &f.values);
        tokens.chain(self.numbers.iter().map(|f| &f.values))
    }

    /// Device of the tables.
    pub fn device(&self) -> Device {
        self.params()[0].tensor().device()
    }

    /// Copies the encoded features of every item into the buffers; their widths must be the
    /// schema's.
    pub fn set_features(&self, enc: &EncodedFeatures) -> Result<()> {
        let rows = self.num_items + 1;
        let mut sources: Vec<Tensor> = enc
            .tokens
            .iter()
            .map(|t| Tensor::from_slice(&t.ids).view([rows, t.width as i64]))
            .collect();
        if !self.numbers.is_empty() {
            let x = Tensor::from_slice(&enc.numeric).view([rows, enc.numeric_width as i64]);
            let mut at = 0;
            for f in &self.numbers {
                let w = f.values.tensor().size()[1];
                sources.push(x.narrow(1, at, w));
                at += w;
            }
        }
        self.load_buffers(sources.iter().map(|t| (None, t)))
    }

    /// The buffers as `(name, tensor)` on the CPU, for `item_features.safetensors`.
    pub fn feature_tensors(&self) -> Vec<(String, Tensor)> {
        self.buffers()
            .map(|b| (b.name().to_string(), b.tensor().to_device(Device::Cpu)))
            .collect()
    }

    /// Loads the buffers from `(name, tensor)` pairs written by
    /// [`ItemTable::feature_tensors`]; every buffer must be there with its shape and kind.
    pub fn load_feature_tensors(&self, tensors: &[(String, Tensor)]) -> Result<()> {
        let mut found = Vec::new();
        for b in self.buffers() {
            let t = tensors.iter().find(|(n, _)| n == b.name()).map(|(_, t)| t);
            found.push(
                t.ok_or_else(|| Error::Input(format!("item features: no tensor `{}`", b.name())))?,
            );
        }
        self.load_buffers(self.buffers().map(|b| Some(b.name())).zip(found))
    }

    /// Copies each source into its buffer (in buffer order), checking shape and kind.
    fn load_buffers<'a>(
        &self,
        sources: impl Iterator<Item = (Option<&'a str>, &'a Tensor)>,
    ) -> Result<()> {
        let buffers: Vec<&Param> = self.buffers().collect();
        let sources: Vec<_> = sources.collect();
        if sources.len() != buffers.len() {
            return Err(Error::Input(format!(
                "item features: {} columns given, the model has {}",
                sources.len(),
                buffers.len()
            )));
        }
        for (b, (_, src)) in buffers.iter().zip(&sources) {
            let dst = b.tensor();
            if src.size() != dst.size() || src.kind() != dst.kind() {
                return Err(Error::Input(format!(
                    "item features: `{}` is {:?} {:?}, the model expects {:?} {:?}",
                    b.name(),
                    src.kind(),
                    src.size(),
                    dst.kind(),
                    dst.size()
                )));
            }
            tch::no_grad(|| dst.shallow_clone().copy_(src));
        }
        Ok(())
    }

    /// `e(ids)`: `ids` (…) int64 → (…, C) ([module docs](self)).
    pub fn rows<O: Ops>(&self, o: &O, ids: &O::T) -> O::T {
        let sparse = self.sparse_id_grad();
        let id = self.id.as_ref().map(|p| match sparse {
            true => o.gather_rows_sparse_grad(&o.param(p), ids, Some(0)),
            false => o.gather_rows(&o.param(p), ids, Some(0)),
        });
        let gather = |b: &Param| o.gather_rows(&o.param(b), ids, None);
        let tokens: Vec<O::T> = self.tokens.iter().map(|f| gather(&f.values)).collect();
        let numbers: Vec<O::T> = self.numbers.iter().map(|f| gather(&f.values)).collect();
        self.compose(o, id, &tokens, &numbers)
    }

    /// `e` from its parts: the ID rows (when the representation has them), each token
    /// column's value ids (…, width) int64 and each number column's values (…, width).
    pub fn compose<O: Ops>(
        &self,
        o: &O,
        id: Option<O::T>,
        tokens: &[O::T],
        numbers: &[O::T],
    ) -> O::T {
        let mut terms: Vec<O::T> = id.into_iter().collect();
        for (f, v) in self.tokens.iter().zip(tokens) {
            let present = o.not(&o.eq_scalar(v, 0)); // (…, w)
            let rows = o.gather_rows(&o.param(&f.table), v, Some(0)); // (…, w, C)
            let keep = o.unsqueeze(&o.cast(&present, DType::F32), -1); // (…, w, 1)
            let sum = o.sum(&o.mul(&rows, &keep), -2, false); // (…, C), row 0 left out
            let n = o.sum(&o.cast(&present, DType::I64), -1, true); // (…, 1)
            let n = o.add(&n, &o.cast(&o.eq_scalar(&n, 0), DType::I64)); // ≥ 1
            terms.push(o.div(&sum, &o.cast(&n, DType::F32))); // (…, C)
        }
        for (f, x) in self.numbers.iter().zip(numbers) {
            terms.push(o.linear(x, &o.param(&f.weight), None)); // (…, C)
        }
        let mut e = terms.remove(0);
        for t in &terms {
            e = o.add(&e, t);
        }
        e
    }

    /// The whole table `e(0..=I)` (I+1, C) for any [`Ops`]: the parameter `item_emb.weight`
    /// without features (an initializer in a recorded graph), else composed over `0..=I`.
    pub fn table_with<O: Ops>(&self, o: &O) -> O::T {
        let Some(any) = self.buffers().next() else {
            return o.param(self.params()[0]); // no features: the ID table
        };
        let ids = o.range_of(&o.param(any), 0); // 0..=I
        self.rows(o, &ids)
    }

    /// The whole table `e(0..=I)` (I+1, C): the ID table itself without features (sharing its
    /// storage), else composed (row 0 is zero).
    pub fn table(&self) -> Tensor {
        match (&self.id, self.has_features()) {
            (Some(p), false) => p.tensor().shallow_clone(),
            _ => {
                let ids = Tensor::arange(self.num_items + 1, (Kind::Int64, self.device()));
                self.rows(&TchOps, &ids)
            }
        }
    }
}

impl ItemLookup for ItemTable {
    fn rows(&self, ids: &Tensor) -> Tensor {
        let ids = ids.to_device(self.device()).to_kind(Kind::Int64);
        ItemTable::rows(self, &TchOps, &ids).to_kind(Kind::Float)
    }

    fn table(&self) -> Tensor {
        ItemTable::table(self).to_kind(Kind::Float)
    }

    /// `l2 · Σ θ²` over every item-side parameter (the ID table and the feature tables).
    fn l2_penalty(&self, l2: f64) -> Tensor {
        let mut sum = l2_penalty(self.params()[0].tensor(), l2);
        for p in &self.params()[1..] {
            sum += l2_penalty(p.tensor(), l2);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{bce_loss, ce_loss, gbce_loss, sampled_softmax_loss};
    use crate::model::SeqRecModel;
    use crate::test_util::*;
    use sasrec_shared::config::Backbone;

    fn param<'a>(m: &'a SeqRecModel, name: &str) -> &'a Tensor {
        m.params()
            .into_iter()
            .find(|p| p.name() == name)
            .unwrap()
            .tensor()
    }

    /// `e(i)` by hand: the ID row, the mean of the present genre rows, year·W_year + emb·W_emb.
    #[test]
    fn rows_equal_the_equation() {
        for repr in [ItemRepr::IdFeatures, ItemRepr::Features] {
            let cfg = with_features(&small_cfg(Backbone::Sasrec, None), repr);
            let (_vs, m) = random_model(&cfg, 3);
            m.items()
                .set_features(&encoded_features(cfg.num_items))
                .unwrap();
            if let Some(id) = m.items().id_param() {
                let _ = tch::no_grad(|| id.tensor().get(0).zero_()); // the padding row, zero as after init
            }
            let e = m.items().table();
            assert_eq!(e.size(), [cfg.num_items as i64 + 1, C as i64]);
            assert_eq!(
                max_diff(
                    &e.get(0),
                    &Tensor::zeros([C as i64], (Kind::Float, Device::Cpu))
                ),
                0.0
            );
            let g = param(&m, "item_features.genres.weight");
            let (wy, we) = (
                param(&m, "item_features.year.weight"),
                param(&m, "item_features.emb.weight"),
            );
            for i in [1i64, 3, 4, 7] {
                let vals: Vec<i64> = [i % 4, (i + 1) % 4]
                    .into_iter()
                    .filter(|&v| v != 0)
                    .collect();
                let mut want = Tensor::stack(
                    &vals.iter().map(|&v| g.get(v)).collect::<Vec<_>>(),
                    0,
                )
                .mean_dim(0, false, None::<Kind>);
                want += wy.select(1, 0) * (i as f64 / 10.0);
                want += we.select(1, 0) * (i as f64 / 20.0) - we.select(1, 1) * (i as f64 / 20.0);
                if repr == ItemRepr::IdFeatures {
                    want += param(&m, "item_emb.weight").get(i);
                }
                assert!(max_diff(&e.get(i), &want) < 1e-6, "{repr:?} item {i}");
            }
            let names: Vec<&str> = m.items().params().iter().map(|p| p.name()).collect();
            let mut want = vec!["item_emb.weight", "item_features.genres.weight"];
            if repr == ItemRepr::Features {
                want.remove(0);
            }
            want.extend(["item_features.year.weight", "item_features.emb.weight"]);
            assert_eq!(names, want);
        }
    }

    /// Without features the table is `item_emb.weight` itself (same storage), and the item side
    /// has exactly that one parameter.
    #[test]
    fn without_features_the_table_is_the_id_table() {
        let (_vs, m) = build(&small_cfg(Backbone::Tisasrec, None));
        assert!(!m.items().has_features());
        assert_eq!(m.items().params().len(), 1);
        assert_eq!(
            m.item_vectors().data_ptr(),
            param(&m, "item_emb.weight").data_ptr()
        );
        assert!(m.fold_item_features().unwrap().is_none());
    }

    /// The folded ID-only network scores every item and gives every user vector exactly as the
    /// model with features does, for all four kinds.
    #[test]
    fn folding_keeps_scores_for_every_kind() {
        for cfg in all_kinds() {
            let cfg = with_features(&cfg, ItemRepr::IdFeatures);
            let (_vs, m) = random_model(&cfg, 5);
            m.items()
                .set_features(&encoded_features(cfg.num_items))
                .unwrap();
            let (_fvs, folded) = m.fold_item_features().unwrap().unwrap();
            assert!(!folded.items().has_features());
            let seq = sequences(3);
            let tm = cfg.is_time_aware().then(|| intervals(3));
            let a = m.score_all(&seq, tm.as_ref()).unwrap();
            let b = folded.score_all(&seq, tm.as_ref()).unwrap();
            let finite = |s: &Tensor| s.narrow(1, 1, cfg.num_items as i64);
            assert!(max_diff(&finite(&a), &finite(&b)) < 1e-5, "{}", cfg.kind());
        }
    }

    /// Sampled softmax reaches the feature tables only through the rows it gathers: genre rows
    /// of items outside the positives and negatives get no gradient; CE reaches all of them.
    #[test]
    fn sampled_losses_compose_only_gathered_rows() {
        let cfg = with_features(&small_cfg(Backbone::Sasrec, None), ItemRepr::Features);
        let (_vs, m) = random_model(&cfg, 7);
        m.items()
            .set_features(&encoded_features(cfg.num_items))
            .unwrap();
        let g = param(&m, "item_features.genres.weight");
        // positives 4 and 8 have the genre value 1 (0 is "none"), the negative 3 the value 3;
        // the features are detached so that only the scoring side reaches the tables
        let feats = m.feats(&sequences(2), None, false).unwrap().detach();
        let pos =
            Tensor::from_slice(&[0i64, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8]).view([2, 8]);
        let neg = Tensor::from_slice(&[3i64]);
        sampled_softmax_loss(&feats, m.items(), &pos, &neg, None, 0.0).backward();
        let grad = g.grad();
        let touched: Vec<i64> = (0..4)
            .filter(|&r| grad.get(r).abs().sum(Kind::Float).double_value(&[]) > 0.0)
            .collect();
        assert_eq!(touched, [1, 3]);
        let _ = g.grad().zero_();
        ce_loss(&feats, m.items(), &pos, 0.0, 7).backward();
        let grad = g.grad();
        let touched: Vec<i64> = (0..4)
            .filter(|&r| grad.get(r).abs().sum(Kind::Float).double_value(&[]) > 0.0)
            .collect();
        assert_eq!(touched, [1, 2, 3]);
    }

    /// With a row-sparse ID gradient, every sampled loss gives `item_emb.weight` a COO gradient
    /// whose rows are exactly those the step read (input and scored items, padding excluded)
    /// and whose values equal the dense gradient's rows; every other dense row is zero.
    #[test]
    fn sparse_id_gradient_equals_the_dense_rows() {
        for backbone in [Backbone::Sasrec, Backbone::Tisasrec] {
            for repr in [ItemRepr::Id, ItemRepr::IdFeatures] {
                for loss in ["bce", "sampled_softmax", "gbce"] {
                    check_sparse_id_gradient(backbone, repr, loss);
                }
            }
        }
    }

    fn check_sparse_id_gradient(backbone: Backbone, repr: ItemRepr, loss: &str) {
        let base = small_cfg(backbone, None);
        let cfg = match repr {
            ItemRepr::Id => base,
            _ => with_features(&base, repr),
        };
        tch::manual_seed(5);
        let seq = sequences(3);
        let tm = (backbone == Backbone::Tisasrec).then(|| intervals(3));
        let pos =
            Tensor::randint_low(1, I as i64 + 1, [3, T], (Kind::Int64, Device::Cpu)) * seq.ne(0);
        let neg = Tensor::randint_low(1, I as i64 + 1, [3, T], (Kind::Int64, Device::Cpu));
        let shared = Tensor::from_slice(&[2i64, 5, 9]);
        let per_row = Tensor::from_slice(&[2i64, 5, 3, 7, 1, 2]).view([3, 2]);
        // One model per gradient (the same weights): a gradient once dense stays dense.
        let (reference, _) = random_model(&cfg, 11);
        let grad_of = |sparse: bool| {
            let (mut vs, m) = build(&cfg);
            vs.copy(&reference).unwrap();
            if repr != ItemRepr::Id {
                m.items()
                    .set_features(&encoded_features(cfg.num_items))
                    .unwrap();
            }
            m.items().set_sparse_id_grad(sparse);
            let feats = m.feats(&seq, tm.as_ref(), false).unwrap();
            let items = m.items();
            let l = match loss {
                "bce" => bce_loss(&feats, items, &pos, &neg, 0.0),
                "sampled_softmax" => sampled_softmax_loss(&feats, items, &pos, &shared, None, 0.0),
                _ => gbce_loss(&feats, items, &pos, &per_row, cfg.num_items, 0.75, 0.0),
            };
            l.backward();
            param(&m, "item_emb.weight").grad()
        };
        let dense = grad_of(false);
        let sparse = grad_of(true);
        let what = format!("{backbone:?} {repr:?} {loss}");
        assert!(!dense.is_sparse() && sparse.is_sparse(), "{what}");
        let sparse = sparse.coalesce();
        let rows: Vec<i64> = Vec::try_from(sparse.indices().get(0)).unwrap();
        let scored = match loss {
            "bce" => Tensor::cat(&[&pos, &neg], 1),
            "sampled_softmax" => Tensor::cat(&[pos.reshape([-1]), shared.shallow_clone()], 0),
            _ => Tensor::cat(&[pos.reshape([-1]), per_row.reshape([-1])], 0),
        };
        let read = Tensor::cat(&[seq.reshape([-1]), scored.reshape([-1])], 0);
        let (unique, _, _) = read.unique_dim(0, true, false, false);
        let expected: Vec<i64> = Vec::<i64>::try_from(unique)
            .unwrap()
            .into_iter()
            .filter(|&r| r != 0)
            .collect();
        assert_eq!(rows, expected, "{what}: the rows read, without padding");
        let diff = max_diff(&sparse.to_dense(None, false), &dense);
        assert!(diff <= 1e-6, "{what}: sparse vs dense gradient {diff}");
        let mut untouched = Tensor::ones([cfg.num_items as i64 + 1], (Kind::Bool, Device::Cpu));
        let _ = untouched.index_fill_(0, &sparse.indices().get(0), 0);
        let outside = dense.index_select(0, &untouched.nonzero().reshape([-1]));
        assert_eq!(
            outside.abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "{what}"
        );
    }

    /// Buffers round-trip through their named tensors; a wrong shape is refused naming it.
    #[test]
    fn feature_tensors_round_trip_and_are_checked() {
        let cfg = with_features(&small_cfg(Backbone::Sasrec, None), ItemRepr::IdFeatures);
        let (_vs, m) = random_model(&cfg, 9);
        m.items()
            .set_features(&encoded_features(cfg.num_items))
            .unwrap();
        let saved = m.items().feature_tensors();
        let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "item_features.genres.values",
                "item_features.year.values",
                "item_features.emb.values"
            ]
        );
        let (_vs2, m2) = random_model(&cfg, 10);
        m2.items().load_feature_tensors(&saved).unwrap();
        for ((n1, a), (n2, b)) in saved.iter().zip(m2.items().feature_tensors()) {
            assert_eq!((n1, a.size(), a.kind()), (&n2, b.size(), b.kind()));
            assert!(a.equal(&b), "{n1}");
        }
        let mut bad = saved;
        bad[1].1 = Tensor::zeros([3, 1], (Kind::Float, Device::Cpu));
        let e = m2
            .items()
            .load_feature_tensors(&bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "`item_features.year.values` is Float [3, 1], the model expects Float [21, 1]"
            ),
            "{e}"
        );
    }
}
