//! Finding and loading the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`: nothing is linked at build time, and without a library
//! path the first `ort` call panics in `dlopen`. So the path is resolved here, in this order,
//! and a missing library is a [`LoadError::Runtime`] that says where we looked:
//! 1. `--ort_lib PATH`;
//! 2. the `ORT_DYLIB_PATH` environment variable (`.cargo/config.toml` sets it for
//!    `cargo run`/`cargo test`);
//! 3. `$VIRTUAL_ENV`, then a `.venv` in the working directory or in any ancestor of the
//!    executable (so `target/release/sasrec-serve` finds the project's venv):
//!    `lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::LoadError;

/// Resolves the ONNX Runtime shared library (see the [module docs](self)).
pub fn resolve_dylib(explicit: Option<&Path>) -> Result<PathBuf, LoadError> {
    let mut tried = Vec::new();
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(LoadError::Runtime(format!(
            "--ort_lib {}: no such file",
            p.display()
        )));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(LoadError::Runtime(format!(
            "ORT_DYLIB_PATH={}: no such file",
            p.display()
        )));
    }
    tried.push("ORT_DYLIB_PATH (unset)".to_string());
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(v.into());
    }
    if let Ok(cwd) = std::env::current_dir() {
        venvs.push(cwd.join(".venv"));
    }
    if let Ok(exe) = std::env::current_exe() {
        venvs.extend(exe.ancestors().skip(1).map(|a| a.join(".venv")));
    }
    for venv in venvs {
        if let Some(lib) = find_in_venv(&venv) {
            return Ok(lib);
        }
        tried.push(venv.display().to_string());
    }
    Err(LoadError::Runtime(format!(
        "libonnxruntime.so not found; pass --ort_lib PATH or set ORT_DYLIB_PATH (e.g. \
         .venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.23.2; \
         scripts/setup.sh installs the `onnxruntime` wheel). Looked in: {}",
        tried.join(", ")
    )))
}

/// `VENV/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.<version>`, the
/// lexically greatest version when there are several.
fn find_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut found: Vec<PathBuf> = lib
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .filter_map(|e| std::fs::read_dir(e.path().join("site-packages/onnxruntime/capi")).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The process-wide ONNX Runtime environment.
///
/// The shared library can be loaded once per process, so the first successful call wins and
/// later calls with another path get the same environment (a warning is logged). A failed load
/// is not cached, so a later call may retry with a better path.
pub fn environment(dylib: &Path) -> Result<&'static Environment, LoadError> {
    static ENV: OnceLock<(PathBuf, Environment)> = OnceLock::new();
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some((p, env)) = ENV.get() {
        if p != dylib {
            tracing::warn!(
                loaded = %p.display(),
                requested = %dylib.display(),
                "ONNX Runtime is already loaded from another path; keeping it"
            );
        }
        return Ok(env);
    }
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, env)) = ENV.get() {
        return Ok(env);
    }
    let env = ort::init_from(dylib)
        .map_err(|e| LoadError::Runtime(format!("loading {}: {e}", dylib.display())))?
        .with_name("sasrec-serve")
        .build()
        .map_err(|e| LoadError::Runtime(format!("creating the environment: {e}")))?;
    tracing::info!(lib = %dylib.display(), "loaded ONNX Runtime");
    Ok(&ENV.get_or_init(|| (dylib.to_path_buf(), env)).1)
}
