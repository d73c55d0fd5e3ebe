//! Command-line flags ([`Args`], what the user typed) and the validated [`ServeConfig`].
//!
//! Flags use the project's snake_case spelling (`--max_batch_size`); the kebab-case spelling
//! (`--max-batch-size`) works too, as for `sasrec-train`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};
use sasrec_shared::logging::LogFormat;

/// Environment variable read for the bearer token when `--auth_token` is not given.
pub const TOKEN_ENV: &str = "SASREC_SERVE_TOKEN";

/// Where ONNX Runtime runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU execution provider.
    Cpu,
    /// The CUDA execution provider, falling back to CPU (with a warning) unless
    /// `--strict_device`.
    Cuda,
}

/// `sasrec-serve` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sasrec-serve",
    version,
    about = "Serve next-item recommendations from an ONNX model written by `sasrec-export --onnx`"
)]
pub struct Args {
    /// A `.onnx` file (with `items.tsv` beside it) or a directory holding `model.onnx` and
    /// `items.tsv` (a `--train_dir` after `sasrec-export --onnx`).
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Execution provider.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// With `--device cuda`: fail instead of falling back to the CPU.
    #[arg(long = "strict_device", alias = "strict-device")]
    pub strict_device: bool,
    /// ONNX Runtime intra-op threads per session (0 = ONNX Runtime's default, one per core).
    /// The default suits one worker: at a large catalogue a run is one big `MatMul` + `TopK`
    /// that ONNX Runtime splits over the cores; with several `--workers`, give each fewer.
    #[arg(long = "intra_threads", alias = "intra-threads", default_value_t = 0)]
    pub intra_threads: usize,
    /// Inference worker threads, each owning one ONNX Runtime session.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most rows coalesced into one ONNX Runtime run.
    #[arg(
        long = "max_batch_size",
        alias = "max-batch-size",
        default_value_t = 32
    )]
    pub max_batch_size: usize,
    /// How long a worker waits for more requests after the first one of a batch arrived
    /// (microseconds). The default 0 (as Triton's) takes only what is already queued: under
    /// load, requests pile up while a batch runs, so batches form without adding latency at
    /// low load; a positive delay helps only with open-loop traffic that arrives in bursts.
    #[arg(
        long = "max_queue_delay_us",
        alias = "max-queue-delay-us",
        default_value_t = 0
    )]
    pub max_queue_delay_us: u64,
    /// Requests waiting for a worker before new ones get 503 + `Retry-After`.
    #[arg(long = "max_queue", alias = "max-queue", default_value_t = 1024)]
    pub max_queue: usize,
    /// Disable dynamic batching (every ONNX Runtime run has batch size 1).
    #[arg(long = "no_batching", alias = "no-batching")]
    pub no_batching: bool,
    /// Largest accepted request body in bytes (larger: 413).
    #[arg(long = "body_limit", alias = "body-limit", default_value_t = 1 << 20)]
    pub body_limit: usize,
    /// Most entries of one `POST /recommend/batch`.
    #[arg(
        long = "max_batch_requests",
        alias = "max-batch-requests",
        default_value_t = 256
    )]
    pub max_batch_requests: usize,
    /// Requests running longer get 504 (milliseconds).
    #[arg(
        long = "request_timeout_ms",
        alias = "request-timeout-ms",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,
    /// Bearer token required on `/recommend*` and `/v1/model/reload` (default: the
    /// `SASREC_SERVE_TOKEN` environment variable; none = open).
    #[arg(long = "auth_token", alias = "auth-token")]
    pub auth_token: Option<String>,
    /// The ONNX Runtime shared library (default: `ORT_DYLIB_PATH`, then the project's venv).
    #[arg(long = "ort_lib", alias = "ort-lib")]
    pub ort_lib: Option<PathBuf>,
    /// Log lines on standard output as text (colour only on a terminal; NO_COLOR turns it
    /// off) or as one JSON object per line (Kubernetes, systemd, log shippers). RUST_LOG sets
    /// the level.
    #[arg(
        long = "log_format",
        alias = "log-format",
        default_value = "text",
        value_parser = clap::builder::PossibleValuesParser::new(LogFormat::NAMES)
            .try_map(|s| s.parse::<LogFormat>())
    )]
    pub log_format: LogFormat,
}

