//! Command-line flags ([`Args`], what the user typed) and the validated [`ServeConfig`].
//!
//! Flags use the project's snake_case spelling (`--max_batch_size`); the kebab-case spelling
//! (`--max-batch-size`) works too, as for `sasrec-train`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};
use sasrec_ann::{AnnParams, Quantization, DEFAULT_EF};
use sasrec_shared::logging::LogArgs;

/// Environment variable read for the bearer token when `--auth_token` is not given.
pub const TOKEN_ENV: &str = "SASREC_SERVE_TOKEN";

/// Default of `--ann_candidates`: candidates beyond `k + |exclude|` re-scored exactly.
pub const DEFAULT_ANN_CANDIDATES: usize = 100;

/// Default of `--max_added_items`: none, so that a model with item features is served by
/// `model.onnx` unless additions are asked for (the open user tower ranks in Rust: 22 % fewer
/// requests/s at 32 clients on ML-1M, docs/RESULTS.md).
pub const DEFAULT_MAX_ADDED_ITEMS: usize = 0;

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
    // An `Option` only so that `sasrec-serve recommend …` parses without it; clap enforces
    // presence when no subcommand is given.
    #[arg(long, required = true)]
    pub model: Option<PathBuf>,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Execution provider and ONNX Runtime library.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
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
    /// Bearer token required on `/recommend*`, `/similar`, `/v1/model/reload` and
    /// `/v1/items` (default: the `SASREC_SERVE_TOKEN` environment variable; none = open).
    #[arg(long = "auth_token", alias = "auth-token")]
    pub auth_token: Option<String>,
    /// How `/recommend` ranks the items, and the ANN index settings.
    #[command(flatten)]
    pub retrieval: RetrievalArgs,
    /// With `--retrieval ann`: the fraction (0..=1) of ANN-answered rows re-scored exactly in
    /// the background to measure recall (gauge `sasrec_ann_recall_at_k`); rows are picked
    /// deterministically, the n-th when ⌊(n+1)·R⌋ > ⌊n·R⌋.
    #[arg(
        long = "ann_shadow_rate",
        alias = "ann-shadow-rate",
        default_value_t = 0.0,
        value_parser = unit_fraction
    )]
    pub ann_shadow_rate: f64,
    /// The similarity of `POST /similar`.
    #[command(flatten)]
    pub similar: SimilarMetricArgs,
    /// `--log_format`.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where ONNX Runtime runs (shared by the server and its subcommands).
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Execution provider.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// With `--device cuda`: fail instead of falling back to the CPU.
    #[arg(long = "strict_device", alias = "strict-device")]
    pub strict_device: bool,
    /// The ONNX Runtime shared library (default: `ORT_DYLIB_PATH`, then the project's venv).
    #[arg(long = "ort_lib", alias = "ort-lib")]
    pub ort_lib: Option<PathBuf>,
}

impl RuntimeArgs {
    /// The session settings with `intra_threads` ONNX Runtime threads per session.
    pub fn session(&self, intra_threads: usize) -> SessionConfig {
        SessionConfig {
            device: self.device,
            strict_device: self.strict_device,
            intra_threads,
            ort_lib: self.ort_lib.clone(),
        }
    }
}

/// How recommendations are ranked (`--retrieval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retrieval {
    /// `model.onnx` scores every item and takes the top k in the graph (exact).
    #[default]
    Exact,
    /// `user_tower.onnx` gives the user vector `q`; an HNSW index over the item vectors finds
    /// `k + |exclude| + --ann_candidates` candidates, re-scored exactly as `q · v_i`.
    Ann,
}

/// The similarity of `POST /similar` and `sasrec-serve similar` (`--similar_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimilarMetric {
    /// Inner product `v_a · v_b`, the model's own score.
    #[default]
    Ip,
    /// Cosine `v_a · v_b / (|v_a| |v_b|)` (0 when a norm is 0).
    Cosine,
}

