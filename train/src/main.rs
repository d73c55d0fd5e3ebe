use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sasrec_train::data_cmd::{self, DataCmd};

/// Train, evaluate and inspect SASRec / TiSASRec / mHC sequential recommenders.
#[derive(Debug, Parser)]
#[command(name = "sasrec-train", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dataset statistics, the MovieLens-1M converter and the synthetic dataset.
    #[command(subcommand)]
    Data(DataCmd),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
