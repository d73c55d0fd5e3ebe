use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sasrec_train::cli::TrainArgs;
use sasrec_train::data_cmd::{self, DataCmd};
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
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match (cli.command, cli.train) {
        (Some(Command::Data(cmd)), _) => data_cmd::run(cmd),
        (None, args) => {
            let out = match (&args.inference_only, &args.state_dict_path) {
                (true, Some(w)) => trainer::inference_only(&args, w)?,
                _ => trainer::train(&args)?,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
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
