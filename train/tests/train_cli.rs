//! `sasrec-train` end to end on the synthetic fixture (CPU): run directory, resume after an
//! interruption, inference-only evaluation and the error paths.

mod common;

use std::path::Path;
use std::process::Output;

use common::{bin, err, fixture, ok, succeeded, write_text};

const BASE: [(&str, &str); 9] = [
    ("--maxlen", "16"),
    ("--hidden_units", "16"),
    ("--num_heads", "2"),
    ("--num_blocks", "1"),
    ("--batch_size", "32"),
    ("--eval_every", "2"),
    ("--num_workers", "1"),
    ("--seed", "3"),
    ("--device", "cpu"),
];

/// A temporary directory holding the standard fixture, and the fixture's path.
fn fixture_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture(dir.path());
    (dir, data)
}

/// The small CPU configuration; a flag in `extra` replaces the base value.
fn small(data: &Path, run: &Path, extra: &[&str]) -> Output {
    small_cmd(data, run, extra).output().unwrap()
}

/// The command of [`small`], to spawn.
fn small_cmd(data: &Path, run: &Path, extra: &[&str]) -> std::process::Command {
    let base = BASE
        .iter()
        .filter(|(k, _)| !extra.contains(k))
        .flat_map(|(k, v)| [*k, *v]);
    let mut c = bin();
    c.arg("--dataset")
        .arg(data)
        .arg("--train_dir")
        .arg(run)
        .args(base)
        .args(extra);
    c
}

