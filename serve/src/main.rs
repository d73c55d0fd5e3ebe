//! `sasrec-serve --model PATH [--addr 127.0.0.1:8080] [--device cpu|cuda]`: parse the flags,
//! load the model, serve until Ctrl-C / SIGTERM (SIGHUP reloads the model).
//! `sasrec-serve recommend …` / `sasrec-serve similar …` write JSON lines for a whole file
//! instead ([`sasrec_serve::offline`]). Any error: a message on standard error, exit code 2.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sasrec_serve::cli::Cli;
use sasrec_serve::config::TOKEN_ENV;
use sasrec_serve::{offline, shutdown, AppState, Args};
use sasrec_shared::error::report;
use sasrec_shared::logging::{self, Stream};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The subcommands keep standard output for their final line.
    let stream = match cli.command {
        Some(_) => Stream::Stderr,
        None => Stream::Stdout,
    };
    let filter = "sasrec_serve=info,ort=warn,tower_http=warn";
    logging::init(cli.serve.log.log_format, filter, stream);
    let result = match cli.command {
        Some(command) => offline::run(command),
        None => run(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sasrec-serve: {}", report(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let addr = config.addr;
    if config.is_open_to_the_network() {
        tracing::warn!(
            "listening on {addr} with no --auth_token (or {TOKEN_ENV}): anyone who can reach \
             this port can query the model and POST /reload; set a token or bind 127.0.0.1"
        );
        eprintln!(
            "sasrec-serve: WARNING: {addr} is reachable from the network and unauthenticated"
        );
    }
    let model_path = config.model.clone();
    let state = AppState::load(config)
        .with_context(|| format!("loading model {}", model_path.display()))?;
    let info = state.model().info().clone();
    tracing::info!(
        model = %info.id,
        maxlen = info.maxlen,
        items = info.num_items,
        time_aware = info.time_aware,
        device = %info.device,
        retrieval = ?info.retrieval.mode,
        "model loaded"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        shutdown::spawn_sighup_reloader(state.clone());
        sasrec_serve::serve(listener, state, shutdown::shutdown_signal())
            .await
            .context("serving")
    })?;
    tracing::info!("stopped");
    Ok(())
}
