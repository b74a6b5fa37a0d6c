# shellcheck shell=bash
# scripts/lib/bench.sh — what the bench scripts share: a setting from the environment or .env,
# the scratch database of the load benchmarks seeded once, and a release instance started and
# waited for.
#
# Source it from the repository root (it defines functions only). seed_loadbench_if_missing and
# serve_hotfeed use the sourcing script's BIN, BENCH_URL, BENCH_DATABASE, BENCH_OUT, DATABASE_URL,
# REDIS_URLS, PIDS and log.

[[ -n ${HOTFEED_BENCH_LIB:-} ]] && return 0
HOTFEED_BENCH_LIB=1

# env_or_dotenv NAME: $NAME when set, else its last value in ./.env, else nothing.
env_or_dotenv() {
  local name=$1 value=${!1:-}
  if [[ -z $value && -f .env ]]; then
    value=$(grep -E "^${name}=" .env | tail -n 1 | cut -d= -f2- || true)
  fi
  printf '%s' "$value"
}

# seed_loadbench_if_missing PREFIX: BENCH_DATABASE with 100 users and 2,000,000 Zipf posts (their
# cache keys under PREFIX), unless it holds them already.
seed_loadbench_if_missing() {
  local prefix=$1 posts
  posts=$(psql -Atq "$BENCH_URL" -c 'SELECT count(*) FROM posts' 2>/dev/null || echo 0)
  if [[ $posts != 2000000 ]]; then
    log "seeding $BENCH_DATABASE"
    psql -q "${DATABASE_URL%/*}/postgres" -c "CREATE DATABASE $BENCH_DATABASE" 2>/dev/null || true
    "$BIN/hotfeed" migrate --database-url "$BENCH_URL" >/dev/null
    "$BIN/datagen" --users 100 --posts 2000000 --database-url "$BENCH_URL" \
      --redis-urls "$REDIS_URLS" --cache-key-prefix "$prefix" >/dev/null
    psql -X -q "$BENCH_URL" -c "VACUUM ANALYZE posts"
  fi
}

# serve_hotfeed PORT NAME ENV=VALUE...: a release instance on BENCH_URL and REDIS_URLS, without
# migrations or read limits, with the given settings on top; it logs to BENCH_OUT/NAME.log, its
# pid joins PIDS, and it is waited for (10 s at most).
serve_hotfeed() {
  local port=$1 name=$2
  shift 2
  env DATABASE_URL="$BENCH_URL" REDIS_URLS="$REDIS_URLS" APP_PORT="$port" APP_HOST=127.0.0.1 \
    NO_MIGRATE=true RATE_LIMIT_READS_PER_IP=0 "$@" \
    "$BIN/hotfeed" serve >"$BENCH_OUT/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/ping" >/dev/null && return 0
    sleep 0.1
  done
  log "instance $name did not start; see $BENCH_OUT/$name.log"
  exit 1
}
