//! `POST /v1/model/reload` under load: concurrent clients on `127.0.0.1:0` while the model on
//! disk is replaced by broken ones (reload refused, the old model keeps serving) and by good
//! ones (SASRec and TiSASRec in turn). Guarantees: no request fails, and every answer whose
//! request ran entirely between two reloads names the model the last successful reload
//! installed.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sasrec_serve::ServeConfig;
use serde_json::{json, Value};

const CLIENTS: usize = 8;
const CYCLES: usize = 4;

/// Puts a broken model in the live directory.
type Breaker<'a> = Box<dyn Fn(&Path) + 'a>;

/// Writes `bytes` to `path` atomically (a reload never sees a half-written file).
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn install(from: &Path, live: &Path) {
    for n in ["items.tsv", "model.onnx"] {
        replace(&live.join(n), &std::fs::read(from.join(n)).unwrap());
    }
}

/// What the clients and the reloader share.
#[derive(Default)]
struct Shared {
    /// Even: no reload running; odd: a reload may be swapping the model.
    epoch: AtomicU64,
    /// The model id expected in epoch `2n`, at index n.
    expected: Mutex<Vec<String>>,
    /// Answers checked against `expected`, per stable epoch.
    checked: Mutex<Vec<u64>>,
    stop: AtomicBool,
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    wrong_model: Mutex<Vec<String>>,
}

async fn client_loop(url: String, body: Value, shared: Arc<Shared>) {
    let c = client();
    while !shared.stop.load(Ordering::SeqCst) {
        let e0 = shared.epoch.load(Ordering::SeqCst);
        let r = c.post(&url).json(&body).send().await;
        let answer = match r {
            Ok(r) => {
                let st = r.status().as_u16();
                match r.text().await {
                    Ok(t) if st == 200 => serde_json::from_str::<Value>(&t)
                        .map_err(|e| format!("200 with a bad body ({e}): {t}")),
                    Ok(t) => Err(format!("status {st}: {t}")),
                    Err(e) => Err(format!("status {st}, body lost: {e}")),
                }
            }
            Err(e) => Err(format!("no answer: {e}")),
        };
        let e1 = shared.epoch.load(Ordering::SeqCst);
        match answer {
            Err(why) => shared.failed.lock().unwrap().push(why),
            Ok(v) => {
                shared.ok.fetch_add(1, Ordering::SeqCst);
                if pairs(&v).len() != 5 {
                    shared
                        .failed
                        .lock()
                        .unwrap()
                        .push(format!("not 5 items: {v}"));
                }
                if e0 == e1 && e0 & 1 == 0 {
                    let n = (e0 / 2) as usize;
                    let want = shared.expected.lock().unwrap()[n].clone();
                    if v["model"] != want.as_str() {
                        shared.wrong_model.lock().unwrap().push(format!(
                            "epoch {e0}: answered by {}, expected {want}",
                            v["model"]
                        ));
                    }
                    shared.checked.lock().unwrap()[n] += 1;
                }
            }
        }
    }
}

