//! `sasrec-train data …`: the data layer's commands (statistics, MovieLens-1M conversion,
//! the synthetic dataset).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use sasrec_shared::convert::convert_ml1m;
use sasrec_shared::dataset::{resolve_dataset, Columns, Format, ReadOptions};
use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::synthetic::{self, SyntheticConfig};
use sasrec_shared::{Dataset, KCore, Split};

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

impl DataArgs {
    /// The k-core setting, if any.
    pub fn kcore(&self) -> Option<KCore> {
        (self.min_user_count > 1 || self.min_item_count > 1).then_some(KCore {
            min_user: self.min_user_count,
            min_item: self.min_item_count,
            iterative: !self.kcore_one_pass,
        })
    }

    /// Resolves, reads and splits the dataset.
    pub fn load(&self) -> Result<Split> {
        let path = resolve_dataset(self.dataset.as_deref().unwrap_or_default())?;
        let started = std::time::Instant::now();
        let options = ReadOptions {
            format: self.format,
            columns: self.columns.clone(),
        };
        let data = Dataset::read_with(&path, self.kcore(), &options)?;
        tracing::info!(
            path = %path.display(),
            users = data.num_users(),
            items = data.num_items(),
            interactions = data.report.interactions_read - data.report.removed_by_kcore,
            seconds = started.elapsed().as_secs_f64(),
            "dataset loaded"
        );
        Ok(Split::new(data.into(), self.min_holdout_len as usize))
    }
}

/// Data commands.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Print dataset statistics (as JSON with --json).
    Stats {
        #[command(flatten)]
        data: DataArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
    Synthetic {
        /// Output file (written atomically), e.g. data/synthetic.txt.
        #[arg(long)]
        output: PathBuf,
        /// Number of users.
        #[arg(long, default_value_t = SyntheticConfig::default().users)]
        users: usize,
        /// Number of items.
        #[arg(long, default_value_t = SyntheticConfig::default().items)]
        items: usize,
        /// Number of genres (blocks of consecutive items with their own successor chain).
        #[arg(long, default_value_t = SyntheticConfig::default().genres)]
        genres: usize,
        /// Shortest user sequence.
        #[arg(long = "min_len", default_value_t = SyntheticConfig::default().min_len)]
        min_len: usize,
        /// Longest user sequence.
        #[arg(long = "max_len", default_value_t = SyntheticConfig::default().max_len)]
        max_len: usize,
        /// Zipf exponent s of the in-genre popularity, P(offset r) ∝ 1/(r + 1)^s (the long
        /// tail of real catalogues); without it, the bundled quadratic skew.
        #[arg(long, value_parser = zipf_exponent)]
        zipf: Option<f64>,
        /// Generator seed.
        #[arg(long, default_value_t = SyntheticConfig::default().seed)]
        seed: u64,
    },
}

/// `--zipf`: a finite exponent ≥ 0.
fn zipf_exponent(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("expected a finite number ≥ 0, got {s:?}")),
    }
}

/// Runs a data command.
pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Stats { data, json } => {
            let split = data.load()?;
            let d = &split.data;
            let stats = d.stats();
            let held = (1..=split.num_users())
                .filter(|&u| split.has_holdout(u))
                .count();
            if json {
                let v = serde_json::json!({
                    "path": d.path, "stats": stats, "report": d.report,
                    "evaluated_users": held, "train_interactions": split.num_train_interactions(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("dataset       {}", d.path.display());
                let layout = match &d.report.mapping {
                    Some(columns) => format!("{} columns ({columns})", d.report.columns),
                    None => format!("up to {} fields per line", d.report.columns),
                };
                println!(
                    "format        {}, {:?}, {layout}{}",
                    d.report.format,
                    d.report.separator,
                    if d.report.header { ", header" } else { "" }
                );
                println!("users         {}", stats.users);
                println!("items         {}", stats.items);
                println!(
                    "interactions  {} ({} removed by k-core, {} blank/comment lines skipped)",
                    stats.interactions, d.report.removed_by_kcore, d.report.skipped_lines
                );
                println!(
                    "per user      min {} / median {} / mean {:.1} / max {}",
                    stats.min_len, stats.median_len, stats.mean_len, stats.max_len
                );
                println!("density       {:.5}", stats.density);
                match stats.time_range {
                    Some((lo, hi)) => println!("timestamps    {lo} .. {hi}"),
                    None => println!("timestamps    none (file order is time order)"),
                }
                println!(
                    "evaluated     {held} users with valid/test items (threshold {})",
                    split.min_holdout_len
                );
            }
        }
        DataCmd::ConvertMl1m { input, output } => {
            let r = convert_ml1m(&input, &output)
                .with_context(|| format!("converting {}", input.display()))?;
            println!(
                "wrote {}: {} interactions, {} users, {} items",
                output.display(),
                r.interactions,
                r.users,
                r.items
            );
        }
        DataCmd::Synthetic {
            output,
            users,
            items,
            genres,
            min_len,
            max_len,
            zipf,
            seed,
        } => {
            if items == 0 || genres == 0 || min_len == 0 {
                anyhow::bail!("--items, --genres and --min_len must be at least 1");
            }
            if min_len > max_len {
                anyhow::bail!("--min_len {min_len} is above --max_len {max_len}");
            }
            if let Some(dir) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let cfg = SyntheticConfig {
                users,
                items,
                genres,
                min_len,
                max_len,
                zipf,
                seed,
                ..Default::default()
            };
            let n = synthetic::write(&cfg, &output)?;
            println!(
                "wrote {}: {n} interactions, {users} users, {items} items",
                output.display()
            );
        }
    }
    Ok(())
}
