//! `--retrieval ann` (user tower + HNSW index) against exact mode, the index's life cycle,
//! `POST /similar` against a brute-force ranking computed here from the safetensors, and the
//! shadow-recall metric. Every test that touches an index works on its own copy of a fixture
//! model, so that parallel tests never build one index file at the same time.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use sasrec_serve::config::{Retrieval, SimilarMetric};
use sasrec_serve::{AppState, ServeConfig};
use serde_json::{json, Value};

/// The servers these tests start search widely (f32 storage, `ef` 256, 200 extra candidates of
/// the fixtures' 800 items); where a test asserts recall or equality with brute force, the index
/// is built beforehand on one thread ([`prebuilt_index`]), as the server's multi-threaded build
/// differs between runs. The tests check the plumbing — exclusions, candidates, scores equal to exact
/// mode's — while recall at the defaults is held by sasrec-ann's single-threaded recall test
/// and measured by benches/ann.sh (docs/RESULTS.md). The time-aware fixture's scores are also
/// ~1e-5 apart, below what f16 storage resolves.
fn config(dir: &Path, mode: Retrieval, metric: SimilarMetric) -> ServeConfig {
    let mut c = ServeConfig::new(dir);
    c.retrieval.mode = mode;
    c.retrieval.similar_metric = metric;
    c.retrieval.params.quantization = sasrec_ann::Quantization::F32;
    c.retrieval.ef = 256;
    c.retrieval.candidates = 200;
    c
}

/// Builds the index of the model in `dir` with [`config`]'s parameters on one thread and saves
/// it beside the model, so the server loads it instead of building one on every core: a
/// single-threaded build inserts in key order and gives the same graph on every run, which
/// keeps the recall these tests assert from depending on thread scheduling.
fn prebuilt_index(dir: &Path) {
    let cfg = config(dir, Retrieval::Ann, SimilarMetric::Ip);
    let vectors = sasrec_ann::ItemVectors::open(&dir.join("item_vectors.safetensors")).unwrap();
    let index = sasrec_ann::ItemIndex::build(&vectors, &cfg.retrieval.params, 1).unwrap();
    index.save(&dir.join("items.usearch")).unwrap();
}

/// One `/recommend` body per fixture user: the whole history (with timestamps when
/// `timed`), `k`.
fn user_bodies(timed: bool, k: usize) -> Vec<Value> {
    user_events()
        .iter()
        .map(|ev| {
            let mut b = json!({"history": ev.iter().map(|e| e.0).collect::<Vec<_>>(), "k": k});
            if timed {
                b["timestamps"] = json!(ev.iter().map(|e| e.1).collect::<Vec<_>>());
            }
            b
        })
        .collect()
}

/// The answers of `POST /recommend/batch` for `bodies`.
async fn batch(srv: &TestServer, bodies: &[Value]) -> Vec<Vec<(u64, f32)>> {
    let v = srv
        .post_ok("/recommend/batch", &json!({"requests": bodies}))
        .await;
    v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(pairs)
        .collect()
}

/// Raw ids of a JSON list.
fn ids(v: &Value) -> HashSet<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Mean recall of `ann` against `exact` (same k), after checking that every common item has
/// the same score (`user_vector · item_vectors[i]` vs `model.onnx`'s `scores`) within 1e-5
/// relative to `max(|score|, 1e-3)` (the time-aware fixture's scores are about 1e-5).
fn recall(ann: &[Vec<(u64, f32)>], exact: &[Vec<(u64, f32)>]) -> f64 {
    let mut total = 0.0;
    for (a, e) in ann.iter().zip(exact) {
        assert_eq!(a.len(), e.len(), "ann {a:?} vs exact {e:?}");
        // An item missing from the exact list still counts when its score ties the list's
        // last one within the tolerance: the two exact computations (model.onnx's MatMul and
        // the two-tower dot products) may order near-ties differently at the cut.
        let last = e.last().map_or(f32::NEG_INFINITY, |&(_, s)| s);
        let mut hits = 0;
        for (item, score) in a {
            match e.iter().find(|(i, _)| i == item) {
                Some((_, s)) => {
                    let tol = 1e-5 * s.abs().max(1e-3);
                    assert!((score - s).abs() <= tol, "item {item}: {score} vs {s}");
                    hits += 1;
                }
                None if *score >= last - 1e-5 * last.abs().max(1e-3) => hits += 1,
                None => {}
            }
        }
        total += hits as f64 / e.len().max(1) as f64;
    }
    total / exact.len() as f64
}

