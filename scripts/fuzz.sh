#!/usr/bin/env bash
# Runs the fuzz targets for a bounded budget and prints, per target, the cases run and the
# failures (panics and broken guarantees), then exits 1 if any target failed or crashed.
#
# Usage: scripts/fuzz.sh [BUDGET] [TARGET...]
#   BUDGET  `30s` (run each target 30 seconds; the default) or `20000` (20,000 cases each)
#   TARGET  dataset | idmap | request | http (default: all four)
#     dataset  Dataset::read_with on generated/mutated data files   shared/tests/fuzz.rs
#     idmap    IdMap::load on generated/mutated items.tsv            shared/tests/fuzz.rs
#     request  sasrec-serve's request parser (JSON + prepare)        serve/tests/fuzz_request.rs
#     http     POST /recommend and /recommend/batch over loopback    serve/tests/fuzz_http.rs
#              (trains and exports two tiny models first, with the debug sasrec-train and
#              sasrec-export, which this script builds)
#
# These are the stable-Rust equivalent of cargo-fuzz targets: seeded, structure-aware
# generation and mutation, every case under catch_unwind (the http target counts a dropped
# connection, i.e. a panicking handler, as a failure). `cargo test` runs them with a small
# default budget; this script sets FUZZ_SECONDS or FUZZ_CASES. FUZZ_SEED (default 0x5A5)
# picks another sequence; every failure prints the `FUZZ_SEED=… FUZZ_CASE=…` that replays it:
#   FUZZ_SEED=0x5a5 FUZZ_CASE=1234 cargo test -p sasrec-shared --test fuzz fuzz_dataset_reader -- --nocapture
# A failure found this way becomes a regression test next to the target.
#
# Debug builds (overflow checks on) by default; PROFILE=release runs optimised builds (more
# cases per second, but integer overflow then wraps silently instead of panicking).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

BUDGET="${1:-30s}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(dataset idmap request http)

unset FUZZ_SECONDS FUZZ_CASES FUZZ_CASE
if [[ $BUDGET =~ ^([0-9]+)s$ ]]; then
  export FUZZ_SECONDS="${BASH_REMATCH[1]}"
elif [[ $BUDGET =~ ^[0-9]+$ ]]; then
  export FUZZ_CASES="$BUDGET"
else
  echo "usage: $0 [SECONDSs | CASES] [dataset|idmap|request|http ...]" >&2
  exit 2
fi

PROFILE_FLAG=()
[[ ${PROFILE:-dev} == release ]] && PROFILE_FLAG=(--release)

# target -> "package test-binary test-name"
declare -A SPEC=(
  [dataset]="sasrec-shared fuzz fuzz_dataset_reader"
  [idmap]="sasrec-shared fuzz fuzz_idmap_reader"
  [request]="sasrec-serve fuzz_request fuzz_request_parser"
  [http]="sasrec-serve fuzz_http fuzz_recommend_endpoints_over_http"
)
for t in "${TARGETS[@]}"; do
  [[ -n ${SPEC[$t]:-} ]] || { echo "unknown target '$t' (dataset idmap request http)" >&2; exit 2; }
done

# Build everything first, so the budget is spent fuzzing.
for t in "${TARGETS[@]}"; do
  read -r pkg bin _ <<<"${SPEC[$t]}"
  cargo test "${PROFILE_FLAG[@]}" -q -p "$pkg" --test "$bin" --no-run || exit 1
  if [[ $t == http ]]; then
    cargo build "${PROFILE_FLAG[@]}" -q -p sasrec-train -p sasrec-export || exit 1
  fi
done

LOGS="$(mktemp -d)"
echo "# fuzz: budget ${BUDGET} per target, seed ${FUZZ_SEED:-0x5a5}, profile ${PROFILE:-dev}, logs in $LOGS"
printf '%-8s %10s %9s %9s %9s %8s  %s\n' target cases failures accepted refused seconds result
STATUS=0
for t in "${TARGETS[@]}"; do
  read -r pkg bin name <<<"${SPEC[$t]}"
  log="$LOGS/$t.log"
  cargo test "${PROFILE_FLAG[@]}" -q -p "$pkg" --test "$bin" -- --exact "$name" --nocapture \
    >"$log" 2>&1
  rc=$?
  line=$(grep -m1 '^fuzz ' "$log" || true)
  if [[ -z $line ]]; then
    printf '%-8s %10s %9s %9s %9s %8s  %s\n' "$t" - - - - - "CRASHED (no summary, exit $rc): $log"
    STATUS=1
    continue
  fi
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  result=ok
  if [[ $rc -ne 0 || $(field failures) != 0 ]]; then
    result="FAILED: $log"
    STATUS=1
  fi
  printf '%-8s %10s %9s %9s %9s %8s  %s\n' "$t" "$(field cases)" "$(field failures)" \
    "$(field accepted)" "$(field refused)" "$(field seconds)" "$result"
done
if [[ $STATUS -ne 0 ]]; then
  echo "# failures: the first five of each target, with the FUZZ_SEED/FUZZ_CASE that replays them, are in its log"
fi
exit $STATUS
