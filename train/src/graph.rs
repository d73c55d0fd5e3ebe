//! The CUDA-graph training step: one optimiser step (forward, loss, backward, fp16 unscaling,
//! fused Adam) captured once into a CUDA graph and replayed for every full batch, so that a step
//! costs one graph launch instead of hundreds of kernel launches (`torch.cuda.graph`,
//! whole-network capture). The C++ side is `csrc/cuda_graph.cpp`.
//!
//! * **When.** [`run_mode`] decides once per run, [`step_mode`] per batch: a graph needs a CUDA
//!   device, a binary built with CUDA graphs, no `--no_cuda_graph`, one process (the gradient
//!   all-reduce stays outside capture), `--loss bce` (the other losses select the positions Ω
//!   with `nonzero`, a host synchronisation with a data-dependent shape) and a full batch; the
//!   ragged last batch of an epoch runs eagerly.
//! * **Inputs.** A graph reads fixed addresses, so each batch is copied into [`StaticInputs`].
//!   The model range-checks `seq` and the interval matrix on the host and copies them to the
//!   device itself (`SeqRecModel::feats`), so those two buffers are pinned host memory and the
//!   graph holds their host-to-device copies (non-blocking copies from pinned memory are
//!   captured as memcpy nodes, aten/src/ATen/native/cuda/Copy.cu); a batch reaches them through
//!   a device staging buffer and a device-to-host copy on the stream, never a host write that
//!   could race a replay still queued. `pos` and `neg` are device buffers.
//! * **Optimiser.** The learning rate and Adam's step count are device tensors
//!   ([`DeviceSchedule`]): the schedule writes the learning rate before each replay, and an fp16
//!   overflow skips the update on the device ([`Adam::step_on_device`]).
//! * **Dropout.** The trainer seeds the generator per (seed, epoch, batch) before every step,
//!   replays included. A replay reads the CUDA generator's current seed and offset:
//!   `CUDAGraph::replay` calls `CUDAGeneratorState::replay_prologue`, which fills the graph's
//!   seed and offset tensors from the generator and advances its offset by the graph's total
//!   (aten/src/ATen/cuda/CUDAGeneratorImpl.cpp; Note [CUDA Graph-safe RNG states] in
//!   CUDAGeneratorImpl.h: graphed execution draws the same numbers as eager execution).
//! * **Warm-up.** As `torch.cuda.graph` asks, the first [`WARM_UP_STEPS`] full batches run the
//!   same step eagerly on the graph's side stream, then the next is captured and replayed.

use std::ffi::c_void;
use std::fmt;
use std::os::raw::c_int;
use std::panic::{self, AssertUnwindSafe};

use sasrec_shared::Batch;
use tch::{Device, Kind, Tensor};

use crate::config::LossKind;
use crate::device::host_batch;
use crate::error::{failed, Error, Result};
use crate::optim::DeviceSchedule;
use crate::shim::last_error;

/// Whether this binary has CUDA graphs (cfg `sasrec_cuda`, set by build.rs when this torch has
/// CUDA and the CUDA headers were found).
pub const BUILT_WITH_CUDA_GRAPHS: bool = cfg!(sasrec_cuda);

/// Eager steps on the side stream before capture (`torch.cuda.make_graphed_callables`' default
/// `num_warmup_iters`).
pub const WARM_UP_STEPS: usize = 3;

type StepFn = extern "C" fn(*mut c_void) -> c_int;

extern "C" {
    fn sasrec_cuda_graph_new(device: c_int, out: *mut *mut c_void) -> c_int;
    fn sasrec_cuda_graph_free(graph: *mut c_void);
    fn sasrec_cuda_graph_warm_up(graph: *mut c_void, body: StepFn, ctx: *mut c_void) -> c_int;
    fn sasrec_cuda_graph_capture(graph: *mut c_void, body: StepFn, ctx: *mut c_void) -> c_int;
    fn sasrec_cuda_graph_replay(graph: *mut c_void) -> c_int;
    fn sasrec_copy_async(dst: *mut torch_sys::C_tensor, src: *mut torch_sys::C_tensor) -> c_int;
}

/// Why steps run eagerly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EagerReason {
    /// `--no_cuda_graph`.
    Flag,
    /// The run is on the CPU.
    Cpu,
    /// The binary was built without CUDA graphs.
    NotBuilt,
    /// Several ranks: the gradient all-reduce is not captured.
    Distributed,
    /// A loss with a host synchronisation (`nonzero` over Ω).
    Loss,
    /// A row-sparse item optimizer: its rows are data-dependent (coalesce, gather, scatter).
    RowSparse,
    /// A batch with fewer rows than a full one (the last of an epoch).
    RaggedBatch,
}

