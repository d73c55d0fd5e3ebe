//! `sasrec-train` flags, the first link of the one-way chain flags → resolved settings
//! ([`crate::settings`]) → the run's config ([`crate::config`]); only `main` and `settings`
//! read these types. Names keep the Python prototype's spelling (`--batch_size`); the
//! kebab-case spelling (`--batch-size`) works too.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use sasrec_shared::config::{
    BlockWiring, HresProjection, InitScheme, ItemRepr, MhcConfig, Padding, TimeDropout,
};
use sasrec_shared::dataset::{Columns, Format};
use sasrec_shared::features::ColumnSpecs;
use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::synthetic::SyntheticConfig;
use sasrec_shared::time::TimeUnit;

use crate::config::{
    AmpChoice, ItemOptimizer, LossKind, NegativeSamplerKind, Protocol, SelectMetric,
    DEFAULT_CE_CHUNK_SIZE, DEFAULT_GBCE_T,
};
use crate::dist::Backend;

/// Everything `sasrec-train` accepts for training and evaluation.
///
/// Model choice as in the prototype: default TiSASRec + mHC; `--no_mhc` TiSASRec;
/// `--no_time` SASRec + mHC; `--no_time --no_mhc` SASRec.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Item features the item vectors are composed from (with --item_repr).
    #[command(flatten)]
    pub features: FeatureArgs,
    /// How an item is represented (docs/MODELS.md §6.2): `id` (one trained row per item),
    /// `id+features` (that row plus the embeddings of its features) or `features` (features
    /// only, so every item has a vector). Default: `id+features` with --item_features, else
    /// `id`.
    #[arg(
        long = "item_repr",
        alias = "item-repr",
        value_parser = PossibleValuesParser::new(["id", "id+features", "features"])
            .map(|s| ItemRepr::from_name(&s).unwrap_or_default())
    )]
    pub item_repr: Option<ItemRepr>,
    /// Cold-start evaluation (docs/MODELS.md §6.4): hold this fraction of the items (drawn
    /// with --eval_seed) out of training — every interaction with them leaves the training
    /// parts, and negatives and the full softmax use the other items only — then report
    /// NDCG@10/HR@10 separately for cold and warm test targets, under full ranking over all
    /// items and the sampled protocol, with the category-popularity baseline when item
    /// features have a token column.
    #[arg(long = "cold_items", alias = "cold-items", value_name = "FRACTION")]
    pub cold_items: Option<f64>,
    /// Run directory: config.json, model.safetensors, items.tsv, metrics.jsonl, the curve PNG
    /// and the resumable checkpoint. Rerunning the same command resumes from it.
    // An `Option` only so that `sasrec-train data …` parses without it; clap enforces presence.
    #[arg(long = "train_dir", alias = "train-dir", required = true)]
    pub train_dir: Option<PathBuf>,
    /// Batch size (total over all ranks when distributed).
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate (Adam, β = (0.9, --adam_beta2), ε = 1e-8).
    #[arg(long, default_value_t = 0.001)]
    pub lr: f64,
    /// Steps per factor of `--lr_decay_rate` in the exponential decay after warm-up.
    #[arg(
        long = "lr_decay_step",
        alias = "lr-decay-step",
        default_value_t = 1000
    )]
    pub lr_decay_step: usize,
    /// Decay factor per `--lr_decay_step` steps (1 disables decay).
    #[arg(
        long = "lr_decay_rate",
        alias = "lr-decay-rate",
        default_value_t = 0.95
    )]
    pub lr_decay_rate: f64,
    /// Linear warm-up steps (0 disables).
    #[arg(long = "warmup_steps", alias = "warmup-steps", default_value_t = 100)]
    pub warmup_steps: usize,
    /// Window length T (most recent items kept).
    #[arg(long, default_value_t = 200)]
    pub maxlen: usize,
    /// Hidden size d.
    #[arg(long = "hidden_units", alias = "hidden-units", default_value_t = 50)]
    pub hidden_units: usize,
    /// Transformer blocks.
    #[arg(long = "num_blocks", alias = "num-blocks", default_value_t = 2)]
    pub num_blocks: usize,
    /// Attention heads (must divide --hidden_units).
    #[arg(long = "num_heads", alias = "num-heads", default_value_t = 2)]
    pub num_heads: usize,
    /// Dropout rate (embeddings, attention probabilities, FFN).
    #[arg(long = "dropout_rate", alias = "dropout-rate", default_value_t = 0.2)]
    pub dropout_rate: f64,
    /// L2 penalty l2·Σ item_emb² (squared, as pmixer SASRec).
    #[arg(long = "l2_emb", alias = "l2-emb", default_value_t = 0.0)]
    pub l2_emb: f64,
    /// cuda or cpu (default: cuda when available, else cpu with a notice).
    #[arg(long)]
    pub device: Option<String>,
    /// SASRec instead of TiSASRec (no timestamps needed).
    #[arg(long = "no_time", alias = "no-time")]
    pub no_time: bool,
    /// Plain residual blocks instead of mHC.
    #[arg(long = "no_mhc", alias = "no-mhc")]
    pub no_mhc: bool,
    /// mHC: number of residual streams n.
    #[arg(
        long = "mhc_expansion_rate",
        alias = "mhc-expansion-rate",
        default_value_t = MhcConfig::default().expansion_rate
    )]
    pub mhc_expansion_rate: usize,
    /// mHC: Sinkhorn-Knopp iterations.
    #[arg(
        long = "mhc_sinkhorn_iter",
        alias = "mhc-sinkhorn-iter",
        default_value_t = MhcConfig::default().sinkhorn_iter
    )]
    pub mhc_sinkhorn_iter: usize,
    /// mHC: initial value of the gates α.
    #[arg(
        long = "mhc_init_gate",
        alias = "mhc-init-gate",
        default_value_t = MhcConfig::default().init_gate
    )]
    pub mhc_init_gate: f64,
    /// mHC: keep the whole mHC path out of autocast.
    #[arg(long = "mhc_no_amp", alias = "mhc-no-amp")]
    pub mhc_no_amp: bool,
    /// mHC: how H_res is made doubly stochastic: sinkhorn (the paper's Sinkhorn-Knopp,
    /// --mhc_sinkhorn_iter rounds) or lite (mHC-lite: a softmax-weighted mix of the n!
    /// permutation matrices, exact; n ≤ 5).
    #[arg(
        long = "mhc_hres",
        alias = "mhc-hres",
        default_value = MhcConfig::default().h_res.as_str(),
        value_parser = PossibleValuesParser::new(HresProjection::NAMES).try_map(|s| s.parse::<HresProjection>())
    )]
    pub mhc_hres: HresProjection,
    /// TiSASRec: largest interval bucket k.
    #[arg(long = "time_span", alias = "time-span", default_value_t = 100)]
    pub time_span: usize,
    /// TiSASRec: dropout on the interval embeddings. table (default): one mask per sample on
    /// the two (k+1, C) interval tables, memory O(B·h·T·(T+k)); elementwise: the reference's
    /// independent mask on every element of the gathered (B, T, T, C) tensors (memory
    /// O(B·T²·C)). Evaluation is the same either way.
    #[arg(
        long = "time_dropout",
        alias = "time-dropout",
        default_value = "table",
        value_parser = PossibleValuesParser::new(TimeDropout::NAMES).try_map(|s| s.parse::<TimeDropout>())
    )]
    pub time_dropout: TimeDropout,
    /// TiSASRec: interval unit (personal = the paper's per-user minimum-gap scaling).
    #[arg(
        long = "time_unit",
        alias = "time-unit",
        default_value = "hour",
        value_parser = PossibleValuesParser::new(TimeUnit::NAMES).try_map(|s| s.parse::<TimeUnit>())
    )]
    pub time_unit: TimeUnit,
    /// Pre-LN blocks, the same as --block_wiring pre_ln (SASRec default is Post-LN, TiSASRec's
    /// the reference wiring; mHC is always Pre-LN: Post-LN is not defined for hyper-connections).
    #[arg(long = "norm_first", alias = "norm-first")]
    pub norm_first: bool,
    /// Residual wiring of plain blocks: post_ln (SASRec default), pre_ln (= --norm_first),
    /// original (Q = LN(X), X = Q + MHA(Q, X, X), Y = LN(X), X = (Y + FFN(Y))·¬pad: the SASRec
    /// paper's code, SASRec+ and TiSASRec's default) or gated (SASRec only: Pre-LN with LiGR's
    /// learned gates, X = X + σ(W X + b) ⊙ F(LN(X)) per sub-layer). Not with mHC.
    #[arg(
        long = "block_wiring",
        alias = "block-wiring",
        value_parser = PossibleValuesParser::new(BlockWiring::NAMES).try_map(|s| s.parse::<BlockWiring>())
    )]
    pub block_wiring: Option<BlockWiring>,
    /// Parameter initialisation: pmixer (Xavier on every matrix, the backbone's reference) or
    /// normal_0.02 (SASRec+ / RecBole: N(0, 0.02²) embeddings and Linear weights, zero biases).
    #[arg(
        long = "init",
        default_value = "pmixer",
        value_parser = PossibleValuesParser::new(InitScheme::NAMES).try_map(|s| s.parse::<InitScheme>())
    )]
    pub init: InitScheme,
    /// SASRec's padding: pmixer (padded keys take part in attention, the newest item at
    /// position T), masked (padded keys blocked) or right (blocked, and positions counted from
    /// the oldest item, as SASRec+'s right-padded window).
    #[arg(
        long = "padding",
        default_value = "pmixer",
        value_parser = PossibleValuesParser::new(Padding::NAMES).try_map(|s| s.parse::<Padding>())
    )]
    pub padding: Padding,
    /// Sampler threads.
    #[arg(long = "num_workers", alias = "num-workers", default_value_t = 3)]
    pub num_workers: usize,
    /// Training epochs (one pass over the users each).
    #[arg(long = "num_epochs", alias = "num-epochs", default_value_t = 200)]
    pub num_epochs: usize,
    /// Stop after this many optimiser steps in all (benchmarks and smoke tests on large
    /// data): the epoch in progress ends there and is evaluated and checkpointed as the last
    /// epoch of the run (a resumed run starts with the next epoch).
    #[arg(long = "max_steps", alias = "max-steps", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Also write the resumable checkpoint every N optimiser steps (default: after every epoch
    /// only), so that a long epoch loses at most N steps; a resumed run continues the epoch
    /// with the batches an uninterrupted run would take.
    #[arg(long = "checkpoint_every_steps", alias = "checkpoint-every-steps", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every_steps: Option<u64>,
    /// Evaluate on validation and test every N epochs (and after the last).
    #[arg(long = "eval_every", alias = "eval-every", default_value_t = 20)]
    pub eval_every: usize,
    /// Stop after this many evaluations without a better validation NDCG@10 (0 = never).
    #[arg(
        long = "early_stop_patience",
        alias = "early-stop-patience",
        default_value_t = 3
    )]
    pub early_stop_patience: usize,
    /// Protocol whose validation metric (--select_metric) selects the best epoch.
    #[arg(long = "select_protocol", alias = "select-protocol", value_enum, default_value_t = Protocol::Sampled)]
    pub select_protocol: Protocol,
    /// Validation metric that selects the best epoch and drives early stopping: ndcg@K, hr@K,
    /// mrr@K or mrr (no cut-off); its K is reported too.
    #[arg(
        long = "select_metric",
        alias = "select-metric",
        default_value = "ndcg@10"
    )]
    pub select_metric: SelectMetric,
    /// Cut-offs (comma-separated) of the reported HR, NDCG and MRR under both protocols and of
    /// the coverage and mean popularity rank of the full-ranking top-k lists, e.g.
    /// 1,5,10,20,50,100.
    #[arg(
        long = "metrics_k",
        alias = "metrics-k",
        value_delimiter = ',',
        default_value = "10"
    )]
    pub metrics_k: Vec<usize>,
    /// Training loss.
    #[arg(long, value_enum, default_value_t = LossKind::Bce)]
    pub loss: LossKind,
    /// Negatives per batch for `--loss sampled_softmax`, per sequence for `--loss gbce`.
    #[arg(long = "num_negatives", alias = "num-negatives", default_value_t = 256)]
    pub num_negatives: usize,
    /// Negatives of `--loss sampled_softmax`: uniform, or by training popularity with the logQ
    /// correction `s_j − log Q(j)` (Yi et al., RecSys 2019).
    #[arg(
        long = "negative_sampler",
        alias = "negative-sampler",
        value_enum,
        default_value_t = NegativeSamplerKind::Uniform
    )]
    pub negative_sampler: NegativeSamplerKind,
    /// In-batch negatives of `--loss sampled_softmax`: M more negatives per step, the targets
    /// of M positions drawn from the batch itself, with the logQ correction of the mixture
    /// `Q = (N·Q_sampler + M·Q_popularity)/(N + M)` (mixed negative sampling).
    #[arg(
        long = "in_batch_negatives",
        alias = "in-batch-negatives",
        default_value_t = 0
    )]
    pub in_batch_negatives: usize,
    /// gBCE calibration t ∈ [0, 1]: β = α(t(1 − 1/α) + 1/α) with α = N/(I − 1); 0 = plain BCE
    /// with N negatives, 1 = fully calibrated (gSASRec, RecSys 2023).
    #[arg(long = "gbce_t", alias = "gbce-t", default_value_t = DEFAULT_GBCE_T)]
    pub gbce_t: f64,
    /// Items per block of `--loss ce`: the logits exist one (positions × block) block at a
    /// time, so memory is bounded by this rather than by the catalogue.
    #[arg(
        long = "ce_chunk_size",
        alias = "ce-chunk-size",
        default_value_t = DEFAULT_CE_CHUNK_SIZE
    )]
    pub ce_chunk_size: usize,
    /// How the item table is updated: adam (dense, with every parameter), lazy_adam (Adam on
    /// the rows a step touched) or rowwise_adagrad (one accumulator per row). The row-sparse
    /// two need --loss bce, sampled_softmax or gbce and --l2_emb 0 (docs/MODELS.md §7).
    #[arg(
        long = "item_optimizer",
        alias = "item-optimizer",
        value_enum,
        default_value_t = ItemOptimizer::Adam
    )]
    pub item_optimizer: ItemOptimizer,
    /// Peak learning rate of the item table under lazy_adam or rowwise_adagrad (default
    /// --lr); the warm-up and decay of --lr apply.
    #[arg(long = "item_lr", alias = "item-lr")]
    pub item_lr: Option<f64>,
    /// Adam's β₂ for every parameter (0.98 as the SASRec code; PyTorch's default, used by
    /// SASRec+ and gSASRec, is 0.999).
    #[arg(long = "adam_beta2", alias = "adam-beta2", default_value_t = 0.98)]
    pub adam_beta2: f64,
    /// Seed for initialisation, sampling, dropout and the evaluation candidates.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Seed of the fixed evaluation candidates and user subset; kept apart from --seed so that
    /// runs with different training seeds are scored on the same candidates.
    #[arg(long = "eval_seed", alias = "eval-seed", default_value_t = 2018)]
    pub eval_seed: u64,
    /// Users per evaluation batch.
    #[arg(
        long = "eval_batch_size",
        alias = "eval-batch-size",
        default_value_t = 512
    )]
    pub eval_batch_size: usize,
    /// Evaluate at most this many users (seeded subset; the references use 10000).
    #[arg(long = "eval_max_users", alias = "eval-max-users")]
    pub eval_max_users: Option<usize>,
    /// Mixed precision: forward and loss under autocast (`--amp_dtype`), parameters, optimiser
    /// and the mHC coefficients/Sinkhorn/stream mixing in fp32.
    #[arg(long = "use_amp", alias = "use-amp")]
    pub use_amp: bool,
    /// Autocast type with --use_amp: auto = bf16 where supported, else fp16 (which adds
    /// dynamic loss scaling, as torch.amp.GradScaler).
    #[arg(long = "amp_dtype", alias = "amp-dtype", value_enum, default_value_t = AmpChoice::Auto)]
    pub amp_dtype: AmpChoice,
    /// Train every step eagerly instead of replaying a captured CUDA graph of the step (by
    /// default a single-process `--loss bce` run on CUDA captures one full-batch step after 3
    /// warm-up steps and replays it; the ragged last batch of an epoch always runs eagerly).
    #[arg(long = "no_cuda_graph", alias = "no-cuda-graph")]
    pub no_cuda_graph: bool,
    /// Data-parallel training over several processes (PyTorch c10d). Under torchrun
    /// (`torchrun --no-python --nproc_per_node=N sasrec-train … --multi_gpu`) each process is a
    /// rank; otherwise sasrec-train launches `--nproc_per_node` ranks on this node itself.
    #[arg(long = "multi_gpu", alias = "multi-gpu")]
    pub multi_gpu: bool,
    /// Collective backend: nccl (CUDA) or gloo (CPU); default nccl when CUDA is available.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Port of the rendezvous store on the master (built-in launcher; torchrun sets its own).
    #[arg(long = "master_port", alias = "master-port", default_value_t = 29500)]
    pub master_port: u16,
    /// Ranks the built-in launcher starts on this node (default: the number of CUDA devices).
    #[arg(long = "nproc_per_node", alias = "nproc-per-node")]
    pub nproc_per_node: Option<usize>,
    /// Seconds a rendezvous or a collective may wait for the other ranks before the run fails.
    #[arg(long = "dist_timeout", alias = "dist-timeout", default_value_t = 1800)]
    pub dist_timeout: u64,
    /// Testing aid: every rank writes its final parameters to `rank<R>.safetensors` in the
    /// run directory (to check that data-parallel replicas end bit-identical).
    #[arg(long = "dump_rank_weights", hide = true)]
    pub dump_rank_weights: bool,
    /// Only evaluate the weights in --state_dict_path (no training).
    #[arg(
        long = "inference_only",
        alias = "inference-only",
        requires = "state_dict_path"
    )]
    pub inference_only: bool,
    /// Weights to evaluate (safetensors with the reference names).
    #[arg(long = "state_dict_path", alias = "state-dict-path")]
    pub state_dict_path: Option<PathBuf>,
}

