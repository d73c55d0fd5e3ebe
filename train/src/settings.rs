//! The command line resolved once into typed, plain settings — the middle link of the chain
//! flags ([`crate::cli`]) → settings → the run's config ([`crate::config`]). Past
//! [`Settings::resolve`] and [`data_job`] nothing reads a flag type; every flag is checked here,
//! before any file is read, and what the process does ([`Job`]) is decided here, not in `main`.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use sasrec_shared::cold::ColdItems;
use sasrec_shared::config::{
    Backbone, BlockWiring, ItemFeaturesConfig, ItemRepr, MhcConfig, ModelConfig,
};
use sasrec_shared::dataset::ReadOptions;
use sasrec_shared::features::movielens;
use sasrec_shared::run::{ModelSpec, RunDir};
use sasrec_shared::synthetic::SyntheticConfig;
use sasrec_shared::time::Intervals;
use sasrec_shared::{KCore, Split};

use crate::cli::{DataArgs, DataCmd, FeatureArgs, SyntheticArgs, TrainArgs};
use crate::config::{
    AmpChoice, LossKind, NegativeSamplerKind, OptimConfig, RunConfig, Runtime, Schedule, Versions,
};
use crate::data::{DataSource, FeaturesSource, ItemFeatures};
use crate::data_cmd::DataJob;
use crate::dist::{Backend, DistEnv};
use crate::error::{usage, Result};

/// What this process does.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Train (or resume) in this process: alone, or as one rank started by a launcher.
    Train,
    /// `--multi_gpu` outside torchrun: start `nproc` local ranks of this same command.
    Launch {
        /// Ranks to start (`--nproc_per_node`, default the number of CUDA devices).
        nproc: usize,
    },
    /// `--inference_only --state_dict_path W`: evaluate W on validation and test.
    Evaluate {
        /// The weights.
        weights: PathBuf,
    },
}

/// `--device`: where a single process (or a Gloo rank) trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// No flag: CUDA device 0 when available, else the CPU.
    Auto,
    /// `cpu`.
    Cpu,
    /// `cuda` (device 0, falling back to the CPU with a warning) or `cuda:N` (an error when
    /// device N does not exist).
    Cuda(Option<usize>),
}

impl DeviceRequest {
    fn parse(flag: Option<&str>) -> Result<Self> {
        Ok(match flag {
            None => Self::Auto,
            Some("cpu") => Self::Cpu,
            Some("cuda") => Self::Cuda(None),
            Some(other) => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Self::Cuda(Some(i)),
                _ => usage!("--device {other}: expected cpu, cuda or cuda:N"),
            },
        })
    }
}

/// `--multi_gpu`: data-parallel settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distributed {
    /// `--backend`; `None` = NCCL when CUDA is available, else Gloo.
    pub backend: Option<Backend>,
    /// `--master_port` of the built-in launcher's store.
    pub master_port: u16,
    /// `--dist_timeout`.
    pub timeout: Duration,
}

/// Every `sasrec-train` training flag, validated and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What this process does.
    pub job: Job,
    /// `--train_dir`.
    pub dir: RunDir,
    /// The data source and its filters.
    pub data: DataSource,
    /// The item features and representation, `None` for the ID table alone.
    pub item_features: Option<ItemFeatures>,
    /// The network; `num_items` is 0 here and set from the data by `RunConfig::resolve`.
    pub model: ModelConfig,
    /// TiSASRec intervals, `None` for SASRec.
    pub intervals: Option<Intervals>,
    /// Optimisation.
    pub optim: OptimConfig,
    /// Seeds, epochs, evaluation and selection.
    pub schedule: Schedule,
    /// `--eval_batch_size`.
    pub eval_batch_size: usize,
    /// `--max_steps`: optimiser steps after which the run ends, `None` for no limit.
    pub max_steps: Option<u64>,
    /// `--checkpoint_every_steps`: mid-epoch checkpoints, `None` for epoch ends only.
    pub checkpoint_every_steps: Option<u64>,
    /// `--device`.
    pub device: DeviceRequest,
    /// `--use_amp` with its `--amp_dtype`, `None` for fp32.
    pub amp: Option<AmpChoice>,
    /// Whether full-batch CUDA steps may replay a captured graph (not `--no_cuda_graph`).
    pub cuda_graph: bool,
    /// `--multi_gpu`, `None` for one process.
    pub distributed: Option<Distributed>,
    /// `--num_workers` sampler threads.
    pub num_workers: usize,
    /// `--dump_rank_weights`.
    pub dump_rank_weights: bool,
}

