#!/usr/bin/env bash
# SASRec vs SASRec+mHC (ML-1M SASRec layout) and TiSASRec vs TiSASRec+mHC (time-stamped
# ML-1M half), SEEDS seeds each, same data, same evaluation candidates (--eval_seed fixed),
# test metrics of the epoch chosen on validation, mean ± std under both protocols, and the
# training seconds per epoch. Runs resume if interrupted. PARALLEL=1 starts all runs at once
# (quality only: their times are then contended); TIMEOUT=S stops each run after S seconds
# (benches/seed_table.py then reads a cut run up to its last evaluation). VARIANTS picks the
# variants (plain: --no_mhc; mhc: Sinkhorn H_res; lite: --mhc_hres lite), SASREC_MAXLEN the
# SASRec pair's window (default 200, the reference).
# Usage: EPOCHS=20 SEEDS="1 2 3" PAIRS="sasrec tisasrec" [VARIANTS="plain mhc"] [PARALLEL=1]
#        [TIMEOUT=S] [SASREC_MAXLEN=200] [SASREC_TRAIN=bin] benches/mhc_compare.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/mhc}
bin=${SASREC_TRAIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
py=${SASREC_PYTHON:-$root/.venv/bin/python}
epochs=${EPOCHS:-20}
mkdir -p "$out"
common=(--num_blocks 2 --num_heads 1 --hidden_units 50 --dropout_rate 0.2 --warmup_steps 0
        --lr_decay_rate 1 --norm_first --num_epochs "$epochs" --eval_every $(( epochs < 10 ? epochs : 10 ))
        --early_stop_patience 0 --num_workers 1)
sasrec=(--dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --maxlen "${SASREC_MAXLEN:-200}")
tisasrec=(--dataset "$data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz" --min_user_count 5 --min_item_count 5
          --kcore_one_pass --min_holdout_len 3 --maxlen 50 --l2_emb 5e-5 --time_span 256 --time_unit personal)
for pair in ${PAIRS:-sasrec tisasrec}; do
  declare -n args=$pair
  for seed in ${SEEDS:-1 2 3}; do
    for variant in ${VARIANTS:-plain mhc}; do
      name=$pair-$variant-s$seed
      case $variant in
        plain) flag=(--no_mhc) ;;
        mhc) flag=() ;;
        lite) flag=(--mhc_hres lite) ;;
        *) echo "mhc_compare: unknown variant $variant (plain, mhc, lite)" >&2; exit 2 ;;
      esac
      echo "== $name" >&2
      run=(timeout "${TIMEOUT:-0}" "$bin" "${common[@]}" "${args[@]}" "${flag[@]}" --seed "$seed"
           --train_dir "$out/$name")
      if [ -n "${PARALLEL:-}" ]; then
        "${run[@]}" > "$out/$name.json" 2> "$out/$name.log" &
      else
        "${run[@]}" > "$out/$name.json" 2> "$out/$name.log" || echo "$name: exit status $?"
      fi
    done
  done
done
wait
"$py" "$root/benches/seed_table.py" "$out"
