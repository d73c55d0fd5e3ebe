//! Data-parallel training on Gloo (CPU) and mixed precision, end to end: replicas stay
//! bit-identical, 2 ranks × 64 equal 1 rank × 128, torchrun and the built-in launcher agree,
//! a dead rank ends the run with an error, AMP trains and resumes, a non-finite loss stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{as_rank, bin, err, fixture_with, free_port, ok};
use tch::Tensor;

/// The small dropout-free configuration (with dropout 0 every source of randomness is keyed
/// by (seed, epoch, user), so any number of ranks sees the same global batches); a flag in
/// `extra` replaces the base value.
fn args(data: &Path, run: &Path, extra: &[&str]) -> Vec<String> {
    const BASE: [(&str, &str); 11] = [
        ("--maxlen", "16"),
        ("--hidden_units", "16"),
        ("--num_blocks", "1"),
        ("--num_heads", "2"),
        ("--num_epochs", "3"),
        ("--eval_every", "3"),
        ("--dropout_rate", "0"),
        ("--num_workers", "1"),
        ("--device", "cpu"),
        ("--batch_size", "128"),
        ("--seed", "5"),
    ];
    let mut v: Vec<String> = BASE
        .iter()
        .filter(|(k, _)| !extra.contains(k))
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend([
        "--dump_rank_weights".into(),
        "--dataset".into(),
        data.display().to_string(),
    ]);
    v.extend(["--train_dir".into(), run.display().to_string()]);
    v
}

fn weights(path: PathBuf) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Largest |a − b| over all tensors, and whether they are bit-identical.
fn compare(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, bool) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f64;
    let mut same = true;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        max = max.max((ta - tb).abs().max().double_value(&[]));
        same &= ta.equal(tb);
    }
    (max, same)
}

/// The run with 2 Gloo ranks from the built-in launcher.
fn two_ranks(data: &Path, run: &Path) -> Output {
    ranks(data, run, 2)
}

/// The run with `n` Gloo ranks from the built-in launcher.
fn ranks(data: &Path, run: &Path, n: usize) -> Output {
    let (port, n) = (free_port().to_string(), n.to_string());
    let extra = [
        "--multi_gpu",
        "--nproc_per_node",
        &n,
        "--master_port",
        &port,
    ];
    bin().args(args(data, run, &extra)).output().unwrap()
}

/// Whether both ranks of `run` ended with bit-identical parameters.
fn replicas_identical(run: &Path) -> bool {
    let (r0, r1) = (run.join("rank0.safetensors"), run.join("rank1.safetensors"));
    compare(&weights(r0), &weights(r1)).1
}

/// Waits for `child` at most `limit`; a run still going after it is killed and fails the test.
fn wait_within(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("still running after {limit:?} (hang)");
}

fn torchrun() -> PathBuf {
    let py = std::env::var("SASREC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    py.with_file_name("torchrun")
}

#[test]
fn two_gloo_ranks_stay_identical_and_match_one_rank_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 300);
    let one = dir.path().join("one");
    let s1 = ok(bin().args(args(&data, &one, &[])).output().unwrap());
    let two = dir.path().join("two");
    let out = two_ranks(&data, &two);
    let s2 = ok(out);
    assert_eq!(s2["epochs"], 3, "one summary, from rank 0");
    assert!(replicas_identical(&two), "replicas must end bit-identical");
    let r0 = weights(two.join("rank0.safetensors"));
    // 2 ranks × 64 vs 1 rank × 128: same global batches, gradients averaged with the weights
    // of the global mean; only the summation order differs, far below the tolerance.
    let (max, _) = compare(&r0, &weights(one.join("rank0.safetensors")));
    assert!(max < 1e-4, "2×64 vs 1×128: max |Δθ| = {max}");
    let m = |s: &serde_json::Value| s["test_at_best"]["sampled"]["ndcg"].as_f64().unwrap();
    assert!((m(&s1) - m(&s2)).abs() < 1e-3, "{} vs {}", m(&s1), m(&s2));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["runtime"]["world_size"], 2);
    assert_eq!(cfg["runtime"]["backend"], "gloo");
}