impl fmt::Display for EagerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "--no_cuda_graph",
            Self::Cpu => "the device is the CPU",
            Self::NotBuilt => "built without CUDA graphs",
            Self::Distributed => "data-parallel ranks all-reduce outside a graph",
            Self::Loss => "only --loss bce is captured (the others select positions with nonzero)",
            Self::RowSparse => "a row-sparse --item_optimizer updates data-dependent rows",
            Self::RaggedBatch => "a batch smaller than --batch_size",
        })
    }
}

/// How a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// Replay of the captured step (after the warm-up and the capture).
    Graph,
    /// The ordinary step.
    Eager(EagerReason),
}

/// What the choice of a run depends on.
#[derive(Debug, Clone, Copy)]
pub struct GraphConditions {
    /// The run trains on a CUDA device.
    pub cuda: bool,
    /// [`BUILT_WITH_CUDA_GRAPHS`].
    pub built: bool,
    /// `--no_cuda_graph`.
    pub disabled: bool,
    /// Ranks.
    pub world: usize,
    /// The training loss.
    pub loss: LossKind,
    /// `--item_optimizer` is row-sparse.
    pub row_sparse: bool,
}

/// Whether the full batches of a run use a graph, and if not why (the first reason that
/// applies, in the order of the fields of [`GraphConditions`], the flag first).
pub fn run_mode(c: &GraphConditions) -> StepMode {
    let reason = if c.disabled {
        EagerReason::Flag
    } else if !c.cuda {
        EagerReason::Cpu
    } else if !c.built {
        EagerReason::NotBuilt
    } else if c.world > 1 {
        EagerReason::Distributed
    } else if c.loss != LossKind::Bce {
        EagerReason::Loss
    } else if c.row_sparse {
        EagerReason::RowSparse
    } else {
        return StepMode::Graph;
    };
    StepMode::Eager(reason)
}

/// How a batch of `rows` rows runs in a run of mode `run` whose full batches have `full_rows`.
pub fn step_mode(run: StepMode, rows: usize, full_rows: usize) -> StepMode {
    match run {
        StepMode::Graph if rows != full_rows => StepMode::Eager(EagerReason::RaggedBatch),
        mode => mode,
    }
}

/// `dst.copy_(src, non_blocking=true)`.
fn copy_async(dst: &mut Tensor, src: &mut Tensor) -> Result<()> {
    // SAFETY: both handles point at live tensors for the call; the copy writes `dst` only.
    if unsafe { sasrec_copy_async(dst.as_mut_ptr(), src.as_mut_ptr()) } != 0 {
        return Err(failed!("copying a batch: {}", last_error()));
    }
    Ok(())
}

/// The fixed-address inputs of the captured step, each batch copied in.
pub struct StaticInputs {
    /// Input items (B, T) int64 in host memory (pinned on CUDA), read by the graph.
    pub seq: Tensor,
    /// Interval buckets (B, T, T) int32 in host memory (pinned on CUDA), TiSASRec only.
    pub tm: Option<Tensor>,
    /// Next items (B, T) int64 on the device.
    pub pos: Tensor,
    /// Negatives (B, T) int64 on the device.
    pub neg: Tensor,
    /// Device staging of `seq` and `tm`: a batch goes host → device → `seq`/`tm`.
    staging: (Tensor, Option<Tensor>),
}

impl StaticInputs {
    /// Zeroed buffers for `rows` × `t` batches on `device`, with the interval matrix when
    /// `intervals`.
    pub fn new(device: Device, rows: i64, t: i64, intervals: bool) -> Self {
        let host = |shape: &[i64], kind| {
            let z = Tensor::zeros(shape, (kind, Device::Cpu));
            if device.is_cuda() {
                z.pin_memory(device)
            } else {
                z
            }
        };
        let (seq_shape, tm_shape) = ([rows, t], [rows, t, t]);
        let tm = intervals.then(|| host(&tm_shape, Kind::Int));
        let on_device = |shape: &[i64], kind| Tensor::zeros(shape, (kind, device));
        Self {
            seq: host(&seq_shape, Kind::Int64),
            pos: on_device(&seq_shape, Kind::Int64),
            neg: on_device(&seq_shape, Kind::Int64),
            staging: (
                on_device(&seq_shape, Kind::Int64),
                intervals.then(|| on_device(&tm_shape, Kind::Int)),
            ),
            tm,
        }
    }

