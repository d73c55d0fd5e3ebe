//! ONNX Runtime sessions: the execution provider (CUDA when asked for and present, else the
//! CPU, or an error under `--strict_device`), the model's `metadata_props`, and runs through
//! an I/O binding ([`run_bound`]).

use std::collections::BTreeMap;
use std::path::Path;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::{Session, SessionOutputs};
use ort::value::{Value, ValueTypeMarker};

use crate::config::{Device, SessionConfig};
use crate::error::{LoadError, RunError};

/// Every `metadata_props` entry.
pub fn read_metadata(session: &Session) -> Result<BTreeMap<String, String>, String> {
    let meta = session.metadata().map_err(|e| e.to_string())?;
    let keys = meta.custom_keys().map_err(|e| e.to_string())?;
    Ok(keys
        .into_iter()
        .filter_map(|k| meta.custom(&k).map(|v| (k, v)))
        .collect())
}

/// One session on the requested device; returns it with the execution provider in use.
pub fn build_session(
    env: &Environment,
    onnx: &Path,
    cfg: &SessionConfig,
) -> Result<(Session, String), LoadError> {
    match cfg.device {
        Device::Cuda => cuda_session(env, onnx, cfg),
        Device::Cpu => cpu_session(env, onnx, cfg),
    }
}

/// A session on the CUDA execution provider when this ONNX Runtime has it and it accepts the
/// model; otherwise an error under `--strict_device`, else a CPU session (with a warning).
fn cuda_session(
    env: &Environment,
    onnx: &Path,
    cfg: &SessionConfig,
) -> Result<(Session, String), LoadError> {
    let fallback = |why: String| -> Result<(Session, String), LoadError> {
        if cfg.strict_device {
            return Err(LoadError::Device(why));
        }
        tracing::warn!("--device cuda: {why}; falling back to the CPU execution provider");
        cpu_session(env, onnx, cfg)
    };
    match ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return fallback(
                "this ONNX Runtime build has no CUDA execution provider (install \
                 onnxruntime-gpu)"
                    .into(),
            )
        }
        Err(e) => return fallback(format!("cannot query the CUDA execution provider: {e}")),
    }
    let with_cuda = builder(env, onnx, cfg)?
        .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| e.to_string());
    match with_cuda {
        Ok(b) => match commit(b, onnx) {
            Ok(s) => {
                tracing::info!("using the CUDA execution provider");
                Ok((s, "cuda".into()))
            }
            Err(e) => fallback(e.to_string()),
        },
        Err(e) => fallback(format!("registering the CUDA execution provider: {e}")),
    }
}

/// A session on the CPU execution provider.
fn cpu_session(
    env: &Environment,
    onnx: &Path,
    cfg: &SessionConfig,
) -> Result<(Session, String), LoadError> {
    Ok((commit(builder(env, onnx, cfg)?, onnx)?, "cpu".into()))
}

/// A session builder with the thread settings of `cfg`.
fn builder(
    env: &Environment,
    onnx: &Path,
    cfg: &SessionConfig,
) -> Result<SessionBuilder, LoadError> {
    // Idle intra-op threads sleep instead of spinning: the cores are shared with the HTTP
    // runtime, and a spinning pool delays it (tail latency at small models).
    let b = Session::builder(env)
        .map_err(|e| session_err(onnx, e))?
        .with_intra_op_spinning(false)
        .map_err(|e| session_err(onnx, e))?;
    if cfg.intra_threads > 0 {
        return b
            .with_intra_threads(cfg.intra_threads)
            .map_err(|e| session_err(onnx, e));
    }
    Ok(b)
}

/// Loads `onnx` into the session `b` builds.
fn commit(mut b: SessionBuilder, onnx: &Path) -> Result<Session, LoadError> {
    b.commit_from_file(onnx).map_err(|e| session_err(onnx, e))
}

/// ONNX Runtime refused to build a session on `onnx`.
fn session_err(onnx: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Session {
        path: onnx.to_path_buf(),
        msg: e.to_string(),
    }
}

/// One run of the graph through an ONNX Runtime I/O binding, the same code on every execution
/// provider; `read` gets the fetched outputs by name.
///
/// * `inputs` are host tensors, bound by name: ONNX Runtime copies each once per run to where
///   the graph's kernels want it (nothing is copied on the CPU execution provider).
/// * The model's initializers (the item table) stay where the session put them at load: on
///   the GPU under CUDA.
/// * Only the outputs named in `fetch` are bound, to CPU memory, so after a CUDA run ONNX
///   Runtime copies just those to the host. An output left out (the `(batch, I+1)` `scores`
///   matrix when no row ranks candidates) is computed as an intermediate on the device, read
///   there by the graph's `TopK` and freed: it never crosses to the host.
///
/// A binding made per run costs nothing measurable on the CPU (`docs/RESULTS.md`, "I/O binding
/// in the server"). CUDA graphs (the CUDA provider's `enable_cuda_graph`) are not used: a
/// captured graph replays fixed device addresses and shapes, while here every run binds fresh
/// host tensors whose batch size and `k` vary from run to run.
pub fn run_bound<T: ValueTypeMarker + ?Sized, R>(
    session: &mut Session,
    inputs: &[(&str, Value<T>)],
    fetch: &[&str],
    read: impl FnOnce(&SessionOutputs<'_>) -> Result<R, RunError>,
) -> Result<R, RunError> {
    let host = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )?;
    let mut binding = session.create_binding()?;
    for (name, value) in inputs {
        binding.bind_input(*name, value)?;
    }
    for name in fetch {
        binding.bind_output_to_device(*name, &host)?;
    }
    // Both are no-ops on the CPU; under CUDA they make sure the host-to-device input copies
    // queued by `bind_input` are done before the run, and the fetched outputs before `read`.
    binding.synchronize_inputs()?;
    let out = session.run_binding(&binding)?;
    binding.synchronize_outputs()?;
    read(&out)
}
