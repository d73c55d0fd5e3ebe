//! Multi-process training support: PyTorch's own c10d process groups (Gloo on CPU, NCCL on
//! CUDA) through the C++ shim `csrc/c10d.cpp`, configured from torchrun's environment or the
//! built-in launcher's ([`crate::launch`]).
//!
//! See docs/TOOLCHAIN.md, "Multi-GPU: PyTorch's own c10d through a C++ shim".

use std::ffi::{c_char, c_int, CString};
use std::fmt;
use std::time::Instant;

use crate::error::{bail, usage, Error, Result};
use crate::shim::last_error;

/// A collective-communication backend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Backend {
    /// Gloo: CPU tensors, TCP between ranks; always compiled in.
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank; needs a CUDA build (cfg `sasrec_nccl`).
    Nccl,
}

impl Backend {
    /// The lowercase name torch.distributed uses ("gloo", "nccl").
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    fn id(self) -> c_int {
        match self {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Backends compiled into this binary ("gloo", and "nccl" under cfg(sasrec_nccl)).
pub fn compiled_backends() -> Vec<Backend> {
    let mut v = vec![Backend::Gloo];
    if cfg!(sasrec_nccl) {
        v.push(Backend::Nccl);
    }
    v
}

/// This process's place in a multi-process run, as torchrun (or [`crate::launch::launch`])
/// describes it through environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank (`RANK`), `0..world_size`.
    pub rank: usize,
    /// Rank on this node (`LOCAL_RANK`; defaults to `rank`): the CUDA device index under NCCL.
    pub local_rank: usize,
    /// Number of ranks (`WORLD_SIZE`).
    pub world_size: usize,
    /// Ranks on this node (`LOCAL_WORLD_SIZE`; defaults to `world_size`).
    pub local_world_size: usize,
    /// Host of the rendezvous store (`MASTER_ADDR`; defaults to 127.0.0.1).
    pub master_addr: String,
    /// Port of the rendezvous store (`MASTER_PORT`; defaults to `from_env`'s `default_port`).
    pub master_port: u16,
    /// torchrun's agent already hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`).
    pub agent_store: bool,
    /// torchrun's restart attempt (`TORCHELASTIC_RESTART_COUNT`; defaults to 0).
    pub restart_count: usize,
}

impl DistEnv {
    /// From torchrun's / the launcher's environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
    /// MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT);
    /// Ok(None) when RANK and WORLD_SIZE are both absent; a clear error naming the variable when one is malformed or rank >= world_size.
    pub fn from_env(default_port: u16) -> Result<Option<DistEnv>> {
        Self::from_vars(
            |k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()),
            default_port,
        )
    }

    /// [`DistEnv::from_env`] over any variable lookup (`get(name)`), for tests.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        default_port: u16,
    ) -> Result<Option<DistEnv>> {
        let (rank, world_size) = match (get("RANK"), get("WORLD_SIZE")) {
            (None, None) => return Ok(None),
            (Some(_), None) => usage!("RANK is set but WORLD_SIZE is not"),
            (None, Some(_)) => usage!("WORLD_SIZE is set but RANK is not"),
            (Some(r), Some(w)) => (
                parse_var::<usize>("RANK", &r)?,
                parse_var::<usize>("WORLD_SIZE", &w)?,
            ),
        };
        if world_size == 0 {
            usage!("WORLD_SIZE=0: it must be at least 1");
        }
        if rank >= world_size {
            usage!("RANK={rank} is out of range: it must be less than WORLD_SIZE={world_size}");
        }
        let opt = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let (local_rank, local_world_size) = local_placement(&opt, rank, world_size)?;
        let master_port = match opt("MASTER_PORT") {
            Some(v) => parse_var::<u16>("MASTER_PORT", &v)?,
            None => default_port,
        };
        let agent_store = agent_store(opt("TORCHELASTIC_USE_AGENT_STORE"))?;
        let restart_count = match opt("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => parse_var::<usize>("TORCHELASTIC_RESTART_COUNT", &v)?,
            None => 0,
        };
        Ok(Some(DistEnv {
            rank,
            local_rank,
            world_size,
            local_world_size,
            master_addr: opt("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            agent_store,
            restart_count,
        }))
    }
}

/// `LOCAL_RANK` and `LOCAL_WORLD_SIZE` (defaults: one node holding every rank).
fn local_placement(
    opt: &impl Fn(&str) -> Option<String>,
    rank: usize,
    world_size: usize,
) -> Result<(usize, usize)> {
    let local_world_size = match opt("LOCAL_WORLD_SIZE") {
        Some(v) => parse_var::<usize>("LOCAL_WORLD_SIZE", &v)?,
        None => world_size,
    };
    if local_world_size == 0 || local_world_size > world_size {
        usage!("LOCAL_WORLD_SIZE={local_world_size} must be in 1..=WORLD_SIZE={world_size}");
    }
    let local_rank = match opt("LOCAL_RANK") {
        Some(v) => parse_var::<usize>("LOCAL_RANK", &v)?,
        None => rank % local_world_size,
    };
    if local_rank >= local_world_size {
        usage!(
            "LOCAL_RANK={local_rank} is out of range: it must be less than \
             LOCAL_WORLD_SIZE={local_world_size}"
        );
    }
    Ok((local_rank, local_world_size))
}

/// `TORCHELASTIC_USE_AGENT_STORE` as torchrun writes it (`True` / `False`).
fn agent_store(value: Option<String>) -> Result<bool> {
    Ok(match value {
        None => false,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => usage!("TORCHELASTIC_USE_AGENT_STORE={v:?} is not a boolean (True / False)"),
        },
    })
}