/// Options that select and filter the interactions (shared with training).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Interaction file, or NAME for data/NAME.txt(.gz); `.gz` is read directly. One event per
    /// line (`user item [rating] [timestamp]`, separated by spaces, tabs, commas or `::`, an
    /// optional header of column names in any order) or one user per line (`user item1 item2 …`
    /// in time order, see --format).
    // An `Option` only so that `sasrec-train data …` parses without it; clap enforces presence.
    #[arg(long, required = true)]
    pub dataset: Option<String>,
    /// File layout: auto (detected), interactions (one event per line) or sequence (one user
    /// per line, `user item1 item2 …` in time order). Auto reads a space-separated file as
    /// sequences when its lines have different field counts and some line has more than 4;
    /// a sequence file whose lines all have 2–4 fields needs `--format sequence`.
    #[arg(
        long,
        default_value = "auto",
        value_parser = PossibleValuesParser::new(Format::NAMES).try_map(|s| s.parse::<Format>())
    )]
    pub format: Format,
    /// The role of each column in file order, e.g. `user,item,timestamp` or
    /// `item_id,-,user_id,timestamp` (`-` = ignored; roles: user, item, rating, timestamp).
    /// Overrides a header line; without it a header names the columns.
    #[arg(long, value_parser = |s: &str| s.parse::<Columns>())]
    pub columns: Option<Columns>,
    /// Drop users with fewer interactions (k-core filtering; 0 = off).
    #[arg(long = "min_user_count", alias = "min-user-count", default_value_t = 0)]
    pub min_user_count: usize,
    /// Drop items with fewer interactions (k-core filtering; 0 = off).
    #[arg(long = "min_item_count", alias = "min-item-count", default_value_t = 0)]
    pub min_item_count: usize,
    /// Filter in one pass over the file's counts (the TiSASRec reference's 5-filter) instead of
    /// iterating to a true k-core.
    #[arg(long = "kcore_one_pass", alias = "kcore-one-pass")]
    pub kcore_one_pass: bool,
    /// Users with fewer interactions are training-only (not evaluated). The reference
    /// SASRec uses 4, TiSASRec and the original TF code 3.
    #[arg(long = "min_holdout_len", alias = "min-holdout-len", default_value_t = DEFAULT_MIN_HOLDOUT_LEN as u64,
          value_parser = clap::value_parser!(u64).range(3..))]
    pub min_holdout_len: u64,
}

