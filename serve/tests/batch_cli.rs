//! `sasrec-serve recommend` and `sasrec-serve similar` (the binary) against the server's own
//! answers for the same histories and items, in both retrieval modes; their files and errors.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use sasrec_serve::config::Retrieval;
use sasrec_serve::ServeConfig;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sasrec-serve");

/// Runs `sasrec-serve ARGS`.
fn serve_bin(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `sasrec-serve ARGS`, asserts success and returns its standard output.
fn serve_bin_ok(args: &[&str]) -> String {
    let out = serve_bin(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The lines of a JSON-lines file, each parsed (so the file is complete JSON lines).
fn json_lines(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.ends_with('\n'), "the last line is complete");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A line's `(item, score)` pairs.
fn line_pairs(line: &Value) -> Vec<(u64, f32)> {
    let items = line["items"].as_array().unwrap();
    let scores = line["scores"].as_array().unwrap();
    assert_eq!(items.len(), scores.len(), "{line}");
    items
        .iter()
        .zip(scores)
        .map(|(i, s)| (i.as_u64().unwrap(), s.as_f64().unwrap() as f32))
        .collect()
}

/// `(item, timestamp)` events per raw user of the fixture data, in file order.
fn events_by_user() -> BTreeMap<u64, Vec<(u64, i64)>> {
    let text = std::fs::read_to_string(&fixtures().data).unwrap();
    let mut users: BTreeMap<u64, Vec<(u64, i64)>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<i64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        users
            .entry(f[0] as u64)
            .or_default()
            .push((f[1] as u64, f[2]));
    }
    users
}

/// `sasrec-serve recommend` over the fixture data equals `POST /recommend` for every user
/// (same items up to float ties, scores within 1e-5 relative to max(|s|, 1e-3)): one complete
/// JSON line per user, in user order.
async fn recommend_equals_http(model: &Path, name: &str, mode: Retrieval, include_seen: bool) {
    let dir = copy_model(model, name);
    let out = dir.join("recs.jsonl");
    let mode_name = format!("{mode:?}").to_lowercase();
    let mut args = vec!["recommend", "--model", path(&dir), "--input"];
    args.extend([path(&fixtures().data), "--output", path(&out)]);
    args.extend(["--k", "10", "--batch_size", "16", "--retrieval", &mode_name]);
    if include_seen {
        args.push("--include_seen");
    }
    let stdout = serve_bin_ok(&args);
    assert!(stdout.contains("users/s"), "{stdout}");
    let mut cfg = ServeConfig::new(&dir);
    cfg.retrieval.mode = mode;
    let srv = TestServer::start(cfg).await;
    let time_aware = srv.get_json("/v1/model").await["time_aware"] == json!(true);
    let users = events_by_user();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), users.len());
    for (line, (user, events)) in lines.iter().zip(&users) {
        assert_eq!(line["user"], json!(user));
        let mut body = json!({"history": events.iter().map(|e| e.0).collect::<Vec<_>>(),
                              "k": 10, "exclude_seen": !include_seen});
        if time_aware {
            body["timestamps"] = json!(events.iter().map(|e| e.1).collect::<Vec<_>>());
        }
        let want = pairs(&srv.post_ok("/recommend", &body).await);
        let tol = want.iter().map(|p| p.1.abs()).fold(1e-3, f32::max) * 1e-5;
        assert_same_ranking(&line_pairs(line), &want, tol);
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_subcommand_equals_post_recommend_exact() {
    recommend_equals_http(&fixtures().sas, "cli-sas-exact", Retrieval::Exact, false).await;
    recommend_equals_http(&fixtures().tis, "cli-tis-exact", Retrieval::Exact, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_subcommand_equals_post_recommend_ann() {
    recommend_equals_http(&fixtures().sas, "cli-sas-ann", Retrieval::Ann, true).await;
    recommend_equals_http(&fixtures().tis, "cli-tis-ann", Retrieval::Ann, false).await;
}

/// Writes `text` to `dir/name`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Asserts that `out` failed with exit code 2 and its standard error contains `needle`.
fn assert_fails(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
}

#[test]
fn bad_input_and_flags_exit_2_naming_the_cause() {
    let f = fixtures();
    let dir = f.root.join("cli-errors");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("never.jsonl");
    let bad = write(
        &dir,
        "bad.txt",
        "1000 657 977600918\n1000 667 977600968\n1000 677 abc\n",
    );
    let run = |model: &Path, input: &Path| {
        serve_bin(&[
            "recommend",
            "--model",
            path(model),
            "--input",
            path(input),
            "--output",
            path(&out),
        ])
    };
    assert_fails(&run(&f.sas, &bad), &format!("{}:3", bad.display()));
    let untimed = write(&dir, "untimed.txt", "1000 657\n1000 667\n");
    assert_fails(&run(&f.tis, &untimed), "no timestamps");
    assert!(!out.exists(), "a failed run leaves no output");
    let bogus = ["recommend", "--model", path(&f.sas), "--bogus"];
    assert_fails(&serve_bin(&bogus), "--bogus");
    assert_fails(&serve_bin(&["--addr", "127.0.0.1:0"]), "--model");
    let missing = f.root.join("no-such-model");
    assert_fails(&serve_bin(&["--model", path(&missing)]), "no-such-model");
    let big_k = [
        "recommend",
        "--model",
        path(&f.sas),
        "--input",
        path(&f.data),
    ];
    let big_k = [&big_k[..], &["--output", path(&out), "--k", "500"]].concat();
    assert_fails(&serve_bin(&big_k), "--k 500");
}

/// `sasrec-serve similar` equals `POST /similar` for every item (exact mode: the same code, so
/// the same bits), and `--items` answers the listed items in order; an unknown one is an error
/// naming `file:line`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_subcommand_equals_post_similar() {
    let dir = copy_model(&fixtures().sas, "cli-similar");
    let out = dir.join("similar.jsonl");
    let base = ["similar", "--model", path(&dir), "--output", path(&out)];
    let stdout = serve_bin_ok(&[&base[..], &["--k", "5", "--similar_metric", "cosine"]].concat());
    assert!(stdout.contains("items/s"), "{stdout}");
    let mut cfg = ServeConfig::new(&dir);
    cfg.retrieval.similar_metric = sasrec_serve::config::SimilarMetric::Cosine;
    let srv = TestServer::start(cfg).await;
    let map = items(&dir);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), map.len());
    for (n, line) in lines.iter().enumerate() {
        let raw: u64 = map.raw_of(n as u32 + 1).unwrap().parse().unwrap();
        assert_eq!(line["item"], json!(raw));
        let want = srv.post_ok("/similar", &json!({"item": raw, "k": 5})).await;
        assert_eq!(line_pairs(line), pairs(&want), "item {raw}");
    }
    srv.shutdown().await;

    let picked: Vec<String> = [7u32, 1, 7]
        .iter()
        .map(|&i| map.raw_of(i).unwrap().into())
        .collect();
    let list = write(
        &dir,
        "ids.txt",
        &format!("# picked\n{}\n\n", picked.join("\n")),
    );
    serve_bin_ok(&[&base[..], &["--items", path(&list), "--k", "3"]].concat());
    let lines = json_lines(&out);
    let got: Vec<String> = lines.iter().map(|l| l["item"].to_string()).collect();
    assert_eq!(got, picked);
    assert!(lines
        .iter()
        .all(|l| l["items"].as_array().unwrap().len() == 3));
    let unknown = write(
        &dir,
        "unknown.txt",
        &format!("{}\nnot-an-item\n", picked[0]),
    );
    let failed = serve_bin(&[&base[..], &["--items", path(&unknown)]].concat());
    assert_fails(&failed, &format!("{}:2", unknown.display()));
}

/// A Parquet file's rows as JSON lines would hold them: `{"<key>", "items", "scores"}` with
/// every id as a string (read with the `parquet` crate's row API, checking the schema).
fn parquet_rows(file: &Path, key: &str) -> Vec<Value> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::{Field, ListAccessor, RowAccessor};
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<String> = schema.columns().iter().map(|c| c.path().string()).collect();
    assert_eq!(columns, [key, "items.list.element", "scores.list.element"]);
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let items = row.get_list(1).unwrap();
            let scores = row.get_list(2).unwrap();
            let items: Vec<Value> = (0..items.len())
                .map(|j| json!(items.get_string(j).unwrap()))
                .collect();
            let scores: Vec<Value> = (0..scores.len())
                .map(|j| match scores.elements()[j] {
                    Field::Float(x) => json!(x),
                    ref other => panic!("score {other:?}"),
                })
                .collect();
            json!({key: row.get_string(0).unwrap(), "items": items, "scores": scores})
        })
        .collect()
}

