//! The run's configuration, written to `config.json`: the last link of the one-way chain
//! flags ([`crate::cli`]) → resolved settings ([`crate::settings`]) → this. The value types
//! the flags choose from live here (they derive `ValueEnum` so that the flags can name them).

use clap::ValueEnum;
use sasrec_models::amp::AmpDtype;
use sasrec_shared::dataset::Stats;
use sasrec_shared::run::ModelSpec;
use sasrec_shared::KCore;
use serde::{Deserialize, Serialize};

use crate::dist::Backend;

/// `--amp_dtype`: the autocast type asked for (resolved against the device by
/// `device::resolve_amp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AmpChoice {
    /// bf16 where the device computes it natively (CPU, CUDA compute capability ≥ 8), else fp16.
    Auto,
    /// bfloat16 (no loss scaling).
    Bf16,
    /// float16 with dynamic loss scaling.
    Fp16,
}

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LossKind {
    /// The reference: masked binary cross-entropy, one sampled negative per position.
    Bce,
    /// Full-softmax cross-entropy over all items (strongest under full ranking).
    Ce,
    /// Sampled softmax with `--num_negatives` negatives shared by the batch, drawn by
    /// `--negative_sampler` (logQ-corrected when not uniform).
    SampledSoftmax,
    /// gBCE of gSASRec: BCE with `--num_negatives` uniform negatives per sequence and the
    /// positive's probability raised to β (`--gbce_t`).
    Gbce,
}

/// `--negative_sampler`: where the negatives of the sampled losses come from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSamplerKind {
    /// Uniformly over the items.
    #[default]
    Uniform,
    /// In proportion to each item's count in the training data, with the logQ correction.
    Popularity,
}

/// `--item_optimizer`: how the item table `item_emb.weight` is updated (docs/MODELS.md §7);
/// every other parameter keeps the fused dense Adam.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ItemOptimizer {
    /// Dense Adam with the other parameters: every row, every step.
    #[default]
    Adam,
    /// Adam on the rows a step touched only (TensorFlow LazyAdam): their moments and weights,
    /// bias correction by the global step; untouched rows and their moments are left as they
    /// are.
    LazyAdam,
    /// Row-wise Adagrad (FBGEMM / TorchRec `EXACT_ROWWISE_ADAGRAD`): one accumulator per row,
    /// `G_r += mean_c g_rc²`, `θ_r −= lr·g_r/(√G_r + ε)`, touched rows only.
    RowwiseAdagrad,
}

impl ItemOptimizer {
    /// Whether the item table gets a row-sparse gradient (every choice but `adam`).
    pub fn row_sparse(self) -> bool {
        self != Self::Adam
    }
}

/// Which protocol's validation NDCG@10 selects the best epoch and drives early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// True item against 100 sampled negatives.
    Sampled,
    /// True item against all items (history excluded).
    Full,
}

/// What `--select_metric` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// HR@k.
    Hr,
    /// NDCG@k.
    Ndcg,
    /// MRR@k, or MRR without a cut-off.
    Mrr,
}

/// `--select_metric`: the validation metric, under `--select_protocol`, that selects the best
/// epoch and drives early stopping — `ndcg@K`, `hr@K`, `mrr@K` or `mrr` (no cut-off); written
/// as that text in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SelectMetric {
    /// The measure.
    pub measure: Measure,
    /// The cut-off; `None` only for MRR over the whole ranking.
    pub k: Option<usize>,
}

impl Default for SelectMetric {
    /// NDCG@10, the literature's usual choice.
    fn default() -> Self {
        Self {
            measure: Measure::Ndcg,
            k: Some(10),
        }
    }
}

impl std::str::FromStr for SelectMetric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not ndcg@K, hr@K, mrr@K or mrr (K ≥ 1)");
        let (name, k) = match text.split_once('@') {
            Some((name, k)) => (name, Some(k.parse::<usize>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let measure = match name.to_ascii_lowercase().as_str() {
            "ndcg" => Measure::Ndcg,
            "hr" => Measure::Hr,
            "mrr" => Measure::Mrr,
            _ => return Err(bad()),
        };
        match (measure, k) {
            (_, Some(0)) | (Measure::Ndcg | Measure::Hr, None) => Err(bad()),
            _ => Ok(Self { measure, k }),
        }
    }
}

impl std::fmt::Display for SelectMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.measure {
            Measure::Hr => "hr",
            Measure::Ndcg => "ndcg",
            Measure::Mrr => "mrr",
        };
        match self.k {
            Some(k) => write!(f, "{name}@{k}"),
            None => f.write_str(name),
        }
    }
}