/// An item features file and its columns.
#[derive(Debug, Clone, Args)]
pub struct FeatureArgs {
    /// Item features: a header-named CSV or TSV (plain or .gz) whose first column is the item
    /// id of the dataset (README "Item features"); `data features-ml1m` / `features-ml100k`
    /// write one from the MovieLens metadata.
    #[arg(long = "item_features", alias = "item-features")]
    pub item_features: Option<PathBuf>,
    /// The feature columns of --item_features and their kinds, `name:kind,…` (kinds:
    /// categorical, multi, numeric, dense); without it the header cells written `name:kind`
    /// are the feature columns. Other columns are ignored.
    #[arg(
        long = "item_feature_columns",
        alias = "item-feature-columns",
        requires = "item_features",
        value_parser = |s: &str| s.parse::<ColumnSpecs>().map_err(|e| e.to_string())
    )]
    pub item_feature_columns: Option<ColumnSpecs>,
}

/// Data commands.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Print dataset statistics (as JSON with --json).
    Stats {
        #[command(flatten)]
        data: DataArgs,
        /// The item features whose coverage of the dataset's items is reported.
        #[command(flatten)]
        features: FeatureArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a data pack: the dataset read, filtered and indexed as the reading flags say, in
    /// one binary file that --dataset FILE.pack loads by memory map (shared by the ranks of a
    /// node, no parsing).
    Pack {
        #[command(flatten)]
        data: DataArgs,
        /// The pack to write (atomically), e.g. data/ml-1m.pack.
        #[arg(long)]
        output: PathBuf,
    },
    /// Convert MovieLens-1M `ratings.dat` (or `ml-1m.zip`) into `user item timestamp` lines.
    #[command(name = "convert-ml1m")]
    ConvertMl1m {
        /// ratings.dat (plain or .gz) or the official ml-1m.zip.
        #[arg(long)]
        input: PathBuf,
        /// Output file (written atomically), e.g. data/ml-1m.txt.
        #[arg(long)]
        output: PathBuf,
    },
    /// Write the deterministic synthetic dataset (`user item timestamp`).
    Synthetic(SyntheticArgs),
    /// Write an item features file (TSV: item, title, genres:multi, year:numeric) from
    /// MovieLens-1M `movies.dat`.
    #[command(name = "features-ml1m")]
    FeaturesMl1m {
        /// movies.dat (plain or .gz, latin-1).
        #[arg(long)]
        input: PathBuf,
        /// Renumber the movies as in the training file: `item_id MovieID` per line (e.g.
        /// ml-1m.sasrec.item_map.txt.gz); movies outside it are skipped.
        #[arg(long = "item_map", alias = "item-map")]
        item_map: Option<PathBuf>,
        /// Output file (written atomically).
        #[arg(long)]
        output: PathBuf,
    },
    /// Write an item features file (TSV: item, title, genres:multi, year:numeric) from
    /// MovieLens-100k `u.item`.
    #[command(name = "features-ml100k")]
    FeaturesMl100k {
        /// u.item (plain or .gz, latin-1).
        #[arg(long)]
        input: PathBuf,
        /// Output file (written atomically).
        #[arg(long)]
        output: PathBuf,
    },
}

