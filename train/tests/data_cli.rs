//! `sasrec-train data …` end to end: exit codes and messages of the real binary.

mod common;

use std::process::Command;

use common::write_text;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sasrec-train"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn synthetic_then_stats_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/syn.txt");
    let p = p.to_str().unwrap();
    let (code, out, err) = run(&[
        "data",
        "synthetic",
        "--output",
        p,
        "--users",
        "40",
        "--items",
        "160",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("wrote {p}: ")), "{out}");
    let (code, out, err) = run(&["data", "stats", "--dataset", p, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stats"]["users"], 40);
    assert_eq!(v["report"]["columns"], 3);
    assert_eq!(v["evaluated_users"], 40);
}

/// The scale knobs reach the generator: exact sequence lengths, a Zipf head, and bad values
/// are refused naming the flag.
#[test]
fn synthetic_scale_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zipf.txt");
    let p = p.to_str().unwrap();
    let flags = [
        "data",
        "synthetic",
        "--output",
        p,
        "--users",
        "50",
        "--items",
        "5000",
        "--genres",
        "1",
        "--min_len",
        "30",
        "--max_len",
        "30",
        "--zipf",
        "1.1",
    ];
    let (code, out, err) = run(&flags);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("wrote {p}: 1500 interactions, 50 users, 5000 items")
    );
    let text = std::fs::read_to_string(p).unwrap();
    let head = text
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("7"))
        .count();
    assert!(head >= 40, "item 0 reached {head} of 50 users");
    for (flag, value, message) in [
        ("--zipf", "-1", "expected a finite number ≥ 0, got \"-1\""),
        ("--zipf", "nan", "expected a finite number ≥ 0, got \"nan\""),
        ("--min_len", "31", "--min_len 31 is above --max_len 30"),
        (
            "--items",
            "0",
            "--items, --genres and --min_len must be at least 1",
        ),
    ] {
        // `--flag=value`, so that a negative number is a value, not a flag.
        let mut args: Vec<String> = flags.iter().map(|a| a.to_string()).collect();
        let at = args.iter().position(|a| a == flag).unwrap();
        args.splice(at..at + 2, [format!("{flag}={value}")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(message), "{flag} {value}: {err}");
    }
}

#[test]
fn bad_inputs_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_text(dir.path(), "bad.txt", "1 2 3\n1 2 later\n");
    let (code, _, err) = run(&["data", "stats", "--dataset", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}:2: timestamp `later` is not a number",
            bad.display()
        )
    );
    let (code, _, err) = run(&["data", "stats", "--dataset", "no-such-dataset"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--dataset no-such-dataset: no such file"),
        "{err}"
    );
    let (code, _, err) = run(&["data", "stats", "--dataset", "x", "--min_holdout_len", "2"]);
    assert_eq!(code, 2, "clap usage errors exit 2");
    assert!(err.contains("--min_holdout_len"), "{err}");
    let (code, _, err) = run(&[
        "data",
        "convert-ml1m",
        "--input",
        bad.to_str().unwrap(),
        "--output",
        "/tmp/x",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":1: expected UserID::MovieID::Rating::Timestamp, found 1 field(s)"),
        "{err}"
    );
}

