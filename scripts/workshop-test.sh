#!/usr/bin/env bash
# scripts/workshop-test.sh — the workshop (scripts/workshop.sh) run unattended, twice in a row on
# one stack, checked after each run; and the cause of issue 24 reproduced.
#
#   scripts/workshop-test.sh              release binaries, the workshop as a participant runs it
#   scripts/workshop-test.sh --ci         debug binaries, `workshop.sh --quick` (every step, shorter
#                                         loads at 100 reads/s, a smaller seed): the CI form
#   scripts/workshop-test.sh --interrupt  also Ctrl-C (SIGINT to the workshop's process group)
#                                         during step 4 after the kill and during step 8's
#                                         rebalance, each followed by the same checks
#
# Phases:
#   cause      a key that the importing node received under ASK while the source still held it
#              (what the service's Redis client does during a slot move) makes
#              `redis-cli --cluster reshard` stop with the slot half moved unless given the flags
#              the scripts use (--cluster-replace); `scripts/stack.sh up` closes the slot.
#   workshop   `scripts/workshop.sh --yes` (--quick with --ci), RUNS times (2) on the same stack.
# After every phase and run: exit status 0 and "done."; the cluster whole (cluster_state:ok on
# every node, all 16384 slots assigned and served, no slot open, no failed or extra node, 3
# masters each with a replica whose link is up and synced, the same masters as before); no
# fourth node left; every read of every background load answered 200 (each loadgen report's
# read status line is exactly "200: <requests>").
#
# It runs on the stack of scripts/stack.sh (STACK_REDIS_BASE_PORT, STACK_DIR: brought up if it is
# not), with a service of its own on WORKSHOP_TEST_APP_PORT, a database of its own
# (hotfeed_workshop_test on the server of DATABASE_URL / .env) and a key prefix of its own (hfws),
# so it never seeds a developer's database; the developer's .env is not written. It kills a
# master and reshards the cluster: run it on a stack nothing else is using at the same time.
#
# Environment:
#   STACK_REDIS_BASE_PORT, STACK_DIR, STACK_PG_PORT   as scripts/stack.sh
#   WORKSHOP_TEST_APP_PORT   the service's port (default 18790)
#   WORKSHOP_TEST_DIR        logs and state (default $STACK_DIR/workshop-test)
#   WORKSHOP_TEST_RUNS       workshop runs (default 2)
#   HOTFEED_BIN_DIR          prebuilt hotfeed, loadgen and datagen (default: cargo build)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
cd "$REPO"
# shellcheck source=scripts/lib/cluster.sh disable=SC1091
. "$SCRIPT_DIR/lib/cluster.sh"

CI=no INTERRUPT=no
for arg in "$@"; do
  case $arg in
    --ci) CI=yes ;;
    --interrupt) INTERRUPT=yes ;;
    -h | --help)
      sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    *)
      printf 'workshop-test: unknown argument %s (--ci, --interrupt, --help)\n' "$arg" >&2
      exit 2 ;;
  esac
done

BASE=${STACK_REDIS_BASE_PORT:-7000}
export STACK_DIR=${STACK_DIR:-$REPO/.stack}
export STACK_REDIS_BASE_PORT=$BASE
APP_PORT=${WORKSHOP_TEST_APP_PORT:-18790}
RUNS=${WORKSHOP_TEST_RUNS:-2}
DIR=${WORKSHOP_TEST_DIR:-$STACK_DIR/workshop-test}
PORTS=()
for ((i = 0; i < 6; i++)); do PORTS+=($((BASE + i))); done
NEW_PORT=$((BASE + 6))
# A key tag in slot 0, the lowest slot of whichever master owns it, so `reshard --cluster-slots 1`
# moves exactly that slot.
SLOT0_TAG='{ws-busykey-42061}'

APP_PID="" FAILURES=() STARTED=$SECONDS WENV=()