impl Settings {
    /// Resolves and checks the flags; reads the torchrun environment to decide the [`Job`].
    pub fn resolve(args: &TrainArgs) -> Result<Self> {
        check_loss_flags(args)?;
        check_item_optimizer(args)?;
        check_wiring(args)?;
        let model = model_config(args);
        check_sizes(args, &model)?;
        let distributed = args.multi_gpu.then(|| Distributed {
            backend: args.backend,
            master_port: args.master_port,
            timeout: Duration::from_secs(args.dist_timeout),
        });
        Ok(Self {
            job: job(args, distributed.as_ref())?,
            dir: RunDir::new(args.train_dir.clone().unwrap_or_default()),
            data: DataSource {
                cold_items: cold_items(args)?,
                ..data_source(&args.data)
            },
            item_features: item_features(args)?,
            model,
            intervals: (!args.no_time).then_some(Intervals {
                unit: args.time_unit,
                span: args.time_span,
            }),
            optim: optim_config(args),
            schedule: schedule(args),
            eval_batch_size: args.eval_batch_size,
            max_steps: args.max_steps,
            checkpoint_every_steps: args.checkpoint_every_steps,
            device: DeviceRequest::parse(args.device.as_deref())?,
            amp: args.use_amp.then_some(args.amp_dtype),
            cuda_graph: !args.no_cuda_graph,
            distributed,
            num_workers: args.num_workers,
            dump_rank_weights: args.dump_rank_weights,
        })
    }

    /// The run's configuration: these settings with the item count, the dataset's path and
    /// statistics of the loaded data; the network is validated against the data here.
    pub fn run_config(
        &self,
        split: &Split,
        item_features: Option<ItemFeaturesConfig>,
        runtime: Runtime,
    ) -> Result<RunConfig> {
        let model = ModelConfig {
            num_items: split.num_items(),
            item_features,
            ..self.model.clone()
        };
        model.validate()?;
        Ok(RunConfig {
            spec: ModelSpec::new(model, self.intervals),
            optim: self.optim.clone(),
            dataset: split.data.path.display().to_string(),
            dataset_stats: split.data.stats(),
            kcore: self.data.kcore,
            min_holdout_len: self.data.min_holdout_len,
            cold_items: self.data.cold_items.map(|c| c.fraction),
            schedule: self.schedule.clone(),
            versions: Versions::current(),
            runtime,
        })
    }
}

/// What this process does: evaluate given weights, launch the local ranks of a `--multi_gpu`
/// run (outside torchrun), or train.
fn job(args: &TrainArgs, distributed: Option<&Distributed>) -> Result<Job> {
    Ok(match (&args.state_dict_path, distributed) {
        (Some(w), _) if args.inference_only => Job::Evaluate { weights: w.clone() },
        (_, Some(d)) if DistEnv::from_env(d.master_port)?.is_none() => Job::Launch {
            nproc: match args.nproc_per_node {
                Some(n) => n,
                None if tch::Cuda::device_count() > 0 => tch::Cuda::device_count() as usize,
                None => usage!(
                    "--multi_gpu without CUDA devices: pass --nproc_per_node N to train with \
                     N Gloo ranks on the CPU"
                ),
            },
        },
        _ => Job::Train,
    })
}

/// The network flags; `num_items` is 0 until the data is read. A plain model records its
/// resolved wiring ([`ModelConfig::wiring`]), an mHC model none.
fn model_config(args: &TrainArgs) -> ModelConfig {
    let mut cfg = ModelConfig {
        backbone: if args.no_time {
            Backbone::Sasrec
        } else {
            Backbone::Tisasrec
        },
        num_items: 0,
        maxlen: args.maxlen,
        hidden_units: args.hidden_units,
        num_blocks: args.num_blocks,
        num_heads: args.num_heads,
        dropout_rate: args.dropout_rate,
        norm_first: args.norm_first || args.block_wiring == Some(BlockWiring::PreLn),
        block_wiring: args.block_wiring,
        init: args.init,
        padding: args.padding,
        time_span: args.time_span,
        mhc: (!args.no_mhc).then_some(MhcConfig {
            expansion_rate: args.mhc_expansion_rate,
            sinkhorn_iter: args.mhc_sinkhorn_iter,
            init_gate: args.mhc_init_gate,
            no_amp: args.mhc_no_amp,
            h_res: args.mhc_hres,
        }),
        time_dropout: args.time_dropout,
        item_features: None,
    };
    cfg.block_wiring = cfg.mhc.is_none().then(|| cfg.wiring());
    cfg
}

