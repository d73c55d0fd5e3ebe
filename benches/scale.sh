#!/usr/bin/env bash
# How the costs grow with the catalogue (AXIS=items, the default: 10k / 100k / 1M items, a
# fixed number of users) or with the users (AXIS=users: 10k / 100k / 1M users, a fixed
# catalogue of USERS_ITEMS items): generated Zipf data, SASRec (maxlen 50, d 32, 1 head,
# 2 blocks), on the machine it runs on (its CPU and the date head the output):
#   data      load + index seconds and peak RSS; sampler batches/s (1 and 2 threads), batches
#             per epoch (batch 128)
#   train     seconds per 1,000 steps and peak RSS for each loss (bce, sampled_softmax and gbce
#             with 256 negatives, ce in 8,192-item chunks), from a run of STEPS steps
#             (`--max_steps`; ce: CE_STEPS) with an evaluation of EVAL_USERS users at the end
#   evaluate  seconds per 1,000 users, both protocols (from the sampled-softmax run)
#   export    seconds and ONNX size (model.onnx + model.onnx.data)
#   serve     p50/p99 at 1 client, requests/s at 32 clients with dynamic batching and
#             without (serve/benches/load.sh, LOAD_SECS per point), server peak RSS; on the
#             items axis only (nothing a server holds depends on the number of users)
# then a table with the ratio of each cost per 10× items (or users).
#
# Three more axes measure what a row-sparse item table and data packs change (docs/MODELS.md §7):
#   AXIS=item_optimizer  seconds per 1,000 steps and peak RSS of sampled_softmax and gbce (256
#             negatives) with --item_optimizer adam, lazy_adam and rowwise_adagrad at
#             OPT_ITEMS (10k / 100k / 1M / 10M) items: Zipf data of USERS users plus one
#             interaction with every item (CATALOGUE_USERS extra users hold them), so that the
#             catalogue really has that many items; STEPS steps, OPT_EVAL_USERS users evaluated
#             in batches of 8 at the end. Ratios: each size against 10k items, each optimizer
#             against adam at the same size.
#   AXIS=exchange  bytes each rank sends per step for the item table with 2 Gloo ranks, dense
#             (adam: the bucketed all-reduce of the (I+1)·C gradient) vs lazy_adam (the touched
#             rows), and seconds per step, at EXCHANGE_ITEMS items.
#   AXIS=pack  load seconds, RSS and PSS per process of 1 and 4 processes holding the same
#             dataset (benches/pack_load.rs: split, a rank's sampler, one batch), text file vs
#             data pack, at PACK_USERS users (50 interactions each: 1M users = 50M
#             interactions); then 1 and 4 processes on a pack of PACK_BIG_USERS users (4M =
#             200M interactions, too large for 4 text copies here).
#
# Usage: [AXIS=items] [ITEMS="10000 100000 1000000"] [USERS=60000] [STEPS=50] [CE_STEPS="50 20 4"]
#        [EVAL_USERS=1000] [LOAD_SECS=8] [SKIP_SERVE=1] benches/scale.sh [OUT_DIR]
#        AXIS=users [USERS_LIST="10000 100000 1000000"] [USERS_ITEMS=100000] … benches/scale.sh [OUT_DIR]
#        AXIS=item_optimizer [OPT_ITEMS="10000 100000 1000000 10000000"] [STEPS=50] [OPT_EVAL_USERS=100] …
#        AXIS=exchange [EXCHANGE_ITEMS="100000 1000000"] [STEPS=50] …
#        AXIS=pack [PACK_USERS=1000000] [PACK_BIG_USERS=4000000 (0 skips)] …
# Needs release builds: cargo build --release -p sasrec-train -p sasrec-export -p sasrec-serve \
#   -p sasrec-benches && cargo build --release -p sasrec-serve --example loadgen
# (the three extra axes need sasrec-train and, for AXIS=pack, pack-load only)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/runs/scale}
bin=$root/target/release
axis=${AXIS:-items}
steps=${STEPS:-50}
py=${PYTHON:-$root/.venv/bin/python}
# measure NAME CMD…: runs CMD under /usr/bin/time, appends {"name", "seconds", "peak_rss_mb"}.
measure() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$out/time.txt" "$@" > "$out/$name.out" 2> "$out/$name.log" || {
    echo "$name failed, see $out/$name.log" >&2; tail -3 "$out/$name.log" >&2; exit 1; }
  read -r secs kb < "$out/time.txt"
  echo "{\"name\": \"$name\", \"seconds\": $secs, \"peak_rss_mb\": $(( kb / 1024 ))}" >> "$results"
}

