//! `POST /v1/items` on a model trained with `--item_features` and `--item_repr features`
//! (docs/MODELS.md §6.5): an item added with the features of a trained item gets that item's
//! score and place in every ranking, also read in a history and under `--retrieval ann`; the
//! additions survive a restart; bad bodies and features are 4xx naming the field; the limit
//! holds; adding items under concurrent load fails no request; a model without an item tower,
//! or served without `--max_added_items`, answers 409.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use common::*;
use sasrec_serve::config::Retrieval;
use sasrec_serve::ServeConfig;
use serde_json::{json, Value};

/// The features model and its features file.
struct FeatureFixture {
    /// The run directory, exported.
    dir: PathBuf,
    /// Raw item id → `{"genre": …, "rank": …}` as in the features file.
    features: HashMap<String, Value>,
}

/// Trains (1 epoch) and exports a SASRec `--item_repr features` model on the synthetic data
/// with its `genre:categorical rank:numeric` features, once per test binary.
fn feature_fixture() -> &'static FeatureFixture {
    static F: OnceLock<FeatureFixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-items");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let (data, feats, dir) = (
            root.join("data.txt"),
            root.join("feats.tsv"),
            root.join("run"),
        );
        run(Command::new(bin("sasrec-train"))
            .args([
                "data",
                "synthetic",
                "--users",
                "60",
                "--items",
                "128",
                "--output",
            ])
            .arg(&data)
            .arg("--features_output")
            .arg(&feats));
        run(Command::new(bin("sasrec-train"))
            .arg("--dataset")
            .arg(&data)
            .arg("--train_dir")
            .arg(&dir)
            .arg("--item_features")
            .arg(&feats)
            .args([
                "--item_repr",
                "features",
                "--no_time",
                "--no_mhc",
                "--maxlen",
                "20",
            ])
            .args([
                "--hidden_units",
                "16",
                "--num_heads",
                "1",
                "--num_epochs",
                "1",
            ])
            .args(["--num_workers", "0", "--device", "cpu"]));
        run(Command::new(bin("sasrec-export"))
            .args(["--onnx", "--train_dir"])
            .arg(&dir));
        FeatureFixture {
            dir,
            features: read_features(&feats),
        }
    })
}

/// `item → {"genre", "rank"}` from the synthetic features file.
fn read_features(path: &Path) -> HashMap<String, Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("item\tgenre:categorical\trank:numeric"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let rank: f64 = f[2].parse().unwrap();
            (f[0].to_string(), json!({"genre": f[1], "rank": rank}))
        })
        .collect()
}

/// The server settings of these tests: additions on, up to 1,000.
fn config(dir: &Path) -> ServeConfig {
    let mut cfg = ServeConfig::new(dir);
    cfg.retrieval.max_added_items = 1000;
    cfg
}

/// A copy of the features model named `name` (no additions file, no index).
fn live_copy(name: &str) -> PathBuf {
    let src = &feature_fixture().dir;
    let dir = fixtures().root.join("items").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".onnx") || name.ends_with(".data") || name == "items.tsv" {
            std::fs::copy(&p, dir.join(&name)).unwrap();
        }
        if name == "item_vectors.safetensors" {
            std::fs::copy(&p, dir.join(&name)).unwrap();
        }
    }
    dir
}

/// `(raw id, score)` of an answer, in order.
fn ranked(v: &Value) -> Vec<(String, f32)> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|e| {
            let id = match &e["item"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, e["score"].as_f64().unwrap() as f32)
        })
        .collect()
}

/// A trained item with features, and a history of three other trained items.
fn some_item_and_history() -> (String, Vec<Value>) {
    let f = &feature_fixture().features;
    let mut ids: Vec<&String> = f.keys().collect();
    ids.sort();
    (
        ids[5].clone(),
        vec![json!(ids[9]), json!(ids[17]), json!(ids[40])],
    )
}

/// `item`'s score and position in the full ranking of `history` (`k` = every item).
fn place(ranking: &[(String, f32)], item: &str) -> (usize, f32) {
    let at = ranking.iter().position(|(i, _)| i == item);
    let at = at.unwrap_or_else(|| panic!("{item} not ranked: {ranking:?}"));
    (at, ranking[at].1)
}

