#!/usr/bin/env bash
# benches/frozen-master-load.sh — a hung master under open-loop load (docs/benchmarks.md, "A frozen
# master under load").
#
# Runs a release `hotfeed serve` on BENCH_DATABASE (seeded by `benches/run-load-benchmarks.sh seed`)
# against the local stack's cluster, drives it with loadgen at FREEZE_RATE requests/s for 30 s
# (Zipf over the 100 users, the default page mix), and SIGSTOPs the master that holds user 1's
# pages from t=11 s to t=21 s (SIGCONT after). Prints loadgen's report. The stack's replica is
# promoted meanwhile; `scripts/stack.sh status` shows the new roles afterwards.
#
# Environment: DATABASE_URL (its server), BENCH_DATABASE (hotfeed_loadbench), FREEZE_PORT (18290),
# FREEZE_RATE (200). Needs the release binaries (cargo build --release -p hotfeed -p loadgen).
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hotfeed}
BENCH_URL="${DATABASE_URL%/*}/${BENCH_DATABASE:-hotfeed_loadbench}"
PORT=${FREEZE_PORT:-18290}
RATE=${FREEZE_RATE:-200}
PREFIX="freeze$$"

DATABASE_URL=$BENCH_URL CACHE_KEY_PREFIX=$PREFIX APP_HOST=127.0.0.1 APP_PORT=$PORT \
  RATE_LIMIT_READS_PER_IP=0 RUST_LOG=error NO_MIGRATE=true target/release/hotfeed serve >"/tmp/hotfeed-freeze-$$.log" 2>&1 &
app=$!
pid=""
cleanup() {
  [[ -n $pid ]] && kill -CONT "$pid" 2>/dev/null
  kill "$app" 2>/dev/null || true
}
trap cleanup EXIT
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/ping"; do sleep 0.2; done

# A node that does not own the key answers MOVED <slot> <owner>; the owner answers the value.
owner=$(redis-cli -p 7000 get "$PREFIX:{user:1}:pages" | awk '/MOVED/ {print $3}')
port=${owner##*:}
port=${port:-7000}
pid=$(redis-cli -p "$port" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
echo "user 1's pages are on 127.0.0.1:$port (pid $pid)"

target/release/loadgen --url "http://127.0.0.1:$PORT" --rate "$RATE" --duration 30s --warmup 3s \
  --seed 1 --quiet &
load=$!
sleep 11
kill -STOP "$pid"
echo "master frozen"
sleep 10
kill -CONT "$pid"
echo "master resumed"
wait "$load"