# catalogue_data FILE ITEMS USERS: Zipf data plus one interaction with each of the ITEMS items
# (raw id 10·i + 7, as `data synthetic` writes them; users c0 … c<CATALOGUE_USERS−1>), so the
# model's catalogue has exactly ITEMS items.
catalogue_data() {
  local file=$1 items=$2 users=$3
  [[ -f $file ]] && return
  "$bin/sasrec-train" data synthetic --output "$file.tmp" --users "$users" --items "$items" \
    --genres 16 --min_len 20 --max_len 80 --zipf 0.7 > /dev/null
  awk -v n="$items" -v k="${CATALOGUE_USERS:-10000}" \
    'END { for (i = 0; i < n; i++) printf "c%d %d %d\n", i % k, 10 * i + 7, 1000000000 + i }' /dev/null >> "$file.tmp"
  mv "$file.tmp" "$file"
}

# The SASRec of every axis (maxlen 50, d 32, 1 head, 2 blocks), on the CPU.
small_model=(--no_time --no_mhc --maxlen 50 --hidden_units 32 --num_heads 1 --num_blocks 2
             --num_epochs 1 --num_workers 1 --device cpu)

axis_item_optimizer() {
  read -r -a sizes <<< "${OPT_ITEMS:-10000 100000 1000000 10000000}"
  for items in "${sizes[@]}"; do
    data=$out/opt-i$items.txt
    echo "== $items items"
    catalogue_data "$data" "$items" "${USERS:-60000}"
    for loss in sampled_softmax gbce; do
      for opt in adam lazy_adam rowwise_adagrad; do
        run=$out/opt-i$items-$loss-$opt
        rm -rf "$run"
        echo "   $loss $opt ($steps steps)"
        measure "opt-i$items-$loss-$opt" "$bin/sasrec-train" --dataset "$data" "${small_model[@]}" \
          --loss "$loss" --num_negatives 256 --item_optimizer "$opt" --max_steps "$steps" \
          --eval_max_users "${OPT_EVAL_USERS:-100}" --eval_batch_size 8 --train_dir "$run"
        rm -f "$run"/checkpoint.safetensors "$run"/model.safetensors
      done
    done
  done
  "$py" - "$out" "${sizes[@]}" <<'PY'
import json, os, sys
out, sizes = sys.argv[1], sys.argv[2:]
res = {json.loads(l)["name"]: json.loads(l) for l in open(os.path.join(out, "results.jsonl"))}
def catalogue(n):
    return json.load(open(os.path.join(out, f"opt-i{n}-sampled_softmax-adam", "config.json")))["model"]["num_items"]
print("items in the model: " + ", ".join(f"{catalogue(n):,}" for n in sizes))
def step_ms(n, loss, opt):
    return 1000 * json.load(open(os.path.join(out, f"opt-i{n}-{loss}-{opt}", "summary.json")))["seconds_per_step"]
print("| loss | item optimizer | " + " | ".join(f"{int(n):,} items: s/1000 steps, peak RSS MB" for n in sizes)
      + " | " + " | ".join(f"{int(n):,} vs 10k items" for n in sizes[1:]) + " | " + " | ".join(f"vs adam at {int(n):,}" for n in sizes) + " |")
print("| --- " * (2 + 3 * len(sizes) - 1) + "|")
for loss in ["sampled_softmax", "gbce"]:
    for opt in ["adam", "lazy_adam", "rowwise_adagrad"]:
        cells = [f"{step_ms(n, loss, opt):.0f} s, {res[f'opt-i{n}-{loss}-{opt}']['peak_rss_mb']:,}" for n in sizes]
        grow = [f"{step_ms(n, loss, opt) / step_ms(sizes[0], loss, opt):.2f}×" for n in sizes[1:]]
        vs = [f"{step_ms(n, loss, opt) / step_ms(n, loss, 'adam'):.2f}×" for n in sizes]
        print(f"| {loss} | {opt} | " + " | ".join(cells + grow + vs) + " |")
PY
}

