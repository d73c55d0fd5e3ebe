//! Build script: links libtorch like every tch package, and generates the ONNX protobuf types.
//!
//! * libtorch: `../build/torch_link.rs`, the link fix every tch package uses (docs/TOOLCHAIN.md, "Two traps, one fix"), included as a module.
//! * ONNX: `onnx.proto` is read from the PyPI `onnx` package of the project's venv (never copied
//!   into the repo), compiled by `protox` (pure Rust, no `protoc`) and turned into `prost` types
//!   by `prost-build` (docs/TOOLCHAIN.md, "Writing ONNX from Rust"). The site-packages
//!   directory comes from `ONNX_PROTO` (the file itself), else `LIBTORCH`
//!   (`<site-packages>/torch`), else `SASREC_PYTHON` (`<venv>/bin/python`).

use std::path::{Path, PathBuf};

#[path = "../build/torch_link.rs"]
mod torch_link;

fn main() {
    torch_link::main();
    if let Err(e) = generate_onnx() {
        panic!("sasrec-export build script: {e}");
    }
}

/// Candidate locations of `onnx/onnx.proto`, most explicit first.
fn proto_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("ONNX_PROTO") {
        v.push(PathBuf::from(p));
    }
    if let Ok(torch) = std::env::var("LIBTORCH") {
        if let Some(site) = Path::new(&torch).parent() {
            v.push(site.join("onnx").join("onnx.proto"));
        }
    }
    if let Ok(py) = std::env::var("SASREC_PYTHON") {
        // <venv>/bin/python → <venv>/lib/python3.*/site-packages/onnx/onnx.proto
        if let Some(venv) = Path::new(&py).parent().and_then(Path::parent) {
            if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
                for e in entries.flatten() {
                    let site = e
                        .path()
                        .join("site-packages")
                        .join("onnx")
                        .join("onnx.proto");
                    v.push(site);
                }
            }
        }
    }
    v
}

fn generate_onnx() -> Result<(), String> {
    for var in ["ONNX_PROTO", "LIBTORCH", "SASREC_PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let candidates = proto_candidates();
    let proto = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "onnx.proto not found (looked at {candidates:?}); install the PyPI `onnx` package \
             into the project's venv (scripts/setup.sh) or set ONNX_PROTO"
        )
    })?;
    println!("cargo:rerun-if-changed={}", proto.display());
    let dir = proto.parent().expect("a file has a parent directory");
    let fds = protox::compile([proto], [dir]).map_err(|e| format!("{}: {e}", proto.display()))?;
    prost_build::Config::new()
        .compile_fds(fds)
        .map_err(|e| format!("prost-build on {}: {e}", proto.display()))
}