    /// Copies `batch` in, in stream order (no host wait); `batch` must have the buffers' rows
    /// and intervals exactly when they have them.
    pub fn load(&mut self, batch: &Batch) -> Result<()> {
        let (rows, t) = (self.seq.size()[0], self.seq.size()[1]);
        if batch.rows() as i64 != rows || batch.intervals.is_some() != self.tm.is_some() {
            return Err(failed!(
                "a batch of {} rows (intervals: {}) for inputs of {rows} rows (intervals: {})",
                batch.rows(),
                batch.intervals.is_some(),
                self.tm.is_some()
            ));
        }
        let device = self.pos.device();
        copy_async(
            &mut self.pos,
            &mut host_batch(&batch.pos, &[rows, t], device),
        )?;
        copy_async(
            &mut self.neg,
            &mut host_batch(&batch.neg, &[rows, t], device),
        )?;
        copy_async(
            &mut self.staging.0,
            &mut host_batch(&batch.seq, &[rows, t], device),
        )?;
        copy_async(&mut self.seq, &mut self.staging.0)?;
        if let (Some(tm), Some(stage), Some(iv)) =
            (&mut self.tm, &mut self.staging.1, &batch.intervals)
        {
            copy_async(stage, &mut host_batch(iv, &[rows, t, t], device))?;
            copy_async(tm, stage)?;
        }
        Ok(())
    }
}

/// A captured step's results: the loss and (fp16) the overflow flag.
pub type StepOutputs = (Tensor, Option<Tensor>);

/// The graph of a run and what it reads: the static inputs and the device schedule.
pub struct GraphStep {
    graph: CudaGraph,
    inputs: StaticInputs,
    sched: DeviceSchedule,
    /// Whether `sched.t` is ahead of the host's step count (`Adam::t`).
    t_on_device: bool,
    /// Warm-up steps taken.
    warmed: usize,
    /// The captured step's outputs, once captured.
    outputs: Option<StepOutputs>,
    /// Replays so far.
    replays: u64,
}

impl GraphStep {
    /// A graph for `device` (CUDA) with inputs of `rows` × `t` (and intervals).
    pub fn new(device: Device, rows: i64, t: i64, intervals: bool) -> Result<Self> {
        let Device::Cuda(index) = device else {
            return Err(failed!("CUDA graphs need a CUDA device, not {device:?}"));
        };
        Ok(Self {
            graph: CudaGraph::new(index)?,
            inputs: StaticInputs::new(device, rows, t, intervals),
            sched: DeviceSchedule::new(device),
            t_on_device: false,
            warmed: 0,
            outputs: None,
            replays: 0,
        })
    }

    /// Replays so far.
    pub fn replays(&self) -> u64 {
        self.replays
    }

    /// Adam's step count when replays have advanced it past the host's, which becomes current
    /// again (a host read: called between stretches of replays, not per step).
    pub fn take_step_count(&mut self) -> Option<u64> {
        self.t_on_device.then(|| {
            self.t_on_device = false;
            self.sched.t.double_value(&[0]) as u64
        })
    }

    /// One step on `batch` with learning rate `lr`, `host_t` being Adam's step count on the
    /// host: the batch into the static inputs, `lr` (and `host_t` when the host's count is
    /// current) into the device schedule, then `body` eagerly on the side stream during the
    /// warm-up, `body` captured and the graph replayed once warm, replays only afterwards.
    /// Returns the step's loss and overflow flag, never the graph's own output buffers (which
    /// the next replay overwrites) but copies of them.
    pub fn step(
        &mut self,
        batch: &Batch,
        lr: f64,
        host_t: u64,
        mut body: impl FnMut(&StaticInputs, &mut DeviceSchedule) -> Result<StepOutputs>,
    ) -> Result<StepOutputs> {
        self.inputs.load(batch)?;
        let _ = self.sched.lr.fill_(lr);
        if !self.t_on_device {
            let _ = self.sched.t.fill_(host_t as f64);
            self.t_on_device = true;
        }
        let (graph, inputs, sched) = (&mut self.graph, &self.inputs, &mut self.sched);
        let mut out = None;
        let mut run = || body(inputs, sched).map(|o| out = Some(o));
        if self.warmed < WARM_UP_STEPS {
            self.warmed += 1;
            graph
                .warm_up(&mut run)
                .map_err(|e| e.context("CUDA graph warm-up step"))?;
            return out.ok_or_else(|| failed!("the warm-up step returned nothing"));
        }
        if self.outputs.is_none() {
            graph.capture(&mut run).map_err(|e| {
                e.context("capturing the CUDA graph (--no_cuda_graph trains without)")
            })?;
            self.outputs = out;
            tracing::info!("CUDA graph captured after {WARM_UP_STEPS} warm-up steps");
        }
        self.graph.replay()?;
        self.replays += 1;
        let (loss, found_inf) = self
            .outputs
            .as_ref()
            .ok_or_else(|| failed!("the captured step returned nothing"))?;
        Ok((loss.copy(), found_inf.as_ref().map(Tensor::copy)))
    }
}

