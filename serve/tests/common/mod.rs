//! Test fixtures: real models trained and exported by the project's binaries, a server on
//! `127.0.0.1:0`, and a direct ONNX Runtime run to compare against.
#![allow(dead_code)] // each test binary uses a subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::Tensor;
use sasrec_serve::{AppState, ServeConfig};
use sasrec_shared::time::{left_pad, time_codes, Intervals, TimeUnit};
use sasrec_shared::IdMap;

/// The trained fixtures.
pub struct Fixtures {
    /// Directory holding everything.
    pub root: PathBuf,
    /// `user item timestamp` lines.
    pub data: PathBuf,
    /// SASRec run directory (`model.onnx`, `items.tsv`).
    pub sas: PathBuf,
    /// TiSASRec (personal intervals, span 32) run directory.
    pub tis: PathBuf,
}

/// Window length of the fixtures.
pub const MAXLEN: usize = 20;
/// TiSASRec interval settings of the fixture.
pub const INTERVALS: Intervals = Intervals {
    unit: TimeUnit::Personal,
    span: 32,
};

/// `<target>/<profile>`: the directory of the profile this test binary was built in
/// (it runs from `<target>/<profile>/deps/`), so `cargo test --release` uses release binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps/<test>")
        .to_path_buf()
}