impl TryFrom<String> for SelectMetric {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<SelectMetric> for String {
    fn from(m: SelectMetric) -> String {
        m.to_string()
    }
}

/// The cut-offs a run reports when `config.json` predates `--metrics_k`.
fn default_metrics_k() -> Vec<usize> {
    vec![10]
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Steps per decay factor.
    pub lr_decay_step: usize,
    /// Decay factor.
    pub lr_decay_rate: f64,
    /// L2 on the item table.
    pub l2_emb: f64,
    /// Global batch size.
    pub batch_size: usize,
    /// Loss.
    pub loss: LossKind,
    /// Negatives for sampled softmax and gBCE.
    pub num_negatives: usize,
    /// Where the sampled-softmax negatives come from.
    #[serde(default)]
    pub negative_sampler: NegativeSamplerKind,
    /// In-batch negatives of sampled softmax per step.
    #[serde(default)]
    pub in_batch_negatives: usize,
    /// gBCE calibration t.
    #[serde(default = "default_gbce_t")]
    pub gbce_t: f64,
    /// Items per block of the chunked full-softmax CE.
    #[serde(default = "default_ce_chunk_size")]
    pub ce_chunk_size: usize,
    /// How the item table is updated.
    #[serde(default)]
    pub item_optimizer: ItemOptimizer,
    /// Peak learning rate of the item table under a row-sparse item optimizer, `None` = `lr`;
    /// the same warm-up and decay apply.
    #[serde(default)]
    pub item_lr: Option<f64>,
    /// Adam's β₂ (`--adam_beta2`; 0.98 as the SASRec code, torch's default 0.999 in SASRec+
    /// and gSASRec).
    #[serde(default = "default_adam_beta2")]
    pub adam_beta2: f64,
}

/// `--gbce_t` default (gSASRec's recommended calibration).
pub const DEFAULT_GBCE_T: f64 = 0.75;
/// `--ce_chunk_size` default.
pub const DEFAULT_CE_CHUNK_SIZE: usize = 8192;

/// `--adam_beta2` default (the SASRec code's).
pub const DEFAULT_ADAM_BETA2: f64 = 0.98;

fn default_adam_beta2() -> f64 {
    DEFAULT_ADAM_BETA2
}

fn default_gbce_t() -> f64 {
    DEFAULT_GBCE_T
}

fn default_ce_chunk_size() -> usize {
    DEFAULT_CE_CHUNK_SIZE
}

impl OptimConfig {
    /// Learning rate of 0-based step `s`: `lr·(s+1)/warmup` while `s < warmup`, then
    /// `lr·rate^((s − warmup)/decay_step)` (continuous exponential decay).
    pub fn lr_at(&self, step: usize) -> f64 {
        self.scheduled(self.lr, step)
    }

    /// The item table's learning rate at step `s`: [`OptimConfig::lr_at`]'s schedule with the
    /// peak `item_lr` (default `lr`).
    pub fn item_lr_at(&self, step: usize) -> f64 {
        self.scheduled(self.item_lr.unwrap_or(self.lr), step)
    }

    /// `peak` under the warm-up and decay at step `s`.
    fn scheduled(&self, peak: f64, step: usize) -> f64 {
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let k = (step - self.warmup_steps) as f64 / self.lr_decay_step.max(1) as f64;
        peak * self.lr_decay_rate.powf(k)
    }
}

/// Everything that determines a run; `config.json` in the run directory. It begins with the
/// [`ModelSpec`] that export and serving read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Kind, network and intervals.
    #[serde(flatten)]
    pub spec: ModelSpec,
    /// Optimisation.
    pub optim: OptimConfig,
    /// Dataset file.
    pub dataset: String,
    /// Dataset statistics after filtering.
    pub dataset_stats: Stats,
    /// k-core filtering, `None` when off.
    pub kcore: Option<KCore>,
    /// Short-user threshold of the split.
    pub min_holdout_len: usize,
    /// `--cold_items`: the fraction of the items held out of training (drawn with
    /// `schedule.eval_seed`), `None` when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_items: Option<f64>,
    /// Seeds, epochs, evaluation and selection.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Versions of the toolkit and libtorch.
    pub versions: Versions,
    /// Where and how the run executes; a resumed run may change it.
    #[serde(default)]
    pub runtime: Runtime,
}

/// Seeds, epochs and the evaluation protocol: the part of `--help` that says how long a run
/// trains and how it is scored (flattened into `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// `--seed`: training randomness.
    pub seed: u64,
    /// `--eval_seed`: the fixed evaluation candidates.
    pub eval_seed: u64,
    /// `--num_epochs`.
    pub num_epochs: usize,
    /// `--eval_every` epochs (at least 1).
    pub eval_every: usize,
    /// `--early_stop_patience` evaluations (0 = off).
    pub early_stop_patience: usize,
    /// `--select_protocol`: whose validation metric picks the best epoch.
    pub select_protocol: Protocol,
    /// `--select_metric`: the validation metric that picks the best epoch.
    #[serde(default)]
    pub select_metric: SelectMetric,
    /// `--metrics_k` and the selection metric's cut-off: the reported cut-offs, ascending and
    /// distinct (a resumed run may change them).
    #[serde(default = "default_metrics_k")]
    pub metrics_k: Vec<usize>,
    /// `--eval_max_users`: evaluated-user cap.
    pub eval_max_users: Option<usize>,
}

