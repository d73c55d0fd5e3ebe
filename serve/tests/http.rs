//! The server over real HTTP (reqwest against `127.0.0.1:0`), on models trained and exported
//! by the project's own binaries (see `common::fixtures`).

mod common;

use std::time::Duration;

use common::*;
use sasrec_serve::config::{BatchConfig, Device, SessionConfig};
use sasrec_serve::model::LoadedModel;
use sasrec_serve::{LoadError, ServeConfig};
use serde_json::json;

fn cfg(dir: &std::path::Path) -> ServeConfig {
    ServeConfig::new(dir)
}

/// Histories of the fixture users as raw ids (the first `n` events of each).
fn histories() -> Vec<Vec<(u64, i64)>> {
    user_events()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_matches_direct_onnx_run() {
    let f = fixtures();
    let srv = TestServer::start(cfg(&f.sas)).await;
    let users = histories();
    // Short, exactly maxlen, longer than maxlen (truncated), with and without exclusion.
    let cases: Vec<(Vec<u64>, usize, bool)> = vec![
        (users[0].iter().take(3).map(|e| e.0).collect(), 10, true),
        (users[1].iter().take(MAXLEN).map(|e| e.0).collect(), 5, true),
        (users[2].iter().map(|e| e.0).collect(), 128, true),
        (users[3].iter().map(|e| e.0).collect(), 7, false),
        (
            users[4]
                .iter()
                .map(|e| e.0)
                .chain(users[5].iter().map(|e| e.0))
                .collect(),
            1,
            true,
        ),
    ];
    assert!(
        cases[4].0.len() > MAXLEN,
        "need a history longer than maxlen"
    );
    for (hist, k, excl) in cases {
        let v = srv
            .post_ok(
                "/recommend",
                &json!({"history": hist, "k": k, "exclude_seen": excl}),
            )
            .await;
        let want = direct_topk(&f.sas, &hist, None, k, excl);
        assert_same(&pairs(&v), &want, 1e-6);
        if excl {
            assert!(pairs(&v).iter().all(|(i, _)| !hist.contains(i)));
            // Exactly k unless the exclusions leave fewer items (then all that are left).
            let map = items(&f.sas);
            let seen: std::collections::BTreeSet<u64> = hist
                .iter()
                .copied()
                .filter(|r| map.index_of(&r.to_string()).is_some())
                .collect();
            assert_eq!(pairs(&v).len(), k.min(map.len() - seen.len()));
        } else {
            assert_eq!(pairs(&v).len(), k);
        }
        assert!(v["model"].as_str().unwrap().starts_with("sasrec@"));
        assert_eq!(v["unknown_items"], json!([]));
    }
    srv.shutdown().await;
}

/// The answers equal the reference ranking (the graph's `scores` sorted host-side, ties to the
/// lower index) for every mix of `exclude_seen`, `exclude`, `candidates` and `k` — alone, and
/// together in one ONNX Runtime run (`/recommend/batch`), where the graph's `k` is the largest
/// `k + |exclude|` of the rows and each row drops its own exclusions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_the_reference_ranking_alone_and_batched() {
    let f = fixtures();
    let srv = TestServer::start(cfg(&f.sas)).await;
    let users = histories();
    let n_items = items(&f.sas).len();
    let raw = |u: usize, n: usize| -> Vec<u64> { users[u].iter().take(n).map(|e| e.0).collect() };
    let long: Vec<u64> = raw(4, usize::MAX)
        .into_iter()
        .chain(raw(5, usize::MAX))
        .collect();
    let other = raw(7, 6);
    // (history, exclude_seen, exclude, candidates, k)
    type Case = (Vec<u64>, bool, Vec<u64>, Option<Vec<u64>>, usize);
    let cases: Vec<Case> = vec![
        (raw(0, 3), true, vec![], None, 10),
        (long.clone(), true, other.clone(), None, 7),
        (long.clone(), false, other.clone(), None, 1),
        (raw(1, 12), false, vec![], None, 25),
        // k beyond what is left: every remaining item, best first.
        (raw(2, 15), true, other.clone(), None, n_items),
        (vec![], true, vec![], None, 3),
        (raw(3, 5), true, other[..2].to_vec(), Some(raw(6, 30)), 4),
        (raw(3, 5), false, vec![], Some(raw(6, 30)), n_items),
    ];
    let body = |(h, seen, ex, cand, k): &Case| {
        let mut b = json!({"history": h, "exclude_seen": seen, "exclude": ex, "k": k});
        if let Some(cand) = cand {
            b["candidates"] = json!(cand);
        }
        b
    };
    let want: Vec<Vec<(u64, f32)>> = cases
        .iter()
        .map(|(h, seen, ex, cand, k)| reference_ranking(&f.sas, h, *seen, ex, cand.as_deref(), *k))
        .collect();
    assert!(
        want[4].len() < n_items && want[4].len() > 50,
        "the k > items-left case must leave many items, not all: {}",
        want[4].len()
    );
    for (case, want) in cases.iter().zip(&want) {
        let v = srv.post_ok("/recommend", &body(case)).await;
        assert_same(&pairs(&v), want, 1e-6);
    }
    let batch: Vec<serde_json::Value> = cases.iter().map(body).collect();
    let v = srv
        .post_ok("/recommend/batch", &json!({"requests": batch}))
        .await;
    let got = v["responses"].as_array().unwrap();
    assert_eq!(got.len(), cases.len());
    for (g, want) in got.iter().zip(&want) {
        assert_same(&pairs(g), want, 1e-6);
    }
    srv.shutdown().await;
}