/// A binary of the profile this test binary was built in.
pub fn bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build -p sasrec-train -p sasrec-export` \
         (with `--release` for `cargo test --release`; `cargo test --workspace` builds them \
         too). The serve tests train and export tiny models with the real binaries.",
        p.display()
    );
    p
}

/// Runs `cmd`; fails the test with its output unless it succeeds.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Trains (1 epoch, tiny) and exports a SASRec and a TiSASRec model once per test binary.
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        // Rebuilt on every run (a few seconds), so the models match the current binaries.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-fixtures");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let train = bin("sasrec-train");
        let export = bin("sasrec-export");
        let data = root.join("synthetic.txt");
        // 128 items: a multiple of the generator's 16 genres (120 trips an index bug in
        // sasrec_shared::synthetic).
        run(Command::new(&train)
            .args([
                "data",
                "synthetic",
                "--users",
                "60",
                "--items",
                "128",
                "--output",
            ])
            .arg(&data));
        let common = [
            "--maxlen",
            "20",
            "--hidden_units",
            "16",
            "--num_heads",
            "1",
            "--num_epochs",
            "1",
            "--eval_every",
            "1",
            "--num_workers",
            "0",
            "--device",
            "cpu",
        ];
        let train_and_export = |name: &str, kind: &[&str]| {
            let dir = root.join(name);
            run(Command::new(&train)
                .arg("--dataset")
                .arg(&data)
                .arg("--train_dir")
                .arg(&dir)
                .args(kind)
                .args(common));
            run(Command::new(&export)
                .args(["--onnx", "--train_dir"])
                .arg(&dir));
            dir
        };
        let sas = train_and_export("sas", &["--no_time", "--no_mhc"]);
        let tis = train_and_export(
            "tis",
            &["--no_mhc", "--time_unit", "personal", "--time_span", "32"],
        );
        Fixtures {
            root,
            data,
            sas,
            tis,
        }
    })
}

/// `(raw item, timestamp)` per raw user of the fixture data, in file order.
pub fn user_events() -> Vec<Vec<(u64, i64)>> {
    let text = std::fs::read_to_string(&fixtures().data).unwrap();
    let mut users: Vec<(u64, Vec<(u64, i64)>)> = Vec::new();
    for line in text.lines() {
        let f: Vec<i64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let (u, i, t) = (f[0] as u64, f[1] as u64, f[2]);
        match users.last_mut() {
            Some((lu, ev)) if *lu == u => ev.push((i, t)),
            _ => users.push((u, vec![(i, t)])),
        }
    }
    users.into_iter().map(|(_, e)| e).collect()
}

/// A server on `127.0.0.1:0` with a client of its own: [`TestServer::start`], requests by
/// path ([`TestServer::post`], [`TestServer::get_json`], ...), then [`TestServer::shutdown`]
/// (graceful, and checks that the server stopped cleanly). Dropped without it (a failed
/// assertion), it is told to stop.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (for reload, metrics).
    pub state: AppState,
    /// A client for it (clones share the connection pool).
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Loads `cfg` and serves it on `127.0.0.1:0`.
    pub async fn start(cfg: ServeConfig) -> Self {
        let state = tokio::task::spawn_blocking(move || AppState::load(cfg))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("loading the model: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(sasrec_serve::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            client: client(),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs JSON to `path`: (status, body as JSON).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        post(&self.client, &self.url(path), body).await
    }

    /// POSTs JSON to `path`, asserts a 200 and returns the body.
    pub async fn post_ok(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "{path} {body}: {v}");
        v
    }

    /// GETs `path` and returns its body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        get_json(&self.client, &self.url(path)).await
    }

    /// The body of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// Starts the graceful shutdown and waits for the server to stop.
    pub async fn shutdown(mut self) {
        self.trigger_shutdown().await.unwrap().unwrap();
    }

    /// Starts the graceful shutdown without waiting.
    pub fn trigger_shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.take().expect("shut down once")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A client without connection-pool surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// GETs `url` and returns its body as JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// POSTs JSON and returns (status, body as JSON).
pub async fn post(
    c: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, v)
}

/// An ONNX Runtime session on `onnx`, built here rather than through the server.
pub fn direct_session(onnx: &Path) -> Session {
    let lib = sasrec_serve::runtime::resolve_dylib(None).unwrap();
    let env = sasrec_serve::runtime::environment(&lib).unwrap();
    Session::builder(env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(onnx)
        .unwrap()
}

/// The item map of a run directory.
pub fn items(dir: &Path) -> IdMap {
    IdMap::load(&dir.join("items.tsv")).unwrap()
}

/// One run of the graph, straight through ONNX Runtime, for one history of raw items (oldest
/// first, already in time order): indices via `items.tsv`, the window via `left_pad`, the
/// interval matrix via `time_codes` over the whole history + `Intervals::window_matrix`.
pub struct DirectRun {
    /// The `scores` row, `[I+1]`.
    pub scores: Vec<f32>,
    /// `topk_scores`, `[k]`.
    pub topk_scores: Vec<f32>,
    /// `topk_items` (item indices), `[k]`.
    pub topk_items: Vec<i64>,
    /// The history's known item indices.
    pub known: Vec<i64>,
}

/// The item indices of the known history entries and their timestamps (0 without).
pub fn known_indices(
    map: &IdMap,
    history: &[u64],
    timestamps: Option<&[i64]>,
) -> (Vec<i64>, Vec<i64>) {
    history
        .iter()
        .enumerate()
        .filter_map(|(n, r)| {
            map.index_of(&r.to_string())
                .map(|i| (i64::from(i), timestamps.map_or(0, |t| t[n])))
        })
        .unzip()
}

/// [`DirectRun`] with `exclude` item indices (`[1, n]`) and `k`.
pub fn direct_run(
    dir: &Path,
    history: &[u64],
    timestamps: Option<&[i64]>,
    exclude: Vec<i64>,
    k: usize,
) -> DirectRun {
    let (known, ts) = known_indices(&items(dir), history, timestamps);
    let mut s = direct_session(&dir.join("model.onnx"));
    let t = MAXLEN;
    let mut seq = vec![0i64; t];
    left_pad(&known, 0i64, &mut seq);
    let seq_t = Tensor::from_array(([1usize, t], seq)).unwrap();
    let exc_t = Tensor::from_array(([1usize, exclude.len()], exclude)).unwrap();
    let k_t = Tensor::from_array(([1usize], vec![k as i64])).unwrap();
    let out = match timestamps {
        Some(_) => {
            let mut m = vec![0i32; t * t];
            INTERVALS.window_matrix(&time_codes(INTERVALS.unit, &ts), t, &mut m);
            let m: Vec<i64> = m.into_iter().map(i64::from).collect();
            let tm = Tensor::from_array(([1usize, t, t], m)).unwrap();
            s.run(ort::inputs!["seq" => seq_t, "time_matrix" => tm, "exclude" => exc_t, "k" => k_t])
                .unwrap()
        }
        None => s
            .run(ort::inputs!["seq" => seq_t, "exclude" => exc_t, "k" => k_t])
            .unwrap(),
    };
    let f32s = |name: &str| out[name].try_extract_tensor::<f32>().unwrap().1.to_vec();
    DirectRun {
        scores: f32s("scores"),
        topk_scores: f32s("topk_scores"),
        topk_items: out["topk_items"]
            .try_extract_tensor::<i64>()
            .unwrap()
            .1
            .to_vec(),
        known,
    }
}

/// Top-k straight from the graph's own `TopK` (see [`direct_run`]), the history excluded when
/// `exclude_seen`. Returns (raw item, score).
pub fn direct_topk(
    dir: &Path,
    history: &[u64],
    timestamps: Option<&[i64]>,
    k: usize,
    exclude_seen: bool,
) -> Vec<(u64, f32)> {
    let map = items(dir);
    let (seen, _) = known_indices(&map, history, timestamps);
    let exclude = if exclude_seen && !seen.is_empty() {
        seen
    } else {
        vec![0]
    };
    let run = direct_run(dir, history, timestamps, exclude, k);
    run.topk_items
        .iter()
        .zip(&run.topk_scores)
        .filter(|(_, s)| s.is_finite())
        .map(|(&i, &s)| (map.raw_of(i as u32).unwrap().parse().unwrap(), s))
        .collect()
}

/// The reference ranking, independent of the graph's `TopK` and of the server's batching: the
/// graph's `scores` row for `history` (SASRec fixture) sorted by score, then lower index (the
/// order of ONNX `TopK`), without column 0, the history (when `exclude_seen`) and `exclude`,
/// restricted to `candidates` when given, first `k`. Raw ids in and out.
pub fn reference_ranking(
    dir: &Path,
    history: &[u64],
    exclude_seen: bool,
    exclude: &[u64],
    candidates: Option<&[u64]>,
    k: usize,
) -> Vec<(u64, f32)> {
    let map = items(dir);
    let index = |raw: &u64| map.index_of(&raw.to_string()).map(i64::from);
    let run = direct_run(dir, history, None, Vec::new(), 1);
    let mut banned: Vec<i64> = exclude.iter().filter_map(index).collect();
    if exclude_seen {
        banned.extend(&run.known);
    }
    let allowed: Vec<i64> = match candidates {
        Some(c) => c.iter().filter_map(index).collect(),
        None => (1..run.scores.len() as i64).collect(),
    };
    let mut ranked: Vec<(i64, f32)> = allowed
        .into_iter()
        .filter(|i| !banned.contains(i))
        .map(|i| (i, run.scores[i as usize]))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.dedup_by_key(|p| p.0);
    ranked
        .into_iter()
        .take(k)
        .map(|(i, s)| (map.raw_of(i as u32).unwrap().parse().unwrap(), s))
        .collect()
}

/// `(item, score)` pairs of a response body.
pub fn pairs(v: &serde_json::Value) -> Vec<(u64, f32)> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().unwrap(),
                e["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

/// Asserts same items in the same order and scores within `tol`.
pub fn assert_same(got: &[(u64, f32)], want: &[(u64, f32)], tol: f32) {
    assert_eq!(
        got.iter().map(|p| p.0).collect::<Vec<_>>(),
        want.iter().map(|p| p.0).collect::<Vec<_>>(),
        "items differ"
    );
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() <= tol, "score {} vs {}", g.1, w.1);
    }
}

/// A fresh copy of the fixture model directory `src` (model, user tower, item vectors, item
/// map; no ANN index) named `name`, for tests that build or damage an index: parallel tests
/// never share one index file.
pub fn copy_model(src: &Path, name: &str) -> PathBuf {
    let dir = fixtures().root.join("copies").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "model.onnx",
        "items.tsv",
        "user_tower.onnx",
        "user_tower.onnx.data",
        "item_vectors.safetensors",
    ] {
        std::fs::copy(src.join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", src.join(file).display()));
    }
    dir
}

/// Asserts that `got` ranks like `want`: scores within `tol` position by position, and the
/// same item at each position except where `want` holds another item whose score ties with
/// the position's within `tol` (float rounding may swap such items).
pub fn assert_same_ranking(got: &[(u64, f32)], want: &[(u64, f32)], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((item, score), (w_item, w_score)) in got.iter().zip(want) {
        assert!((score - w_score).abs() <= tol, "{got:?} vs {want:?}");
        let own = want.iter().find(|(i, _)| i == item).map(|p| p.1);
        let tie = own.is_some_and(|s| (s - w_score).abs() <= tol);
        assert!(item == w_item || tie, "{got:?} vs {want:?}");
    }
}

/// Asserts an error body `{"error": {"code", "message"}}` with `code` whose message contains
/// `needle`.
pub fn assert_error(v: &serde_json::Value, code: &str, needle: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "`{needle}` not in {v}");
}
