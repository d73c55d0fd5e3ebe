//! `benches/reproduce.sh`: every named configuration parses and starts on the real ML-1M file
//! (`SMOKE=1`: one optimiser step, 64 evaluated users), and its printed line carries the anchor;
//! `benches/residual_control.sh`: every residual variant does the same and the table lists them.

use std::path::Path;
use std::process::Command;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/reproduce.sh")
}

/// The shared data folder beside the repository, with the ML-1M file the scripts train on.
fn data() -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let ml1m = data.join("ml-1m/ml-1m.sasrec.txt.gz");
    assert!(
        ml1m.is_file(),
        "{} is missing: clone with shared/ beside the repository",
        ml1m.display()
    );
    data
}

/// The Python of ./scripts/setup.sh (the scripts' tables and summaries).
fn python() -> String {
    std::env::var("SASREC_PYTHON").expect("SASREC_PYTHON: run ./scripts/setup.sh")
}

/// `benches/SCRIPT ARGS…` with `SMOKE=1`, this build's binary, the shared data and the set-up
/// Python, plus `env`; asserts success and returns stdout.
fn smoke(script: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches")
        .join(script);
    let out = Command::new(&script)
        .args(args)
        .env("SMOKE", "1")
        .env("BIN", env!("CARGO_BIN_EXE_sasrec-train"))
        .env("SASREC_DATA", data())
        .env("PYTHON", python())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{script:?}: {stdout} {stderr}");
    stdout
}

fn names() -> Vec<String> {
    let out = Command::new(script()).arg("--list").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_configuration_parses_and_starts() {
    let names = names();
    let want = [
        "sasrec_plus",
        "sasrec_plus_right",
        "sasrec_plus_post_ln",
        "sasrec_bce",
        "sasrec_plus_3000",
        "gsasrec",
    ];
    assert_eq!(names, want);
    let dir = tempfile::tempdir().unwrap();
    for name in &names {
        let stdout = smoke(
            "reproduce.sh",
            &[name.as_ref(), dir.path().as_os_str()],
            &[],
        );
        let line: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"));
        assert_eq!(line["name"], name.as_str());
        assert_eq!(line["epochs"], 1, "{name}");
        assert_eq!(line["selected_by"], "validation ndcg@10 (full)", "{name}");
        let anchor = line["anchor_ndcg@10"].as_f64().unwrap();
        assert!((0.13..0.19).contains(&anchor), "{name}: anchor {anchor}");
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{name}-s1/config.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["model"]["num_items"], 3416, "{name}");
    }
    let bad = Command::new(script()).arg("bert4rec").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown configuration 'bert4rec'"));
}

#[test]
fn every_residual_variant_parses_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/residual_control.sh");
    let stdout = smoke(
        "residual_control.sh",
        &[dir.path().as_os_str()],
        &[("SEEDS", "1")],
    );
    for (variant, kind, wiring) in [
        ("original", "sasrec", Some("original")),
        ("pre_ln", "sasrec", Some("pre_ln")),
        ("gated", "sasrec", Some("gated")),
        ("mhc", "sasrec-mhc", None),
        ("lite", "sasrec-mhc", None),
    ] {
        let run = dir.path().join(format!("{variant}-s1"));
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["kind"], kind, "{variant}");
        assert_eq!(cfg["model"]["block_wiring"].as_str(), wiring, "{variant}");
        assert_eq!(cfg["optim"]["loss"], "ce", "{variant}");
        assert_eq!(cfg["model"]["padding"], "right", "{variant}");
        assert_eq!(cfg["metrics_k"], serde_json::json!([1, 5, 10, 20, 50, 100]));
        assert!(
            stdout.contains(&format!("| {variant} | 1 | 1 |")),
            "{variant} missing from the table: {stdout}"
        );
    }
    let lite = std::fs::read_to_string(dir.path().join("lite-s1/config.json")).unwrap();
    assert!(lite.contains("\"lite\""), "{lite}");
    let bad = Command::new(&script)
        .arg(dir.path())
        .env("VARIANTS", "sandwich")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown variant 'sandwich'"));
}

/// `benches/ml1m_tie_order.sh`: the three tie orders hold the same ratings of the same 2,999
/// users, differ in order, and each trains (one step) and reaches the table.
#[test]
fn tie_order_datasets_hold_the_same_ratings_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = smoke("ml1m_tie_order.sh", &[dir.path().as_os_str()], &[]);
    let read = |order: &str| std::fs::read_to_string(dir.path().join(format!("{order}.txt")));
    let (file, movie, shared) = (
        read("file").unwrap(),
        read("movie").unwrap(),
        read("shared").unwrap(),
    );
    fn sorted(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines
    }
    assert_eq!(file.lines().count(), 487_650);
    assert_eq!(sorted(&file), sorted(&movie));
    assert_eq!(sorted(&file), sorted(&shared));
    assert_ne!(file, shared);
    assert_ne!(file, movie);
    for order in ["file", "movie", "shared"] {
        assert!(stdout.contains(&format!("| {order} | 1 |")), "{stdout}");
    }
}
