#!/usr/bin/env bash
# Seconds per training epoch on ML-1M (SASRec, maxlen 200, batch 128, d 50, 2 blocks, 1 head),
# sasrec-train against a PyTorch baseline run in the same invocation on the same machine:
# benches/reference/sasrec_torch.py, pmixer's module structure, 48 steps of the reference
# training loop on pre-made 128x200 batches (its data loading is not counted, ours is).
# Usage: benches/epoch_speed.sh [EPOCHS=3] [DEVICE=cpu]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
epochs=${1:-3}
device=${2:-cpu}
data=${SASREC_DATA:-$root/../shared/data}
py=${SASREC_PYTHON:-$root/.venv/bin/python}
bin=$root/target/release/sasrec-train
[ -x "$bin" ] || cargo build --release -q -p sasrec-train --manifest-path "$root/Cargo.toml"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" --dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --train_dir "$tmp/run" --no_time --no_mhc \
  --maxlen 200 --hidden_units 50 --num_blocks 2 --num_heads 1 --dropout_rate 0.2 \
  --num_epochs "$epochs" --eval_every 1000 --num_workers 1 --device "$device" > "$tmp/summary.json" 2> "$tmp/log"
ours=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds_per_epoch'])" "$tmp/summary.json")
ref=$("$py" "$root/benches/reference/sasrec_torch.py" speed --batches $((48 * epochs)) | "$py" -c "import json,sys; d=json.load(sys.stdin); print(d['seconds'] / $epochs)")
"$py" - "$ours" "$ref" <<'PY'
import sys
ours, ref = map(float, sys.argv[1:3])
print(f"sasrec-train          {ours:7.2f} s/epoch")
print(f"PyTorch reference     {ref:7.2f} s/epoch (same machine, same invocation)")
print(f"speed-up              {ref / ours:7.2f}x")
PY
