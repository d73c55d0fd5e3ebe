//! `sasrec-train data …`: the data layer's commands (statistics, MovieLens-1M conversion,
//! the synthetic dataset), run from resolved, plain settings ([`DataJob`]).

use std::path::{Path, PathBuf};

use sasrec_shared::convert::convert_ml1m;
use sasrec_shared::synthetic::{self, SyntheticConfig};
use sasrec_shared::Split;

use crate::data::DataSource;
use crate::error::{Context, Result};

/// A data command with its settings checked.
#[derive(Debug, Clone)]
pub enum DataJob {
    /// Print the statistics of a dataset (one JSON object with `json`).
    Stats {
        /// The dataset and its filters.
        source: DataSource,
        /// JSON instead of text.
        json: bool,
    },
    /// MovieLens-1M `ratings.dat` (or `ml-1m.zip`) to `user item timestamp` lines.
    ConvertMl1m {
        /// `ratings.dat` (plain or .gz) or the official `ml-1m.zip`.
        input: PathBuf,
        /// The file to write (atomically; its folder is created).
        output: PathBuf,
    },
    /// The deterministic synthetic dataset.
    Synthetic {
        /// The file to write (atomically; its folder is created).
        output: PathBuf,
        /// The generator's settings.
        config: SyntheticConfig,
    },
}

/// Runs a data command.
pub fn run(job: &DataJob) -> Result<()> {
    match job {
        DataJob::Stats { source, json } => stats(&source.load()?, *json),
        DataJob::ConvertMl1m { input, output } => convert(input, output),
        DataJob::Synthetic { output, config } => write_synthetic(output, config),
    }
}

/// `data stats`: the dataset's statistics, as text or one JSON object.
fn stats(split: &Split, json: bool) -> Result<()> {
    let evaluated = (1..=split.num_users())
        .filter(|&u| split.has_holdout(u))
        .count();
    if json {
        let d = &split.data;
        let v = serde_json::json!({
            "path": d.path, "stats": d.stats(), "report": d.report,
            "evaluated_users": evaluated, "train_interactions": split.num_train_interactions(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_stats(split, evaluated);
    }
    Ok(())
}

/// The text form of `data stats`.
fn print_stats(split: &Split, evaluated: usize) {
    let d = &split.data;
    let stats = d.stats();
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
        "evaluated     {evaluated} users with valid/test items (threshold {})",
        split.min_holdout_len
    );
}

/// `data convert-ml1m`.
fn convert(input: &Path, output: &Path) -> Result<()> {
    create_parent(output)?;
    let r =
        convert_ml1m(input, output).with_context(|| format!("converting {}", input.display()))?;
    println!(
        "wrote {}: {} interactions, {} users, {} items",
        output.display(),
        r.interactions,
        r.users,
        r.items
    );
    Ok(())
}

/// `data synthetic`.
fn write_synthetic(output: &Path, config: &SyntheticConfig) -> Result<()> {
    create_parent(output)?;
    let n = synthetic::write(config, output)?;
    println!(
        "wrote {}: {n} interactions, {} users, {} items",
        output.display(),
        config.users,
        config.items
    );
    Ok(())
}

/// Creates the folder `output` goes in, when it names one.
fn create_parent(output: &Path) -> Result<()> {
    match output.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        None => Ok(()),
    }
}
