#!/usr/bin/env bash
# Retrieval at catalogue scale: approximate nearest-neighbour search with exact re-ranking
# (`sasrec-serve --retrieval ann`) against the exact scan of every item (`--retrieval exact`),
# on generated Zipf catalogues (SASRec, maxlen 50, d 32, 1 head, 2 blocks, sampled softmax,
# trained for STEPS steps), on the machine it runs on (its CPU and the date head the output):
#   export    seconds of `sasrec-export --onnx --ann` and of the index build, index size
#   recall    recall@10 and recall@100 of ANN against exact on the histories of QUERIES users of
#             the data (real user vectors), from `sasrec-serve recommend` in each mode (k = 10
#             and k = 100 requests), and its users/s (batch scoring, k = 100)
#   serve     p50/p99 at 1 client and requests/s at 32 clients for each mode (loadgen, LOAD_SECS
#             per point, one real history with exclude_seen), the server's start time and
#             peak RSS
# then a table with ANN's ratios to exact.
#
# Usage: [ITEMS="100000 1000000"] [USERS=60000] [STEPS=30] [QUERIES=2000] [LOAD_SECS=8]
#        [EF=64] [MARGIN=100] [REUSE=1] benches/ann.sh [OUT_DIR]
# REUSE=1 keeps OUT_DIR's trained and exported runs (with their index) and exact-mode results,
# appends to results.jsonl and measures ANN again (e.g. with another EF, no rebuild).
# Needs release builds: cargo build --release -p sasrec-train -p sasrec-export -p sasrec-serve \
#   && cargo build --release -p sasrec-serve --example loadgen
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/ann}
bin=$root/target/release
read -r -a sizes <<< "${ITEMS:-100000 1000000}"
users=${USERS:-60000}
steps=${STEPS:-30}
queries=${QUERIES:-2000}
load_secs=${LOAD_SECS:-8}
ann_flags=(--ann_ef "${EF:-64}" --ann_candidates "${MARGIN:-100}")
port=${PORT:-18291}
py=${PYTHON:-$root/.venv/bin/python}
mkdir -p "$out"
results=$out/results.jsonl
reuse=${REUSE:-0}
[[ $reuse == 1 ]] || : > "$results"
for b in sasrec-train sasrec-export sasrec-serve examples/loadgen; do
  [[ -x $bin/$b ]] || { echo "build first (see the header of $0): no $bin/$b" >&2; exit 1; }
done

# record JSON: appends one result line.
record() { echo "$1" >> "$results"; }

# timed NAME CMD…: runs CMD under /usr/bin/time; prints "seconds peak_rss_mb".
timed() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$out/time.txt" "$@" > "$out/$name.out" 2> "$out/$name.log" || {
    echo "$name failed, see $out/$name.log" >&2; tail -3 "$out/$name.log" >&2; exit 1; }
  read -r secs kb < "$out/time.txt"
  echo "$secs $(( kb / 1024 ))"
}

# serve_point TAG MODE: starts the server in MODE, measures start time, latency at 1 client,
# throughput at 32 clients and peak RSS, records them.
serve_point() {
  local tag=$1 mode=$2 started pid rss
  started=$(date +%s.%N)
  "$bin/sasrec-serve" --model "$out/$tag-run" --addr "127.0.0.1:$port" --retrieval "$mode" \
    "${ann_flags[@]}" > "$out/$tag-serve-$mode.log" 2>&1 &
  pid=$!
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$out/$tag-serve-$mode.log" >&2; exit 1; }
    sleep 0.1
  done
  local ready; ready=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
  for clients in 1 32; do
    "$bin/examples/loadgen" --url "http://127.0.0.1:$port/recommend" --clients "$clients" \
      --seconds "$load_secs" --body "$out/$tag-body.json" --json > "$out/$tag-load-$mode-$clients.json"
  done
  rss=$(awk '/^VmHWM:/ { print int($2 / 1024) }' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  record "$("$py" - "$tag" "$mode" "$ready" "$rss" "$out/$tag-load-$mode-1.json" "$out/$tag-load-$mode-32.json" <<'PY'
import json, sys
tag, mode, ready, rss, one, many = sys.argv[1:]
a, b = json.load(open(one)), json.load(open(many))
print(json.dumps({"name": f"{tag}-serve-{mode}", "ready_s": float(ready), "peak_rss_mb": int(rss),
                  "p50_ms": a["p50_ms"], "p99_ms": a["p99_ms"], "rps_32": b["rps"],
                  "errors": a["non_2xx"] + a["errors"] + b["non_2xx"] + b["errors"]}))
PY
)"
}

# train_and_export TAG DATA: trains the model of TAG on DATA, exports it with its index and
# records the export's time, index build time and size.
train_and_export() {
  local tag=$1 data=$2 secs rss build bytes n
  rm -rf "$out/$tag-run"
  echo "   train ($steps steps)"
  timed "$tag-train" "$bin/sasrec-train" --dataset "$data" --no_time --no_mhc --maxlen 50 \
    --hidden_units 32 --num_heads 1 --num_blocks 2 --num_epochs 1 --loss sampled_softmax \
    --num_negatives 256 --max_steps "$steps" --eval_max_users 200 --eval_batch_size 64 \
    --num_workers 1 --device cpu --train_dir "$out/$tag-run" > /dev/null
  echo "   export --ann"
  read -r secs rss <<< "$(timed "$tag-export" "$bin/sasrec-export" --onnx --ann --train_dir "$out/$tag-run")"
  build=$(sed -n 's/.*built in \([0-9.]*\) s.*/\1/p' "$out/$tag-export.out")
  bytes=$(stat -c %s "$out/$tag-run/items.usearch")
  n=$(( $(wc -l < "$out/$tag-run/items.tsv") - 1 ))
  record "{\"name\": \"$tag-export\", \"items\": $n, \"seconds\": $secs, \"index_build_s\": $build, \"index_mb\": $(( bytes / 1048576 )), \"peak_rss_mb\": $rss}"
}

