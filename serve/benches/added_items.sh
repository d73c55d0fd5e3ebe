#!/usr/bin/env bash
# Cost of items added after training (POST /v1/items, docs/MODELS.md §6.5): for A = 0, 1,000,
# 10,000 and 100,000 added items, the time to add them (batches of 1,000 per request), then
# p50/p99 at 1 client and requests/s at 32 clients on /recommend, and the server's peak RSS;
# the first row is the same model served by model.onnx (--max_added_items 0), the baseline
# of the ratios. Added items are ranked exactly (A·d multiply-adds per request) and read
# through the open user tower, so the request cost grows linearly in A on top of the base.
#
# Usage: serve/benches/added_items.sh [MODEL_DIR] [SECONDS]
#   MODEL_DIR  a run directory (config.json) exported, of a model trained with --item_features (default
#              /tmp/ml1m-features-serve)
#   SECONDS    duration of each load measurement (default 10)
#
# An ML-1M model with genres and year, one epoch is enough:
#   cargo build --release -p sasrec-train -p sasrec-export -p sasrec-serve
#   cargo build --release -p sasrec-serve --example loadgen
#   target/release/sasrec-train data features-ml1m --input ../shared/data/ml-1m/raw/movies.dat.gz \
#     --item_map ../shared/data/ml-1m/ml-1m.sasrec.item_map.txt.gz --output /tmp/ml-1m.items.tsv
#   target/release/sasrec-train --dataset ../shared/data/ml-1m/ml-1m.sasrec.txt.gz \
#     --item_features /tmp/ml-1m.items.tsv --item_repr features --train_dir /tmp/ml1m-features-serve \
#     --no_time --no_mhc --maxlen 200 --num_heads 1 --num_epochs 1 --eval_every 1 \
#     --num_workers 1 --device cpu
#   target/release/sasrec-export --onnx --train_dir /tmp/ml1m-features-serve
#
# The added items get random values of the model's feature columns (token columns: values of
# their vocabulary; numeric: a standard normal), drawn with a fixed seed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="${1:-/tmp/ml1m-features-serve}"
set -- "$SRC" "${2:-10}"
# shellcheck source=serve/benches/common.sh
source "$ROOT/serve/benches/common.sh"
SECS="$2"
PORT="${PORT:-18182}"
trap 'kill "${SERVER_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A fresh copy of the model without additions (the server writes added_items.jsonl there).
MODEL="$WORK/model"
mkdir -p "$MODEL"
for f in "$SRC"/*.onnx "$SRC"/*.onnx.data "$SRC"/items.tsv "$SRC"/item_vectors.safetensors; do
  [[ -e $f ]] && cp "$f" "$MODEL/"
done
[[ -f "$MODEL/user_tower_open.onnx" ]] || {
  echo "$SRC has no user_tower_open.onnx: train with --item_features and export again" >&2; exit 1
}
check_inputs
write_body

# bodies N: writes $WORK/add-*.json, N items in requests of 1,000, from the run's feature
# schema (config.json of MODEL_DIR).
bodies() {
  python3 - "$SRC/config.json" "$1" "$WORK" <<'PY'
import json, random, sys
cfg, n, work = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
schema = cfg["model"]["item_features"]["schema"]["columns"]
rng = random.Random(7)
def value(c):
    if c["kind"] in ("categorical", "multi"):
        return "|".join(rng.sample(c["vocab"], min(c["width"], len(c["vocab"]))))
    if c["kind"] == "numeric":
        return rng.gauss(0, 1) * c["std"] + c["mean"]
    return [rng.gauss(0, 1) for _ in range(c["width"])]
for b in range(0, n, 1000):
    items = [{"id": f"added-{i}", "features": {c["name"]: value(c) for c in schema}}
             for i in range(b, min(n, b + 1000))]
    json.dump({"items": items}, open(f"{work}/add-{b // 1000:05d}.json", "w"))
PY
}

# add_all: POSTs every body, prints the mean milliseconds per 1,000 items.
add_all() {
  local start end n=0
  start=$(date +%s%N)
  for body in "$WORK"/add-*.json; do
    curl -sf -H 'content-type: application/json' --data-binary "@$body" \
      "http://127.0.0.1:$PORT/v1/items" >/dev/null
    n=$((n + 1))
  done
  end=$(date +%s%N)
  awk -v ns=$((end - start)) -v n=$n 'BEGIN { printf "%.1f", ns / 1e6 / n }'
}

# measure CLIENTS: "rps p50 p99" of /recommend.
measure() {
  "$GEN" --url "http://127.0.0.1:$PORT/recommend" --clients "$1" --seconds "$SECS" \
    --body "$WORK/body.json" --json >"$WORK/out.json" || true
  python3 - "$WORK/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
bad = d["non_2xx"] + d["errors"]
print(f'{d["rps"]:.0f} {d["p50_ms"]:.3f} {d["p99_ms"]:.3f}' + (f' non2xx={bad}' if bad else ''))
PY
}

echo "# $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), loopback, loadgen, ${SECS}s per load, $(date -u +%F)"
printf '%-22s %9s %12s %9s %9s %10s %10s %9s\n' "served by" "added" "ms/1k added" "p50 ms" "p99 ms" "rps@32" "p50 ratio" "peak MiB"
BASE_P50=""
row() { # row LABEL ADDED MS_PER_1K
  measure 1 >/dev/null   # warm-up
  read -r _ p50 p99 <<<"$(measure 1)"
  read -r rps _ _ <<<"$(measure 32)"
  [[ -z $BASE_P50 ]] && BASE_P50=$p50
  local rss
  rss=$(awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status")
  printf '%-22s %9s %12s %9s %9s %10s %10s %9s\n' "$1" "$2" "$3" "$p50" "$p99" "$rps" \
    "$(awk -v a="$p50" -v b="$BASE_P50" 'BEGIN { printf "%.2fx", a / b }')" "$rss"
}

start_server --max_added_items 0
row "model.onnx" 0 "-"
stop_server
for a in 0 1000 10000 100000; do
  rm -f "$MODEL/added_items.jsonl"
  start_server --max_added_items 100000
  ms="-"
  if ((a > 0)); then
    rm -f "$WORK"/add-*.json
    bodies "$a"
    ms=$(add_all)
  fi
  got=$(curl -s "http://127.0.0.1:$PORT/v1/model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"]["added"])')
  [[ $got == "$a" ]] || { echo "expected $a added items, the server has $got" >&2; exit 1; }
  row "user_tower_open.onnx" "$a" "$ms"
  stop_server
done
# A restart reads the additions file and embeds the items again.
start=$(date +%s%N)
start_server --max_added_items 100000
echo "restart with 100000 added items: ready in $(( ($(date +%s%N) - start) / 1000000 )) ms"
stop_server