fn parse_var<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    value
        .trim()
        .parse::<T>()
        .map_err(|e| Error::Usage(format!("{name}={value:?} is malformed: {e}")))
}

/// NCCL needs this binary built with it, CUDA, and a device for this rank's LOCAL_RANK.
fn check_nccl(env: &DistEnv) -> Result<()> {
    // SAFETY: a plain query of the shim.
    if unsafe { sasrec_c10d_has_nccl() } == 0 {
        usage!(
            "this binary was built without NCCL (it needs a CUDA libtorch and the \
             nvidia-nccl / nvidia-cuda headers at build time); use --backend gloo"
        );
    }
    if !tch::Cuda::is_available() {
        usage!("the NCCL backend needs CUDA, but no CUDA device is available; use --backend gloo");
    }
    let n = tch::Cuda::device_count().max(0) as usize;
    if env.local_rank >= n {
        usage!(
            "NCCL rank {} uses cuda:{} (LOCAL_RANK) but only {n} CUDA device(s) are visible",
            env.rank,
            env.local_rank
        );
    }
    Ok(())
}

/// The environment in the C types of the shim's rendezvous.
struct RendezvousArgs {
    addr: CString,
    rank: c_int,
    world: c_int,
    local_rank: c_int,
    restarts: c_int,
}

impl RendezvousArgs {
    /// Each value converted, or an error naming its variable.
    fn new(env: &DistEnv) -> Result<Self> {
        Ok(Self {
            addr: CString::new(env.master_addr.as_str()).map_err(|_| {
                Error::Usage(format!(
                    "MASTER_ADDR={:?} contains a NUL byte",
                    env.master_addr
                ))
            })?,
            rank: to_c_int("RANK", env.rank)?,
            world: to_c_int("WORLD_SIZE", env.world_size)?,
            local_rank: to_c_int("LOCAL_RANK", env.local_rank)?,
            restarts: to_c_int("TORCHELASTIC_RESTART_COUNT", env.restart_count)?,
        })
    }
}

/// The shim's rendezvous and backend creation: the handle, or the shim's message.
fn rendezvous(
    args: &RendezvousArgs,
    env: &DistEnv,
    backend: Backend,
    timeout: std::time::Duration,
) -> std::result::Result<*mut SasrecPg, String> {
    let timeout_ms = i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut pg = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the shim catches all C++ exceptions.
    let rc = unsafe {
        sasrec_c10d_init(
            args.addr.as_ptr(),
            env.master_port,
            args.rank,
            args.world,
            args.local_rank,
            env.agent_store as c_int,
            args.restarts,
            backend.id(),
            timeout_ms,
            &mut pg,
        )
    };
    if rc != 0 || pg.is_null() {
        return Err(last_error());
    }
    Ok(pg)
}