/// `--block_wiring` is for plain blocks, agrees with `--norm_first`, and `gated` is SASRec's,
/// as `--padding` other than pmixer is.
fn check_wiring(args: &TrainArgs) -> Result<()> {
    if !args.padding.is_pmixer() && !args.no_time {
        usage!(
            "--padding {} is SASRec's (add --no_time); TiSASRec masks padded query rows as its \
             reference",
            args.padding.as_str()
        );
    }
    match args.block_wiring {
        Some(w) if !args.no_mhc => usage!(
            "--block_wiring {} applies to plain residual blocks; mHC sub-layers are always \
             Pre-LN (add --no_mhc)",
            w.as_str()
        ),
        Some(w) if args.norm_first && w != BlockWiring::PreLn => usage!(
            "--norm_first means --block_wiring pre_ln; it was combined with --block_wiring {}",
            w.as_str()
        ),
        Some(BlockWiring::Gated) if !args.no_time => usage!(
            "--block_wiring gated is SASRec's (add --no_time); TiSASRec has post_ln, pre_ln and \
             original"
        ),
        _ => Ok(()),
    }
}

/// The optimisation flags.
fn optim_config(args: &TrainArgs) -> OptimConfig {
    OptimConfig {
        lr: args.lr,
        warmup_steps: args.warmup_steps,
        lr_decay_step: args.lr_decay_step,
        lr_decay_rate: args.lr_decay_rate,
        l2_emb: args.l2_emb,
        batch_size: args.batch_size,
        loss: args.loss,
        num_negatives: args.num_negatives,
        negative_sampler: args.negative_sampler,
        in_batch_negatives: args.in_batch_negatives,
        gbce_t: args.gbce_t,
        adam_beta2: args.adam_beta2,
        ce_chunk_size: args.ce_chunk_size,
        item_optimizer: args.item_optimizer,
        item_lr: args.item_lr,
    }
}

/// Seeds, epochs, evaluation and selection.
fn schedule(args: &TrainArgs) -> Schedule {
    Schedule {
        seed: args.seed,
        eval_seed: args.eval_seed,
        num_epochs: args.num_epochs,
        eval_every: args.eval_every.max(1),
        early_stop_patience: args.early_stop_patience,
        select_protocol: args.select_protocol,
        select_metric: args.select_metric,
        metrics_k: metrics_k(args),
        eval_max_users: args.eval_max_users,
    }
}