/// `--retrieval` and the ANN flags (shared by the server and its subcommands).
#[derive(Debug, Clone, clap::Args)]
pub struct RetrievalArgs {
    /// `exact`: `model.onnx` scores every item. `ann`: `user_tower.onnx` gives the user
    /// vector, an HNSW index over the item vectors (`items.usearch` beside the model, built at
    /// start when missing) finds candidates, re-scored exactly.
    #[arg(long, value_enum, default_value_t = Retrieval::Exact)]
    pub retrieval: Retrieval,
    /// With `--retrieval ann`: the search beam width (HNSW `ef`); usearch widens it to the
    /// number of candidates asked for when that is larger.
    #[arg(long = "ann_ef", alias = "ann-ef", default_value_t = DEFAULT_EF)]
    pub ann_ef: usize,
    /// With `--retrieval ann`: candidates asked of the index beyond `k + |exclude|`, all
    /// re-scored exactly (more = better recall, slower).
    #[arg(long = "ann_candidates", alias = "ann-candidates", default_value_t = DEFAULT_ANN_CANDIDATES)]
    pub ann_candidates: usize,
    /// Graph edges per item (HNSW `M`) of an index the server builds.
    #[arg(
        long = "ann_connectivity",
        alias = "ann-connectivity",
        default_value_t = AnnParams::default().connectivity
    )]
    pub ann_connectivity: usize,
    /// Beam width while inserting (HNSW `efConstruction`) of an index the server builds.
    #[arg(
        long = "ann_expansion_add",
        alias = "ann-expansion-add",
        default_value_t = AnnParams::default().expansion_add
    )]
    pub ann_expansion_add: usize,
    /// How an index the server builds stores the vectors: f32, f16 or i8 (candidates are
    /// re-scored from the float32 table either way).
    #[arg(
        long = "ann_quantization",
        alias = "ann-quantization",
        default_value_t = AnnParams::default().quantization,
        value_parser = PossibleValuesParser::new(["f32", "f16", "i8"])
            .try_map(|s| s.parse::<Quantization>())
    )]
    pub ann_quantization: Quantization,
    /// Most items added after training (`POST /v1/items`, models exported with item
    /// features); each costs d floats and d multiply-adds per request (100,000 at d = 50:
    /// ~1.2 ms). 0 = the model takes no additions and exact retrieval runs `model.onnx`;
    /// otherwise both modes run `user_tower_open.onnx`, which reads added items in histories.
    #[arg(
        long = "max_added_items",
        alias = "max-added-items",
        default_value_t = DEFAULT_MAX_ADDED_ITEMS
    )]
    pub max_added_items: usize,
    /// The file that keeps added items across restarts (JSON lines of id and features,
    /// rewritten atomically on each addition) [default: added_items.jsonl beside the model].
    #[arg(long = "added_items", alias = "added-items", value_name = "FILE")]
    pub added_items: Option<PathBuf>,
}

/// `--similar_metric` (shared by the server and `sasrec-serve similar`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimilarMetricArgs {
    /// The similarity of item-to-item answers: `ip` (inner product of item vectors) or
    /// `cosine`; under `--retrieval ann`, cosine re-ranks candidates found by inner product.
    #[arg(
        long = "similar_metric",
        alias = "similar-metric",
        value_enum,
        default_value_t = SimilarMetric::Ip
    )]
    pub similar_metric: SimilarMetric,
}

/// `v` when it is at least `min`, else an error naming `--flag`.
fn at_least(flag: &'static str, v: usize, min: usize) -> Result<usize, ConfigError> {
    if v < min {
        return Err(ConfigError {
            flag,
            msg: format!("must be at least {min}"),
        });
    }
    Ok(v)
}

/// A fraction in 0..=1.
fn unit_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a number between 0 and 1, got {s:?}")),
    }
}

