//! Runs through the I/O binding ([`sasrec_serve::session::run_bound`], the server's only run
//! path) against a plain `Session::run` on the same inputs, and (ignored: needs a GPU) the
//! server on the CUDA execution provider against the CPU one.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use ort::value::Tensor;
use sasrec_serve::session::run_bound;
use sasrec_shared::run::onnx_io::{EXCLUDE, K, SCORES, SEQ, TIME_MATRIX, TOPK_ITEMS, TOPK_SCORES};
use sasrec_shared::time::{left_pad, time_codes};
use serde_json::json;

/// Host data of one batch: the windows of the first `rows` fixture users, each row excluding
/// its two newest items, `k` = 10.
struct Batch {
    rows: usize,
    seq: Vec<i64>,
    time_matrix: Option<Vec<i64>>,
    exclude: Vec<i64>,
}

const EXCLUDED: usize = 2;
const TOP: i64 = 10;

fn batch(dir: &Path, rows: usize, time_aware: bool) -> Batch {
    let map = items(dir);
    let (t, mut seq, mut tm, mut exclude) = (MAXLEN, Vec::new(), Vec::new(), Vec::new());
    for events in user_events().iter().take(rows) {
        let hist: Vec<u64> = events.iter().map(|e| e.0).collect();
        let ts: Vec<i64> = events.iter().map(|e| e.1).collect();
        let (known, ts) = known_indices(&map, &hist, Some(&ts));
        let mut row = vec![0i64; t];
        left_pad(&known, 0i64, &mut row);
        seq.extend_from_slice(&row);
        let mut m = vec![0i32; t * t];
        INTERVALS.window_matrix(&time_codes(INTERVALS.unit, &ts), t, &mut m);
        tm.extend(m.into_iter().map(i64::from));
        exclude.extend_from_slice(&row[t - EXCLUDED..]);
    }
    Batch {
        rows,
        seq,
        time_matrix: time_aware.then_some(tm),
        exclude,
    }
}

fn inputs(b: &Batch) -> Vec<(&'static str, Tensor<i64>)> {
    let t = MAXLEN;
    let mut v = vec![
        (
            SEQ,
            Tensor::from_array(([b.rows, t], b.seq.clone())).unwrap(),
        ),
        (
            EXCLUDE,
            Tensor::from_array(([b.rows, EXCLUDED], b.exclude.clone())).unwrap(),
        ),
        (K, Tensor::from_array(([1usize], vec![TOP])).unwrap()),
    ];
    if let Some(m) = &b.time_matrix {
        v.push((
            TIME_MATRIX,
            Tensor::from_array(([b.rows, t, t], m.clone())).unwrap(),
        ));
    }
    v
}

/// `(topk_scores, topk_items, scores)` as fetched.
type Fetched = (Vec<f32>, Vec<i64>, Option<Vec<f32>>);

fn fetched(out: &ort::session::SessionOutputs<'_>) -> Fetched {
    let f32s = |name: &str| out[name].try_extract_tensor::<f32>().unwrap().1.to_vec();
    (
        f32s(TOPK_SCORES),
        out[TOPK_ITEMS]
            .try_extract_tensor::<i64>()
            .unwrap()
            .1
            .to_vec(),
        out.get(SCORES).map(|_| f32s(SCORES)),
    )
}

#[test]
fn bound_run_equals_plain_run_and_fetches_scores_only_when_asked() {
    let f = fixtures();
    for (dir, time_aware) in [(&f.sas, false), (&f.tis, true)] {
        let b = batch(dir, 8, time_aware);
        let mut s = direct_session(&dir.join("model.onnx"));
        let plain = {
            let out = s.run(inputs(&b)).unwrap();
            assert_eq!(out.len(), 3, "a plain run fetches every output");
            fetched(&out)
        };
        let bound = |s: &mut ort::session::Session, fetch: &[&str]| {
            run_bound(s, &inputs(&b), fetch, |out| {
                let keys: Vec<&str> = out.keys().collect();
                assert_eq!(keys, fetch, "exactly the bound outputs come back");
                Ok(fetched(out))
            })
            .unwrap()
        };
        let all = bound(&mut s, &[TOPK_SCORES, TOPK_ITEMS, SCORES]);
        let top = bound(&mut s, &[TOPK_SCORES, TOPK_ITEMS]);
        // Bit for bit, −∞ and all: the same kernels on the same inputs.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for got in [&all, &top] {
            assert_eq!(bits(&got.0), bits(&plain.0), "{}", dir.display());
            assert_eq!(got.1, plain.1, "{}", dir.display());
        }
        assert_eq!(plain.0.len(), b.rows * TOP as usize);
        assert_eq!(
            bits(all.2.as_deref().unwrap()),
            bits(plain.2.as_deref().unwrap())
        );
        assert_eq!(top.2, None, "`scores` is not fetched unless bound");
        // The exclusions reached the graph through the binding.
        for (r, got) in top.1.chunks(TOP as usize).enumerate() {
            let banned = &b.exclude[r * EXCLUDED..(r + 1) * EXCLUDED];
            assert!(got.iter().all(|i| !banned.contains(i) || *i == 0));
        }
    }
}

