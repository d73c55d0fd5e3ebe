# Shared by serve/benches/load.sh and soak.sh (sourced once ROOT is set; the functions read
# PORT): the binaries and a work folder, the build and model checks, the request
# body, and the server's start and stop.

# The model directory: the script's first argument (sourcing keeps the caller's arguments).
MODEL="${1:-/tmp/ml1m-serve}"
BIN="${SERVE_BIN:-$ROOT/target/release/sasrec-serve}"
GEN="$ROOT/target/release/examples/loadgen"
WORK="$(mktemp -d)"

# Exits unless the server, the load generator and the model are there.
check_inputs() {
  [[ -x "$BIN" ]] || { echo "build first: cargo build --release -p sasrec-serve" >&2; exit 1; }
  [[ -x "$GEN" ]] || {
    echo "build first: cargo build --release -p sasrec-serve --example loadgen" >&2; exit 1
  }
  [[ -f "$MODEL/model.onnx" ]] || {
    echo "no $MODEL/model.onnx (see the header of serve/benches/load.sh)" >&2; exit 1
  }
}

# $WORK/body.json: a 50-item history (the first 50 ids of items.tsv), k = 10, exclude_seen.
write_body() {
  local hist
  hist=$(awk -F'\t' 'NR > 1 && NR <= 51 { printf "%s%s", sep, $2; sep = "," }' "$MODEL/items.tsv")
  echo "{\"history\": [$hist], \"k\": 10, \"exclude_seen\": true}" >"$WORK/body.json"
}

# Starts the server with extra flags "$@" and $SERVE_FLAGS; returns once /readyz answers (sets
# SERVER_PID), or prints the server's log and exits.
start_server() {
  "$BIN" --model "$MODEL" --addr "127.0.0.1:$PORT" "$@" ${SERVE_FLAGS:-} >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/server.log" >&2; exit 1
}

# SIGTERM (graceful drain) and wait.
stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }
