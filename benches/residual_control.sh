#!/usr/bin/env bash
# mHC against plain and learned residuals on the same footing (docs/RESULTS.md, "mHC against a
# gated residual"): SASRec on SASRec's ML-1M file under the full softmax (CE) with SASRec+'s
# model and optimiser (d 64, 2 blocks, 1 head, dropout 0.1, batch 128, Adam lr 1e-3 with
# β₂ 0.999, constant lr, N(0, 0.02²) initialisation, `--padding PADDING`, default right: the
# window as SASRec+ pads it, docs/MODELS.md §1.4), one run per residual and seed:
#   original  the plain wiring of the SASRec paper's code and SASRec+ (docs/MODELS.md §1.4)
#   pre_ln    plain Pre-LN: the sub-layers that the gates and mHC wrap
#   gated     Pre-LN with LiGR's learned gates, x + σ(W x + b) ⊙ F(LN(x)) (docs/MODELS.md §1.4)
#   mhc       mHC, 4 streams, Sinkhorn-Knopp H_res (docs/MODELS.md §3)
#   lite      mHC, 4 streams, mHC-lite H_res (docs/MODELS.md §3.9)
# A budget this 2-core CPU affords: a window of MAXLEN items (default 50; the papers use 200),
# EPOCHS epochs (default 40) evaluated every EVAL_EVERY (default 4) under full ranking and both
# protocols, the epoch chosen on validation NDCG@10 (full ranking) with no early stop, so every
# variant sees the same budget. Prints the test metrics at that epoch, mean ± std over SEEDS
# (benches/seed_table.py). A cut-off run resumes where it stopped: rerun the same command.
# STREAMS=2 runs two trainings at a time with one thread each (quality only: their seconds per
# epoch are then contended). SMOKE=1: one optimiser step and 64 evaluated users per run, to
# check that every variant parses and starts (the tests do so), not a result.
# Usage: [SEEDS="1 2 3"] [VARIANTS="original pre_ln gated mhc lite"] [MAXLEN=50] [EPOCHS=40]
#        [PADDING=right]
#        [EVAL_EVERY=4] [STREAMS=1] [BIN=…/sasrec-train] [SMOKE=1]
#        benches/residual_control.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/residual_control}
bin=${BIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
py=${PYTHON:-$root/.venv/bin/python}
common=(--dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --maxlen "${MAXLEN:-50}"
        --hidden_units 64 --num_blocks 2 --num_heads 1 --dropout_rate 0.1 --batch_size 128
        --lr 0.001 --adam_beta2 0.999 --warmup_steps 0 --lr_decay_rate 1 --init normal_0.02
        --padding "${PADDING:-right}"
        --loss ce --select_protocol full --metrics_k 1,5,10,20,50,100 --num_workers 1
        --early_stop_patience 0)
budget=(--num_epochs "${EPOCHS:-40}" --eval_every "${EVAL_EVERY:-4}")
[[ -n ${SMOKE:-} ]] && budget=(--num_epochs 1 --eval_every 1 --max_steps 1 --eval_max_users 64)
mkdir -p "$out"

# The flags of residual $1.
variant_flags() {
  case $1 in
    original|pre_ln|gated) flags=(--no_mhc --block_wiring "$1") ;;
    mhc) flags=() ;;
    lite) flags=(--mhc_hres lite) ;;
    *) echo "residual_control.sh: unknown variant '$1'; one of: original pre_ln gated mhc lite" >&2
       exit 2 ;;
  esac
}

running=0
for seed in ${SEEDS:-1 2 3}; do
  for variant in ${VARIANTS:-original pre_ln gated mhc lite}; do
    variant_flags "$variant"
    name=$variant-s$seed
    echo "== $name: ${flags[*]}" >&2
    run=("$bin" "${common[@]}" "${budget[@]}" "${flags[@]}" --seed "$seed" --train_dir "$out/$name")
    if (( ${STREAMS:-1} > 1 )); then
      OMP_NUM_THREADS=1 "${run[@]}" > "$out/$name.json" 2> "$out/$name.log" &
      running=$(( running + 1 ))
      if (( running >= STREAMS )); then wait -n; running=$(( running - 1 )); fi
    else
      "${run[@]}" > "$out/$name.json" 2> "$out/$name.log"
    fi
  done
done
wait
"$py" "$root/benches/seed_table.py" "$out" full
