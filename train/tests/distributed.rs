//! Multi-process tests of `sasrec-train check-distributed` and the c10d wrapper (`dist.rs`):
//! the built-in launcher with 2 and 3 Gloo ranks, a torchrun launch (agent store), a rank
//! whose peer never comes, a bad environment, a peer killed mid-run, and NCCL's "no CUDA"
//! error. Every child runs under a deadline and is killed (with its process group) on overrun,
//! so a hang fails the test instead of blocking CI.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{as_rank, free_port};
use sasrec_train::dist::{compiled_backends, Backend, DistEnv, ProcessGroup};

const BIN: &str = env!("CARGO_BIN_EXE_sasrec-train");

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Spawns `cmd` in its own process group with piped output and waits at most `limit`;
/// on overrun kills the whole group (launched ranks included) and panics.
fn run_with_deadline(mut cmd: Command, limit: Duration) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let out = reader(&mut child, true);
    let err = reader(&mut child, false);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > limit {
            kill_group(&mut child);
            let stderr = err.join().unwrap();
            panic!("{cmd:?} did not finish within {limit:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    Outcome {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let mut src: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = src.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

fn kill_group(child: &mut Child) {
    // The child leads its own process group: take every launched rank down with it.
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(format!("-{}", child.id()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A `sasrec-train` command without any inherited distributed environment.
fn bin() -> Command {
    let mut c = Command::new(BIN);
    for v in [
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE",
        "TORCHELASTIC_RESTART_COUNT",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c
}

/// The JSON report rank 0 prints (the last stdout line that parses as an object).
fn report(o: &Outcome) -> serde_json::Value {
    o.stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.trim())
                .ok()
                .filter(|v| v.is_object())
        })
        .unwrap_or_else(|| {
            panic!(
                "no JSON report on stdout:\n{}\nstderr:\n{}",
                o.stdout, o.stderr
            )
        })
}

fn assert_all_ok(o: &Outcome, world: u64) {
    assert!(
        o.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        o.stdout,
        o.stderr
    );
    let r = report(o);
    assert_eq!(r["world_size"], world, "{r}");
    assert_eq!(r["backend"], "gloo", "{r}");
    assert!(
        r["backends_compiled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "gloo"),
        "{r}"
    );
    // Every rank contributed rank + 1: the sum 1 + 2 + … + world in each of the 4 elements.
    let sum = (world * (world + 1) / 2) as f64;
    assert_eq!(
        r["all_reduce"]["result"],
        serde_json::json!(vec![sum; 4]),
        "{r}"
    );
    assert_eq!(
        r["broadcast"]["result"],
        serde_json::json!([42, 7, -3, 1_000_000_007]),
        "{r}"
    );
    for op in ["all_reduce", "broadcast", "barrier"] {
        assert_eq!(r[op]["ok"], true, "{op}: {r}");
        let s = r[op]["seconds"].as_f64().unwrap();
        assert!(s > 0.0 && s < 60.0, "{op} took {s} s: {r}");
    }
    assert_eq!(
        r["devices"]["cuda_available"],
        tch::Cuda::is_available(),
        "{r}"
    );
    assert_eq!(
        r["devices"]["cuda_device_count"],
        tch::Cuda::device_count(),
        "{r}"
    );
}

fn launcher_run(nproc: usize) -> Outcome {
    let mut c = bin();
    c.args(["check-distributed", "--backend", "gloo", "--nproc_per_node"])
        .arg(nproc.to_string())
        .arg("--master_port")
        .arg(free_port().to_string());
    run_with_deadline(c, Duration::from_secs(120))
}

#[test]
fn launcher_two_gloo_ranks() {
    assert_all_ok(&launcher_run(2), 2);
}

#[test]
fn launcher_three_gloo_ranks() {
    assert_all_ok(&launcher_run(3), 3);
}

/// torchrun from the project's virtualenv: next to $SASREC_PYTHON, else ../.venv/bin.
fn torchrun() -> Option<PathBuf> {
    let from_python = std::env::var_os("SASREC_PYTHON")
        .or_else(|| option_env!("SASREC_PYTHON").map(Into::into))
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.join("torchrun")));
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/torchrun");
    from_python
        .into_iter()
        .chain([fallback])
        .find(|p| p.is_file())
}

#[test]
fn torchrun_two_gloo_ranks_use_the_agent_store() {
    let torchrun = torchrun().expect(
        "no torchrun next to $SASREC_PYTHON or in ../.venv/bin (scripts/setup.sh installs it)",
    );
    let mut c = Command::new(&torchrun);
    for v in [
        "RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE",
    ] {
        c.env_remove(v);
    }
    c.env("OMP_NUM_THREADS", "1")
        .arg("--no-python")
        .arg("--nproc_per_node=2")
        .arg(format!("--master_port={}", free_port()))
        .args([
            BIN,
            "check-distributed",
            "--backend",
            "gloo",
            "--timeout",
            "60",
        ]);
    let o = run_with_deadline(c, Duration::from_secs(180));
    assert_all_ok(&o, 2);
}

#[test]
fn missing_peer_times_out_in_rendezvous() {
    let port = free_port();
    let mut c = bin();
    as_rank(&mut c, 0, 2, port).args(["check-distributed", "--backend", "gloo", "--timeout", "3"]);
    let o = run_with_deadline(c, Duration::from_secs(60));
    assert!(
        !o.status.success(),
        "a lone rank must fail; stderr:\n{}",
        o.stderr
    );
    assert!(
        o.elapsed < Duration::from_secs(20),
        "took {:?}; stderr:\n{}",
        o.elapsed,
        o.stderr
    );
    assert!(o.stderr.contains("rendezvous timed out"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("world size 2"), "{}", o.stderr);
}

#[test]
fn bad_rank_is_named() {
    let mut c = bin();
    c.env("RANK", "5")
        .env("WORLD_SIZE", "2")
        .args(["check-distributed", "--backend", "gloo"]);
    let o = run_with_deadline(c, Duration::from_secs(60));
    assert!(!o.status.success(), "stderr:\n{}", o.stderr);
    assert!(o.stderr.contains("RANK=5"), "{}", o.stderr);
    assert!(o.stderr.contains("WORLD_SIZE=2"), "{}", o.stderr);
}

/// This test process is rank 0 (through the library), a `check-distributed` child rank 1;
/// once the group is up the child is killed, and rank 0's next collective must fail fast
/// (Gloo sees the TCP pair close) rather than wait for the 60 s timeout.
#[test]
fn killed_peer_fails_the_next_collective() {
    let port = free_port();
    let mut c = bin();
    as_rank(&mut c, 1, 2, port)
        .args(["check-distributed", "--backend", "gloo", "--timeout", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn rank 1");
    let env = DistEnv {
        rank: 0,
        local_rank: 0,
        world_size: 2,
        local_world_size: 2,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        restart_count: 0,
    };
    let pg = match ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(60)) {
        Ok(pg) => pg,
        Err(e) => {
            kill_group(&mut child);
            panic!("rendezvous with the child rank failed: {e:#}");
        }
    };
    assert_eq!(
        (pg.rank(), pg.world_size(), pg.backend()),
        (0, 2, Backend::Gloo)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    let mut t = tch::Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu));
    let err = pg
        .all_reduce_sum(&mut t)
        .expect_err("all_reduce with a dead peer must fail");
    let msg = format!("{err:#}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}: {msg}",
        started.elapsed()
    );
    assert!(
        msg.starts_with("all_reduce on rank 0 of 2 (gloo): "),
        "{msg}"
    );
    drop(pg);
}

#[test]
fn nccl_without_cuda_is_a_clear_error() {
    let nccl_usable = compiled_backends().contains(&Backend::Nccl) && tch::Cuda::is_available();
    let mut c = bin();
    as_rank(&mut c, 0, 1, free_port()).args([
        "check-distributed",
        "--backend",
        "nccl",
        "--timeout",
        "60",
    ]);
    let o = run_with_deadline(c, Duration::from_secs(120));
    if nccl_usable {
        assert!(o.status.success(), "stderr:\n{}", o.stderr);
        assert_eq!(report(&o)["backend"], "nccl");
    } else {
        assert!(!o.status.success(), "stderr:\n{}", o.stderr);
        let want = if compiled_backends().contains(&Backend::Nccl) {
            "the NCCL backend needs CUDA, but no CUDA device is available"
        } else {
            "this binary was built without NCCL"
        };
        assert!(o.stderr.contains(want), "{}", o.stderr);
    }
}

/// A failing rank makes the launcher stop the others and name the rank.
#[test]
fn launcher_reports_a_failed_rank() {
    // Two NCCL ranks with no CUDA device visible fail on any host (with or without GPUs,
    // with or without NCCL compiled in): the launcher must report the failed rank.
    let mut c = bin();
    c.env("CUDA_VISIBLE_DEVICES", "")
        .args([
            "check-distributed",
            "--backend",
            "nccl",
            "--nproc_per_node",
            "2",
            "--master_port",
        ])
        .arg(free_port().to_string());
    let o = run_with_deadline(c, Duration::from_secs(120));
    assert!(!o.status.success(), "stderr:\n{}", o.stderr);
    assert!(
        o.stderr
            .contains("exited with exit status: 2; stopped the other ranks"),
        "{}",
        o.stderr
    );
}
