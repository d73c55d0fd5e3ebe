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
# Usage: benches/model_cost.sh [EPOCHS=1] [DEVICE=cpu]
#   DATA    the interaction file (default ../shared/data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz)
#   MAXLENS the maxlen sweep (default "50 100 200 400"); ELEMENTWISE_MAXLENS the sweep of the
#           reference form (default "50 100 200": at 400 it needs more than 24 GB)
#   EXTRA   extra flags for every run (e.g. "--mhc_hres lite")
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
epochs=${1:-1}
device=${2:-cpu}
data=${DATA:-$root/../shared/data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz}
maxlens=${MAXLENS-50 100 200 400}
elementwise_maxlens=${ELEMENTWISE_MAXLENS-50 100 200}
py=${SASREC_PYTHON:-$root/.venv/bin/python}
bin=$root/target/release/sasrec-train
[ -x "$bin" ] || cargo build --release -q -p sasrec-train --manifest-path "$root/Cargo.toml"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results=$tmp/results.tsv

# run NAME FLAGS...: one training run; appends NAME, s/step, steps, peak RSS (KiB) to $results.
run() {
  local name=$1
  shift
  local dir=$tmp/$name
  if ! /usr/bin/time -f '%M' -o "$dir.rss" "$bin" --dataset "$data" --train_dir "$dir" \
    --num_epochs "$epochs" --eval_every 100000 --eval_max_users 100 --num_workers 1 \
    --device "$device" \
    ${EXTRA:-} "$@" > "$dir.json" 2> "$dir.log"; then
    echo "model_cost: $name failed:" >&2
    tail -5 "$dir.log" >&2
    printf '%s\tnan\t0\t%s\n' "$name" "$(cat "$dir.rss" 2>/dev/null | tail -1)" >> "$results"
    return
  fi
  "$py" - "$name" "$dir.json" "$dir.rss" >> "$results" <<'PY'
import json, sys
name, summary, rss = sys.argv[1:4]
s = json.load(open(summary))
print(f"{name}\t{s['seconds_per_step']:.4f}\t{s['steps']}\t{open(rss).read().split()[-1]}")
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
    name, s, steps, rss = line.rstrip("\n").split("\t")
    rows[name] = (float(s), int(steps), int(rss) / 1024**2)
base = rows["sasrec"][0]
print(f"device {sys.argv[2]}, {sys.argv[3]} epoch(s) per run, {rows['sasrec'][1]} steps per run")
print(f"{'run':28s} {'s/step':>8s} {'x SASRec':>9s} {'peak RSS GiB':>13s}")
for name, (s, steps, rss) in rows.items():
    print(f"{name:28s} {s:8.3f} {s / base:9.2f} {rss:13.2f}")
PY
