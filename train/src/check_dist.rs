//! `sasrec-train check-distributed`: a smoke test of multi-process communication (the
//! prototype's test_distributed.py). Run plainly it launches `--nproc_per_node` ranks of itself
//! ([`crate::launch`]); run as a rank (under torchrun or the launcher) it checks an all-reduce,
//! a broadcast and a barrier, and rank 0 prints one JSON report to stdout.

use std::time::{Duration, Instant};

use clap::Args;
use tch::{Device, Kind, Tensor};

use crate::dist::{compiled_backends, Backend, DistEnv, ProcessGroup};
use crate::error::{bail, usage, Context, Result};
use crate::launch::{launch, own_args};

/// Flags of `check-distributed`.
#[derive(Debug, Clone, Args)]
pub struct CheckDistArgs {
    /// Backend: nccl (CUDA) or gloo (CPU). Default: nccl when CUDA is available and NCCL is
    /// compiled in, else gloo.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Ranks to launch on this node. Default: the CUDA device count under nccl, else 2.
    /// Ignored when already running as a rank (RANK / WORLD_SIZE set).
    #[arg(long = "nproc_per_node", alias = "nproc-per-node")]
    pub nproc_per_node: Option<usize>,
    /// Port of the rendezvous store on 127.0.0.1 (used when MASTER_PORT is not set).
    #[arg(long = "master_port", alias = "master-port", default_value_t = 29500)]
    pub master_port: u16,
    /// Seconds the rendezvous and each collective may take before failing.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

impl CheckDistArgs {
    /// The backend to use: the flag, else nccl when CUDA is available and compiled in, else gloo.
    pub fn resolved_backend(&self) -> Backend {
        self.backend.unwrap_or_else(|| {
            if compiled_backends().contains(&Backend::Nccl) && tch::Cuda::is_available() {
                Backend::Nccl
            } else {
                Backend::Gloo
            }
        })
    }
}

/// Launches the ranks (no RANK / WORLD_SIZE in the environment) or runs the checks as one rank.
pub fn run(args: &CheckDistArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        usage!(
            "--timeout must be a positive number of seconds, got {}",
            args.timeout
        );
    }
    let backend = args.resolved_backend();
    match DistEnv::from_env(args.master_port).context("reading the distributed environment")? {
        None => {
            let nproc = match (args.nproc_per_node, backend) {
                (Some(n), _) => n,
                (None, Backend::Nccl) => {
                    let n = tch::Cuda::device_count().max(0) as usize;
                    if n == 0 {
                        usage!("--backend nccl needs CUDA devices, and none is available");
                    }
                    n
                }
                (None, Backend::Gloo) => 2,
            };
            launch(nproc, args.master_port, &own_args())
        }
        Some(env) => run_rank(&env, backend, Duration::from_secs_f64(args.timeout)),
    }
}

/// One op's outcome in the report.
#[derive(Debug, serde::Serialize)]
struct OpReport {
    ok: bool,
    seconds: f64,
    /// What this rank holds after the op (checked against the expected value before printing).
    result: serde_json::Value,
}

fn timed(device: Device, f: impl FnOnce() -> Result<()>) -> Result<OpReport> {
    let t0 = Instant::now();
    f()?;
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    Ok(OpReport {
        ok: true,
        seconds: t0.elapsed().as_secs_f64(),
        result: serde_json::Value::Null,
    })
}

/// One rank's checks: rendezvous, all-reduce, broadcast and barrier; rank 0 prints the report.
fn run_rank(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<()> {
    let (rank, world) = (env.rank, env.world_size);
    tracing::info!(
        rank,
        world_size = world,
        local_rank = env.local_rank,
        %backend,
        master = %format!("{}:{}", env.master_addr, env.master_port),
        agent_store = env.agent_store,
        "check-distributed rank starting"
    );
    let pg = ProcessGroup::new(env, backend, timeout)?;
    let device = match backend {
        Backend::Nccl => Device::Cuda(env.local_rank),
        Backend::Gloo => Device::Cpu,
    };
    let all_reduce = check_all_reduce(&pg, device)?;
    let broadcast = check_broadcast(&pg, device)?;
    let barrier = timed(device, || pg.barrier())?;
    tracing::info!(
        rank,
        all_reduce_s = all_reduce.seconds,
        broadcast_s = broadcast.seconds,
        barrier_s = barrier.seconds,
        "check-distributed rank ok"
    );
    pg.shutdown()?;
    if rank == 0 {
        let report = serde_json::json!({
            "world_size": world,
            "backend": backend,
            "devices": {
                "cuda_available": tch::Cuda::is_available(),
                "cuda_device_count": tch::Cuda::device_count(),
                "cudnn_available": tch::Cuda::cudnn_is_available(),
            },
            "backends_compiled": compiled_backends(),
            "all_reduce": all_reduce,
            "broadcast": broadcast,
            "barrier": barrier,
        });
        println!("{report}");
    }
    Ok(())
}

/// all_reduce: every rank contributes rank+1, so each element must be 1+2+..+world.
fn check_all_reduce(pg: &ProcessGroup, device: Device) -> Result<OpReport> {
    let (rank, world) = (pg.rank(), pg.world_size());
    let mut t = Tensor::full([4], (rank + 1) as f64, (Kind::Float, device));
    let mut report = timed(device, || pg.all_reduce_sum(&mut t))?;
    let want = (world * (world + 1) / 2) as f32;
    let got: Vec<f32> = Vec::<f32>::try_from(t.to_device(Device::Cpu))?;
    if got.iter().any(|&v| v != want) {
        bail!(
            "all_reduce on rank {rank} of {world}: expected {want} in every element, got {got:?}"
        );
    }
    report.result = serde_json::json!(got);
    Ok(report)
}

/// broadcast (int64, to cover an integer kind): rank 0's values replace the others' zeros.
fn check_broadcast(pg: &ProcessGroup, device: Device) -> Result<OpReport> {
    let (rank, world) = (pg.rank(), pg.world_size());
    let sent: [i64; 4] = [42, 7, -3, 1_000_000_007];
    let mut b = if rank == 0 {
        Tensor::from_slice(&sent).to_device(device)
    } else {
        Tensor::zeros([4], (Kind::Int64, device))
    };
    let mut report = timed(device, || pg.broadcast(&mut b, 0))?;
    let got: Vec<i64> = Vec::<i64>::try_from(b.to_device(Device::Cpu))?;
    if got != sent {
        bail!("broadcast from rank 0 to rank {rank} of {world}: expected {sent:?}, got {got:?}");
    }
    report.result = serde_json::json!(got);
    Ok(report)
}
