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
# Usage: BIN=… SASREC_DATA=… OUT=… [PHASES="A B" (also C, S, G) DEVICE=cuda EPOCHS_SPEED=10 EPOCHS_A=80
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

# SASRec on ML-1M at the reference settings (phases A, C and G; a later --early_stop_patience wins).
ml1m=(--dataset "$data/ml-1m/ml-1m.sasrec.txt.gz" --no_time --no_mhc --maxlen 200 --num_blocks 2
      --num_heads 1 --hidden_units 50 --dropout_rate 0.2 --warmup_steps 0 --lr_decay_rate 1
      --early_stop_patience 0 --num_workers 2 --device "$device")
amp() { case $1 in fp32) ;; bf16) echo --use_amp --amp_dtype bf16 ;; fp16) echo --use_amp --amp_dtype fp16 ;; esac; }

case " ${PHASES:-A B} " in *" A "*)
log "A: check-distributed"
if [ "$device" = cuda ]; then
  timeout 60 "$bin" check-distributed --backend nccl --nproc_per_node 1 --master_port 29631 \
    > "$out/check-distributed.json" 2> "$out/check-distributed.log"
fi
log "A: PyTorch reference speed"
timeout 120 "$py" "$root/benches/reference/sasrec_torch.py" speed --batches 240 --device "$device" \
  > "$out/reference-speed.json" 2> "$out/reference-speed.log"
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

# --- C (only when PHASES names it): the numbers to convergence, issue #12 item 4 ---
# SASRec on ML-1M for each of SEEDS, evaluated every epoch and stopped after PATIENCE
# evaluations without a better sampled validation NDCG@10 (at most EPOCHS_C epochs); `--loss ce`
# the same way, selected on full ranking; then the four kinds at the prototype's defaults for
# EPOCHS_SPEED epochs each through benches/model_cost.sh (s/step, peak RSS and peak GPU memory:
# kinds.txt). Test metrics of the chosen epoch are in each summary.json.
case " ${PHASES:-A B} " in *" C "*)
epochs_c=${EPOCHS_C:-400}
patience=${PATIENCE:-20}
for seed in ${SEEDS:-1 2 3}; do
  log "C: ml1m sasrec seed $seed to convergence"
  timeout 300 "$bin" "${ml1m[@]}" --seed "$seed" --num_epochs "$epochs_c" --eval_every 1 \
    --early_stop_patience "$patience" --train_dir "$out/conv-sasrec-$seed" \
    > "$out/conv-sasrec-$seed.json" 2> "$out/conv-sasrec-$seed.log"
done
log "C: ml1m sasrec --loss ce to convergence (full-ranking selection)"
timeout 600 "$bin" "${ml1m[@]}" --loss ce --num_epochs "$epochs_c" --eval_every 1 \
  --early_stop_patience "$patience" --select_protocol full --train_dir "$out/conv-ce" \
  > "$out/conv-ce.json" 2> "$out/conv-ce.log"
log "C: the four kinds at the prototype's defaults, $epochs_speed epochs (benches/model_cost.sh)"
BIN="$bin" SASREC_PYTHON="$py" DATA="$data/ml-1m/ml-1m.tisasrec_u1-2999.txt.gz" MAXLENS= \
  ELEMENTWISE_MAXLENS= timeout 1200 "$root/benches/model_cost.sh" "$epochs_speed" "$device" \
  > "$out/kinds.txt" 2> "$out/kinds.log"
log "C: done"
esac

# --- S (only when PHASES names it): sasrec-serve on the CUDA execution provider, issue #12 ---
# The ignored test serve/tests/io_binding.rs `cuda_provider_scores_equal_cpu_provider`: trains
# and exports two tiny fixtures (SASRec, TiSASRec), starts `sasrec-serve --device cuda
# --strict_device` on each, checks the log line `using the CUDA execution provider` and that
# its scores equal the CPU provider's within 1e-4 (top-k and `candidates`). Build first:
#   cargo build --release -p sasrec-train -p sasrec-export -p sasrec-serve
#   cargo test --release -p sasrec-serve --test io_binding --no-run
# then set ORT_DYLIB_PATH to onnxruntime-gpu's libonnxruntime.so (`SASREC_ORT_GPU=1
# ./scripts/setup.sh` puts it in .venv-ort-gpu) and LD_LIBRARY_PATH as in the README's GPU node.
# SERVE_TEST: the test binary (default: the newest target/release/deps/io_binding-*).
case " ${PHASES:-A B} " in *" S "*)
serve_test=${SERVE_TEST:-$(ls -t "$root"/target/release/deps/io_binding-* 2>/dev/null | grep -v '\.d$' | head -1)}
log "S: sasrec-serve --device cuda --strict_device against the CPU provider ($serve_test)"
timeout 300 "$serve_test" --ignored --exact cuda_provider_scores_equal_cpu_provider --nocapture \
  > "$out/serve-cuda.log" 2>&1
log "S: exit $? (0 = passed; log in serve-cuda.log)"
esac

# --- G (only when PHASES names it): the CUDA-graph training step, issue #12 ---
# The ignored test train/tests/cuda_graph.rs `on_cuda_the_graph_trains_the_model_the_eager_step_trains`
# (graph and eager training end within 1e-3 relative L2 of each other for TiSASRec+mHC, SASRec
# and SASRec with fp16 loss scaling, and the graph replays 11 of 16 steps), then SASRec on ML-1M
# for EPOCHS_SPEED epochs with the graph and with --no_cuda_graph (seconds per epoch in the two
# summaries). Build first: cargo test --release -p sasrec-train --test cuda_graph --no-run.
# GRAPH_TEST: the test binary (default: the newest target/release/deps/cuda_graph-*).
case " ${PHASES:-A B} " in *" G "*)
graph_test=${GRAPH_TEST:-$(ls -t "$root"/target/release/deps/cuda_graph-* 2>/dev/null | grep -v '\.d$' | head -1)}
log "G: CUDA graph against eager training ($graph_test)"
timeout 300 "$graph_test" --ignored --exact on_cuda_the_graph_trains_the_model_the_eager_step_trains \
  --nocapture > "$out/cuda-graph-test.log" 2>&1
log "G: exit $? (0 = passed; log in cuda-graph-test.log)"
log "G: row-sparse item optimizers on CUDA against the CPU"
timeout 300 "$graph_test" --ignored --exact on_cuda_the_row_sparse_optimizers_step_eagerly_and_train_like_the_cpu \
  --nocapture > "$out/row-sparse-cuda-test.log" 2>&1
log "G: exit $? (0 = passed; log in row-sparse-cuda-test.log)"
for v in graph eager; do
  log "G: ml1m sasrec fp32 speed, $v"
  timeout 90 "$bin" "${ml1m[@]}" --num_epochs "$epochs_speed" --eval_every "$epochs_speed" \
    $([ $v = eager ] && echo --no_cuda_graph) --train_dir "$out/graph-speed-$v" \
    > "$out/graph-speed-$v.json" 2> "$out/graph-speed-$v.log"
done
esac
# Drop the bulky parts before the results travel back.
find "$out" -name checkpoint.safetensors -delete
log "end"
