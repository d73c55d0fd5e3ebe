#!/usr/bin/env bash
# Quality of the item-table optimizers (docs/MODELS.md §7) on ML-1M (SASRec layout, maxlen 200,
# the settings of benches/loss_quality.sh): dense Adam vs lazy_adam vs rowwise_adagrad, for
# sampled softmax (256 uniform negatives shared by the batch) and gBCE (256 negatives per
# sequence, t = 0.75), EPOCHS epochs (evaluated every EVAL_EVERY), one run per seed; test
# NDCG@10 / HR@10 under both protocols at the epoch chosen on validation, mean ± std over the
# seeds (benches/seed_table.py). rowwise_adagrad uses --item_lr ADAGRAD_LR (Adagrad's steps
# shrink as 1/√t, so it wants a larger peak than Adam's 0.001).
# Every run resumes where it stopped: rerun the same command to continue a cut-off sweep.
#
# Usage: [BIN=…/sasrec-train] [EPOCHS=60] [EVAL_EVERY=20] [SEEDS="1 2 3"] [LOSSES="ss gbce"]
#        [OPTIMIZERS="adam lazy_adam rowwise_adagrad"] [ADAGRAD_LR=0.01]
#        benches/item_optimizer_quality.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/item_optimizer_quality}
bin=${BIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
mkdir -p "$out"
common=(--dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --no_mhc --maxlen 200
        --num_blocks 2 --num_heads 1 --hidden_units 50 --dropout_rate 0.2 --warmup_steps 0
        --lr_decay_rate 1 --eval_every "${EVAL_EVERY:-20}" --early_stop_patience 0
        --num_workers 1 --num_epochs "${EPOCHS:-60}")
for seed in ${SEEDS:-1 2 3}; do
  for loss in ${LOSSES:-ss gbce}; do
    case $loss in
      ss) flags=(--loss sampled_softmax --num_negatives 256) ;;
      gbce) flags=(--loss gbce --num_negatives 256 --gbce_t 0.75) ;;
      *) echo "unknown loss $loss (ss gbce)" >&2; exit 2 ;;
    esac
    for opt in ${OPTIMIZERS:-adam lazy_adam rowwise_adagrad}; do
      extra=(--item_optimizer "$opt")
      [[ $opt == rowwise_adagrad ]] && extra+=(--item_lr "${ADAGRAD_LR:-0.01}")
      name=$loss-$opt
      echo "== $name seed $seed"
      start=$(date +%s)
      "$bin" "${common[@]}" "${flags[@]}" "${extra[@]}" --seed "$seed" \
        --train_dir "$out/$name-s$seed" > "$out/$name-s$seed.json" 2>> "$out/$name-s$seed.log"
      echo "   $(( $(date +%s) - start )) s"
    done
  done
done
"${PYTHON:-$root/.venv/bin/python}" "$root/benches/seed_table.py" "$out"
