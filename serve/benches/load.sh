#!/usr/bin/env bash
# Load test of sasrec-serve on loopback: p50/p99 latency at 1 client and throughput at 32 and
# 64 clients, with dynamic batching and without (--no_batching), with the mean rows per ONNX
# Runtime run at each load; then the batched/unbatched throughput ratio at 32 clients, the
# server's peak RSS (VmHWM) and its items.tsv load time.
#
# Usage: serve/benches/load.sh [MODEL_DIR] [SECONDS]
#   MODEL_DIR  a run directory with model.onnx + items.tsv (default /tmp/ml1m-serve)
#   SECONDS    duration of each measurement (default 12)
#
# An ML-1M-shaped model (maxlen 200, d 50, 2 blocks, 3,416 items), one epoch is enough:
#   cargo build --release -p sasrec-train -p sasrec-export -p sasrec-serve
#   target/release/sasrec-train --dataset ../shared/data/ml-1m/ml-1m.sasrec.txt.gz \
#     --train_dir /tmp/ml1m-serve --no_time --no_mhc --maxlen 200 --num_heads 1 \
#     --num_epochs 1 --eval_every 1 --num_workers 1 --device cpu
#   target/release/sasrec-export --onnx --train_dir /tmp/ml1m-serve
# A catalogue of 1M items (maxlen 50, d 32, 1 head, 2 blocks): any `user item timestamp` file
# with 1M distinct items, then
#   target/release/sasrec-train --dataset D.txt --train_dir /tmp/scale/run --no_time --no_mhc \
#     --maxlen 50 --hidden_units 32 --num_heads 1 --num_epochs 1 --eval_every 1 \
#     --loss sampled_softmax --num_negatives 256 --eval_max_users 200 --eval_batch_size 32 \
#     --num_workers 1 --device cpu
#   target/release/sasrec-export --onnx --train_dir /tmp/scale/run
#
# Load generator: serve/examples/loadgen.rs (closed loop, one connection per client, 1 thread),
# built here with `cargo build --release -p sasrec-serve --example loadgen`.
# Each request is a 50-item history (the first 50 ids of items.tsv) with k = 10 and
# exclude_seen. Extra server flags go in SERVE_FLAGS (e.g. SERVE_FLAGS="--intra_threads 2"); another
# server binary (e.g. a build from before a change) in SERVE_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=serve/benches/common.sh
source "$ROOT/serve/benches/common.sh"
SECS="${2:-12}"
PORT="${PORT:-18181}"
trap 'kill "${SERVER_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

check_inputs
write_body

# load CLIENTS: prints "clients rps p50_ms p99_ms" (and the non-2xx/error counts if any).
load() {
  "$GEN" --url "http://127.0.0.1:$PORT/recommend" --clients "$1" --seconds "$SECS" \
    --body "$WORK/body.json" --json >"$WORK/out.json" || true
  python3 - "$WORK/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
bad = d["non_2xx"] + d["errors"]
print(f'{d["clients"]:>7} {d["rps"]:>9.0f} {d["p50_ms"]:>8.2f} {d["p99_ms"]:>8.2f}'
      + (f'  (non-2xx {d["non_2xx"]}, errors {d["errors"]})' if bad else ''))
PY
}

# "sum count" of the server's batch-size histogram (rows per ONNX Runtime run).
batch_totals() {
  curl -s "http://127.0.0.1:$PORT/metrics" |
    awk '/^sasrec_batch_size_sum/ { s = $2 } /^sasrec_batch_size_count/ { c = $2 } END { print s + 0, c + 0 }'
}

# Mean rows per run between two batch_totals readings.
rows_per_run() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
    if (y[2] > x[2]) printf "%8.1f", (y[1] - x[1]) / (y[2] - x[2]) }'
}

echo "# $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), loopback, loadgen, ${SECS}s per row, $(date -u +%F)"
declare -A RPS32
for mode in batching no_batching; do
  if [[ $mode == batching ]]; then start_server; else start_server --no_batching; fi
  echo "## $mode  ($(curl -s "http://127.0.0.1:$PORT/v1/model" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["num_items"], "items", d["batching"])'))"
  echo "clients       rps   p50 ms   p99 ms  rows/run"
  load 1 >/dev/null   # warm-up
  for c in 1 32 64; do
    before=$(batch_totals)
    row=$(load "$c")
    echo "$row  $(rows_per_run "$before" "$(batch_totals)")"
    [[ $c == 32 ]] && RPS32[$mode]=$(awk '{ print $2 }' <<<"$row")
  done
  echo "server peak RSS: $(awk '/^VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$SERVER_PID/status")"
  # The `item map loaded` line of the server log (tracing key=value fields, ANSI colours off).
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log" | grep -m1 'item map loaded' | sed 's/.*item map loaded/items.tsv:/' || true
  stop_server
done
awk -v b="${RPS32[batching]}" -v n="${RPS32[no_batching]}" \
  'BEGIN { if (n > 0) printf "batched / unbatched at 32 clients: %.2fx (%d / %d requests/s)\n", b / n, b, n }'
