//! `benches/reproduce.sh`: every named configuration parses and starts on the real ML-1M file
//! (`SMOKE=1`: one optimiser step, 64 evaluated users), and its printed line carries the anchor.

use std::path::Path;
use std::process::Command;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/reproduce.sh")
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
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let ml1m = data.join("ml-1m/ml-1m.sasrec.txt.gz");
    assert!(
        ml1m.is_file(),
        "{} is missing: clone with shared/ beside the repository",
        ml1m.display()
    );
    let names = names();
    let want = [
        "sasrec_plus",
        "sasrec_plus_post_ln",
        "sasrec_bce",
        "sasrec_plus_3000",
        "gsasrec",
    ];
    assert_eq!(names, want);
    let dir = tempfile::tempdir().unwrap();
    for name in &names {
        let out = Command::new(script())
            .arg(name)
            .arg(dir.path())
            .env("SMOKE", "1")
            .env("BIN", env!("CARGO_BIN_EXE_sasrec-train"))
            .env("SASREC_DATA", &data)
            .env(
                "PYTHON",
                std::env::var("SASREC_PYTHON").expect("SASREC_PYTHON: run ./scripts/setup.sh"),
            )
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: {stdout} {stderr}");
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
