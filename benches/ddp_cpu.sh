#!/usr/bin/env bash
# Data parallel on the CPU: seconds per epoch of SASRec on ML-1M (maxlen 200, batch 128 global,
# d 50, 2 blocks, 1 head) with 1 rank using all cores against N Gloo ranks (built-in launcher)
# sharing them (cores/N intra-op threads each), same invocation, same machine.
# Usage: [BIN=…] [SASREC_DATA=…] benches/ddp_cpu.sh [EPOCHS=2] [RANKS=2]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
epochs=${1:-2}
ranks=${2:-2}
bin=${BIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
cores=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(--dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --no_mhc --maxlen 200 --hidden_units 50
      --num_blocks 2 --num_heads 1 --num_epochs "$epochs" --eval_every 1000 --num_workers 1 --device cpu)
spe() { sed -n 's/.*"seconds_per_epoch": \([0-9.]*\).*/\1/p' "$1"; }
OMP_NUM_THREADS=$cores "$bin" "${args[@]}" --train_dir "$tmp/one" > "$tmp/one.json" 2> "$tmp/one.log"
OMP_NUM_THREADS=$(( cores / ranks > 0 ? cores / ranks : 1 )) "$bin" "${args[@]}" --train_dir "$tmp/dp" \
  --multi_gpu --backend gloo --nproc_per_node "$ranks" --master_port "${MASTER_PORT:-29571}" \
  > "$tmp/dp.json" 2> "$tmp/dp.log"
one=$(spe "$tmp/one.json"); dp=$(spe "$tmp/dp.json")
echo "cores $cores"
echo "1 rank x $cores threads        $one s/epoch"
echo "$ranks Gloo ranks x $(( cores / ranks )) threads   $dp s/epoch"
awk -v a="$one" -v b="$dp" 'BEGIN { printf "speed-up              %.2fx\n", a / b }'