/// An added copy of trained item X scores exactly as X in the full ranking, sits next to it,
/// is in the top k where X's rank says it should be, and as a history reads exactly as X; the
/// same under `--retrieval ann`; `GET /v1/model` counts it.
#[tokio::test]
async fn an_added_copy_of_a_trained_item_scores_and_reads_as_that_item() {
    let (x, history) = some_item_and_history();
    let features = feature_fixture().features[&x].clone();
    for mode in [Retrieval::Exact, Retrieval::Ann] {
        let dir = live_copy(&format!("copy-{mode:?}"));
        let mut cfg = config(&dir);
        cfg.retrieval.mode = mode;
        let srv = TestServer::start(cfg).await;
        let info = srv.get_json("/v1/model").await;
        assert_eq!(info["items"]["trained"], 128, "{info}");
        assert_eq!(info["items"]["added"], 0, "{info}");
        let body = json!({"items": [{"id": "new-x", "features": features}]});
        let added = srv.post_ok("/v1/items", &body).await;
        assert_eq!(
            (added["added"].as_u64(), added["added_items"].as_u64()),
            (Some(1), Some(1))
        );
        let info = srv.get_json("/v1/model").await;
        assert_eq!(info["items"]["added"], 1, "{info}");

        let all = json!({"history": history, "k": 129, "exclude_seen": false});
        let ranking = ranked(&srv.post_ok("/recommend", &all).await);
        assert_eq!(ranking.len(), 129, "{mode:?}: every trained and added item");
        let (at_x, score_x) = place(&ranking, &x);
        let (at_new, score_new) = place(&ranking, "new-x");
        assert_eq!(score_new, score_x, "{mode:?}: the copy's score is X's");
        assert_eq!(at_new.abs_diff(at_x), 1, "{mode:?}: next to X: {ranking:?}");
        let k = at_x.max(at_new) + 1;
        let top = json!({"history": history, "k": k, "exclude_seen": false});
        let top = ranked(&srv.post_ok("/recommend", &top).await);
        assert!(
            top.iter().any(|(i, _)| i == "new-x"),
            "{mode:?}: in the top {k}"
        );

        let as_x = json!({"history": [x], "k": 10, "exclude_seen": false});
        let as_new = json!({"history": ["new-x"], "k": 10, "exclude_seen": false});
        let (a, b) = (
            srv.post_ok("/recommend", &as_x).await,
            srv.post_ok("/recommend", &as_new).await,
        );
        assert_eq!(
            ranked(&a),
            ranked(&b),
            "{mode:?}: the copy reads as X in a history"
        );
        assert_eq!(b["unknown_items"], json!([]), "{b}");
        srv.shutdown().await;
    }
}