/// The execution settings of a run (recorded, not compared on resume: a run may continue on
/// another device, precision or number of ranks; the global batches stay the same).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// Training device of rank 0 (`cpu`, `cuda:0`).
    pub device: String,
    /// Autocast type under `--use_amp`, `None` for fp32.
    pub amp: Option<AmpDtype>,
    /// Number of data-parallel ranks.
    pub world_size: usize,
    /// Collective backend when distributed.
    pub backend: Option<Backend>,
}

/// Software versions recorded with a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// sasrec-rs.
    pub sasrec_rs: String,
    /// libtorch bound by tch.
    pub libtorch: String,
}

impl Versions {
    /// This build's versions: the crate's, and libtorch's as its headers declare it.
    pub fn current() -> Self {
        Self {
            sasrec_rs: env!("CARGO_PKG_VERSION").to_string(),
            libtorch: crate::shim::torch_version(),
        }
    }
}

impl RunConfig {
    /// Names of the settings that differ from `other`, ignoring those a resumed run may
    /// change (`num_epochs`, `early_stop_patience`, `metrics_k`, `runtime`).
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let a = serde_json::to_value(self).expect("serialisable");
        let b = serde_json::to_value(other).expect("serialisable");
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out.retain(|k| {
            !["num_epochs", "early_stop_patience", "metrics_k"].contains(&k.as_str())
                && !k.starts_with("runtime")
        });
        out
    }
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            for (k, va) in x {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match y.get(k) {
                    Some(vb) => diff(&key, va, vb, out),
                    None => out.push(key),
                }
            }
        }
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
            // Floats compare with a relative tolerance: JSON text may not round-trip the last bit.
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if (x - y).abs() > 1e-12 * x.abs().max(y.abs()) {
                out.push(prefix.to_string());
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_metrics_parse_print_and_serialise_as_text() {
        for text in ["ndcg@10", "hr@1", "mrr@20", "mrr"] {
            let m: SelectMetric = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
            assert_eq!(serde_json::to_value(m).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<SelectMetric>(text.into()).unwrap(),
                m
            );
        }
        assert_eq!("NDCG@5".parse::<SelectMetric>().unwrap().k, Some(5));
        assert_eq!(SelectMetric::default().to_string(), "ndcg@10");
        for bad in ["ndcg", "hr", "ndcg@0", "ndcg@", "ndcg@x", "auc@10", ""] {
            let e = bad.parse::<SelectMetric>().unwrap_err();
            assert_eq!(
                e,
                format!("'{bad}' is not ndcg@K, hr@K, mrr@K or mrr (K ≥ 1)")
            );
        }
    }

    fn optim(warmup: usize, rate: f64) -> OptimConfig {
        OptimConfig {
            lr: 0.001,
            warmup_steps: warmup,
            lr_decay_step: 1000,
            lr_decay_rate: rate,
            l2_emb: 0.0,
            batch_size: 128,
            loss: LossKind::Bce,
            num_negatives: 0,
            negative_sampler: NegativeSamplerKind::Uniform,
            in_batch_negatives: 0,
            gbce_t: DEFAULT_GBCE_T,
            ce_chunk_size: DEFAULT_CE_CHUNK_SIZE,
            item_optimizer: ItemOptimizer::Adam,
            item_lr: None,
            adam_beta2: DEFAULT_ADAM_BETA2,
        }
    }

    #[test]
    fn differences_tolerate_float_text_round_trips_only() {
        let a = serde_json::json!({"x": {"d": 0.1 + 0.2, "n": 3}, "s": "a"});
        let b = serde_json::json!({"x": {"d": 0.3, "n": 3}, "s": "a"});
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let c = serde_json::json!({"x": {"d": 0.31, "n": 4}, "s": "b"});
        diff("", &a, &c, &mut out);
        assert_eq!(out, ["s", "x.d", "x.n"]);
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let o = optim(100, 0.95);
        assert!((o.lr_at(0) - 1e-5).abs() < 1e-15);
        assert!((o.lr_at(99) - 1e-3).abs() < 1e-15);
        assert!((o.lr_at(100) - 1e-3).abs() < 1e-15);
        assert!((o.lr_at(1100) - 0.95e-3).abs() < 1e-15);
        assert!((o.lr_at(2100) - 0.95f64.powi(2) * 1e-3).abs() < 1e-15);
        let flat = optim(0, 1.0);
        assert_eq!(flat.lr_at(0), 1e-3);
        assert_eq!(flat.lr_at(123_456), 1e-3);
        // --item_lr: the same schedule with its own peak; without it, lr's.
        let item = OptimConfig {
            item_lr: Some(0.02),
            ..o.clone()
        };
        assert!((item.item_lr_at(0) - 2e-4).abs() < 1e-15);
        assert!((item.item_lr_at(1100) - 0.95 * 0.02).abs() < 1e-15);
        assert_eq!(item.lr_at(1100), o.lr_at(1100));
        assert_eq!(o.item_lr_at(1100), o.lr_at(1100));
    }
}