axis_exchange() {
  read -r -a sizes <<< "${EXCHANGE_ITEMS:-100000 1000000}"
  for items in "${sizes[@]}"; do
    data=$out/opt-i$items.txt
    catalogue_data "$data" "$items" "${USERS:-60000}"
    for opt in adam lazy_adam; do
      run=$out/exchange-i$items-$opt
      rm -rf "$run"
      echo "== $items items, 2 Gloo ranks, $opt"
      RUST_LOG=info measure "exchange-i$items-$opt" "$bin/sasrec-train" --dataset "$data" \
        "${small_model[@]}" --loss sampled_softmax --num_negatives 256 --item_optimizer "$opt" \
        --max_steps "$steps" --eval_max_users 100 --eval_batch_size 8 --multi_gpu \
        --nproc_per_node 2 --backend gloo --train_dir "$run"
      rm -f "$run"/checkpoint.safetensors "$run"/model.safetensors
    done
  done
  "$py" - "$out" "${sizes[@]}" <<'PY'
import json, os, re, sys
out, sizes = sys.argv[1], sys.argv[2:]
print("| items | dense all-reduce: bytes/step/rank | lazy_adam rows: bytes/step/rank | ratio | s/step adam | s/step lazy_adam |")
print("| --- | --- | --- | --- | --- | --- |")
for n in sizes:
    log = open(os.path.join(out, f"exchange-i{n}-lazy_adam.log")).read()
    m = re.findall(r"sparse_bytes_per_step=(\d+) dense_bytes_per_step=(\d+)", log)
    sparse, dense = (int(m[-1][0]), int(m[-1][1])) if m else (float("nan"), float("nan"))
    sps = lambda opt: json.load(open(os.path.join(out, f"exchange-i{n}-{opt}", "summary.json")))["seconds_per_step"]
    print(f"| {int(n):,} | {dense:,} | {sparse:,} | {sparse / dense:.4f} | {sps('adam'):.3f} | {sps('lazy_adam'):.3f} |")
PY
}

# pack_load NAME DATASET WORLD: WORLD concurrent pack-load processes; one JSON line each.
pack_load() {
  local name=$1 dataset=$2 world=$3 barrier
  barrier=$(mktemp -d)
  for ((r = 0; r < world; r++)); do
    "$bin/pack-load" "$dataset" "$barrier" "$r" "$world" > "$out/$name.rank$r.json" &
  done
  wait
  rm -rf "$barrier"
}

axis_pack() {
  local users=${PACK_USERS:-1000000} big=${PACK_BIG_USERS:-4000000}
  local text=$out/pack-u$users.txt
  [[ -f $text ]] || "$bin/sasrec-train" data synthetic --output "$text" --users "$users" \
    --items 100000 --genres 16 --min_len 20 --max_len 80 --zipf 0.7 > /dev/null
  measure "pack-u$users-make" "$bin/sasrec-train" data pack --dataset "$text" --output "$text.pack"
  for world in 1 4; do
    echo "== $users users: text, pack × $world processes"
    pack_load "pack-u$users-text-w$world" "$text" "$world"
    pack_load "pack-u$users-pack-w$world" "$text.pack" "$world"
  done
  if [[ $big -gt 0 ]]; then
    local bigtext=$out/pack-u$big.txt
    [[ -f $bigtext.pack ]] || {
      "$bin/sasrec-train" data synthetic --output "$bigtext" --users "$big" --items 100000 \
        --genres 16 --min_len 20 --max_len 80 --zipf 0.7 > /dev/null
      measure "pack-u$big-make" "$bin/sasrec-train" data pack --dataset "$bigtext" --output "$bigtext.pack"
      rm -f "$bigtext"; }
    for world in 1 4; do
      echo "== $big users: pack × $world processes"
      pack_load "pack-u$big-pack-w$world" "$bigtext.pack" "$world"
    done
  fi
  "$py" - "$out" "$users" "$big" <<'PY'
import glob, json, os, sys
out, users, big = sys.argv[1], sys.argv[2], sys.argv[3]
def ranks(name):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{name}.rank*.json")))]
print("| data | source | processes | load s (max) | RSS MB per process (max) | PSS MB, sum over processes | PSS sum vs 1 process |")
print("| --- | --- | --- | --- | --- | --- | --- |")
points = [(users, "text"), (users, "pack")] + ([(big, "pack")] if int(big) > 0 else [])
for u, src in points:
    one = None
    for w in (1, 4):
        rs = ranks(f"pack-u{u}-{src}-w{w}")
        if not rs: continue
        pss = sum(r["pss_mb"] for r in rs)
        one = one or pss
        print(f"| {rs[0]['interactions']:,} interactions | {src} | {w} | {max(r['load_seconds'] for r in rs):.2f} | "
              f"{max(r['rss_mb'] for r in rs):,.0f} | {pss:,.0f} | {pss / one:.2f}× |")
PY
}

