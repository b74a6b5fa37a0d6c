#!/usr/bin/env bash
# The peers, side by side: hotfeed against what a user would deploy instead, an HTTP cache in
# front of a PostgreSQL-backed API, measured in one run with sides alternating (issue 21).
#
#   benches/peers.sh                 # about 9 minutes; results in target/peers/<time>/
#   PEERS_ROUNDS=3 PEERS_DURATION=8s benches/peers.sh
#
# Sides (all on 127.0.0.1, ports PEERS_PORT..PEERS_PORT+5):
#   hotfeed-pg     `hotfeed serve` with CACHE=off: every page from PostgreSQL; also the peers' backend
#   varnish        Varnish (Debian 7.1) in front of hotfeed-pg
#   nginx-cache    nginx proxy_cache with proxy_cache_lock (Debian nginx-light 1.22) in front of it
#   nginx-file     the same nginx serving user 1's first page from a file: the HTTP ceiling
#   hotfeed-l1     hotfeed with its defaults (Redis Cluster + the in-process tier: HIT-L1)
#   hotfeed-redis  hotfeed with L1=off (a Redis Cluster hit)
#
# The fair configuration, the same on every side: one TTL for a cached page (PEERS_TTL, hotfeed's
# CACHE_LIST_TTL_SECS, 60 s), no access log anywhere (nginx `access_log off`; hotfeed with its
# defaults, ACCESS_LOG=errors-and-slow, which writes no line for a fast 2xx; Varnish logs to its
# in-memory ring only, no varnishncsa), keep-alive from each peer to its backend (nginx: upstream keepalive 64 with HTTP/1.1;
# Varnish reuses backend connections by default), read rate limits off on every hotfeed instance
# (RATE_LIMIT_READS_PER_IP=0) so no side answers cheap 429s, and Cache-Control from the backend
# ignored by both peers (they cache every 200 for the TTL, coalesce concurrent misses, never serve
# stale past it: Varnish grace 0).
#
# Measured, each in PEERS_ROUNDS rounds, sides alternating (the order reversed every other round):
#   hot      user 1's first page, wrk closed loop (PEERS_THREADS x PEERS_CONNECTIONS)
#   zipf     loadgen's default mix (benches/peers/mix.lua), 2 s of warm-up, then the maximum:
#            req/s, p99, PostgreSQL queries per page (db_queries_total of the instance that queried)
#   stampede 200 concurrent reads of a page no side has cached; backend queries counted
#   fresh    a post, then reads through the same side until it is on the page (the author's page
#            and a follower's home feed); PEERS_FRESH_WAIT bounds the wait
#   stale    10 s of reads at 50/s with 2 posts a second: share of reads missing an acknowledged post
#   client   loadgen (one thread) against wrk on the same hot page, and loadgen's verdict on
#            itself; loadgen open loop at the rates of benchmarks 12 (1,000/s) and 11.3 (3,000/s)
# and the client's own CPU (wrk's user+sys over the run), so no side's ceiling is the client's.
#
# Environment: DATABASE_URL (server of the scratch database), REDIS_URLS, ADMIN_API_KEY (from the
# environment or .env, else made up), CARGO_TARGET_DIR, PEERS_DATABASE (hotfeed_peers),
# PEERS_PORT (18960), PEERS_ROUNDS (2), PEERS_DURATION (5s), PEERS_THREADS (2),
# PEERS_CONNECTIONS (16), PEERS_TTL (60), PEERS_FRESH_WAIT (10), PEERS_OUT, PEERS_STEPS (all of
# "hot zipf stampede fresh stale client"). Installs varnish, nginx-light and wrk with apt when missing;
# seeds PEERS_DATABASE with datagen (100 users, 2,000,000 posts) when it does not hold them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# As the service reads it: the environment first, then .env (scripts/stack.sh writes it).
if [[ -f .env ]]; then
  while IFS='=' read -r key value; do
    [[ -n ${!key:-} ]] || export "$key=$value"
  done < <(grep -E '^(DATABASE_URL|REDIS_URLS|ADMIN_API_KEY)=' .env)