/// Under a row-sparse item optimizer the ranks all-gather the item table's touched rows
/// instead of all-reducing its dense gradient: 2 and 3 Gloo ranks stay bit-identical and match
/// one process with the global batch (as the dense exchange does), and a rank sends 16 bytes
/// and 8 + 4·C per touched row (the most any rank touched) per step.
#[test]
fn sparse_row_exchange_across_two_and_three_ranks_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 300);
    for opt in ["lazy_adam", "rowwise_adagrad"] {
        let extra = [
            "--no_time",
            "--no_mhc",
            "--item_optimizer",
            opt,
            "--item_lr",
            "0.01",
        ];
        let one = dir.path().join(format!("{opt}-one"));
        ok(bin().args(args(&data, &one, &extra)).output().unwrap());
        let reference = weights(one.join("rank0.safetensors"));
        for n in [2, 3] {
            let run = dir.path().join(format!("{opt}-{n}"));
            let (port, ns) = (free_port().to_string(), n.to_string());
            let multi = [
                &extra[..],
                &[
                    "--multi_gpu",
                    "--nproc_per_node",
                    &ns,
                    "--master_port",
                    &port,
                ],
            ]
            .concat();
            let out = bin()
                .args(args(&data, &run, &multi))
                .env("RUST_LOG", "info")
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            ok(out);
            let r0 = weights(run.join("rank0.safetensors"));
            for r in 1..n {
                let other = weights(run.join(format!("rank{r}.safetensors")));
                assert!(
                    compare(&r0, &other).1,
                    "{opt} {n} ranks: rank {r} differs from rank 0"
                );
            }
            let (max, _) = compare(&r0, &reference);
            assert!(
                max < 1e-4,
                "{opt}: {n} ranks vs 1 process: max |Δθ| = {max}"
            );
            let line = log
                .lines()
                .find(|l| l.contains("item-table gradient exchange"))
                .unwrap_or_else(|| panic!("{opt} {n}: no exchange log line in {log}"));
            let field = |k: &str| -> u64 {
                let v = line
                    .split(&format!("{k}="))
                    .nth(1)
                    .unwrap_or_else(|| panic!("{line}"));
                v.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            // 16 bytes of (rows, weight), then m rows of 8 + 4·C bytes, m ≤ I, averaged over the
            // steps; the dense gradient is (I+1)·C·4 (a batch touches most of the fixture's
            // 200 items, so here the rows cost more than the table).
            let (sparse, dense) = (
                field("sparse_bytes_per_step"),
                field("dense_bytes_per_step"),
            );
            let row = 8 + 4 * 16;
            let items = dense / (4 * 16) - 1;
            assert!(
                sparse > 16 + row && sparse <= 16 + items * row,
                "{opt} {n}: {sparse} bytes per step, {items} items"
            );
        }
    }
}

/// Every rank evaluates its share of the users and the ranks are summed: the metrics of a
/// 2- and a 3-rank run equal, exactly, a single process evaluating the same weights.
#[test]
fn sharded_evaluation_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 301);
    for n in [2, 3] {
        let run = dir.path().join(format!("ranks{n}"));
        ok(ranks(&data, &run, n));
        let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let rec: serde_json::Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
        let weights = run.join("model.safetensors");
        let weights = weights.to_str().unwrap();
        let extra = ["--inference_only", "--state_dict_path", weights];
        let one = ok(bin()
            .args(args(&data, &dir.path().join(format!("one{n}")), &extra))
            .output()
            .unwrap());
        for part in ["valid", "test"] {
            assert_eq!(rec[part], one[part], "{n} ranks, {part}");
            assert_eq!(one[part]["full"]["users"], 301, "{n} ranks, {part}");
        }
    }
}

/// 129 users, global batch 128, 2 ranks: the last global batch holds one user, so rank 0's
/// shard is empty; it must still take part in every all-reduce.
#[test]
fn an_empty_shard_keeps_the_ranks_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 129);
    let run = dir.path().join("run");
    let s = ok(two_ranks(&data, &run));
    assert_eq!(s["epochs"], 3);
    assert!(replicas_identical(&run));
}

#[test]
fn torchrun_launch_matches_the_builtin_launcher() {
    let tr = torchrun();
    assert!(tr.is_file(), "{tr:?} missing: run scripts/setup.sh");
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 300);
    let builtin = dir.path().join("builtin");
    ok(two_ranks(&data, &builtin));
    let run = dir.path().join("torchrun");
    let child = Command::new(&tr)
        .args([
            "--no-python",
            "--nproc_per_node=2",
            &format!("--master_port={}", free_port()),
        ])
        .arg(env!("CARGO_BIN_EXE_sasrec-train"))
        .args(args(&data, &run, &["--multi_gpu", "--backend", "gloo"]))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let s = ok(wait_within(child, Duration::from_secs(120)));
    assert_eq!(s["epochs"], 3);
    let (_, same) = compare(
        &weights(run.join("rank0.safetensors")),
        &weights(builtin.join("rank0.safetensors")),
    );
    assert!(
        same,
        "torchrun and the built-in launcher run the same computation"
    );
}