/// A failed rendezvous, saying whether it timed out waiting for the other ranks.
fn rendezvous_error(env: &DistEnv, where_: &str, seconds: f64, msg: &str) -> Error {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        return Error::Failed(format!(
            "rendezvous timed out after {seconds:.1}s on rank {}: waited for all {} ranks at \
             {where_} (is every rank started, and MASTER_ADDR:MASTER_PORT reachable?): {msg}",
            env.rank, env.world_size
        ));
    }
    Error::Failed(format!(
        "rendezvous failed on rank {} at {where_}: {msg}",
        env.rank
    ))
}

/// The shim's opaque process-group handle.
#[repr(C)]
struct SasrecPg {
    _private: [u8; 0],
}

extern "C" {
    fn sasrec_c10d_has_nccl() -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn sasrec_c10d_init(
        master_addr: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        local_rank: c_int,
        agent_store: c_int,
        restart_count: c_int,
        backend: c_int,
        timeout_ms: i64,
        out: *mut *mut SasrecPg,
    ) -> c_int;
    fn sasrec_c10d_all_reduce_sum(pg: *mut SasrecPg, t: *mut torch_sys::C_tensor) -> c_int;
    fn sasrec_c10d_broadcast(pg: *mut SasrecPg, t: *mut torch_sys::C_tensor, root: c_int) -> c_int;
    fn sasrec_c10d_all_gather(
        pg: *mut SasrecPg,
        input: *mut torch_sys::C_tensor,
        output: *mut torch_sys::C_tensor,
        world: c_int,
    ) -> c_int;
    fn sasrec_c10d_barrier(pg: *mut SasrecPg) -> c_int;
    fn sasrec_c10d_shutdown(pg: *mut SasrecPg) -> c_int;
    fn sasrec_c10d_free(pg: *mut SasrecPg);
}

fn to_c_int(name: &str, v: usize) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| Error::Usage(format!("{name}={v} does not fit a C int")))
}

/// A c10d process group (store + backend) owned through the C++ shim.
///
/// Collectives block until done (or until the timeout given to [`ProcessGroup::new`]); under
/// NCCL "done" means enqueued on the current CUDA stream, as in PyTorch.
pub struct ProcessGroup {
    pg: *mut SasrecPg,
    rank: usize,
    world_size: usize,
    backend: Backend,
}

impl ProcessGroup {
    /// Rendezvous through a c10d::TCPStore and create the backend: the backend checked
    /// against this binary and its devices, then the shim's rendezvous. `timeout` bounds both
    /// the rendezvous and every collective.
    pub fn new(env: &DistEnv, backend: Backend, timeout: std::time::Duration) -> Result<Self> {
        if backend == Backend::Nccl {
            check_nccl(env)?;
        }
        let where_ = format!(
            "{}:{} (world size {}, {backend})",
            env.master_addr, env.master_port, env.world_size
        );
        tracing::debug!(rank = env.rank, at = %where_, agent_store = env.agent_store, "c10d rendezvous");
        let args = RendezvousArgs::new(env)?;
        let started = Instant::now();
        let pg = rendezvous(&args, env, backend, timeout)
            .map_err(|msg| rendezvous_error(env, &where_, started.elapsed().as_secs_f64(), &msg))?;
        tracing::debug!(
            rank = env.rank,
            seconds = started.elapsed().as_secs_f64(),
            "c10d process group ready"
        );
        Ok(ProcessGroup {
            pg,
            rank: env.rank,
            world_size: env.world_size,
            backend,
        })
    }

