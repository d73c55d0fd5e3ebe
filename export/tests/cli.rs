//! The `sasrec-export` binary: where it writes, and its errors (exit status 2, one line naming
//! the file, nothing written).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn export_cmd(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts exit status 2 and a one-line message on stderr that contains `needle`.
fn assert_fails(out: &Output, needle: &str, what: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: not one line: {err}"
    );
    assert!(err.contains(needle), "{what}: `{needle}` not in: {err}");
    err
}

#[test]
fn default_output_goes_into_the_run_directory() {
    let run = make_run(&kind("sasrec"), 40);
    let out = export_cmd(&["--onnx", "--train_dir", path_str(run.path())]);
    assert_success(&out);
    assert_eq!(list(run.path()), run_dir_files(&EXPORTED));
    python_check(&run.path().join("model.onnx"));
}

#[test]
fn output_elsewhere_gets_the_item_map_and_kebab_flags_work() {
    let run = make_run(&kind("tisasrec-mhc"), 41);
    let dest = tempfile::tempdir().unwrap();
    let file = dest.path().join("serving").join("m.onnx");
    let out = export_cmd(&[
        "--onnx",
        "--train-dir",
        path_str(run.path()),
        "--output",
        path_str(&file),
        "--full-sequence",
    ]);
    assert_success(&out);
    assert_eq!(
        list(&dest.path().join("serving")),
        [
            "item_vectors.safetensors",
            "items.tsv",
            "m.onnx",
            "user_tower.onnx",
            "user_tower.onnx.data"
        ]
    );
    assert_eq!(
        std::fs::read(run.path().join("items.tsv")).unwrap(),
        std::fs::read(dest.path().join("serving").join("items.tsv")).unwrap()
    );
    let h = python_check(&file);
    assert_eq!(h["metadata"]["graph_variant"], "full_sequence");
    // the run directory is untouched
    assert_eq!(list(run.path()), run_dir_files(&[]));
}

/// Runs the binary on a broken run directory and checks: status 2, one line naming `file`,
/// and no file written either into the run directory or at `--output`.
fn broken(run_dir: &Path, needle: &str, what: &str) {
    let before = list(run_dir);
    let dest = tempfile::tempdir().unwrap();
    let file = dest.path().join("out.onnx");
    let out = export_cmd(&[
        "--onnx",
        "--train_dir",
        path_str(run_dir),
        "--output",
        path_str(&file),
    ]);
    assert_fails(&out, needle, what);
    assert!(
        list(dest.path()).is_empty(),
        "{what}: wrote {:?}",
        list(dest.path())
    );
    assert_eq!(list(run_dir), before, "{what}: run directory changed");
    // the default output as well
    let out = export_cmd(&["--onnx", "--train_dir", path_str(run_dir)]);
    assert_fails(&out, needle, what);
    assert_eq!(list(run_dir), before, "{what}: run directory changed");
}

#[test]
fn corrupt_checkpoint_is_a_clear_error() {
    let run = make_run(&kind("sasrec"), 42);
    let ckpt = run.path().join("model.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    for b in bytes.iter_mut().take(64) {
        *b = b'#';
    }
    std::fs::write(&ckpt, &bytes).unwrap();
    broken(run.path(), "model.safetensors", "corrupt header");
}

