//! The `sasrec-train` command: training, evaluation and the data commands.
//!
//! The binary (`src/main.rs`) is glue: parse flags, set up logging, resolve them into
//! [`settings::Settings`], call [`trainer::run`], turn errors into a message and an exit code.

pub mod adagrad;
pub mod check_dist;
pub mod cli;
pub mod config;
pub mod data;
pub mod data_cmd;
pub mod ddp;
pub mod device;
pub mod dist;
pub mod error;
pub mod evaluate;
pub mod graph;
pub mod launch;
pub mod negatives;
pub mod optim;
pub mod optimizers;
pub mod plot;
pub mod settings;
mod shim;
pub mod state;
pub mod trainer;

#[cfg(test)]
mod test_support;
