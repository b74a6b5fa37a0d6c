#!/usr/bin/env bash
# scripts/workshop.sh — the hot-partition story on the local stack, one step at a time, with the
# dashboard (http://localhost:8080/dashboard) open beside the terminal. docs/WORKSHOP.md is the
# participant's transcript of the same steps.
#
#   scripts/workshop.sh             every step, pausing before each (press Enter)
#   scripts/workshop.sh 3 4         only steps 3 and 4 (step 0, the service check, always runs)
#   scripts/workshop.sh --yes       no pauses (also WORKSHOP_AUTO=1): a short sleep instead
#
# Steps: 0 service check · 1 seed · 2 MISS then HIT · 3 Zipf load, the hot node · 4 kill a master
# under load · 5 cold start, coalescing · 6 the in-process tier (L1) · 7 home feed, fan-out ·
# 8 scale-out to a fourth master and back.
#
# Every wait has a timeout; Ctrl-C stops the background load and restarts a node step 4 killed.
# Re-running a step works: seeding is skipped when done, a node added by step 8 is reused.
#
# Environment:
#   HOTFEED_URL            the service (default http://localhost:8080), started by scripts/run.sh
#   WORKSHOP_AUTO=1        as --yes;  WORKSHOP_SLEEP  seconds between steps then (default 3)
#   LOADGEN, DATAGEN       the binaries (default target/release/…, else target/debug/…, else
#                          `cargo run --release -q -p …`)
#   STACK_REDIS_BASE_PORT  first Redis port (default 7000), as scripts/stack.sh
#   CACHE_KEY_PREFIX       the service's key prefix (default hf)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
cd "$REPO"

URL=${HOTFEED_URL:-http://localhost:8080}
URL=${URL%/}
AUTO=${WORKSHOP_AUTO:-0}
PAUSE_SLEEP=${WORKSHOP_SLEEP:-3}
BASE=${STACK_REDIS_BASE_PORT:-7000}
PREFIX=${CACHE_KEY_PREFIX:-hf}
STACK_DIR=${STACK_DIR:-$REPO/.stack}
NEW_PORT=$((BASE + 6))
NEW_DIR=$STACK_DIR/workshop/$NEW_PORT
SEED_USERS=200
SEED_POSTS=200000

LOAD_PID=""
KILLED_PORT=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotfeed-workshop.XXXXXX")
STEPS=()

# ---------------------------------------------------------------------------------------------
# Output and pacing

if [[ -t 1 ]]; then
  B=$'\e[1m' D=$'\e[2m' C=$'\e[36m' Y=$'\e[33m' R=$'\e[31m' G=$'\e[32m' N=$'\e[0m'
else
  B="" D="" C="" Y="" R="" G="" N=""
fi
title() { printf '\n%s━━ step %s: %s %s\n' "$B$C" "$1" "$2" "$N"; }
say() { printf '%s\n' "$*"; }
note() { printf '%s%s%s\n' "$D" "$*" "$N"; }
look() { printf '%s  dashboard ▸ %s%s\n' "$Y" "$*" "$N"; }
lesson() { printf '%s  why it matters ▸ %s%s\n' "$G" "$*" "$N"; }
warn() { printf '%swarning: %s%s\n' "$R" "$*" "$N" >&2; }
die() {
  printf '%sworkshop: %s%s\n' "$R" "$*" "$N" >&2
  exit 1
}

# Shows a command, then runs it (bounded by T seconds, default 60).
run() {
  printf '\n  %s$ %s%s\n' "$B" "$*" "$N"
  timeout "${T:-60}" bash -c "$*" || note "  (exit status $?)"
}

# Waits for Enter (at most 15 minutes), or sleeps briefly in auto mode or without a terminal.
pause() {
  if [[ $AUTO == 1 ]] || ! { true </dev/tty; } 2>/dev/null; then
    sleep "$PAUSE_SLEEP"
    return 0
  fi
  printf '\n%s[%s — press Enter]%s ' "$D" "$1" "$N"
  read -r -t 900 _ </dev/tty || printf '\n'
}

# ---------------------------------------------------------------------------------------------
# Tools

pick() { # NAME: prints the command that runs the workspace binary NAME
  if [[ -x target/release/$1 ]]; then
    printf '%s\n' "target/release/$1"
  elif [[ -x target/debug/$1 ]]; then
    printf '%s\n' "target/debug/$1"
  else
    printf '%s\n' "cargo run --release -q -p $1 --"
  fi
}
LOADGEN=${LOADGEN:-$(pick loadgen)}
DATAGEN=${DATAGEN:-$(pick datagen)}

rcli() {
  local port=$1
  shift
  timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>&1 | tr -d '\r'
}
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true; }
pretty() { if command -v jq >/dev/null 2>&1; then jq -c "$@"; else cat; fi; }

