#!/usr/bin/env python3
"""What batching can gain at most: the cost of one ONNX Runtime run of an exported model per
batch size, on its own (no HTTP, no load generator), with the server's inputs (a zero-width
`exclude`, k = 60: 10 items plus a 50-item history) and outputs (`topk_scores`, `topk_items`).

The ratio per row against batch 1 bounds the batched/unbatched throughput ratio that
`serve/benches/load.sh` can show: the server adds HTTP, JSON and batch assembly on the same
cores, and its batches are no fuller than `--max_batch_size`.

Usage: .venv/bin/python serve/benches/batch_cost.py [MODEL_DIR] [INTRA_THREADS]
  (defaults /tmp/scale/run and the number of cores; the venv of scripts/setup.sh has
  onnxruntime)
"""
import os
import sys
import time

import numpy as np
import onnxruntime as ort

model_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/scale/run"
threads = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as sasrec-serve
session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), opts,
                               providers=["CPUExecutionProvider"])
seq_shape = session.get_inputs()[0].shape
maxlen = seq_shape[1]
meta = session.get_modelmeta().custom_metadata_map
num_items = int(meta.get("num_items", 0)) or session.get_outputs()[0].shape[1] - 1
if any(i.name == "time_matrix" for i in session.get_inputs()):
    sys.exit("batch_cost.py: time-aware models are not supported (needs time_matrix)")
rng = np.random.default_rng(0)

print(f"# {os.cpu_count()}-core CPU, ONNX Runtime {ort.__version__}, {threads} intra-op threads, "
      f"{num_items:,} items, maxlen {maxlen}")
print("batch   ms/run   ms/row   rows/s   per-row cost vs batch 1")
base = None
for batch in (1, 8, 16, 32, 64):
    feed = {"seq": rng.integers(1, num_items + 1, size=(batch, maxlen), dtype=np.int64),
            "exclude": np.zeros((batch, 0), dtype=np.int64),
            "k": np.array([60], dtype=np.int64)}
    session.run(["topk_scores", "topk_items"], feed)  # warm-up
    runs = max(5, 256 // batch)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(["topk_scores", "topk_items"], feed)
    per_run = (time.perf_counter() - start) / runs
    per_row = per_run / batch
    base = base or per_row
    print(f"{batch:5d} {per_run * 1e3:8.2f} {per_row * 1e3:8.3f} {1 / per_row:8.0f} "
          f"{base / per_row:10.2f}x")