/// How batches are formed (see [`crate::batcher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BatchConfig {
    /// Most rows per ONNX Runtime run (1 = no batching).
    pub max_batch_size: usize,
    /// Wait for more work after the first job of a batch.
    #[serde(serialize_with = "micros")]
    pub max_queue_delay: Duration,
    /// Jobs waiting before 503.
    pub max_queue: usize,
    /// Worker threads (one session each).
    pub workers: usize,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// How sessions are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Requested execution provider.
    pub device: Device,
    /// Error instead of falling back to CPU.
    pub strict_device: bool,
    /// Intra-op threads (0 = ONNX Runtime's default).
    pub intra_threads: usize,
    /// The ONNX Runtime library; `None` = resolve as in [`crate::runtime::resolve_dylib`].
    pub ort_lib: Option<PathBuf>,
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `--model`, as given (reloads read it again).
    pub model: PathBuf,
    /// Listen address.
    pub addr: SocketAddr,
    /// Session settings.
    pub session: SessionConfig,
    /// Batching settings.
    pub batch: BatchConfig,
    /// Body limit in bytes.
    pub body_limit: usize,
    /// Most entries of a batch request.
    pub max_batch_requests: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Bearer token, if any.
    pub auth_token: Option<String>,
}

impl ServeConfig {
    /// Whether the server listens beyond this machine (not a loopback address) with no bearer
    /// token: anyone who can reach the port can then query and reload the model.
    pub fn is_open_to_the_network(&self) -> bool {
        !self.addr.ip().is_loopback() && self.auth_token.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(extra: &[&str]) -> bool {
        let args = Args::try_parse_from([&["sasrec-serve", "--model", "m"], extra].concat());
        args.unwrap().resolve().unwrap().is_open_to_the_network()
    }

    #[test]
    fn a_public_address_without_a_token_is_open() {
        // An empty --auth_token means "none", whatever SASREC_SERVE_TOKEN says.
        assert!(open(&["--addr", "0.0.0.0:8080", "--auth_token="]));
        assert!(open(&["--addr", "192.0.2.7:8080", "--auth_token="]));
        assert!(!open(&["--addr", "0.0.0.0:8080", "--auth_token", "t"]));
        assert!(!open(&["--addr", "127.0.0.1:8080", "--auth_token="]));
        assert!(!open(&["--addr", "[::1]:8080", "--auth_token="]));
    }
}

impl ServeConfig {
    /// The configuration the flags give by default for `--model model` (no bearer token,
    /// whatever the environment says); convenient in tests and embedders.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        let args = Args::try_parse_from([
            std::ffi::OsString::from("sasrec-serve"),
            "--model".into(),
            model.into().into_os_string(),
        ])
        .expect("the flag defaults parse");
        let mut cfg = args.resolve().expect("the flag defaults are valid");
        cfg.auth_token = None;
        cfg
    }
}

/// A flag value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {msg}")]
pub struct ConfigError {
    /// The flag.
    pub flag: &'static str,
    /// Why.
    pub msg: String,
}

impl Args {
    /// Validates the flags; the token falls back to `$SASREC_SERVE_TOKEN`.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let positive = |flag: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError {
                    flag,
                    msg: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        positive("workers", self.workers)?;
        positive("max_batch_size", self.max_batch_size)?;
        positive("max_queue", self.max_queue)?;
        positive("body_limit", self.body_limit)?;
        positive("max_batch_requests", self.max_batch_requests)?;
        if self.request_timeout_ms == 0 {
            return Err(ConfigError {
                flag: "request_timeout_ms",
                msg: "must be at least 1".into(),
            });
        }
        let auth_token = self
            .auth_token
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty());
        Ok(ServeConfig {
            model: self.model,
            addr: self.addr,
            session: SessionConfig {
                device: self.device,
                strict_device: self.strict_device,
                intra_threads: self.intra_threads,
                ort_lib: self.ort_lib,
            },
            batch: BatchConfig {
                max_batch_size: if self.no_batching {
                    1
                } else {
                    self.max_batch_size
                },
                max_queue_delay: if self.no_batching {
                    Duration::ZERO
                } else {
                    Duration::from_micros(self.max_queue_delay_us)
                },
                max_queue: self.max_queue,
                workers: self.workers,
            },
            body_limit: self.body_limit,
            max_batch_requests: self.max_batch_requests,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            auth_token,
        })
    }
}
