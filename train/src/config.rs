//! The resolved run configuration written to `config.json`.

use sasrec_shared::config::{Backbone, MhcConfig, ModelConfig};
use sasrec_shared::dataset::Stats;
use sasrec_shared::time::{Intervals, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::cli::{LossKind, Protocol, TrainArgs};
use crate::dist::Backend;
use sasrec_models::amp::AmpDtype;

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
    /// Negatives for sampled softmax.
    pub num_negatives: usize,
}

impl OptimConfig {
    /// Learning rate of 0-based step `s`: `lr·(s+1)/warmup` while `s < warmup`, then
    /// `lr·rate^((s − warmup)/decay_step)` (continuous exponential decay).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let k = (step - self.warmup_steps) as f64 / self.lr_decay_step.max(1) as f64;
        self.lr * self.lr_decay_rate.powf(k)
    }
}

/// Everything that determines a run; `config.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Model kind name (`sasrec`, `tisasrec`, `sasrec-mhc`, `tisasrec-mhc`).
    pub kind: String,
    /// The network.
    pub model: ModelConfig,
    /// TiSASRec intervals.
    pub intervals: Option<Intervals>,
    /// Optimisation.
    pub optim: OptimConfig,
    /// Dataset file.
    pub dataset: String,
    /// Dataset statistics after filtering.
    pub dataset_stats: Stats,
    /// k-core minimums (0 = off) and mode.
    pub kcore: (usize, usize, bool),
    /// Short-user threshold of the split.
    pub min_holdout_len: usize,
    /// Seed.
    pub seed: u64,
    /// Seed of the evaluation candidates.
    pub eval_seed: u64,
    /// Epochs.
    pub num_epochs: usize,
    /// Evaluation period in epochs.
    pub eval_every: usize,
    /// Early-stopping patience in evaluations.
    pub early_stop_patience: usize,
    /// Selection protocol.
    pub select_protocol: Protocol,
    /// Evaluated-user cap.
    pub eval_max_users: Option<usize>,
    /// Versions of the toolkit and libtorch.
    pub versions: Versions,
    /// Where and how the run executes; a resumed run may change it.
    #[serde(default)]
    pub runtime: Runtime,
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

impl RunConfig {
    /// Resolves the flags against the loaded data.
    pub fn resolve(
        args: &TrainArgs,
        num_items: usize,
        dataset: String,
        stats: Stats,
        runtime: Runtime,
    ) -> Self {
        let backbone = if args.no_time {
            Backbone::Sasrec
        } else {
            Backbone::Tisasrec
        };
        let mhc = (!args.no_mhc).then_some(MhcConfig {
            expansion_rate: args.mhc_expansion_rate,
            sinkhorn_iter: args.mhc_sinkhorn_iter,
            init_gate: args.mhc_init_gate,
            no_amp: args.mhc_no_amp,
            h_res: args.mhc_hres,
        });
        let model = ModelConfig {
            backbone,
            num_items,
            maxlen: args.maxlen,
            hidden_units: args.hidden_units,
            num_blocks: args.num_blocks,
            num_heads: args.num_heads,
            dropout_rate: args.dropout_rate,
            norm_first: args.norm_first,
            time_span: args.time_span,
            mhc,
            time_dropout: args.time_dropout,
        };
        let intervals = (!args.no_time).then_some(Intervals {
            unit: TimeUnit::from(args.time_unit),
            span: args.time_span,
        });
        Self {
            kind: model.kind_name().to_string(),
            model,
            intervals,
            optim: OptimConfig {
                lr: args.lr,
                warmup_steps: args.warmup_steps,
                lr_decay_step: args.lr_decay_step,
                lr_decay_rate: args.lr_decay_rate,
                l2_emb: args.l2_emb,
                batch_size: args.batch_size,
                loss: args.loss,
                num_negatives: args.num_negatives,
            },
            dataset,
            dataset_stats: stats,
            kcore: (
                args.data.min_user_count,
                args.data.min_item_count,
                !args.data.kcore_one_pass,
            ),
            min_holdout_len: args.data.min_holdout_len as usize,
            seed: args.seed,
            eval_seed: args.eval_seed,
            num_epochs: args.num_epochs,
            eval_every: args.eval_every.max(1),
            early_stop_patience: args.early_stop_patience,
            select_protocol: args.select_protocol,
            eval_max_users: args.eval_max_users,
            versions: Versions {
                sasrec_rs: env!("CARGO_PKG_VERSION").to_string(),
                libtorch: "2.11.0".to_string(),
            },
            runtime,
        }
    }

    /// Names of the settings that differ from `other`, ignoring those a resumed run may
    /// change (`num_epochs`, `early_stop_patience`, `runtime`).
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let a = serde_json::to_value(self).expect("serialisable");
        let b = serde_json::to_value(other).expect("serialisable");
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out.retain(|k| {
            k != "num_epochs" && k != "early_stop_patience" && !k.starts_with("runtime")
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
    }
}