case $axis in
  item_optimizer|exchange|pack)
    for b in sasrec-train pack-load; do
      [[ -x $bin/$b ]] || { echo "build first: cargo build --release -p sasrec-train -p sasrec-benches (no $bin/$b)" >&2; exit 1; }
    done
    mkdir -p "$out"; results=$out/results.jsonl; : > "$results"
    echo "# $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F), axis $axis"
    "axis_$axis"; exit 0 ;;
esac

# (items, users) of each point of the sweep, its tag, and the CE steps per point.
case $axis in
  items)
    read -r -a sizes <<< "${ITEMS:-10000 100000 1000000}"
    points=(); for n in "${sizes[@]}"; do points+=("$n ${USERS:-60000}"); done
    read -r -a ce_steps <<< "${CE_STEPS:-50 20 4}" ;;
  users)
    read -r -a sizes <<< "${USERS_LIST:-10000 100000 1000000}"
    points=(); for n in "${sizes[@]}"; do points+=("${USERS_ITEMS:-100000} $n"); done
    read -r -a ce_steps <<< "${CE_STEPS:-5}"
    SKIP_SERVE=1 ;;
  *) echo "AXIS must be items or users, not '$axis'" >&2; exit 2 ;;
esac
tags=(); for point in "${points[@]}"; do read -r items users <<< "$point"; tags+=("i${items}u$users"); done
eval_users=${EVAL_USERS:-1000}
mkdir -p "$out"
results=$out/results.jsonl
: > "$results"
for b in sasrec-train sasrec-export sasrec-serve scale-data; do
  [[ -x $bin/$b ]] || { echo "build first (see the header of $0): no $bin/$b" >&2; exit 1; }
done

echo "# $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F), axis $axis"
for i in "${!points[@]}"; do
  read -r items users <<< "${points[$i]}"
  tag=${tags[$i]}
  data=$out/$tag.txt
  echo "== $items items, $users users"
  [[ -f $data ]] || "$bin/sasrec-train" data synthetic --output "$data" --users "$users" \
    --items "$items" --genres 16 --min_len 20 --max_len 80 --zipf 0.7 > /dev/null
  measure "$tag-data" "$bin/scale-data" "$data" 50
  model=(--dataset "$data" --no_time --no_mhc --maxlen 50 --hidden_units 32 --num_heads 1
         --num_blocks 2 --num_epochs 1 --eval_max_users "$eval_users" --eval_batch_size 256
         --num_workers 1 --device cpu)
  for loss in bce sampled_softmax gbce ce; do
    n=$steps; [[ $loss == ce ]] && n=${ce_steps[$i]:-${ce_steps[-1]}}
    rm -rf "$out/$tag-$loss"
    extra=(); [[ $loss == sampled_softmax || $loss == gbce ]] && extra=(--num_negatives 256)
    echo "   train $loss ($n steps)"
    measure "$tag-train-$loss" "$bin/sasrec-train" "${model[@]}" --loss "$loss" "${extra[@]}" \
      --max_steps "$n" --train_dir "$out/$tag-$loss"
  done
  echo "   export"
  measure "$tag-export" "$bin/sasrec-export" --onnx --train_dir "$out/$tag-sampled_softmax"
  if [[ -z ${SKIP_SERVE:-} ]]; then
    echo "   serve"
    "$root/serve/benches/load.sh" "$out/$tag-sampled_softmax" "${LOAD_SECS:-8}" > "$out/$tag-serve.txt"
  fi
done

