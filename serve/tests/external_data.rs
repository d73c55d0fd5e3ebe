//! `sasrec-serve` on a model exported with ONNX external data (`sasrec-export
//! --external_data_threshold 0`: `model.onnx` + `model.onnx.data`) answers exactly as on the
//! inline export of the same checkpoint, and refuses to start without the data file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sasrec_serve::ServeConfig;
use serde_json::json;

/// `sasrec-export` of this test's profile (`<target>/<profile>/`, beside `deps/`).
fn export_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps/<test>")
        .join("sasrec-export");
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build -p sasrec-export`",
        p.display()
    );
    p
}

/// Exports the run directory `run` to `<dest>/model.onnx` with every initializer of at least
/// 1024 bytes in `<dest>/model.onnx.data`.
fn export_external(run: &Path, dest: &Path) {
    let out = Command::new(export_bin())
        .args(["--onnx", "--external_data_threshold", "0", "--train_dir"])
        .arg(run)
        .arg("--output")
        .arg(dest.join("model.onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sasrec-export failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::metadata(dest.join("model.onnx.data"))
        .unwrap()
        .len();
    let inline = std::fs::metadata(run.join("model.onnx")).unwrap().len();
    let onnx = std::fs::metadata(dest.join("model.onnx")).unwrap().len();
    assert!(
        data > 0 && onnx < inline,
        "model.onnx {onnx} + data {data} bytes vs inline {inline}: the weights did not move"
    );
}

/// POSTs each body to both servers and asserts identical items, scores and model names.
async fn assert_same_answers(inline: &TestServer, ext: &TestServer, bodies: &[serde_json::Value]) {
    for body in bodies {
        let (s1, want) = inline.post("/recommend", body).await;
        let (s2, got) = ext.post("/recommend", body).await;
        assert_eq!((s1, s2), (200, 200), "{body}: {want} / {got}");
        assert_eq!(got["items"], want["items"], "{body}");
        assert_eq!(got["model"], want["model"], "{body}");
        assert!(!pairs(&want).is_empty(), "{body}: empty answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_data_export_serves_the_same_recommendations() {
    let f = fixtures();
    let users = user_events();
    let dest = tempfile::tempdir().unwrap();
    for (run, timed) in [(&f.sas, false), (&f.tis, true)] {
        let ext_dir = dest.path().join(run.file_name().unwrap());
        export_external(run, &ext_dir);
        let inline = TestServer::start(ServeConfig::new(run)).await;
        let ext = TestServer::start(ServeConfig::new(&ext_dir)).await;
        let bodies: Vec<serde_json::Value> = users[..4]
            .iter()
            .enumerate()
            .map(|(n, ev)| {
                let hist: Vec<u64> = ev.iter().map(|e| e.0).collect();
                let mut body = json!({"history": hist, "k": 5 + 10 * n, "exclude_seen": n != 3});
                if timed {
                    body["timestamps"] = json!(ev.iter().map(|e| e.1).collect::<Vec<_>>());
                }
                body
            })
            .collect();
        assert_same_answers(&inline, &ext, &bodies).await;
        inline.shutdown().await;
        ext.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_data_file_is_a_load_error() {
    let f = fixtures();
    let dest = tempfile::tempdir().unwrap();
    export_external(&f.sas, dest.path());
    std::fs::remove_file(dest.path().join("model.onnx.data")).unwrap();
    let dir = dest.path().to_path_buf();
    let err =
        tokio::task::spawn_blocking(move || sasrec_serve::AppState::load(ServeConfig::new(dir)))
            .await
            .unwrap()
            .map(|_| ())
            .expect_err("a model without its data file must not load")
            .to_string();
    assert!(err.contains("model.onnx"), "{err}");
    assert!(err.contains("model.onnx.data"), "{err}");
}
