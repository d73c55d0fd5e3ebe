#!/usr/bin/env bash
# The main job on the bundled default dataset (run ./scripts/setup.sh first):
#  1. generate the deterministic synthetic dataset and show its statistics;
#  2. train SASRec and TiSASRec+mHC on it (CPU is fine: about five minutes on 2 cores) and print the test
#     metrics of the epoch chosen on validation, under both protocols;
#  3. export TiSASRec+mHC to ONNX, start sasrec-serve on it and answer one request.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo build --release -q -p sasrec-train -p sasrec-export -p sasrec-serve
bin=target/release
[ -f data/synthetic.txt ] || "$bin/sasrec-train" data synthetic --output data/synthetic.txt
"$bin/sasrec-train" data stats --dataset synthetic
common=(--dataset synthetic --maxlen 50 --num_epochs 20 --eval_every 5 --num_workers 1)
"$bin/sasrec-train" "${common[@]}" --train_dir runs/demo-sasrec --no_time --no_mhc > runs/demo-sasrec.json
"$bin/sasrec-train" "${common[@]}" --train_dir runs/demo-tisasrec-mhc --time_unit personal \
  --time_span 64 > runs/demo-tisasrec-mhc.json
python3 - <<'PY'
import json
for kind in ("sasrec", "tisasrec-mhc"):
    s = json.load(open(f"runs/demo-{kind}.json"))
    t = s["test_at_best"]
    print(f"{kind:13s} best epoch {s['best_epoch']:3d}  test NDCG@10 {t['sampled']['ndcg']:.4f} (sampled) "
          f"{t['full']['ndcg']:.4f} (full ranking)  {s['seconds_per_epoch']:.2f} s/epoch")
PY
"$bin/sasrec-export" --onnx --train_dir runs/demo-tisasrec-mhc
"$bin/sasrec-serve" --model runs/demo-tisasrec-mhc --addr 127.0.0.1:18080 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python3 - <<'PY'
import json, time, urllib.request
base = "http://127.0.0.1:18080"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
# The first user's 30 most recent events of the synthetic file, as a client would send them.
rows = [l.split() for l in open("data/synthetic.txt") if l.startswith("1000 ")][-30:]
body = {"history": [int(r[1]) for r in rows], "timestamps": [int(r[2]) for r in rows], "k": 5}
req = urllib.request.Request(base + "/recommend", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
print("POST /recommend (user 1000, 30 events) ->", urllib.request.urlopen(req).read().decode())
PY
echo "run directories: runs/demo-sasrec, runs/demo-tisasrec-mhc (config.json, model.safetensors, metrics.jsonl, training_curve.png, model.onnx)"