/// `candidates` ranks only those items and `exclude` removes items, by the same scores as the
/// full ranking; unknown ids in either are skipped and reported after the history's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_and_exclude_restrict_the_full_ranking() {
    let f = fixtures();
    let srv = TestServer::start(cfg(&f.sas)).await;
    let users = histories();
    let hist: Vec<u64> = users[0].iter().take(4).map(|e| e.0).collect();
    let all = direct_topk(&f.sas, &hist, None, items(&f.sas).len(), true);
    // Candidates: 6 ranked items spread over the ranking, a history item (excluded as seen)
    // and an unknown id; exclude: one candidate and an unknown id.
    let mut cands: Vec<serde_json::Value> = [3, 10, 25, 40, 60, 90]
        .iter()
        .map(|&r| json!(all[r].0))
        .collect();
    cands.push(json!(hist[0]));
    cands.push(json!("no-such-item"));
    let excluded = all[25].0;
    let v = srv
        .post_ok(
            "/recommend",
            &json!({"history": hist, "k": 4, "candidates": cands,
                    "exclude": [excluded, "gone"]}),
        )
        .await;
    let want: Vec<(u64, f32)> = [3, 10, 40, 60].iter().map(|&r| all[r]).collect();
    assert_same(&pairs(&v), &want, 1e-6);
    assert_eq!(v["unknown_items"], json!(["no-such-item", "gone"]));
    // k larger than what is left: the 5 remaining candidates, best first.
    let (_, v) = srv
        .post(
            "/recommend",
            &json!({"history": hist, "k": 20, "candidates": cands, "exclude": [excluded]}),
        )
        .await;
    let want: Vec<(u64, f32)> = [3, 10, 40, 60, 90].iter().map(|&r| all[r]).collect();
    assert_same(&pairs(&v), &want, 1e-6);
    // exclude alone: the full ranking without those items.
    let (_, v) = srv
        .post(
            "/recommend",
            &json!({"history": hist, "k": 5, "exclude": [all[0].0, all[2].0]}),
        )
        .await;
    let want: Vec<(u64, f32)> = [1, 3, 4, 5, 6].iter().map(|&r| all[r]).collect();
    assert_same(&pairs(&v), &want, 1e-6);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_aware_matches_direct_run_with_shared_time_intervals() {
    let f = fixtures();
    let srv = TestServer::start(cfg(&f.tis)).await;
    let users = histories();
    let mut reversed_checked = 0;
    // A history longer than maxlen (truncation; personal scale over the whole history): three
    // users one after the other, each shifted to start an hour after the previous one ended.
    let mut joined: Vec<(u64, i64)> = Vec::new();
    for u in &users[2..5] {
        let shift = joined.last().map_or(0, |l| l.1 + 3600 - u[0].1);
        joined.extend(u.iter().map(|&(i, t)| (i, t + shift)));
    }
    assert!(joined.len() > MAXLEN, "need a history longer than maxlen");
    let long = &joined;
    for ev in [&users[0], long] {
        let hist: Vec<u64> = ev.iter().map(|e| e.0).collect();
        let ts: Vec<i64> = ev.iter().map(|e| e.1).collect();
        let v = srv
            .post_ok(
                "/recommend",
                &json!({"history": hist, "timestamps": ts, "k": 10}),
            )
            .await;
        assert!(v["model"].as_str().unwrap().starts_with("tisasrec@"));
        let want = direct_topk(&f.tis, &hist, Some(&ts), 10, true);
        assert_same(&pairs(&v), &want, 1e-6);

        // Out-of-order input is sorted by timestamp (stable), as training does.
        let mut rev: Vec<(u64, i64)> = ev.clone();
        rev.reverse();
        let v2 = srv
            .post_ok(
                "/recommend",
                &json!({"history": rev.iter().map(|e| e.0).collect::<Vec<_>>(),
                    "timestamps": rev.iter().map(|e| e.1).collect::<Vec<_>>(), "k": 10}),
            )
            .await;
        // Equal timestamps keep input order, so only compare when all are distinct.
        let mut distinct = ts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() == ts.len() {
            assert_same(&pairs(&v2), &want, 1e-6);
            reversed_checked += 1;
        }
    }
    assert!(
        reversed_checked > 0,
        "no history with distinct timestamps to reverse"
    );
    // Intervals matter: shifting one gap changes the scores.
    let ev = long;
    let hist: Vec<u64> = ev.iter().map(|e| e.0).collect();
    let mut ts: Vec<i64> = ev.iter().map(|e| e.1).collect();
    let unshifted = direct_topk(&f.tis, &hist, Some(&ts), 10, true);
    let n = ts.len();
    for t in &mut ts[n - 3..] {
        *t += 30 * 86_400;
    }
    let (_, v3) = srv
        .post(
            "/recommend",
            &json!({"history": hist, "timestamps": ts, "k": 10}),
        )
        .await;
    let shifted = pairs(&v3);
    assert_same(
        &shifted,
        &direct_topk(&f.tis, &hist, Some(&ts), 10, true),
        1e-6,
    );
    let moved = shifted
        .iter()
        .zip(&unshifted)
        .any(|(a, b)| a.0 != b.0 || (a.1 - b.1).abs() > 1e-4);
    assert!(
        moved,
        "a 30-day gap before the last 3 events left the top-10 unchanged: {shifted:?}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_error_body() {
    let f = fixtures();
    let mut c_sas = cfg(&f.sas);
    c_sas.body_limit = 4096;
    let sas = TestServer::start(c_sas).await;
    let tis = TestServer::start(cfg(&f.tis)).await;
    let c = &sas.client;
    let item = user_events()[0][0].0;
    let cases: Vec<(&str, &TestServer, serde_json::Value, u16, &str)> = vec![
        (
            "k = 0",
            &sas,
            json!({"history": [item], "k": 0}),
            422,
            "invalid_k",
        ),
        (
            "k > items",
            &sas,
            json!({"history": [item], "k": 129}),
            422,
            "invalid_k",
        ),
        (
            "k < 0",
            &sas,
            json!({"history": [item], "k": -3}),
            422,
            "invalid_k",
        ),
        (
            "k string",
            &sas,
            json!({"history": [item], "k": "5"}),
            422,
            "invalid_request",
        ),
        (
            "k float",
            &sas,
            json!({"history": [item], "k": 2.5}),
            422,
            "invalid_request",
        ),
        (
            "history missing",
            &sas,
            json!({"k": 5}),
            422,
            "invalid_request",
        ),
        (
            "candidates empty",
            &sas,
            json!({"history": [item], "candidates": []}),
            422,
            "invalid_candidates",
        ),
        (
            "candidate null",
            &sas,
            json!({"history": [item], "candidates": [item, null]}),
            422,
            "invalid_candidates",
        ),
        (
            "candidates not a list",
            &sas,
            json!({"history": [item], "candidates": "x"}),
            422,
            "invalid_request",
        ),
        (
            "exclude object",
            &sas,
            json!({"history": [item], "exclude": [{"a": 1}]}),
            422,
            "invalid_exclude",
        ),
        (
            "history not a list",
            &sas,
            json!({"history": "abc"}),
            422,
            "invalid_request",
        ),
        (
            "history entry null",
            &sas,
            json!({"history": [item, null]}),
            422,
            "invalid_history",
        ),
        (
            "history entry object",
            &sas,
            json!({"history": [{"id": 1}]}),
            422,
            "invalid_history",
        ),
        (
            "unknown field",
            &sas,
            json!({"history": [item], "exclude_Seen": false}),
            422,
            "invalid_request",
        ),
        (
            "exclude_seen not bool",
            &sas,
            json!({"history": [item], "exclude_seen": "no"}),
            422,
            "invalid_request",
        ),
        ("not an object", &sas, json!([1, 2]), 400, "invalid_json"),
        (
            "mismatched lengths",
            &sas,
            json!({"history": [item, item], "timestamps": [1]}),
            422,
            "length_mismatch",
        ),
        (
            "missing timestamps (time-aware)",
            &tis,
            json!({"history": [item]}),
            422,
            "missing_timestamps",
        ),
        (
            "mismatched lengths (time-aware)",
            &tis,
            json!({"history": [item], "timestamps": [1, 2]}),
            422,
            "length_mismatch",
        ),
        (
            "float timestamps",
            &tis,
            json!({"history": [item], "timestamps": [1.5]}),
            422,
            "invalid_request",
        ),
        (
            "batch: not a list",
            &sas,
            json!({"requests": 3}),
            422,
            "invalid_request",
        ),
    ];
    for (name, srv, body, status, code) in cases {
        let path = if name.starts_with("batch") {
            "/recommend/batch"
        } else {
            "/recommend"
        };
        let (st, v) = srv.post(path, &body).await;
        assert_eq!(st, status, "{name}: {v}");
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().is_empty(),
            "{name}"
        );
    }
    // Raw bodies: bad JSON, wrong content type, oversized, wrong route and method.
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut r = c.post(sas.url("/recommend")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let check = |r: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(r.status().as_u16(), status);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
    };
    check(
        raw("{\"history\": [1", Some("application/json"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    check(
        raw("", Some("application/json")).send().await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    check(
        raw("{\"history\": [1]}", None).send().await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    check(
        raw("{\"history\": [1]}", Some("text/plain"))
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let big = format!("{{\"history\": [{}]}}", vec!["1"; 5000].join(","));
    let r = c
        .post(sas.url("/recommend"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    check(r, 413, "payload_too_large").await;
    check(
        c.get(sas.url("/nope")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        c.get(sas.url("/recommend")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    // The server still answers after all that.
    sas.post_ok("/recommend", &json!({"history": [item]})).await;
    sas.shutdown().await;
    tis.shutdown().await;
}

/// A body that is JSON but not an object is a 400 `invalid_json` on every endpoint that takes
/// an object, although serde would read the struct from a JSON array of its fields in order
/// (`[[1, 2, 3]]` as `{"history": [1, 2, 3]}`, `[[{...}]]` as `{"requests": [{...}]}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_that_are_not_objects_are_invalid_json() {
    let srv = TestServer::start(cfg(&fixtures().sas)).await;
    let item = user_events()[0][0].0;
    let as_fields = [
        ("/recommend", json!([[1, 2, 3]])),
        ("/recommend", json!([[item], null, 5])),
        ("/recommend/batch", json!([[{"history": [item]}]])),
    ];
    let others = ["/recommend", "/recommend/batch"]
        .into_iter()
        .flat_map(|path| {
            [
                json!([1]),
                json!([]),
                json!("history"),
                json!(7),
                json!(true),
                json!(null),
            ]
            .map(|body| (path, body))
        });
    for (path, body) in as_fields.into_iter().chain(others) {
        let (st, v) = srv.post(path, &body).await;
        assert_eq!(st, 400, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_json", "{path} {body}: {v}");
    }
    // A batch entry that is not an object is the request's shape at fault (422), named.
    for entry in [json!([[item]]), json!(7)] {
        let (st, v) = srv
            .post(
                "/recommend/batch",
                &json!({"requests": [{"history": [item]}, entry]}),
            )
            .await;
        assert_eq!(st, 422, "{entry}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{entry}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("requests[1] must be a JSON object"), "{msg}");
    }
    // The object forms of the same requests are answered.
    srv.post_ok("/recommend", &json!({"history": [1, 2, 3]}))
        .await;
    srv.post_ok(
        "/recommend/batch",
        &json!({"requests": [{"history": [item]}]}),
    )
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_unknown_histories_are_answered() {
    let f = fixtures();
    let srv = TestServer::start(cfg(&f.sas)).await;
    let empty = srv.post_ok("/recommend", &json!({"history": []})).await;
    assert_eq!(pairs(&empty).len(), 10);
    assert_same(
        &pairs(&empty),
        &direct_topk(&f.sas, &[], None, 10, true),
        1e-6,
    );
    // Only unknown ids (numbers and strings): same ranking as empty, all reported once.
    let v = srv
        .post_ok(
            "/recommend",
            &json!({"history": [999_999, "nope", 1.5, "nope", -3]}),
        )
        .await;
    assert_eq!(v["unknown_items"], json!([999_999, "nope", 1.5, -3]));
    assert_same(&pairs(&v), &pairs(&empty), 0.0);
    // A known id given as a string works like the number.
    let item = user_events()[0][0].0;
    let (_, a) = srv.post("/recommend", &json!({"history": [item]})).await;
    let (_, b) = srv
        .post("/recommend", &json!({"history": [item.to_string()]}))
        .await;
    assert_eq!(a["items"], b["items"]);
    // Time-aware model, empty history with empty timestamps.
    let tis = TestServer::start(cfg(&f.tis)).await;
    let v = tis
        .post_ok("/recommend", &json!({"history": [], "timestamps": []}))
        .await;
    assert_same(
        &pairs(&v),
        &direct_topk(&f.tis, &[], Some(&[]), 10, true),
        1e-6,
    );
    srv.shutdown().await;
    tis.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_endpoint_answers_per_entry() {
    let f = fixtures();
    let mut conf = cfg(&f.sas);
    conf.max_batch_requests = 8;
    let srv = TestServer::start(conf).await;
    let users = histories();
    let reqs: Vec<serde_json::Value> = (0..5)
        .map(|u| json!({"history": users[u].iter().map(|e| e.0).collect::<Vec<_>>(), "k": 3 + u}))
        .collect();
    let mut batch = reqs.clone();
    batch.insert(2, json!({"history": [1], "k": 0}));
    let v = srv
        .post_ok("/recommend/batch", &json!({"requests": batch}))
        .await;
    let responses = v["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 6);
    assert_eq!(responses[2]["error"]["code"], "invalid_k");
    let ok: Vec<&serde_json::Value> = responses
        .iter()
        .filter(|r| r.get("error").is_none())
        .collect();
    for (r, req) in ok.iter().zip(&reqs) {
        let (_, single) = srv.post("/recommend", req).await;
        assert_same(&pairs(r), &pairs(&single), 1e-5);
    }
    let (st, v) = srv.post("/recommend/batch", &json!({"requests": []})).await;
    assert_eq!((st, v), (200, json!({"responses": []})));
    let too_many = vec![json!({"history": []}); 9];
    let (st, v) = srv
        .post("/recommend/batch", &json!({"requests": too_many}))
        .await;
    assert_eq!(st, 422);
    assert_eq!(v["error"]["code"], "too_many_requests_in_batch");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers() {
    let f = fixtures();
    let mut conf = cfg(&f.tis);
    conf.batch = BatchConfig {
        max_batch_size: 16,
        max_queue_delay: Duration::from_millis(3),
        max_queue: 1024,
        workers: 2,
    };
    let srv = TestServer::start(conf).await;
    let users = histories();
    let reqs: Vec<serde_json::Value> = (0..64)
        .map(|n| {
            let ev = &users[n % users.len()];
            // Different prefixes and k, so that every request has its own answer.
            let len = 1 + (n * 7) % ev.len();
            json!({"history": ev[..len].iter().map(|e| e.0).collect::<Vec<_>>(),
                   "timestamps": ev[..len].iter().map(|e| e.1).collect::<Vec<_>>(),
                   "k": 1 + n % 12})
        })
        .collect();
    let mut expected = Vec::new();
    for r in &reqs {
        expected.push(srv.post_ok("/recommend", r).await);
    }
    let tasks: Vec<_> = reqs
        .iter()
        .cloned()
        .map(|r| {
            let c = srv.client.clone();
            let url = srv.url("/recommend");
            tokio::spawn(async move { post(&c, &url, &r).await })
        })
        .collect();
    for (t, want) in tasks.into_iter().zip(&expected) {
        let (st, got) = t.await.unwrap();
        assert_eq!(st, 200);
        // Batched runs may differ from batch-1 runs in the last float bits.
        assert_same(&pairs(&got), &pairs(want), 1e-5);
    }
    // Some runs held more than one row.
    let m = srv.metrics_text().await;
    let get = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap()
            .parse()
            .unwrap()
    };
    let (sum, count) = (get("sasrec_batch_size_sum"), get("sasrec_batch_size_count"));
    assert!(
        sum > count,
        "no batch larger than 1: sum {sum}, count {count}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after() {
    let f = fixtures();
    let mut conf = cfg(&f.tis);
    conf.max_batch_requests = 4000;
    conf.body_limit = 8 << 20;
    conf.batch = BatchConfig {
        max_batch_size: 1,
        max_queue_delay: Duration::ZERO,
        max_queue: 1,
        workers: 1,
    };
    let srv = TestServer::start(conf).await;
    let c = &srv.client;
    let ev = &histories()[0];
    let one = json!({"history": ev.iter().map(|e| e.0).collect::<Vec<_>>(),
                     "timestamps": ev.iter().map(|e| e.1).collect::<Vec<_>>()});
    // Keep the only worker busy with 3000 one-row runs, then knock.
    let big = json!({"requests": vec![one.clone(); 3000]});
    let c2 = c.clone();
    let url = srv.url("/recommend/batch");
    let busy = tokio::spawn(async move { post(&c2, &url, &big).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let knocks: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            let url = srv.url("/recommend");
            let one = one.clone();
            tokio::spawn(async move { c.post(&url).json(&one).send().await.unwrap() })
        })
        .collect();
    let mut rejected = 0;
    for k in knocks {
        let r = k.await.unwrap();
        if r.status().as_u16() == 503 {
            assert_eq!(r.headers()["retry-after"], "1");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "overloaded");
            rejected += 1;
        } else {
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    let (st, v) = busy.await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(v["responses"].as_array().unwrap().len(), 3000);
    assert!(rejected >= 1, "no request was refused");
    let m = srv.metrics_text().await;
    assert!(m.contains("sasrec_rejected_total"), "{m}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_model_and_keeps_the_old_one_on_failure() {
    let f = fixtures();
    let live = f.root.join("live-reload");
    std::fs::create_dir_all(&live).unwrap();
    for n in ["model.onnx", "items.tsv"] {
        std::fs::copy(f.sas.join(n), live.join(n)).unwrap();
    }
    let mut conf = cfg(&live);
    conf.auth_token = Some("s3cret".into());
    let srv = TestServer::start(conf).await;
    let c = &srv.client;
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("s3cret");
    let item = user_events()[0][0].0;
    let body = json!({"history": [item], "timestamps": [978_300_000]});
    let ask = || async {
        let r = auth(c.post(srv.url("/recommend")).json(&body))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json::<serde_json::Value>().await.unwrap())
    };
    let (_, before) = ask().await;
    let old_id = before["model"].as_str().unwrap().to_string();
    assert!(old_id.starts_with("sasrec@"));

    // Failure: a broken file on disk; 500 reload_failed, the old model keeps serving.
    std::fs::write(live.join("model.onnx"), b"not an onnx file").unwrap();
    let r = auth(c.post(srv.url("/v1/model/reload")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_error(&v, "reload_failed", "model.onnx");
    let (st, after_fail) = ask().await;
    assert_eq!(st, 200);
    assert_eq!(after_fail, before);

    // Success: a different model (TiSASRec) appears on disk.
    for n in ["model.onnx", "items.tsv"] {
        std::fs::copy(f.tis.join(n), live.join(n)).unwrap();
    }
    let r = auth(c.post(srv.url("/v1/model/reload")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["previous"], old_id.as_str());
    assert!(v["model"].as_str().unwrap().starts_with("tisasrec@"));
    let (st, after) = ask().await;
    assert_eq!(st, 200);
    assert_eq!(after["model"], v["model"]);
    let info = srv.get_json("/v1/model").await;
    assert_eq!(info["time_aware"], true);
    let m = srv.metrics_text().await;
    assert!(
        m.contains("sasrec_model_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sasrec_model_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_recommend_and_reload_only() {
    let f = fixtures();
    let mut conf = cfg(&f.sas);
    conf.auth_token = Some("tok".into());
    let srv = TestServer::start(conf).await;
    let c = &srv.client;
    let body = json!({"history": []});
    for path in ["/recommend", "/recommend/batch", "/v1/model/reload"] {
        let b = if path == "/recommend/batch" {
            json!({"requests": []})
        } else {
            body.clone()
        };
        for token in [None, Some("wrong"), Some("tokk")] {
            let mut r = c.post(srv.url(path)).json(&b);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path} {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    let r = c
        .post(srv.url("/recommend"))
        .bearer_auth("tok")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/model",
        "/openapi.json",
    ] {
        assert_eq!(
            c.get(srv.url(path)).send().await.unwrap().status().as_u16(),
            200,
            "{path}"
        );
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints() {
    let f = fixtures();
    let srv = TestServer::start(cfg(&f.tis)).await;
    let c = &srv.client;
    let get = |p: &str| c.get(srv.url(p)).send();
    let v: serde_json::Value = get("/healthz").await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"status": "ok"}));
    let v: serde_json::Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "ready");
    let info: serde_json::Value = get("/v1/model").await.unwrap().json().await.unwrap();
    assert_eq!(info["kind"], "tisasrec");
    assert_eq!(info["maxlen"], 20);
    assert_eq!(info["num_items"], items(&f.tis).len());
    assert_eq!(info["intervals"], json!({"unit": "personal", "span": 32}));
    assert_eq!(info["device"], "cpu");
    assert_eq!(info["metadata"]["kind"], "tisasrec");
    assert_eq!(v["model"], info["id"]);
    let doc: serde_json::Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut documented = 0;
    for (p, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            // Every documented route is served with its method: not 404 `not_found`, not 405.
            let r = c
                .request(m.to_uppercase().parse().unwrap(), srv.url(p))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert!(status != 404 && status != 405, "{m} {p}: {status}");
            documented += 1;
        }
    }
    assert_eq!(documented, sasrec_serve::routes::routes().len());
    let r = get("/metrics").await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics"));
    let m = r.text().await.unwrap();
    for name in [
        "sasrec_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}",
        "sasrec_http_request_duration_seconds_bucket",
        "sasrec_queue_depth",
        "sasrec_batch_size_bucket",
        "sasrec_inference_duration_seconds",
        "sasrec_model_info{model=\"tisasrec@",
    ] {
        assert!(m.contains(name), "{name} missing in\n{m}");
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_requests() {
    let f = fixtures();
    let mut conf = cfg(&f.tis);
    conf.max_batch_requests = 2000;
    conf.body_limit = 8 << 20;
    conf.batch.max_batch_size = 1;
    let mut srv = TestServer::start(conf).await;
    let c = srv.client.clone();
    let ev = &histories()[1];
    let one = json!({"history": ev.iter().map(|e| e.0).collect::<Vec<_>>(),
                     "timestamps": ev.iter().map(|e| e.1).collect::<Vec<_>>()});
    let url = srv.url("/recommend/batch");
    let c2 = c.clone();
    let body = json!({"requests": vec![one; 1500]});
    let in_flight = tokio::spawn(async move { post(&c2, &url, &body).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = srv.state.clone();
    let done = srv.trigger_shutdown();
    let (st, v) = in_flight.await.unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["responses"].as_array().unwrap().len(), 1500);
    done.await.unwrap().unwrap();
    assert!(state.is_shutting_down());
    // Nothing listens any more.
    assert!(c.get(srv.url("/healthz")).send().await.is_err());
}

#[test]
fn loading_errors_are_clear() {
    let f = fixtures();
    let m = std::sync::Arc::new(sasrec_serve::metrics::Metrics::new());
    let s = ServeConfig::new("m").session;
    let b = ServeConfig::new("m").batch;
    let err = |p: &std::path::Path, s: &SessionConfig| {
        LoadedModel::load(p, s, &b, m.clone()).unwrap_err()
    };
    let e = err(&f.root.join("nope"), &s);
    assert!(matches!(e, LoadError::Path { .. }), "{e}");
    let e = err(&f.root, &s).to_string();
    assert!(e.contains("no model.onnx"), "{e}");
    let lone = f.root.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(f.sas.join("model.onnx"), lone.join("m.onnx")).unwrap();
    let e = err(&lone.join("m.onnx"), &s).to_string();
    assert!(e.contains("items.tsv"), "{e}");
    // An item map of the wrong size.
    std::fs::write(lone.join("items.tsv"), "index\traw_id\n1\ta\n").unwrap();
    let e = err(&lone.join("m.onnx"), &s).to_string();
    assert!(e.contains("1 items but the model scores"), "{e}");
    // A .onnx file path works as well as the directory.
    let ok = LoadedModel::load(&f.sas.join("model.onnx"), &s, &b, m.clone()).unwrap();
    assert_eq!(ok.info().kind.as_str(), "sasrec");
    // The runtime library.
    let e =
        sasrec_serve::runtime::resolve_dylib(Some(std::path::Path::new("/no/libonnxruntime.so")))
            .unwrap_err()
            .to_string();
    assert!(e.contains("--ort_lib /no/libonnxruntime.so"), "{e}");
}

#[test]
fn cuda_request_falls_back_to_cpu_unless_strict() {
    use ort::ep::ExecutionProvider;
    let f = fixtures();
    let m = std::sync::Arc::new(sasrec_serve::metrics::Metrics::new());
    let b = ServeConfig::new("m").batch;
    let mut s = SessionConfig {
        device: Device::Cuda,
        ..ServeConfig::new("m").session
    };
    let model = LoadedModel::load(&f.sas, &s, &b, m.clone()).unwrap();
    // Make sure the runtime is loaded before asking it about CUDA.
    let cuda = ort::ep::CUDA::is_available().unwrap_or(false);
    s.strict_device = true;
    let strict = LoadedModel::load(&f.sas, &s, &b, m);
    if cuda {
        // Where ONNX Runtime has the CUDA provider, the request is honoured, strict or not.
        assert_eq!(model.info().device, "cuda");
        assert_eq!(strict.unwrap().info().device, "cuda");
    } else {
        assert_eq!(model.info().device, "cpu");
        let e = strict.unwrap_err();
        assert!(matches!(e, LoadError::Device(_)), "{e}");
        assert!(e.to_string().contains("CUDA"), "{e}");
    }
}