    /// This process's global rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend this group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn check(&self, rc: c_int, op: &str) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        bail!(
            "{op} on rank {} of {} ({}): {}",
            self.rank,
            self.world_size,
            self.backend,
            last_error()
        )
    }

    fn check_tensor(&self, t: &tch::Tensor, op: &str) -> Result<()> {
        if !t.is_contiguous() {
            bail!(
                "{op} on rank {} of {}: the tensor must be contiguous",
                self.rank,
                self.world_size
            );
        }
        let on_cuda = t.device().is_cuda();
        match (self.backend, on_cuda) {
            (Backend::Nccl, false) => {
                bail!(
                    "{op} on rank {}: NCCL needs a CUDA tensor, got {:?}",
                    self.rank,
                    t.device()
                )
            }
            (Backend::Gloo, true) => {
                bail!(
                    "{op} on rank {}: Gloo here takes CPU tensors, got {:?}",
                    self.rank,
                    t.device()
                )
            }
            _ => Ok(()),
        }
    }

    /// In-place sum over ranks of a contiguous tensor (any float/int kind).
    pub fn all_reduce_sum(&self, t: &mut tch::Tensor) -> Result<()> {
        self.check_tensor(t, "all_reduce")?;
        // SAFETY: `as_mut_ptr` is the tensor's `at::Tensor*`; the handle is live.
        let rc = unsafe { sasrec_c10d_all_reduce_sum(self.pg, t.as_mut_ptr()) };
        self.check(rc, "all_reduce")
    }

    /// Every rank's `input` (n, …), concatenated in rank order: (world · n, …). Every rank must
    /// pass the same shape and kind.
    pub fn all_gather(&self, input: &tch::Tensor) -> Result<tch::Tensor> {
        self.check_tensor(input, "all_gather")?;
        let mut size = input.size();
        if size.is_empty() {
            bail!("all_gather on rank {}: a 0-dim tensor", self.rank);
        }
        size[0] *= self.world_size as i64;
        let mut out = tch::Tensor::zeros(&size, (input.kind(), input.device()));
        let mut input = input.shallow_clone();
        // SAFETY: both handles are live tensors for the call; `out` is contiguous and has
        // room for `world` copies of `input` along dimension 0.
        let rc = unsafe {
            sasrec_c10d_all_gather(
                self.pg,
                input.as_mut_ptr(),
                out.as_mut_ptr(),
                self.world_size as c_int,
            )
        };
        self.check(rc, "all_gather")?;
        Ok(out)
    }

    /// In-place broadcast from `root`.
    pub fn broadcast(&self, t: &mut tch::Tensor, root: usize) -> Result<()> {
        self.check_tensor(t, "broadcast")?;
        if root >= self.world_size {
            bail!(
                "broadcast root {root} is out of range for world size {}",
                self.world_size
            );
        }
        // SAFETY: as in `all_reduce_sum`.
        let rc = unsafe { sasrec_c10d_broadcast(self.pg, t.as_mut_ptr(), root as c_int) };
        self.check(rc, "broadcast")
    }

    /// Blocks until every rank has reached the barrier.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: the handle is live.
        let rc = unsafe { sasrec_c10d_barrier(self.pg) };
        self.check(rc, "barrier")
    }

    /// Clean shutdown (also done by Drop, ignoring errors there).
    pub fn shutdown(mut self) -> Result<()> {
        // SAFETY: the handle is live; Drop frees it afterwards.
        let rc = unsafe { sasrec_c10d_shutdown(self.pg) };
        let res = self.check(rc, "shutdown");
        self.free();
        res
    }

    fn free(&mut self) {
        if !self.pg.is_null() {
            // SAFETY: shutdown is idempotent; the handle is freed exactly once.
            unsafe {
                sasrec_c10d_shutdown(self.pg);
                sasrec_c10d_free(self.pg);
            }
            self.pg = std::ptr::null_mut();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.free();
    }
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("backend", &self.backend)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(
            |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            29500,
        )
    }

    #[test]
    fn from_vars_parses_and_validates() {
        assert_eq!(env(&[]).unwrap(), None);
        let e = env(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1234")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.rank, e.local_rank, e.world_size, e.local_world_size),
            (1, 1, 2, 2)
        );
        assert_eq!(
            (e.master_addr.as_str(), e.master_port, e.agent_store),
            ("127.0.0.1", 1234, false)
        );
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.local_rank, e.master_port, e.agent_store, e.restart_count),
            (1, 29500, true, 2)
        );
        let err = env(&[("RANK", "5"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RANK=5"), "{err}");
        let err = env(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RANK=\"x\""), "{err}");
        let err = env(&[("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("RANK"), "{err}");
        let err = env(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "99999")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_PORT"), "{err}");
    }

    #[test]
    fn backend_names() {
        assert_eq!(Backend::Gloo.to_string(), "gloo");
        assert_eq!(serde_json::to_string(&Backend::Nccl).unwrap(), "\"nccl\"");
        assert_eq!(compiled_backends()[0], Backend::Gloo);
    }
}
