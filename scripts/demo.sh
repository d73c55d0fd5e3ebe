#!/usr/bin/env bash
# The main job on the bundled default dataset (run ./scripts/setup.sh first):
# generate the deterministic synthetic dataset and show what the data layer reads from it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo build --release -q -p sasrec-train
bin=target/release/sasrec-train
[ -f data/synthetic.txt ] || "$bin" data synthetic --output data/synthetic.txt
"$bin" data stats --dataset synthetic
