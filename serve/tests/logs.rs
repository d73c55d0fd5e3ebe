//! `sasrec-serve --log_format json`: every line the server logs is one JSON object, and a
//! failure to start is one line on standard error with exit status 2.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures;

#[test]
fn json_logs_are_one_object_per_line() {
    let model = &fixtures().sas;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sasrec-serve"))
        .args(["--addr", "127.0.0.1:0", "--log_format", "json", "--model"])
        .arg(model)
        .env("RUST_LOG", "sasrec_serve=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line:?}"));
        let listening = event["fields"]["message"] == "listening";
        events.push(event);
        if listening || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let loaded = events
        .iter()
        .find(|e| e["fields"]["message"] == "model loaded")
        .unwrap_or_else(|| panic!("no `model loaded` event: {events:?}"));
    assert_eq!(loaded["level"], "INFO");
    assert_eq!(loaded["fields"]["time_aware"], false);
    assert!(
        events.iter().any(|e| e["fields"]["message"] == "listening"),
        "{events:?}"
    );
}

#[test]
fn a_failed_start_is_one_line_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sasrec-serve"))
        .args(["--log_format", "json", "--model"])
        .arg(dir.path().join("missing.onnx"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("sasrec-serve: loading model "), "{err}");
    assert!(err.contains("missing.onnx"), "{err}");
}