/// The same answers as JSON lines with ids as strings.
fn as_strings(lines: &[Value], key: &str) -> Vec<Value> {
    let text = |v: &Value| match v {
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    };
    lines
        .iter()
        .map(|l| {
            let items: Vec<Value> = l["items"].as_array().unwrap().iter().map(text).collect();
            let scores: Vec<Value> = l["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| json!(s.as_f64().unwrap() as f32))
                .collect();
            json!({key: text(&l[key]), "items": items, "scores": scores})
        })
        .collect()
}

/// `--output *.parquet` writes the same rows as JSON lines, for both subcommands, in a file a
/// standard reader opens (k = every item: with exclude_seen each user's list is shorter than k
/// and of another length).
#[test]
fn parquet_output_holds_the_json_lines_rows() {
    let dir = copy_model(&fixtures().sas, "cli-parquet");
    let n = items(&dir).len().to_string();
    for (cmd, key, extra) in [
        (
            "recommend",
            "user",
            vec!["--input", path(&fixtures().data), "--k", n.as_str()],
        ),
        (
            "recommend",
            "user",
            vec!["--input", path(&fixtures().data), "--k", "7"],
        ),
        ("similar", "item", vec!["--k", "4"]),
    ] {
        let (jl, pq) = (dir.join("a.jsonl"), dir.join("a.parquet"));
        for out in [&jl, &pq] {
            let args = [
                &[cmd, "--model", path(&dir), "--output", path(out)][..],
                &extra,
            ]
            .concat();
            serve_bin_ok(&args);
        }
        let want = as_strings(&json_lines(&jl), key);
        assert!(!want.is_empty());
        assert_eq!(parquet_rows(&pq, key), want, "{cmd} {extra:?}");
    }
}
