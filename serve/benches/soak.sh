#!/usr/bin/env bash
# Soak test of sasrec-serve on loopback: CLIENTS closed-loop clients POST /recommend for
# SECONDS, and the server's resident memory is read from /proc/PID/status (VmRSS) when it is
# ready, at the start of the soak (after a WARMUP-second run at the same load, which fills
# the allocator's pools and ONNX Runtime's arenas), every 10 s during it and at the end, with
# the peak (VmHWM). It should stay flat: the script fails when the end RSS exceeds the start
# RSS by more than MAX_GROWTH_PCT percent (default 10), when a request failed or answered
# non-2xx, or when /metrics counted a 5xx.
#
# Usage: serve/benches/soak.sh [MODEL_DIR] [SECONDS] [CLIENTS]
#   MODEL_DIR  a run directory with model.onnx + items.tsv (default /tmp/ml1m-serve; how to
#              make one is in the header of serve/benches/load.sh)
#   SECONDS    duration of the soak (default 60)
#   CLIENTS    concurrent connections (default 64)
# Env: WARMUP (seconds, default 5), PORT (default 18182), MAX_GROWTH_PCT (default 10),
#      SERVE_FLAGS (extra server flags), SERVE_BIN (another server binary).
#
# Build first:
#   cargo build --release -p sasrec-serve --bin sasrec-serve --example loadgen
# Each request is a 50-item history (the first 50 ids of items.tsv), k = 10, exclude_seen, as
# in load.sh; the load generator is serve/examples/loadgen.rs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=serve/benches/common.sh
source "$ROOT/serve/benches/common.sh"
SECS="${2:-60}"
CLIENTS="${3:-64}"
WARMUP="${WARMUP:-5}"
PORT="${PORT:-18182}"
MAX_GROWTH_PCT="${MAX_GROWTH_PCT:-10}"
cleanup() {
  [[ -n ${SAMPLER_PID:-} ]] && kill "$SAMPLER_PID" 2>/dev/null
  [[ -n ${SERVER_PID:-} ]] && kill "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

check_inputs
write_body
start_server

kib() { awk '/^'"$1"':/ { print $2 }' "/proc/$SERVER_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
loadgen() { # SECONDS OUT
  "$GEN" --url "http://127.0.0.1:$PORT/recommend" --clients "$CLIENTS" --seconds "$1" \
    --body "$WORK/body.json" --json >"$2" || true
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

MODEL_ID=$(curl -s "http://127.0.0.1:$PORT/v1/model" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["num_items"], "items, maxlen", d["maxlen"])')
echo "# soak: $(nproc)-core CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), loopback, $(date -u +%F)"
echo "# model $MODEL_ID; $CLIENTS clients, ${SECS}s after a ${WARMUP}s warm-up"
RSS_READY=$(kib VmRSS)
loadgen "$WARMUP" "$WORK/warm.json"
RSS_START=$(kib VmRSS)
(
  t=0
  while sleep 10; do
    t=$((t + 10))
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null) || break
    [[ -n $r ]] && echo "$t $r"
  done
) >"$WORK/samples" &
SAMPLER_PID=$!
loadgen "$SECS" "$WORK/soak.json"
RSS_END=$(kib VmRSS)
HWM=$(kib VmHWM)
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=

REQ=$(field "$WORK/soak.json" requests)
NON2XX=$(field "$WORK/soak.json" non_2xx)
ERRS=$(field "$WORK/soak.json" errors)
FIVES=$(curl -s "http://127.0.0.1:$PORT/metrics" |
  awk '/^sasrec_http_requests_total/ && /status="5/ { n += $NF } END { printf "%d", n }')
READY=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")

echo "requests      $REQ  ($(field "$WORK/soak.json" rps | xargs printf '%.0f') /s, p50 $(field "$WORK/soak.json" p50_ms | xargs printf '%.2f') ms, p99 $(field "$WORK/soak.json" p99_ms | xargs printf '%.2f') ms)"
echo "non-2xx       $NON2XX"
echo "errors        $ERRS"
echo "5xx (metrics) $FIVES"
echo "RSS ready     $(mib "$RSS_READY") MiB"
echo "RSS start     $(mib "$RSS_START") MiB  (after the warm-up: $(field "$WORK/warm.json" requests) requests)"
echo "RSS during    $(awk '{ printf "%s%ss %.1f", sep, $1, $2 / 1024; sep = ", " }' "$WORK/samples") MiB"
echo "RSS end       $(mib "$RSS_END") MiB  ($(awk -v a="$RSS_START" -v b="$RSS_END" 'BEGIN { printf "%+.1f MiB, %+.1f%%", (b - a) / 1024, 100 * (b - a) / a }'))"
echo "peak (VmHWM)  $(mib "$HWM") MiB"
echo "readyz after  $READY"

FAIL=0
if [[ $NON2XX != 0 || $ERRS != 0 || $FIVES != 0 || $REQ == 0 || $READY != 200 ]]; then
  echo "FAIL: failed requests or a server in trouble" >&2
  FAIL=1
fi
if awk -v a="$RSS_START" -v b="$RSS_END" -v p="$MAX_GROWTH_PCT" 'BEGIN { exit !(b > a * (1 + p / 100)) }'; then
  echo "FAIL: RSS grew more than ${MAX_GROWTH_PCT}% during the soak" >&2
  FAIL=1
fi
exit $FAIL
