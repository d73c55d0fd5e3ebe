#!/usr/bin/env bash
# One-shot GPU measurements (README "Results on a GPU"): everything a GPU session of issue #5
# (speed, AMP, time to target) and #4 (mHC pairs) needs, from one script with a bounded run
# time, writing as it goes so that a cut-off run still returns what it finished.
#
#   A (one process at a time, for timings): check-distributed on NCCL; the PyTorch
#     reference's training-step speed on the device; SASRec on ML-1M (maxlen 200, batch 128,
#     d 50, 2 blocks, 1 head, dropout 0.2, lr 1e-3) for EPOCHS_SPEED epochs in fp32, bf16
#     autocast and fp16 autocast with loss scaling (seconds per epoch); the same in fp32 and
#     bf16 for EPOCHS_A epochs evaluated every 5 (time to valid NDCG@10 ≥ 0.59 from
#     metrics.jsonl); the per-epoch time of the four mHC-pair models (EPOCHS_SPEED epochs,
#     benches/mhc_compare.sh with one seed, on the default device).
#   B (all at once, for quality; wall times are contended): SASRec vs SASRec+mHC (ML-1M) and
#     TiSASRec vs TiSASRec+mHC (time-stamped half) with SEEDS seeds for EPOCHS_B epochs:
#     benches/mhc_compare.sh with PARALLEL=1.
#
# Usage: BIN=… SASREC_DATA=… OUT=… [PHASES="A B" DEVICE=cuda EPOCHS_SPEED=10 EPOCHS_A=80
#        EPOCHS_B=40 SEEDS="1 2 3" TIMEOUT_B=300] benches/gpu_suite.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${BIN:-$root/target/release/sasrec-train}
data=${SASREC_DATA:-$root/../shared/data}
out=${OUT:-$root/runs/gpu}
py=${SASREC_PYTHON:-python3}
device=${DEVICE:-cuda}
epochs_speed=${EPOCHS_SPEED:-10}
epochs_a=${EPOCHS_A:-80}
epochs_b=${EPOCHS_B:-40}
mkdir -p "$out/mhc"
log() { echo "[$(date +%T)] $*" | tee -a "$out/suite.log"; }
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) > "$out/gpu.txt" 2>&1
nproc > "$out/cpus.txt"

case " ${PHASES:-A B} " in *" A "*)
log "A: check-distributed"
if [ "$device" = cuda ]; then
  timeout 60 "$bin" check-distributed --backend nccl --nproc_per_node 1 --master_port 29631 \
    > "$out/check-distributed.json" 2> "$out/check-distributed.log"
fi
log "A: PyTorch reference speed"
timeout 120 "$py" "$root/benches/reference/sasrec_torch.py" speed --batches 240 --device "$device" \
  > "$out/reference-speed.json" 2> "$out/reference-speed.log"
ml1m=(--dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --no_mhc --maxlen 200 --num_blocks 2
      --num_heads 1 --hidden_units 50 --dropout_rate 0.2 --warmup_steps 0 --lr_decay_rate 1
      --early_stop_patience 0 --num_workers 2 --device "$device")
amp() { case $1 in fp32) ;; bf16) echo --use_amp --amp_dtype bf16 ;; fp16) echo --use_amp --amp_dtype fp16 ;; esac; }
for v in fp32 bf16 fp16; do
  log "A: ml1m sasrec $v speed"
  timeout 90 "$bin" "${ml1m[@]}" $(amp $v) --num_epochs "$epochs_speed" --eval_every "$epochs_speed" \
    --train_dir "$out/speed-$v" > "$out/speed-$v.json" 2> "$out/speed-$v.log"
done
for v in fp32 bf16; do
  log "A: ml1m sasrec $v for $epochs_a epochs (time to target)"
  timeout 120 "$bin" "${ml1m[@]}" $(amp $v) --num_epochs "$epochs_a" --eval_every 5 \
    --train_dir "$out/ml1m-$v" > "$out/ml1m-$v.json" 2> "$out/ml1m-$v.log"
done
log "A: plain and mHC pair models, one at a time"
SASREC_TRAIN="$bin" EPOCHS="$epochs_speed" SEEDS=1 TIMEOUT=90 \
  "$root/benches/mhc_compare.sh" "$out/speed-pairs" > "$out/speed-pairs.md" 2>> "$out/suite.log"
esac

case " ${PHASES:-A B} " in *" B "*)
log "B: mHC pairs, seeds ${SEEDS:-1 2 3}, $epochs_b epochs, all at once"
SASREC_TRAIN="$bin" EPOCHS="$epochs_b" PARALLEL=1 TIMEOUT="${TIMEOUT_B:-300}" \
  "$root/benches/mhc_compare.sh" "$out/mhc" > "$out/mhc/table.md" 2>> "$out/suite.log"
log "B: done"
esac
# Drop the bulky parts before the results travel back.
find "$out" -name checkpoint.safetensors -delete
log "end"
