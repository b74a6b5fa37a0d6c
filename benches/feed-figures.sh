#!/usr/bin/env bash
# benches/feed-figures.sh — the home-feed figures of docs/benchmarks.md (section 10), end to end.
#
#   benches/feed-figures.sh [seed|pages|fanout|hot|demo|clean]...   (default: seed pages fanout hot clean)
#
# seed    creates FEED_DATABASE (hotfeed_feedbench) on the server of DATABASE_URL and seeds it with
#         `datagen --profile feed` (100,000 users, 2,000,000 posts, 5,000,000 Zipf-popular follows),
#         timed; skipped when it already holds that profile (FEED_RESEED=1 seeds again).
# pages   a feed page from the cache (FEED_PORT, FEED_CELEBRITY_FOLLOWERS at the service's default)
#         vs PostgreSQL alone (FEED_PORT+1, CACHE=off): first pages and the page after a fixed deep
#         cursor (the position of post FEED_DEEP_POST, 100,000 posts back), Zipf readers over the
#         100,000 users; closed loop (FEED_CONCURRENCY) and open loop (FEED_RATE, FEED_DEEP_RATE).
#         The cache is filled first by a longer run with the same seed, so the measured runs'
#         readers have their inboxes (the HIT column says how many did).
# fanout  for authors of 10, 1,000 and about 10,000 followers: one instance pushes their posts
#         (FEED_CELEBRITY_FOLLOWERS = F + 1) and one pulls them (= F); one writer posts as the author
#         (one post in flight): the first post alone, 1 s left out, then FEED_WRITE_SECS measured,
#         with every follower's inbox absent, then built (before each repetition); then a reader
#         following the author reads its first page, closed loop, on both.
# hot     Zipf feed reads (first pages) with --write-rate FEED_WRITE_RATE on the cache instance:
#         the share of Redis commands, and of each master's CPU (INFO cpu), of the node holding the
#         most followed account's outbox.
# demo    README step 4 on its own database (FEED_DEMO_DATABASE, plain `datagen` defaults).
# clean   unlinks every key under FEED_PREFIX: on the cluster's masters and drops the databases
#         (unless KEEP=1).
#
# Every load measurement runs under `flock $BENCH_LOCK` (the machine is shared with other
# benchmarks); each side of a comparison is measured FEED_REPEAT (3) times, sides alternating and
# taking turns to go first, and every report is kept as JSON in FEED_OUT
# (target/feed-bench/<time>) with commands.log, loadavg.log and summary.md (medians). The figures
# and their reading: docs/benchmarks.md, comparison 10. About 45 minutes on the 2-core machine.
#
# Environment: DATABASE_URL, REDIS_URLS, ADMIN_API_KEY (else .env; a random admin key if none),
# FEED_DATABASE, FEED_DEMO_DATABASE, FEED_PORT
# (18190; uses FEED_PORT..FEED_PORT+4), FEED_PREFIX (fbench), FEED_REPEAT, FEED_DURATION (8s),
# FEED_WARMUP (2s), FEED_FILL (30s), FEED_CONCURRENCY (16), FEED_RATE (100), FEED_DEEP_RATE (100),
# FEED_DEEP_POST (1900000), FEED_WRITE_SECS (8), FEED_WRITE_RATE (5), FEED_FANOUT ("F:author:reader
# ..." to override the authors found), FEED_BIN (prebuilt binaries; else cargo build --release),
# BENCH_LOCK (/tmp/hotfeed-bench.lock), KEEP. Needs curl, jq, psql, redis-cli, python3, flock.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

# shellcheck source=scripts/lib/bench.sh disable=SC1091
. "$ROOT/scripts/lib/bench.sh"

