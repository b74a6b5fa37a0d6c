#!/usr/bin/env bash
# benches/fetch-strategies.sh — CACHE_FETCH side by side (docs/benchmarks.md, 11).
#
#   benches/fetch-strategies.sh
#
# Builds the release binaries and reuses (or seeds) the scratch database of run-load-benchmarks.sh
# (BENCH_DATABASE, 100 users, 2,000,000 Zipf posts). Starts one release instance per strategy,
# `get` (:18194), `bucket-mget` (:18195) and `mget` (:18196), in-process tier off, each with a key
# prefix of its own, and warms each with every page the mix reads. Then, alternating the sides
# BENCH_REPEAT (3) times, a closed loop of BENCH_CONCURRENCY (16) for BENCH_DURATION (10s) over 100
# Zipf users with the default page mix, measuring for each run:
#
#   pages/s                loadgen's requests/s (all hits after the warm-up)
#   commands per page      the instance's Redis commands over the run / pages (loadgen's scrape)
#   Redis CPU per page     used_cpu_user + used_cpu_sys of every master (INFO cpu) / pages
#   command shares         each master's share of the run's commands (loadgen's report)
#
# and, once, how many post keys each master holds under each layout. Reports go to BENCH_OUT
# (target/load-bench/fetch-<time>); summary.txt has the medians. Everything started is stopped on
# exit.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=scripts/lib/bench.sh disable=SC1091
. "$ROOT/scripts/lib/bench.sh"
DATABASE_URL=$(env_or_dotenv DATABASE_URL)
REDIS_URLS=$(env_or_dotenv REDIS_URLS)
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/hotfeed}"
: "${REDIS_URLS:=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002}"
BENCH_DATABASE=${BENCH_DATABASE:-hotfeed_loadbench}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-16}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/load-bench/fetch-$(date -u +%Y%m%dT%H%M%SZ)}
BENCH_URL="${DATABASE_URL%/*}/$BENCH_DATABASE"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PREFIX="fetch$$"
PIDS=()
log() { printf 'bench: %s\n' "$*" >&2; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$BENCH_OUT"
log "building release binaries"
cargo build --release -q -p hotfeed -p loadgen -p datagen

seed_loadbench_if_missing "$PREFIX"

# The nodes' ports, from REDIS_URLS' first seed's view of the cluster.
seed=${REDIS_URLS%%,*}
seed=${seed#*://}
seed=${seed##*@}
NODES=$(redis-cli -h "${seed%:*}" -p "${seed##*:}" cluster nodes | awk '{ split($2, a, "@"); print a[1] }')
masters() {
  local node
  for node in $NODES; do
    if redis-cli -h "${node%:*}" -p "${node##*:}" role | head -n 1 | grep -qx master; then
      echo "$node"
    fi
  done
}
# redis_cpu: seconds of CPU all masters have used so far.
redis_cpu() {
  local node total=0 cpu
  for node in $(masters); do
    cpu=$(redis-cli -h "${node%:*}" -p "${node##*:}" info cpu |
      awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }')
    total=$(python3 -c "print($total + $cpu)")
  done
  echo "$total"
}
serve() {
  local port=$1 name=$2
  serve_hotfeed "$port" "$name" CACHE_KEY_PREFIX="$PREFIX$name" L1=off CACHE_FETCH="$name" \
    CACHE_LIST_TTL_SECS=600
}
declare -A PORT=([get]=18194 [bucket-mget]=18195 [mget]=18196)
SIDES=(get bucket-mget mget)
for side in "${SIDES[@]}"; do serve "${PORT[$side]}" "$side"; done

loadgen() { "$BIN/loadgen" --json --quiet --seed 1 "$@"; }
for side in "${SIDES[@]}"; do
  log "warming $side: every page the mix reads"
  loadgen --url "http://127.0.0.1:${PORT[$side]}" --users 100 --concurrency 8 --duration 20s \
    >/dev/null
done

for run in $(seq "$BENCH_REPEAT"); do
  for side in "${SIDES[@]}"; do
    port=${PORT[$side]}
    log "run $run: $side"
    cpu_before=$(redis_cpu)
    loadgen --url "http://127.0.0.1:$port" --users 100 --concurrency "$BENCH_CONCURRENCY" \
      --warmup 0s --duration "$BENCH_DURATION" >"$BENCH_OUT/$side-$run.json"
    cpu_after=$(redis_cpu)
    echo "$side $run $cpu_before $cpu_after" >>"$BENCH_OUT/counters.txt"
  done
done

for side in "${SIDES[@]}"; do
  for node in $(masters); do
    keys=$(redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "$PREFIX$side:*post:*" | wc -l)
    echo "$side $node $keys" >>"$BENCH_OUT/keys.txt"
  done
done

python3 - "$BENCH_OUT" <<'PY' | tee "$BENCH_OUT/summary.txt"
import json, statistics, sys, pathlib, collections
out = pathlib.Path(sys.argv[1])
med = statistics.median
runs = collections.defaultdict(list)
for line in (out / "counters.txt").read_text().splitlines():
    side, run, cpu0, cpu1 = line.split()
    report = json.loads((out / f"{side}-{run}.json").read_text())
    pages = report["responses"]
    nodes = report.get("service", {}).get("redis_nodes") or []
    runs[side].append({
        "rate": report["requests_per_sec"],
        "p99": report["latency_ms"]["p99"],
        "commands": sum(n["commands"] for n in nodes) / pages,
        "cpu_us": (float(cpu1) - float(cpu0)) * 1e6 / pages,
        "nodes": nodes,
    })
base = med(r["rate"] for r in runs["get"])
for side, rs in runs.items():
    rate = med(r["rate"] for r in rs)
    print(f"{side:12} pages/s {rate:8.0f} (x{rate / base:4.2f} of get)  p99 {med(r['p99'] for r in rs):6.2f} ms  "
          f"commands/page {med(r['commands'] for r in rs):5.1f}  Redis CPU/page {med(r['cpu_us'] for r in rs):6.1f} us  runs {len(rs)}")
    shares = [n.get("command_share", 0) for n in rs[-1]["nodes"]]
    if shares:
        top = max(shares)
        others = [s for s in shares if s != top] or [top]
        print(f"{'':12} command shares " + ", ".join(f"{n.get('node')} {n.get('command_share', 0) * 100:.1f} %" for n in rs[-1]["nodes"])
              + f"  (hottest / mean of others x{top / (sum(others) / len(others)):.2f})")
for line in (out / "keys.txt").read_text().splitlines():
    side, node, keys = line.split()
    print(f"post keys {side:12} {node:16} {keys}")
PY
