//! The `sasrec-train` command: training, evaluation and the data commands.
//!
//! The binary (`src/main.rs`) is glue: parse flags, set up logging, call into this library,
//! turn errors into a message and an exit code.

pub mod check_dist;
pub mod cli;
pub mod config;
pub mod data_cmd;
pub mod ddp;
pub mod dist;
pub mod evaluate;
pub mod launch;
pub mod optim;
pub mod plot;
mod shim;
pub mod state;
pub mod trainer;