DATABASE_URL=$(env_or_dotenv DATABASE_URL)
REDIS_URLS=$(env_or_dotenv REDIS_URLS)
# Writes need a key: the admin key acts as any user and is not rate limited. The instances here get
# the one of the environment or .env, else one made up for this run; the writer and loadgen send it.
ADMIN_API_KEY=$(env_or_dotenv ADMIN_API_KEY)
[[ -n $ADMIN_API_KEY ]] || ADMIN_API_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export ADMIN_API_KEY
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/hotfeed}"
: "${REDIS_URLS:=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002}"
FEED_DATABASE=${FEED_DATABASE:-hotfeed_feedbench}
FEED_DEMO_DATABASE=${FEED_DEMO_DATABASE:-hotfeed_feeddemo}
FEED_PORT=${FEED_PORT:-18190}
FEED_PREFIX=${FEED_PREFIX:-fbench}
FEED_REPEAT=${FEED_REPEAT:-3}
FEED_DURATION=${FEED_DURATION:-8s}
FEED_WARMUP=${FEED_WARMUP:-2s}
FEED_FILL=${FEED_FILL:-30s}
FEED_CONCURRENCY=${FEED_CONCURRENCY:-16}
FEED_RATE=${FEED_RATE:-100}
FEED_DEEP_RATE=${FEED_DEEP_RATE:-100}
FEED_DEEP_POST=${FEED_DEEP_POST:-1900000}
FEED_WRITE_SECS=${FEED_WRITE_SECS:-8}
FEED_WRITE_RATE=${FEED_WRITE_RATE:-5}
FEED_OUT=${FEED_OUT:-$ROOT/target/feed-bench/$(date -u +%Y%m%dT%H%M%SZ)}
BENCH_LOCK=${BENCH_LOCK:-/tmp/hotfeed-bench.lock}
USERS=100000

BENCH_URL="${DATABASE_URL%/*}/$FEED_DATABASE"
DEMO_URL="${DATABASE_URL%/*}/$FEED_DEMO_DATABASE"
ON_URL="http://127.0.0.1:$FEED_PORT"
OFF_URL="http://127.0.0.1:$((FEED_PORT + 1))"
PUSH_URL="http://127.0.0.1:$((FEED_PORT + 2))"
PULL_URL="http://127.0.0.1:$((FEED_PORT + 3))"
DEMO_PORT=$((FEED_PORT + 4))
HELPER=$ROOT/benches/feed-figures.py
declare -A PID_OF=()

log() { printf 'feed-bench: %s\n' "$*" >&2; }
die() {
  printf 'feed-bench: error: %s\n' "$*" >&2
  exit 1
}

stop() {
  local name=$1 pid=${PID_OF[$1]:-}
  [[ -n $pid ]] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID_OF[$name]"
}

cleanup() {
  local name
  for name in "${!PID_OF[@]}"; do stop "$name"; done
}
trap cleanup EXIT

mkdir -p "$FEED_OUT/bin"
if [[ -n ${FEED_BIN:-} ]]; then
  BIN=$FEED_BIN
else
  log "building release binaries (hotfeed, loadgen, datagen)"
  cargo build --release -p hotfeed -p loadgen -p datagen
  BIN=$ROOT/target/release
fi
# Copies under names of their own: a concurrent build cannot swap them mid-run, and tools that
# stop "hotfeed" processes leave these alone.
cp "$BIN/hotfeed" "$FEED_OUT/bin/hotfeed-fbench"
cp "$BIN/loadgen" "$BIN/datagen" "$FEED_OUT/bin/"
BIN=$FEED_OUT/bin
git -C "$ROOT" log -1 --format='%H %cI %s' >"$FEED_OUT/commit.txt" 2>/dev/null || true