/// An `at::cuda::CUDAGraph` with its side stream (`csrc/cuda_graph.cpp`).
struct CudaGraph(*mut c_void);

/// A Rust step called back by the shim, and its error.
struct Body<'a> {
    f: &'a mut dyn FnMut() -> Result<()>,
    err: Option<Error>,
}

extern "C" fn run_body(ctx: *mut c_void) -> c_int {
    // SAFETY: `ctx` is the `Body` that `CudaGraph::with_body` passes for the duration of the
    // shim call that calls back here, on this thread.
    let body = unsafe { &mut *ctx.cast::<Body>() };
    // A panic must not unwind into C++: it becomes the step's error.
    match panic::catch_unwind(AssertUnwindSafe(|| (body.f)())) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            body.err = Some(e);
            -1
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            body.err = Some(failed!("the training step panicked: {msg}"));
            -1
        }
    }
}

impl CudaGraph {
    fn new(device: usize) -> Result<Self> {
        let mut g = std::ptr::null_mut();
        // SAFETY: the shim writes a new graph into `g` or fails without writing.
        if unsafe { sasrec_cuda_graph_new(device as c_int, &mut g) } != 0 {
            return Err(failed!("creating a CUDA graph: {}", last_error()));
        }
        Ok(Self(g))
    }

    /// Calls `shim` with `f` as its step; the step's own error comes first.
    fn with_body(
        &mut self,
        shim: unsafe extern "C" fn(*mut c_void, StepFn, *mut c_void) -> c_int,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let mut body = Body {
            f: &mut f,
            err: None,
        };
        let ctx = (&mut body as *mut Body).cast::<c_void>();
        // SAFETY: `self.0` is a live graph; `ctx` outlives the call, which only passes it back
        // to `run_body` on this thread.
        let rc = unsafe { shim(self.0, run_body, ctx) };
        match (rc, body.err) {
            (0, _) => Ok(()),
            (_, Some(e)) => Err(e),
            (_, None) => Err(failed!("{}", last_error())),
        }
    }

    fn warm_up(&mut self, f: impl FnMut() -> Result<()>) -> Result<()> {
        self.with_body(sasrec_cuda_graph_warm_up, f)
    }

    fn capture(&mut self, f: impl FnMut() -> Result<()>) -> Result<()> {
        self.with_body(sasrec_cuda_graph_capture, f)
    }

