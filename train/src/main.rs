use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sasrec_train::cli::TrainArgs;
use sasrec_train::data_cmd::{self, DataCmd};
use sasrec_train::settings::Settings;
use sasrec_train::trainer;

/// Train, evaluate and inspect SASRec / TiSASRec / mHC sequential recommenders.
///
/// Model choice: default TiSASRec + mHC; --no_mhc TiSASRec; --no_time SASRec + mHC;
/// --no_time --no_mhc SASRec.
#[derive(Debug, Parser)]
#[command(
    name = "sasrec-train",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dataset statistics, the MovieLens-1M converter and the synthetic dataset.
    #[command(subcommand)]
    Data(DataCmd),
    /// Check multi-process communication (Gloo / NCCL): launches --nproc_per_node ranks, or runs
    /// as one rank under torchrun, and prints a JSON report.
    #[command(name = "check-distributed")]
    CheckDistributed(sasrec_train::check_dist::CheckDistArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match (cli.command, cli.train) {
        (Some(Command::Data(cmd)), _) => data_cmd::run(cmd),
        (Some(Command::CheckDistributed(args)), _) => sasrec_train::check_dist::run(&args),
        (None, args) => {
            if let Some(out) = trainer::run(&Settings::resolve(&args)?)? {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Only rank 0 of a distributed run logs progress; the other ranks report warnings and errors.
    let default_level = match std::env::var("RANK") {
        Ok(r) if r.trim() != "0" => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