/// Additions are written beside the model and read again at the next start (embedded by the
/// item tower again: same scores); an update keeps the index; a damaged additions file is a
/// load error naming the file and line.
#[tokio::test]
async fn additions_survive_a_restart_and_a_damaged_file_is_refused() {
    let (x, history) = some_item_and_history();
    let f = &feature_fixture().features;
    let dir = live_copy("restart");
    let srv = TestServer::start(config(&dir)).await;
    let items = json!({"items": [
        {"id": "a", "features": f[&x]},
        {"id": 5, "features": {"genre": "g1"}},
    ]});
    srv.post_ok("/v1/items", &items).await;
    let update = json!({"items": [{"id": "5", "features": {"genre": "g2", "rank": 3.0}}]});
    let v = srv.post_ok("/v1/items", &update).await;
    assert_eq!(
        (v["added"].as_u64(), v["updated"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let all = json!({"history": history, "k": 130, "exclude_seen": false});
    let before = ranked(&srv.post_ok("/recommend", &all).await);
    srv.shutdown().await;

    let file = dir.join("added_items.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("\"g2\""), "the update was written: {text}");
    let srv = TestServer::start(config(&dir)).await;
    assert_eq!(srv.get_json("/v1/model").await["items"]["added"], 2);
    let after = ranked(&srv.post_ok("/recommend", &all).await);
    assert_eq!(after, before, "the same catalogue after a restart");
    srv.shutdown().await;

    std::fs::write(
        &file,
        format!("{}\n{{\"id\": \"b\"}}\n", text.lines().next().unwrap()),
    )
    .unwrap();
    let e = sasrec_serve::AppState::load(config(&dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("{}:2:", file.display())), "{e}");
    std::fs::write(&file, "{\"id\": \"b\", \"features\": {\"genre\": 3}}\n").unwrap();
    let e = sasrec_serve::AppState::load(config(&dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains("item b: feature `genre`"), "{e}");
}

/// Every bad body is a 4xx naming what is wrong, and changes nothing.
#[tokio::test]
async fn bad_items_and_features_get_4xx_naming_the_field() {
    let (x, _) = some_item_and_history();
    let dir = live_copy("bad");
    let mut cfg = config(&dir);
    cfg.retrieval.max_added_items = 2;
    let srv = TestServer::start(cfg).await;
    let one = |id: Value, features: Value| json!({"items": [{"id": id, "features": features}]});
    let cases = [
        (
            one(json!("n"), json!({"colour": "red"})),
            "invalid_features",
            "feature `colour`: no such feature column",
        ),
        (
            one(json!("n"), json!({"genre": 5})),
            "invalid_features",
            "feature `genre`: a categorical column takes a string, found a number",
        ),
        (
            one(json!("n"), json!({"rank": "high"})),
            "invalid_features",
            "feature `rank`",
        ),
        (
            one(json!("n"), json!({"rank": [1, 2]})),
            "invalid_features",
            "items[0] (id n): feature `rank`: a numeric column takes a number, found an array",
        ),
        (
            one(json!(x), json!({})),
            "invalid_items",
            "is a trained item",
        ),
        (
            one(json!({"x": 1}), json!({})),
            "invalid_items",
            "items[0].id",
        ),
        (json!({"items": []}), "invalid_items", "at least one"),
        (
            json!({"items": [{"id": "n", "features": {}}, {"id": "n", "features": {}}]}),
            "invalid_items",
            "appears twice",
        ),
        (
            json!({"items": [{"id": "n"}]}),
            "invalid_request",
            "features",
        ),
        (json!({"things": []}), "invalid_request", "things"),
        (
            json!({"items": [{"id": "p", "features": {}}, {"id": "q", "features": {}}, {"id": "r", "features": {}}]}),
            "invalid_items",
            "--max_added_items 2",
        ),
    ];
    for (body, code, needle) in cases {
        let (status, v) = srv.post("/v1/items", &body).await;
        assert_eq!(status, 422, "{body}: {v}");
        assert_error(&v, code, needle);
    }
    assert_eq!(srv.get_json("/v1/model").await["items"]["added"], 0);
    assert!(
        !dir.join("added_items.jsonl").exists(),
        "nothing was written"
    );
    let two = json!({"items": [{"id": "p", "features": {}}, {"id": "q", "features": {}}]});
    srv.post_ok("/v1/items", &two).await;
    let (status, v) = srv.post("/v1/items", &one(json!("r"), json!({}))).await;
    assert_eq!(status, 422, "{v}");
    assert_error(
        &v,
        "invalid_items",
        "3 added items, more than --max_added_items 2",
    );
    srv.shutdown().await;
}

/// A model without an item tower, and a features model served without `--max_added_items`
/// (the default): 409 `no_additions` saying why.
#[tokio::test]
async fn without_an_item_tower_or_a_limit_items_cannot_be_added() {
    let one = json!({"items": [{"id": "n", "features": {}}]});
    let mut cfg = ServeConfig::new(&fixtures().sas);
    cfg.retrieval.max_added_items = 1000;
    let srv = TestServer::start(cfg).await;
    let (status, v) = srv.post("/v1/items", &one).await;
    assert_eq!(status, 409, "{v}");
    assert_error(&v, "no_additions", "no item tower");
    srv.shutdown().await;
    let dir = live_copy("default");
    let srv = TestServer::start(ServeConfig::new(&dir)).await;
    let info = srv.get_json("/v1/model").await;
    assert_eq!(
        info["retrieval"]["user_tower_path"],
        Value::Null,
        "model.onnx serves: {info}"
    );
    let (status, v) = srv.post("/v1/items", &one).await;
    assert_eq!(status, 409, "{v}");
    assert_error(&v, "no_additions", "--max_added_items is 0");
    srv.shutdown().await;
}

/// Clients recommend without pause while items are added one request at a time: every
/// request gets a 200, and after the last addition every added item is ranked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_items_under_load_fails_no_request() {
    const CLIENTS: usize = 6;
    const ADDITIONS: usize = 20;
    let (_, history) = some_item_and_history();
    let dir = live_copy("load");
    let srv = TestServer::start(config(&dir)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, client) = (srv.url("/recommend"), srv.client.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        // Half the clients read added items in their histories as they appear.
        let body = match c % 2 {
            0 => json!({"history": history, "k": 5}),
            _ => json!({"history": ["added-0", "added-1", history[0]], "k": 5}),
        };
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = client.post(&url).json(&body).send().await.unwrap();
                match r.status().as_u16() {
                    200 => ok.fetch_add(1, Ordering::SeqCst),
                    s => {
                        eprintln!("{s}: {}", r.text().await.unwrap_or_default());
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    for i in 0..ADDITIONS {
        let genre = format!("g{}", i % 16);
        let body = json!({"items": [{"id": format!("added-{i}"), "features": {"genre": genre}}]});
        srv.post_ok("/v1/items", &body).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("{ok} requests answered during {ADDITIONS} additions, {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        ok >= 2 * ADDITIONS as u64,
        "the clients ran during the additions ({ok})"
    );
    let all = json!({"history": history, "k": 128 + ADDITIONS, "exclude_seen": false});
    let ranking = ranked(&srv.post_ok("/recommend", &all).await);
    for i in 0..ADDITIONS {
        place(&ranking, &format!("added-{i}"));
    }
    srv.shutdown().await;
}