    fn replay(&mut self) -> Result<()> {
        // SAFETY: `self.0` is a live graph.
        if unsafe { sasrec_cuda_graph_replay(self.0) } != 0 {
            return Err(failed!("replaying the CUDA graph: {}", last_error()));
        }
        Ok(())
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `sasrec_cuda_graph_new` and is freed once.
        unsafe { sasrec_cuda_graph_free(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sasrec_shared::Batch;

    fn conditions() -> GraphConditions {
        GraphConditions {
            cuda: true,
            built: true,
            disabled: false,
            world: 1,
            loss: LossKind::Bce,
            row_sparse: false,
        }
    }

    #[test]
    fn a_single_cuda_bce_run_uses_the_graph_and_every_other_runs_eagerly() {
        assert_eq!(run_mode(&conditions()), StepMode::Graph);
        let eager = |c: GraphConditions| match run_mode(&c) {
            StepMode::Eager(r) => r,
            StepMode::Graph => panic!("{c:?} must run eagerly"),
        };
        let c = conditions();
        assert_eq!(
            eager(GraphConditions {
                disabled: true,
                ..c
            }),
            EagerReason::Flag
        );
        assert_eq!(
            eager(GraphConditions { cuda: false, ..c }),
            EagerReason::Cpu
        );
        assert_eq!(
            eager(GraphConditions { built: false, ..c }),
            EagerReason::NotBuilt
        );
        assert_eq!(
            eager(GraphConditions { world: 2, ..c }),
            EagerReason::Distributed
        );
        for loss in [LossKind::Ce, LossKind::SampledSoftmax, LossKind::Gbce] {
            assert_eq!(eager(GraphConditions { loss, ..c }), EagerReason::Loss);
        }
        assert_eq!(
            eager(GraphConditions {
                row_sparse: true,
                ..c
            }),
            EagerReason::RowSparse
        );
        // The flag wins over everything else, the CPU over the build.
        let cpu_flag = GraphConditions {
            disabled: true,
            cuda: false,
            built: false,
            ..c
        };
        assert_eq!(eager(cpu_flag), EagerReason::Flag);
        assert_eq!(
            eager(GraphConditions {
                cuda: false,
                built: false,
                ..c
            }),
            EagerReason::Cpu
        );
    }

    #[test]
    fn only_full_batches_replay_the_graph() {
        assert_eq!(step_mode(StepMode::Graph, 32, 32), StepMode::Graph);
        assert_eq!(
            step_mode(StepMode::Graph, 7, 32),
            StepMode::Eager(EagerReason::RaggedBatch)
        );
        let cpu = StepMode::Eager(EagerReason::Cpu);
        assert_eq!(step_mode(cpu, 32, 32), cpu);
        assert_eq!(step_mode(cpu, 7, 32), cpu);
        let flag = StepMode::Eager(EagerReason::Flag);
        assert_eq!(step_mode(flag, 32, 32), flag);
    }

    fn batch(rows: usize, t: usize, intervals: bool) -> Batch {
        let n = rows * t;
        Batch {
            index: 0,
            users: (0..rows as u32).collect(),
            seq: (0..n as i64).collect(),
            pos: (0..n as i64).map(|x| x + 1).collect(),
            neg: (0..n as i64).map(|x| x + 2).collect(),
            intervals: intervals.then(|| (0..(n * t) as i32).collect()),
        }
    }

    #[test]
    fn static_inputs_have_the_batch_shapes_and_take_its_values() {
        let (rows, t) = (4usize, 5usize);
        let mut sasrec = StaticInputs::new(Device::Cpu, rows as i64, t as i64, false);
        assert_eq!(sasrec.seq.size(), [4, 5]);
        assert_eq!(
            (sasrec.pos.size(), sasrec.neg.size()),
            (vec![4, 5], vec![4, 5])
        );
        assert_eq!(sasrec.seq.kind(), Kind::Int64);
        assert!(sasrec.tm.is_none());
        let b = batch(rows, t, false);
        sasrec.load(&b).unwrap();
        assert_eq!(Vec::<i64>::try_from(sasrec.seq.view([-1])).unwrap(), b.seq);
        assert_eq!(Vec::<i64>::try_from(sasrec.pos.view([-1])).unwrap(), b.pos);
        assert_eq!(Vec::<i64>::try_from(sasrec.neg.view([-1])).unwrap(), b.neg);

        let mut tisasrec = StaticInputs::new(Device::Cpu, rows as i64, t as i64, true);
        let tm = tisasrec.tm.as_ref().unwrap();
        assert_eq!((tm.size(), tm.kind()), (vec![4, 5, 5], Kind::Int));
        let b = batch(rows, t, true);
        tisasrec.load(&b).unwrap();
        let got = Vec::<i32>::try_from(tisasrec.tm.as_ref().unwrap().view([-1])).unwrap();
        assert_eq!(Some(got), b.intervals);
    }

    #[test]
    fn a_ragged_batch_does_not_fit_the_static_inputs() {
        let mut inputs = StaticInputs::new(Device::Cpu, 4, 5, false);
        let e = inputs.load(&batch(3, 5, false)).unwrap_err().to_string();
        assert_eq!(
            e,
            "a batch of 3 rows (intervals: false) for inputs of 4 rows (intervals: false)"
        );
        assert!(inputs.load(&batch(4, 5, true)).is_err());
    }

    #[test]
    fn a_graph_needs_a_cuda_device() {
        let e = GraphStep::new(Device::Cpu, 4, 5, false).err().unwrap();
        assert_eq!(e.to_string(), "CUDA graphs need a CUDA device, not Cpu");
    }
}
