//! Prometheus metrics (`GET /metrics`, text format).
//!
//! `prometheus-client` rather than the `metrics` facade: its registry is a value held in the
//! app state, not a process-wide recorder, so several servers in one test process keep
//! separate counts.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sasrec_http_requests_total` | counter | `route`, `method`, `status` |
//! | `sasrec_http_request_duration_seconds` | histogram | `route` |
//! | `sasrec_batch_size` | histogram (rows per ONNX Runtime run) | |
//! | `sasrec_inference_duration_seconds` | histogram (one ONNX Runtime run) | |
//! | `sasrec_queue_wait_seconds` | histogram (enqueue → batch start) | |
//! | `sasrec_queue_depth` | gauge (jobs waiting, sampled at scrape) | |
//! | `sasrec_rejected_total` | counter (503 because the queue was full) | |
//! | `sasrec_unknown_items_total` | counter (history entries not in the item map) | |
//! | `sasrec_model_reloads_total` | counter | `result` = `ok` / `error` |
//! | `sasrec_model_info` | gauge = 1 | `model` |
//! | `sasrec_ann_recall_at_k` | gauge (EMA of shadow recall@k; only with `--ann_shadow_rate` > 0) | |
//! | `sasrec_ann_shadow_total` | counter (ANN rows re-scored exactly in the background) | |
//! | `sasrec_ann_shadow_dropped_total` | counter (shadow rows dropped: the shadow queue was full) | |

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

/// Every metric handle, plus the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<Labels, Counter>,
    /// Request latency by route.
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Rows per ONNX Runtime run.
    pub batch_size: Histogram,
    /// Seconds per ONNX Runtime run.
    pub inference: Histogram,
    /// Seconds from enqueue to the start of the job's batch.
    pub queue_wait: Histogram,
    /// Jobs waiting (set when scraped).
    pub queue_depth: Gauge,
    /// Jobs refused with 503.
    pub rejected: Counter,
    /// History entries not in the item map.
    pub unknown_items: Counter,
    /// Reloads by result.
    pub reloads: Family<Labels, Counter>,
    /// The model being served.
    pub model_info: Family<Labels, Gauge>,
    /// Shadow recall@k of ANN answers ([`Metrics::observe_ann_recall`]).
    pub ann_recall: Gauge<f64, AtomicU64>,
    /// ANN rows re-scored exactly in the background.
    pub ann_shadow: Counter,
    /// Shadow rows dropped because the shadow queue was full.
    pub ann_shadow_dropped: Counter,
    current_model: Mutex<Option<String>>,
    /// The running mean behind `ann_recall` (`None` before the first shadow row).
    ann_recall_mean: Mutex<Option<f64>>,
}

/// Weight of the newest shadow row in the exponential moving average `sasrec_ann_recall_at_k`
/// (about the last 1/α = 50 rows count).
pub const ANN_RECALL_ALPHA: f64 = 0.02;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered (in the order of the module docs' table).
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            inference: latency_histogram(),
            queue_wait: latency_histogram(),
            queue_depth: Gauge::default(),
            rejected: Counter::default(),
            unknown_items: Counter::default(),
            reloads: Family::default(),
            model_info: Family::default(),
            ann_recall: Gauge::default(),
            ann_shadow: Counter::default(),
            ann_shadow_dropped: Counter::default(),
            current_model: Mutex::new(None),
            ann_recall_mean: Mutex::new(None),
        };
        metrics.register();
        metrics
    }

    /// Registers every handle with the registry that encodes them.
    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "sasrec_http_requests",
            "HTTP requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "sasrec_http_request_duration_seconds",
            "HTTP request latency by route",
            self.latency.clone(),
        );
        registry.register(
            "sasrec_batch_size",
            "Rows per ONNX Runtime run",
            self.batch_size.clone(),
        );
        registry.register(
            "sasrec_inference_duration_seconds",
            "Duration of one ONNX Runtime run",
            self.inference.clone(),
        );
        registry.register(
            "sasrec_queue_wait_seconds",
            "Time from enqueue to the start of the batch",
            self.queue_wait.clone(),
        );
        registry.register(
            "sasrec_queue_depth",
            "Jobs waiting for an inference worker",
            self.queue_depth.clone(),
        );
        registry.register(
            "sasrec_rejected",
            "Requests refused with 503 because the queue was full",
            self.rejected.clone(),
        );
        registry.register(
            "sasrec_unknown_items",
            "History entries not in the model's item map",
            self.unknown_items.clone(),
        );
        registry.register(
            "sasrec_model_reloads",
            "Model reloads by result",
            self.reloads.clone(),
        );
        registry.register(
            "sasrec_model_info",
            "The model being served (value 1)",
            self.model_info.clone(),
        );
    }

    /// Registers the ANN shadow metrics (`--retrieval ann` with `--ann_shadow_rate` > 0), so
    /// that a server without shadow scoring exports no recall it never measured.
    pub fn with_ann_shadow(mut self) -> Self {
        self.registry.register(
            "sasrec_ann_recall_at_k",
            format!(
                "Recall@k of ANN answers against exact scoring on the rows sampled by \
                 --ann_shadow_rate, r = |ann top k ∩ exact top k| / |exact top k|: an \
                 exponential moving average, m ← m + {ANN_RECALL_ALPHA} (r − m), the first row \
                 setting m"
            ),
            self.ann_recall.clone(),
        );
        self.registry.register(
            "sasrec_ann_shadow",
            "ANN-answered rows re-scored exactly in the background (shadow scoring)",
            self.ann_shadow.clone(),
        );
        self.registry.register(
            "sasrec_ann_shadow_dropped",
            "Shadow rows dropped because the shadow queue was full",
            self.ann_shadow_dropped.clone(),
        );
        self
    }

    /// Records one shadow row's recall `r`: the mean becomes `m + α (r − m)` with
    /// α = [`ANN_RECALL_ALPHA`] (the first row sets `m = r`).
    pub fn observe_ann_recall(&self, r: f64) {
        let mut mean = self
            .ann_recall_mean
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let m = mean.map_or(r, |m| m + ANN_RECALL_ALPHA * (r - m));
        *mean = Some(m);
        self.ann_recall.set(m);
        self.ann_shadow.inc();
    }

    /// Counts one finished request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("route", route.to_string())])
            .observe(seconds);
    }

    /// Counts `n` request entries (history, candidates, exclude) not in the item map.
    pub fn count_unknown(&self, n: usize) {
        self.unknown_items.inc_by(n as u64);
    }

    /// Records a reload attempt.
    pub fn observe_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// Sets `sasrec_model_info{model=..} 1` for the new model (and removes the old one).
    pub fn set_model(&self, model: &str) {
        let mut cur = self.current_model.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = cur.take() {
            self.model_info.remove(&vec![("model", old)]);
        }
        self.model_info
            .get_or_create(&vec![("model", model.to_string())])
            .set(1);
        *cur = Some(model.to_string());
    }

    /// The text exposition (after setting the queue depth gauge).
    pub fn render(&self, queue_depth: usize) -> String {
        self.queue_depth.set(queue_depth as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
