#!/usr/bin/env bash
# Does the order of same-second ratings move ML-1M's numbers? (docs/RESULTS.md, "Reproducing the
# literature".) The 2,999 ML-1M users with real timestamps (`ml-1m/raw/ratings_u1-2999.dat.gz`)
# written three times, the same ratings in the same time order, ties ordered differently:
#   file    a stable time sort of the raw file (ties in the order ratings.dat lists them)
#   movie   ties by MovieID
#   shared  the order of the shared chronological file (`ml-1m.chrono_all.txt.gz`), which
#           `ml-1m.sasrec.txt.gz` is built from
# then SASRec+'s configuration (benches/reproduce.sh sasrec_plus: CE, d 64, 2 blocks, 1 head,
# dropout 0.1, window 200, original wiring, N(0, 0.02²), Adam β₂ 0.999, right padding) trains on
# each for EPOCHS epochs (default 30), items with fewer than 5 ratings dropped (one pass, as the
# SASRec file), evaluated every EVAL_EVERY (default 5) under full ranking; prints the test
# metrics at the epoch chosen on validation NDCG@10 (full) per order. STREAMS=2 trains two at a
# time with one thread each. SMOKE=1: one step each.
# Usage: [EPOCHS=30] [EVAL_EVERY=5] [ORDERS="file movie shared"] [STREAMS=1] [SEED=1]
#        [BIN=…/sasrec-train] [SMOKE=1] benches/ml1m_tie_order.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/tie_order}
bin=${BIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
py=${PYTHON:-$root/.venv/bin/python}
mkdir -p "$out"
"$py" - "$data" "$out" "$root/benches" <<'PY'
import os, sys
data, out = sys.argv[1:3]
sys.path.insert(0, sys.argv[3])
from ml1m_ties import read
raw, shared = read(data)
orders = {
    "file": lambda u, ev: [m for _, m in sorted(ev, key=lambda e: e[0])],
    "movie": lambda u, ev: [m for _, m in sorted(ev)],
    "shared": lambda u, ev: shared[u],
}
for name, order in orders.items():
    with open(os.path.join(out, f"{name}.txt"), "w") as f:
        for user in sorted(raw):
            items = order(user, raw[user])
            assert sorted(items) == sorted(m for _, m in raw[user]), user
            f.writelines(f"{user} {m}\n" for m in items)
PY
flags=(--no_time --no_mhc --min_item_count 5 --kcore_one_pass --hidden_units 64 --num_blocks 2
       --num_heads 1 --dropout_rate 0.1 --maxlen 200 --batch_size 128 --lr 0.001
       --adam_beta2 0.999 --warmup_steps 0 --lr_decay_rate 1 --block_wiring original
       --init normal_0.02 --padding right --loss ce --select_protocol full
       --early_stop_patience 0 --num_workers 1 --seed "${SEED:-1}")
budget=(--num_epochs "${EPOCHS:-30}" --eval_every "${EVAL_EVERY:-5}")
[[ -n ${SMOKE:-} ]] && budget=(--num_epochs 1 --max_steps 1 --eval_max_users 64)
running=0
for order in ${ORDERS:-file movie shared}; do
  run=("$bin" --dataset "$out/$order.txt" "${flags[@]}" "${budget[@]}" --train_dir "$out/$order")
  echo "== $order" >&2
  if (( ${STREAMS:-1} > 1 )); then
    OMP_NUM_THREADS=1 "${run[@]}" > "$out/$order.json" 2> "$out/$order.log" &
    running=$(( running + 1 ))
    if (( running >= STREAMS )); then wait -n; running=$(( running - 1 )); fi
  else
    "${run[@]}" > "$out/$order.json" 2> "$out/$order.log"
  fi
done
wait
echo "| tie order | best epoch | valid NDCG@10 | test NDCG@10 | test HR@10 | users |"
echo "| --- | --- | --- | --- | --- | --- |"
for order in ${ORDERS:-file movie shared}; do
  "$py" - "$out/$order.json" "$order" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); v, t = s["valid_at_best"]["full"], s["test_at_best"]["full"]
print(f"| {sys.argv[2]} | {s['best_epoch']} | {v['ndcg']:.4f} | {t['ndcg']:.4f} | {t['hr']:.4f} | {t['users']} |")
PY
done
