#!/usr/bin/env bash
# benches/run-load-benchmarks.sh — the load runs of docs/benchmarks.md (comparisons 1, 2, 3's HTTP
# side, 4, 6 and 7), end to end, on this machine.
#
#   benches/run-load-benchmarks.sh [all|seed|first-page|deep|keyset|feed|ceiling|zipf]...   (default: all)
#
# 1. Builds the release binaries (hotfeed, loadgen, datagen).
# 2. Seeds a scratch database with datagen (100 users, 2,000,000 Zipf posts, user 1 hottest), unless
#    it already holds exactly that many posts. Its name: BENCH_DATABASE (hotfeed_loadbench; not
#    hotfeed_bench, which datagen's own bench drops), on the server of DATABASE_URL. Your own
#    database is never touched.
# 3. Starts two release `hotfeed serve` on 127.0.0.1: the cache on (BENCH_PORT, 18090) and the cache
#    off (BENCH_PORT+1), with a key prefix of their own on the cluster of REDIS_URLS; and nginx
#    (Debian's, installed with apt if missing) on BENCH_PORT+2, serving the bytes of user 1's first
#    page for every path under /api/.
# 4. Runs each comparison BENCH_REPEAT (3) times, alternating its sides, each run a warm-up of
#    BENCH_WARMUP (2s, excluded) and BENCH_DURATION (10s) measured, and writes every report
#    (loadgen --json) and a summary of medians and ratios (summary.md) to BENCH_OUT
#    (target/load-bench/<time>).
#
# Closed-loop runs (throughput) use BENCH_CONCURRENCY (16) workers; fixed-rate runs (latency without
# coordinated omission) use BENCH_RATE (100/s) for first pages and BENCH_DEEP_RATE (10/s) for deep
# pages, rates both paths sustain. loadgen and the service share the 2 cores: read ratios, not
# absolute figures. Everything started here is stopped on exit.
#
# Environment: DATABASE_URL, REDIS_URLS (else .env, as the service reads them), BENCH_DATABASE,
# BENCH_PORT, BENCH_REPEAT, BENCH_DURATION, BENCH_WARMUP, BENCH_CONCURRENCY, BENCH_RATE,
# BENCH_DEEP_RATE, BENCH_OUT. Needs curl, jq, python3 and psql (all Debian packages).
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
BENCH_PORT=${BENCH_PORT:-18090}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-2s}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-16}
BENCH_RATE=${BENCH_RATE:-100}
BENCH_DEEP_RATE=${BENCH_DEEP_RATE:-10}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/load-bench/$(date -u +%Y%m%dT%H%M%SZ)}
# The benchmark instances accept offsets this deep (the service's default stops at 10,000), so
# that the cost of OFFSET can still be measured against the keyset cursor that replaces it.
BENCH_OFFSET_MAX=${BENCH_OFFSET_MAX:-300000}
# The feed comparison's follow graph: every user follows users 1..21 (the hottest posters) but
# itself, so those 21 have 99 followers each; at this bar they are celebrities, pulled at read time.
BENCH_CELEBRITY_FOLLOWERS=${BENCH_CELEBRITY_FOLLOWERS:-50}

ADMIN_URL=$DATABASE_URL
BENCH_URL="${DATABASE_URL%/*}/$BENCH_DATABASE"
ON_URL="http://127.0.0.1:$BENCH_PORT"
OFF_URL="http://127.0.0.1:$((BENCH_PORT + 1))"
STATIC_URL="http://127.0.0.1:$((BENCH_PORT + 2))"
PREFIX="bench$$"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PIDS=()
NGINX_DIR=""

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
  printf 'bench: error: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ -n $NGINX_DIR && -f $NGINX_DIR/nginx.pid ]]; then
    kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() {
  local url=$1 tries=0
  until curl -fs -o /dev/null "$url"; do
    tries=$((tries + 1))
    ((tries < 100)) || die "$url did not answer within 20 s"
    sleep 0.2
  done
}

build() {
  log "building release binaries (hotfeed, loadgen, datagen)"
  cargo build --release -p hotfeed -p loadgen -p datagen
}

