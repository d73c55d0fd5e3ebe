//! `sasrec-serve`: next-item recommendations over HTTP from a model exported by
//! `sasrec-export --onnx`, on ONNX Runtime (no libtorch).
//!
//! * [`model`]: a loaded model — [`artifacts`] finds `model.onnx` + `items.tsv`, [`session`]
//!   creates the ONNX Runtime sessions on the chosen execution provider, the manifest is
//!   [`sasrec_shared::run::ModelManifest`], and [`request`] turns a request into a graph row
//!   (time intervals from [`sasrec_shared::time`], exactly as in training);
//! * [`batcher`]: dynamic batching — handlers queue jobs, worker threads that own the ONNX
//!   Runtime sessions coalesce them into one run;
//! * [`retrieval`]: the two-tower side — the item vectors and the ANN index
//!   (`--retrieval ann`, run by [`tower`]), `/similar`, and [`shadow`] scoring of the ANN
//!   recall;
//! * [`cli`] and [`offline`]: the command line, and the `recommend` / `similar` subcommands
//!   that write JSON lines for a whole file through the same preparation and workers;
//! * [`routes`]: the axum router ([`app`]), handlers and middleware; [`error`]: the
//!   `{"error": {"code", "message"}}` body; [`metrics`]: Prometheus; [`state`]: the current
//!   model behind a swap point (hot reload keeps the old model on failure).
//!
//! ```no_run
//! use sasrec_serve::{app, AppState, ServeConfig};
//! # async fn run() -> anyhow::Result<()> {
//! let state = AppState::load(ServeConfig::new("runs/ml1m-sasrec"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! sasrec_serve::serve(listener, state, sasrec_serve::shutdown::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod artifacts;
pub mod batcher;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod error;
pub mod item_tower;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod openapi;
pub mod ranking;
pub mod request;
pub mod retrieval;
pub mod routes;
pub mod runtime;
pub mod session;
pub mod shadow;
pub mod shutdown;
pub mod sink;
pub mod state;
pub mod tower;

use std::future::Future;

pub use config::{Args, ServeConfig};
pub use error::{ApiError, LoadError};
pub use routes::app;
pub use state::AppState;

/// Serves [`app`] on `listener` until `shutdown` resolves, then stops accepting connections,
/// marks the server not ready and waits for the requests in flight (each bounded by the
/// request timeout).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = state.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining.begin_shutdown();
        })
        .await
}
