#!/usr/bin/env bash
# benches/hot-partition.sh — the hot-partition defences side by side (docs/benchmarks.md, 11).
#
#   benches/hot-partition.sh
#
# Builds the release binaries, seeds (or reuses) the scratch database of run-load-benchmarks.sh
# (BENCH_DATABASE, 100 users, 2,000,000 Zipf posts), and starts two release instances from the
# same binary on the cluster of REDIS_URLS: the in-process tier on (:18190) and off (:18191), each
# with a key prefix of its own. First the Redis work of a hit without HTTP (criterion's
# `64_pages_at_a_time/page_redis_work/<CACHE_FETCH>`, benches/redis_fetch.rs), then the maximum
# of the Zipf mix with the tier off (closed loop of 16, median of BENCH_REPEAT runs) unless
# BENCH_ZIPF_RATE is given, and then, alternating the sides BENCH_REPEAT (3) times:
#
#   hot   closed loop of 16 on user 1's first page: pages/s, an L1 hit against a Redis hit (and
#         the Redis hit against the Redis work alone)
#   zipf  open loop at BENCH_ZIPF_RATE (half the maximum) over 100 users, the default page mix:
#         p50/p99, PostgreSQL queries per page, each master's share of Redis commands
#
# and, on two more instances with CACHE_LIST_TTL_SECS=5 and the tier off, early refresh on
# (:18192) and off (:18193): user 1's list misses per second under 200 reads/s for 30 s; and the
# hot page on one more tier-off instance with REDIS_CONNECTION_PER_WORKER=off (:18194).
# Reports (loadgen --json) go to BENCH_OUT (target/load-bench/hot-<time>); summary.txt has the
# medians. Everything started here is stopped on exit.
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
BENCH_ZIPF_RATE=${BENCH_ZIPF_RATE:-}
BENCH_FETCH=${CACHE_FETCH:-bucket-mget}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/load-bench/hot-$(date -u +%Y%m%dT%H%M%SZ)}
BENCH_URL="${DATABASE_URL%/*}/$BENCH_DATABASE"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
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

seed_loadbench_if_missing "hot$$"

# serve PORT NAME ENV...: a release instance with its own key prefix, waited for.
serve() {
  local port=$1 name=$2
  shift 2
  serve_hotfeed "$port" "$name" CACHE_KEY_PREFIX="hot$$$name" CACHE_FETCH="$BENCH_FETCH" "$@"
}

serve 18190 l1on L1=on
serve 18191 l1off L1=off
serve 18192 refreshon L1=off CACHE_LIST_TTL_SECS=5 CACHE_EARLY_REFRESH_MS=1000
serve 18193 refreshoff L1=off CACHE_LIST_TTL_SECS=5 CACHE_EARLY_REFRESH_MS=0
serve 18194 shared L1=off REDIS_CONNECTION_PER_WORKER=off

loadgen() { "$BIN/loadgen" --json --quiet --seed 1 --warmup 2s "$@"; }

log "the Redis work of a hit alone ($BENCH_FETCH, criterion)"
CACHE_FETCH="$BENCH_FETCH" cargo bench -q --bench redis_fetch -- \
  "64_pages_at_a_time/page_redis_work/$BENCH_FETCH" >"$BENCH_OUT/redis_fetch.txt" 2>&1
cp "${CARGO_TARGET_DIR:-$ROOT/target}/criterion/64_pages_at_a_time/page_redis_work/$BENCH_FETCH/new/estimates.json" \
  "$BENCH_OUT/redis-work.json"