seed() {
  psql -X -q "$ADMIN_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DATABASE'" | grep -q 1 ||
    psql -X -q "$ADMIN_URL" -c "CREATE DATABASE \"$BENCH_DATABASE\""
  # A database seeded by an older version gets the newer migrations (the instances run NO_MIGRATE).
  "$BIN/hotfeed" migrate --database-url "$BENCH_URL"
  local posts
  posts=$(psql -X -q "$BENCH_URL" -tAc "SELECT count(*) FROM posts" 2>/dev/null || echo 0)
  if [[ $posts == 2000000 ]]; then
    log "$BENCH_DATABASE already holds 2,000,000 posts; not seeding again"
    return
  fi
  log "seeding $BENCH_DATABASE with datagen (100 users, 2,000,000 posts)"
  "$BIN/datagen" --users 100 --posts 2000000 --database-url "$BENCH_URL" \
    --redis-urls "$REDIS_URLS" --cache-key-prefix "$PREFIX"
  psql -X -q "$BENCH_URL" -c "VACUUM ANALYZE posts"
}

# start_hotfeed on|off: one release instance with the cache on or off, logs in BENCH_OUT. The read
# limit per address is off: the maximum-throughput runs come from one address and measure capacity.
start_hotfeed() {
  local mode=$1 port=$BENCH_PORT
  [[ $mode == on ]] || port=$((BENCH_PORT + 1))
  DATABASE_URL=$BENCH_URL REDIS_URLS=$REDIS_URLS CACHE=$mode CACHE_KEY_PREFIX=$PREFIX \
    APP_HOST=127.0.0.1 APP_PORT=$port RUST_LOG=warn NO_MIGRATE=true PAGE_OFFSET_MAX=$BENCH_OFFSET_MAX \
    RATE_LIMIT_READS_PER_IP=0 \
    FEED_CELEBRITY_FOLLOWERS=$BENCH_CELEBRITY_FOLLOWERS \
    "$BENCH_OUT/bin/hotfeed-lbench" serve >>"$BENCH_OUT/hotfeed-cache-$mode.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/ping"
}

# Restarts an instance that stopped answering (something outside this script ended it).
ensure_up() {
  local mode
  for mode in on off; do
    local url=$ON_URL
    [[ $mode == on ]] || url=$OFF_URL
    if ! curl -fs -o /dev/null --max-time 2 "$url/ping"; then
      log "the cache-$mode instance does not answer; restarting it"
      start_hotfeed "$mode"
    fi
  done
}

start_services() {
  local port
  for port in "$BENCH_PORT" $((BENCH_PORT + 1)) $((BENCH_PORT + 2)); do
    port_free "$port" || die "port $port is in use (set BENCH_PORT)"
  done
  mkdir -p "$BENCH_OUT/bin"
  # A copy under a name of its own, so tools that stop "hotfeed" processes leave these alone.
  cp "$BIN/hotfeed" "$BENCH_OUT/bin/hotfeed-lbench"
  start_hotfeed on
  start_hotfeed off

  command -v nginx >/dev/null || {
    log "installing nginx (Debian package nginx-light)"
    apt-get install -y -qq nginx-light >/dev/null
  }
  NGINX_DIR=$(mktemp -d /tmp/hotfeed-bench-nginx.XXXXXX)
  chmod 755 "$NGINX_DIR"
  mkdir -p "$NGINX_DIR/www"
  # The exact bytes the service answers for user 1's first page (a hit, once cached).
  curl -fsS -o /dev/null "$ON_URL/api/v1/users/1/posts?limit=50&offset=0"
  curl -fsS -o "$NGINX_DIR/www/page.json" "$ON_URL/api/v1/users/1/posts?limit=50&offset=0"
  chmod -R a+rX "$NGINX_DIR/www"
  cat >"$NGINX_DIR/nginx.conf" <<EOF
worker_processes auto;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $NGINX_DIR/tmp-body;
    proxy_temp_path $NGINX_DIR/tmp-proxy;
    fastcgi_temp_path $NGINX_DIR/tmp-fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp-uwsgi;
    scgi_temp_path $NGINX_DIR/tmp-scgi;
    server {
        listen 127.0.0.1:$((BENCH_PORT + 2));
        root $NGINX_DIR/www;
        location /api/ {
            default_type application/json;
            try_files /page.json =404;
        }
        location / {
            return 404;
        }
    }
}
EOF
  nginx -c "$NGINX_DIR/nginx.conf"
  wait_http "$STATIC_URL/api/v1/users/1/posts"
  log "cache on $ON_URL, cache off $OFF_URL, nginx $STATIC_URL; reports in $BENCH_OUT"
}