fi
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
: "${REDIS_URLS:=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002}"
: "${ADMIN_API_KEY:=peers-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export ADMIN_API_KEY

DATABASE=${PEERS_DATABASE:-hotfeed_peers}
PORT=${PEERS_PORT:-18960}
ROUNDS=${PEERS_ROUNDS:-2}
DURATION=${PEERS_DURATION:-5s}
THREADS=${PEERS_THREADS:-2}
CONNECTIONS=${PEERS_CONNECTIONS:-16}
TTL=${PEERS_TTL:-60}
FRESH_WAIT=${PEERS_FRESH_WAIT:-10}
STEPS=${PEERS_STEPS:-hot zipf stampede fresh stale client}
OUT=${PEERS_OUT:-$ROOT/target/peers/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PEERS=$ROOT/benches/peers
DB_URL="${DATABASE_URL%/*}/$DATABASE"
PREFIX="peers$$"

declare -A URL=(
  [hotfeed-pg]="http://127.0.0.1:$PORT"
  [varnish]="http://127.0.0.1:$((PORT + 1))"
  [nginx-cache]="http://127.0.0.1:$((PORT + 2))"
  [nginx-file]="http://127.0.0.1:$((PORT + 3))"
  [hotfeed-l1]="http://127.0.0.1:$((PORT + 4))"
  [hotfeed-redis]="http://127.0.0.1:$((PORT + 5))"
)
# Where a side's PostgreSQL queries are counted: the peers query through their backend.
declare -A QUERIED=(
  [hotfeed-pg]=hotfeed-pg [varnish]=hotfeed-pg [nginx-cache]=hotfeed-pg
  [hotfeed-l1]=hotfeed-l1 [hotfeed-redis]=hotfeed-redis
)
PIDS=()
WORK=""

log() { printf 'peers: %s\n' "$*" >&2; }
die() {
  printf 'peers: error: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local pid url
  [[ -n $WORK && -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # This run's keys, on every node that answers, one UNLINK a key (a cluster refuses a multi-key
  # UNLINK across slots; replicas refuse it: ignored, their masters answer).
  for url in ${REDIS_URLS//,/ }; do
    url=${url#redis://}
    redis-cli -h "${url%:*}" -p "${url##*:}" --scan --pattern "$PREFIX*" 2>/dev/null |
      sed 's/^/UNLINK /' | redis-cli -h "${url%:*}" -p "${url##*:}" >/dev/null 2>&1 || true
  done
  [[ -n $WORK ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
trap "exit 130" INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() {
  local url=$1 tries=0
  until curl -fs -o /dev/null "$url"; do
    tries=$((tries + 1))
    ((tries < 150)) || die "$url did not answer within 30 s"
    sleep 0.2
  done
}

install_tools() {
  local missing=()
  command -v varnishd >/dev/null || missing+=(varnish)
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  command -v psql >/dev/null || missing+=(postgresql-client)
  ((${#missing[@]} == 0)) && return
  log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
  [[ -x $BIN/hotfeed && -x $BIN/datagen && -x $BIN/loadgen ]] && return
  log "building release binaries (hotfeed, datagen, loadgen) into $BIN"
  cargo build --release -p hotfeed -p datagen -p loadgen
}

seed() {
  psql -X -q "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1 ||
    psql -X -q "$DATABASE_URL" -c "CREATE DATABASE \"$DATABASE\""
  "$BIN/hotfeed" migrate --database-url "$DB_URL" >/dev/null
  local users posts
  users=$(psql -X -q "$DB_URL" -tAc "SELECT count(*) FROM users" 2>/dev/null || echo 0)
  posts=$(psql -X -q "$DB_URL" -tAc "SELECT count(*) FROM posts" 2>/dev/null || echo 0)
  # The runs add a few hundred posts each (the freshness probes): a seeded database has more.
  if [[ $users == 100 ]] && ((posts >= 2000000 && posts < 2100000)); then
    log "$DATABASE holds 100 users and $posts posts; not seeding again"
    return
  fi
  log "seeding $DATABASE with datagen (100 users, 2,000,000 posts, follows)"
  "$BIN/datagen" --users 100 --posts 2000000 --database-url "$DB_URL" \
    --redis-urls "$REDIS_URLS" --cache-key-prefix "$PREFIX"
}

# start_hotfeed SIDE ENV...: one release instance on SIDE's port, its defaults' log in OUT.
start_hotfeed() {
  local side=$1 port=${URL[$1]##*:}
  shift
  env DATABASE_URL="$DB_URL" REDIS_URLS="$REDIS_URLS" CACHE_KEY_PREFIX="$PREFIX-$side" \
    APP_HOST=127.0.0.1 APP_PORT="$port" NO_MIGRATE=true \
    RATE_LIMIT_READS_PER_IP=0 CACHE_LIST_TTL_SECS="$TTL" ADMIN_API_KEY="$ADMIN_API_KEY" "$@" \
    "$WORK/hotfeed-peers" serve >>"$OUT/$side.log" 2>&1 &
  PIDS+=($!)
  wait_http "${URL[$side]}/ping"
}

start_varnish() {
  sed -e "s/@BACKEND_PORT@/$PORT/" -e "s/@TTL@/$TTL/" "$PEERS/varnish.vcl" >"$WORK/peers.vcl"
  mkdir -p "$WORK/varnish"
  chmod 755 "$WORK" "$WORK/varnish"
  chmod 644 "$WORK/peers.vcl"
  varnishd -F -a "127.0.0.1:$((PORT + 1))" -f "$WORK/peers.vcl" -s malloc,512m \
    -n "$WORK/varnish" -T 127.0.0.1:0 >>"$OUT/varnish.log" 2>&1 &
  PIDS+=($!)
  wait_http "${URL[varnish]}/ping"
}

start_nginx() {
  mkdir -p "$WORK/www" "$WORK/cache"
  # The exact bytes hotfeed answers for user 1's first page: the HTTP ceiling's file.
  curl -fsS -o "$WORK/www/page.json" "${URL[hotfeed-l1]}/api/v1/users/1/posts?limit=50&offset=0"
  chmod -R a+rX "$WORK/www"
  chown -R www-data "$WORK/cache" 2>/dev/null || chmod 777 "$WORK/cache"
  sed -e "s|@WORK@|$WORK|g" -e "s/@BACKEND_PORT@/$PORT/" -e "s/@TTL@/$TTL/" \
    -e "s/@CACHE_PORT@/$((PORT + 2))/" -e "s/@FILE_PORT@/$((PORT + 3))/" \
    "$PEERS/nginx.conf" >"$WORK/nginx.conf"
  nginx -c "$WORK/nginx.conf"
  wait_http "${URL[nginx-cache]}/ping"
  wait_http "${URL[nginx-file]}/api/v1/users/1/posts"
}

start_sides() {
  local offset
  for offset in 0 1 2 3 4 5; do
    port_free $((PORT + offset)) || die "port $((PORT + offset)) is in use (set PEERS_PORT)"
  done
  WORK=$(mktemp -d /tmp/hotfeed-peers.XXXXXX)
  chmod 755 "$WORK"
  # A copy under a name of its own, so tools that stop "hotfeed" processes leave these alone.
  cp "$BIN/hotfeed" "$WORK/hotfeed-peers"
  start_hotfeed hotfeed-pg CACHE=off
  start_hotfeed hotfeed-l1
  start_hotfeed hotfeed-redis L1=off
  start_varnish
  start_nginx
  log "sides: $(for s in "${!URL[@]}"; do printf '%s=%s ' "$s" "${URL[$s]}"; done)"
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# The PostgreSQL queries an instance has run so far (every kind).
queries() {
  curl -fs "${URL[$1]}/metrics" | awk '/^db_queries_total[{ ]/ { n += $NF } END { printf "%d", n }'
}

# record TEST ROUND SIDE key=value...: one line of results.tsv.
record() {
  local test=$1 round=$2 side=$3
  shift 3
  printf '%s\t%s\t%s\t%s\n' "$test" "$round" "$side" "$*" >>"$OUT/results.tsv"
  printf 'peers: %-8s r%s %-13s %s\n' "$test" "$round" "$side" "$*" >&2
}

# wrk_run SIDE PATH DURATION: prints the WRK line of benches/peers/mix.lua plus the client's CPU
# (user+sys of wrk, from the shell's `times`), as key=value pairs. PATH empty: the Zipf mix.
wrk_run() {
  local side=$1 path=$2 duration=$3 out cpu
  out=$(PEERS_PATH=$path bash -c 'wrk "$@" >"$0"; times' "$WORK/wrk.out" \
    -t"$THREADS" -c"$CONNECTIONS" -d"$duration" -s "$PEERS/mix.lua" "${URL[$side]}")
  # `times` prints the shell's own times, then its children's: "0m1.234s 0m0.567s".
  cpu=$(tail -n1 <<<"$out" | awk '{
      n = split($1 " " $2, t, " "); s = 0
      for (i = 1; i <= n; i++) { split(t[i], p, "m"); s += p[1] * 60 + p[2] }
      printf "%.3f", s }')
  local line
  line=$(grep '^WRK ' "$WORK/wrk.out") || die "wrk printed no summary for $side: $(cat "$WORK/wrk.out")"
  local seconds
  seconds=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$line")
  printf '%s wrk_cpu_s=%s wrk_cores=%s' "${line#WRK }" "$cpu" \
    "$(awk -v c="$cpu" -v s="$seconds" 'BEGIN { printf "%.3f", (s > 0 ? c / s : 0) }')"
}

# The order of the sides in a round: as given in odd rounds, reversed in even ones.
ordered() {
  local round=$1
  shift
  if ((round % 2)); then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}

# Reads a page a few times so every side has it cached (the in-process tier admits after 4).
warm() {
  local _
  for _ in 1 2 3 4 5 6; do curl -fs -o /dev/null "$1"; done
}

step_hot() {
  local round side path="/api/v1/users/1/posts?limit=50&offset=0"
  for round in $(seq 1 "$ROUNDS"); do
    for side in $(ordered "$round" nginx-file varnish nginx-cache hotfeed-l1 hotfeed-redis hotfeed-pg); do
      warm "${URL[$side]}$path"
      record hot "$round" "$side" "$(wrk_run "$side" "$path" "$DURATION") load=$(loadavg)"
    done
  done
}

step_zipf() {
  local round side before after result requests
  for round in $(seq 1 "$ROUNDS"); do
    for side in $(ordered "$round" varnish nginx-cache hotfeed-l1 hotfeed-redis hotfeed-pg); do
      wrk_run "$side" "" 2s >/dev/null # warm-up: the mix's pages cached, connections open
      before=$(queries "${QUERIED[$side]}")
      result=$(wrk_run "$side" "" "$DURATION")
      after=$(queries "${QUERIED[$side]}")
      requests=$(sed -E 's/^requests=([0-9]+).*/\1/' <<<"$result")
      record zipf "$round" "$side" "$result queries=$((after - before))" \
        "queries_per_page=$(awk -v q=$((after - before)) -v r="$requests" 'BEGIN { printf "%.4f", (r > 0 ? q / r : 0) }')" \
        "load=$(loadavg)"
    done
  done
}

# A page no side has seen: the user's first page with a `limit` used by nothing else in the run.
step_stampede() {
  local round side before after result limit=10
  for round in $(seq 1 "$ROUNDS"); do
    for side in $(ordered "$round" varnish nginx-cache hotfeed-l1 hotfeed-redis hotfeed-pg); do
      limit=$((limit + 1))
      before=$(queries "${QUERIED[$side]}")
      result=$(python3 "$PEERS/probe.py" stampede "${URL[$side]}/api/v1/users/7/posts?limit=$limit" 200)
      sleep 0.5 # the backend's counters settle (a coalesced follower may still be answering)
      after=$(queries "${QUERIED[$side]}")
      record stampede "$round" "$side" "${result#STAMPEDE } backend_queries=$((after - before)) load=$(loadavg)"
    done
  done
}

step_fresh() {
  local round side result limit=60 author=5 reader followers
  # A reader of `author`'s posts in the seeded follow graph: their home feed shows the new post.
  reader=$(curl -fs "${URL[hotfeed-pg]}/api/v1/users/$author/followers?limit=1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
  followers=$(curl -fs "${URL[hotfeed-pg]}/api/v1/users/$author" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["followers_count"])')
  for round in $(seq 1 "$ROUNDS"); do
    for side in $(ordered "$round" varnish nginx-cache hotfeed-l1 hotfeed-redis hotfeed-pg); do
      limit=$((limit + 1))
      result=$(python3 "$PEERS/probe.py" fresh "${URL[$side]}/api/v1/users/$author/posts?limit=$limit" \
        "${URL[$side]}" "$author" "$FRESH_WAIT")
      record fresh "$round" "$side" "${result#FRESH } page=posts load=$(loadavg)"
      result=$(python3 "$PEERS/probe.py" fresh "${URL[$side]}/api/v1/users/$reader/feed?limit=$limit" \
        "${URL[$side]}" "$author" "$FRESH_WAIT")
      record fresh-feed "$round" "$side" "${result#FRESH } reader=$reader author_followers=$followers load=$(loadavg)"
    done
  done
}

step_stale() {
  local round side result
  for round in $(seq 1 "$ROUNDS"); do
    for side in $(ordered "$round" varnish nginx-cache hotfeed-l1 hotfeed-redis hotfeed-pg); do
      result=$(python3 "$PEERS/probe.py" stale "${URL[$side]}/api/v1/users/4/posts?limit=50" \
        "${URL[$side]}" 4 10 2 50)
      record stale "$round" "$side" "${result#STALE } load=$(loadavg)"
    done
  done
}

# loadgen_run ARGS...: loadgen's JSON report, as key=value pairs: rate, p99, its own CPU and verdict.
loadgen_run() {
  "$BIN/loadgen" --duration "$DURATION" --warmup 1s --json --quiet --seed 1 "$@" |
    python3 "$PEERS/probe.py" loadgen-report
}

step_client() {
  local round side path="/api/v1/users/1/posts?limit=50&offset=0"
  for round in $(seq 1 "$ROUNDS"); do
    for side in $(ordered "$round" nginx-file hotfeed-l1 hotfeed-redis); do
      warm "${URL[$side]}$path"
      record client "$round" "$side" "$(loadgen_run --url "${URL[$side]}" --user 1 --offsets 0=1 \
        --concurrency 16) $(wrk_run "$side" "$path" "$DURATION" | sed 's/\brps=/wrk_rps=/; s/p99_ms=/wrk_p99_ms=/') load=$(loadavg)"
    done
    record client-open "$round" hotfeed-l1 "rate=1000 $(loadgen_run --url "${URL[hotfeed-l1]}" --rate 1000) load=$(loadavg)"
    record client-open "$round" hotfeed-redis "rate=3000 $(loadgen_run --url "${URL[hotfeed-redis]}" --rate 3000) load=$(loadavg)"
  done
}

main() {
  mkdir -p "$OUT"
  install_tools
  build
  seed
  start_sides
  {
    echo "benches/peers.sh at $(git rev-parse --short HEAD) on $(nproc) cores, $(date -u +%FT%TZ)"
    echo "PEERS_ROUNDS=$ROUNDS PEERS_DURATION=$DURATION wrk -t$THREADS -c$CONNECTIONS TTL=${TTL}s"
    echo "varnish $(varnishd -V 2>&1 | head -n1), $(nginx -v 2>&1), $(wrk -v 2>&1 | head -n1)"
  } >"$OUT/setup.txt"
  : >"$OUT/results.tsv"
  local step
  for step in $STEPS; do
    log "step $step (load average $(loadavg))"
    "step_$step"
  done
  python3 "$PEERS/summary.py" "$OUT" | tee "$OUT/summary.md"
  log "results in $OUT"
}

main "$@"