if [[ -z $BENCH_ZIPF_RATE ]]; then
  for run in $(seq "$BENCH_REPEAT"); do
    log "run $run: the Zipf mix's maximum, tier off"
    loadgen --url "http://127.0.0.1:18191" --users 100 --concurrency 16 \
      --duration "$BENCH_DURATION" >"$BENCH_OUT/zipfmax-l1off-$run.json"
  done
  BENCH_ZIPF_RATE=$(python3 -c '
import json, statistics, sys
rates = [json.load(open(p))["requests_per_sec"] for p in sys.argv[1:]]
print(round(statistics.median(rates) / 2))' "$BENCH_OUT"/zipfmax-l1off-*.json)
fi
echo "$BENCH_ZIPF_RATE" >"$BENCH_OUT/zipf-rate.txt"
log "Zipf open loop at $BENCH_ZIPF_RATE/s"

for run in $(seq "$BENCH_REPEAT"); do
  log "run $run: hot page, tier off, one shared Redis connection"
  loadgen --url "http://127.0.0.1:18194" --user 1 --offsets 0=100 --concurrency 16 \
    --duration "$BENCH_DURATION" >"$BENCH_OUT/hot-shared-$run.json"
  for side in l1on l1off; do
    port=$([[ $side == l1on ]] && echo 18190 || echo 18191)
    log "run $run: hot page, $side"
    loadgen --url "http://127.0.0.1:$port" --user 1 --offsets 0=100 --concurrency 16 \
      --duration "$BENCH_DURATION" >"$BENCH_OUT/hot-$side-$run.json"
    log "run $run: zipf at $BENCH_ZIPF_RATE/s, $side"
    loadgen --url "http://127.0.0.1:$port" --users 100 --rate "$BENCH_ZIPF_RATE" \
      --duration "$BENCH_DURATION" >"$BENCH_OUT/zipf-$side-$run.json"
  done
done

# misses PORT: user 1's list misses so far.
misses() {
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^post_list_cache_misses_total\{user_id="1"\}/ { print $2 }' | tail -n 1
}
for side in refreshon refreshoff; do
  port=$([[ $side == refreshon ]] && echo 18192 || echo 18193)
  log "early refresh, $side: 200 reads/s of user 1 for 30 s"
  before=$(misses "$port")
  loadgen --url "http://127.0.0.1:$port" --user 1 --offsets 0=100 --rate 200 --duration 30s \
    >"$BENCH_OUT/refresh-$side.json"
  after=$(misses "$port")
  echo "$side ${before:-0} ${after:-0}" >>"$BENCH_OUT/refresh.txt"
done

python3 - "$BENCH_OUT" <<'PY' | tee "$BENCH_OUT/summary.txt"
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(name):
    return json.loads((out / name).read_text())
med = statistics.median
work = load("redis-work.json")["median"]["point_estimate"]  # ns per 64 pages
work_rate = 64 / (work / 1e9)
print(f"Redis work alone (criterion, 64 in flight): {work_rate:9.0f} pages/s")
maxes = [load(p.name)["requests_per_sec"] for p in sorted(out.glob("zipfmax-l1off-*.json"))]
if maxes:
    print(f"Zipf maximum, tier off: {med(maxes):.0f} req/s (runs {', '.join(f'{m:.0f}' for m in maxes)})")
print(f"Zipf open loop at {(out / 'zipf-rate.txt').read_text().strip()}/s")
rates = {}
for kind in ("hot", "zipf"):
    for side in ("l1on", "l1off"):
        reports = [load(p.name) for p in sorted(out.glob(f"{kind}-{side}-*.json"))]
        rate = med([r["requests_per_sec"] for r in reports])
        rates[kind, side] = rate
        p50 = med([r["latency_ms"]["p50"] for r in reports])
        p99 = med([r["latency_ms"]["p99"] for r in reports])
        qpp = med([r.get("service", {}).get("db_queries_per_page", 0) for r in reports])
        print(f"{kind:5} {side:6} req/s {rate:9.0f}  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
              f"PostgreSQL queries/page {qpp:.4f}  p99s " + ", ".join("%.1f" % r["latency_ms"]["p99"] for r in reports))
        for r in reports:
            nodes = [n for n in r.get("service", {}).get("redis_nodes") or [] if n.get("commands")]
            shares = sorted((n["command_share"] for n in nodes), reverse=True)
            if len(shares) > 1:
                ratio = shares[0] / (sum(shares[1:]) / len(shares[1:]))
                print("      commands by node:", ", ".join(f"{n['node']} {n['command_share'] * 100:.1f} %" for n in nodes),
                      f" hottest / mean of others x{ratio:.2f}")
shared = [load(p.name)["requests_per_sec"] for p in sorted(out.glob("hot-shared-*.json"))]
if shared:
    print(f"hot   shared req/s {med(shared):9.0f}  (tier off, REDIS_CONNECTION_PER_WORKER=off; runs {', '.join(f'{r:.0f}' for r in shared)})")
    print(f"ratio per-worker connections / one shared connection: {rates['hot', 'l1off'] / med(shared):.2f}")
print(f"ratio Redis hit (tier off) / Redis work alone: {rates['hot', 'l1off'] / work_rate:.2f}")
print(f"ratio L1 hit / Redis hit: {rates['hot', 'l1on'] / rates['hot', 'l1off']:.2f}")
for line in (out / "refresh.txt").read_text().splitlines():
    side, before, after = line.split()
    print(f"early refresh {side:10}: user 1 list misses {float(after) - float(before):.0f} in 30 s")
PY