/// The pid of the worker with `RANK=rank` whose command line mentions `run` (a torchrun child).
fn worker_pid(run: &Path, rank: usize) -> Option<u32> {
    let want = format!("RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        let mentions = String::from_utf8_lossy(&cmdline).contains(run.to_str()?);
        let is_rank = environ.split(|&b| b == 0).any(|v| v == want.as_bytes());
        let is_worker =
            String::from_utf8_lossy(&cmdline).starts_with(env!("CARGO_BIN_EXE_sasrec-train"));
        (mentions && is_rank && is_worker).then_some(pid)
    })
}

/// Elastic restart: under `torchrun --max_restarts 1`, rank 1 is killed (SIGKILL) mid-run
/// after the first checkpoint; torchrun restarts the group, every rank resumes from rank 0's
/// checkpoint, and the job ends with the same weights, bit for bit, as an uninterrupted run
/// (sampling and dropout are keyed by seed and epoch, so the repeated epoch is recomputed
/// exactly).
#[test]
fn torchrun_restarts_a_killed_rank_and_ends_with_the_uninterrupted_model() {
    let tr = torchrun();
    assert!(tr.is_file(), "{tr:?} missing: run scripts/setup.sh");
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 1200);
    let extra = [
        "--multi_gpu",
        "--backend",
        "gloo",
        "--num_epochs",
        "8",
        "--eval_every",
        "8",
        "--batch_size",
        "16",
        "--maxlen",
        "32",
    ];
    let launch = |run: &Path, restarts: &str| {
        Command::new(&tr)
            .args([
                "--no-python",
                "--nproc_per_node=2",
                &format!("--max_restarts={restarts}"),
                &format!("--master_port={}", free_port()),
            ])
            .arg(env!("CARGO_BIN_EXE_sasrec-train"))
            .args(args(&data, run, &extra))
            .env("RUST_LOG", "info")
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let straight = dir.path().join("straight");
    ok(wait_within(
        launch(&straight, "0"),
        Duration::from_secs(300),
    ));

    let run = dir.path().join("restarted");
    let child = launch(&run, "1");
    let ckpt = run.join("checkpoint.safetensors");
    let started = Instant::now();
    while !ckpt.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = worker_pid(&run, 1).expect("rank 1's process");
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = wait_within(child, Duration::from_secs(300));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "torchrun failed after the restart: {log}"
    );
    let s = ok(out);
    assert_eq!(s["epochs"], 8, "{log}");
    assert!(log.contains("resum"), "the restarted group resumed: {log}");
    let (max, same) = compare(
        &weights(run.join("model.safetensors")),
        &weights(straight.join("model.safetensors")),
    );
    assert!(same, "restarted vs uninterrupted: max |Δθ| = {max}");
    assert!(replicas_identical(&run));
}

/// Two torchrun "nodes" on one machine (`--nnodes 2`, c10d rendezvous, one Gloo rank each)
/// train the same model, bit for bit, as two local ranks of the built-in launcher.
#[test]
fn two_torchrun_nodes_match_two_local_ranks() {
    let tr = torchrun();
    assert!(tr.is_file(), "{tr:?} missing: run scripts/setup.sh");
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 300);
    let local = dir.path().join("local");
    ok(two_ranks(&data, &local));
    let run = dir.path().join("nodes");
    let endpoint = format!("127.0.0.1:{}", free_port());
    let node = |node_rank: usize| {
        Command::new(&tr)
            .args([
                "--no-python",
                "--nnodes=2",
                "--nproc_per_node=1",
                &format!("--node_rank={node_rank}"),
                "--rdzv_backend=c10d",
                &format!("--rdzv_endpoint={endpoint}"),
                "--rdzv_id=sasrec-two-nodes",
            ])
            .arg(env!("CARGO_BIN_EXE_sasrec-train"))
            .args(args(&data, &run, &["--multi_gpu", "--backend", "gloo"]))
            .env("RUST_LOG", "warn")
            // As the built-in launcher sets per rank (torchrun does only for several local
            // ranks): the thread count changes libtorch's summation order.
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (node(0), node(1));
    let outs = [
        wait_within(first, Duration::from_secs(180)),
        wait_within(second, Duration::from_secs(180)),
    ];
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["runtime"]["world_size"], 2);
    assert!(replicas_identical(&run));
    let (max, same) = compare(
        &weights(run.join("rank0.safetensors")),
        &weights(local.join("rank0.safetensors")),
    );
    assert!(same, "two nodes vs two local ranks: max |Δθ| = {max}");
}

