#!/usr/bin/env bash
# The cost of --metrics_k: the top-L lists that coverage@k and the mean popularity rank need
# (L = the largest cut-off) are kept block by block during the full-ranking pass
# (docs/MODELS.md §1.7). One `--inference_only` evaluation of SASRec's ML-1M file (6,040
# validation and 6,040 test users, both protocols) with the weights of a finished run, for
# L = 1 (the baseline: one argmax per block), 10 (the default), 100 and 1,000, REPEAT times each
# in this invocation. Prints the median wall seconds, the ratio to L = 1 and the peak RSS.
# The list costs O(users × I × log L) comparisons and O(users × L) memory per user block; the
# ranking it rides on is O(users × I × C).
# Usage: RUN=runs/reproduce/sasrec_plus-s1 [REPEAT=3] [BIN=…/sasrec-train] benches/eval_cutoffs.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${BIN:-$root/target/release/sasrec-train}
run=${RUN:?RUN=a finished run directory on ml-1m.sasrec.txt.gz}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The run's model flags, from its config.json.
mapfile -t flags < <("${PYTHON:-$root/.venv/bin/python}" - "$run/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); m = c["model"]
args = ["--dataset", c["dataset"], "--maxlen", m["maxlen"], "--hidden_units", m["hidden_units"],
        "--num_blocks", m["num_blocks"], "--num_heads", m["num_heads"], "--no_time"]
if m.get("mhc") is None: args.append("--no_mhc")
if m.get("block_wiring"): args += ["--block_wiring", m["block_wiring"]]
if m.get("padding"): args += ["--padding", m["padding"]]
print("\n".join(map(str, args)))
PY
)
baseline=
printf '| largest cut-off L | --metrics_k | seconds (median of %s) | × L = 1 | peak RSS MB |\n| --- | --- | --- | --- | --- |\n' "${REPEAT:-3}"
for ks in 1 1,5,10 1,5,10,20,50,100 1,10,100,1000; do
  times=()
  for _ in $(seq "${REPEAT:-3}"); do
    /usr/bin/time -f '%e %M' -o "$out/time" "$bin" "${flags[@]}" --inference_only \
      --state_dict_path "$run/model.safetensors" --metrics_k "$ks" --num_workers 1 \
      --train_dir "$out/eval" > "$out/eval.json" 2> "$out/eval.log"
    read -r secs rss < "$out/time"
    times+=("$secs")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -g | sed -n "$(( (${#times[@]} + 1) / 2 ))p")
  baseline=${baseline:-$median}
  largest=${ks##*,}
  ratio=$(awk -v a="$median" -v b="$baseline" 'BEGIN { printf "%.2f", a / b }')
  echo "| $largest | $ks | $median | $ratio | $(( rss / 1024 )) |"
done
