#!/usr/bin/env bash
# Item features and cold start (docs/MODELS.md §6.2–6.4): SASRec (BCE, maxlen 200, d 50, 1
# head) with --item_repr id / id+features / features and --cold_items FRACTION on ML-100k
# (u.item genres + year) and ML-1M (movies.dat genres + year), SEEDS seeds each, the same cold
# items and evaluation candidates for every seed (--eval_seed fixed). Prints, per dataset and
# representation, mean ± std over the seeds of test NDCG@10 and HR@10 for warm and for cold
# targets under full ranking and the sampled protocol, and the category-popularity baseline
# (the same for every seed and representation). FRACTION=0 holds nothing out: the plain
# comparison of the representations on every test user (full ranking and sampled).
# Usage: [EPOCHS=20] [SEEDS="7 8 9"] [FRACTION=0.1 (0: none)] [DATASETS="ml100k ml1m"]
#        [SASREC_TRAIN=bin] benches/cold_start.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/cold_start}
bin=${SASREC_TRAIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
epochs=${EPOCHS:-20}
mkdir -p "$out"
"$bin" data features-ml100k --input "$data/ml-100k/u.item.gz" --output "$out/ml100k.items.tsv"
"$bin" data features-ml1m --input "$data/ml-1m/raw/movies.dat.gz" \
  --item_map "$data/ml-1m/ml-1m.sasrec.item_map.txt.gz" --output "$out/ml1m.items.tsv"
declare -A dataset=([ml100k]="$data/ml-100k/u.data.gz" [ml1m]="$data/ml-1m/ml-1m.sasrec.txt.gz")
for name in ${DATASETS:-ml100k ml1m}; do
  for seed in ${SEEDS:-7 8 9}; do
    for repr in id id+features features; do
      run=$name-$repr-s$seed
      feats=()
      [[ $repr != id ]] && feats=(--item_features "$out/$name.items.tsv" --item_repr "$repr")
      [[ ${FRACTION:-0.1} != 0 ]] && feats+=(--cold_items "${FRACTION:-0.1}")
      echo "== $run" >&2
      start=$(date +%s)
      RUST_LOG=${RUST_LOG:-info} "$bin" --dataset "${dataset[$name]}" --train_dir "$out/$run" \
        --no_time --no_mhc --maxlen 200 --num_heads 1 --num_epochs "$epochs" \
        --eval_every "$epochs" --device cpu --seed "$seed" "${feats[@]}" > "$out/summary-$run.json" 2> "$out/log-$run.txt"
      echo "$run $(( $(date +%s) - start )) s" >> "$out/times.log"
    done
  done
done
python3 - "$out" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("summary-*.json")):
    if f.stat().st_size == 0:  # a run in progress or cut
        continue
    name, repr_, seed = f.stem[len("summary-"):].rsplit("-", 2)
    rows.setdefault((name, repr_), []).append(json.loads(f.read_text())["test_at_best"])
def stat(xs):
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"
if not any("cold_start" in t for ts in rows.values() for t in ts):  # FRACTION=0
    print("| data | item_repr | seeds | NDCG@10 full | HR@10 full | NDCG@10 sampled | HR@10 sampled |")
    print("| --- " * 7 + "|")
    for (name, repr_), tests in sorted(rows.items()):
        cells = [stat([t[p][m] for t in tests]) for p in ("full", "sampled") for m in ("ndcg", "hr")]
        print(f"| {name} | {repr_} | {len(tests)} | " + " | ".join(cells) + " |")
    sys.exit(0)
cols = [(g, p, m) for g in ("warm", "cold") for p in ("full", "sampled") for m in ("ndcg", "hr")]
print("| data | item_repr | seeds | " + " | ".join(f"{g} {m.upper()}@10 {p}" for g, p, m in cols) + " |")
print("| --- " * (3 + len(cols)) + "|")
baseline = {}
for (name, repr_), tests in sorted(rows.items()):
    cells = [stat([t["cold_start"][g][p][m] for t in tests]) for g, p, m in cols]
    users = tests[0]["cold_start"]["cold"]["full"]["users"], tests[0]["cold_start"]["warm"]["full"]["users"]
    print(f"| {name} | {repr_} | {len(tests)} | " + " | ".join(cells) + " |")
    if "category_popularity" in tests[0]:
        baseline[name] = (tests[0]["category_popularity"], users)
for name, (b, (cold, warm)) in sorted(baseline.items()):
    cells = [f"{b[g][p][m]:.4f}" for g, p, m in cols]
    print(f"| {name} | category popularity | – | " + " | ".join(cells) + f" |  ({cold} cold, {warm} warm test users)")
PY
