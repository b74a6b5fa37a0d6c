#!/usr/bin/env bash
# benches/hit-profile.sh — instructions per page hit, counted by callgrind (repeatable whatever
# else the machine does), and where they go. docs/benchmarks.md, comparison 11.
#
#   benches/hit-profile.sh [L1=on|L1=off] [requests]     (default: L1=off, 1000)
#
# Every function at or above PROFILE_MIN_PERCENT (3) of the instructions, inclusive, is listed;
# CACHE_FETCH and the other settings come from the environment.
# Runs the release `hotfeed serve` under valgrind on the benchmark database (BENCH_DATABASE, seeded
# by benches/run-load-benchmarks.sh or benches/hot-partition.sh) with one worker, warms user 1's
# first page, zeroes the counters, sends the requests with loadgen at 50/s, dumps, and prints the
# instructions per request and the top inclusive entries. Needs valgrind (Debian package).
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
L1_SETTING=${1:-L1=off}
REQUESTS=${2:-1000}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
set -a
[[ -f .env ]] && . ./.env
set +a
DATABASE_URL="${DATABASE_URL%/*}/${BENCH_DATABASE:-hotfeed_loadbench}"
OUT=$(mktemp -d)
PORT=18290
env DATABASE_URL="$DATABASE_URL" APP_PORT=$PORT APP_HOST=127.0.0.1 CACHE_KEY_PREFIX="prof$$" \
  NO_MIGRATE=true RATE_LIMIT_READS_PER_IP=0 APP_WORKERS=1 L1_ADMIT_READS=1 "$L1_SETTING" \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$BIN/hotfeed" serve \
  >"$OUT/serve.log" 2>&1 &
PID=$!
trap 'kill -INT $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break
  sleep 0.2
done
for _ in 1 2 3 4; do curl -s -o /dev/null "http://127.0.0.1:$PORT/api/v1/users/1/posts"; done
callgrind_control -z "$PID" >/dev/null
"$BIN/loadgen" --url "http://127.0.0.1:$PORT" --user 1 --offsets 0=100 --rate 50 \
  --max-requests "$REQUESTS" --duration 120s --warmup 0s --quiet --json >"$OUT/load.json"
callgrind_control -d "$PID" >/dev/null
sleep 1
DUMP=$(ls -t "$OUT"/callgrind.out* | head -n 1)
python3 - "$OUT/load.json" "$DUMP" <<'PY'
import json, re, subprocess, sys
load = json.load(open(sys.argv[1]))
text = subprocess.run(["callgrind_annotate", "--inclusive=yes", sys.argv[2]], capture_output=True, text=True).stdout
total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
print(f"responses {load['responses']}, x-cache {load['x_cache']}")
print(f"instructions per request: {total / load['responses']:,.0f}")
threshold = float(__import__("os").environ.get("PROFILE_MIN_PERCENT", "3"))
for line in text.splitlines():
    m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
    if m and threshold <= float(m.group(2)) < 99.5:
        print(f"  {m.group(2):>6}%  {m.group(3)[:150]}")
PY
