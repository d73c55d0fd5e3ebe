#!/usr/bin/env bash
# Quality runs behind the README's result tables (CPU or GPU; each run resumes if interrupted).
# Usage: benches/quality.sh [OUT_DIR]   (default runs/quality). Logs: OUT_DIR/<name>.log,
# results: OUT_DIR/<name>/metrics.jsonl and summary.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/quality}
bin=$root/target/release/sasrec-train
data=${SASREC_DATA:-$root/../shared/data}
mkdir -p "$out"
common=(--num_blocks 2 --num_heads 1 --hidden_units 50 --dropout_rate 0.2 --warmup_steps 0
        --lr_decay_rate 1 --eval_every 20 --early_stop_patience 0 --num_workers 1)
run() { local name=$1; shift; echo "== $name"; "$bin" "${common[@]}" --train_dir "$out/$name" "$@" > "$out/$name.json" 2>> "$out/$name.log"; }
# SASRec, reference settings, ML-1M SASRec layout.
run ml1m-sasrec --dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --no_mhc --maxlen 200 --num_epochs ${EPOCHS_ML1M:-60}
# TiSASRec vs SASRec on the time-stamped half (reference: 5-filter in one pass, maxlen 50,
# time_span 256, personal scaling, l2 5e-5).
half=(--dataset "$data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz" --min_user_count 5 --min_item_count 5
      --kcore_one_pass --min_holdout_len 3 --maxlen 50 --l2_emb 5e-5 --num_epochs ${EPOCHS_HALF:-60})
run half-tisasrec "${half[@]}" --no_mhc --time_span 256 --time_unit personal
run half-sasrec "${half[@]}" --no_mhc --no_time
# ML-100k, same pair.
k100=(--dataset "$data/ml-100k/u.data.gz" --maxlen 50 --num_epochs ${EPOCHS_100K:-60})
run ml100k-tisasrec "${k100[@]}" --no_mhc --time_span 256 --time_unit personal
run ml100k-sasrec "${k100[@]}" --no_mhc --no_time