#[test]
fn bound_run_reports_a_missing_input_as_an_error() {
    let f = fixtures();
    let b = batch(&f.sas, 2, false);
    let mut s = direct_session(&f.sas.join("model.onnx"));
    let mut partial = inputs(&b);
    partial.retain(|(name, _)| *name != K);
    let err = run_bound(&mut s, &partial, &[TOPK_SCORES], |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("ONNX Runtime"), "{err}");
}

/// A `sasrec-serve` process and the log lines it printed up to "listening".
struct Process {
    child: Child,
    addr: String,
    log: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server binary on `127.0.0.1:0` and waits until it listens.
fn spawn_server(model: &Path, device: &[&str]) -> Process {
    let mut child = Command::new(bin("sasrec-serve"))
        .arg("--model")
        .arg(model)
        .args(["--addr", "127.0.0.1:0"])
        .args(device)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "sasrec_serve=info,ort=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening") {
            let at = line.rfind("127.0.0.1:").expect("address in the log");
            let addr: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return Process { child, addr, log };
        }
    }
    let out = child.wait_with_output().unwrap();
    panic!(
        "sasrec-serve {device:?} exited before listening ({}):\n{log}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scores equal position by position within `tol`; items equal where the neighbours' scores
/// are not within `tol` of each other (a near-tie may swap order across providers).
fn assert_close(got: &[(u64, f32)], want: &[(u64, f32)], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (n, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g.1 - w.1).abs() <= tol, "#{n}: {g:?} vs {w:?}");
        let tie = |m: usize| want.get(m).is_some_and(|o| (o.1 - w.1).abs() <= tol);
        if (n == 0 || !tie(n - 1)) && !tie(n + 1) {
            assert_eq!(g.0, w.0, "#{n}: {got:?} vs {want:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a CUDA device and onnxruntime-gpu: run in benches/gpu_suite.sh"]
async fn cuda_provider_scores_equal_cpu_provider() {
    let f = fixtures();
    let c = client();
    let users = user_events();
    for (dir, time_aware) in [(&f.sas, false), (&f.tis, true)] {
        let srv = spawn_server(dir, &["--device", "cuda", "--strict_device"]);
        assert!(
            srv.log.contains("using the CUDA execution provider"),
            "{}",
            srv.log
        );
        assert!(!srv.log.contains("falling back"), "{}", srv.log);
        let url = |p: &str| format!("http://{}{p}", srv.addr);
        let v = get_json(&c, &url("/v1/model")).await;
        assert_eq!(v["device"], "cuda", "{v}");
        for events in users.iter().take(16) {
            let hist: Vec<u64> = events.iter().map(|e| e.0).collect();
            let ts: Vec<i64> = events.iter().map(|e| e.1).collect();
            let ts = time_aware.then_some(ts);
            let mut body = json!({"history": hist, "k": 20, "exclude_seen": true});
            if let Some(ts) = &ts {
                body["timestamps"] = json!(ts);
            }
            let (st, v) = post(&c, &url("/recommend"), &body).await;
            assert_eq!(st, 200, "{v}");
            // The CPU provider, straight through ONNX Runtime.
            let want = direct_topk(dir, &hist, ts.as_deref(), 20, true);
            assert_close(&pairs(&v), &want, 1e-4);
            if !time_aware {
                // `candidates` fetches the full `scores` matrix from the device.
                let cands: Vec<u64> = users[0].iter().map(|e| e.0).take(30).collect();
                body["candidates"] = json!(cands);
                body["k"] = json!(5);
                let (st, v) = post(&c, &url("/recommend"), &body).await;
                assert_eq!(st, 200, "{v}");
                let want = reference_ranking(dir, &hist, true, &[], Some(&cands), 5);
                assert_close(&pairs(&v), &want, 1e-4);
            }
        }
    }
}