echo "# $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F)"
for items in "${sizes[@]}"; do
  tag=i${items}u$users
  data=$out/$tag.txt
  echo "== $items items, $users users"
  [[ -f $data ]] || "$bin/sasrec-train" data synthetic --output "$data" --users "$users" \
    --items "$items" --genres 16 --min_len 20 --max_len 80 --zipf 0.7 > /dev/null
  if [[ $reuse == 1 && -f $out/$tag-run/items.usearch ]]; then
    echo "   reusing $out/$tag-run and its index"
  else
    train_and_export "$tag" "$data"
  fi
  # The histories of the last QUERIES users of the file (real user vectors), and one of them as
  # the load generator's request.
  awk '{ print $1 }' "$data" | uniq | tail -n "$queries" > "$out/$tag-users.txt"
  awk 'NR == FNR { keep[$1] = 1; next } ($1 in keep)' "$out/$tag-users.txt" "$data" > "$out/$tag-queries.txt"
  "$py" - "$out/$tag-queries.txt" > "$out/$tag-body.json" <<'PY'
import sys
first, hist = None, []
for line in open(sys.argv[1]):
    u, i = line.split()[:2]
    if first is None: first = u
    if u != first: break
    hist.append(i)
print('{"history": [%s], "k": 10, "exclude_seen": true}' % ", ".join(f'"{i}"' for i in hist[-50:]))
PY
  for mode in exact ann; do
    [[ $reuse == 1 && $mode == exact && -f $out/$tag-exact.jsonl ]] && continue
    echo "   recommend --retrieval $mode ($queries users)"
    read -r secs rss <<< "$(timed "$tag-batch-$mode" "$bin/sasrec-serve" recommend --model "$out/$tag-run" \
      --input "$out/$tag-queries.txt" --output "$out/$tag-$mode.jsonl" --k 100 --retrieval "$mode" "${ann_flags[@]}")"
    record "{\"name\": \"$tag-batch-$mode\", \"seconds\": $secs, \"users_per_s\": $(awk -v n="$queries" -v s="$secs" 'BEGIN { printf "%.1f", n / s }'), \"peak_rss_mb\": $rss}"
  done
  # recall@10 from requests for k = 10 (what a k = 10 request asks the index for), recall@100
  # from the k = 100 answers above
  "$bin/sasrec-serve" recommend --model "$out/$tag-run" --input "$out/$tag-queries.txt" \
    --output "$out/$tag-ann-k10.jsonl" --k 10 --retrieval ann "${ann_flags[@]}" > /dev/null
  record "$("$py" - "$tag" "$out/$tag-exact.jsonl" "$out/$tag-ann-k10.jsonl" "$out/$tag-ann.jsonl" <<'PY'
import json, sys
tag, exact, ann10, ann100 = sys.argv[1:]
rows = lambda p: {(d := json.loads(l))["user"]: d["items"] for l in open(p)}
e = rows(exact)
def recall(a, k):
    got = [len(set(e[u][:k]) & set(a[u][:k])) / max(1, len(e[u][:k])) for u in e]
    return sum(got) / len(got)
print(json.dumps({"name": f"{tag}-recall", "users": len(e), "recall_at_10": round(recall(rows(ann10), 10), 4),
                  "recall_at_100": round(recall(rows(ann100), 100), 4)}))
PY
)"
  for mode in exact ann; do
    [[ $reuse == 1 && $mode == exact && -f $out/$tag-load-exact-32.json ]] && continue
    echo "   serve --retrieval $mode"
    serve_point "$tag" "$mode"
  done
done

"$py" - "$results" <<'PY'
import json, sys
r = {d["name"]: d for d in map(json.loads, open(sys.argv[1]))}
tags = sorted({n.rsplit("-export", 1)[0] for n in r if n.endswith("-export")}, key=lambda t: int(t[1:t.index("u")]))
print("\n| items | index build s | index MB | recall@10 | recall@100 | batch users/s exact / ann | p50 ms exact / ann | p99 ms exact / ann | req/s at 32 exact / ann (×) | start s exact / ann | peak RSS MB exact / ann |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for t in tags:
    x, rc = r[f"{t}-export"], r[f"{t}-recall"]
    be, ba = r[f"{t}-batch-exact"], r[f"{t}-batch-ann"]
    se, sa = r[f"{t}-serve-exact"], r[f"{t}-serve-ann"]
    print(f'| {x["items"]:,} | {x["index_build_s"]:.1f} | {x["index_mb"]} | {rc["recall_at_10"]:.4f} | {rc["recall_at_100"]:.4f} '
          f'| {be["users_per_s"]:.0f} / {ba["users_per_s"]:.0f} | {se["p50_ms"]:.2f} / {sa["p50_ms"]:.2f} '
          f'| {se["p99_ms"]:.2f} / {sa["p99_ms"]:.2f} | {se["rps_32"]:.0f} / {sa["rps_32"]:.0f} ({sa["rps_32"] / se["rps_32"]:.1f}×) '
          f'| {se["ready_s"]:.1f} / {sa["ready_s"]:.1f} | {se["peak_rss_mb"]} / {sa["peak_rss_mb"]} |')
PY
