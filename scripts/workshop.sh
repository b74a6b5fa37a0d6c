#!/usr/bin/env bash
# scripts/workshop.sh — the hot-partition story on the local stack, one step at a time, with the
# dashboard (http://localhost:8080/dashboard) open beside the terminal. docs/WORKSHOP.md is the
# participant's transcript of the same steps.
#
#   scripts/workshop.sh             every step, pausing before each (press Enter)
#   scripts/workshop.sh 3 4         only steps 3 and 4 (step 0, the service check, always runs)
#   scripts/workshop.sh --yes       no pauses (also WORKSHOP_AUTO=1): a short sleep instead
#   scripts/workshop.sh --quick     shorter loads at 100 reads/s and a smaller seed (CI, debug builds)
#
# Steps: 0 service check · 1 seed · 2 MISS then HIT · 3 Zipf load, the hot node · 4 kill a master
# under load · 5 cold start, coalescing · 6 the in-process tier (L1) · 7 home feed, fan-out ·
# 8 scale-out to a fourth master and back · 9 (only when asked: `scripts/workshop.sh 9`) three
# instances, one load balancer, restart them all.
#
# The stack is left as it was found: 3 masters (the same ones), 3 replicas in sync, all 16384
# slots served, no slot half moved, no fourth node. Every cluster operation (redis-cli --cluster,
# CLUSTER FAILOVER, scripts/stack.sh up) is checked: on a failure the script shows redis-cli's own
# error lines and the state of the cluster, restores the stack with `scripts/stack.sh up` (which
# repairs open slots and removes the fourth node) and exits non-zero. Ctrl-C at any step does the
# same restoring. A node that still owns slots is never shut down. Every wait has a timeout.
# Re-running a step works: seeding is skipped when done, a node added by step 8 is reused.
#
# Exit status: 0 done; 1 a step or a cluster operation failed; 3 done, but some reads of the
# background load were not answered 200 (each load's report says which); 130 interrupted.
#
# Environment:
#   HOTFEED_URL            the service (default http://localhost:8080), started by scripts/run.sh
#   WORKSHOP_AUTO=1        as --yes;  WORKSHOP_SLEEP  seconds between steps then (default 3)
#   WORKSHOP_QUICK=1       as --quick;  WORKSHOP_RATE  reads/s of the background loads (300; quick 100)
#   WORKSHOP_LOG_DIR       where loadgen's reports and redis-cli's output are kept
#                          (default $STACK_DIR/workshop/logs, emptied at each run)
#   LOADGEN, DATAGEN,      the binaries (default target/release/…, else target/debug/…, else
#   HOTFEED (step 9)       `cargo run --release -q -p …`)
#   STACK_REDIS_BASE_PORT  first Redis port (default 7000), as scripts/stack.sh; STACK_DIR too
#   CACHE_KEY_PREFIX       the service's key prefix (default hf)
#   WORKSHOP_FLEET_PORT    step 9: HAProxy's port; the instances take the next three, its stats the
#                          fourth (default 8090: 8090-8094)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
cd "$REPO"
# shellcheck source=scripts/lib/cluster.sh disable=SC1091
. "$SCRIPT_DIR/lib/cluster.sh"

URL=${HOTFEED_URL:-http://localhost:8080}
URL=${URL%/}
AUTO=${WORKSHOP_AUTO:-0}
QUICK=${WORKSHOP_QUICK:-0}
PAUSE_SLEEP=${WORKSHOP_SLEEP:-3}
BASE=${STACK_REDIS_BASE_PORT:-7000}
PREFIX=${CACHE_KEY_PREFIX:-hf}
STACK_DIR=${STACK_DIR:-$REPO/.stack}
PORTS=()
for ((i = 0; i < 6; i++)); do PORTS+=($((BASE + i))); done
NEW_PORT=$((BASE + 6))
FLEET_BASE=${WORKSHOP_FLEET_PORT:-8090}
NEW_DIR=$STACK_DIR/workshop/$NEW_PORT
SEED_USERS=200
SEED_POSTS=200000

LOAD_PID=""
KILLED_PORT=""
STEP=""                # the step running, for messages
STEP8=""               # adding | added | removing | kept: where step 8 is with the fourth node
MASTERS_AT_START=""    # the masters step 0 found, given their role back at the end
READ_FAILURES=()       # loads whose reads were not all answered 200
LOAD_OK=""             # whether the last load's reads were all answered 200
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

# Shows a command, then runs it (bounded by T seconds, default 60). For demonstrations only: a
# failure is shown and the story goes on. Cluster operations go through cluster_step instead.
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
HOTFEED=${HOTFEED:-$(pick hotfeed)}
DATAGEN=${DATAGEN:-$(pick datagen)}

# What steps 2 and 7 print of a response, always in this order.
HEADERS2='x-cache: %header{x-cache}\nserver-timing: %header{server-timing}\ntime_total: %{time_total} s\n'
HEADERS7='x-cache: %header{x-cache}\nx-feed-source: %header{x-feed-source}\n'
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true; }
pretty() { if command -v jq >/dev/null 2>&1; then jq -c "$@"; else cat; fi; }
new_node_in_cluster() { node_table "${PORTS[@]}" 2>/dev/null | awk -v p="$NEW_PORT" '$2 == p { f = 1 } END { exit !f }'; }