# load NAME URL loadgen-args...: one run, its JSON report kept as NAME.json. A run whose requests
# met transport errors (the instance was gone) is run again once after a restart.
load() {
  local name=$1 url=$2 attempt
  shift 2
  for attempt in 1 2; do
    ensure_up
    log "run $name"
    printf '%s %s\n' "$name" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$BENCH_OUT/loadavg.log"
    if "$BIN/loadgen" --url "$url" --duration "$BENCH_DURATION" --warmup "$BENCH_WARMUP" \
      --json --quiet --seed 1 "$@" >"$BENCH_OUT/$name.json" &&
      ! jq -e '.statuses | has("error")' "$BENCH_OUT/$name.json" >/dev/null; then
      return
    fi
    log "run $name met transport errors (attempt $attempt)"
  done
  die "run $name failed twice; see $BENCH_OUT/hotfeed-cache-*.log"
}

closed() { load "$1" "$2" --concurrency "$BENCH_CONCURRENCY" "${@:3}"; }

# 1 and 3 (HTTP side): first page, hot user 1 and cold user 100, Redis hit vs PostgreSQL.
first_page() {
  local rep user
  for rep in $(seq "$BENCH_REPEAT"); do
    for user in 1 100; do
      closed "first-page-max__user$user-cache-on__r$rep" "$ON_URL" --user "$user" --offsets 0=1
      closed "first-page-max__user$user-cache-off__r$rep" "$OFF_URL" --user "$user" --offsets 0=1
      load "first-page-rate__user$user-cache-on__r$rep" "$ON_URL" --rate "$BENCH_RATE" --user "$user" --offsets 0=1
      load "first-page-rate__user$user-cache-off__r$rep" "$OFF_URL" --rate "$BENCH_RATE" --user "$user" --offsets 0=1
    done
  done
}

# 2. Deep pages of the hottest user by OFFSET.
deep() {
  local rep offset
  for rep in $(seq "$BENCH_REPEAT"); do
    for offset in 10000 100000; do
      closed "deep-max__offset$offset-cache-on__r$rep" "$ON_URL" --user 1 --offsets "$offset=1"
      closed "deep-max__offset$offset-cache-off__r$rep" "$OFF_URL" --user 1 --offsets "$offset=1"
      load "deep-rate__offset$offset-cache-on__r$rep" "$ON_URL" --rate "$BENCH_DEEP_RATE" --user 1 --offsets "$offset=1"
      load "deep-rate__offset$offset-cache-off__r$rep" "$OFF_URL" --rate "$BENCH_DEEP_RATE" --user 1 --offsets "$offset=1"
    done
  done
}

# The cursor that starts a page of user 1 at `depth` posts deep, read once from the service.
cursor_at() {
  curl -fsS "$OFF_URL/api/v1/users/1/posts?limit=1&offset=$(($1 - 1))" | jq -er .next_cursor
}

# 7. Keyset pages vs OFFSET pages of the hottest user at depths 100,000 and 300,000, PostgreSQL
# only, against the first page; then the cached cursor page against the cached first page.
keyset() {
  local rep depth cursor
  for rep in $(seq "$BENCH_REPEAT"); do
    closed "keyset-max__depth0-cache-off__r$rep" "$OFF_URL" --user 1 --offsets 0=1
    for depth in 100000 300000; do
      cursor=$(cursor_at "$depth")
      closed "keyset-max__depth$depth-cursor-cache-off__r$rep" "$OFF_URL" --user 1 --cursor "$cursor"
      closed "keyset-max__depth$depth-offset-cache-off__r$rep" "$OFF_URL" --user 1 --offsets "$depth=1"
    done
    cursor=$(cursor_at 100000)
    closed "keyset-hit__depth0-offset-cache-on__r$rep" "$ON_URL" --user 1 --offsets 0=1
    closed "keyset-hit__depth100000-cursor-cache-on__r$rep" "$ON_URL" --user 1 --cursor "$cursor"
  done
}