/// The validated retrieval settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalConfig {
    /// Exact or ANN.
    pub mode: Retrieval,
    /// HNSW search beam width.
    pub ef: usize,
    /// Candidates beyond `k + |exclude|`.
    pub candidates: usize,
    /// How a missing index is built.
    pub params: AnnParams,
    /// Fraction of ANN rows re-scored exactly in the background.
    pub shadow_rate: f64,
    /// The similarity of `/similar`.
    pub similar_metric: SimilarMetric,
    /// Most added items (0 = the model takes none).
    pub max_added_items: usize,
    /// The additions file, `None` = beside the model.
    pub added_items: Option<PathBuf>,
}

impl Default for RetrievalConfig {
    /// What the flags give by default: exact retrieval, inner-product similarity.
    fn default() -> Self {
        Self {
            mode: Retrieval::Exact,
            ef: DEFAULT_EF,
            candidates: DEFAULT_ANN_CANDIDATES,
            params: AnnParams::default(),
            shadow_rate: 0.0,
            similar_metric: SimilarMetric::Ip,
            max_added_items: DEFAULT_MAX_ADDED_ITEMS,
            added_items: None,
        }
    }
}

impl RetrievalArgs {
    /// The settings, with `shadow_rate` (checked by its parser) and `similar_metric`; the
    /// beam width and the build parameters must be positive (usearch needs them so).
    pub fn resolve(
        &self,
        shadow_rate: f64,
        similar_metric: SimilarMetric,
    ) -> Result<RetrievalConfig, ConfigError> {
        Ok(RetrievalConfig {
            mode: self.retrieval,
            ef: at_least("ann_ef", self.ann_ef, 1)?,
            candidates: self.ann_candidates,
            params: AnnParams {
                connectivity: at_least("ann_connectivity", self.ann_connectivity, 2)?,
                expansion_add: at_least("ann_expansion_add", self.ann_expansion_add, 1)?,
                quantization: self.ann_quantization,
            },
            shadow_rate,
            similar_metric,
            max_added_items: self.max_added_items,
            added_items: self.added_items.clone(),
        })
    }
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
    /// Retrieval and `/similar` settings.
    pub retrieval: RetrievalConfig,
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
        parse(extra).unwrap().is_open_to_the_network()
    }

    fn parse(extra: &[&str]) -> Result<ServeConfig, String> {
        let args = Args::try_parse_from([&["sasrec-serve", "--model", "m"], extra].concat())
            .map_err(|e| e.to_string())?;
        args.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn retrieval_flags_default_to_exact_and_are_checked() {
        assert_eq!(parse(&[]).unwrap().retrieval, RetrievalConfig::default());
        let ann = parse(&[
            "--retrieval",
            "ann",
            "--ann_ef",
            "200",
            "--ann_shadow_rate",
            "0.5",
        ]);
        let r = ann.unwrap().retrieval;
        assert_eq!((r.mode, r.ef, r.shadow_rate), (Retrieval::Ann, 200, 0.5));
        let q = parse(&["--ann_quantization", "i8", "--similar_metric", "cosine"]).unwrap();
        assert_eq!(q.retrieval.params.quantization, Quantization::I8);
        assert_eq!(q.retrieval.similar_metric, SimilarMetric::Cosine);
        for (bad, needle) in [
            (&["--ann_shadow_rate", "1.5"][..], "between 0 and 1"),
            (&["--ann_ef", "0"][..], "--ann_ef"),
            (&["--ann_connectivity", "1"][..], "--ann_connectivity"),
            (&["--ann_quantization", "f8"][..], "f8"),
            (&["--retrieval", "fuzzy"][..], "fuzzy"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
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
        let model = self.model.clone().ok_or_else(|| ConfigError {
            flag: "model",
            msg: "is required".into(),
        })?;
        at_least("workers", self.workers, 1)?;
        at_least("max_batch_size", self.max_batch_size, 1)?;
        at_least("max_queue", self.max_queue, 1)?;
        at_least("body_limit", self.body_limit, 1)?;
        at_least("max_batch_requests", self.max_batch_requests, 1)?;
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
            model,
            addr: self.addr,
            session: self.runtime.session(self.intra_threads),
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
            retrieval: self
                .retrieval
                .resolve(self.ann_shadow_rate, self.similar.similar_metric)?,
        })
    }
}
