#!/usr/bin/env bash
# TiSASRec with the two --time_dropout forms on the time-stamped half of ML-1M, reference
# settings (5-filter in one pass, maxlen 50, time_span 256, personal scaling, l2 5e-5, constant
# lr, 1 head), SEEDS seeds each; prints mean ± std of valid and test NDCG@10 under both
# protocols at the epoch chosen on validation (benches/seed_table.py).
# Usage: benches/time_dropout.sh [OUT_DIR=runs/time_dropout]   EPOCHS (60), SEEDS ("1 2 3"),
# FORMS ("table elementwise"), PARALLEL (1: runs at a time, each with 2/PARALLEL threads).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/time_dropout}
bin=$root/target/release/sasrec-train
data=${SASREC_DATA:-$root/../shared/data}
py=${SASREC_PYTHON:-$root/.venv/bin/python}
mkdir -p "$out"
args=(--dataset "$data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz" --min_user_count 5 --min_item_count 5
      --kcore_one_pass --min_holdout_len 3 --maxlen 50 --l2_emb 5e-5 --num_epochs "${EPOCHS:-60}"
      --no_mhc --time_span 256 --time_unit personal --num_blocks 2 --num_heads 1
      --hidden_units 50 --dropout_rate 0.2 --warmup_steps 0 --lr_decay_rate 1 --eval_every 20
      --early_stop_patience 0 --num_workers 1)
parallel=${PARALLEL:-1}
threads=$((2 / parallel > 0 ? 2 / parallel : 1))
one() {
  local form=$1 seed=$2 name=$1-s$2
  echo "time_dropout: $name" >&2
  OMP_NUM_THREADS=$threads "$bin" "${args[@]}" --time_dropout "$form" --seed "$seed" \
    --train_dir "$out/$name" > "$out/$name.json" 2>> "$out/$name.log"
}
for form in ${FORMS:-table elementwise}; do
  for seed in ${SEEDS:-1 2 3}; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
    one "$form" "$seed" &
  done
done
wait
"$py" "$root/benches/seed_table.py" "$out"