# 8. Home feed first pages, Zipf-drawn readers, from the cluster (inbox + pulled celebrity
# outboxes) vs PostgreSQL alone. Seeds the follow graph once (see BENCH_CELEBRITY_FOLLOWERS).
feed() {
  local rep
  if [[ $(psql -X -q "$BENCH_URL" -tAc "SELECT count(*) FROM follows") == 0 ]]; then
    log "seeding the follow graph: every user follows users 1..21"
    psql -X -q "$BENCH_URL" -c "
      INSERT INTO follows (follower_id, followee_id)
      SELECT u.id, f.id FROM users u JOIN users f ON f.id <= 21 AND f.id <> u.id;
      UPDATE users SET
        followers_count = (SELECT count(*) FROM follows WHERE followee_id = users.id),
        following_count = (SELECT count(*) FROM follows WHERE follower_id = users.id);
      ANALYZE follows, users;"
  fi
  for rep in $(seq "$BENCH_REPEAT"); do
    closed "feed-max__cache-on__r$rep" "$ON_URL" --endpoint feed --users 100
    closed "feed-max__cache-off__r$rep" "$OFF_URL" --endpoint feed --users 100
  done
}

# 4. The HTTP ceiling: nginx serving the same bytes vs the service's Redis hit, at the maximum and
# at the fixed rate.
ceiling() {
  local rep
  for rep in $(seq "$BENCH_REPEAT"); do
    closed "ceiling-max__nginx-static__r$rep" "$STATIC_URL" --user 1 --offsets 0=1
    closed "ceiling-max__hotfeed-hit__r$rep" "$ON_URL" --user 1 --offsets 0=1
    load "ceiling-rate__nginx-static__r$rep" "$STATIC_URL" --rate "$BENCH_RATE" --user 1 --offsets 0=1
    load "ceiling-rate__hotfeed-hit__r$rep" "$ON_URL" --rate "$BENCH_RATE" --user 1 --offsets 0=1
  done
}

# 6. Zipf over 100 users with the default page mix: the maximum with the cache on, then half of it
# at a fixed rate; the cache-off side at its own maximum and at the same fixed rate.
zipf() {
  local rep max rate
  for rep in $(seq "$BENCH_REPEAT"); do
    closed "zipf-max__cache-on__r$rep" "$ON_URL" --users 100
    closed "zipf-max__cache-off__r$rep" "$OFF_URL" --users 100
  done
  max=$(python3 - "$BENCH_OUT" <<'EOF'
import json, pathlib, statistics, sys
runs = sorted(pathlib.Path(sys.argv[1]).glob("zipf-max__cache-on__r*.json"))
print(statistics.median(json.loads(p.read_text())["requests_per_sec"] for p in runs))
EOF
  )
  rate=$(python3 -c "print(round(float('$max') / 2))")
  log "Zipf maximum with the cache (median) $max req/s; fixed-rate runs at $rate req/s"
  for rep in $(seq "$BENCH_REPEAT"); do
    load "zipf-half__cache-on__r$rep" "$ON_URL" --users 100 --rate "$rate"
    load "zipf-half__cache-off__r$rep" "$OFF_URL" --users 100 --rate "$rate"
  done
}

summarize() {
  python3 "$ROOT/benches/summarize-load.py" "$BENCH_OUT" | tee "$BENCH_OUT/summary.md"
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(all)
[[ ${steps[0]} == all ]] && steps=(first-page deep keyset feed ceiling zipf)

build
seed
[[ ${steps[*]} == seed ]] && exit 0
start_services
for step in "${steps[@]}"; do
  case $step in
    seed) ;;
    first-page) first_page ;;
    deep) deep ;;
    keyset) keyset ;;
    feed) feed ;;
    ceiling) ceiling ;;
    zipf) zipf ;;
    *) die "unknown step $step (all, seed, first-page, deep, keyset, feed, ceiling, zipf)" ;;
  esac
done
summarize
