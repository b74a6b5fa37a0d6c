#!/usr/bin/env bash
# benches/dashboard-viewers.sh — what open dashboards cost the service (docs/benchmarks.md, 12).
#
#   benches/dashboard-viewers.sh
#
# One release instance (default settings: the in-process tier on) on the benchmark database of
# run-load-benchmarks.sh (BENCH_DATABASE, seeded there); an open loop of BENCH_RATE (1000) Zipf
# reads a second for BENCH_DURATION (10s), BENCH_REPEAT (3) times with no dashboard and with
# BENCH_VIEWERS (12) dashboards open, alternating. A dashboard is what the page does: one
# GET /api/v1/admin/stats a second on a keep-alive connection. Prints the medians of p50, p99 and p99.9 on each side.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
if [[ -f .env ]]; then
  set -a
  # shellcheck disable=SC1091
  . ./.env
  set +a
fi
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/hotfeed}"
BENCH_URL="${DATABASE_URL%/*}/${BENCH_DATABASE:-hotfeed_loadbench}"
BENCH_RATE=${BENCH_RATE:-1000}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_VIEWERS=${BENCH_VIEWERS:-12}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/load-bench/viewers-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PORT=18197
PIDS=()
VIEWER_PIDS=()
cleanup() {
  local pid
  for pid in "${VIEWER_PIDS[@]}" "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$BENCH_OUT"
cargo build --release -q -p hotfeed -p loadgen
psql -Atq "$BENCH_URL" -c 'SELECT 1' >/dev/null || {
  echo "bench: $BENCH_URL is missing; seed it with benches/run-load-benchmarks.sh seed" >&2
  exit 1
}
env DATABASE_URL="$BENCH_URL" APP_PORT=$PORT APP_HOST=127.0.0.1 CACHE_KEY_PREFIX="view$$" \
  NO_MIGRATE=true RATE_LIMIT_READS_PER_IP=0 "$BIN/hotfeed" serve >"$BENCH_OUT/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break; sleep 0.1; done
# viewers_on: BENCH_VIEWERS dashboards, each a keep-alive connection polling the stats once a
# second, all in one light process (a curl per poll would cost the machine more than the service).
viewers_on() {
  python3 - "$PORT" "$BENCH_VIEWERS" <<'PY' &
import http.client, sys, threading, time
port, viewers = int(sys.argv[1]), int(sys.argv[2])
def poll():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    while True:
        conn.request("GET", "/api/v1/admin/stats")
        conn.getresponse().read()
        time.sleep(1)
threads = [threading.Thread(target=poll, daemon=True) for _ in range(viewers)]
for t in threads:
    t.start()
    time.sleep(1 / viewers)
while True:
    time.sleep(60)
PY
  VIEWER_PIDS+=($!)
}
viewers_off() {
  local pid
  for pid in "${VIEWER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  VIEWER_PIDS=()
}
load() { "$BIN/loadgen" --url "http://127.0.0.1:$PORT" --users 100 --rate "$BENCH_RATE" \
  --duration "$BENCH_DURATION" --seed 1 --json --quiet >"$BENCH_OUT/$1.json"; }
for run in $(seq "$BENCH_REPEAT"); do
  echo "bench: run $run, no dashboard" >&2
  load "none-$run"
  echo "bench: run $run, $BENCH_VIEWERS dashboards" >&2
  viewers_on
  load "viewers-$run"
  viewers_off
done
python3 - "$BENCH_OUT" "$BENCH_VIEWERS" <<'PY' | tee "$BENCH_OUT/summary.txt"
import json, pathlib, statistics, sys
out, viewers = pathlib.Path(sys.argv[1]), sys.argv[2]
for side, label in (("none", "no dashboard"), ("viewers", f"{viewers} dashboards")):
    reports = [json.loads(p.read_text()) for p in sorted(out.glob(f"{side}-*.json"))]
    lat = lambda q: statistics.median(r["latency_ms"][q] for r in reports)
    runs = ", ".join("%.1f" % r["latency_ms"]["p99"] for r in reports)
    print(f"{label:14} p50 {lat('p50'):6.2f} ms  p99 {lat('p99'):6.2f} ms (runs {runs})  p99.9 {lat('p999'):6.2f} ms")
PY
