#!/usr/bin/env bash
# One idempotent set-up step for sasrec-rs (seconds when everything is already there).
#
#  * a Python virtual environment ($SASREC_VENV, default ./.venv) with the pinned
#    torch / onnxruntime / onnx wheels (libtorch for tch, libonnxruntime for ort,
#    onnx.checker for the tests) and the two NCCL header wheels for the c10d shim;
#  * Debian's libgloo-dev (headers for the Gloo backend of the c10d shim) when missing;
#  * .cargo/config.toml pointing tch at the venv's libtorch and ort at its
#    libonnxruntime, so plain `cargo build/test/run` work with no exports;
#  * a check that the torch really is 2.11.0 (tch 0.24 binds exactly that version).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SASREC_VENV:-$root/.venv}
py=${PYTHON:-python3}

TORCH=2.11.0
ORT=1.23.2
ONNX=1.23.2
CRT=13.0.88
CCCL=13.0.85
SAFETENSORS=0.7.0

log() { printf 'setup: %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating the Python environment in $venv"
  "$py" -m venv "$venv"
fi

want="torch==$TORCH onnxruntime==$ORT onnx==$ONNX safetensors==$SAFETENSORS nvidia-cuda-crt==$CRT nvidia-cuda-cccl==$CCCL"
# importlib.metadata reads versions without importing torch (fast).
missing=$("$venv/bin/python" - $want <<'PY'
import sys
from importlib import metadata
out = []
for req in sys.argv[1:]:
    name, ver = req.split("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != ver:
        out.append(req)
print(" ".join(out))
PY
)
if [ -n "$missing" ]; then
  log "installing $missing (first time: about a minute, ~5 GB)"
  "$venv/bin/pip" install --disable-pip-version-check -q $missing
fi

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
torch_dir="$site/torch"
ort_lib="$site/onnxruntime/capi/libonnxruntime.so.$ORT"
have_torch=$("$venv/bin/python" -c 'from importlib import metadata; print(metadata.version("torch"))')
case "$have_torch" in
  "$TORCH"|"$TORCH"+*) ;;
  *) log "error: torch $have_torch in $venv, but tch 0.24 needs torch $TORCH"; exit 1 ;;
esac
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || { log "error: $torch_dir/lib/libtorch_cpu.so missing"; exit 1; }
[ -f "$ort_lib" ] || { log "error: $ort_lib missing"; exit 1; }

if [ ! -f /usr/include/gloo/config.h ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's libgloo-dev (Gloo headers for the c10d shim)"
    (apt-get install -y -q libgloo-dev >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q libgloo-dev >/dev/null; }) ||
      log "warning: could not install libgloo-dev; run: sudo apt-get install -y libgloo-dev"
  else
    log "warning: Gloo headers missing; run: sudo apt-get install -y libgloo-dev"
  fi
fi

mkdir -p "$root/.cargo"
config="$root/.cargo/config.toml"
new=$(cat <<TOML
# Written by scripts/setup.sh; do not edit (re-run the script instead).
[env]
LIBTORCH = "$torch_dir"
LIBTORCH_CXX11_ABI = "1"
ORT_DYLIB_PATH = "$ort_lib"
SASREC_PYTHON = "$venv/bin/python"
TOML
)
if [ ! -f "$config" ] || [ "$(cat "$config")" != "$new" ]; then
  printf '%s\n' "$new" > "$config.tmp" && mv "$config.tmp" "$config"
  log "wrote $config"
fi
log "ready: torch $have_torch, onnxruntime $ORT, venv $venv"

# GPU nodes (optional): ONNX Runtime's CUDA build for `sasrec-serve --device cuda`. It lives in
# its own environment because the `onnxruntime-gpu` wheel and the CPU wheel above install the
# same `onnxruntime` package. `SASREC_ORT_GPU=1 scripts/setup.sh` installs it (the C library
# only: --no-deps, ~300 MB) into $SASREC_ORT_GPU_VENV (default ./.venv-ort-gpu) and prints the
# server's flags; its CUDA provider needs the CUDA 13 cuBLAS/cuDNN/cuFFT/cuRAND libraries that
# the PyPI torch of the main environment brings (nvidia-* wheels), put on LD_LIBRARY_PATH.
ORT_GPU=1.31.1
if [ "${SASREC_ORT_GPU:-0}" = 1 ]; then
  gvenv=${SASREC_ORT_GPU_VENV:-$root/.venv-ort-gpu}
  [ -x "$gvenv/bin/python" ] || "$py" -m venv "$gvenv"
  have=$("$gvenv/bin/python" -c 'from importlib import metadata; print(metadata.version("onnxruntime-gpu"))' 2>/dev/null || true)
  if [ "$have" != "$ORT_GPU" ]; then
    log "installing onnxruntime-gpu==$ORT_GPU into $gvenv (~300 MB)"
    "$gvenv/bin/pip" install --disable-pip-version-check -q --no-deps "onnxruntime-gpu==$ORT_GPU"
  fi
  capi=$("$gvenv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/onnxruntime/capi
  gpu_lib=$(ls "$capi"/libonnxruntime.so.* 2>/dev/null | head -1)
  [ -n "$gpu_lib" ] && [ -f "$capi/libonnxruntime_providers_cuda.so" ] ||
    { log "error: $capi lacks libonnxruntime.so.* or libonnxruntime_providers_cuda.so"; exit 1; }
  cuda_libs=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
  log "GPU ONNX Runtime $ORT_GPU: run the server as"
  printf 'LD_LIBRARY_PATH=%s%s/lib sasrec-serve --device cuda --strict_device --ort_lib %s --model DIR\n' \
    "$cuda_libs" "$torch_dir" "$gpu_lib"
fi