/// Flags of `data synthetic`.
#[derive(Debug, Clone, Args)]
pub struct SyntheticArgs {
    /// Output file (written atomically), e.g. data/synthetic.txt.
    #[arg(long)]
    pub output: PathBuf,
    /// Number of users.
    #[arg(long, default_value_t = SyntheticConfig::default().users)]
    pub users: usize,
    /// Number of items.
    #[arg(long, default_value_t = SyntheticConfig::default().items)]
    pub items: usize,
    /// Number of genres (blocks of consecutive items with their own successor chain).
    #[arg(long, default_value_t = SyntheticConfig::default().genres)]
    pub genres: usize,
    /// Shortest user sequence.
    #[arg(long = "min_len", default_value_t = SyntheticConfig::default().min_len)]
    pub min_len: usize,
    /// Longest user sequence.
    #[arg(long = "max_len", default_value_t = SyntheticConfig::default().max_len)]
    pub max_len: usize,
    /// Zipf exponent s of the in-genre popularity, P(offset r) ∝ 1/(r + 1)^s (the long
    /// tail of real catalogues); without it, the bundled quadratic skew.
    #[arg(long, value_parser = zipf_exponent)]
    pub zipf: Option<f64>,
    /// Generator seed.
    #[arg(long, default_value_t = SyntheticConfig::default().seed)]
    pub seed: u64,
    /// Also write the catalogue's item features here (`item  genre:categorical
    /// rank:numeric`, README "Item features").
    #[arg(long = "features_output", alias = "features-output")]
    pub features_output: Option<PathBuf>,
}

/// `--zipf`: a finite exponent ≥ 0.
fn zipf_exponent(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("expected a finite number ≥ 0, got {s:?}")),
    }
}