/// `--metrics_k` with `--select_metric`'s cut-off, ascending and distinct.
fn metrics_k(args: &TrainArgs) -> Vec<usize> {
    let mut ks: Vec<usize> = args
        .metrics_k
        .iter()
        .copied()
        .chain(args.select_metric.k)
        .collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// `--dataset` and its reading and filtering flags as a plain [`DataSource`].
pub fn data_source(args: &DataArgs) -> DataSource {
    let kcore = (args.min_user_count > 1 || args.min_item_count > 1).then_some(KCore {
        min_user: args.min_user_count,
        min_item: args.min_item_count,
        iterative: !args.kcore_one_pass,
    });
    DataSource {
        dataset: args.dataset.clone().unwrap_or_default(),
        read: ReadOptions {
            format: args.format,
            columns: args.columns.clone(),
        },
        kcore,
        min_holdout_len: args.min_holdout_len as usize,
        features: None,
        cold_items: None,
    }
}

/// `--cold_items FRACTION`, drawn with `--eval_seed` (so that runs of every training seed hold
/// out the same items); a fraction outside (0, 1) is a usage error.
fn cold_items(args: &TrainArgs) -> Result<Option<ColdItems>> {
    match args.cold_items {
        None => Ok(None),
        Some(f) => match ColdItems::new(f, args.eval_seed) {
            Ok(c) => Ok(Some(c)),
            Err(e) => usage!("{e}"),
        },
    }
}

/// `--item_features` with `--item_repr` (default `id+features`); `--item_repr` other than
/// `id` without a file, or `id` with one, is a usage error.
fn item_features(args: &TrainArgs) -> Result<Option<ItemFeatures>> {
    match (features_source(&args.features), args.item_repr) {
        (None, None | Some(ItemRepr::Id)) => Ok(None),
        (None, Some(r)) => usage!("--item_repr {r} needs --item_features FILE"),
        (Some(_), Some(ItemRepr::Id)) => usage!(
            "--item_repr id ignores --item_features: use id+features or features, or drop the file"
        ),
        (Some(source), repr) => Ok(Some(ItemFeatures {
            source,
            repr: repr.unwrap_or(ItemRepr::IdFeatures),
        })),
    }
}

/// The item features file of `args`, when given.
fn features_source(args: &FeatureArgs) -> Option<FeaturesSource> {
    args.item_features.clone().map(|path| FeaturesSource {
        path,
        columns: args.item_feature_columns.clone().map(|c| c.0),
    })
}

/// A `sasrec-train data …` command resolved and checked (before any file is read).
pub fn data_job(cmd: DataCmd) -> Result<DataJob> {
    Ok(match cmd {
        DataCmd::Stats {
            data,
            features,
            json,
        } => DataJob::Stats {
            source: DataSource {
                features: features_source(&features),
                ..data_source(&data)
            },
            json,
        },
        DataCmd::Pack { data, output } => DataJob::Pack {
            source: data_source(&data),
            output,
        },
        DataCmd::ConvertMl1m { input, output } => DataJob::ConvertMl1m { input, output },
        DataCmd::Synthetic(args) => synthetic_job(args)?,
        DataCmd::FeaturesMl1m {
            input,
            item_map,
            output,
        } => DataJob::Features {
            source: movielens::Source::Ml1mMovies,
            input,
            item_map,
            output,
        },
        DataCmd::FeaturesMl100k { input, output } => DataJob::Features {
            source: movielens::Source::Ml100kItems,
            input,
            item_map: None,
            output,
        },
    })
}

/// `data synthetic`'s flags checked and turned into the generator's settings.
fn synthetic_job(a: SyntheticArgs) -> Result<DataJob> {
    if a.items == 0 || a.genres == 0 || a.min_len == 0 {
        usage!("--items, --genres and --min_len must be at least 1");
    }
    if a.min_len > a.max_len {
        usage!("--min_len {} is above --max_len {}", a.min_len, a.max_len);
    }
    let config = SyntheticConfig {
        users: a.users,
        items: a.items,
        genres: a.genres,
        min_len: a.min_len,
        max_len: a.max_len,
        zipf: a.zipf,
        seed: a.seed,
        ..Default::default()
    };
    Ok(DataJob::Synthetic {
        output: a.output,
        features_output: a.features_output,
        config,
    })
}

/// The sizes and the network, checked before any file is read (the item count, unknown until
/// then, stands at 1).
fn check_sizes(args: &TrainArgs, model: &ModelConfig) -> Result<()> {
    if args.batch_size == 0 {
        usage!("--batch_size must be at least 1");
    }
    if args.eval_batch_size == 0 {
        usage!("--eval_batch_size must be at least 1");
    }
    if args.metrics_k.contains(&0) {
        usage!("--metrics_k: every cut-off must be at least 1");
    }
    ModelConfig {
        num_items: 1,
        ..model.clone()
    }
    .validate()?;
    Ok(())
}

/// The loss flags that cannot work together.
fn check_loss_flags(args: &TrainArgs) -> Result<()> {
    let sampled = matches!(args.loss, LossKind::SampledSoftmax | LossKind::Gbce);
    if sampled && args.num_negatives == 0 {
        let name = args
            .loss
            .to_possible_value()
            .expect("every loss has a name");
        usage!(
            "--num_negatives must be at least 1 for --loss {}",
            name.get_name()
        );
    }
    if args.negative_sampler == NegativeSamplerKind::Popularity
        && args.loss != LossKind::SampledSoftmax
    {
        usage!(
            "--negative_sampler popularity needs --loss sampled_softmax (gBCE's calibration \
             assumes uniform negatives; bce and ce draw none)"
        );
    }
    if args.in_batch_negatives > 0 && args.loss != LossKind::SampledSoftmax {
        usage!(
            "--in_batch_negatives needs --loss sampled_softmax (gBCE's calibration assumes \
             uniform negatives; bce and ce draw none)"
        );
    }
    if !(0.0..1.0).contains(&args.adam_beta2) {
        usage!(
            "--adam_beta2 {}: expected a value in [0, 1)",
            args.adam_beta2
        );
    }
    if !(0.0..=1.0).contains(&args.gbce_t) {
        usage!("--gbce_t {}: expected a value in [0, 1]", args.gbce_t);
    }
    if args.ce_chunk_size == 0 {
        usage!("--ce_chunk_size must be at least 1");
    }
    Ok(())
}

/// The item-optimizer flags that cannot work together: a row-sparse item optimizer needs every
/// training use of the item table to gather rows (docs/MODELS.md §7).
fn check_item_optimizer(args: &TrainArgs) -> Result<()> {
    let opt = args.item_optimizer;
    let name = opt.to_possible_value().expect("every optimizer has a name");
    let name = name.get_name();
    if !opt.row_sparse() {
        if args.item_lr.is_some() {
            usage!("--item_lr needs --item_optimizer lazy_adam or rowwise_adagrad");
        }
        return Ok(());
    }
    if args.loss == LossKind::Ce {
        usage!(
            "--item_optimizer {name} needs a loss that gathers item rows (bce, \
             sampled_softmax, gbce): --loss ce scores every item, a dense gradient"
        );
    }
    if args.l2_emb != 0.0 {
        usage!("--item_optimizer {name} needs --l2_emb 0: the L2 penalty reaches every row");
    }
    if args.item_repr == Some(ItemRepr::Features) {
        usage!(
            "--item_optimizer {name} updates rows of the ID table; --item_repr features has none"
        );
    }
    match args.item_lr {
        Some(lr) if !(lr.is_finite() && lr > 0.0) => {
            usage!("--item_lr {lr}: expected a positive number")
        }
        _ => Ok(()),
    }
}
