#!/usr/bin/env bash
# Cost of the four model kinds at the prototype's defaults (maxlen 200, batch 128, d 50,
# 2 blocks, 2 heads, dropout 0.2, time_span 100 hours, mHC n = 4 with 20 Sinkhorn rounds):
# seconds per training step and peak RSS (GNU time's maximum resident set size), one process
# per measurement (training only: the one evaluation at the end covers 100 users), all in the
# same invocation, printed as ratios to plain SASRec. Then
# TiSASRec alone as maxlen grows, in both --time_dropout forms, to show how memory grows
# (table: O(B·h·T·(T + k)); elementwise, the reference: O(B·T²·C)). The mHC kinds also run
# with --mhc_hres lite.
#
# On CUDA the GPU memory in use is sampled every 200 ms during each run (nvidia-smi) and its
# peak printed too.
#
# Usage: benches/model_cost.sh [EPOCHS=1] [DEVICE=cpu]
#   BIN     the sasrec-train binary (default target/release/sasrec-train, built when missing)
#   DATA    the interaction file (default ../shared/data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz)
#   MAXLENS the maxlen sweep (default "50 100 200 400"); ELEMENTWISE_MAXLENS the sweep of the
#           reference form (default "50 100 200"; docs/RESULTS.md has its memory at 400)
#   EXTRA   extra flags for every run (e.g. "--mhc_hres lite")
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
epochs=${1:-1}
device=${2:-cpu}
data=${DATA:-$root/../shared/data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz}
maxlens=${MAXLENS-50 100 200 400}
elementwise_maxlens=${ELEMENTWISE_MAXLENS-50 100 200}
py=${SASREC_PYTHON:-$root/.venv/bin/python}
bin=${BIN:-$root/target/release/sasrec-train}
[ -x "$bin" ] || cargo build --release -q -p sasrec-train --manifest-path "$root/Cargo.toml"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results=$tmp/results.tsv

# run NAME FLAGS...: one training run; appends NAME, s/step, steps, peak RSS (KiB) and peak GPU
# memory (MiB; "-" off CUDA) to $results.
run() {
  local name=$1
  shift
  local dir=$tmp/$name smi=
  if [ "$device" = cuda ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$dir.mem" &
    smi=$!
  fi
  local ok=1
  /usr/bin/time -f '%M' -o "$dir.rss" "$bin" --dataset "$data" --train_dir "$dir" \
    --num_epochs "$epochs" --eval_every 100000 --eval_max_users 100 --num_workers 1 \
    --device "$device" \
    ${EXTRA:-} "$@" > "$dir.json" 2> "$dir.log" || ok=0
  [ -n "$smi" ] && kill "$smi" 2> /dev/null
  local gpu=-
  [ -s "$dir.mem" ] && gpu=$(sort -n "$dir.mem" | tail -1)
  if [ $ok = 0 ]; then
    echo "model_cost: $name failed:" >&2
    tail -5 "$dir.log" >&2
    printf '%s\tnan\t0\t%s\t%s\n' "$name" "$(cat "$dir.rss" 2>/dev/null | tail -1)" "$gpu" >> "$results"
    return
  fi
  "$py" - "$name" "$dir.json" "$dir.rss" "$gpu" >> "$results" <<'PY'
import json, sys
name, summary, rss, gpu = sys.argv[1:5]
s = json.load(open(summary))
print(f"{name}\t{s['seconds_per_step']:.4f}\t{s['steps']}\t{open(rss).read().split()[-1]}\t{gpu}")
PY
}

for kind in sasrec tisasrec sasrec-mhc tisasrec-mhc; do
  flags=()
  case $kind in sasrec | sasrec-mhc) flags+=(--no_time) ;; esac
  case $kind in sasrec | tisasrec) flags+=(--no_mhc) ;; esac
  echo "model_cost: $kind (defaults)" >&2
  run "$kind" "${flags[@]}"
done
for kind in sasrec-mhc tisasrec-mhc; do
  flags=(--mhc_hres lite)
  [ "$kind" = sasrec-mhc ] && flags+=(--no_time)
  echo "model_cost: $kind-lite (defaults, --mhc_hres lite)" >&2
  run "$kind-lite" "${flags[@]}"
done
for t in $maxlens; do
  echo "model_cost: tisasrec maxlen $t (table)" >&2
  run "tisasrec-T$t" --no_mhc --maxlen "$t"
done
for t in $elementwise_maxlens; do
  echo "model_cost: tisasrec maxlen $t (elementwise)" >&2
  run "tisasrec-T$t-elementwise" --no_mhc --maxlen "$t" --time_dropout elementwise
done

"$py" - "$results" "$device" "$epochs" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, s, steps, rss, gpu = line.rstrip("\n").split("\t")
    rows[name] = (float(s), int(steps), int(rss) / 1024**2, gpu)
base = rows["sasrec"][0]
print(f"device {sys.argv[2]}, {sys.argv[3]} epoch(s) per run, {rows['sasrec'][1]} steps per run")
print(f"{'run':28s} {'s/step':>8s} {'x SASRec':>9s} {'peak RSS GiB':>13s} {'peak GPU MiB':>13s}")
for name, (s, steps, rss, gpu) in rows.items():
    print(f"{name:28s} {s:8.3f} {s / base:9.2f} {rss:13.2f} {gpu:>13s}")
PY