#[test]
fn run_directory_holds_every_artifact() {
    let (dir, data) = fixture_dir();
    let run = dir.path().join("run");
    let s = ok(small(
        &data,
        &run,
        &["--no_time", "--no_mhc", "--num_epochs", "4"],
    ));
    assert_eq!(s["epochs"], 4);
    assert_eq!(s["kind"], "sasrec");
    for f in [
        "config.json",
        "model.safetensors",
        "items.tsv",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "summary.json",
        "training_curve.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "evaluations after epochs 2 and 4");
    assert_eq!(lines[1]["epoch"], 4);
    for part in ["valid", "test"] {
        for protocol in ["sampled", "full"] {
            let m = &lines[1][part][protocol];
            assert_eq!(m["users"], 120, "{part} {protocol}");
            assert_eq!(m["k"], 10, "{part} {protocol}");
            // Each of the 120 users adds 0 or 1 to HR and 0 or 1/log2(rank + 2) ∈ [1/log2(11), 1]
            // to NDCG, so HR is a multiple of 1/120 and HR/log2(11) ≤ NDCG ≤ HR; MRR ≥ NDCG's
            // hits' share of 1/10 and ≤ 1.
            let (hr, ndcg, mrr) = (
                m["hr"].as_f64().unwrap(),
                m["ndcg"].as_f64().unwrap(),
                m["mrr"].as_f64().unwrap(),
            );
            let hits = hr * 120.0;
            assert!(
                (hits - hits.round()).abs() < 1e-9,
                "{part} {protocol}: HR {hr}"
            );
            assert!(
                hits >= 1.0,
                "{part} {protocol}: no user ranked in the top 10"
            );
            assert!(
                ndcg <= hr + 1e-12 && ndcg >= hr / 11f64.log2() - 1e-12,
                "{part} {protocol}: NDCG {ndcg} vs HR {hr}"
            );
            assert!(mrr > 0.0 && mrr <= 1.0, "{part} {protocol}: MRR {mrr}");
        }
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"]["hidden_units"], 16);
    assert_eq!(cfg["dataset_stats"]["users"], 120);
    // The libtorch version comes from libtorch's own headers (tch 0.24 binds torch 2.11.0).
    assert_eq!(cfg["versions"]["libtorch"], "2.11.0");
    let png = std::fs::read(run.join("training_curve.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn resume_after_interruption_equals_the_uninterrupted_run() {
    let (dir, data) = fixture_dir();
    let flags = ["--time_unit", "personal", "--time_span", "32", "--no_mhc"];
    let straight = dir.path().join("straight");
    let a = ok(small(
        &data,
        &straight,
        &[&flags[..], &["--num_epochs", "4"]].concat(),
    ));
    // Interrupted: stop after 2 epochs, then the same command with the full epoch count resumes.
    let resumed = dir.path().join("resumed");
    ok(small(
        &data,
        &resumed,
        &[&flags[..], &["--num_epochs", "2"]].concat(),
    ));
    let b = ok(small(
        &data,
        &resumed,
        &[&flags[..], &["--num_epochs", "4"]].concat(),
    ));
    assert_eq!(a["test_at_best"], b["test_at_best"]);
    assert_eq!(a["valid_at_best"], b["valid_at_best"]);
    let wa = std::fs::read(straight.join("model.safetensors")).unwrap();
    let wb = std::fs::read(resumed.join("model.safetensors")).unwrap();
    assert!(
        wa == wb,
        "resumed weights differ from the uninterrupted run"
    );
    // A killed run (kill -9 mid-training) resumes too and loses at most the current epoch.
    let killed = dir.path().join("killed");
    let mut child = bin()
        .arg("--dataset")
        .arg(&data)
        .arg("--train_dir")
        .arg(&killed)
        .args(BASE.iter().flat_map(|(k, v)| [*k, *v]))
        .args(["--num_epochs", "4"])
        .args(flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed.join("checkpoint.safetensors");
    while !ckpt.exists() {
        let status = child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "exited before its first checkpoint: {status:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // The kill interrupted a running job: it died by SIGKILL and wrote no summary, so the
    // comparison below is with a resumed run, not with a finished one.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not killed mid-run: {status:?}");
    assert!(
        !killed.join("summary.json").exists(),
        "the run had finished"
    );
    let c = ok(small(
        &data,
        &killed,
        &[&flags[..], &["--num_epochs", "4"]].concat(),
    ));
    assert_eq!(a["test_at_best"], c["test_at_best"]);
}

/// `--checkpoint_every_steps`: a run killed (SIGKILL) after a mid-epoch checkpoint resumes
/// inside the epoch and ends with the uninterrupted run's model, bit for bit (dropout is keyed
/// by seed, epoch and batch, so even the masks are the same).
#[test]
fn checkpoint_every_steps_resumes_mid_epoch() {
    mid_epoch_resume(&[]);
}

/// The row-sparse item optimizers resume mid-epoch bit for bit as well (their state is in the
/// checkpoint), and each trains a different model than dense Adam.
#[test]
fn row_sparse_item_optimizers_resume_mid_epoch_bit_for_bit() {
    let loss = ["--loss", "sampled_softmax", "--num_negatives", "16"];
    let (_keep, dense) = mid_epoch_resume(&loss);
    for (opt, state) in [
        ("lazy_adam", "adam.m.item_emb.weight"),
        ("rowwise_adagrad", "rowwise_adagrad.sum.item_emb.weight"),
    ] {
        let flags = [&loss[..], &["--item_optimizer", opt, "--item_lr", "0.01"]].concat();
        let (dir, weights) = mid_epoch_resume(&flags);
        assert!(weights != dense, "{opt} trained the same weights as adam");
        let ckpt = dir.path().join("killed/checkpoint.safetensors");
        let names: Vec<String> = tch::Tensor::read_safetensors(&ckpt)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            names.iter().any(|n| n == state),
            "{opt}: no {state} in {names:?}"
        );
    }
}

/// Trains 2 epochs with a checkpoint every 4 steps, straight through and killed (SIGKILL) after
/// a mid-epoch checkpoint then resumed, with `extra` flags; asserts that both end with the same
/// model bit for bit (dropout is keyed by seed, epoch and batch, so even the masks are the
/// same) and returns the directory (`straight/`, `killed/`) and the weights' bytes.
fn mid_epoch_resume(extra: &[&str]) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fixture_with(dir.path(), 600);
    let base = [
        "--no_time",
        "--no_mhc",
        "--num_epochs",
        "2",
        "--batch_size",
        "16",
        "--checkpoint_every_steps",
        "4",
    ];
    let flags = [&base[..], extra].concat();
    let straight = dir.path().join("straight");
    let a = ok(small(&data, &straight, &flags));
    let run = dir.path().join("killed");
    let mut child = small_cmd(&data, &run, &flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a checkpoint taken inside an epoch, then kill.
    let ckpt = run.join("checkpoint.safetensors");
    let mid_epoch = || -> Option<u64> {
        let tensors = tch::Tensor::read_safetensors(&ckpt).ok()?;
        let (_, state) = tensors.into_iter().find(|(n, _)| n == "__state__")?;
        let bytes = Vec::<u8>::try_from(state).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v["partial"]["batches"].as_u64()
    };
    let batches = loop {
        if let Some(b) = mid_epoch() {
            break b;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before a mid-epoch checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(batches > 0 && batches.is_multiple_of(4), "{batches}");
    assert!(!run.join("summary.json").exists(), "the run had finished");
    let out = small_cmd(&data, &run, &flags)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("batches_into_epoch"), "{log}");
    let c = ok(out);
    assert_eq!(a["test_at_best"], c["test_at_best"]);
    let wa = std::fs::read(straight.join("model.safetensors")).unwrap();
    let wc = std::fs::read(run.join("model.safetensors")).unwrap();
    assert!(
        wa == wc,
        "{extra:?}: resumed mid-epoch weights differ from the uninterrupted run"
    );
    (dir, wa)
}

/// Clears the immutable flag it set, so that the temporary directory can be removed.
struct Immutable<'a>(&'a Path);

impl Immutable<'_> {
    /// `chattr +i path` (root may write anywhere, so only an immutable file refuses it).
    fn set(path: &Path) -> Result<Immutable<'_>, String> {
        let out = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        match out.status.success() {
            true => Ok(Immutable(path)),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

/// A checkpoint that cannot be written (here: an immutable `checkpoint.safetensors`, which
/// refuses the atomic rename even to root) is an error naming the file; the previous
/// checkpoint stays intact and no temporary file is left behind.
#[test]
fn a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one() {
    let (dir, data) = fixture_dir();
    let run = dir.path().join("run");
    ok(small(
        &data,
        &run,
        &["--no_time", "--no_mhc", "--num_epochs", "1"],
    ));
    let ckpt = run.join("checkpoint.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let guard = Immutable::set(&ckpt).unwrap_or_else(|why| {
        panic!(
            "cannot make {} immutable here (chattr +i): {why}",
            ckpt.display()
        )
    });
    let e = err(small(
        &data,
        &run,
        &["--no_time", "--no_mhc", "--num_epochs", "2"],
    ));
    drop(guard);
    assert!(
        e.contains("writing the checkpoint; the previous one is kept")
            && e.contains(&ckpt.display().to_string()),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the previous checkpoint changed"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The run resumes from that checkpoint once the file can be replaced again.
    let s = ok(small(
        &data,
        &run,
        &["--no_time", "--no_mhc", "--num_epochs", "2"],
    ));
    assert_eq!(s["epochs"], 2);
}

/// A truncated or overwritten checkpoint is never a silent restart from epoch 0: resuming
/// fails naming the file, and the file is left as it was for inspection.
#[test]
fn a_corrupt_checkpoint_is_an_error_naming_it() {
    let (dir, data) = fixture_dir();
    let flags = ["--no_time", "--no_mhc", "--num_epochs", "2"];
    let run = dir.path().join("run");
    ok(small(&data, &run, &flags));
    let ckpt = run.join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let more = ["--no_time", "--no_mhc", "--num_epochs", "3"];
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"not a safetensors file at all".to_vec()),
    ] {
        std::fs::write(&ckpt, &bytes).unwrap();
        let e = err(small(&data, &run, &more));
        assert!(
            e.contains(&format!("{}: not a readable checkpoint", ckpt.display())),
            "{what}: {e}"
        );
        assert_eq!(std::fs::read(&ckpt).unwrap(), bytes, "{what}: file changed");
    }
}

#[test]
fn inference_only_reproduces_the_best_evaluation() {
    let (dir, data) = fixture_dir();
    let run = dir.path().join("run");
    let s = ok(small(
        &data,
        &run,
        &["--no_time", "--no_mhc", "--num_epochs", "2"],
    ));
    let weights = run.join("model.safetensors");
    let inf = ok(small(
        &data,
        &dir.path().join("inf"),
        &[
            "--no_time",
            "--no_mhc",
            "--inference_only",
            "--state_dict_path",
            weights.to_str().unwrap(),
        ],
    ));
    assert_eq!(inf["test"], s["test_at_best"]);
    assert_eq!(inf["valid"], s["valid_at_best"]);
    // Flags that do not match the checkpoint: a clear error naming the tensor.
    let e = err(small(
        &data,
        &dir.path().join("inf2"),
        &[
            "--no_time",
            "--no_mhc",
            "--hidden_units",
            "32",
            "--inference_only",
            "--state_dict_path",
            weights.to_str().unwrap(),
        ],
    ));
    // The first tensor in name order whose shape differs, with both shapes.
    assert!(
        e.contains(
            "tensor `attention_layernorms.0.bias` has shape [16] but the model expects [32]"
        ),
        "{e}"
    );
    assert!(e.contains(weights.to_str().unwrap()), "{e}");
    // A corrupt checkpoint.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let e = err(small(
        &data,
        &dir.path().join("inf3"),
        &[
            "--no_time",
            "--no_mhc",
            "--inference_only",
            "--state_dict_path",
            bad.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("bad.safetensors"), "{e}");
}

#[test]
fn errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let events: String = (1..=40).map(|i| format!("{} {}\n", i % 5 + 1, i)).collect();
    let untimed = write_text(dir.path(), "untimed.txt", &events);
    let e = err(small(&untimed, &dir.path().join("r1"), &["--no_mhc"]));
    assert!(
        e.contains("has no timestamps") && e.contains("--no_time"),
        "{e}"
    );
    let data = fixture(dir.path());
    let e = err(small(
        &data,
        &dir.path().join("r2"),
        &["--no_time", "--no_mhc", "--hidden_units", "15"],
    ));
    assert!(
        e.contains("--hidden_units 15 is not divisible by --num_heads 2"),
        "{e}"
    );
    let e = err(small(
        &data,
        &dir.path().join("r3"),
        &["--no_time", "--device", "tpu"],
    ));
    assert!(
        e.contains("--device tpu: expected cpu, cuda or cuda:N"),
        "{e}"
    );
    let out = small(
        &data,
        &dir.path().join("r4"),
        &["--no_time", "--lr", "fast"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lr"));
    // Resuming with other settings is refused, naming the settings.
    let run = dir.path().join("r5");
    ok(small(
        &data,
        &run,
        &["--no_time", "--no_mhc", "--num_epochs", "1"],
    ));
    let e = err(small(
        &data,
        &run,
        &[
            "--no_time",
            "--no_mhc",
            "--num_epochs",
            "2",
            "--dropout_rate",
            "0.5",
        ],
    ));
    assert!(
        e.contains("model.dropout_rate") && e.contains("another --train_dir"),
        "{e}"
    );
}

/// A larger `--num_epochs` extends a run that reached its epochs, but not one that stopped
/// early (as the README says): that run stays at its epoch and the warning says why.
#[test]
fn larger_num_epochs_extends_finished_runs_only() {
    let (dir, data) = fixture_dir();
    let epochs = |v: &serde_json::Value| v["epochs"].as_u64().unwrap();
    let run = dir.path().join("finished");
    let flags = ["--eval_every", "1", "--num_epochs", "2"];
    assert_eq!(epochs(&ok(small(&data, &run, &flags))), 2);
    let more = ["--eval_every", "1", "--num_epochs", "3"];
    assert_eq!(epochs(&ok(small(&data, &run, &more))), 3);

    // lr 0: the validation metric never improves, so patience 1 stops after epoch 2
    let run = dir.path().join("stopped");
    let stop = [
        "--eval_every",
        "1",
        "--lr",
        "0",
        "--early_stop_patience",
        "1",
    ];
    let first = ok(small(
        &data,
        &run,
        &[&stop[..], &["--num_epochs", "5"]].concat(),
    ));
    assert_eq!(
        (first["epochs"].as_u64(), first["stopped_early"].as_bool()),
        (Some(2), Some(true))
    );
    let again = small(&data, &run, &[&stop[..], &["--num_epochs", "9"]].concat());
    let log = String::from_utf8_lossy(&again.stderr).into_owned();
    assert_eq!(epochs(&ok(again)), 2);
    assert!(
        log.contains("the run stopped early after epoch 2") && log.contains("new --train_dir"),
        "{log}"
    );
}

/// `--max_steps` ends the run at that global step, mid-epoch, with the partial epoch
/// evaluated and counted; 0 is refused by name.
#[test]
fn max_steps_ends_the_run_mid_epoch() {
    let (dir, data) = fixture_dir();
    let flags = [
        "--no_time",
        "--no_mhc",
        "--num_epochs",
        "5",
        "--eval_every",
        "5",
    ];
    let one = ok(small(
        &data,
        &dir.path().join("one"),
        &[&flags[..], &["--max_steps", "1"]].concat(),
    ));
    let per_epoch = |v: &serde_json::Value| v["steps"].as_u64().unwrap();
    assert_eq!((one["epochs"].as_u64(), per_epoch(&one)), (Some(1), 1));
    let full = ok(small(
        &data,
        &dir.path().join("full"),
        &["--no_time", "--no_mhc", "--num_epochs", "1"],
    ));
    let n = per_epoch(&full);
    assert!(n >= 3, "{n} steps per epoch");
    let run = dir.path().join("more");
    let limit = (n + 2).to_string();
    let s = ok(small(
        &data,
        &run,
        &[&flags[..], &["--max_steps", &limit]].concat(),
    ));
    assert_eq!(
        (s["epochs"].as_u64(), s["steps"].as_u64()),
        (Some(2), Some(n + 2))
    );
    let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        evals.len(),
        1,
        "the last (partial) epoch is evaluated: {jsonl}"
    );
    assert_eq!(
        (evals[0]["epoch"].as_u64(), evals[0]["step"].as_u64()),
        (Some(2), Some(n + 2))
    );
    let e = err(small(
        &data,
        &dir.path().join("zero"),
        &["--max_steps", "0"],
    ));
    assert!(e.contains("--max_steps"), "{e}");
}

/// Every loss trains end to end (a finite, positive loss and a run directory with the loss in
/// `config.json`), and the loss flags that cannot work together are refused by name.
#[test]
fn every_loss_trains_and_bad_loss_flags_are_refused() {
    let (dir, data) = fixture_dir();
    for (name, extra) in [
        ("ce", &["--loss", "ce", "--ce_chunk_size", "7"][..]),
        ("gbce", &["--loss", "gbce", "--num_negatives", "16"][..]),
        (
            "popularity",
            &[
                "--loss",
                "sampled_softmax",
                "--num_negatives",
                "16",
                "--negative_sampler",
                "popularity",
            ][..],
        ),
        (
            "in_batch",
            &[
                "--loss",
                "sampled_softmax",
                "--num_negatives",
                "8",
                "--in_batch_negatives",
                "8",
            ][..],
        ),
    ] {
        let run = dir.path().join(name);
        let args = [&["--no_time", "--no_mhc", "--num_epochs", "2"][..], extra].concat();
        let s = ok(small(&data, &run, &args));
        assert_eq!(s["epochs"], 2, "{name}");
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let loss: f64 = metrics
            .lines()
            .next_back()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .unwrap()["train_loss"]
            .as_f64()
            .unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{name}: loss {loss}");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["optim"]["loss"], extra[1], "{name}");
        let in_batch = if name == "in_batch" { 8 } else { 0 };
        assert_eq!(cfg["optim"]["in_batch_negatives"], in_batch, "{name}");
    }
    for (flags, msg) in [
        (
            &["--loss", "gbce", "--num_negatives", "0"][..],
            "--num_negatives must be at least 1 for --loss gbce",
        ),
        (
            &["--loss", "gbce", "--negative_sampler", "popularity"][..],
            "--negative_sampler popularity needs --loss sampled_softmax",
        ),
        (
            &["--loss", "gbce", "--in_batch_negatives", "4"][..],
            "--in_batch_negatives needs --loss sampled_softmax",
        ),
        (
            &["--loss", "gbce", "--gbce_t", "1.5"][..],
            "--gbce_t 1.5: expected a value in [0, 1]",
        ),
        (
            &["--loss", "ce", "--ce_chunk_size", "0"][..],
            "--ce_chunk_size must be at least 1",
        ),
        (
            &["--loss", "ce", "--item_optimizer", "lazy_adam"][..],
            "--item_optimizer lazy_adam needs a loss that gathers item rows",
        ),
        (
            &["--item_optimizer", "rowwise_adagrad", "--l2_emb", "0.1"][..],
            "--item_optimizer rowwise_adagrad needs --l2_emb 0",
        ),
        (
            &["--item_lr", "0.1"][..],
            "--item_lr needs --item_optimizer lazy_adam or rowwise_adagrad",
        ),
        (
            &["--item_optimizer", "lazy_adam", "--item_lr", "0"][..],
            "--item_lr 0: expected a positive number",
        ),
        (
            &["--item_optimizer", "sgd"][..],
            "invalid value 'sgd' for '--item_optimizer",
        ),
    ] {
        let args = [&["--no_time", "--no_mhc"][..], flags].concat();
        let e = err(small(&data, &dir.path().join("bad"), &args));
        assert!(e.contains(msg), "{flags:?}: {e}");
    }
}

#[test]
fn flags_are_checked_before_any_file_is_read() {
    // A dataset that does not exist: each bad flag must be named, not the missing file.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file.txt");
    for (flag, value, message) in [
        ("--batch_size", "0", "--batch_size must be at least 1"),
        (
            "--eval_batch_size",
            "0",
            "--eval_batch_size must be at least 1",
        ),
        (
            "--num_heads",
            "3",
            "--hidden_units 16 is not divisible by --num_heads 3",
        ),
        ("--maxlen", "0", "--maxlen must be at least 1"),
        (
            "--dropout_rate",
            "1.5",
            "--dropout_rate 1.5 is not in [0, 1)",
        ),
    ] {
        let e = err(small(&missing, &dir.path().join("r"), &[flag, value]));
        assert!(e.contains(message), "{flag} {value}: {e}");
        assert!(
            !e.contains("no-such-file"),
            "{flag} {value} read the data first: {e}"
        );
    }
    assert!(
        !dir.path().join("r").exists(),
        "no run directory for refused flags"
    );
}

#[test]
fn logs_are_plain_text_on_a_pipe_and_json_lines_on_request() {
    let (dir, data) = fixture_dir();
    let run = dir.path().join("run");
    let text = small_cmd(&data, &run, &["--no_time", "--no_mhc", "--num_epochs", "1"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(text.status.success(), "{stderr}");
    assert!(stderr.contains("epoch done"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "ANSI escapes on a pipe: {stderr:?}"
    );
    let json = small_cmd(
        &data,
        &dir.path().join("run-json"),
        &[
            "--no_time",
            "--no_mhc",
            "--num_epochs",
            "1",
            "--log_format",
            "json",
        ],
    )
    .env("RUST_LOG", "info")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&json.stderr);
    assert!(json.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["fields"]["message"] == "epoch done"
            && e["level"] == "INFO"
            && e["fields"]["epoch"] == 1),
        "{stderr}"
    );
    let other = stderr
        .lines()
        .filter(|l| !l.starts_with('{') && !l.trim().is_empty());
    assert_eq!(
        other.count(),
        0,
        "every log line is a JSON object: {stderr}"
    );
}

/// The synthetic fixture's catalogue features (`genre:categorical`, `rank:numeric`).
fn fixture_features(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("items.tsv");
    let out = bin()
        .args([
            "data",
            "synthetic",
            "--users",
            "120",
            "--items",
            "200",
            "--output",
        ])
        .arg(dir.join("again.txt"))
        .arg("--features_output")
        .arg(&p)
        .output()
        .unwrap();
    succeeded(out);
    p
}

/// Every kind and every loss trains with `--item_features`; the run records the schema
/// fitted on the training items, the feature tables under their PyTorch-style names, and the
/// encoded values; `--item_repr features` has no ID table; a resumed run accepts the same
/// flags; bad combinations are usage errors.
#[test]
fn item_features_train_every_kind_and_loss() {
    let (dir, data) = fixture_dir();
    let features = fixture_features(dir.path());
    let f = features.to_str().unwrap();
    for (name, extra) in [
        ("sasrec-bce", &["--no_time", "--no_mhc"][..]),
        (
            "tisasrec-mhc-ce",
            &["--loss", "ce", "--ce_chunk_size", "64"][..],
        ),
        (
            "sasrec-mhc-gbce",
            &["--no_time", "--loss", "gbce", "--num_negatives", "8"][..],
        ),
        (
            "tisasrec-ssm-features",
            &[
                "--no_mhc",
                "--loss",
                "sampled_softmax",
                "--num_negatives",
                "8",
                "--item_repr",
                "features",
            ][..],
        ),
    ] {
        let run = dir.path().join(name);
        let args = [&["--num_epochs", "1", "--item_features", f][..], extra].concat();
        let s = ok(small(&data, &run, &args));
        assert_eq!(s["epochs"], 1, "{name}");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        let feat = &cfg["model"]["item_features"];
        let features_only = name.ends_with("features");
        assert_eq!(
            feat["repr"],
            if features_only {
                "features"
            } else {
                "id+features"
            },
            "{name}"
        );
        let cols = &feat["schema"]["columns"];
        assert_eq!(
            (&cols[0]["name"], &cols[0]["kind"]),
            (&"genre".into(), &"categorical".into())
        );
        assert_eq!(
            cols[0]["vocab"].as_array().unwrap().len(),
            16,
            "{name}: 16 genres"
        );
        assert_eq!(cols[1]["kind"], "numeric");
        let shapes = sasrec_models::read_shapes(run.join("model.safetensors")).unwrap();
        let names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"item_features.genre.weight"), "{names:?}");
        assert!(names.contains(&"item_features.rank.weight"), "{names:?}");
        assert_eq!(names.contains(&"item_emb.weight"), !features_only, "{name}");
        let values = sasrec_models::read_shapes(run.join("item_features.safetensors")).unwrap();
        let items = cfg["model"]["num_items"].as_i64().unwrap() + 1;
        assert_eq!(
            values,
            [
                ("item_features.genre.values".to_string(), vec![items, 1]),
                ("item_features.rank.values".to_string(), vec![items, 1])
            ],
            "{name}"
        );
    }
    let again = ok(small(
        &data,
        &dir.path().join("sasrec-bce"),
        &[
            "--no_time",
            "--no_mhc",
            "--num_epochs",
            "2",
            "--item_features",
            f,
        ],
    ));
    assert_eq!(again["epochs"], 2);
    for (flags, msg) in [
        (
            &["--item_repr", "features"][..],
            "--item_repr features needs --item_features FILE",
        ),
        (
            &["--item_features", f, "--item_repr", "id"][..],
            "--item_repr id ignores --item_features",
        ),
        (
            &[
                "--item_features",
                f,
                "--item_feature_columns",
                "genre:multi,studio:categorical",
            ][..],
            "column `studio` is not in the header",
        ),
    ] {
        let args = [&["--no_time", "--no_mhc"][..], flags].concat();
        let e = err(small(&data, &dir.path().join("bad-features"), &args));
        assert!(e.contains(msg), "{flags:?}: {e}");
    }
}

/// `--cold_items`: the test metrics come for cold and warm targets apart (their users adding
/// up, their means weighting to the whole), with the category-popularity baseline when the
/// features have a token column; the fraction is checked and recorded, so a resume with another one is refused.
#[test]
fn cold_items_report_cold_and_warm_targets_with_the_baseline() {
    let (dir, data) = fixture_dir();
    let features = fixture_features(dir.path());
    let f = features.to_str().unwrap();
    let base = [
        "--no_time",
        "--no_mhc",
        "--num_epochs",
        "2",
        "--cold_items",
        "0.25",
    ];
    for (name, extra) in [
        (
            "features",
            &["--item_features", f, "--item_repr", "features"][..],
        ),
        ("id-ce", &["--loss", "ce", "--ce_chunk_size", "64"][..]),
    ] {
        let run = dir.path().join(name);
        let s = ok(small(&data, &run, &[&base[..], extra].concat()));
        let test = &s["test_at_best"];
        let users = |m: &serde_json::Value| m["users"].as_u64().unwrap();
        let (cold, warm) = (&test["cold_start"]["cold"], &test["cold_start"]["warm"]);
        for protocol in ["full", "sampled"] {
            let (c, w, all) = (&cold[protocol], &warm[protocol], &test[protocol]);
            assert_eq!(users(c) + users(w), users(all), "{name} {protocol}");
            let mean = |m: &serde_json::Value| m["ndcg"].as_f64().unwrap() * users(m) as f64;
            let whole = all["ndcg"].as_f64().unwrap() * users(all) as f64;
            assert!(
                (mean(c) + mean(w) - whole).abs() < 1e-9,
                "{name} {protocol}: {test}"
            );
        }
        assert!(users(&cold["full"]) > 0, "{name}: no cold target: {test}");
        let baseline = &test["category_popularity"];
        assert_eq!(baseline.is_null(), name != "features", "{name}: {test}");
        if !baseline.is_null() {
            assert_eq!(users(&baseline["cold"]["full"]), users(&cold["full"]));
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["cold_items"], 0.25, "{name}");
    }
    let run = dir.path().join("id-ce");
    let other = [
        "--no_time",
        "--no_mhc",
        "--loss",
        "ce",
        "--cold_items",
        "0.3",
    ];
    let e = err(small(&data, &run, &other));
    assert!(e.contains("cold_items"), "{e}");
    let e = err(small(
        &data,
        &dir.path().join("bad"),
        &["--cold_items", "1.5"],
    ));
    assert!(
        e.contains("--cold_items: 1.5 is not a fraction strictly between 0 and 1"),
        "{e}"
    );
}

/// `data pack` writes a pack that trains exactly like its text file (same weights, bit for
/// bit); packing a pack, or a k-core flag the pack was not made with, is an error naming it.
#[test]
fn a_data_pack_trains_like_its_text_file() {
    let (dir, data) = fixture_dir();
    let pack = dir.path().join("fixture.pack");
    let out = bin()
        .args(["data", "pack", "--dataset"])
        .arg(&data)
        .arg("--output")
        .arg(&pack)
        .output()
        .unwrap();
    let line = succeeded(out);
    let want = format!(
        "sasrec-train data pack: wrote {} (120 users, ",
        pack.display()
    );
    assert!(
        line.starts_with(&want) && line.contains("with timestamps"),
        "{line}"
    );
    let flags = ["--no_mhc", "--num_epochs", "2"];
    let (text_run, pack_run) = (dir.path().join("text"), dir.path().join("pack"));
    let a = ok(small(&data, &text_run, &flags));
    let b = ok(small(&pack, &pack_run, &flags));
    assert_eq!(a["test_at_best"], b["test_at_best"]);
    let weights = |run: &Path| std::fs::read(run.join("model.safetensors")).unwrap();
    assert!(
        weights(&text_run) == weights(&pack_run),
        "pack and text trained differently"
    );
    let again = bin()
        .args(["data", "pack", "--dataset"])
        .arg(&pack)
        .arg("--output")
        .arg(dir.path().join("again.pack"))
        .output()
        .unwrap();
    let e = err(again);
    assert!(
        e.contains(&format!("{}: already a data pack", pack.display())),
        "{e}"
    );
    let e = err(small(
        &pack,
        &dir.path().join("k"),
        &["--min_user_count", "3"],
    ));
    assert!(
        e.contains(&format!(
            "{}: the pack holds the data after no k-core filter",
            pack.display()
        )),
        "{e}"
    );
}

/// `--block_wiring`, `--init` and `--adam_beta2` reach `config.json` (a plain model records
/// its resolved
/// wiring: SASRec post_ln, TiSASRec original, pre_ln with `--norm_first`; `init` is written only
/// when it is not pmixer), and the combinations that cannot work are refused by name.
#[test]
fn block_wiring_and_init_reach_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture(dir.path());
    let one = ["--num_epochs", "1", "--no_mhc"];
    for (name, flags, wiring, init) in [
        ("default", &["--no_time"][..], "post_ln", None),
        ("tisasrec", &[][..], "original", None),
        (
            "norm_first",
            &["--no_time", "--norm_first"][..],
            "pre_ln",
            None,
        ),
        (
            "original",
            &[
                "--no_time",
                "--block_wiring",
                "original",
                "--init",
                "normal_0.02",
            ][..],
            "original",
            Some("normal_0.02"),
        ),
        (
            "gated",
            &["--no_time", "--block_wiring", "gated"][..],
            "gated",
            None,
        ),
        (
            "right",
            &["--no_time", "--padding", "right"][..],
            "post_ln",
            None,
        ),
    ] {
        let run = dir.path().join(name);
        let beta2 = if name == "original" { "0.999" } else { "0.98" };
        let args = [&one[..], flags, &["--adam_beta2", beta2]].concat();
        succeeded(small(&data, &run, &args));
        let text = std::fs::read_to_string(run.join("config.json")).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(cfg["optim"]["adam_beta2"].to_string(), beta2, "{name}");
        assert_eq!(cfg["model"]["block_wiring"], wiring, "{name}");
        assert_eq!(cfg["model"]["norm_first"], wiring == "pre_ln", "{name}");
        assert_eq!(cfg["model"]["init"].as_str(), init, "{name}");
        let padding = (name == "right").then_some("right");
        assert_eq!(cfg["model"]["padding"].as_str(), padding, "{name}");
    }
    let mhc = dir.path().join("mhc");
    let args = ["--no_time", "--num_epochs", "1"];
    succeeded(small(&data, &mhc, &args));
    let text = std::fs::read_to_string(mhc.join("config.json")).unwrap();
    assert!(
        !text.contains("block_wiring"),
        "an mHC model has no wiring: {text}"
    );
    for (flags, msg) in [
        (
            &["--no_time", "--block_wiring", "original"][..],
            "--block_wiring original applies to plain residual blocks; mHC sub-layers are \
             always Pre-LN (add --no_mhc)",
        ),
        (
            &["--no_mhc", "--norm_first", "--block_wiring", "post_ln"][..],
            "--norm_first means --block_wiring pre_ln; it was combined with --block_wiring post_ln",
        ),
        (
            &["--no_mhc", "--block_wiring", "gated"][..],
            "--block_wiring gated is SASRec's (add --no_time); TiSASRec has post_ln, pre_ln and \
             original",
        ),
        (
            &["--no_mhc", "--padding", "masked"][..],
            "--padding masked is SASRec's (add --no_time); TiSASRec masks padded query rows as \
             its reference",
        ),
        (
            &["--no_time", "--padding", "left"][..],
            "invalid value 'left' for '--padding",
        ),
        (
            &["--block_wiring", "sandwich"][..],
            "invalid value 'sandwich' for '--block_wiring",
        ),
        (
            &["--init", "kaiming"][..],
            "invalid value 'kaiming' for '--init",
        ),
        (
            &["--no_mhc", "--adam_beta2", "1"][..],
            "--adam_beta2 1: expected a value in [0, 1)",
        ),
    ] {
        let e = err(small(&data, &dir.path().join("bad"), flags));
        assert!(e.contains(msg), "{flags:?}: {e}");
    }
}

/// `--metrics_k` and `--select_metric`: every evaluation reports HR, NDCG and MRR at each
/// cut-off under both protocols and the lists' coverage and popularity rank; the cut-off at 10
/// equals the headline; the best epoch is the one with the highest validation metric; a
/// resumed run may change the cut-offs but not the selection metric.
#[test]
fn metrics_at_cutoffs_and_the_selection_metric() {
    let (dir, data) = fixture_dir();
    let run = dir.path().join("run");
    let flags = ["--no_time", "--no_mhc", "--select_protocol", "full"];
    let extra = [
        "--num_epochs",
        "4",
        "--eval_every",
        "1",
        "--metrics_k",
        "20,1,10,5,10",
    ];
    let args = [&flags[..], &extra, &["--select_metric", "hr@50"]].concat();
    let s = ok(small(&data, &run, &args));
    assert_eq!(s["metrics_k"], serde_json::json!([1, 5, 10, 20, 50]));
    assert_eq!(s["selected_by"], "validation hr@50 (full)");
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    let at = |part: &serde_json::Value, k: u64| -> serde_json::Value {
        let c = part["cutoffs"].as_array().unwrap();
        c.iter().find(|c| c["k"] == k).unwrap().clone()
    };
    for rec in &records {
        for part in [&rec["valid"], &rec["test"]] {
            let ks: Vec<u64> = part["cutoffs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["k"].as_u64().unwrap())
                .collect();
            assert_eq!(ks, [1, 5, 10, 20, 50]);
            for protocol in ["sampled", "full"] {
                let ten = &at(part, 10)[protocol];
                assert_eq!(ten["hr"], part[protocol]["hr"], "{protocol}");
                assert_eq!(ten["ndcg"], part[protocol]["ndcg"], "{protocol}");
                let hr: Vec<f64> = [1, 5, 10, 20, 50]
                    .map(|k| at(part, k)[protocol]["hr"].as_f64().unwrap())
                    .to_vec();
                assert!(
                    hr.windows(2).all(|w| w[0] <= w[1]),
                    "HR@k grows with k: {hr:?}"
                );
                // HR@1 = NDCG@1 = MRR@1.
                let one = &at(part, 1)[protocol];
                assert_eq!(
                    (one["hr"].clone(), one["mrr"].clone()),
                    (one["ndcg"].clone(), one["hr"].clone())
                );
            }
            let coverage: Vec<f64> = [1, 5, 10, 20, 50]
                .map(|k| at(part, k)["coverage"].as_f64().unwrap())
                .to_vec();
            assert!(coverage.windows(2).all(|w| w[0] <= w[1]), "{coverage:?}");
            assert!(coverage[0] > 0.0 && coverage[4] <= 1.0, "{coverage:?}");
            let pop = at(part, 5)["mean_popularity_rank"].as_f64().unwrap();
            assert!(pop >= 1.0, "{pop}");
        }
    }
    let score = |r: &serde_json::Value| at(&r["valid"], 50)["full"]["hr"].as_f64().unwrap();
    let best = records
        .iter()
        .fold(&records[0], |b, r| if score(r) > score(b) { r } else { b });
    assert_eq!(s["best_epoch"], best["epoch"]);
    assert_eq!(s["test_at_best"], best["test"]);

    // Resuming with more cut-offs is allowed; with another selection metric it is not.
    let more = [
        &flags[..],
        &[
            "--num_epochs",
            "5",
            "--eval_every",
            "1",
            "--metrics_k",
            "1,100",
        ],
        &["--select_metric", "hr@50"],
    ]
    .concat();
    let s = ok(small(&data, &run, &more));
    assert_eq!(s["metrics_k"], serde_json::json!([1, 50, 100]));
    let other = [
        &flags[..],
        &[
            "--num_epochs",
            "6",
            "--eval_every",
            "1",
            "--select_metric",
            "ndcg@10",
        ],
    ]
    .concat();
    let out = small(&data, &run, &other);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("different settings (select_metric)"),
        "{e}"
    );

    for (flag, value, msg) in [
        (
            "--metrics_k",
            "5,0",
            "--metrics_k: every cut-off must be at least 1",
        ),
        ("--metrics_k", "ten", "invalid value 'ten' for '--metrics_k"),
        (
            "--select_metric",
            "ndcg",
            "'ndcg' is not ndcg@K, hr@K, mrr@K or mrr (K ≥ 1)",
        ),
        (
            "--select_metric",
            "auc@10",
            "'auc@10' is not ndcg@K, hr@K, mrr@K or mrr (K ≥ 1)",
        ),
    ] {
        let e = err(small(&data, &dir.path().join("bad"), &[flag, value]));
        assert!(e.contains(msg), "{flag} {value}: {e}");
    }
}