locked() { flock "$BENCH_LOCK" "$@"; }
sql() { psql -X -q -tA "$BENCH_URL" -c "$1"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME PORT CACHE PREFIX THRESHOLD DATABASE_URL: one release instance, logs in FEED_OUT.
start() {
  local name=$1 port=$2 cache=$3 prefix=$4 threshold=$5 db=$6 tries=0
  port_free "$port" || die "port $port is in use (set FEED_PORT)"
  DATABASE_URL=$db REDIS_URLS=$REDIS_URLS CACHE=$cache CACHE_KEY_PREFIX=$prefix \
    APP_HOST=127.0.0.1 APP_PORT=$port RUST_LOG=warn NO_MIGRATE=true \
    FEED_CELEBRITY_FOLLOWERS=$threshold FEED_BOX_TTL_SECS=7200 \
    "$BIN/hotfeed-fbench" serve >>"$FEED_OUT/$name.log" 2>&1 &
  PID_OF[$name]=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$port/ping"; do
    tries=$((tries + 1))
    ((tries < 100)) || die "$name did not answer within 20 s (see $FEED_OUT/$name.log)"
    sleep 0.2
  done
  log "$name on :$port (CACHE=$cache, prefix $prefix, FEED_CELEBRITY_FOLLOWERS=$threshold)"
}

# in_order REP A B: "A B" on odd repetitions, "B A" on even ones, so neither side always goes first.
in_order() { if (($1 % 2)); then echo "$2 $3"; else echo "$3 $2"; fi; }

# load NAME URL loadgen-args...: one loadgen run under the lock, its JSON report kept as NAME.json.
load() {
  local name=$1 url=$2
  shift 2
  log "run $name"
  printf '%s %s\n' "$name" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$FEED_OUT/loadavg.log"
  locked "$BIN/loadgen" --url "$url" --duration "$FEED_DURATION" --warmup "$FEED_WARMUP" \
    --json --quiet --seed 1 "$@" >"$FEED_OUT/$name.json"
  printf 'loadgen --url %s --duration %s --warmup %s --seed 1 %s\n' "$url" "$FEED_DURATION" \
    "$FEED_WARMUP" "$*" >>"$FEED_OUT/commands.log"
}

# write NAME URL AUTHOR: one writer posting as AUTHOR for FEED_WRITE_SECS, under the lock.
write() {
  local name=$1 url=$2 author=$3
  log "run $name"
  printf '%s %s\n' "$name" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$FEED_OUT/loadavg.log"
  locked python3 "$HELPER" write "$url" "$author" "$FEED_WRITE_SECS" "$FEED_OUT/$name.json"
  printf 'feed-figures.py write %s %s %s\n' "$url" "$author" "$FEED_WRITE_SECS" >>"$FEED_OUT/commands.log"
}

masters() {
  local seed=${REDIS_URLS%%,*}
  seed=${seed#redis://}
  redis-cli -h "${seed%:*}" -p "${seed##*:}" cluster nodes |
    awk '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, "@"); print a[1] }'
}

# count_keys PATTERN: keys matching PATTERN over the masters.
count_keys() {
  local node total=0 n
  for node in $(masters); do
    n=$(redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "$1" | wc -l)
    total=$((total + n))
  done
  echo "$total"
}

# unlink_keys PATTERN: one UNLINK per key, on the master that holds it.
unlink_keys() {
  local node
  for node in $(masters); do
    redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "$1" |
      awk '{ print "UNLINK " $0 }' | redis-cli -h "${node%:*}" -p "${node##*:}" >/dev/null
  done
}

seed() {
  psql -X -q "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$FEED_DATABASE'" | grep -q 1 ||
    psql -X -q "$DATABASE_URL" -c "CREATE DATABASE \"$FEED_DATABASE\""
  # A database seeded by an older version gets the newer migrations (the instances run NO_MIGRATE).
  "$BIN/hotfeed-fbench" migrate --database-url "$BENCH_URL"
  local have
  have=$(sql "SELECT (SELECT count(*) FROM users) || ' ' || (SELECT count(*) FROM posts) || ' ' || (SELECT count(*) FROM follows)" 2>/dev/null || true)
  if [[ ${FEED_RESEED:-0} != 1 && $have == "100000 2000000 5"?????? ]]; then
    log "$FEED_DATABASE already holds the feed profile ($have); not seeding again"
    return
  fi
  log "seeding $FEED_DATABASE: datagen --profile feed (timed, under the lock)"
  locked /usr/bin/time -o "$FEED_OUT/datagen-feed.time" -f '%e' \
    "$BIN/datagen" --profile feed --database-url "$BENCH_URL" --redis-urls "$REDIS_URLS" \
    --cache-key-prefix "$FEED_PREFIX" | tee "$FEED_OUT/datagen-feed.txt"
  printf 'datagen --profile feed: %s s wall, from start to exit (load average after: %s)\n' \
    "$(cat "$FEED_OUT/datagen-feed.time")" "$(cut -d' ' -f1-3 /proc/loadavg)" |
    tee -a "$FEED_OUT/datagen-feed.txt"
  sql "VACUUM ANALYZE"
}

ensure_pages_instances() {
  [[ -n ${PID_OF[on]:-} ]] || start on "$FEED_PORT" on "$FEED_PREFIX:on" 1000 "$BENCH_URL"
  [[ -n ${PID_OF[off]:-} ]] || start off $((FEED_PORT + 1)) off "$FEED_PREFIX:off" 1000 "$BENCH_URL"
}

# The runs' readers get their inboxes (and the outboxes they pull) before anything is measured:
# the same seed draws the same readers, so a longer run of each kind visits them all.
fill() {
  [[ -z ${FILLED:-} ]] || return 0
  log "filling the cache: the measured runs' readers, closed and open loop ($FEED_FILL each)"
  local args=(--url "$ON_URL" --endpoint feed --users $USERS --json --quiet --seed 1 --warmup "$FEED_WARMUP")
  locked "$BIN/loadgen" "${args[@]}" --duration "$FEED_FILL" --concurrency "$FEED_CONCURRENCY" >"$FEED_OUT/fill-closed.json"
  locked "$BIN/loadgen" "${args[@]}" --duration "$FEED_FILL" --rate "$FEED_RATE" >"$FEED_OUT/fill-open.json"
  python3 "$HELPER" settle "$ON_URL" >/dev/null
  log "fill: HIT $(jq .x_cache_share.HIT "$FEED_OUT/fill-closed.json") (closed), $(jq .x_cache_share.HIT "$FEED_OUT/fill-open.json") (open); inboxes $(count_keys "$FEED_PREFIX:on:*:inbox")"
  FILLED=1
}

pages() {
  ensure_pages_instances
  local micros cursor rep
  micros=$(sql "SELECT (extract(epoch FROM created_at) * 1000000)::bigint FROM posts WHERE id = $FEED_DEEP_POST")
  cursor=$(python3 "$HELPER" cursor "$micros" "$FEED_DEEP_POST")
  echo "$cursor" >"$FEED_OUT/deep-cursor.txt"
  log "deep cursor: just after post $FEED_DEEP_POST ($cursor)"
  fill
  local feed=(--endpoint feed --users $USERS) side url
  for rep in $(seq "$FEED_REPEAT"); do
    for side in $(in_order "$rep" on off); do
      url=$ON_URL
      [[ $side == on ]] || url=$OFF_URL
      load "pages-max-first__cache-${side}__r$rep" "$url" "${feed[@]}" --concurrency "$FEED_CONCURRENCY"
    done
    for side in $(in_order "$rep" on off); do
      url=$ON_URL
      [[ $side == on ]] || url=$OFF_URL
      load "pages-max-deep__cache-${side}__r$rep" "$url" "${feed[@]}" --cursor "$cursor" --concurrency "$FEED_CONCURRENCY"
    done
    for side in $(in_order "$rep" on off); do
      url=$ON_URL
      [[ $side == on ]] || url=$OFF_URL
      load "pages-rate-first__cache-${side}__r$rep" "$url" "${feed[@]}" --rate "$FEED_RATE"
    done
    for side in $(in_order "$rep" on off); do
      url=$ON_URL
      [[ $side == on ]] || url=$OFF_URL
      load "pages-rate-deep__cache-${side}__r$rep" "$url" "${feed[@]}" --cursor "$cursor" --rate "$FEED_DEEP_RATE"
    done
  done
}

# The authors of figure 3: the lowest ids with exactly 10 and 1,000 followers and the one closest
# to 10,000; for each, the lowest-id follower who follows 50 accounts (the profile's mean).
fanout_specs() {
  if [[ -n ${FEED_FANOUT:-} ]]; then
    echo "$FEED_FANOUT"
    return
  fi
  local target author followers reader
  for target in 10 1000 10000; do
    read -r author followers < <(sql "SELECT id, followers_count FROM users ORDER BY abs(followers_count - $target), id LIMIT 1" | tr '|' ' ')
    reader=$(sql "SELECT min(f.follower_id) FROM follows f JOIN users u ON u.id = f.follower_id WHERE f.followee_id = $author AND u.following_count = 50")
    printf '%s:%s:%s ' "$followers" "$author" "$reader"
  done
  echo
}

# build_inboxes URL PREFIX AUTHOR: every follower's inbox (and the author's), by reading each feed
# once (a MISS that starts the rebuild), until all exist.
build_inboxes() {
  local url=$1 prefix=$2 author=$3 want have attempt
  want=$(($(sql "SELECT count(*) FROM follows WHERE followee_id = $author") + 1))
  for attempt in 1 2 3; do
    have=$(count_keys "$prefix:{user:*}:inbox")
    ((have < want)) || break
    log "building inboxes of $author's followers on $url: $have of $want (pass $attempt)"
    { echo "$author"; sql "SELECT follower_id FROM follows WHERE followee_id = $author"; } |
      locked xargs -P 4 -I{} curl -s -o /dev/null "$url/api/v1/users/{}/feed?limit=1"
    python3 "$HELPER" settle "$url" >/dev/null
  done
  have=$(count_keys "$prefix:{user:*}:inbox")
  log "inboxes on $url: $have (of $want wanted)"
  echo "$have"
}

fanout() {
  local spec followers author reader rep push_prefix pull_prefix side url
  local specs
  specs=$(fanout_specs)
  echo "$specs" >"$FEED_OUT/fanout-specs.txt"
  log "fan-out authors (followers:author:reader): $specs"
  for spec in $specs; do
    IFS=: read -r followers author reader <<<"$spec"
    push_prefix="$FEED_PREFIX:push$followers"
    pull_prefix="$FEED_PREFIX:pull$followers"
    unlink_keys "$push_prefix:*"
    unlink_keys "$pull_prefix:*"
    start "push$followers" $((FEED_PORT + 2)) on "$push_prefix" $((followers + 1)) "$BENCH_URL"
    start "pull$followers" $((FEED_PORT + 3)) on "$pull_prefix" "$followers" "$BENCH_URL"
    # Push with no inbox to append to (Twitter's RPUSHX case: readers gone for an hour).
    for rep in $(seq "$FEED_REPEAT"); do
      write "fanout-F$followers-write__push-absent__r$rep" "$PUSH_URL" "$author"
    done
    build_inboxes "$PUSH_URL" "$push_prefix" "$author" >"$FEED_OUT/fanout-F$followers-inboxes.txt"
    curl -s -o /dev/null "$PULL_URL/api/v1/users/$reader/feed"
    python3 "$HELPER" settle "$PULL_URL" >/dev/null
    curl -s -o /dev/null "$PULL_URL/api/v1/users/$reader/feed"
    python3 "$HELPER" settle "$PULL_URL" >/dev/null
    for rep in $(seq "$FEED_REPEAT"); do
      build_inboxes "$PUSH_URL" "$push_prefix" "$author" >>"$FEED_OUT/fanout-F$followers-inboxes.txt"
      for side in $(in_order "$rep" push pull); do
        if [[ $side == push ]]; then
          write "fanout-F$followers-write__push-built__r$rep" "$PUSH_URL" "$author"
        else
          write "fanout-F$followers-write__pull__r$rep" "$PULL_URL" "$author"
        fi
      done
      for side in $(in_order "$rep" push pull); do
        url=$PUSH_URL
        [[ $side == push ]] || url=$PULL_URL
        load "fanout-F$followers-read__read-${side}__r$rep" "$url" --endpoint feed --user "$reader" --concurrency "$FEED_CONCURRENCY"
      done
    done
    stop "push$followers"
    stop "pull$followers"
    unlink_keys "$push_prefix:*"
    unlink_keys "$pull_prefix:*"
  done
}

# Also the CPU each master used during each run (INFO cpu before and after): a command is not a
# unit of work (an outbox READ returns 51 entries, a GET one value). Other clients of the cluster
# count too; the lock keeps the other benchmarks out, not every client.
hot() {
  ensure_pages_instances
  fill
  local rep name nodes
  nodes=$(masters)
  for rep in $(seq "$FEED_REPEAT"); do
    name="hot__cache-on-writes${FEED_WRITE_RATE}__r$rep"
    python3 "$HELPER" redis-cpu $nodes >"$FEED_OUT/$name.cpu-before"
    load "$name" "$ON_URL" --endpoint feed --users $USERS \
      --concurrency "$FEED_CONCURRENCY" --write-rate "$FEED_WRITE_RATE" --redis-urls "$REDIS_URLS"
    python3 "$HELPER" redis-cpu $nodes >"$FEED_OUT/$name.cpu-after"
    jq -n --slurpfile b "$FEED_OUT/$name.cpu-before" --slurpfile a "$FEED_OUT/$name.cpu-after" \
      --arg hot "$(jq -r .hot_outbox.node "$FEED_OUT/$name.json")" \
      '{hot_node: $hot, delta: ($a[0] | with_entries(.value -= $b[0][.key]))}' >"$FEED_OUT/$name.cpu.json"
  done
}

# README step 4, on a database of its own seeded with datagen's defaults (the demo profile): user
# 70's feed read twice (MISS, then HIT) and the authors of its first page; then on which master
# each of that page's post objects lives under the demo's default prefix (hf:post:<id>).
demo() {
  psql -X -q "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$FEED_DEMO_DATABASE'" | grep -q 1 ||
    psql -X -q "$DATABASE_URL" -c "CREATE DATABASE \"$FEED_DEMO_DATABASE\""
  "$BIN/hotfeed-fbench" migrate --database-url "$DEMO_URL"
  locked "$BIN/datagen" --database-url "$DEMO_URL" --redis-urls "$REDIS_URLS" \
    --cache-key-prefix "$FEED_PREFIX:demo" | tee "$FEED_OUT/datagen-demo.txt"
  start demo "$DEMO_PORT" on "$FEED_PREFIX:demo" 1000 "$DEMO_URL"
  local base="http://127.0.0.1:$DEMO_PORT" user=70 id seed=${REDIS_URLS%%,*}
  seed=${seed#redis://}
  {
    curl -s "$base/api/v1/users/$user" | jq -c '{id, following_count}'
    curl -si "$base/api/v1/users/$user/feed" | grep -iE '^(x-cache|x-feed-source)'
    sleep 0.5
    curl -si "$base/api/v1/users/$user/feed" | grep -iE '^(x-cache|x-feed-source)'
    curl -s "$base/api/v1/users/$user/feed" | jq -c '[.data[].user_id] | group_by(.) | map([.[0], length])'
    for id in $(curl -s "$base/api/v1/users/$user/feed" | jq -r '.data[].id'); do
      redis-cli -h "${seed%:*}" -p "${seed##*:}" cluster keyslot "hf:post:$id"
    done | awk '{ n[$1 <= 5460 ? 0 : $1 <= 10922 ? 1 : 2]++ }
      END { printf "post objects in slots 0-5460, 5461-10922, 10923-16383 (the three masters of scripts/stack.sh): %d %d %d\n", n[0], n[1], n[2] }'
  } | tee "$FEED_OUT/demo.txt"
  stop demo
}

clean() {
  log "unlinking $FEED_PREFIX:* and dropping the databases (KEEP=1 keeps them)"
  unlink_keys "$FEED_PREFIX:*"
  if [[ ${KEEP:-0} != 1 ]]; then
    psql -X -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$FEED_DATABASE\""
    psql -X -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$FEED_DEMO_DATABASE\""
  fi
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(seed pages fanout hot clean)
log "reports in $FEED_OUT"
for step in "${steps[@]}"; do
  case $step in
    seed) seed ;;
    pages) pages ;;
    fanout) fanout ;;
    hot) hot ;;
    demo) demo ;;
    clean) cleanup; clean ;;
    *) die "unknown step $step (seed, pages, fanout, hot, demo, clean)" ;;
  esac
done
python3 "$HELPER" summary "$FEED_OUT" | tee "$FEED_OUT/summary.md"