/// Waits until at least one answer of the current stable epoch was checked.
async fn await_checked_answer(shared: &Shared) {
    let n = (shared.epoch.load(Ordering::SeqCst) / 2) as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared.checked.lock().unwrap()[n] == 0 {
        assert!(Instant::now() < deadline, "no answer in epoch {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_answers_with_the_new_model() {
    let f = fixtures();
    let live = f.root.join("live-reload-under-load");
    let _ = std::fs::remove_dir_all(&live);
    std::fs::create_dir_all(&live).unwrap();
    install(&f.sas, &live);
    let srv = TestServer::start(ServeConfig::new(&live)).await;
    let first = srv.state.model().id().to_string();
    assert!(first.starts_with("sasrec@"), "{first}");

    let shared = Arc::new(Shared::default());
    shared.expected.lock().unwrap().push(first.clone());
    shared.checked.lock().unwrap().push(0);
    // Valid for both models: TiSASRec needs the timestamps, SASRec orders by them.
    let ev = &user_events()[0];
    let body = json!({
        "history": ev.iter().map(|e| e.0).collect::<Vec<_>>(),
        "timestamps": ev.iter().map(|e| e.1).collect::<Vec<_>>(),
        "k": 5,
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client_loop(
                srv.url("/recommend"),
                body.clone(),
                shared.clone(),
            ))
        })
        .collect();
    await_checked_answer(&shared).await;

    let good_onnx = std::fs::read(f.sas.join("model.onnx")).unwrap();
    let good_items = std::fs::read_to_string(f.sas.join("items.tsv")).unwrap();
    let one_item_short: String = {
        let lines: Vec<&str> = good_items.lines().collect();
        lines[..lines.len() - 1].join("\n") + "\n"
    };
    let broken: Vec<(&str, Breaker)> = vec![
        (
            "model.onnx is not ONNX",
            Box::new(|d: &Path| replace(&d.join("model.onnx"), b"not an onnx file")),
        ),
        (
            "model.onnx cut in half",
            Box::new(|d: &Path| replace(&d.join("model.onnx"), &good_onnx[..good_onnx.len() / 2])),
        ),
        (
            "model.onnx missing",
            Box::new(|d: &Path| std::fs::remove_file(d.join("model.onnx")).unwrap()),
        ),
        (
            "items.tsv one item short",
            Box::new(|d: &Path| {
                replace(&d.join("model.onnx"), &good_onnx);
                replace(&d.join("items.tsv"), one_item_short.as_bytes())
            }),
        ),
        (
            "items.tsv malformed",
            Box::new(|d: &Path| replace(&d.join("items.tsv"), b"index\traw_id\n1\ta\n3\tb\n")),
        ),
    ];

    let reload = || async {
        let r = srv
            .client
            .post(srv.url("/v1/model/reload"))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json::<Value>().await.unwrap())
    };
    let (mut ok_reloads, mut failed_reloads) = (0u64, 0u64);
    let mut current = first.clone();
    let mut ids_seen = vec![first.clone()];
    for cycle in 0..CYCLES {
        for (what, breakit) in &broken {
            breakit(&live);
            shared.epoch.fetch_add(1, Ordering::SeqCst);
            let (st, v) = reload().await;
            shared.expected.lock().unwrap().push(current.clone());
            shared.checked.lock().unwrap().push(0);
            shared.epoch.fetch_add(1, Ordering::SeqCst);
            assert_eq!(st, 500, "{what}: {v}");
            assert_eq!(v["error"]["code"], "reload_failed", "{what}: {v}");
            failed_reloads += 1;
            await_checked_answer(&shared).await;
        }
        // A good model: TiSASRec, then SASRec, in turn.
        let next = if cycle % 2 == 0 { &f.tis } else { &f.sas };
        install(next, &live);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        let (st, v) = reload().await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["previous"], current.as_str(), "{v}");
        let new_id = v["model"].as_str().unwrap().to_string();
        let kind = if cycle % 2 == 0 {
            "tisasrec@"
        } else {
            "sasrec@"
        };
        assert!(new_id.starts_with(kind), "{new_id}");
        shared.expected.lock().unwrap().push(new_id.clone());
        shared.checked.lock().unwrap().push(0);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        ok_reloads += 1;
        current = new_id;
        if !ids_seen.contains(&current) {
            ids_seen.push(current.clone());
        }
        await_checked_answer(&shared).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    for t in clients {
        t.await.unwrap();
    }

    let failed = shared.failed.lock().unwrap().clone();
    let wrong = shared.wrong_model.lock().unwrap().clone();
    let ok = shared.ok.load(Ordering::SeqCst);
    let checked: u64 = shared.checked.lock().unwrap().iter().sum();
    println!(
        "reload under load: clients={CLIENTS} reloads={} (ok {ok_reloads}, refused \
         {failed_reloads}) requests_ok={ok} failed={} checked_model_id={checked} wrong_model={}",
        ok_reloads + failed_reloads,
        failed.len(),
        wrong.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(ids_seen.len(), 2, "{ids_seen:?}");
    assert!(
        shared.checked.lock().unwrap().iter().all(|&n| n > 0),
        "an epoch without a checked answer"
    );
    let m = srv.metrics_text().await;
    assert!(
        m.contains(&format!(
            "sasrec_model_reloads_total{{result=\"ok\"}} {ok_reloads}\n"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "sasrec_model_reloads_total{{result=\"error\"}} {failed_reloads}\n"
        )),
        "{m}"
    );
    assert_eq!(srv.state.model().id(), current);
    srv.shutdown().await;
}