"$py" - "$out" "$axis" "${sizes[@]}" -- "${tags[@]}" <<'PY'
import json, os, re, sys
out, axis = sys.argv[1], sys.argv[2]
cut = sys.argv.index("--")
sizes, tags = sys.argv[3:cut], sys.argv[cut + 1:]
res = {}
for line in open(os.path.join(out, "results.jsonl")):
    r = json.loads(line); res[r["name"]] = r
def summary(tag, loss):
    return json.load(open(os.path.join(out, f"{tag}-{loss}", "summary.json")))
def metrics(tag, loss):
    return [json.loads(l) for l in open(os.path.join(out, f"{tag}-{loss}", "metrics.jsonl"))][-1]
rows = {}
for n, tag in zip(sizes, tags):
    d = json.load(open(os.path.join(out, f"{tag}-data.out")))
    row = {"items (in data)": d["items"], "users (in data)": d["users"],
           "interactions": d["interactions"], "batches per epoch (128)": -(-d["users"] // 128),
           "load+index s": d["load_index_seconds"], "load peak RSS MB": res[f"{tag}-data"]["peak_rss_mb"],
           "sampler batches/s (1 / 2 threads)": (d["sampler_batches_per_s"]["1_workers"], d["sampler_batches_per_s"]["2_workers"])}
    for loss in ["bce", "sampled_softmax", "gbce", "ce"]:
        s = summary(tag, loss)
        row[f"train s/1000 steps {loss}"] = 1000 * s["seconds_per_step"]
        row[f"train peak RSS MB {loss}"] = res[f"{tag}-train-{loss}"]["peak_rss_mb"]
    row["train run wall s, sampled_softmax (load, steps, evaluation)"] = res[f"{tag}-train-sampled_softmax"]["seconds"]
    m = metrics(tag, "sampled_softmax")
    users = m["valid"]["full"]["users"] + m["test"]["full"]["users"]
    row["eval s/1000 users (both protocols)"] = 1000 * m["eval_seconds"] / users
    row["export s"] = res[f"{tag}-export"]["seconds"]
    run = os.path.join(out, f"{tag}-sampled_softmax")
    size = sum(os.path.getsize(os.path.join(run, f)) for f in os.listdir(run) if f.startswith("model.onnx"))
    row["ONNX MB"] = size / 2**20
    serve = os.path.join(out, f"{tag}-serve.txt")
    if os.path.exists(serve):
        text = open(serve).read()
        blocks = re.split(r"^## ", text, flags=re.M)[1:]
        for b in blocks:
            mode = b.split()[0]
            pts = {int(l.split()[0]): l.split() for l in b.splitlines() if re.match(r"\s*\d+\s+\d", l)}
            if mode == "batching":
                row["serve p50 / p99 ms (1 client)"] = (float(pts[1][2]), float(pts[1][3]))
                row["serve req/s at 32 clients, batched"] = float(pts[32][1])
            else:
                row["serve req/s at 32 clients, unbatched"] = float(pts[32][1])
        m2 = re.search(r"server peak RSS: (\d+) MiB", text)
        if m2: row["server peak RSS MB"] = int(m2.group(1))
    rows[n] = row
def fmt(v):
    if isinstance(v, tuple): return " / ".join(fmt(x) for x in v)
    if isinstance(v, float): return f"{v:.3g}" if v < 100 else f"{v:.0f}"
    return str(v)
def ratio(a, b):
    if isinstance(a, tuple): return " / ".join(ratio(x, y) for x, y in zip(a, b))
    return f"{b / a:.2f}×" if a else "–"
keys = list(next(iter(rows.values())).keys())
print("| | " + " | ".join(f"{int(n):,} {axis}" for n in sizes) + " | " +
      " | ".join(f"×10 {axis} ({int(a):,}→{int(b):,})" for a, b in zip(sizes, sizes[1:])) + " |")
print("| --- " * (1 + 2 * len(sizes) - 1) + "|")
for k in keys:
    vals = [rows[n].get(k) for n in sizes]
    if any(v is None for v in vals): continue
    print(f"| {k} | " + " | ".join(fmt(v) for v in vals) + " | " +
          " | ".join(ratio(a, b) for a, b in zip(vals, vals[1:])) + " |")
PY