/// The same requests under `--retrieval exact` and `--retrieval ann`: recall@10 ≥ 0.99 over
/// every fixture user, equal scores for the common items, and the exclusions of each body kept
/// (`exclude_seen`, `exclude`; `candidates` restricts both the same way).
async fn ann_agrees_with_exact(model: &Path, name: &str, timed: bool) {
    let dir = copy_model(model, name);
    prebuilt_index(&dir);
    let exact = TestServer::start(config(&dir, Retrieval::Exact, SimilarMetric::Ip)).await;
    let ann = TestServer::start(config(&dir, Retrieval::Ann, SimilarMetric::Ip)).await;
    let mut bodies = user_bodies(timed, 10);
    let events = user_events();
    for (n, b) in bodies.iter_mut().enumerate().step_by(3) {
        let other: Vec<u64> = events[(n + 1) % events.len()].iter().map(|e| e.0).collect();
        b["exclude"] = json!(other[..other.len().min(5)]);
        if n % 2 == 0 {
            b["candidates"] = json!(other);
            b["exclude_seen"] = json!(false);
        }
    }
    let (want, got) = (batch(&exact, &bodies).await, batch(&ann, &bodies).await);
    let r = recall(&got, &want);
    assert!(r >= 0.99, "recall@10 {r}");
    eprintln!("{name}: recall@10 against exact mode {r}");
    for (b, answer) in bodies.iter().zip(&got) {
        let mut banned = ids(&b["exclude"]);
        if b["exclude_seen"] != json!(false) {
            banned.extend(ids(&b["history"]));
        }
        let allowed = b.get("candidates").map(ids);
        for (item, _) in answer {
            assert!(!banned.contains(item), "{item} excluded by {b}");
            assert!(allowed.as_ref().is_none_or(|c| c.contains(item)), "{item}");
        }
    }
    // The index's answer against the exact two-tower ranking (`candidates` = every item is
    // ranked by `rescore` over all of them): the same items, bit-equal scores.
    let map = items(&dir);
    let every: Vec<u64> = (1..=map.len() as u32)
        .map(|i| map.raw_of(i).unwrap().parse().unwrap())
        .collect();
    for b in user_bodies(timed, 10).iter().take(10) {
        let via_index = pairs(&ann.post_ok("/recommend", b).await);
        let mut all = b.clone();
        all["candidates"] = json!(every);
        let exact_two_tower = pairs(&ann.post_ok("/recommend", &all).await);
        assert_eq!(via_index, exact_two_tower, "{b}");
    }
    exact.shutdown().await;
    ann.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ann_answers_equal_exact_mode() {
    ann_agrees_with_exact(&fixtures().sas, "ann-sas", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ann_answers_equal_exact_mode_time_aware() {
    ann_agrees_with_exact(&fixtures().tis, "ann-tis", true).await;
}

/// A missing index is built at start (and reported with its build time), saved, and loaded on
/// the next start, which answers the same without reading `model.onnx` (overwritten here
/// with bytes no ONNX parser accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_index_is_built_saved_then_loaded() {
    let dir = copy_model(&fixtures().sas, "build-then-load");
    let index = dir.join("items.usearch");
    assert!(!index.exists());
    let bodies = user_bodies(false, 10);
    let first = TestServer::start(config(&dir, Retrieval::Ann, SimilarMetric::Ip)).await;
    let info = first.get_json("/v1/model").await;
    let r = &info["retrieval"];
    assert_eq!(r["mode"], "ann");
    assert!(r["index"]["build_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    assert_eq!(r["index"]["num_items"], 128);
    assert_eq!(r["index"]["quantization"], "f32");
    assert_eq!(r["index"]["ef"], 256);
    assert!(r["user_tower_path"]
        .as_str()
        .unwrap()
        .ends_with("user_tower.onnx"));
    assert!(index.is_file() && dir.join("items.usearch.json").is_file());
    let built = batch(&first, &bodies).await;
    first.shutdown().await;

    std::fs::write(dir.join("model.onnx"), b"not an ONNX file").unwrap();
    let second = TestServer::start(config(&dir, Retrieval::Ann, SimilarMetric::Ip)).await;
    let info = second.get_json("/v1/model").await;
    assert_eq!(info["retrieval"]["index"]["build_seconds"], Value::Null);
    assert_eq!(batch(&second, &bodies).await, built);
    second.shutdown().await;
}

/// A truncated index: the server refuses to start, naming the file; a reload onto it keeps the
/// old model serving; once the damaged files are gone a reload builds the index again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_index_is_a_load_error_naming_the_file() {
    let dir = copy_model(&fixtures().sas, "truncated");
    let srv = TestServer::start(config(&dir, Retrieval::Ann, SimilarMetric::Ip)).await;
    let body = &user_bodies(false, 5)[0];
    let before = srv.post_ok("/recommend", body).await;
    let index = dir.join("items.usearch");
    let len = std::fs::metadata(&index).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);

    let cfg = config(&dir, Retrieval::Ann, SimilarMetric::Ip);
    let err = tokio::task::spawn_blocking(move || AppState::load(cfg))
        .await
        .unwrap()
        .expect_err("a truncated index must not load");
    let msg = err.to_string();
    assert!(
        msg.contains("items.usearch") && msg.contains("truncated"),
        "{msg}"
    );

    let (status, v) = srv.post("/v1/model/reload", &json!({})).await;
    assert_eq!(status, 500, "{v}");
    assert_error(&v, "reload_failed", "items.usearch");
    assert_eq!(srv.post_ok("/recommend", body).await, before);

    // Without the damaged files a reload builds the index again and serves with it.
    std::fs::remove_file(&index).unwrap();
    std::fs::remove_file(dir.join("items.usearch.json")).unwrap();
    let (status, v) = srv.post("/v1/model/reload", &json!({})).await;
    assert_eq!(status, 200, "{v}");
    let info = srv.get_json("/v1/model").await;
    assert!(
        info["retrieval"]["index"]["build_seconds"].is_number(),
        "{info}"
    );
    assert_eq!(srv.post_ok("/recommend", body).await, before);
    srv.shutdown().await;
}

/// `(item index, score)` of every other item by `ip` or `cosine`, computed here in f64 from the
/// item vectors, best first (ties to the lower index), without `a` and `exclude`.
fn brute_force(
    dir: &Path,
    a: usize,
    metric: SimilarMetric,
    exclude: &[usize],
) -> Vec<(usize, f64)> {
    let v = sasrec_ann::ItemVectors::open(&dir.join("item_vectors.safetensors")).unwrap();
    let dot = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum()
    };
    let norm = |i: usize| dot(v.row(i), v.row(i)).sqrt();
    let mut scored: Vec<(usize, f64)> = (1..=v.num_items())
        .filter(|i| *i != a && !exclude.contains(i))
        .map(|i| {
            let ip = dot(v.row(a), v.row(i));
            match metric {
                SimilarMetric::Ip => (i, ip),
                SimilarMetric::Cosine => (i, ip / (norm(a) * norm(i))),
            }
        })
        .collect();
    scored.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    scored
}

/// `/similar` for items 1, 17 and 64 (k = 7, one of them with `exclude`) equals the brute
/// force ([`assert_same_ranking`], 1e-5), never returning the item itself or an excluded one.
async fn check_similar(srv: &TestServer, dir: &Path, metric: SimilarMetric) {
    let map = items(dir);
    let raw = |i: usize| -> u64 { map.raw_of(i as u32).unwrap().parse().unwrap() };
    for (a, exclude) in [(1usize, vec![]), (17, vec![]), (64, vec![3usize, 5])] {
        let ranked = brute_force(dir, a, metric, &[]);
        let exclude: Vec<usize> = exclude.iter().map(|&r| ranked[r].0).collect();
        let want: Vec<(u64, f32)> = brute_force(dir, a, metric, &exclude)
            .into_iter()
            .map(|(i, s)| (raw(i), s as f32))
            .collect();
        let ex: Vec<u64> = exclude.iter().map(|&i| raw(i)).collect();
        let v = srv
            .post_ok("/similar", &json!({"item": raw(a), "k": 7, "exclude": ex}))
            .await;
        assert_eq!(v["item"], json!(raw(a)));
        let got = pairs(&v);
        assert_same_ranking(&got, &want[..7], 1e-5);
        assert!(
            got.iter().all(|(i, _)| *i != raw(a) && !ex.contains(i)),
            "{got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_equals_brute_force_in_both_modes_and_metrics() {
    let dir = copy_model(&fixtures().sas, "similar");
    prebuilt_index(&dir);
    for mode in [Retrieval::Exact, Retrieval::Ann] {
        for metric in [SimilarMetric::Ip, SimilarMetric::Cosine] {
            let srv = TestServer::start(config(&dir, mode, metric)).await;
            let info = srv.get_json("/v1/model").await;
            assert_eq!(info["retrieval"]["similar_metric"], json!(metric));
            check_similar(&srv, &dir, metric).await;
            srv.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_rejects_bad_requests_like_recommend() {
    let f = fixtures();
    let mut cfg = ServeConfig::new(&f.sas);
    cfg.auth_token = Some("tok".into());
    let srv = TestServer::start(cfg).await;
    let c = &srv.client;
    let item = items(&f.sas).raw_of(1).unwrap().parse::<u64>().unwrap();
    let send = |body: Value, token: Option<&'static str>| {
        let mut r = c.post(srv.url("/similar")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = send(json!({"item": item}), None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (st, v) = send(json!({"item": item}), Some("tok")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 10);
    assert!(v["model"].as_str().unwrap().starts_with("sasrec@"));
    for (body, status, code) in [
        (json!({"item": 999_999, "k": 3}), 422, "unknown_item"),
        (json!({"item": "nope"}), 422, "unknown_item"),
        (json!({"item": null}), 422, "invalid_item"),
        (json!({"item": item, "k": 0}), 422, "invalid_k"),
        (json!({"item": item, "k": 129}), 422, "invalid_k"),
        (
            json!({"item": item, "exclude": [[1]]}),
            422,
            "invalid_exclude",
        ),
        (json!({"item": item, "kk": 3}), 422, "invalid_request"),
        (json!([item]), 400, "invalid_json"),
    ] {
        let (st, v) = send(body.clone(), Some("tok")).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    let (_, v) = send(json!({"item": 999_999}), Some("tok")).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("999999"),
        "{v}"
    );
    let (_, v) = send(json!({"item": item, "exclude": ["gone"]}), Some("tok")).await;
    assert_eq!(v["unknown_items"], json!(["gone"]));
    srv.shutdown().await;
}

/// A model exported before the two-tower files: exact mode serves `/recommend` and answers
/// `/similar` with 404 `no_item_vectors`; ann mode refuses to start, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_item_vectors_similar_is_404_and_ann_refuses() {
    let dir = copy_model(&fixtures().sas, "no-vectors");
    std::fs::remove_file(dir.join("item_vectors.safetensors")).unwrap();
    let srv = TestServer::start(config(&dir, Retrieval::Exact, SimilarMetric::Ip)).await;
    srv.post_ok("/recommend", &user_bodies(false, 5)[0]).await;
    let item = items(&dir).raw_of(1).unwrap().to_string();
    let (st, v) = srv.post("/similar", &json!({"item": item})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("no_item_vectors")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("item_vectors.safetensors"), "{msg}");
    let info = srv.get_json("/v1/model").await;
    assert!(
        info["retrieval"]["similar_unavailable"].is_string(),
        "{info}"
    );
    srv.shutdown().await;

    let cfg = config(&dir, Retrieval::Ann, SimilarMetric::Ip);
    let err = tokio::task::spawn_blocking(move || AppState::load(cfg))
        .await
        .unwrap()
        .expect_err("ann needs the item vectors");
    assert!(
        err.to_string().contains("item_vectors.safetensors"),
        "{err}"
    );
}

/// Under `--retrieval ann` the file beside the model named `user_tower.onnx` must be a user
/// tower: `model.onnx` copied there is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ann_refuses_a_scoring_model_as_user_tower() {
    let dir = copy_model(&fixtures().sas, "not-a-tower");
    let tower = dir.join("user_tower.onnx");
    std::fs::copy(dir.join("model.onnx"), &tower).unwrap();
    let cfg = config(&dir, Retrieval::Ann, SimilarMetric::Ip);
    let err = tokio::task::spawn_blocking(move || AppState::load(cfg))
        .await
        .unwrap()
        .expect_err("model.onnx is no user tower");
    let msg = err.to_string();
    assert!(
        msg.contains(&tower.display().to_string()) && msg.contains("not a user tower"),
        "{msg}"
    );
}

/// The value of the metric line `name value` in an exposition, if present.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_scoring_reports_recall_in_metrics() {
    let dir = copy_model(&fixtures().sas, "shadow");
    prebuilt_index(&dir);
    let exact = TestServer::start(config(&dir, Retrieval::Exact, SimilarMetric::Ip)).await;
    assert!(!exact
        .metrics_text()
        .await
        .contains("sasrec_ann_recall_at_k"));
    exact.shutdown().await;
    let mut cfg = config(&dir, Retrieval::Ann, SimilarMetric::Ip);
    cfg.retrieval.shadow_rate = 1.0;
    let srv = TestServer::start(cfg).await;
    let bodies = user_bodies(false, 10);
    batch(&srv, &bodies[..20]).await;
    let mut text = String::new();
    for _ in 0..100 {
        text = srv.metrics_text().await;
        if metric(&text, "sasrec_ann_shadow_total").is_some_and(|n| n >= 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shadowed = metric(&text, "sasrec_ann_shadow_total").unwrap_or(0.0);
    let dropped = metric(&text, "sasrec_ann_shadow_dropped_total").unwrap();
    assert!(shadowed >= 1.0 && shadowed + dropped <= 20.0, "{text}");
    let recall = metric(&text, "sasrec_ann_recall_at_k").unwrap();
    assert!((0.0..=1.0).contains(&recall), "{text}");
    assert!(recall >= 0.9, "the fixtures' recall is 1.0: {text}");
    srv.shutdown().await;
}