say() { printf 'workshop-test: %s\n' "$*"; }
fail() {
  say "FAIL: $*"
  FAILURES+=("$*")
}
die() {
  say "error: $*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  if [[ -n $APP_PID ]]; then
    kill -TERM "$APP_PID" 2>/dev/null || true
    wait "$APP_PID" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# Set-up: binaries, stack, database, service

# The DATABASE_URL scripts/stack.sh would use, with the database renamed to ours.
test_database_url() {
  local url=${DATABASE_URL:-}
  if [[ -z $url && -f .env ]]; then url=$(sed -n 's/^[[:space:]]*DATABASE_URL[[:space:]]*=[[:space:]]*//p' .env | head -n1 | tr -d '"'\'); fi
  url=${url:-postgres://postgres@127.0.0.1:5432/hotfeed}
  local query=""
  if [[ $url == *\?* ]]; then query="?${url#*\?}" url=${url%%\?*}; fi
  printf '%s/hotfeed_workshop_test%s\n' "${url%/*}" "$query"
}

setup() {
  mkdir -p "$DIR"
  rm -rf "${DIR:?}"/run* "$DIR"/interrupt* "$DIR"/cause*
  if [[ -n ${HOTFEED_BIN_DIR:-} ]]; then
    BIN=$HOTFEED_BIN_DIR
  elif [[ $CI == yes ]]; then
    say "cargo build -p hotfeed -p loadgen -p datagen (debug)"
    cargo build -q -p hotfeed -p loadgen -p datagen
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug
  else
    say "cargo build --release -p hotfeed -p loadgen -p datagen"
    cargo build -q --release -p hotfeed -p loadgen -p datagen
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
  fi
  for b in hotfeed loadgen datagen; do [[ -x $BIN/$b ]] || die "no $BIN/$b"; done

  # Ours, exported for the service, datagen, loadgen and the workshop's own scripts/stack.sh up.
  export DATABASE_URL
  DATABASE_URL=$(test_database_url)
  export STACK_ENV_FILE=$DIR/stack.env
  export CACHE_KEY_PREFIX=hfws
  export ADMIN_API_KEY
  ADMIN_API_KEY=$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_')
  export REDIS_URLS
  REDIS_URLS=$(printf 'redis://127.0.0.1:%s,' "${PORTS[@]}")
  REDIS_URLS=${REDIS_URLS%,}
  export APP_PORT APP_HOST=127.0.0.1 LOG_FORMAT=text RUST_LOG=${RUST_LOG:-warn}

  # A fresh database, so the first run seeds it (step 1) and the second finds it seeded.
  local psql maint
  psql=$(command -v psql 2>/dev/null || printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -n1)
  maint=${DATABASE_URL%/hotfeed_workshop_test*}/postgres
  if [[ -x $psql ]] && "$psql" -X -q -d "$maint" -c 'SELECT 1' >/dev/null 2>&1; then
    "$psql" -X -q -d "$maint" -c 'DROP DATABASE IF EXISTS hotfeed_workshop_test WITH (FORCE)' >/dev/null ||
      die "could not drop the test database hotfeed_workshop_test"
  fi
  say "scripts/stack.sh up (Redis on $BASE-$((BASE + 5)), database hotfeed_workshop_test)"
  scripts/stack.sh up >"$DIR/stack-up.log" 2>&1 || { tail -n 30 "$DIR/stack-up.log" >&2; die "scripts/stack.sh up failed"; }
  whole "the stack before the test" || die "the stack is not whole before the test"

  say "hotfeed serve on 127.0.0.1:$APP_PORT"
  "$BIN/hotfeed" serve >"$DIR/app.log" 2>&1 &
  APP_PID=$!
  for _ in $(seq 240); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$APP_PORT/health") == 200 ]] && return 0
    kill -0 "$APP_PID" 2>/dev/null || { tail -n 30 "$DIR/app.log" >&2; die "hotfeed serve exited"; }
    sleep 0.5
  done
  die "hotfeed serve did not answer /health within 120 s (log: $DIR/app.log)"
}

# ---------------------------------------------------------------------------------------------
# Checks

# whole WHAT: the six nodes form the whole cluster: no problem that cluster_problems sees (state,
# coverage, open slots, replica links, failed nodes), six known nodes, 3 masters each with a
# replica, no fourth node running. Records a failure and fails otherwise.
whole() {
  local what=$1 problems masters replicas known
  problems=$(cluster_problems "${PORTS[@]}")
  known=$(node_table "${PORTS[@]}" | wc -l)
  masters=$(node_table "${PORTS[@]}" | awk '$3 ~ /master/ && NF >= 5' | wc -l)
  replicas=$(node_table "${PORTS[@]}" | awk '$3 ~ /slave/ && $3 !~ /fail/' | wc -l)
  ((known == 6)) || problems+=$'\n'"$known nodes in the cluster, not 6"
  ((masters == 3 && replicas == 3)) || problems+=$'\n'"$masters masters with slots and $replicas replicas"
  if [[ $(rcli "$NEW_PORT" ping) == PONG ]]; then problems+=$'\n'"a node still answers on 127.0.0.1:$NEW_PORT"; fi
  problems=$(sed '/^$/d' <<<"$problems")
  if [[ -n $problems ]]; then
    fail "$what: the cluster is not whole:"$'\n'"    ${problems//$'\n'/$'\n'    }"
    cluster_summary "${PORTS[@]}" "$NEW_PORT" | sed 's/^/  /' || true
    return 1
  fi
  say "ok: $what: cluster_state:ok, 16384 slots served, no open slot, 6 nodes, 3 masters ($(master_ports "${PORTS[@]}" | tr '\n' ' ')), 3 replicas in sync"
}

# reads_ok RUNDIR WANT: every loadgen report in RUNDIR answered all its reads with 200, and
# there are WANT of them.
reads_ok() {
  local dir=$1 want=$2 f requests status n=0 bad=0
  for f in "$dir"/{zipf,kill,cold,l1,feed,scale}.log; do
    [[ -f $f ]] || continue
    n=$((n + 1))
    requests=$(awk '/^requests/ { print $2; exit }' "$f")
    status=$(awk '/^status/ { $1 = ""; sub(/^ +/, ""); print; exit }' "$f")
    if [[ -z $requests || $requests == 0 || $status != "200: $requests" ]]; then
      fail "$(basename "$f" .log) load: ${requests:-?} reads, status '${status:-none}' (report: $f)"
      bad=$((bad + 1))
    fi
  done
  ((n == want)) || { fail "$n loadgen reports in $dir, expected $want"; return 1; }
  ((bad == 0)) && say "ok: all $n loads' reads answered 200"
}

# ---------------------------------------------------------------------------------------------
# Phase: the cause

# Reproduces the failure of issue 24 deterministically: slot 0 holds keys on its owner, and the
# node the slot moves to already holds one of them, written there under ASK the way the
# service's client writes a cache fill during a migration. Then MIGRATE answers BUSYKEY and
# redis-cli, which compares the two values with DEBUG DIGEST-VALUE (refused by Redis 7 by
# default) before replacing anything, stops with the slot half moved. With the flags the scripts
# use for every slot move (cluster_move_flags) the move completes and the source's value wins.
phase_cause() {
  local log=$DIR/cause.log src dst src_id dst_id out k orig other
  say "phase cause: a key already on the importing node (written under ASK) during a slot move"
  read -r orig _ < <(owner_of_slot 0 "${PORTS[@]}") || die "no master owns slot 0"
  other=$(master_ports "${PORTS[@]}" | grep -vx "$orig" | head -n1)
  src=$orig dst=$other
  src_id=$(rcli "$src" cluster myid) dst_id=$(rcli "$dst" cluster myid)
  plant_busy_key() {
    local from=$1 to=$2 from_id
    from_id=$(rcli "$from" cluster myid)
    for k in 1 2 3 4 5; do rcli "$from" set "$SLOT0_TAG:k$k" "source value $k" >/dev/null; done
    rcli "$to" cluster setslot 0 importing "$from_id" >/dev/null
    out=$(printf 'ASKING\nSET %s:k3 "filled under ASK"\n' "$SLOT0_TAG" | timeout 5 redis-cli -h 127.0.0.1 -p "$to" | tr -d '\r' | tr '\n' ' ')
    rcli "$to" cluster setslot 0 stable >/dev/null
    [[ $out == "OK OK " ]] || die "could not write a key under ASK on 127.0.0.1:$to: $out"
  }

  # 1. Without the flags: the move stops half done, as step 8's rebalance did.
  plant_busy_key "$src" "$dst"
  if redis-cli --cluster reshard "127.0.0.1:$BASE" --cluster-from "$src_id" --cluster-to "$dst_id" \
    --cluster-slots 1 --cluster-yes </dev/null >"$log" 2>&1; then
    fail "cause: reshard of slot 0 without --cluster-replace succeeded although 127.0.0.1:$dst held $SLOT0_TAG:k3 (Redis or redis-cli changed?)"
  else
    say "reproduced: reshard of slot 0 127.0.0.1:$src -> 127.0.0.1:$dst without --cluster-replace failed:"
    cluster_errors "$log" | sed -n '/Target key exists/,$p' | cut -c1-160 | sed 's/^/    | /'
    [[ -n $(open_slots "${PORTS[@]}") ]] && say "  and left slot 0 open: $(open_slots "${PORTS[@]}" | awk '{ printf "%s %s on %s; ", $3, $2, $1 }')"
  fi
  # 2. scripts/stack.sh up closes the open slot (fix --cluster-replace).
  scripts/stack.sh up >"$DIR/cause-stack-up.log" 2>&1 || fail "cause: scripts/stack.sh up failed to repair (log: $DIR/cause-stack-up.log)"
  grep '^stack: repair' "$DIR/cause-stack-up.log" | sed 's/^/  /' || true
  whole "after scripts/stack.sh up repaired the half-moved slot" || true

  # 3. With the scripts' flags: the same move completes, the source's value replaces the other.
  # (The fix gave slot 0 to one of the two; it moves to the other, and ends where it began.)
  read -r src _ < <(owner_of_slot 0 "${PORTS[@]}") || die "no master owns slot 0"
  if [[ $src == "$orig" ]]; then dst=$other; else dst=$orig; fi
  src_id=$(rcli "$src" cluster myid) dst_id=$(rcli "$dst" cluster myid)
  plant_busy_key "$src" "$dst"
  # shellcheck disable=SC2046 # the flags are words
  if cluster_run "$log" 120 reshard "127.0.0.1:$BASE" --cluster-from "$src_id" --cluster-to "$dst_id" \
    --cluster-slots 1 --cluster-yes $(cluster_move_flags) >/dev/null; then
    out=$(rcli "$dst" get "$SLOT0_TAG:k3")
    if [[ $out == "source value 3" ]]; then
      say "ok: with $(cluster_move_flags | tr '\n' ' ')the move completed and the source's value won"
    else
      fail "cause: after the move $SLOT0_TAG:k3 is '$out', not the source's value"
    fi
    if [[ $dst != "$orig" ]]; then # slot 0 back where it was (it is now the lowest slot of dst)
      # shellcheck disable=SC2046
      cluster_run "$log" 120 reshard "127.0.0.1:$BASE" --cluster-from "$dst_id" --cluster-to "$src_id" \
        --cluster-slots 1 --cluster-yes $(cluster_move_flags) >/dev/null || fail "cause: moving slot 0 back failed (log: $log)"
    fi
  else
    fail "cause: reshard with $(cluster_move_flags | tr '\n' ' ')failed (log: $log)"
  fi
  for k in 1 2 3 4 5; do rcli "$BASE" -c del "$SLOT0_TAG:k$k" >/dev/null || true; done
  sleep 1
  whole "after the cause phase" || true
}

# ---------------------------------------------------------------------------------------------
# Phase: the workshop, twice

# The workshop's environment: our service and binaries, one second between steps.
workshop_env() {
  WENV=(HOTFEED_URL="http://127.0.0.1:$APP_PORT" WORKSHOP_SLEEP=1 LOADGEN="$BIN/loadgen" DATAGEN="$BIN/datagen")
}

phase_run() {
  local n=$1
  local out=$DIR/run$n rc=0 t0=$SECONDS args=(--yes) before
  [[ $CI == yes ]] && args+=(--quick)
  mkdir -p "$out"
  before=$(master_ports "${PORTS[@]}" | tr '\n' ' ')
  say "run $n: scripts/workshop.sh ${args[*]} (output: $out/workshop.out)"
  workshop_env
  env "${WENV[@]}" WORKSHOP_LOG_DIR="$out" scripts/workshop.sh "${args[@]}" </dev/null >"$out/workshop.out" 2>&1 || rc=$?
  say "run $n: exit status $rc after $((SECONDS - t0)) s"
  if ((rc != 0)); then
    fail "run $n: scripts/workshop.sh exited $rc"
    grep -E 'workshop:|warning:|problem:|\| ' "$out/workshop.out" | tail -n 30 | sed 's/^/    /'
  fi
  grep -q '^done\.' <(sed 's/\x1b\[[0-9;]*m//g' "$out/workshop.out") || fail "run $n: the workshop did not print 'done.'"
  whole "after run $n" || true
  [[ $(master_ports "${PORTS[@]}" | tr '\n' ' ') == "$before" ]] || fail "run $n: the masters were $before before, $(master_ports "${PORTS[@]}" | tr '\n' ' ') after"
  reads_ok "$out" 6 || true
  grep -E '^(127.0.0.1:[0-9]+ was promoted|  \(inbox built)' "$out/workshop.out" | sed 's/^/  /' || true
}

# ---------------------------------------------------------------------------------------------
# Phase: Ctrl-C

# interrupt NAME STEP PATTERN DELAY: runs `workshop.sh --yes STEP` in a process group of its own
# and sends it SIGINT (what Ctrl-C in a terminal does) DELAY seconds after PATTERN shows in its
# output; then the workshop must exit 130 with the stack whole.
interrupt() {
  local name=$1 step=$2 pattern=$3 delay=$4 out=$DIR/interrupt-$1 pid rc=0 i
  mkdir -p "$out"
  say "interrupt $name: scripts/workshop.sh --yes --quick $step, SIGINT ${delay}s after '$pattern'"
  workshop_env
  # env execs setsid, which execs bash: $! is the leader of the workshop's own process group.
  # --default-signal: a command started with & by a script ignores SIGINT, and bash cannot trap
  # a signal ignored on entry; a terminal's workshop gets it, so this one must too.
  env --default-signal=INT "${WENV[@]}" WORKSHOP_LOG_DIR="$out" setsid scripts/workshop.sh --yes --quick "$step" </dev/null >"$out/workshop.out" 2>&1 &
  pid=$!
  for ((i = 0; i < 1200; i++)); do
    grep -qF -- "$pattern" "$out/workshop.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  sleep "$delay"
  kill -INT -- "-$pid" 2>/dev/null || fail "interrupt $name: the workshop had already ended"
  wait "$pid" || rc=$?
  ((rc == 130)) || fail "interrupt $name: exit status $rc, not 130 (output: $out/workshop.out)"
  grep -q 'The stack is as it was' "$out/workshop.out" || fail "interrupt $name: no 'The stack is as it was' (output: $out/workshop.out)"
  whole "after Ctrl-C during $name" || true
}

# ---------------------------------------------------------------------------------------------

main() {
  setup
  phase_cause
  local n
  for ((n = 1; n <= RUNS; n++)); do phase_run "$n"; done
  if [[ $INTERRUPT == yes ]]; then
    interrupt step4-after-kill 4 '$ kill -9' 3
    interrupt step8-rebalance 8 'rebalance 127.0.0.1' 2
  fi
  if ((${#FAILURES[@]} > 0)); then
    say "FAILED (${#FAILURES[@]}) after $((SECONDS - STARTED)) s:"
    printf '  - %s\n' "${FAILURES[@]}"
    exit 1
  fi
  say "PASS after $((SECONDS - STARTED)) s ($RUNS workshop runs$([[ $INTERRUPT == yes ]] && echo ", 2 interruptions"); logs in $DIR)"
}

main