#[test]
fn kebab_case_flags_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_text(dir.path(), "k.txt", "1 a\n1 b\n2 a\n2 b\n3 c\n");
    let (code, out, err) = run(&[
        "data",
        "stats",
        "--dataset",
        p.to_str().unwrap(),
        "--min-user-count",
        "2",
        "--min-item-count",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stats"]["interactions"], 4);
}

/// `--format sequence` and `--columns` reach the reader: a one-user-per-line file and a
/// header-less CSV with shuffled columns give the statistics of the same interactions.
#[test]
fn sequence_files_and_column_maps_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let seq = write_text(dir.path(), "seq.txt", "u1 10 11 12\nu2 11 12 13\n");
    let csv = write_text(
        dir.path(),
        "shuffled.csv",
        "10,u1\n11,u1\n12,u1\n11,u2\n12,u2\n13,u2\n",
    );
    let stats = |args: &[&str]| {
        let (code, out, err) = run(&[&["data", "stats", "--json"], args].concat());
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let a = stats(&["--dataset", seq.to_str().unwrap(), "--format", "sequence"]);
    let b = stats(&["--dataset", csv.to_str().unwrap(), "--columns", "item,user"]);
    assert_eq!(a["report"]["format"], "sequence");
    assert_eq!(b["report"]["format"], "interactions");
    assert_eq!(b["report"]["mapping"], "item,user");
    assert_eq!(a["stats"], b["stats"]);
    assert_eq!(a["stats"]["interactions"], 6);
    let (code, _, err) = run(&[
        "data",
        "stats",
        "--dataset",
        csv.to_str().unwrap(),
        "--columns",
        "user,item,score",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--columns names 3"), "{err}");
    let (code, _, err) = run(&["data", "stats", "--dataset", "x", "--columns", "user,foo"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown column role 'foo'"), "{err}");
}

#[test]
fn convert_ml1m_creates_the_output_folder_and_names_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_text(
        dir.path(),
        "ratings.dat",
        "1::10::5::978300760\n1::20::4::978300761\n2::10::3::978300762\n",
    );
    let out = dir.path().join("new/data/ml-1m.txt");
    let (code, stdout, err) = run(&[
        "data",
        "convert-ml1m",
        "--input",
        ratings.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("3 interactions, 2 users, 2 items"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    let missing = dir.path().join("missing.dat");
    let (code, _, err) = run(&[
        "data",
        "convert-ml1m",
        "--input",
        missing.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains(&format!("{}", missing.display())), "{err}");
}

/// The MovieLens metadata shipped in `../shared/data`, or a failure naming what is missing.
fn shared_data(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel);
    assert!(
        p.is_file(),
        "{} is missing: clone with shared/ beside the repository",
        p.display()
    );
    p.to_str().unwrap().to_string()
}

/// `features-ml1m` on the real `movies.dat` renumbered by the SASRec item map, then `data
/// stats` on the SASRec file: every one of its 3,416 items has genres and a year.
#[test]
fn ml1m_features_cover_the_sasrec_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f/items.tsv");
    let out = out.to_str().unwrap();
    let (code, stdout, err) = run(&[
        "data",
        "features-ml1m",
        "--input",
        &shared_data("ml-1m/raw/movies.dat.gz"),
        "--item_map",
        &shared_data("ml-1m/ml-1m.sasrec.item_map.txt.gz"),
        "--output",
        out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        stdout.trim(),
        format!(
            "wrote {out}: 3416 items (467 skipped outside the item map, 0 without a year, 0 \
             without genres)"
        )
    );
    let dataset = shared_data("ml-1m/ml-1m.sasrec.txt.gz");
    let (code, stdout, err) = run(&[
        "data",
        "stats",
        "--dataset",
        &dataset,
        "--item_features",
        out,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let f = &v["item_features"];
    assert_eq!(
        (
            &f["rows"],
            &f["items"],
            &f["with_features"],
            &f["unknown_ids"]
        ),
        (&3416.into(), &3416.into(), &3416.into(), &0.into()),
        "{f}"
    );
    assert_eq!(f["columns"][0]["name"], "genres");
    assert_eq!(f["columns"][0]["distinct_values"], 18);
    assert_eq!(f["columns"][1]["items_with_value"], 3416);
    assert_eq!(f["ignored"], serde_json::json!(["title"]));
}

/// `features-ml100k` keeps all 1,682 movies (one has no release date); `data stats` in text
/// names the coverage; a bad column declaration exits 2 naming the flag.
#[test]
fn ml100k_features_and_bad_declarations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("items.tsv");
    let out = out.to_str().unwrap();
    let (code, stdout, err) = run(&[
        "data",
        "features-ml100k",
        "--input",
        &shared_data("ml-100k/u.item.gz"),
        "--output",
        out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(": 1682 items (0 skipped outside the item map, 1 without a year"),
        "{stdout}"
    );
    let dataset = shared_data("ml-100k/u.data.gz");
    let (code, stdout, err) = run(&[
        "data",
        "stats",
        "--dataset",
        &dataset,
        "--item_features",
        out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("item features 1682 rows: 1682 of 1682 items with features, 0 without; 0 ids not in the data"),
        "{stdout}"
    );
    let (code, _, err) = run(&[
        "data",
        "stats",
        "--dataset",
        &dataset,
        "--item_features",
        out,
        "--item_feature_columns",
        "genres:multi,studio:categorical",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--item_feature_columns: column `studio` is not in the header of"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "data",
        "stats",
        "--dataset",
        &dataset,
        "--item_features",
        out,
        "--item_feature_columns",
        "genres",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`genres` is not `name:kind`"), "{err}");
}