# Live masters of the cluster, one "port id first-slot" line each, from the first node that answers.
cluster_nodes() {
  local p out
  for ((p = BASE; p <= NEW_PORT; p++)); do
    out=$(rcli "$p" cluster nodes) && [[ $out == *myself* ]] && { printf '%s\n' "$out"; return 0; }
  done
  return 1
}
# "<master port> <replica port or ->" of the live master owning SLOT.
owner_of_slot() {
  cluster_nodes | awk -v slot="$1" '
    { split($2, a, "@"); split(a[1], hp, ":"); addr[$1] = hp[2] }
    $3 ~ /master/ && $3 !~ /fail/ {
      for (i = 9; i <= NF; i++) {
        if ($i ~ /^\[/) continue
        n = split($i, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1])
        if (slot + 0 >= lo + 0 && slot + 0 <= hi + 0) owner = $1
      }
    }
    $3 ~ /slave/ && $3 !~ /fail/ { rep[$4] = $1 }
    END { if (owner == "") exit 1; print addr[owner], (owner in rep ? addr[rep[owner]] : "-") }'
}
master_ports() { cluster_nodes | awk '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, "@"); split(a[1], hp, ":"); print hp[2] }' | sort -n; }
new_node_in_cluster() { cluster_nodes 2>/dev/null | grep -q "127.0.0.1:$NEW_PORT@"; }

# Starts loadgen in the background (arguments after --url), its report in $WORK/NAME.log.
load_bg() {
  local name=$1
  shift
  stop_load
  printf '\n  %s$ %s --url %s %s &%s\n' "$B" "$LOADGEN" "$URL" "$*" "$N"
  # shellcheck disable=SC2086 # LOADGEN may be "cargo run … --"
  $LOADGEN --url "$URL" "$@" --quiet >"$WORK/$name.log" 2>&1 &
  LOAD_PID=$!
}
# Waits (at most SECS) for the background loadgen, then prints its report's main lines.
load_wait() {
  local secs=$1 name=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
  done
  stop_load
  note "  loadgen report (excerpt):"
  grep -E '^(requests|latency|status|x-cache|x-feed|service|postgres|redis|  +127|walks|writes|feed|fan-out|hot outbox)' "$WORK/$name.log" | sed 's/^/    /' || tail -n 20 "$WORK/$name.log"
}
stop_load() {
  [[ -n $LOAD_PID ]] || return 0
  if kill -0 "$LOAD_PID" 2>/dev/null; then
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LOAD_PID" 2>/dev/null || true
  fi
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
}

restore_stack() {
  if new_node_in_cluster; then
    warn "127.0.0.1:$NEW_PORT (step 8) is still in the cluster: scripts/stack.sh up would see 7 nodes and recreate the cluster, so it is not run. Run 'scripts/workshop.sh 8' to remove the node, then 'scripts/stack.sh up'."
    return 1
  fi
  T=150 run "scripts/stack.sh up 2>&1 | grep -E '^stack: (starting|redis|cluster|up in)'"
}