#[test]
fn a_killed_rank_ends_the_other_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 3000);
    let port = free_port();
    let spawn = |rank: usize| {
        let run = dir.path().join("run");
        let a = args(
            &data,
            &run,
            &[
                "--num_epochs",
                "1000",
                "--maxlen",
                "50",
                "--batch_size",
                "16",
                "--multi_gpu",
            ],
        );
        as_rank(&mut bin(), rank, 2, port)
            .args(a)
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let rank0 = spawn(0);
    let mut rank1 = spawn(1);
    std::thread::sleep(Duration::from_secs(6));
    if rank1.try_wait().unwrap().is_some() {
        let out = rank1.wait_with_output().unwrap();
        panic!(
            "rank 1 ended early: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    rank1.kill().unwrap();
    let _ = rank1.wait();
    let out = wait_within(rank0, Duration::from_secs(60));
    let msg = err(out);
    assert!(msg.contains("rank 0 of 2 (gloo)"), "{msg}");
}

#[test]
fn amp_trains_in_bf16_and_fp16_and_fp16_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 300);
    let run = |name: &str, extra: &[&str]| {
        let r = dir.path().join(name);
        let a = args(
            &data,
            &r,
            &[&["--dropout_rate", "0.2", "--eval_every", "1"][..], extra].concat(),
        );
        (ok(bin().args(a).output().unwrap()), r)
    };
    let ndcg = |s: &serde_json::Value| s["test_at_best"]["sampled"]["ndcg"].as_f64().unwrap();
    let (fp32, _) = run("fp32", &[]);
    let (bf16, bf16_dir) = run("bf16", &["--use_amp"]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bf16_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["runtime"]["amp"], "bf16", "auto picks bf16 on the CPU");
    assert!(
        (ndcg(&fp32) - ndcg(&bf16)).abs() < 0.02,
        "{} vs {}",
        ndcg(&fp32),
        ndcg(&bf16)
    );
    let fp16 = ["--use_amp", "--amp_dtype", "fp16"];
    let (straight, straight_dir) = run("fp16", &fp16);
    assert!((ndcg(&fp32) - ndcg(&straight)).abs() < 0.02);
    // Interrupted after 2 epochs, then resumed: the loss scale travels in the checkpoint.
    run(
        "fp16-resumed",
        &[&fp16[..], &["--num_epochs", "2"]].concat(),
    );
    let (resumed, resumed_dir) = run("fp16-resumed", &fp16);
    assert_eq!(straight["test_at_best"], resumed["test_at_best"]);
    let (_, same) = compare(
        &weights(straight_dir.join("rank0.safetensors")),
        &weights(resumed_dir.join("rank0.safetensors")),
    );
    assert!(same, "resumed fp16 run equals the uninterrupted one");
}

#[test]
fn a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 300);
    let run = dir.path().join("run");
    // Epoch 1 warms up to lr 1e-3; from epoch 2 on the lr grows ×1000 per step until the
    // weights overflow.
    let a = args(
        &data,
        &run,
        &[
            "--no_time",
            "--no_mhc",
            "--batch_size",
            "16",
            "--eval_every",
            "1",
            "--warmup_steps",
            "19",
            "--lr_decay_rate",
            "1000",
            "--lr_decay_step",
            "1",
        ],
    );
    let msg = err(bin().args(a).output().unwrap());
    assert!(
        msg.contains("non-finite training loss")
            && msg.contains("in epoch 2")
            && msg.contains("the last good checkpoint")
            && msg.contains("1 epochs) is kept"),
        "{msg}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "only epoch 1 was recorded");
    assert!(!run.join("summary.json").exists());
    let w = weights(run.join("model.safetensors"));
    assert!(w
        .iter()
        .all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1));
}

#[test]
fn distributed_flag_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_with(dir.path(), 120);
    let run = dir.path().join("run");
    // CUDA hidden, so that the message is the same on a GPU machine.
    let msg = err(bin()
        .env("CUDA_VISIBLE_DEVICES", "")
        .args(args(&data, &run, &["--multi_gpu"]))
        .output()
        .unwrap());
    assert_eq!(
        msg,
        "error: --multi_gpu without CUDA devices: pass --nproc_per_node N to train with N Gloo ranks on the CPU"
    );
    let msg = err(as_rank(&mut bin(), 0, 1, free_port())
        .args(args(&data, &run, &["--multi_gpu", "--backend", "nccl"]))
        .output()
        .unwrap());
    assert!(
        msg.contains("NCCL") && msg.contains("--backend gloo"),
        "{msg}"
    );
}