#[test]
fn truncated_checkpoint_is_a_clear_error() {
    let run = make_run(&kind("tisasrec"), 43);
    let ckpt = run.path().join("model.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    broken(run.path(), "model.safetensors", "truncated");
    std::fs::write(&ckpt, b"").unwrap();
    broken(run.path(), "model.safetensors", "empty");
}

#[test]
fn config_that_does_not_match_the_checkpoint_is_a_clear_error() {
    let run = make_run(&kind("sasrec-mhc"), 44);
    let mut cfg = run.cfg.clone();
    cfg.hidden_units = 24; // checkpoint has 16
    std::fs::write(
        run.path().join("config.json"),
        config_json(&cfg, run.intervals),
    )
    .unwrap();
    let err = {
        let out = export_cmd(&["--onnx", "--train_dir", path_str(run.path())]);
        assert_fails(&out, "model.safetensors", "hidden size")
    };
    assert!(
        err.contains(
            "tensor `attention_layernorms.0.bias` has shape [16] but the model expects [24]"
        ),
        "{err}"
    );
    broken(run.path(), "model.safetensors", "hidden size");

    // a checkpoint of another kind (no mHC tensors in the config's model)
    let mut plain = run.cfg.clone();
    plain.mhc = None;
    std::fs::write(run.path().join("config.json"), config_json(&plain, None)).unwrap();
    broken(run.path(), "model.safetensors", "kind");
}

#[test]
fn missing_or_corrupt_config_is_a_clear_error() {
    let run = make_run(&kind("tisasrec"), 45);
    let config = run.path().join("config.json");
    std::fs::write(&config, "{\"kind\": \"tisasrec\", \"model\": ").unwrap();
    broken(run.path(), "config.json", "truncated config");

    // time-aware without intervals
    let no_iv = config_json(&run.cfg, None);
    std::fs::write(&config, no_iv).unwrap();
    broken(run.path(), "config.json", "no intervals");

    // kind that contradicts the model
    let wrong = config_json(&run.cfg, run.intervals)
        .replace("\"kind\": \"tisasrec\"", "\"kind\": \"sasrec\"");
    std::fs::write(&config, wrong).unwrap();
    broken(run.path(), "config.json", "wrong kind");

    std::fs::remove_file(&config).unwrap();
    broken(run.path(), "config.json", "missing config");
}

#[test]
fn missing_train_dir_and_missing_items_are_clear_errors() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("no-such-run");
    let out = export_cmd(&["--onnx", "--train_dir", path_str(&missing)]);
    assert_fails(&out, "no-such-run", "missing dir");
    assert!(list(parent.path()).is_empty());

    let run = make_run(&kind("sasrec"), 46);
    std::fs::remove_file(run.path().join("items.tsv")).unwrap();
    broken(run.path(), "items.tsv", "missing items");
}

#[test]
fn without_onnx_flag_nothing_happens() {
    let run = make_run(&kind("sasrec"), 47);
    let out = export_cmd(&["--train_dir", path_str(run.path())]);
    assert_fails(&out, "--onnx", "no --onnx");
    assert_eq!(list(run.path()), run_dir_files(&[]));
}

/// `--ann` builds the inner-product index beside the model; it opens against the exported item
/// vectors and, on this small catalogue, its re-scored answers equal the exact ones.
#[test]
fn ann_flag_writes_an_index_that_opens_against_the_item_vectors() {
    let run = make_run(&kind("sasrec"), 44);
    let export_run = |flags: &[&str]| {
        export_cmd(&[&["--onnx", "--train_dir", path_str(run.path())], flags].concat())
    };
    let out = export_run(&["--ann", "--ann_quantization", "f32", "--ann_threads", "1"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("items.usearch ("), "{stdout}");
    assert_eq!(
        list(run.path()),
        run_dir_files(&[&EXPORTED[..], &["items.usearch", "items.usearch.json"]].concat())
    );
    let vectors =
        sasrec_ann::ItemVectors::open(&run.path().join("item_vectors.safetensors")).unwrap();
    let index = sasrec_ann::ItemIndex::open(&run.path().join("items.usearch"), &vectors).unwrap();
    assert_eq!(index.info().num_items, vectors.num_items());
    for item in 1..=vectors.num_items() {
        let query = vectors.row(item).to_vec();
        let exact = sasrec_ann::exact_top_k(&query, &vectors, 5, |i| i != item as u64);
        let ann = index
            .recommend(&query, &vectors, 5, 10, 64, |i| i != item as u64)
            .unwrap();
        assert_eq!(ann, exact, "item {item}");
    }
    let bad = export_run(&["--ann_quantization", "f8"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--ann_quantization"),
        "{}",
        stderr(&bad)
    );
}