cleanup() {
  local rc=$?
  stop_load
  if [[ -n $KILLED_PORT ]]; then
    say "restoring 127.0.0.1:$KILLED_PORT, killed in step 4"
    restore_stack || true
  fi
  if new_node_in_cluster; then
    note "127.0.0.1:$NEW_PORT is still a master of the cluster; 'scripts/workshop.sh 8' removes it."
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'printf "\ninterrupted\n"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Steps

step0() {
  title 0 "the service answers"
  run "curl -s --max-time 3 $URL/health | head -c 300; echo"
  if [[ $(http_code "$URL/health") != 200 ]]; then
    die "no healthy answer from $URL/health. Start the stack and the service in another terminal with scripts/run.sh (or set HOTFEED_URL), then run this again."
  fi
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli is missing: scripts/stack.sh up installs it"
  cluster_nodes >/dev/null || die "no Redis node answers on 127.0.0.1:$BASE..$((BASE + 5)) (scripts/stack.sh status)"
  if [[ $(http_code "$URL/dashboard") == 200 ]]; then
    look "open $URL/dashboard now and keep it beside this terminal"
  else
    warn "$URL/dashboard does not answer 200: this build does not serve the dashboard; follow the steps with curl and /metrics"
  fi
  note "loadgen: $LOADGEN   datagen: $DATAGEN"
}

step1() {
  title 1 "seed a small network: $SEED_USERS users, $SEED_POSTS posts, follows"
  if [[ $(http_code "$URL/api/v1/users/$SEED_USERS") == 200 && $(http_code "$URL/api/v1/users/$((SEED_USERS + 1))") == 404 ]]; then
    say "already seeded ($SEED_USERS users): skipping datagen."
    note "  (to seed again: $DATAGEN --users $SEED_USERS --posts $SEED_POSTS)"
  else
    say "datagen replaces every user, post and follow of the database in .env, and flushes the cache."
    T=600 run "$DATAGEN --users $SEED_USERS --posts $SEED_POSTS 2>/dev/null | head -n 12"
  fi
  run "curl -s $URL/api/v1/users/1 | $(command -v jq >/dev/null && echo "jq -c '{id, username, followers_count, following_count}'" || echo cat)"
  lesson "user k writes a 1/k share of the posts (Zipf): user 1 writes about a sixth, and is the most followed."
}

step2() {
  title 2 "a cache MISS, then a HIT"
  local slot owner
  slot=$(rcli "$BASE" cluster keyslot "$PREFIX:{user:1}:pages")
  read -r owner _ < <(owner_of_slot "$slot") || die "no master owns slot $slot"
  say "user 1's page keys share the hash tag {user:1}: slot $slot, on master 127.0.0.1:$owner."
  say "Forgetting them there (and waiting out the 1 s in-process tier) makes the next read a MISS:"
  run "redis-cli -p $owner --scan --pattern '$PREFIX:{user:1}:*' | while read -r k; do redis-cli -p $owner unlink \"\$k\" >/dev/null; done; sleep 1.2"
  run "time curl -si $URL/api/v1/users/1/posts | grep -iE '^(x-cache|server-timing)'"
  run "time curl -si $URL/api/v1/users/1/posts | grep -iE '^(x-cache|server-timing)'"
  look "pages/s ticks up; X-Cache shows one MISS and one HIT; PostgreSQL queries/s shows the one miss."
  lesson "a hit is two Redis round trips (the list from user 1's node, the posts from every node) and no SQL."
}

step3() {
  title 3 "Zipf load: one master gets hot"
  load_bg zipf --users "$SEED_USERS" --rate 300 --duration 20s
  look "within seconds one master card turns HOT (orange): the one holding user 1's pages. Commands/s per master spreads, round trips/s does not."
  sleep 10
  run "curl -s $URL/api/v1/admin/hot | $(command -v jq >/dev/null && echo "jq -c '.keys[:3][] | {key, kind, reads, node}'" || echo "head -c 600")"
  load_wait 40 zipf
  lesson "posts spread over all shards, but every page read starts at the owner of the user's list: hot users make hot partitions."
}

step4() {
  title 4 "kill the hot master under load"
  local slot line owner replica pid i t0
  slot=$(rcli "$BASE" cluster keyslot "$PREFIX:{user:1}:pages")
  run "redis-cli -c -p $BASE cluster keyslot '$PREFIX:{user:1}:pages'"
  run "redis-cli -p $BASE cluster nodes | awk '{print \$2, \$3, \$4, \$9, \$10}' | sort"
  line=$(owner_of_slot "$slot") || die "no live master owns slot $slot; restore the cluster with scripts/stack.sh up"
  read -r owner replica <<<"$line"
  [[ $replica != - ]] || die "master 127.0.0.1:$owner has no replica: nothing would take over (scripts/stack.sh up)"
  pid=$(rcli "$owner" info server | sed -n 's/^process_id://p')
  [[ $pid =~ ^[0-9]+$ ]] || die "cannot read the pid of 127.0.0.1:$owner"
  say "slot $slot is on 127.0.0.1:$owner (pid $pid); its replica is 127.0.0.1:$replica."
  load_bg kill --users "$SEED_USERS" --rate 300 --duration 30s
  sleep 5
  KILLED_PORT=$owner
  run "kill -9 $pid"
  look "the banner turns amber (Redis degraded), card $owner shows errors; then $replica becomes a master with its slots."
  t0=$SECONDS
  for ((i = 0; i < 60; i++)); do
    if rcli "$replica" info replication | grep -q '^role:master'; then
      say "127.0.0.1:$replica was promoted to master $((SECONDS - t0)) s after the kill."
      break
    fi
    sleep 0.5
  done
  run "curl -s $URL/health | $(command -v jq >/dev/null && echo "jq -c '.redis.status'" || echo cat)"
  load_wait 40 kill
  say "Every read answered meanwhile (status 200 above): the dead shard's pages came from PostgreSQL."
  say "Restoring the node: it rejoins as a replica of $replica."
  restore_stack && KILLED_PORT=""
  lesson "a Redis failure costs latency and PostgreSQL load, never a failed read; the replica takes over in ~4 s (cluster-node-timeout 2 s)."
}

step5() {
  title 5 "cold start: every key gone at once, and request coalescing"
  local p n
  run "curl -s $URL/metrics | grep -E '^coalesced_waits_total' || echo '(no coalesced waits yet)'"
  say "Deleting every $PREFIX:* key on each master (SCAN + UNLINK, one key per command: keys of a node span many slots):"
  for p in $(master_ports); do
    n=$(timeout 60 redis-cli -h 127.0.0.1 -p "$p" --scan --pattern "$PREFIX:*" | awk '{ printf "*2\r\n$6\r\nUNLINK\r\n$%d\r\n%s\r\n", length($0), $0 }' |
      timeout 60 redis-cli -h 127.0.0.1 -p "$p" --pipe 2>/dev/null | sed -n 's/.*replies: \([0-9]*\).*/\1/p')
    printf '  127.0.0.1:%s  %s keys unlinked\n' "$p" "${n:-0}"
  done
  note "  (per master: redis-cli -p PORT --scan --pattern '$PREFIX:*' | awk '{…UNLINK <key>…}' | redis-cli -p PORT --pipe)"
  sleep 1.2
  load_bg cold --users "$SEED_USERS" --rate 300 --duration 10s --warmup 0s
  look "MISS takes the X-Cache bar, PostgreSQL queries/s jumps, p99 rises, then HIT comes back within a few seconds."
  load_wait 30 cold
  run "curl -s $URL/metrics | grep -E '^coalesced_waits_total'"
  lesson "concurrent misses of one page wait for one PostgreSQL read (coalesced_waits_total) instead of each querying: 'queries per page' stays far below 1 during the stampede. Coalescing cannot be switched off; without it every one of those waits would have been a query."
}

step6() {
  title 6 "the in-process tier (L1)"
  run "for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%header{x-cache} ' $URL/api/v1/users/1/posts; done; echo"
  say "After a few reads in the window (L1_ADMIT_READS=4) the page is kept in the process: X-Cache: HIT-L1, no Redis at all."
  load_bg l1 --users "$SEED_USERS" --rate 300 --duration 15s
  look "HIT-L1 takes most of the X-Cache bar; the hot master's commands/s flattens toward the others; L1 bytes/entries grow; the invalidation channel is 'listening'."
  load_wait 30 l1
  say "To see the difference, restart the service yourself without the tier and run this step again:"
  printf '\n  %s$ L1=off scripts/run.sh%s      %s# or: scripts/run.sh --l1 off%s\n' "$B" "$N" "$D" "$N"
  lesson "the hottest pages never leave the process: the hot shard is relieved without more shards; a write's invalidation reaches every instance through the channel, and L1_TTL_MS bounds staleness if a message is lost."
}

step7() {
  title 7 "the home feed: fan-out on write, celebrity outboxes"
  run "curl -si $URL/api/v1/users/70/feed | grep -iE '^(x-cache|x-feed-source)'"
  run "curl -si $URL/api/v1/users/70/feed | grep -iE '^(x-cache|x-feed-source)'"
  say "Readers walk their feeds by cursor while authors post (the admin key in .env lets loadgen write as them):"
  load_bg feed --endpoint feed --users "$SEED_USERS" --depths 1=80,2=10,5=5,20=5 --rate 50 --write-rate 5 --duration 15s
  look "fan-out lag p99 and fan-outs/s move; the hottest keys may include inboxes; the node holding the most followed user's keys leads commands/s."
  load_wait 40 feed
  note "  With $SEED_USERS users nobody reaches FEED_CELEBRITY_FOLLOWERS (1,000), so every post is pushed."
  note "  To see user 1's outbox pulled by every reader (the hot outbox), restart with: FEED_CELEBRITY_FOLLOWERS=50 scripts/run.sh"
  lesson "pushing a post costs one write per follower; for a celebrity that is millions, so readers pull their outbox instead, which makes the outbox a hot key."
}

start_new_node() {
  local state
  state=$(rcli "$NEW_PORT" ping || true)   # refused until it is started
  if [[ $state == PONG ]]; then
    [[ $(rcli "$NEW_PORT" info server | sed -n 's/^config_file://p') == "$NEW_DIR/redis.conf" ]] ||
      die "port $NEW_PORT is taken by a Redis this workshop did not start"
    return 0
  fi
  rm -rf "$NEW_DIR"
  mkdir -p "$NEW_DIR"
  # The options of scripts/stack.sh's nodes.
  cat >"$NEW_DIR/redis.conf" <<EOF
port $NEW_PORT
bind 127.0.0.1
protected-mode no
daemonize yes
dir "$NEW_DIR"
pidfile "$NEW_DIR/redis.pid"
logfile "$NEW_DIR/redis.log"
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
cluster-require-full-coverage no
cluster-allow-reads-when-down yes
save ""
appendonly no
maxmemory ${STACK_REDIS_MAXMEMORY:-256mb}
maxmemory-policy allkeys-lfu
repl-diskless-sync-delay 0
EOF
  run "redis-server $NEW_DIR/redis.conf"
  for _ in $(seq 50); do [[ $(rcli "$NEW_PORT" ping) == PONG ]] && return 0; sleep 0.2; done
  die "127.0.0.1:$NEW_PORT did not start (log: $NEW_DIR/redis.log)"
}

remove_new_node() {
  local id
  id=$(rcli "$NEW_PORT" cluster myid)
  [[ $id =~ ^[0-9a-f]{40}$ ]] || { warn "cannot read the id of 127.0.0.1:$NEW_PORT"; return 1; }
  say "Moving every slot off 127.0.0.1:$NEW_PORT (weight 0), then removing it from the cluster:"
  T=600 run "redis-cli --cluster rebalance 127.0.0.1:$BASE --cluster-weight $id=0 </dev/null | grep -E '^(>>>|Moving [0-9]+ slots)'"
  T=60 run "redis-cli --cluster del-node 127.0.0.1:$BASE $id </dev/null | tail -n 3"
  for _ in $(seq 25); do [[ $(rcli "$NEW_PORT" ping) == PONG ]] || break; sleep 0.2; done
  if [[ $(rcli "$NEW_PORT" ping) == PONG ]]; then rcli "$NEW_PORT" shutdown nosave >/dev/null || true; fi
  rm -rf "$NEW_DIR"
}

step8() {
  title 8 "scale out: a fourth master on $NEW_PORT, slots moving under load"
  start_new_node
  if new_node_in_cluster; then
    say "127.0.0.1:$NEW_PORT is already in the cluster (an earlier run): reusing it."
  else
    T=60 run "redis-cli --cluster add-node 127.0.0.1:$NEW_PORT 127.0.0.1:$BASE </dev/null | tail -n 2"
    for _ in $(seq 50); do new_node_in_cluster && break; sleep 0.2; done
    sleep 2 # let gossip tell every node
  fi
  load_bg scale --users "$SEED_USERS" --rate 300 --duration 60s
  look "a fourth master card with no slots, then its slot strip fills as rebalance moves about a quarter of the slots to it; commands/s follows the slots."
  T=600 run "redis-cli --cluster rebalance 127.0.0.1:$BASE --cluster-use-empty-masters </dev/null | grep -E '^(>>>|Moving [0-9]+ slots)'"
  run "redis-cli -p $NEW_PORT cluster nodes | awk '/myself/ {print \$2, \$3, \$9, \$10, \$11}'"
  load_wait 70 scale
  lesson "slots move key by key (MIGRATE, with ASK redirects meanwhile); the client follows MOVED and the service never stops. A new master has no replica until you add one."
  local answer=y
  if [[ $AUTO != 1 ]] && { true </dev/tty; } 2>/dev/null; then
    printf '\n%sRemove 127.0.0.1:%s again (move its slots back, del-node)? [Y/n]%s ' "$D" "$NEW_PORT" "$N"
    read -r -t 300 answer </dev/tty || answer=y
  fi
  case ${answer:-y} in
    [nN]*) note "  Left in place. Remove it before any 'scripts/stack.sh up': with 7 nodes it would recreate the cluster. 'scripts/workshop.sh 8' removes it." ;;
    *) remove_new_node ;;
  esac
}

# ---------------------------------------------------------------------------------------------

main() {
  while (($#)); do
    case $1 in
      --yes | -y) AUTO=1 ;;
      -h | --help)
        sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0 ;;
      [0-8]) STEPS+=("$1") ;;
      *) die "unknown argument '$1' (steps are 0-8; --yes; --help)" ;;
    esac
    shift
  done
  ((${#STEPS[@]} > 0)) || STEPS=(1 2 3 4 5 6 7 8)
  step0
  local s
  for s in "${STEPS[@]}"; do
    [[ $s == 0 ]] && continue
    pause "next: step $s"
    "step$s"
  done
  printf '\n%sdone.%s\n' "$B" "$N"
}

main "$@"
