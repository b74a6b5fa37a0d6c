#!/usr/bin/env bash
# benches/ab.sh — two or more hotfeed binaries (or settings) side by side on the hot page and the
# Zipf mix, measured with wrk in one run, the order rotating every round (docs/benchmarks.md, 14).
#
#   benches/ab.sh ROUNDS DURATION NAME=COMMAND...
#   benches/ab.sh 3 5s before=/tmp/hotfeed-eca910d after=target/release/hotfeed
#   KINDS=zipf benches/ab.sh 3 5s ttl1=./l1-1000.sh ttl5=./l1-5000.sh   # a wrapper script per setting
#
# Each COMMAND is started as `COMMAND serve` on 127.0.0.1:18401.. with the benchmark database
# (BENCH_DATABASE, hotfeed_loadbench, seeded by benches/hot-partition.sh), REDIS_URLS, its own key
# prefix and read limits off; EXTRA_ENV adds settings to every side. Each side gets 3 s of wrk
# unmeasured, then ROUNDS rounds of `wrk -t2 -c16 -dDURATION` with benches/peers/mix.lua (PEERS_PATH
# set: the hot page; unset: loadgen's default Zipf mix). KINDS: "hot zipf" by default. Prints
# req/s, p99 and non-2xx per side and round, with the load average.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=scripts/lib/bench.sh disable=SC1091
. "$ROOT/scripts/lib/bench.sh"
(($# >= 3)) || { sed -n 2,14p "$0" >&2; exit 2; }
ROUNDS=$1 DURATION=$2
shift 2
DATABASE_URL=$(env_or_dotenv DATABASE_URL)
REDIS_URLS=$(env_or_dotenv REDIS_URLS)
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/hotfeed}"
: "${REDIS_URLS:=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002}"
DB="${DATABASE_URL%/*}/${BENCH_DATABASE:-hotfeed_loadbench}"
MIX=$ROOT/benches/peers/mix.lua
OUT=$(mktemp -d "${TMPDIR:-/tmp}/hotfeed-ab.XXXX")
command -v wrk >/dev/null || { echo "ab: needs wrk (apt-get install wrk)" >&2; exit 3; }
pids=() names=() ports=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
i=0
for spec in "$@"; do
  name=${spec%%=*} command=${spec#*=} port=$((18401 + i))
  i=$((i + 1))
  # shellcheck disable=SC2086 # EXTRA_ENV is a list of NAME=VALUE words
  env DATABASE_URL="$DB" REDIS_URLS="$REDIS_URLS" APP_PORT=$port APP_HOST=127.0.0.1 NO_MIGRATE=true \
    RATE_LIMIT_READS_PER_IP=0 CACHE_KEY_PREFIX="ab$$$name" ${EXTRA_ENV:-} "$command" serve >"$OUT/$name.log" 2>&1 &
  pids+=($!) names+=("$name") ports+=("$port")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
done
n=${#names[@]}
for kind in ${KINDS:-hot zipf}; do
  path=''
  [[ $kind == hot ]] && path='/api/v1/users/1/posts?limit=50&offset=0'
  for j in $(seq 0 $((n - 1))); do
    PEERS_PATH=$path wrk -t2 -c16 -d3s -s "$MIX" "http://127.0.0.1:${ports[$j]}" >/dev/null 2>&1
  done
  for r in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
      j=$(((k + r) % n))
      result=$(PEERS_PATH=$path wrk -t2 -c16 -d"$DURATION" -s "$MIX" "http://127.0.0.1:${ports[$j]}" 2>/dev/null |
        sed -n 's/^WRK .*rps=\([0-9.]*\).*p99_ms=\([0-9.]*\).*non2xx=\([0-9]*\).*/req\/s \1 p99 \2 ms non-2xx \3/p')
      echo "$kind round $r ${names[$j]}: $result  load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
echo "logs: $OUT"
