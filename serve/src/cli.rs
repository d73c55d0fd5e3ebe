//! The command line: `sasrec-serve --model DIR …` serves (flags in [`Args`]);
//! `sasrec-serve recommend …` and `sasrec-serve similar …` write JSON lines for a whole file
//! ([`crate::offline`]). Flags use the project's snake_case spelling; kebab-case works too.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use sasrec_shared::dataset::{Columns, Format};

use crate::config::{Args, RetrievalArgs, RuntimeArgs, SimilarMetricArgs};

/// `sasrec-serve [--model …]` or `sasrec-serve recommend|similar …`.
#[derive(Debug, Parser)]
#[command(
    name = "sasrec-serve",
    version,
    about = "Serve next-item recommendations from an ONNX model written by `sasrec-export --onnx`",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A batch subcommand; none = serve over HTTP.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's flags.
    #[command(flatten)]
    pub serve: Args,
}

/// The batch subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Top-k recommendations for every user of an interaction file (read as training reads
    /// it), one JSON line per user: {"user", "items", "scores"}.
    Recommend(RecommendArgs),
    /// The k nearest items of every item (or of --items) by the item vectors, one JSON line per
    /// item: {"item", "items", "scores"}.
    Similar(SimilarItemsArgs),
}

/// Flags of both subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineArgs {
    /// A `.onnx` file (with `items.tsv` beside it) or a directory holding `model.onnx` and
    /// `items.tsv`, as for serving.
    #[arg(long)]
    pub model: PathBuf,
    /// The file to write (atomically: a temporary file, synced, then renamed): JSON lines, or
    /// Parquet when the name ends in `.parquet`.
    #[arg(long)]
    pub output: PathBuf,
    /// Worker threads, each with its own ONNX Runtime session of one intra-op thread (0 = one
    /// per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Execution provider and ONNX Runtime library.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Exact or ANN retrieval, and the ANN index settings.
    #[command(flatten)]
    pub retrieval: RetrievalArgs,
}

/// `sasrec-serve recommend`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecommendArgs {
    /// Model, output, workers, device and retrieval.
    #[command(flatten)]
    pub common: OfflineArgs,
    /// The users' histories: an interaction or sequence file read by the training reader (a
    /// training file or any subset of it; `.gz` is read directly).
    #[arg(long)]
    pub input: PathBuf,
    /// Items per user.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Users per ONNX Runtime run.
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = 256)]
    pub batch_size: usize,
    /// Also recommend items of the user's own history (default: excluded, as
    /// `"exclude_seen": true`).
    #[arg(long = "include_seen", alias = "include-seen")]
    pub include_seen: bool,
    /// The role of each input column in file order, as for training, e.g.
    /// `user,item,timestamp` or `item_id,-,user_id,timestamp` (`-` = ignored).
    #[arg(long, value_parser = |s: &str| s.parse::<Columns>())]
    pub columns: Option<Columns>,
    /// Input layout, as for training: auto (detected), interactions (one event per line) or
    /// sequence (one user per line, `user item1 item2 …` in time order).
    #[arg(long, default_value = "auto", value_parser = format_parser())]
    pub format: Format,
}

/// `--format`'s values ([`Format::NAMES`]), parsed as training parses them.
fn format_parser() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(Format::NAMES).try_map(|s| s.parse::<Format>())
}

/// `sasrec-serve similar`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimilarItemsArgs {
    /// Model, output, workers, device and retrieval.
    #[command(flatten)]
    pub common: OfflineArgs,
    /// Raw item ids, one per line (blank and `#` lines skipped); default: every item.
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// Nearest items per item.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// The similarity.
    #[command(flatten)]
    pub similar: SimilarMetricArgs,
}