# Nodes in the cluster that are neither the stack's six nor step 8's: "port id" lines.
strangers() {
  node_table "${PORTS[@]}" | awk -v ours=" ${PORTS[*]} $NEW_PORT " 'index(ours, " " $2 " ") == 0 { print $2, substr($1, 1, 8) }' || true
}
# The ports of the six that are masters now, as step 0 records them.
current_masters() {
  node_table "${PORTS[@]}" | awk -v ours=" ${PORTS[*]} " '$3 ~ /master/ && $3 !~ /fail/ && NF >= 5 && index(ours, " " $2 " ") { print $2 }' | sort -n | tr '\n' ' ' || true
}

# Waits (at most SECS) until the six are whole: cluster_state:ok, every slot served, no slot
# open, replicas linked and synced. Fails, printing what is wrong, when they are not by then.
wait_whole() {
  local secs=$1 deadline problems
  deadline=$((SECONDS + secs))
  while :; do
    problems=$(cluster_problems "${PORTS[@]}")
    [[ -z $problems ]] && return 0
    ((SECONDS < deadline)) || break
    sleep 0.5
  done
  printf '%s\n' "$problems" | sed 's/^/  problem: /' >&2
  return 1
}

# The cluster as it is now, for a failure message.
show_cluster() {
  say "The cluster now (CLUSTER NODES of the first node that answers):"
  cluster_summary "${PORTS[@]}" "$NEW_PORT" || say "  (no node answers)"
  cluster_problems "${PORTS[@]}" | sed 's/^/  problem: /' || true
}

# A cluster operation failed: say what, show the cluster, and stop; cleanup restores the stack.
cluster_failed() {
  printf '\n%sworkshop: step %s: %s%s\n' "$R" "$STEP" "$1" "$N" >&2
  show_cluster >&2
  say "redis-cli's whole output: $CLUSTER_LOG" >&2
  exit 1
}

# cluster_step SECS ARG...: shows and runs `redis-cli --cluster ARG...` (cluster_run: checked,
# its error lines shown); stops the workshop on a failure.
cluster_step() {
  local secs=$1
  shift
  printf '\n  %s$ redis-cli --cluster %s </dev/null%s\n' "$B" "$*" "$N"
  cluster_run "$CLUSTER_LOG" "$secs" "$@" || cluster_failed "redis-cli --cluster $1 failed (its errors are above)"
}

