#!/usr/bin/env bash
# Load test of sasrec-serve on loopback: p50/p99 latency at 1 client and throughput at 32 and
# 64 clients, with dynamic batching and without (--no_batching).
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
#
# Load generator: `oha` if installed (cargo install oha), else `wrk` (apt-get install wrk).
# Each request is a 50-item ML-1M history with k = 10 and exclude_seen.
# Extra server flags can be passed in SERVE_FLAGS (e.g. SERVE_FLAGS="--intra_threads 2").
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODEL="${1:-/tmp/ml1m-serve}"
SECS="${2:-12}"
PORT="${PORT:-18181}"
BIN="$ROOT/target/release/sasrec-serve"
WORK="$(mktemp -d)"
trap 'kill "${SERVER_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

[[ -x "$BIN" ]] || { echo "build first: cargo build --release -p sasrec-serve" >&2; exit 1; }
[[ -f "$MODEL/model.onnx" ]] || { echo "no $MODEL/model.onnx (see the header of $0)" >&2; exit 1; }

# A request body: the first 50 item ids of items.tsv.
HIST=$(awk -F'\t' 'NR > 1 && NR <= 51 { printf "%s%s", sep, $2; sep = "," }' "$MODEL/items.tsv")
BODY="{\"history\": [$HIST], \"k\": 10, \"exclude_seen\": true}"
echo "$BODY" > "$WORK/body.json"
cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$BODY]]
EOF

if command -v oha >/dev/null; then GEN=oha; elif command -v wrk >/dev/null; then GEN=wrk; else
  echo "install oha (cargo install oha) or wrk (apt-get install wrk)" >&2; exit 1
fi

start_server() {
  "$BIN" --model "$MODEL" --addr "127.0.0.1:$PORT" "$@" ${SERVE_FLAGS:-} >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return 0
    sleep 0.1
  done
  cat "$WORK/server.log" >&2; exit 1
}

stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

# load CLIENTS: prints "clients rps p50_ms p99_ms"
load() {
  local c=$1
  if [[ $GEN == oha ]]; then
    oha -z "${SECS}s" -c "$c" --no-tui --output-format json -m POST \
      -H 'Content-Type: application/json' -D "$WORK/body.json" \
      "http://127.0.0.1:$PORT/recommend" >"$WORK/out.json"
    python3 - "$c" "$WORK/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
p = d["latencyPercentiles"]
print(f'{sys.argv[1]:>7} {d["summary"]["requestsPerSec"]:>9.0f} {p["p50"]*1e3:>8.2f} {p["p99"]*1e3:>8.2f}')
PY
  else
    wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "${SECS}s" --latency -s "$WORK/post.lua" \
      "http://127.0.0.1:$PORT/recommend" >"$WORK/out.txt"
    awk -v c="$c" '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
      $1 == "Requests/sec:" { rps = $2 }
      /Non-2xx/ { bad = $NF }
      END { printf "%7d %9.0f %8.2f %8.2f%s\n", c, rps, p50, p99, bad ? "  (non-2xx: " bad ")" : "" }' "$WORK/out.txt"
  fi
}

echo "# $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), loopback, $GEN, ${SECS}s per row"
for mode in batching no_batching; do
  if [[ $mode == batching ]]; then start_server; else start_server --no_batching; fi
  echo "## $mode  ($(curl -s "http://127.0.0.1:$PORT/v1/model" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["batching"])'))"
  echo "clients       rps   p50 ms   p99 ms"
  load 1 >/dev/null   # warm-up
  for c in 1 32 64; do load "$c"; done
  if [[ $mode == batching ]]; then
    curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^sasrec_batch_size_(sum|count)/ { v[$1] = $2 } END { if (v["sasrec_batch_size_count"]) printf "mean rows per ONNX Runtime run: %.1f\n", v["sasrec_batch_size_sum"] / v["sasrec_batch_size_count"] }'
  fi
  stop_server
done
