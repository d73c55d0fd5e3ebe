//! ONNX Runtime sessions: the execution provider (CUDA when asked for and present, else the
//! CPU, or an error under `--strict_device`) and the model's `metadata_props`.

use std::collections::BTreeMap;
use std::path::Path;

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;

use crate::config::{Device, SessionConfig};
use crate::error::LoadError;

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
    env: &ort::environment::Environment,
    onnx: &Path,
    cfg: &SessionConfig,
) -> Result<(Session, String), LoadError> {
    let session_err = |msg: String| LoadError::Session {
        path: onnx.to_path_buf(),
        msg,
    };
    let base = || -> Result<ort::session::builder::SessionBuilder, LoadError> {
        // Idle intra-op threads sleep instead of spinning: the cores are shared with the HTTP
        // runtime, and a spinning pool delays it (tail latency at small models).
        let b = Session::builder(env)
            .map_err(|e| session_err(e.to_string()))?
            .with_intra_op_spinning(false)
            .map_err(|e| session_err(e.to_string()))?;
        if cfg.intra_threads > 0 {
            return b
                .with_intra_threads(cfg.intra_threads)
                .map_err(|e| session_err(e.to_string()));
        }
        Ok(b)
    };
    let commit = |mut b: ort::session::builder::SessionBuilder| {
        b.commit_from_file(onnx)
            .map_err(|e| session_err(e.to_string()))
    };
    if cfg.device == Device::Cuda {
        let fallback = |why: String| -> Result<(Session, String), LoadError> {
            if cfg.strict_device {
                return Err(LoadError::Device(why));
            }
            tracing::warn!("--device cuda: {why}; falling back to the CPU execution provider");
            Ok((commit(base()?)?, "cpu".into()))
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
        let with_cuda = base()?
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| e.to_string());
        return match with_cuda {
            Ok(b) => match commit(b) {
                Ok(s) => {
                    tracing::info!("using the CUDA execution provider");
                    Ok((s, "cuda".into()))
                }
                Err(e) => fallback(e.to_string()),
            },
            Err(e) => fallback(format!("registering the CUDA execution provider: {e}")),
        };
    }
    Ok((commit(base()?)?, "cpu".into()))
}