# Starts loadgen in the background (arguments after --url), its report in $LOGS/NAME.log.
load_bg() {
  local name=$1
  shift
  stop_load
  printf '\n  %s$ %s --url %s %s &%s\n' "$B" "$LOADGEN" "$URL" "$*" "$N"
  # shellcheck disable=SC2086 # LOADGEN may be "cargo run … --"
  $LOADGEN --url "$URL" "$@" --quiet >"$LOGS/$name.log" 2>&1 &
  LOAD_PID=$!
}
# Waits (at most SECS) for the background loadgen, then prints its report's main lines and
# whether every read was answered 200.
load_wait() {
  local secs=$1 name=$2 i requests status
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
  done
  stop_load
  note "  loadgen report (excerpt):"
  grep -E '^(requests|latency|status|x-cache|x-feed|service|postgres|redis|  +127|walks|writes|feed|fan-out|hot outbox)' "$LOGS/$name.log" | sed 's/^/    /' || tail -n 20 "$LOGS/$name.log"
  # The reads' counts are the report's first requests and status lines (writes come after).
  requests=$(awk '/^requests/ { print $2; exit }' "$LOGS/$name.log")
  status=$(awk '/^status/ { $1 = ""; sub(/^ +/, ""); print; exit }' "$LOGS/$name.log")
  LOAD_OK=no
  if [[ -n $requests && $requests != 0 && $status == "200: $requests" ]]; then
    LOAD_OK=yes
    note "  every read answered: $requests of $requests with 200"
  else
    warn "reads of the '$name' load not all answered 200: ${requests:-no} requests, status ${status:-none} (report: $LOGS/$name.log)"
    READ_FAILURES+=("step $STEP ($name): ${status:-no report}")
  fi
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

# Gives the masters step 0 found their role back: each one that is now a replica (step 4's
# killed master rejoins as one) takes over from its master with CLUSTER FAILOVER, the manual
# failover that loses no write and fails no read. Then waits until the six are whole.
restore_roles() {
  local p i
  for p in $MASTERS_AT_START; do
    [[ $(rcli "$p" role | head -n1) == slave ]] || continue
    say "127.0.0.1:$p was a master when the workshop began: a manual failover gives it the role back."
    printf '\n  %s$ redis-cli -p %s cluster failover%s\n' "$B" "$p" "$N"
    local out
    out=$(rcli "$p" cluster failover)
    printf '%s\n' "$out"
    [[ $out == OK ]] || cluster_failed "CLUSTER FAILOVER on 127.0.0.1:$p answered: $out"
    for ((i = 0; i < 100; i++)); do
      [[ $(rcli "$p" role | head -n1) == master ]] && break
      sleep 0.2
    done
    [[ $(rcli "$p" role | head -n1) == master ]] || cluster_failed "127.0.0.1:$p is still a replica 20 s after CLUSTER FAILOVER"
  done
  wait_whole 60 || cluster_failed "the cluster is not whole 60 s after the failover"
}

# Restores the stack with scripts/stack.sh up: it restarts a killed node (which rejoins as a
# replica), closes half-moved slots and removes a fourth node (its slots moved back first), then
# waits for cluster_state:ok and replicas in sync. Fails when stack.sh does.
restore_stack() {
  local rc=0
  printf '\n  %s$ scripts/stack.sh up%s\n' "$B" "$N"
  timeout 300 "$REPO/scripts/stack.sh" up >"$LOGS/stack-up.log" 2>&1 || rc=$?
  grep -E '^(stack: (starting|repair|creating|the cluster|error|warning|up in|redis |cluster )|    |  )' "$LOGS/stack-up.log" || true
  if ((rc != 0)); then
    warn "scripts/stack.sh up failed (exit status $rc; its output: $LOGS/stack-up.log)"
    return 1
  fi
}

cleanup() {
  local rc=$? restore=no problems
  trap - EXIT
  trap '' INT TERM # the stack is restored whatever happens next; every wait below is bounded
  stop_load
  stop_fleet
  if [[ -n ${CLUSTER_RUN_PID:-} ]]; then
    # A redis-cli --cluster operation interrupted: stop it (the slot it was moving stays open;
    # scripts/stack.sh up closes it).
    kill -TERM "$CLUSTER_RUN_PID" 2>/dev/null || true
    wait "$CLUSTER_RUN_PID" 2>/dev/null || true
    CLUSTER_RUN_PID=""
  fi
  if [[ -n $KILLED_PORT ]]; then restore=yes; fi
  case $STEP8 in adding | added | removing) restore=yes ;; esac
  if [[ $restore == no && -n $MASTERS_AT_START ]]; then
    problems=$(cluster_problems "${PORTS[@]}" 2>/dev/null; strangers 2>/dev/null) || true
    if [[ -n $problems || $(current_masters) != "$MASTERS_AT_START" ]]; then restore=yes; fi
  fi
  if [[ $restore == yes ]]; then
    printf '\n%sRestoring the stack as it was (3 masters, 3 replicas in sync, every slot served, no fourth node):%s\n' "$B" "$N"
    if restore_stack && (restore_roles); then
      KILLED_PORT="" STEP8=""
      say "The stack is as it was."
    else
      warn "the stack could not be restored. 'scripts/stack.sh status' shows it; 'scripts/stack.sh up' repairs it (open slots, the fourth node); 'scripts/stack.sh down' then 'up' recreates it (the cache starts empty)."
      ((rc != 0)) || rc=1
    fi
  elif [[ $STEP8 == kept ]]; then
    note "127.0.0.1:$NEW_PORT is still a master of the cluster, as asked: 'scripts/workshop.sh 8' or 'scripts/stack.sh up' moves its slots back and removes it."
  fi
  if ((rc == 0 && ${#READ_FAILURES[@]} > 0)); then
    warn "done, but reads failed: ${READ_FAILURES[*]}"
    rc=3
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'printf "\ninterrupted (step %s)\n" "$STEP"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Steps

step0() {
  title 0 "the service answers"
  run "curl -s --max-time 3 $URL/health | head -c 300; echo"
  if [[ $(http_code "$URL/health") != 200 ]]; then
    die "no healthy answer from $URL/health. Start the stack and the service in another terminal with scripts/run.sh (or set HOTFEED_URL), then run this again."
  fi
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli is missing: scripts/stack.sh up installs it"
  cluster_nodes "${PORTS[@]}" >/dev/null || die "no Redis node answers on 127.0.0.1:$BASE..$((BASE + 5)) (scripts/stack.sh status)"
  if [[ -n $(strangers) ]]; then
    die "the cluster holds nodes that are not the stack's: $(strangers | tr '\n' ' ')— 'scripts/stack.sh up' removes them"
  fi
  if new_node_in_cluster && [[ " ${STEPS[*]} " != " 8 " ]]; then
    die "127.0.0.1:$NEW_PORT, step 8's fourth master, is still in the cluster: 'scripts/workshop.sh 8' (or 'scripts/stack.sh up') removes it"
  fi
  if ! wait_whole 30; then
    die "the Redis Cluster is not whole (above); 'scripts/stack.sh up' repairs it, then run this again"
  fi
  MASTERS_AT_START=$(current_masters)
  if [[ $(http_code "$URL/dashboard") == 200 ]]; then
    look "open $URL/dashboard now and keep it beside this terminal"
  else
    warn "$URL/dashboard does not answer 200: this build does not serve the dashboard; follow the steps with curl and /metrics"
  fi
  note "loadgen: $LOADGEN   datagen: $DATAGEN   masters: $MASTERS_AT_START  logs: $LOGS"
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
  read -r owner _ < <(owner_of_slot "$slot" "${PORTS[@]}") || die "no master owns slot $slot"
  say "user 1's page keys share the hash tag {user:1}: slot $slot, on master 127.0.0.1:$owner."
  say "Forgetting them there (and waiting out the 1 s in-process tier) makes the next read a MISS:"
  run "redis-cli -p $owner --scan --pattern '$PREFIX:{user:1}:*' | while read -r k; do redis-cli -p $owner unlink \"\$k\" >/dev/null; done; sleep 1.2"
  run "curl -s -o /dev/null -w '$HEADERS2' $URL/api/v1/users/1/posts"
  run "curl -s -o /dev/null -w '$HEADERS2' $URL/api/v1/users/1/posts"
  look "pages/s ticks up; X-Cache shows one MISS and one HIT; PostgreSQL queries/s shows the one miss."
  lesson "a hit is two Redis round trips (the list from user 1's node, the posts from every node) and no SQL."
}

step3() {
  title 3 "Zipf load: one master gets hot"
  load_bg zipf --users "$SEED_USERS" --rate "$RATE" --duration "${D3}s"
  look "within seconds one master card turns HOT (orange): the one holding user 1's pages. Commands/s per master spreads, round trips/s does not."
  sleep $((D3 / 2))
  run "curl -s $URL/api/v1/admin/hot | $(command -v jq >/dev/null && echo "jq -c '.keys[:3][] | {key, kind, reads, node}'" || echo "head -c 600")"
  load_wait $((D3 + 20)) zipf
  lesson "posts spread over all shards, but every page read starts at the owner of the user's list: hot users make hot partitions."
}

step4() {
  title 4 "kill the hot master under load"
  local slot line owner replica pid i t0
  wait_whole 60 || die "the cluster is not whole (above), so killing a master could lose a shard; 'scripts/stack.sh up' repairs it"
  slot=$(rcli "$BASE" cluster keyslot "$PREFIX:{user:1}:pages")
  run "redis-cli -c -p $BASE cluster keyslot '$PREFIX:{user:1}:pages'"
  run "redis-cli -p $BASE cluster nodes | awk '{print \$2, \$3, \$4, \$9, \$10}' | sort"
  line=$(owner_of_slot "$slot" "${PORTS[@]}") || die "no live master owns slot $slot; restore the cluster with scripts/stack.sh up"
  read -r owner replica <<<"$line"
  [[ $replica != - ]] || die "master 127.0.0.1:$owner has no replica: nothing would take over (scripts/stack.sh up)"
  pid=$(rcli "$owner" info server | field process_id)
  [[ $pid =~ ^[0-9]+$ ]] || die "cannot read the pid of 127.0.0.1:$owner"
  say "slot $slot is on 127.0.0.1:$owner (pid $pid); its replica is 127.0.0.1:$replica."
  load_bg kill --users "$SEED_USERS" --rate "$RATE" --duration "${D4}s"
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
  load_wait $((D4 + 20)) kill
  if [[ $LOAD_OK == yes ]]; then
    say "Every read answered meanwhile (status 200 above): the dead shard's pages came from PostgreSQL."
  else
    say "Not every read was answered 200 (above): the service or PostgreSQL was short of time (its log says why); a Redis failure alone does not fail reads."
  fi
  say "Restoring the node: scripts/stack.sh up restarts it, and it rejoins as a replica of $replica."
  restore_stack || cluster_failed "scripts/stack.sh up could not restart 127.0.0.1:$owner"
  KILLED_PORT=""
  restore_roles
  lesson "a Redis failure costs latency and PostgreSQL load, never a failed read; the replica takes over in ~4 s (cluster-node-timeout 2 s). A planned failover (CLUSTER FAILOVER) costs nothing at all."
}

step5() {
  title 5 "cold start: every key gone at once, and request coalescing"
  local p n
  run "curl -s $URL/metrics | grep -E '^coalesced_waits_total' || echo '(no coalesced waits yet)'"
  say "Deleting every $PREFIX:* key on each master (SCAN + UNLINK, one key per command: keys of a node span many slots):"
  for p in $(master_ports "${PORTS[@]}"); do
    n=$(timeout 60 redis-cli -h 127.0.0.1 -p "$p" --scan --pattern "$PREFIX:*" | awk '{ printf "*2\r\n$6\r\nUNLINK\r\n$%d\r\n%s\r\n", length($0), $0 }' |
      timeout 60 redis-cli -h 127.0.0.1 -p "$p" --pipe 2>/dev/null | sed -n 's/.*replies: \([0-9]*\).*/\1/p')
    printf '  127.0.0.1:%s  %s keys unlinked\n' "$p" "${n:-0}"
  done
  note "  (per master: redis-cli -p PORT --scan --pattern '$PREFIX:*' | awk '{…UNLINK <key>…}' | redis-cli -p PORT --pipe)"
  sleep 1.2
  load_bg cold --users "$SEED_USERS" --rate "$RATE" --duration "${D5}s" --warmup 0s
  look "MISS takes the X-Cache bar, PostgreSQL queries/s jumps, p99 rises, then HIT comes back within a few seconds."
  load_wait $((D5 + 20)) cold
  run "curl -s $URL/metrics | grep -E '^coalesced_waits_total'"
  lesson "concurrent misses of one page wait for one PostgreSQL read (coalesced_waits_total) instead of each querying: 'queries per page' stays far below 1 during the stampede. Coalescing cannot be switched off; without it every one of those waits would have been a query."
}

step6() {
  title 6 "the in-process tier (L1)"
  run "sleep 1.2; for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%header{x-cache} ' $URL/api/v1/users/1/posts; done; echo"
  say "Once the 1 s tier had forgotten the page, the first reads were HITs from Redis; after a few reads in the window (L1_ADMIT_READS=4) the page is kept in the process: X-Cache: HIT-L1, no Redis at all."
  load_bg l1 --users "$SEED_USERS" --rate "$RATE" --duration "${D6}s"
  look "HIT-L1 takes most of the X-Cache bar; the hot master's commands/s flattens toward the others; L1 bytes/entries grow; the invalidation channel is 'listening'."
  load_wait $((D6 + 20)) l1
  say "To see the difference, restart the service yourself without the tier and run this step again:"
  printf '\n  %s$ L1=off scripts/run.sh%s      %s# or: scripts/run.sh --l1 off%s\n' "$B" "$N" "$D" "$N"
  lesson "the hottest pages never leave the process: the hot shard is relieved without more shards; a write's invalidation reaches every instance through the channel, and L1_TTL_MS bounds staleness if a message is lost."
}

step7() {
  title 7 "the home feed: fan-out on write, celebrity outboxes"
  local i t0
  # A fresh start for user 70's feed, so the first read is a MISS on every run.
  rcli "$BASE" -c unlink "$PREFIX:{user:70}:inbox" "$PREFIX:{user:70}:inbox:meta" "$PREFIX:{user:70}:inbox:building" >/dev/null || true
  sleep 1.2
  run "curl -s -o /dev/null -w '$HEADERS7' $URL/api/v1/users/70/feed"
  say "That read was answered by PostgreSQL, and started building user 70's inbox in the background. Once it is built (about a second), the same read comes from the inbox:"
  t0=$(date +%s%N)
  for ((i = 0; i < 100; i++)); do
    [[ $(rcli "$BASE" -c exists "$PREFIX:{user:70}:inbox:meta") == 1 ]] && break
    sleep 0.1
  done
  note "  (inbox built $((($(date +%s%N) - t0) / 1000000)) ms after the first read's answer)"
  run "curl -s -o /dev/null -w '$HEADERS7' $URL/api/v1/users/70/feed"
  say "Readers walk their feeds by cursor while authors post (the admin key in .env lets loadgen write as them):"
  load_bg feed --endpoint feed --users "$SEED_USERS" --depths 1=80,2=10,5=5,20=5 --rate $((RATE / 6)) --write-rate 5 --duration "${D7}s"
  look "fan-out lag p99 and fan-outs/s move; the hottest keys may include inboxes; the node holding the most followed user's keys leads commands/s."
  load_wait $((D7 + 25)) feed
  note "  With $SEED_USERS users nobody reaches FEED_CELEBRITY_FOLLOWERS (1,000), so every post is pushed."
  note "  To see user 1's outbox pulled by every reader (the hot outbox), restart with: FEED_CELEBRITY_FOLLOWERS=50 scripts/run.sh"
  lesson "pushing a post costs one write per follower; for a celebrity that is millions, so readers pull their outbox instead, which makes the outbox a hot key."
}

start_new_node() {
  local state
  state=$(rcli "$NEW_PORT" ping || true) # refused until it is started
  if [[ $state == PONG ]]; then
    [[ $(rcli "$NEW_PORT" info server | field config_file) == "$NEW_DIR/redis.conf" ]] ||
      die "port $NEW_PORT is taken by a Redis this workshop did not start"
    return 0
  fi
  rm -rf "$NEW_DIR"
  mkdir -p "$NEW_DIR"
  node_conf "$NEW_PORT" "$NEW_DIR" >"$NEW_DIR/redis.conf" # the settings of scripts/stack.sh's nodes
  run "redis-server $NEW_DIR/redis.conf"
  for _ in $(seq 50); do [[ $(rcli "$NEW_PORT" ping) == PONG ]] && return 0; sleep 0.2; done
  die "127.0.0.1:$NEW_PORT did not start (log: $NEW_DIR/redis.log)"
}

# Waits until every node of the cluster knows the fourth master and says cluster_state:ok.
new_node_known() {
  local p i ok
  for ((i = 0; i < 100; i++)); do
    ok=yes
    for p in "${PORTS[@]}" "$NEW_PORT"; do
      [[ $(rcli "$p" cluster info | awk -F: '$1 == "cluster_state" || $1 == "cluster_known_nodes" { printf "%s;", $2 }') == "ok;7;" ]] || ok=no
    done
    [[ $ok == yes ]] && return 0
    sleep 0.2
  done
  return 1
}

remove_new_node() {
  local id out
  STEP8=removing
  id=$(rcli "$NEW_PORT" cluster myid)
  [[ $id =~ ^[0-9a-f]{40}$ ]] || cluster_failed "cannot read the id of 127.0.0.1:$NEW_PORT"
  say "Moving every slot of 127.0.0.1:$NEW_PORT back to the master it came from (one reshard per range), then removing it from the cluster:"
  printf '\n  %s$ redis-cli --cluster reshard 127.0.0.1:%s --cluster-from %s --cluster-to <owner of the next slot> --cluster-slots <range> --cluster-yes %s   # per range%s\n' \
    "$B" "$BASE" "${id:0:8}…" "$(cluster_move_flags | tr '\n' ' ')" "$N"
  drain_node "$CLUSTER_LOG" "$NEW_PORT" "${PORTS[@]}" || cluster_failed "moving the slots of 127.0.0.1:$NEW_PORT back failed (its errors are above)"
  cluster_step 60 del-node "127.0.0.1:$BASE" "$id"
  # del-node reset the node (CLUSTER RESET SOFT); it owns nothing now, which shutdown_if_empty checks.
  out=$(shutdown_if_empty "$NEW_PORT") || cluster_failed "$out"
  rm -rf "$NEW_DIR"
  STEP8=""
  wait_whole 60 || cluster_failed "the cluster is not whole after removing 127.0.0.1:$NEW_PORT"
  say "127.0.0.1:$NEW_PORT is gone: $(node_table "${PORTS[@]}" | wc -l) nodes, every slot served, no slot open."
}

step8() {
  title 8 "scale out: a fourth master on $NEW_PORT, slots moving under load"
  wait_whole 60 || die "the cluster is not whole (above); 'scripts/stack.sh up' repairs it"
  STEP8=adding
  start_new_node
  if new_node_in_cluster; then
    say "127.0.0.1:$NEW_PORT is already in the cluster (an earlier run kept it): reusing it."
  else
    cluster_step 60 add-node "127.0.0.1:$NEW_PORT" "127.0.0.1:$BASE"
  fi
  new_node_known || cluster_failed "the cluster did not settle with 127.0.0.1:$NEW_PORT in it"
  STEP8=added
  load_bg scale --users "$SEED_USERS" --rate "$RATE" --duration "${D8}s"
  look "a fourth master card with no slots, then its slot strip fills as rebalance moves about a quarter of the slots to it; commands/s follows the slots."
  sleep 2
  # --cluster-replace: while a slot moves, a cache fill can land a key on the importing node that
  # the source still holds (the service's Redis client retries a whole pipeline at the ASK
  # target, and ASKING covers only its first command). MIGRATE then answers BUSYKEY, redis-cli
  # tries to compare the two values with DEBUG DIGEST-VALUE, which Redis 7 refuses
  # (enable-debug-command no), and the rebalance stops with the slot half moved ("*** Value
  # check failed!"). The source's copy is the one reads were served from: it replaces the other.
  # shellcheck disable=SC2046 # the flags are words
  cluster_step 900 rebalance "127.0.0.1:$BASE" --cluster-use-empty-masters $(cluster_move_flags)
  run "redis-cli -p $NEW_PORT cluster nodes | awk '/myself/ {print \$2, \$3, \$9, \$10, \$11}'"
  load_wait $((D8 + 60)) scale
  lesson "slots move key by key (MIGRATE, with ASK redirects meanwhile); the client follows MOVED and the service never stops. A new master has no replica until you add one."
  local answer=y
  if [[ $AUTO != 1 ]] && { true </dev/tty; } 2>/dev/null; then
    printf '\n%sRemove 127.0.0.1:%s again (move its slots back, del-node)? [Y/n]%s ' "$D" "$NEW_PORT" "$N"
    read -r -t 300 answer </dev/tty || answer=y
  fi
  case ${answer:-y} in
    [nN]*)
      STEP8=kept
      note "  Left in place. 'scripts/workshop.sh 8' or 'scripts/stack.sh up' moves its slots back and removes it." ;;
    *) remove_new_node ;;
  esac
}

# Step 9's processes: three instances and HAProxy, by pid; ended by the step, or by cleanup.
FLEET_PIDS=() FLEET_LB=""
stop_fleet() {
  local pid
  for pid in "${FLEET_PIDS[@]}" $FLEET_LB; do
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  FLEET_PIDS=() FLEET_LB=""
}
# fleet_instance I: instance I of step 9 on port FLEET_BASE+I (its settings from .env, as the
# workshop's own service), waiting for /ping.
fleet_instance() {
  local i=$1 port=$((FLEET_BASE + $1))
  APP_HOST=127.0.0.1 APP_PORT=$port NO_MIGRATE=true TRUST_FORWARDED_FOR=true SHUTDOWN_DRAIN_SECS=$D9 \
    RUST_LOG=warn $HOTFEED serve >>"$LOGS/instance$i.log" 2>&1 &
  FLEET_PIDS[i]=$!
  for _ in $(seq 300); do
    [[ $(http_code "http://127.0.0.1:$port/ping") == 200 ]] && return 0
    kill -0 "${FLEET_PIDS[i]}" 2>/dev/null || die "instance $i exited (log: $LOGS/instance$i.log)"
    sleep 0.2
  done
  die "instance $i did not answer on 127.0.0.1:$port within 60 s (log: $LOGS/instance$i.log)"
}
# HAProxy's view of instance I: UP, DOWN, "UP 1/2" (going down) ...
lb_state() {
  curl -fs -m 2 "http://127.0.0.1:$((FLEET_BASE + 4))/stats;csv" | awk -F, -v s="hotfeed$1" '$1 == "hotfeed" && $2 == s { print $18 }'
}
wait_lb() { # I STATE: until HAProxy has instance I in STATE (at most 60 s)
  for _ in $(seq 600); do [[ $(lb_state "$1") == "$2"* ]] && return 0; sleep 0.1; done
  die "HAProxy did not mark instance $1 $2 within 60 s (log: $LOGS/haproxy.log)"
}

step9() {
  title 9 "three instances, one load balancer, restart them all"
  local i pid lb=http://127.0.0.1:$FLEET_BASE extra=$WORK/haproxy-stats.cfg
  if ! command -v haproxy >/dev/null 2>&1; then
    say "HAProxy is missing: installing the Debian package."
    if [[ $EUID -eq 0 ]]; then apt-get install -y -qq haproxy >/dev/null; else sudo apt-get install -y -qq haproxy >/dev/null; fi
  fi
  [[ $HOTFEED == target/* ]] || die "step 9 needs the hotfeed binary: cargo build --release -p hotfeed"
  say "Three more instances of the service on the same stack (ports $((FLEET_BASE + 1))-$((FLEET_BASE + 3))), each with SHUTDOWN_DRAIN_SECS=$D9 and TRUST_FORWARDED_FOR=true, behind HAProxy on $FLEET_BASE with the shipped deploy/haproxy/haproxy.cfg."
  for i in 1 2 3; do fleet_instance "$i"; done
  printf 'listen stats\n    bind 127.0.0.1:%s\n    http-request set-log-level silent\n    stats enable\n    stats uri /stats\n' "$((FLEET_BASE + 4))" >"$extra"
  printf '\n  %s$ HOTFEED_LISTEN=127.0.0.1:%s HOTFEED_1=127.0.0.1:%s HOTFEED_2=… HOTFEED_3=… haproxy -f deploy/haproxy/haproxy.cfg%s\n' "$B" "$FLEET_BASE" "$((FLEET_BASE + 1))" "$N"
  HOTFEED_LISTEN=127.0.0.1:$FLEET_BASE HOTFEED_1=127.0.0.1:$((FLEET_BASE + 1)) HOTFEED_2=127.0.0.1:$((FLEET_BASE + 2)) \
    HOTFEED_3=127.0.0.1:$((FLEET_BASE + 3)) haproxy -db -f deploy/haproxy/haproxy.cfg -f "$extra" 2>>"$LOGS/haproxy.log" &
  FLEET_LB=$!
  for i in 1 2 3; do wait_lb "$i" UP; done
  URL=$lb load_bg fleet --users "$SEED_USERS" --rate "$RATE" --write-rate 5 --duration "$((12 * D9 + 10))s"
  sleep 3
  for i in 1 2 3; do
    pid=${FLEET_PIDS[i]}
    run "kill -TERM $pid    # instance $i"
    run "curl -s -w ' %{http_code}\\n' http://127.0.0.1:$((FLEET_BASE + i))/health"
    wait_lb "$i" DOWN
    say "HAProxy marked instance $i DOWN; the instance still serves what reaches it until its drain ends, then exits."
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fleet_instance "$i"
    wait_lb "$i" UP
    say "instance $i is back, and UP in HAProxy."
  done
  URL=$lb load_wait $((12 * D9 + 40)) fleet
  stop_fleet
  if [[ $LOAD_OK == yes ]]; then
    say "Each instance was restarted while reads and writes flowed through the balancer, and every read was answered (above)."
  fi
  look "this step's instances are not the dashboard's (that one is $URL); while the step runs, HAProxy's own view is http://127.0.0.1:$((FLEET_BASE + 4))/stats"
  lesson "a stop drains first: readiness turns 503, the balancer takes the instance out, and only then does the listener close. Retries are the balancer's second line: a write is sent again only with an Idempotency-Key."
}

# ---------------------------------------------------------------------------------------------

main() {
  while (($#)); do
    case $1 in
      --yes | -y) AUTO=1 ;;
      --quick) QUICK=1 ;;
      -h | --help)
        sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0 ;;
      [0-9]) STEPS+=("$1") ;;
      *) die "unknown argument '$1' (steps are 0-9; --yes; --quick; --help)" ;;
    esac
    shift
  done
  ((${#STEPS[@]} > 0)) || STEPS=(1 2 3 4 5 6 7 8)
  # Load durations (s) of steps 3-8, and the read rate.
  if [[ $QUICK == 1 ]]; then
    RATE=${WORKSHOP_RATE:-100} SEED_POSTS=20000
    D3=8 D4=20 D5=6 D6=6 D7=6 D8=30 D9=3
  else
    RATE=${WORKSHOP_RATE:-300}
    D3=20 D4=30 D5=10 D6=15 D7=15 D8=60 D9=5
  fi
  LOGS=${WORKSHOP_LOG_DIR:-$STACK_DIR/workshop/logs}
  mkdir -p "$LOGS"
  rm -f "$LOGS"/*.log
  CLUSTER_LOG=$LOGS/redis-cli.log
  STEP=0
  step0
  local s
  for s in "${STEPS[@]}"; do
    [[ $s == 0 ]] && continue
    pause "next: step $s"
    STEP=$s
    "step$s"
  done
  STEP=end
  printf '\n%sdone.%s\n' "$B" "$N"
}

main "$@"
