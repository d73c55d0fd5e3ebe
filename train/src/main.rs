use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sasrec_shared::logging::{self, LogArgs, Stream};
use sasrec_train::cli::{DataCmd, TrainArgs};
use sasrec_train::error::Result;
use sasrec_train::{check_dist, data_cmd, settings, trainer};

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
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dataset statistics, the MovieLens-1M converter and the synthetic dataset.
    #[command(subcommand)]
    Data(DataCmd),
    /// Check multi-process communication (Gloo / NCCL): launches --nproc_per_node ranks, or runs
    /// as one rank under torchrun, and prints a JSON report.
    #[command(name = "check-distributed")]
    CheckDistributed(check_dist::CheckDistArgs),
}

/// Resolves the flags (every check before any file is read), then does the work.
fn run(command: Option<Command>, train: TrainArgs) -> Result<()> {
    match command {
        Some(Command::Data(cmd)) => data_cmd::run(&settings::data_job(cmd)?),
        Some(Command::CheckDistributed(args)) => check_dist::run(&args),
        None => {
            if let Some(out) = trainer::run(&settings::Settings::resolve(&train)?)? {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only rank 0 of a distributed run logs progress; the other ranks report warnings and errors.
    let default_level = match std::env::var("RANK") {
        Ok(r) if r.trim() != "0" => "warn",
        _ => "info",
    };
    logging::init(cli.log.log_format, default_level, Stream::Stderr);
    match run(cli.command, cli.train) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.one_line());
            ExitCode::from(e.exit_code())
        }
    }
}
