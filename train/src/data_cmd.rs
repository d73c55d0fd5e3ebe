//! `sasrec-train data …`: the data layer's commands (statistics with the item features'
//! coverage, MovieLens-1M conversion, item features from the MovieLens metadata, the
//! synthetic dataset), run from resolved, plain settings ([`DataJob`]).

use std::path::{Path, PathBuf};

use sasrec_shared::convert::convert_ml1m;
use sasrec_shared::dataset::resolve_dataset;
use sasrec_shared::features::{movielens, Coverage};
use sasrec_shared::synthetic::{self, SyntheticConfig};
use sasrec_shared::{Dataset, Split};

use crate::data::DataSource;
use crate::error::{bail, Context, Result};

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
    /// A data pack of a dataset.
    Pack {
        /// The dataset, its reading flags and k-core filter.
        source: DataSource,
        /// The pack to write (atomically).
        output: PathBuf,
    },
    /// MovieLens-1M `ratings.dat` (or `ml-1m.zip`) to `user item timestamp` lines.
    ConvertMl1m {
        /// `ratings.dat` (plain or .gz) or the official `ml-1m.zip`.
        input: PathBuf,
        /// The file to write (atomically; its folder is created).
        output: PathBuf,
    },
    /// An item features file from MovieLens metadata.
    Features {
        /// `movies.dat` or `u.item`.
        source: movielens::Source,
        /// The metadata file.
        input: PathBuf,
        /// Renumbering `item_id MovieID` lines (ML-1M).
        item_map: Option<PathBuf>,
        /// The file to write (atomically; its folder is created).
        output: PathBuf,
    },
    /// The deterministic synthetic dataset.
    Synthetic {
        /// The file to write (atomically; its folder is created).
        output: PathBuf,
        /// The item features file to write too.
        features_output: Option<PathBuf>,
        /// The generator's settings.
        config: SyntheticConfig,
    },
}

/// Runs a data command.
pub fn run(job: &DataJob) -> Result<()> {
    match job {
        DataJob::Stats { source, json } => {
            let split = source.load()?;
            let coverage = match &source.features {
                Some(f) => Some(Coverage::of(&f.read()?, &split.data.items)),
                None => None,
            };
            stats(&split, coverage.as_ref(), *json)
        }
        DataJob::Pack { source, output } => pack(source, output),
        DataJob::ConvertMl1m { input, output } => convert(input, output),
        DataJob::Synthetic {
            output,
            features_output,
            config,
        } => write_synthetic(output, features_output.as_deref(), config),
        DataJob::Features {
            source,
            input,
            item_map,
            output,
        } => features(*source, input, item_map.as_deref(), output),
    }
}

/// `data pack`: reads the dataset as `source` says and writes it as a pack
/// ([`sasrec_shared::pack`]); prints one line with what it holds.
fn pack(source: &DataSource, output: &Path) -> Result<()> {
    let path = resolve_dataset(&source.dataset)?;
    if sasrec_shared::pack::is_pack(&path) {
        bail!("{}: already a data pack", path.display());
    }
    let started = std::time::Instant::now();
    let data = Dataset::read_with(&path, source.kcore, &source.read)?;
    let header = sasrec_shared::pack::write(&data, source.kcore, output)?;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!(
        "sasrec-train data pack: wrote {} ({} users, {} items, {} interactions{}, {:.1} MB) in {:.1} s",
        output.display(),
        header.users,
        header.items,
        header.interactions,
        if data.has_timestamps() { " with timestamps" } else { "" },
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `data stats`: the dataset's statistics, as text or one JSON object.
fn stats(split: &Split, coverage: Option<&Coverage>, json: bool) -> Result<()> {
    let evaluated = (1..=split.num_users())
        .filter(|&u| split.has_holdout(u))
        .count();
    if json {
        let d = &split.data;
        let v = serde_json::json!({
            "path": d.path, "stats": d.stats(), "report": d.report,
            "evaluated_users": evaluated, "train_interactions": split.num_train_interactions(),
            "item_features": coverage,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_stats(split, evaluated);
        if let Some(c) = coverage {
            print_coverage(c);
        }
    }
    Ok(())
}

/// The text form of the item features' coverage.
fn print_coverage(c: &Coverage) {
    println!(
        "item features {} rows: {} of {} items with features, {} without; {} ids not in the \
         data{}",
        c.rows,
        c.with_features,
        c.items,
        c.without_features,
        c.unknown_ids,
        if c.unknown_examples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", c.unknown_examples.join(", "))
        }
    );
    for col in &c.columns {
        let distinct = col
            .distinct_values
            .map(|n| format!(", {n} distinct values"))
            .unwrap_or_default();
        println!(
            "  {:<12} {:<11} {} items with a value{distinct}",
            col.name, col.kind, col.items_with_value
        );
    }
    if !c.ignored.is_empty() {
        println!("  ignored      {}", c.ignored.join(", "));
    }
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

/// `data features-ml1m` / `features-ml100k`.
fn features(
    source: movielens::Source,
    input: &Path,
    item_map: Option<&Path>,
    output: &Path,
) -> Result<()> {
    create_parent(output)?;
    let r = movielens::convert(source, input, item_map, output)
        .with_context(|| format!("converting {}", input.display()))?;
    println!(
        "wrote {}: {} items ({} skipped outside the item map, {} without a year, {} without \
         genres)",
        output.display(),
        r.items,
        r.skipped,
        r.without_year,
        r.without_genres
    );
    Ok(())
}

/// `data synthetic`.
fn write_synthetic(output: &Path, features: Option<&Path>, config: &SyntheticConfig) -> Result<()> {
    create_parent(output)?;
    let n = synthetic::write(config, output)?;
    println!(
        "wrote {}: {n} interactions, {} users, {} items",
        output.display(),
        config.users,
        config.items
    );
    if let Some(path) = features {
        create_parent(path)?;
        let rows = synthetic::write_features(config, path)?;
        println!("wrote {}: {rows} items with genre and rank", path.display());
    }
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
