#!/usr/bin/env bash
# The main job on the bundled default dataset (run ./scripts/setup.sh first):
#  1. generate the deterministic synthetic dataset and show its statistics;
#  2. train SASRec and TiSASRec+mHC on it and print the test metrics of the epoch chosen on
#     validation, under both protocols, and where each training curve is;
#  3. export TiSASRec+mHC to ONNX, start sasrec-serve on it, answer one request and check it
#     (HTTP 200, k items, each with an id and a finite score).
#
# DEMO_EPOCHS (default 20) sets the training length; CI runs DEMO_EPOCHS=2, the same steps.
# DEMO_DIR (default runs/) is where the run directories go; DEMO_PORT (default 18080) the port.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
epochs=${DEMO_EPOCHS:-20}
runs=${DEMO_DIR:-runs}
port=${DEMO_PORT:-18080}
every=$((epochs < 5 ? epochs : 5))
cargo build --release -q -p sasrec-train -p sasrec-export -p sasrec-serve
bin=target/release
mkdir -p data "$runs"
[ -f data/synthetic.txt ] || "$bin/sasrec-train" data synthetic --output data/synthetic.txt
"$bin/sasrec-train" data stats --dataset synthetic
common=(--dataset synthetic --maxlen 50 --num_epochs "$epochs" --eval_every "$every" --num_workers 1)
echo "training SASRec ($epochs epochs) ..."
"$bin/sasrec-train" "${common[@]}" --train_dir "$runs/demo-sasrec" --no_time --no_mhc \
  > "$runs/demo-sasrec.json"
echo "training TiSASRec+mHC ($epochs epochs) ..."
"$bin/sasrec-train" "${common[@]}" --train_dir "$runs/demo-tisasrec-mhc" --time_unit personal \
  --time_span 64 > "$runs/demo-tisasrec-mhc.json"
RUNS="$runs" python3 - <<'PY'
import json, os
runs = os.environ["RUNS"]
print(f"{'model':13s} {'best epoch':>10s}  {'test NDCG@10 sampled':>20s}  {'full ranking':>12s}  "
      f"{'HR@10 sampled':>13s}  {'full ranking':>12s}  s/epoch")
for kind in ("sasrec", "tisasrec-mhc"):
    s = json.load(open(f"{runs}/demo-{kind}.json"))
    t = s["test_at_best"]
    print(f"{kind:13s} {s['best_epoch']:10d}  {t['sampled']['ndcg']:20.4f}  {t['full']['ndcg']:12.4f}  "
          f"{t['sampled']['hr']:13.4f}  {t['full']['hr']:12.4f}  {s['seconds_per_epoch']:.2f}")
for kind in ("sasrec", "tisasrec-mhc"):
    png = f"{runs}/demo-{kind}/training_curve.png"
    print(f"training curve: {png}" if os.path.exists(png) else f"training curve: none ({png} missing: no font)")
PY
"$bin/sasrec-export" --onnx --train_dir "$runs/demo-tisasrec-mhc"
"$bin/sasrec-serve" --model "$runs/demo-tisasrec-mhc" --addr "127.0.0.1:$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
PORT="$port" python3 - <<'PY'
import json, math, os, sys, time, urllib.request
base = f"http://127.0.0.1:{os.environ['PORT']}"
for _ in range(300):
    try:
        urllib.request.urlopen(base + "/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("demo: sasrec-serve did not become ready in 30 s")
# The first user's 30 most recent events of the synthetic file, as a client would send them.
rows = [l.split() for l in open("data/synthetic.txt") if l.startswith("1000 ")][-30:]
k = 5
body = {"history": [int(r[1]) for r in rows], "timestamps": [int(r[2]) for r in rows], "k": k}
req = urllib.request.Request(base + "/recommend", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
with urllib.request.urlopen(req) as resp:
    status, answer = resp.status, resp.read().decode()
print(f"POST /recommend (user 1000, 30 events) -> {status} {answer}")
got = json.loads(answer)
items = got.get("items")
ok = (status == 200 and isinstance(items, list) and len(items) == k
      and all(isinstance(i.get("item"), (int, str)) and math.isfinite(i.get("score", math.nan))
              for i in items))
if not ok:
    sys.exit(f"demo: unexpected answer (want HTTP 200 and {k} items with an id and a finite score)")
PY
echo "run directories: $runs/demo-sasrec, $runs/demo-tisasrec-mhc (config.json, model.safetensors, metrics.jsonl, training_curve.png; model.onnx in $runs/demo-tisasrec-mhc)"
