#!/usr/bin/env bash
# scripts/chaos.sh — hotfeed's fault suite (docs/reliability.md).
#
# Runs each fault scenario against a PRIVATE stack (its own PostgreSQL, its own 6-node Redis
# Cluster, its own `hotfeed serve`), under loadgen open-loop load (Zipf reads at --rate plus
# --write-rate posts), and prints PASS/FAIL per criterion with the measured figures.
#
#   scripts/chaos.sh                      every scenario, release binaries, 500 reads/s + 10 posts/s
#   scripts/chaos.sh killmaster freeze    only those
#   scripts/chaos.sh --ci                 the short subset (killmaster, migrate, scaleout, fleet) at 100 reads/s,
#                                         debug binaries, a smaller seed; tears the stack down after
#   scripts/chaos.sh down                 stop and remove the private stack
#
# The dev stack (PostgreSQL on 127.0.0.1:5432, Redis on 7000-7005, the app on 8080) is never
# touched: the suite refuses those ports. Run `scripts/chaos.sh --help` for every option.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
SCENARIOS_ALL=(killmaster freeze allredis postgres migrate coldstart scaleout repeat fleet)
SCENARIOS_CI=(killmaster migrate scaleout fleet)

usage() {
  cat <<'EOF'
usage: scripts/chaos.sh [options] [scenario ...]
       scripts/chaos.sh down            stop and remove the private stack (same CHAOS_* settings)

Fault scenarios (default: all, in this order):
  killmaster  kill -9 of the master holding user 1's pages ({user:1}); restarted (it rejoins as a
              replica) only before the next scenario
  freeze      SIGSTOP of that master for 15 s, then SIGCONT (its replica is promoted after ~4 s)
  allredis    every Redis node killed, down for 30 s, then started again
  postgres    PostgreSQL stopped (pg_ctl -m fast) for 20 s, then started again
  migrate     user 1's slot moved to another master with CLUSTER SETSLOT IMPORTING/MIGRATING and
              MIGRATE, key by key, while reads and writes run (ASK redirects)
  coldstart   the service's keys flushed and PostgreSQL restarted (cold buffers), then full load
  scaleout    a fourth master added (redis-cli --cluster add-node, then rebalance
              --cluster-use-empty-masters) while reads and writes run; in the after phase its
              slots moved back (rebalance weight 0) and the node removed (del-node)
  repeat      five kill -9s in a row of the master holding user 1's pages, on one service instance
              never restarted: each killed node is brought back as a replica (redis-server from its
              config and nodes.conf) and the next kill hits whichever master then holds the slot; each kill is measured
              and judged as killmaster (plus: no Redis error on a healthy node), and the fifth must
              be no worse than the first
  fleet       three instances behind HAProxy (deploy/haproxy/haproxy.cfg), each restarted in turn
              (SIGTERM, drain, start) under load; then a write's visibility across instances
              (scripts/lib/fleet.sh; ports CHAOS_APP_PORT to CHAOS_APP_PORT+7)

Each scenario: a warm-up, then three loadgen phases back to back (pre: baseline; during: the fault,
injected 1 s in; after: recovery), a probe that posts as user 1 and reads it back, a /metrics
sampler, then a check of every written post against PostgreSQL and the service. Pass criteria and
measured figures are printed per scenario; docs/reliability.md explains them.

options:
  --ci               short subset (killmaster migrate scaleout fleet) at --rate 100 --write-rate 5, debug build,
                     --posts 50000, shorter phases; the private stack is removed at the end
  --rate N           open-loop reads per second (default 500; --ci 100)
  --write-rate N     posts per second by loadgen beside the reads (default 10; --ci 5)
  --posts N          posts seeded by datagen (default 200000; --ci 50000)
  --debug            use debug binaries (default: release; --ci: debug)
  --release          use release binaries
  --no-build         do not run cargo build (use the binaries already in target/)
  --keep             leave the private stack running after the run (default; --ci removes it)
  --down             remove the private stack after the run
  --json             print the results as JSON on stdout (progress and PASS/FAIL lines on stderr)
  -h, --help         this text

environment (defaults in brackets; --ci uses the second value):
  CHAOS_DIR              state and run directory [/var/tmp/hotfeed-chaos | /var/tmp/hotfeed-chaos-ci]
  CHAOS_REDIS_BASE_PORT  first of the 6 Redis ports [7700 | 7800]; bus ports are +10000
  CHAOS_PG_PORT          private PostgreSQL port [5477 | 5478]
  CHAOS_APP_PORT         port of the service under test [18770 | 18780]
  CHAOS_LOCK             lock held around every load measurement [/tmp/hotfeed-bench.lock]
  CHAOS_RUST_LOG         RUST_LOG of the service [warn]
  CHAOS_BIN_DIR          take hotfeed, loadgen and datagen from this directory, build nothing
  CHAOS_FLEET_DRAIN_SECS SHUTDOWN_DRAIN_SECS of the fleet's instances [5 | 3]; 0 for a control run
  CHAOS_FLEET_RETRIES    off: the fleet's HAProxy sends nothing twice (retries 0), for a control run
  Service settings to try (REDIS_TIMEOUT_MS, REDIS_REBUILD_AFTER_ERRORS, DB_MAX_CONNECTIONS,
  DB_MAX_INFLIGHT, ...) are passed through from the environment; DATABASE_URL, REDIS_URLS,
  APP_HOST and APP_PORT are always the private stack's.

exit status: 0 every criterion passed, 1 some criterion failed, 2 bad usage, 3 the stack or the
service could not be set up, 130 interrupted.
EOF
}

# ---------------------------------------------------------------------------------------------
# Options

CI=no JSON=no BUILD=yes PROFILE="" TEARDOWN="" RATE="" WRATE="" POSTS="" CMD=run
SELECTED=()
while (($# > 0)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --ci) CI=yes ;;
    --json) JSON=yes ;;
    --no-build) BUILD=no ;;
    --debug) PROFILE=debug ;;
    --release) PROFILE=release ;;
    --keep) TEARDOWN=no ;;
    --down) TEARDOWN=yes ;;
    --rate) RATE=${2:-}; shift ;;
    --write-rate) WRATE=${2:-}; shift ;;
    --posts) POSTS=${2:-}; shift ;;
    --rate=*) RATE=${1#*=} ;;
    --write-rate=*) WRATE=${1#*=} ;;
    --posts=*) POSTS=${1#*=} ;;
    down) CMD=down ;;
    killmaster | freeze | allredis | postgres | migrate | coldstart | scaleout | repeat | fleet) SELECTED+=("$1") ;;
    *) printf 'chaos: unknown argument %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $CI == yes ]]; then
  : "${RATE:=100}" "${WRATE:=5}" "${POSTS:=50000}" "${PROFILE:=debug}" "${TEARDOWN:=yes}"
  CHAOS_DIR=${CHAOS_DIR:-/var/tmp/hotfeed-chaos-ci}
  REDIS_BASE=${CHAOS_REDIS_BASE_PORT:-7800}
  PG_PORT=${CHAOS_PG_PORT:-5478}
  APP_PORT_=${CHAOS_APP_PORT:-18780}
  ((${#SELECTED[@]} > 0)) || SELECTED=("${SCENARIOS_CI[@]}")
else
  : "${RATE:=500}" "${WRATE:=10}" "${POSTS:=200000}" "${PROFILE:=release}" "${TEARDOWN:=no}"
  CHAOS_DIR=${CHAOS_DIR:-/var/tmp/hotfeed-chaos}
  REDIS_BASE=${CHAOS_REDIS_BASE_PORT:-7700}
  PG_PORT=${CHAOS_PG_PORT:-5477}
  APP_PORT_=${CHAOS_APP_PORT:-18770}
  ((${#SELECTED[@]} > 0)) || SELECTED=("${SCENARIOS_ALL[@]}")
fi
for n in "$RATE" "$WRATE" "$POSTS" "$REDIS_BASE" "$PG_PORT" "$APP_PORT_"; do
  [[ $n =~ ^[0-9]+$ ]] || { printf 'chaos: not a whole number: %s\n' "$n" >&2; exit 2; }
done
LOCK=${CHAOS_LOCK:-/tmp/hotfeed-bench.lock}
USERS=100
PROBE_AUTHOR=1       # the hottest user: the faults target its slot
PROBE_WRITE_RATE=2   # posts per second by the probe (as user 1), each read back at once
TTL=${CACHE_LIST_TTL_SECS:-60}  # the documented staleness bound (docs/ARCHITECTURE.md)

# Phase lengths (seconds). `during` starts with the fault injected 1 s in.
if [[ $CI == yes ]]; then
  WARM=3 PRE=4 AFTER=6
else
  WARM=5 PRE=6 AFTER=10
fi

# ---------------------------------------------------------------------------------------------
# Safety: never the dev stack

if ((REDIS_BASE <= 7005 && REDIS_BASE + 5 >= 7000)) || ((REDIS_BASE <= 6379 && REDIS_BASE + 5 >= 6379)); then
  printf 'chaos: CHAOS_REDIS_BASE_PORT=%s overlaps the dev stack (7000-7005) or 6379; refused\n' "$REDIS_BASE" >&2
  exit 2
fi
if ((PG_PORT == 5432 || APP_PORT_ == 8080)); then
  printf 'chaos: port 5432 / 8080 belong to the dev stack; refused\n' >&2
  exit 2
fi
case $CHAOS_DIR in
  /*) ;;
  *) CHAOS_DIR=$PWD/$CHAOS_DIR ;;
esac
CHAOS_DIR=${CHAOS_DIR%/}
[[ -n $CHAOS_DIR && $CHAOS_DIR != "$HOME" && $CHAOS_DIR != "$ROOT" ]] ||
  { printf 'chaos: CHAOS_DIR must be a dedicated directory\n' >&2; exit 2; }

STACK_DIR=$CHAOS_DIR/stack
DB_URL=postgres://postgres@127.0.0.1:$PG_PORT/hotfeed
APP_URL=http://127.0.0.1:$APP_PORT_
PORTS=()
for ((i = 0; i < 6; i++)); do PORTS+=($((REDIS_BASE + i))); done
REDIS_URLS=$(printf 'redis://127.0.0.1:%s,' "${PORTS[@]}")
REDIS_URLS=${REDIS_URLS%,}
HELPER=$CHAOS_DIR/chaos_helper.py
STACK_SH=$CHAOS_DIR/bin/scripts/stack.sh

# ---------------------------------------------------------------------------------------------
# Small helpers

# The shared redis-cli helpers (cluster_run, drain_node, shutdown_if_empty, cluster_summary ...),
# sourced first so that this suite's own rcli and field below (3 s deadline) are the ones used.
# shellcheck source=scripts/lib/cluster.sh disable=SC1091
. "$ROOT/scripts/lib/cluster.sh"
# The fleet scenario (three instances behind HAProxy); it uses this file's helpers.
# shellcheck source=scripts/lib/fleet.sh disable=SC1091
. "$ROOT/scripts/lib/fleet.sh"

say() { printf 'chaos: %s\n' "$*" >&2; }
die() { printf 'chaos: error: %s\n' "$*" >&2; exit "${2:-3}"; }
now() { date +%s.%N; }
event() { printf '%s %s\n' "$(now)" "$*" >>"$SCEN_DIR/events"; say "  [$1] ${*:2}"; }
# redis-cli with a deadline: a frozen node must never hang the suite.
rcli() { local port=$1; shift; timeout 3 redis-cli -p "$port" "$@" 2>/dev/null; }
field() { sed -n "s/^$1://p" | tr -d '\r' | head -n1; }

need() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (scripts/stack.sh installs redis and PostgreSQL; python3, jq, curl and flock come with the distribution)" 3
}

# The copy of scripts/stack.sh that the suite drives: run from $CHAOS_DIR/bin, its .env goes there,
# never into the checkout's .env (which points at the dev stack).
stack() {
  mkdir -p "$CHAOS_DIR/bin/scripts/lib"
  cp "$ROOT/scripts/stack.sh" "$STACK_SH"
  cp "$ROOT/scripts/lib/cluster.sh" "$CHAOS_DIR/bin/scripts/lib/cluster.sh"
  STACK_DIR=$STACK_DIR STACK_REDIS_BASE_PORT=$REDIS_BASE STACK_PG_PORT=$PG_PORT \
    DATABASE_URL=$DB_URL STACK_WAIT_SECS=${STACK_WAIT_SECS:-90} \
    timeout 300 bash "$STACK_SH" "$@" 8>&-
}

# PostgreSQL's server tools and data directory of the private server stack.sh started.
pg_ctl_() {
  local bindir
  bindir=$(sed -n 's/^bindir=//p' "$STACK_DIR/pg/started-by-stack" 2>/dev/null)
  [[ -x $bindir/pg_ctl ]] || { say "no private PostgreSQL under $STACK_DIR/pg"; return 1; }
  if [[ $EUID -eq 0 ]]; then
    (cd "$STACK_DIR/pg" && runuser -u postgres -- "$bindir/pg_ctl" -D "$STACK_DIR/pg/data" "$@" 8>&-)
  else
    "$bindir/pg_ctl" -D "$STACK_DIR/pg/data" "$@" 8>&-
  fi
}
pg_start() {
  pg_ctl_ -l "$STACK_DIR/pg/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k '' -c listen_addresses=127.0.0.1" start >/dev/null
}
pg_stop() { pg_ctl_ -m fast -w -t 60 stop >/dev/null; }
# PostgreSQL's client tools: on PATH, else the highest /usr/lib/postgresql/*/bin (as stack.sh).
pg_tool() {
  command -v "$1" 2>/dev/null || printf '%s\n' /usr/lib/postgresql/*/bin/"$1" | sort -V | tail -n1
}
pg_ready() { [[ -x $(pg_tool pg_isready) ]] && "$(pg_tool pg_isready)" -q -t 2 -h 127.0.0.1 -p "$PG_PORT"; }
psql_() { "$(pg_tool psql)" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB_URL" "$@"; }

# A port of ours that answers PING, skipping the ones given.
live_port() {
  local p skip
  for p in "${PORTS[@]}"; do
    for skip in "$@"; do [[ $p == "$skip" ]] && continue 2; done
    [[ $(rcli "$p" ping) == PONG ]] && { echo "$p"; return 0; }
  done
  return 1
}

# The port of the master that serves SLOT, as CLUSTER NODES on a live node says (skipping ports).
slot_owner() {
  local slot=$1 port
  shift
  port=$(live_port "$@") || return 1
  rcli "$port" cluster nodes | awk -v s="$slot" '
    $3 ~ /master/ && $3 !~ /fail/ {
      for (i = 9; i <= NF; i++) {
        if ($i ~ /^\[/) continue
        n = split($i, r, "-"); lo = r[1] + 0; hi = (n == 2 ? r[2] : r[1]) + 0
        if (s >= lo && s <= hi) { split($2, a, "[:@]"); print a[2]; exit }
      }
    }'
}
masters() {
  local port
  port=$(live_port) || return 1
  rcli "$port" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 { split($2, a, "[:@]"); print a[2] }' | sort -n
}
node_pid() { field process_id < <(rcli "$1" info server); }
hot_slot() { rcli "$(live_port)" cluster keyslot "{user:$PROBE_AUTHOR}"; }

# ---------------------------------------------------------------------------------------------
# Processes this run started; cleanup ends exactly these.

APP_PID="" PROBE_PID="" WATCH_PID="" LOAD_PID="" FROZEN_PID="" PG_STOPPED=no EXTRA_PORT=""

# Ends PID and, first, every process it started (a background function's subshell leaves its
# `timeout` and loadgen behind otherwise): by id, children first.
stop_pid() {
  local pid=$1 i child
  [[ -n $pid ]] || return 0
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do stop_pid "$child"; done
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $FROZEN_PID ]] && kill -CONT "$FROZEN_PID" 2>/dev/null
  stop_pid "$LOAD_PID"
  stop_pid "$WATCH_PID"
  stop_pid "$PROBE_PID"
  stop_pid "$APP_PID"
  fleet_stop
  if [[ $PG_STOPPED == yes ]]; then pg_start || true; fi
  # A fourth master left behind (a failed or interrupted scaleout): it is shut down only once it
  # owns no slot. Else scripts/stack.sh up moves its slots back and removes it from the cluster
  # first; if even that fails it is left running, and said so.
  if [[ -n $EXTRA_PORT ]]; then
    remove_extra_node
  elif [[ $CLUSTER_BROKEN == yes && $TEARDOWN != yes ]]; then
    repair_private_cluster
  fi
  if [[ $TEARDOWN == yes && -f $STACK_SH ]]; then
    say "removing the private stack ($CHAOS_DIR)"
    stack down >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
# scripts/stack.sh up on the private stack: closes open slots, moves a fourth master's slots back
# and removes it; its repair lines are shown.
repair_private_cluster() {
  local mark
  mark=$(wc -l <"$CHAOS_DIR/stack.log" 2>/dev/null || echo 0)
  say "repairing the private cluster with scripts/stack.sh up (closes open slots, moves a fourth master's slots back and removes it)"
  stack up >>"$CHAOS_DIR/stack.log" 2>&1 || say "scripts/stack.sh up failed (see $CHAOS_DIR/stack.log)"
  tail -n +"$((mark + 1))" "$CHAOS_DIR/stack.log" | grep -E '^(stack: (repair|error)|    )' >&2 || true
}

remove_extra_node() {
  local out
  if out=$(shutdown_if_empty "$EXTRA_PORT" 2>&1); then
    EXTRA_PORT=""
    return 0
  fi
  say "$out"
  repair_private_cluster
  if out=$(shutdown_if_empty "$EXTRA_PORT" 2>&1); then
    EXTRA_PORT=""
  else
    say "$out; 127.0.0.1:$EXTRA_PORT is left running. 'CHAOS_DIR=$CHAOS_DIR scripts/chaos.sh down' removes the whole private stack."
  fi
}

# A cluster operation failed: its errors were printed; show the cluster and stop the suite (the
# cleanup repairs the private cluster before anything is shut down).
CLUSTER_BROKEN=no
cluster_failed() {
  CLUSTER_BROKEN=yes
  say "$1"
  say "the private cluster now:"
  cluster_summary "${PORTS[@]}" "$((REDIS_BASE + 6))" >&2 || true
  cluster_problems "${PORTS[@]}" | sed 's/^/  problem: /' >&2 || true
  say "whole redis-cli output: $SCEN_DIR/redis-cli.log; the cleanup repairs the cluster with scripts/stack.sh up ('CHAOS_DIR=$CHAOS_DIR scripts/chaos.sh down' removes it instead)"
  die "$1" 3
}

# setslot PORT ARG...: CLUSTER SETSLOT ARG... on PORT; any answer but OK stops the suite.
setslot() {
  local port=$1 out
  shift
  out=$(rcli "$port" cluster setslot "$@" 2>&1)
  [[ $out == OK ]] || cluster_failed "CLUSTER SETSLOT $* on 127.0.0.1:$port answered: ${out:-nothing (no reply within 3 s)}"
}

on_signal() {
  say "interrupted; cleaning up"
  exit 130
}

# ---------------------------------------------------------------------------------------------
# Set-up: binaries, stack, data, service

build() {
  local args=(-p hotfeed -p loadgen -p datagen)
  [[ $PROFILE == release ]] && args=(--release "${args[@]}")
  COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
  if [[ -n ${CHAOS_BIN_DIR:-} ]]; then
    BIN=$CHAOS_BIN_DIR
    COMMIT="binaries from $BIN"
    BUILD=no
  elif [[ $BUILD == yes ]]; then
    say "cargo build ${args[*]}"
    (cd "$ROOT" && cargo build -q "${args[@]}" 8>&-) || die "cargo build failed"
  fi
  BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE}
  for b in hotfeed loadgen datagen; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing (run without --no-build)"
  done
  # A copy: others may rebuild target/ in this checkout while the suite runs, and every scenario
  # must start the same service.
  mkdir -p "$CHAOS_DIR/bin/build"
  if [[ $BIN != "$CHAOS_DIR/bin/build" ]]; then
    cp "$BIN/hotfeed" "$BIN/loadgen" "$BIN/datagen" "$CHAOS_DIR/bin/build/" || die "cannot copy the binaries"
    BIN=$CHAOS_DIR/bin/build
  fi
}

stack_up() {
  local log=$CHAOS_DIR/stack.log
  # Something answering on our PostgreSQL port that this stack did not start is someone else's.
  if pg_ready && [[ ! -f $STACK_DIR/pg/started-by-stack ]]; then
    die "a PostgreSQL this suite did not start answers on 127.0.0.1:$PG_PORT; set CHAOS_PG_PORT"
  fi
  stack up >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "the private stack did not come up (log: $log)"; }
  [[ -f $STACK_DIR/pg/started-by-stack ]] || die "the stack reused a PostgreSQL it did not start; refusing to seed it"
}

seed() {
  say "seeding: datagen --users $USERS --posts $POSTS (private PostgreSQL on $PG_PORT)"
  (cd "$CHAOS_DIR" && timeout 600 "$BIN/datagen" --database-url "$DB_URL" --redis-urls "$REDIS_URLS" \
    --cache-key-prefix hf --users "$USERS" --posts "$POSTS" --seed 42 8>&-) \
    >"$CHAOS_DIR/datagen.log" 2>&1 || { tail -n 20 "$CHAOS_DIR/datagen.log" >&2; die "datagen failed"; }
  psql_ -c 'ANALYZE' >/dev/null 2>&1 || true
}

# Service settings passed through from the environment, for the record.
service_env() {
  env | grep -E '^(REDIS_|DB_|CACHE_|HTTP_|APP_WORKERS|FEED_|PAGE_|ADMIN_API_KEY)' |
    grep -vE '^(REDIS_URLS|ADMIN_API_KEY)=' | sort | tr '\n' ' '
}

start_app() {
  local log=$1 i
  (cd "$CHAOS_DIR" && exec env DATABASE_URL="$DB_URL" REDIS_URLS="$REDIS_URLS" APP_HOST=127.0.0.1 \
    APP_PORT="$APP_PORT_" CACHE_KEY_PREFIX=hf RUST_LOG="${CHAOS_RUST_LOG:-warn}" \
    "$BIN/hotfeed" serve 8>&-) >>"$log" 2>&1 &
  APP_PID=$!
  for ((i = 0; i < 300; i++)); do
    kill -0 "$APP_PID" 2>/dev/null || { tail -n 20 "$log" >&2; die "hotfeed serve exited (log: $log)"; }
    curl -fs -o /dev/null "$APP_URL/ping" && return 0
    sleep 0.2
  done
  die "hotfeed serve did not answer /ping within 60 s (log: $log)"
}

stop_app() { stop_pid "$APP_PID"; APP_PID=""; }

# The service's log by message (numbers masked), most frequent first; a large log keeps only its
# first and last 2,000 lines beside that summary (a dead cluster can make it grow by GB a minute).
summarize_log() {
  local log=$1
  [[ -f $log ]] || return 0
  sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' "$log" | cut -c1-200 | sort | uniq -c | sort -rn >"$log.summary"
  if (($(stat -c %s "$log") > 20000000)); then
    head -n 2000 "$log" >"$log.head"
    tail -n 2000 "$log" >"$log.tail"
    rm -f "$log"
  fi
}

# Authentication, if this build has it: the admin key goes to the service, the probe and loadgen.
LOADGEN_AUTH=()
setup_auth() {
  API_KEY=""
  # The help is read whole before grep: `--help | grep -q` under pipefail fails at random when grep
  # leaves before the program's last write (SIGPIPE).
  local service_help loadgen_help
  service_help=$("$BIN/hotfeed" serve --help 2>/dev/null || true)
  loadgen_help=$("$BIN/loadgen" --help 2>/dev/null || true)
  if grep -qi 'admin-api-key' <<<"$service_help"; then
    API_KEY=${ADMIN_API_KEY:-chaos-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
    export ADMIN_API_KEY=$API_KEY
    if grep -q -- '--api-key' <<<"$loadgen_help"; then
      LOADGEN_AUTH=(--api-key "$API_KEY")
    else
      say "note: the service authenticates writes but loadgen has no --api-key; its posts may be refused"
    fi
  fi
}

# ---------------------------------------------------------------------------------------------
# Load

# loadgen NAME SECONDS SEED: one open-loop phase, JSON report in $SCEN_DIR/NAME.json.
loadgen() {
  local name=$1 secs=$2 seed=$3 writes=()
  printf '%s load %s loadavg=%s\n' "$(now)" "$name" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)" >>"$SCEN_DIR/events"
  ((WRATE > 0)) && writes=(--write-rate "$WRATE")
  (cd "$CHAOS_DIR" && timeout $((secs + 60)) "$BIN/loadgen" --url "$APP_URL" --rate "$RATE" \
    "${writes[@]}" --duration "${secs}s" --warmup 0s --users "$USERS" --seed "$seed" \
    --redis-urls "$REDIS_URLS" "${LOADGEN_AUTH[@]}" --json --quiet) \
    >"$SCEN_DIR/$name.json" 2>"$SCEN_DIR/$name.err"
}
loadgen_bg() { loadgen "$@" & LOAD_PID=$!; }
loadgen_wait() { wait "$LOAD_PID"; LOAD_PID=""; }

# Records every change of the owner of user 1's slot (promotion, migration) in the events file.
watch_owner() {
  local slot=$1 last="" owner
  shift
  while :; do
    owner=$(slot_owner "$slot" "$@") || owner=""
    if [[ -n $owner && $owner != "$last" ]]; then
      printf '%s owner 127.0.0.1:%s\n' "$(now)" "$owner" >>"$SCEN_DIR/events"
      last=$owner
    fi
    sleep 0.25
  done
}

start_probe() {
  python3 "$HELPER" probe --url "$APP_URL" --out "$SCEN_DIR/probe.json" --stop "$SCEN_DIR/stop" \
    --author "$PROBE_AUTHOR" --write-rate "$PROBE_WRITE_RATE" --api-key "${API_KEY:-}" \
    --tag "$(basename "$SCEN_DIR")" --pid "$APP_PID" --log "$SCEN_DIR/app.log" \
    2>"$SCEN_DIR/probe.err" 8>&- &
  PROBE_PID=$!
}
# stop_helper PID: asks a Python helper to stop (the stop file), gives it 10 s to write its
# results, then stops it.
stop_helper() {
  local i
  : >"$SCEN_DIR/stop"
  for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$1"
}
stop_probe() {
  stop_helper "$PROBE_PID"
  PROBE_PID=""
}

# ---------------------------------------------------------------------------------------------
# Scenarios. Each runs between scenario_begin and scenario_end; scenario_begin has made sure the
# stack is whole and healthy and the service freshly started.

scenario_begin() {
  local name=$1
  SCEN_DIR=$RUN_DIR/$name
  mkdir -p "$SCEN_DIR"
  : >"$SCEN_DIR/events"
  say "== $name"
  stack_up
  start_app "$SCEN_DIR/app.log"
  SLOT=$(hot_slot)
  OWNER=$(slot_owner "$SLOT")
  [[ -n $SLOT && -n $OWNER ]] || die "cannot find the owner of {user:$PROBE_AUTHOR}'s slot"
  OWNER_PID=$(node_pid "$OWNER")
  START_MAX_ID=$(psql_ -c 'SELECT coalesce(max(id), 0) FROM posts')
  say "  {user:$PROBE_AUTHOR} is slot $SLOT, on master 127.0.0.1:$OWNER (pid $OWNER_PID)"
  # Every load measurement holds the shared bench lock (another helper measures on this machine).
  say "  waiting for $LOCK"
  exec 8>"$LOCK"
  flock -w 1800 8 || die "could not take $LOCK within 30 min"
  loadgen warm "$WARM" 7
  event start "slot=$SLOT owner=127.0.0.1:$OWNER rate=$RATE write_rate=$WRATE"
  start_probe
  loadgen pre "$PRE" 1
}

scenario_end() {
  local name=$1 bound=$2
  shift 2
  event end ""
  stop_probe
  flock -u 8
  exec 8>&-
  [[ -n $WATCH_PID ]] && { stop_pid "$WATCH_PID"; WATCH_PID=""; }
  say "  verifying every post written since id $START_MAX_ID"
  python3 "$HELPER" verify --url "$APP_URL" --db-url "$DB_URL" --start-max-id "$START_MAX_ID" \
    --probe "$SCEN_DIR/probe.json" --bound "$bound" --out "$SCEN_DIR/verify.json" --psql "$(pg_tool psql)" \
    --api-key "${API_KEY:-}" 2>>"$SCEN_DIR/probe.err"
  curl -s "$APP_URL/metrics" >"$SCEN_DIR/metrics.txt" || true
  stop_app
  summarize_log "$SCEN_DIR/app.log"
  local ci=()
  [[ $CI == yes ]] && ci=(--ci)
  python3 "$HELPER" evaluate --scenario "$name" --dir "$SCEN_DIR" --rate "$RATE" --write-rate "$WRATE" \
    --service-env "$(service_env)" "${ci[@]}" "$@" >"$SCEN_DIR/result.txt"
  cat "$SCEN_DIR/result.txt" >&2
}

scenario_killmaster() {
  local during=20
  [[ $CI == yes ]] && during=12
  scenario_begin killmaster
  WATCH_PID=""
  loadgen_bg during "$during" 2
  sleep 1
  event inject "kill -9 of master 127.0.0.1:$OWNER (pid $OWNER_PID)"
  kill -KILL "$OWNER_PID"
  watch_owner "$SLOT" "$OWNER" & WATCH_PID=$!
  loadgen_wait
  loadgen after "$AFTER" 3
  scenario_end killmaster "$TTL" --ref inject
}

scenario_freeze() {
  local frozen=15 during=$((1 + 15 + 6))
  scenario_begin freeze
  loadgen_bg during "$during" 2
  sleep 1
  event inject "SIGSTOP of master 127.0.0.1:$OWNER (pid $OWNER_PID) for ${frozen}s"
  FROZEN_PID=$OWNER_PID
  kill -STOP "$OWNER_PID"
  watch_owner "$SLOT" "$OWNER" & WATCH_PID=$!
  sleep "$frozen"
  kill -CONT "$OWNER_PID"
  FROZEN_PID=""
  event restore "SIGCONT of 127.0.0.1:$OWNER"
  loadgen_wait
  loadgen after "$AFTER" 3
  scenario_end freeze "$TTL" --ref inject
}

scenario_allredis() {
  local down=30 during=$((1 + 30 + 14)) p pid
  scenario_begin allredis
  loadgen_bg during "$during" 2
  sleep 1
  event inject "kill -9 of all six Redis nodes for ${down}s"
  for p in "${PORTS[@]}"; do
    pid=$(cat "$STACK_DIR/redis/$p/redis.pid" 2>/dev/null) && kill -KILL "$pid" 2>/dev/null
  done
  sleep "$down"
  event restore "starting the six nodes (scripts/stack.sh up)"
  if stack up >>"$CHAOS_DIR/stack.log" 2>&1; then
    event healthy "cluster ok, replicas in sync"
  else
    event healthy "stack up failed (see $CHAOS_DIR/stack.log)"
  fi
  loadgen_wait
  loadgen after "$AFTER" 3
  scenario_end allredis "$TTL" --ref restore
}

scenario_postgres() {
  local down=20 during=$((1 + 20 + 9))
  scenario_begin postgres
  loadgen_bg during "$during" 2
  sleep 1
  event inject "pg_ctl stop -m fast (PostgreSQL down for ${down}s)"
  PG_STOPPED=yes
  pg_stop || say "pg_ctl stop failed"
  sleep "$down"
  pg_start || say "pg_ctl start failed"
  PG_STOPPED=no
  event restore "pg_ctl start: PostgreSQL accepts connections"
  loadgen_wait
  loadgen after "$AFTER" 3
  scenario_end postgres "$TTL" --ref restore
}

scenario_migrate() {
  local during=20 hold=8 dst src_id dst_id keys k m
  local started moved=0 errs_before errs_after
  [[ $CI == yes ]] && during=16 hold=6
  scenario_begin migrate
  dst=$(masters | grep -vx "$OWNER" | head -n1)
  src_id=$(rcli "$OWNER" cluster myid)
  dst_id=$(rcli "$dst" cluster myid)
  errs_before="$(rcli "$OWNER" info errorstats | tr -d '\r' | tr '\n' ' ')|$(rcli "$dst" info errorstats | tr -d '\r' | tr '\n' ' ')"
  loadgen_bg during "$during" 2
  sleep 1
  event inject "slot $SLOT: 127.0.0.1:$OWNER -> 127.0.0.1:$dst (IMPORTING/MIGRATING, MIGRATE key by key, held >= ${hold}s)"
  setslot "$dst" "$SLOT" importing "$src_id"
  setslot "$OWNER" "$SLOT" migrating "$dst_id"
  started=$SECONDS
  # One key at a time, 0.3 s apart, for at least $hold s: the slot stays half-moved, so reads and
  # writes of user 1 meet ASK (key already moved) and TRYAGAIN (a multi-key script split) replies.
  while ((SECONDS - started < 60)); do
    keys=$(rcli "$OWNER" cluster getkeysinslot "$SLOT" 1)
    if [[ -z $keys ]]; then
      ((SECONDS - started >= hold)) && break
    else
      for k in $keys; do
        rcli "$OWNER" migrate 127.0.0.1 "$dst" "" 0 5000 replace keys "$k" >/dev/null && moved=$((moved + 1))
      done
    fi
    sleep 0.3
  done
  keys=$(rcli "$OWNER" cluster countkeysinslot "$SLOT")
  setslot "$dst" "$SLOT" node "$dst_id"
  setslot "$OWNER" "$SLOT" node "$dst_id"
  for m in $(masters); do setslot "$m" "$SLOT" node "$dst_id"; done
  event restore "slot $SLOT owned by 127.0.0.1:$dst ($moved keys migrated, $keys left behind)"
  loadgen_wait
  loadgen after "$AFTER" 3
  errs_after="$(rcli "$OWNER" info errorstats | tr -d '\r' | tr '\n' ' ')|$(rcli "$dst" info errorstats | tr -d '\r' | tr '\n' ' ')"
  scenario_end migrate "$TTL" --ref restore --migrate-dst "$dst" --migrate-owner-now "$(slot_owner "$SLOT")" \
    --errorstats-before "$errs_before" --errorstats-after "$errs_after" --migrated-keys "$moved"
}

# slots_of PORT: how many slots the master on PORT owns, by its own view.
slots_of() {
  rcli "$1" cluster nodes | awk '$3 ~ /myself/ {
    for (i = 9; i <= NF; i++) {
      if ($i ~ /^\[/) continue
      n = split($i, r, "-"); c += (n == 2 ? r[2] - r[1] + 1 : 1)
    }
  } END { print c + 0 }'
}

# cluster_settled N PORT...: every node on PORT... reports cluster_state:ok and N known nodes.
cluster_settled() {
  local want=$1 p i ok
  shift
  for ((i = 0; i < 100; i++)); do
    ok=yes
    for p in "$@"; do
      [[ $(rcli "$p" cluster info | tr -d '\r' | awk -F: '$1 == "cluster_state" || $1 == "cluster_known_nodes" { printf "%s;", $2 }') == "ok;$want;" ]] || ok=no
    done
    [[ $ok == yes ]] && return 0
    sleep 0.2
  done
  return 1
}

scenario_scaleout() {
  local during=25 new=$((REDIS_BASE + 6)) dir=$CHAOS_DIR/extra-node id slots seen back left
  [[ $CI == yes ]] && during=20
  scenario_begin scaleout
  mkdir -p "$dir"
  rm -f "$dir/nodes.conf"
  printf '%s\n' "port $new" "bind 127.0.0.1" "protected-mode no" "daemonize yes" "dir \"$dir\"" \
    "pidfile \"$dir/redis.pid\"" "logfile \"$dir/redis.log\"" "cluster-enabled yes" \
    "cluster-config-file nodes.conf" "cluster-node-timeout 2000" "cluster-require-full-coverage no" \
    "cluster-allow-reads-when-down yes" 'save ""' "appendonly no" "maxmemory 256mb" \
    "maxmemory-policy allkeys-lfu" >"$dir/redis.conf"
  redis-server "$dir/redis.conf" 8>&- >/dev/null || die "the fourth master did not start (log: $dir/redis.log)"
  EXTRA_PORT=$new
  for _ in $(seq 50); do [[ $(rcli "$new" ping) == PONG ]] && break; sleep 0.2; done
  cluster_run "$SCEN_DIR/redis-cli.log" 60 add-node "127.0.0.1:$new" "127.0.0.1:${PORTS[0]}" >&2 ||
    cluster_failed "add-node of 127.0.0.1:$new failed"
  cluster_settled 7 "${PORTS[@]}" "$new" || cluster_failed "the cluster did not settle with 7 nodes"
  id=$(rcli "$new" cluster myid)
  loadgen_bg during "$during" 2
  sleep 1
  event inject "rebalance onto a fourth master, 127.0.0.1:$new (--cluster-use-empty-masters)"
  # --cluster-replace (cluster_move_flags): a key a cache fill wrote to the importing node under ASK
  # while the source still held it must not stop the move half done (scripts/workshop.sh step 8).
  # shellcheck disable=SC2046 # the flags are words
  cluster_run "$SCEN_DIR/redis-cli.log" 300 rebalance "127.0.0.1:${PORTS[0]}" --cluster-use-empty-masters \
    --cluster-pipeline 20 $(cluster_move_flags) >&2 || cluster_failed "rebalance onto 127.0.0.1:$new failed"
  slots=$(slots_of "$new")
  event restore "127.0.0.1:$new owns $slots slots"
  # The service's own view: its live snapshot (GET /api/v1/admin/stats) lists the new master with
  # every slot it now owns (the service checks the slot map once a second).
  seen=0
  for _ in $(seq 50); do
    seen=$(curl -fs "$APP_URL/api/v1/admin/stats" | jq --arg n "127.0.0.1:$new" \
      '[.nodes[] | select(.node == $n and .role == "master") | .slots[] | .[1] - .[0] + 1] | add // 0' 2>/dev/null) || seen=0
    ((seen == slots)) && break
    sleep 0.2
  done
  event owner "the service's live view lists 127.0.0.1:$new with $seen slots"
  loadgen_wait
  # Scale back in under load: the after phase runs while the slots move back and the node leaves.
  loadgen_bg after "$AFTER" 3
  # Each slot range back to the master it came from (drain_node: one reshard per range; the node
  # stays a master with no slots instead of turning into a replica), then del-node; the node is
  # shut down only once it owns nothing.
  drain_node "$SCEN_DIR/redis-cli.log" "$new" "${PORTS[@]}" >&2 || cluster_failed "moving the slots of 127.0.0.1:$new back failed"
  back=$(slots_of "$new")
  cluster_run "$SCEN_DIR/redis-cli.log" 60 del-node "127.0.0.1:${PORTS[0]}" "$id" >&2 ||
    cluster_failed "del-node of 127.0.0.1:$new failed"
  remove_extra_node
  left=$(rcli "${PORTS[0]}" cluster nodes | grep -c "$id" || true)
  event owner "scale-in: 127.0.0.1:$new had $back slots left; $left mentions of it in CLUSTER NODES"
  loadgen_wait
  scenario_end scaleout "$TTL" --ref restore --scaleout-slots "$slots" --scaleout-seen "$seen" \
    --scaleout-back "$back" --scaleout-left "$left"
}

scenario_coldstart() {
  local during=30 p left
  [[ $CI == yes ]] && during=15
  scenario_begin coldstart
  # The probe pauses, so nothing refills the cache between the flush and the load.
  : >"$SCEN_DIR/stop.pause"
  sleep 0.5
  event inject "PostgreSQL restarted (pg_ctl restart -m fast) and the service's keys (hf:*) flushed"
  PG_STOPPED=yes
  pg_stop && pg_start
  PG_STOPPED=no
  for p in $(masters); do
    timeout 60 redis-cli -p "$p" --scan --pattern 'hf:*' | awk '{ print "UNLINK", $0 }' |
      timeout 60 redis-cli -p "$p" >/dev/null 2>&1
  done
  left=0
  for p in $(masters); do left=$((left + $(timeout 30 redis-cli -p "$p" --scan --pattern 'hf:*' | wc -l))); done
  event restore "cold: $left hf:* keys left; full load from now"
  rm -f "$SCEN_DIR/stop.pause"
  loadgen during "$during" 2
  loadgen after "$AFTER" 3
  scenario_end coldstart "$TTL" --ref restore
}

# rejoined PORT: the node on PORT is a replica whose link to its master is up, and every node of
# the six reports cluster_state:ok with six known nodes (up to 60 s).
rejoined() {
  local port=$1 i info
  for ((i = 0; i < 300; i++)); do
    info=$(rcli "$port" info replication | tr -d '\r')
    if grep -qx 'role:slave' <<<"$info" && grep -qx 'master_link_status:up' <<<"$info"; then
      cluster_settled 6 "${PORTS[@]}"
      return
    fi
    sleep 0.2
  done
  return 1
}

# Five kill -9s in a row of the master holding user 1's pages, on one service instance that is
# never restarted: each kill is measured as killmaster is (its own pre, during and after phases,
# probe, verification and verdict, in repeat/killN), the killed node is brought back as a replica
# (redis-server from its config) during its after phase, and the next kill hits whichever master then holds
# the slot. The verdict: every kill within the killmaster bounds with no error on a healthy node,
# and the last no worse than the first.
scenario_repeat() {
  local kills=5 during=20 k dir=$RUN_DIR/repeat app_log ci=()
  [[ $CI == yes ]] && during=12 ci=(--ci)
  SCEN_DIR=$dir
  mkdir -p "$dir"
  : >"$dir/events"
  say "== repeat ($kills kills in a row on one instance)"
  stack_up
  app_log=$dir/app.log
  start_app "$app_log"
  SLOT=$(hot_slot)
  [[ -n $SLOT ]] || die "cannot find the slot of {user:$PROBE_AUTHOR}"
  say "  waiting for $LOCK"
  exec 8>"$LOCK"
  flock -w 1800 8 || die "could not take $LOCK within 30 min"
  loadgen warm "$WARM" 7
  for ((k = 1; k <= kills; k++)); do
    SCEN_DIR=$dir/kill$k
    mkdir -p "$SCEN_DIR"
    : >"$SCEN_DIR/events"
    OWNER=$(slot_owner "$SLOT")
    [[ -n $OWNER ]] || die "cannot find the owner of slot $SLOT"
    OWNER_PID=$(node_pid "$OWNER")
    START_MAX_ID=$(psql_ -c 'SELECT coalesce(max(id), 0) FROM posts')
    say "  kill $k of $kills: slot $SLOT on master 127.0.0.1:$OWNER (pid $OWNER_PID)"
    event start "slot=$SLOT owner=127.0.0.1:$OWNER rate=$RATE write_rate=$WRATE kill=$k"
    start_probe
    loadgen pre "$PRE" $((10 * k + 1))
    loadgen_bg during "$during" $((10 * k + 2))
    sleep 1
    event inject "kill -9 of master 127.0.0.1:$OWNER (pid $OWNER_PID), kill $k of $kills"
    kill -KILL "$OWNER_PID"
    watch_owner "$SLOT" "$OWNER" & WATCH_PID=$!
    loadgen_wait
    loadgen_bg after "$AFTER" $((10 * k + 3))
    # The node is started from its own config and nodes.conf, as an operator would, and rejoins as
    # a replica of the master that took its slots. Not with scripts/stack.sh up: in one run its
    # health check met the cluster mid-rejoin, took it for half-formed and recreated it from
    # scratch (every key gone, slots reassigned) under the load.
    event restore "127.0.0.1:$OWNER started again (redis-server with its config and nodes.conf), to rejoin as a replica"
    redis-server "$STACK_DIR/redis/$OWNER/redis.conf" 8>&- >/dev/null 2>&1 || say "redis-server 127.0.0.1:$OWNER did not start"
    if rejoined "$OWNER"; then
      event healthy "127.0.0.1:$OWNER is a replica with its link up; cluster ok on every node"
    else
      event healthy "127.0.0.1:$OWNER did not rejoin as an in-sync replica within 60 s"
    fi
    loadgen_wait
    event end ""
    stop_probe
    stop_pid "$WATCH_PID"
    WATCH_PID=""
    say "  verifying every post written since id $START_MAX_ID"
    python3 "$HELPER" verify --url "$APP_URL" --db-url "$DB_URL" --start-max-id "$START_MAX_ID" \
      --probe "$SCEN_DIR/probe.json" --bound "$TTL" --out "$SCEN_DIR/verify.json" --psql "$(pg_tool psql)" \
      --api-key "${API_KEY:-}" 2>>"$SCEN_DIR/probe.err"
    curl -s "$APP_URL/metrics" >"$SCEN_DIR/metrics.txt" || true
    python3 "$HELPER" evaluate --scenario repeat --dir "$SCEN_DIR" --rate "$RATE" --write-rate "$WRATE" \
      --service-env "$(service_env)" "${ci[@]}" --ref inject >"$SCEN_DIR/result.txt"
    sed "s/repeat:/repeat kill $k:/" "$SCEN_DIR/result.txt" >&2
  done
  flock -u 8
  exec 8>&-
  SCEN_DIR=$dir
  stop_app
  summarize_log "$app_log"
  python3 "$HELPER" repeat --dir "$dir" --kills "$kills" >"$dir/result.txt"
  cat "$dir/result.txt" >&2
}

# ---------------------------------------------------------------------------------------------

write_helper() {
  mkdir -p "$CHAOS_DIR"
  cat >"$HELPER" <<'PY'
"""Helper of scripts/chaos.sh (stdlib only): probe, verify, evaluate, summary."""
import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
KEEP = {
    "feed_pages_total", "http_requests_total", "cache_errors_total", "redis_reconnects_total",
    "db_shed_total", "cache_invalidation_failures_total", "coalesced_waits_total",
    "db_queries_total", "http_request_duration_seconds_count", "redis_errors_total",
    "feed_fanout_repairs_total",
}
PAGES_ROUTE = "/api/v1/users/{id}/posts"


class Client:
    """One keep-alive HTTP connection; a failed request or `Connection: close` closes it."""

    def __init__(self, url, timeout=5.0, api_key=""):
        host, port = url.split("//", 1)[1].rstrip("/").split(":")
        self.host, self.port, self.timeout, self.api_key = host, int(port), timeout, api_key
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if body is not None:
            headers["content-type"] = "application/json"
        if self.api_key and method != "GET":
            headers["authorization"] = "Bearer " + self.api_key
        started = time.time()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=headers)
            res = self.conn.getresponse()
            data = res.read()
            if (res.getheader("connection") or "").lower() == "close":
                self.close()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, data, time.time() - started
        except Exception as error:  # timeouts, resets: recorded as status None
            self.close()
            return None, {"error": type(error).__name__}, b"", time.time() - started


def page_ids(data):
    try:
        return [p["id"] for p in json.loads(data)["data"]]
    except Exception:
        return []


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        key, _, value = line.rpartition(" ")
        name = key.split("{", 1)[0]
        if name in KEEP or (name == "http_request_duration_seconds_bucket"
                            and ('le="1"' in key or 'route="/api/v1/users/{id}/posts"' in key)):
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


# ------------------------------------------------------------------------------------- probe

def probe(args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    reads, writes, samples = [], [], []
    author = args.author

    def reader():
        c = Client(args.url, timeout=5.0)
        while not stop.is_set():
            if os.path.exists(args.stop + ".pause"):
                time.sleep(0.05)
                continue
            t = time.time()
            status, headers, _, took = c.request("GET", f"/api/v1/users/{author}/posts")
            reads.append([t, status, round(took * 1000, 2), headers.get("x-cache", headers.get("error", ""))])
            time.sleep(max(0.0, 0.1 - (time.time() - t)))

    def writer():
        c = Client(args.url, timeout=5.0, api_key=args.api_key)
        check = Client(args.url, timeout=5.0)
        pending = []  # writes not yet seen in the author's pages
        n = 0
        period = 1.0 / args.write_rate
        while not stop.is_set():
            if os.path.exists(args.stop + ".pause"):
                time.sleep(0.05)
                continue
            t = time.time()
            n += 1
            body = json.dumps({"user_id": author, "content": f"chaos probe {args.tag} {n}"})
            status, headers, data, took = c.request("POST", "/api/v1/posts", body)
            record = {"t": t, "status": status, "ms": round(took * 1000, 2), "id": None,
                      "stale": None, "visible_after": None}
            seen = None
            if status == 201:
                record["id"] = json.loads(data)["id"]
                record["acked"] = time.time()
                s2, h2, d2, _ = check.request("GET", f"/api/v1/users/{author}/posts?limit=100")
                if s2 == 200:
                    seen = set(page_ids(d2))
                    record["stale"] = record["id"] not in seen
                    record["check_cache"] = h2.get("x-cache")
                    if record["stale"]:
                        pending.append(record)
                    else:
                        record["visible_after"] = 0.0
            elif pending:
                s3, _, d3, _ = check.request("GET", f"/api/v1/users/{author}/posts?limit=100")
                if s3 == 200:
                    seen = set(page_ids(d3))
            writes.append(record)
            if seen is not None:
                # The same page (limit=100) shows earlier stale posts now?
                for r in list(pending):
                    if r is not record and r["id"] in seen:
                        r["visible_after"] = round(time.time() - r["acked"], 3)
                        pending.remove(r)
            time.sleep(max(0.0, period - (time.time() - t)))

    truncated = [0]

    def service_cpu():
        # utime + stime of the service process, in seconds (clock ticks of 1/100 s on Linux).
        try:
            with open(f"/proc/{args.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except Exception:
            return None

    def log_bytes():
        # The service's log; past --log-cap-mb it is emptied (opened for append, so it stays a
        # plain file) and the bytes are still counted.
        try:
            size = os.path.getsize(args.log)
            if size > args.log_cap_mb * 1e6:
                with open(args.log, "r+") as f:
                    f.truncate(0)
                truncated[0] += size
                size = 0
            return truncated[0] + size
        except Exception:
            return None

    def sampler():
        c = Client(args.url, timeout=2.0)
        while not stop.is_set():
            t = time.time()
            status, _, data, _ = c.request("GET", "/metrics")
            if status == 200:
                samples.append([t, parse_metrics(data.decode()), service_cpu(), log_bytes()])
            time.sleep(max(0.0, 0.5 - (time.time() - t)))

    threads = [threading.Thread(target=f, daemon=True) for f in (reader, writer, sampler)]
    for th in threads:
        th.start()
    while not stop.is_set() and not os.path.exists(args.stop):
        time.sleep(0.1)
    stop.set()
    for th in threads:
        th.join(timeout=6)
    with open(args.out, "w") as f:
        json.dump({"reads": reads, "writes": writes, "samples": samples, "log_truncated_bytes": truncated[0]}, f)


# ------------------------------------------------------------------------------------ verify

def psql(db_url, sql, binary="psql"):
    out = subprocess.run([binary, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                          "-d", db_url, "-c", sql], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def missing_from_listings(client, by_author):
    """The ids of by_author (author -> set of new ids, all newer than any seeded post) that the
    author's listing, walked from the top by cursor, does not show."""
    missing = {}
    for author, ids in by_author.items():
        seen, cursor = set(), None
        for _ in range(len(ids) // 100 + 3):
            path = f"/api/v1/users/{author}/posts?limit=100" + (f"&cursor={cursor}" if cursor else "")
            status, _, data, _ = client.request("GET", path)
            if status != 200:
                break
            body = json.loads(data)
            seen.update(p["id"] for p in body["data"])
            cursor = body.get("next_cursor")
            if ids <= seen or not cursor:
                break
        if ids - seen:
            missing[author] = sorted(ids - seen)
    return missing


def verify(args):
    with open(args.probe) as f:
        probe_data = json.load(f)
    client = Client(args.url, timeout=10.0)
    acked = [w for w in probe_data["writes"] if w["status"] == 201]
    rows = psql(args.db_url, f"SELECT id, user_id, content FROM posts WHERE id > {int(args.start_max_id)} ORDER BY id",
                args.psql)
    in_pg = {int(r[0]): (int(r[1]), r[2]) for r in rows}
    lost = [w["id"] for w in acked if w["id"] not in in_pg]
    # By id: each acknowledged probe post reads back, with its content.
    by_id_bad = []
    for w in acked:
        status, _, data, _ = client.request("GET", f"/api/v1/posts/{w['id']}")
        if status != 200 or json.loads(data).get("id") != w["id"]:
            by_id_bad.append([w["id"], status])
    # Listings: every post in PostgreSQL since the start shows in its author's pages; a stale
    # listing is waited for, up to the documented bound after the last write.
    by_author = {}
    for pid, (author, _) in in_pg.items():
        by_author.setdefault(author, set()).add(pid)
    started = time.time()
    missing = missing_from_listings(client, by_author)
    first_missing = sum(len(v) for v in missing.values())
    last_write = max([w["t"] for w in probe_data["writes"]] or [started])
    deadline = last_write + args.bound + 5
    while missing and time.time() < deadline:
        time.sleep(2)
        missing = missing_from_listings(client, {a: set(v) for a, v in missing.items()})
    result = {
        "probe_acked": len(acked),
        "probe_lost": lost,
        "probe_by_id_bad": by_id_bad,
        "rows_since_start": len(in_pg),
        "loadgen_rows": sum(1 for _, c in in_pg.values() if c.startswith("loadgen post ")),
        "probe_rows": sum(1 for _, c in in_pg.values() if c.startswith("chaos probe ")),
        "authors_checked": len(by_author),
        "listing_missing_at_first_check": first_missing,
        "listing_missing_final": {str(a): v for a, v in missing.items()},
        "listing_wait_s": round(time.time() - started, 1),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------------------------- evaluate

def series_total(sample, name, **want):
    total = 0.0
    for key, value in sample.items():
        if key.split("{", 1)[0] != name:
            continue
        labels = dict(LABELS.findall(key))
        if all((labels.get(k) in v) if isinstance(v, (set, tuple, list)) else labels.get(k) == v
               for k, v in want.items()):
            total += value
    return total


def hits(sample):
    # A page the in-process tier answered is a hit too (it was a Redis hit a moment before).
    return series_total(sample, "feed_pages_total", cache=("hit", "hit_l1"))


def pages(sample):
    return series_total(sample, "feed_pages_total", cache=("hit", "hit_l1", "partial", "miss", "bypass"))


def fivexx(sample, method="GET"):
    total = 0.0
    for key, value in sample.items():
        if key.startswith("http_requests_total{"):
            labels = dict(LABELS.findall(key))
            if labels.get("status", "").startswith("5") and labels.get("method") == method:
                total += value
    return total


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None


def fmt_ms(v):
    return "-" if v is None else f"{v:,.1f} ms"


def evaluate(args):
    d = args.dir
    phases = {p: load_json(os.path.join(d, p + ".json")) for p in ("pre", "during", "after")}
    probe_data = load_json(os.path.join(d, "probe.json")) or {"reads": [], "writes": [], "samples": []}
    ver = load_json(os.path.join(d, "verify.json")) or {}
    events = []
    with open(os.path.join(d, "events")) as f:
        for line in f:
            t, name, *rest = line.rstrip("\n").split(" ", 2)
            events.append((float(t), name, rest[0] if rest else ""))
    ev = {}
    for t, name, detail in events:
        ev.setdefault(name, (t, detail))
    t_inject = ev.get("inject", (None,))[0]
    t_ref = ev.get(args.ref, ev.get("inject", (None,)))[0]
    t_end = ev.get("end", (time.time(),))[0]
    samples = probe_data["samples"]

    # Reads and writes by status over the three phases.
    def merged(key):
        out = {}
        for rep in phases.values():
            part = rep and (rep.get(key) if key == "statuses" else (rep.get("writes") or {}).get("statuses"))
            for k, v in (part or {}).items():
                out[k] = out.get(k, 0) + v
        return out

    reads, writes = merged("statuses"), merged("writes")
    n_reads, n_writes = sum(reads.values()), sum(writes.values())
    def bad(statuses):  # anything but a 2xx: 4xx (a refused write, a 404), 5xx, timeout, error, not_sent
        return sum(v for k, v in statuses.items() if not k.startswith("2"))
    def count(statuses, pred):
        return sum(v for k, v in statuses.items() if pred(k))
    during = phases["during"] or {}
    lat = during.get("latency_ms") or {}
    wlat = (during.get("writes") or {}).get("latency_ms") or {}
    def hit_share(phase):
        shares = (phase or {}).get("x_cache_share")
        if shares is None:
            return None
        return round(shares.get("HIT", 0.0) + shares.get("HIT-L1", 0.0), 4)
    pre_share = hit_share(phases["pre"])
    after_share = hit_share(phases["after"])
    during_share = hit_share(during)

    # Per-second timeline from /metrics samples, relative to the reference event.
    timeline = []
    for (t0, a, *ra), (t1, b, *rb) in zip(samples, samples[1:]):
        dp = pages(b) - pages(a)
        cpu_a, log_a = (ra + [None, None])[:2]
        cpu_b, log_b = (rb + [None, None])[:2]
        timeline.append({
            "t": round(t1 - (t_inject or t_ref or samples[0][0]), 1),
            "abs": t1,
            "pages_per_s": round(dp / (t1 - t0), 1),
            "hit_share": round((hits(b) - hits(a)) / dp, 3) if dp > 0 else None,
            "read_5xx": fivexx(b) - fivexx(a),
            "write_5xx": fivexx(b, "POST") - fivexx(a, "POST"),
            "cache_errors": series_total(b, "cache_errors_total") - series_total(a, "cache_errors_total"),
            "reconnects": series_total(b, "redis_reconnects_total") - series_total(a, "redis_reconnects_total"),
            "shed": series_total(b, "db_shed_total") - series_total(a, "db_shed_total"),
            "svc_cpu": round((cpu_b - cpu_a) / (t1 - t0), 2) if cpu_a is not None and cpu_b is not None else None,
            "log_mb_s": round((log_b - log_a) / (t1 - t0) / 1e6, 2) if log_a is not None and log_b is not None else None,
        })
    probe_reads = probe_data["reads"]
    for row in timeline:
        window = [r for r in probe_reads if row["abs"] - 0.5 < r[0] + r[2] / 1000 <= row["abs"]]
        row["probe_max_ms"] = max([r[2] for r in window], default=None)

    # Recovery: from the reference event, the end of the last 1 s window whose hit share was below
    # half the pre-fault share (a fault takes it near 0; ordinary noise never that low), and the
    # last window with a 5xx.
    def windows(seconds=1.0):
        out, i = [], 0
        while i < len(samples) - 1:
            j = i + 1
            while j < len(samples) - 1 and samples[j][0] - samples[i][0] < seconds - 0.05:
                j += 1
            a, b = samples[i][1], samples[j][1]
            out.append((samples[i][0], samples[j][0], hits(b) - hits(a), pages(b) - pages(a),
                        fivexx(b) - fivexx(a) + fivexx(b, "POST") - fivexx(a, "POST")))
            i = j
        return out

    hit_recovery = fivexx_recovery = None
    if t_ref is not None and samples:
        wins = [w for w in windows() if w[1] > t_ref and w[0] < t_end]
        thr = 0.5 * (pre_share or 0)
        low = [w for w in wins if w[3] > 0 and w[2] / w[3] < thr]
        if not low:
            hit_recovery = 0.0
        elif low[-1] is wins[-1]:
            hit_recovery = float("inf")
        else:
            hit_recovery = round(max(0.0, low[-1][1] - t_ref), 1)
        errs = [w for w in wins if w[4] > 0]
        fivexx_recovery = round(max(0.0, errs[-1][1] - t_ref), 1) if errs else 0.0

    # 503s faster than 1 s, from the service's own histogram (every route).
    s503_fast = s503_all = None
    if samples:
        first, last = samples[0][1], samples[-1][1]
        s503_all = series_total(last, "http_request_duration_seconds_count", status="503") - \
            series_total(first, "http_request_duration_seconds_count", status="503")
        s503_fast = series_total(last, "http_request_duration_seconds_bucket", status="503", le="1") - \
            series_total(first, "http_request_duration_seconds_bucket", status="503", le="1")
    # Service-side latency of the page route during the `during` phase (the histogram): how many
    # reads the service itself took longer than 0.25 / 0.5 / 1 s, apart from loadgen's own lag.
    loads = {detail.split()[0]: t for t, name, detail in events if name == "load"}
    server_slow = None
    if samples and "during" in loads:
        lo, hi = loads["during"], loads.get("after", t_end)
        inside = [x for x in samples if lo <= x[0] <= hi + 0.6] or samples
        a = max([x for x in samples if x[0] <= lo] or [samples[0]], key=lambda x: x[0])[1]
        b = inside[-1][1]
        def bucket(sample, le):
            return series_total(sample, "http_request_duration_seconds_bucket", route=PAGES_ROUTE, le=le)
        total = series_total(b, "http_request_duration_seconds_count", route=PAGES_ROUTE) - \
            series_total(a, "http_request_duration_seconds_count", route=PAGES_ROUTE)
        server_slow = {"reads": int(total)}
        for le in ("0.1", "0.25", "0.5", "1"):
            server_slow[f"over_{le}s"] = int(total - (bucket(b, le) - bucket(a, le)))
    loadavg = {detail.split()[0]: detail.split("loadavg=")[-1] for t, name, detail in events if name == "load"}
    svc = {}
    if samples and "during" in loads and len(samples[0]) >= 4:
        lo, hi = loads["during"], loads.get("after", t_end)
        inside = [x for x in samples if lo <= x[0] <= hi and x[2] is not None]
        if len(inside) >= 2:
            svc["cpu_cores_during"] = round((inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0]), 2)
        before = [x for x in samples if x[0] < lo and x[2] is not None]
        if len(before) >= 2:
            svc["cpu_cores_before"] = round((before[-1][2] - before[0][2]) / (before[-1][0] - before[0][0]), 2)
        logs = [x[3] for x in samples if x[3] is not None]
        if logs:
            svc["log_mb_scenario"] = round((logs[-1] - logs[0]) / 1e6, 1)
    deltas = {}
    if samples:
        first, last = samples[0][1], samples[-1][1]
        for name in ("cache_errors_total", "redis_reconnects_total", "db_shed_total",
                     "cache_invalidation_failures_total", "coalesced_waits_total", "db_queries_total",
                     "feed_fanout_repairs_total"):
            deltas[name] = series_total(last, name) - series_total(first, name)
        kinds = {}
        for key in last:
            if key.startswith("cache_errors_total{"):
                kind = dict(LABELS.findall(key)).get("kind")
                kinds[kind] = last[key] - first.get(key, 0.0)
        deltas["cache_errors_by_kind"] = {k: v for k, v in kinds.items() if v}

    pw = probe_data["writes"]
    acked = [w for w in pw if w["status"] == 201]
    stale_now = [w for w in acked if w.get("stale")]
    stale_max = max([w["visible_after"] for w in stale_now if w.get("visible_after") is not None], default=0.0)
    stale_unresolved = [w["id"] for w in stale_now if w.get("visible_after") is None]
    loadgen_created = sum(((rep or {}).get("writes") or {}).get("created", 0) for rep in phases.values())
    warm = load_json(os.path.join(d, "warm.json")) or {}
    loadgen_created_warm = (warm.get("writes") or {}).get("created", 0)
    missing_final = sum(len(v) for v in (ver.get("listing_missing_final") or {}).values())

    # ---------------------------------------------------------------- criteria
    crit = []
    def check(name, ok, measured, bound):
        crit.append({"criterion": name, "pass": bool(ok), "measured": measured, "bound": bound})

    s = args.scenario
    redis_fault = s in ("killmaster", "freeze", "allredis", "migrate", "coldstart", "scaleout", "repeat")
    bounds = {  # (p99 ms, max ms) during the fault; recovery bound (s) of hits
        "killmaster": (250, 500, 15), "freeze": (250, 500, 15), "allredis": (500, 1000, 20),
        "migrate": (250, 500, 10), "coldstart": (500, 1000, 20), "postgres": (None, 1000, None),
        "scaleout": (250, 500, 10), "repeat": (250, 500, 15),
    }[s]
    if args.ci:
        # A debug build on a shared CI runner: the latency bounds only catch a hang (a request
        # waiting seconds on a dead node), not a budget overrun; the release suite has the real ones.
        bounds = (1000, 2000, bounds[2]) if bounds[0] else (None, 2000, None)
    n5r = count(reads, lambda k: k.startswith("5"))
    n5w = count(writes, lambda k: k.startswith("5"))
    if redis_fault:
        check("reads: no 5xx (nor any non-2xx), no timeout or error (PostgreSQL could serve every read)",
              bad(reads) == 0, f"{bad(reads)} of {n_reads:,} ({json.dumps(reads)})", "0")
        # coldstart restarts PostgreSQL on purpose before its load: the probe's posts of those
        # seconds are not counted (loadgen sends nothing then).
        excused = (t_inject - 1, ev["restore"][0]) if s == "coldstart" and "restore" in ev else None
        pw_checked = [w for w in pw if not (excused and excused[0] <= w["t"] <= excused[1])]
        probe_bad = sum(1 for w in pw_checked if w["status"] != 201)
        check("writes: every post a 201, no 5xx, timeout or error (PostgreSQL is up)",
              bad(writes) == 0 and probe_bad == 0,
              f"loadgen {bad(writes)} of {n_writes:,} ({json.dumps(writes)}); probe {probe_bad} of {len(pw_checked)}",
              "0")
        p99_bound, max_bound, rec_bound = bounds
        check(f"reads during the fault: p99 <= {p99_bound} ms, max <= {max_bound} ms",
              lat and lat.get("p99", 1e9) <= p99_bound and lat.get("max", 1e9) <= max_bound,
              f"p50 {fmt_ms(lat.get('p50'))}, p99 {fmt_ms(lat.get('p99'))}, max {fmt_ms(lat.get('max'))}",
              f"p99 {p99_bound} ms, max {max_bound} ms")
        check(f"writes during the fault: max <= {max_bound} ms",
              wlat and wlat.get("max", 1e9) <= max_bound,
              f"p50 {fmt_ms(wlat.get('p50'))}, p99 {fmt_ms(wlat.get('p99'))}, max {fmt_ms(wlat.get('max'))}",
              f"max {max_bound} ms")
        check(f"recovery: per-second hit share above half its value before, for good, within {rec_bound} s of '{args.ref}'; after-phase share >= 80 % of before",
              hit_recovery is not None and hit_recovery <= rec_bound
              and (after_share or 0) >= 0.8 * (pre_share or 0),
              f"{hit_recovery} s (hit share before {pre_share}, during {during_share}, after {after_share})",
              f"{rec_bound} s")
    else:  # postgres
        n500 = count(reads, lambda k: k == "500") + count(writes, lambda k: k == "500")
        other5 = count(reads, lambda k: k.startswith("5") and k not in ("503",)) + \
            count(writes, lambda k: k.startswith("5") and k not in ("503",))
        check("no 500 (nor any 5xx but 503), no timeout or error",
              other5 == 0 and count(reads, lambda k: not k[0].isdigit()) == 0 and count(writes, lambda k: not k[0].isdigit()) == 0,
              f"500: {n500}; reads {json.dumps(reads)}; writes {json.dumps(writes)}", "0")
        check("every 503 fast: service histogram all <= 1 s, and loadgen's max (every read and write) < 1 s",
              (s503_all == s503_fast) and lat.get("max", 1e9) < 1000 and wlat.get("max", 0) < 1000,
              f"503s {int(s503_all or 0)}, of them <= 1 s {int(s503_fast or 0)}; reads max {fmt_ms(lat.get('max'))} (p99 {fmt_ms(lat.get('p99'))}), writes max {fmt_ms(wlat.get('max'))}",
              "all 503 <= 1 s; max < 1000 ms")
        check("recovery: no 5xx later than 5 s after PostgreSQL accepts connections again",
              fivexx_recovery is not None and fivexx_recovery <= 5,
              f"last 5xx {fivexx_recovery} s after the restart; hits back {hit_recovery} s", "5 s")
    check("no acknowledged write lost: every probe 201 is in PostgreSQL and reads back by id; loadgen's rows >= its 201s",
          not ver.get("probe_lost") and not ver.get("probe_by_id_bad")
          and ver.get("loadgen_rows", 0) >= loadgen_created + loadgen_created_warm and ver.get("probe_acked", 0) > 0,
          f"probe: {ver.get('probe_acked', 0)} acked, {len(ver.get('probe_lost', []))} lost, {len(ver.get('probe_by_id_bad', []))} unreadable; loadgen: {loadgen_created + loadgen_created_warm} acked, {ver.get('loadgen_rows', 0)} rows",
          "0 lost")
    check(f"no stale read beyond {args.bound} s: every new post in its author's listing afterwards; read-after-write staleness <= {args.bound} s",
          missing_final == 0 and stale_max <= args.bound and not stale_unresolved,
          f"{ver.get('rows_since_start', 0)} posts of {ver.get('authors_checked', 0)} authors: {ver.get('listing_missing_at_first_check', 0)} missing at first check, {missing_final} after waiting; probe: {len(stale_now)} of {len(acked)} not on the page read right after the 201, longest {stale_max} s, {len(stale_unresolved)} never seen by the probe",
          f"{args.bound} s (CACHE_LIST_TTL_SECS)")
    if s == "migrate":
        def stat(blob, name):
            m = re.findall(rf"errorstat_{name}:count=(\d+)", blob)
            return sum(int(x) for x in m)
        asks = stat(args.errorstats_after, "ASK") - stat(args.errorstats_before, "ASK")
        tryagain = stat(args.errorstats_after, "TRYAGAIN") - stat(args.errorstats_before, "TRYAGAIN")
        moved = stat(args.errorstats_after, "MOVED") - stat(args.errorstats_before, "MOVED")
        check("the slot moved, and clients met ASK redirects while it was half-moved",
              args.migrate_owner_now == args.migrate_dst and asks > 0,
              f"owner now 127.0.0.1:{args.migrate_owner_now} (target {args.migrate_dst}); {args.migrated_keys} keys migrated; errorstats on source+target: ASK {asks}, TRYAGAIN {tryagain}, MOVED {moved}",
              "owner = target; ASK > 0")

    # The node the fault hit, and when another master took its slot (the promotion), from the events.
    target = re.search(r"127\.0\.0\.1:(\d+)", ev.get("inject", (None, ""))[1] or "")
    target = "127.0.0.1:" + target.group(1) if target else None
    promoted = next((t - t_ref for t, name, detail in events
                     if name == "owner" and t_ref is not None and detail.strip() != target), None)
    if s == "freeze" and not args.ci:
        # The circuit breaker's bounds (issue 22): a hung node soon fails as fast as a dead one.
        pre_p99 = ((phases["pre"] or {}).get("latency_ms") or {}).get("p99")
        check("breaker: reads during the freeze p99 <= 2 x p99 before it, max <= 150 ms",
              lat and pre_p99 is not None and lat.get("p99", 1e9) <= 2 * pre_p99 and lat.get("max", 1e9) <= 150,
              f"p99 {fmt_ms(lat.get('p99'))} (before {fmt_ms(pre_p99)}), max {fmt_ms(lat.get('max'))}",
              f"p99 {fmt_ms(2 * pre_p99 if pre_p99 is not None else None)}, max 150 ms")
        check("breaker: posts during the freeze max <= 250 ms",
              wlat and wlat.get("max", 1e9) <= 250,
              f"p99 {fmt_ms(wlat.get('p99'))}, max {fmt_ms(wlat.get('max'))}", "max 250 ms")
        # Hits that never fell below half their share count as back at the promotion (0 s).
        back = None if promoted is None or hit_recovery is None else max(0.0, round(hit_recovery - promoted, 1))
        check("breaker: hits back within 5 s of the promotion",
              back is not None and back <= 5,
              f"{back} s (promotion {None if promoted is None else round(promoted, 2)} s, hits back {hit_recovery} s after the SIGSTOP)",
              "5 s")
    if s == "repeat" and samples:
        # From the last sample before the kill to the end: an error before the kill is the host's
        # (a starved node pausing), not the failover's, and is reported apart.
        def healthy_errors(a, b):
            out = {}
            for key, value in b.items():
                if key.startswith("redis_errors_total{"):
                    node = dict(LABELS.findall(key)).get("node")
                    delta = value - a.get(key, 0.0)
                    if node != target and delta:
                        out[node] = delta
            return out
        at_kill = max([x for x in samples if t_inject is None or x[0] <= t_inject] or [samples[0]],
                      key=lambda x: x[0])[1]
        per_node = healthy_errors(at_kill, samples[-1][1])
        before = healthy_errors(samples[0][1], at_kill)
        check("no Redis error on a healthy node (every node but the killed one) from the kill on",
              not per_node, f"killed {target}; errors elsewhere {json.dumps(per_node)} (before the kill: {json.dumps(before)})", "0")

    if s == "scaleout":
        slots, seen = int(args.scaleout_slots), int(args.scaleout_seen)
        check("scale-out: the fourth master got slots, and the service's live view showed them",
              slots > 0 and seen == slots,
              f"{slots} slots moved onto the new master; GET /api/v1/admin/stats listed it with {seen}",
              "slots > 0, seen = slots")
        check("scale-in: every slot moved back and the node left the cluster",
              int(args.scaleout_back) == 0 and int(args.scaleout_left) == 0,
              f"{args.scaleout_back} slots left on it, {args.scaleout_left} mentions in CLUSTER NODES",
              "0 and 0")

    ok = all(c["pass"] for c in crit)
    owners = [(round(t - (t_inject or t), 2), detail) for t, name, detail in events if name == "owner"]
    result = {
        "scenario": s, "pass": ok, "rate": args.rate, "write_rate": args.write_rate,
        "service_env": args.service_env.strip(), "criteria": crit,
        "figures": {
            "reads": reads, "writes": writes,
            "latency_ms": {p: (phases[p] or {}).get("latency_ms") for p in phases},
            "write_latency_ms": {p: ((phases[p] or {}).get("writes") or {}).get("latency_ms") for p in phases},
            "hit_share": {"pre": pre_share, "during": during_share, "after": after_share},
            "hit_recovery_s": hit_recovery, "last_5xx_s": fivexx_recovery,
            "promotion_s": None if promoted is None else round(promoted, 2),
            "service_503": {"total": s503_all, "le_1s": s503_fast},
            "service_page_latency_during": server_slow, "loadavg": loadavg, "service_process": svc,
            "loadgen_send_lag_ms": {p: (phases[p] or {}).get("send_lag_ms") for p in phases},
            "metrics_delta": deltas, "owner_changes": owners,
            "probe": {"writes": len(pw), "acked": len(acked), "stale_immediately": len(stale_now),
                      "stale_longest_s": stale_max,
                      "reads": len(probe_reads),
                      "read_statuses": {str(k): sum(1 for r in probe_reads if r[1] == k) for k in {r[1] for r in probe_reads}},
                      "read_max_ms": max([r[2] for r in probe_reads], default=None)},
            "verify": ver,
            "events": [(round(t - (t_inject or t), 2), name, detail) for t, name, detail in events],
        },
        "timeline": [{k: v for k, v in row.items() if k != "abs"} for row in timeline],
    }
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    for c in crit:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {s}: {c['criterion']}\n        measured: {c['measured']}")
    lag = (during.get("send_lag_ms") or {})
    print(f"        context: service-side page reads during the fault {server_slow}; loadgen send lag max "
          f"{fmt_ms(lag.get('max'))}; load average {loadavg}; service process {svc}; cache errors {deltas.get('cache_errors_by_kind')}, "
          f"reconnects {deltas.get('redis_reconnects_total')}, shed {deltas.get('db_shed_total')}, "
          f"invalidation failures {deltas.get('cache_invalidation_failures_total')}")
    print(f"  => {s}: {'PASS' if ok else 'FAIL'}")
    # A compact timeline for the log (every second from 2 s before the fault to its end).
    with open(os.path.join(d, "timeline.txt"), "w") as f:
        f.write("t(s)  pages/s  hit%   5xx(r/w)  cache_err  reconn  shed  probe_max_ms  svc_cpu  log_MB/s\n")
        for row in timeline:
            hs = "-" if row["hit_share"] is None else f"{row['hit_share'] * 100:5.1f}"
            f.write(f"{row['t']:6.1f} {row['pages_per_s']:7.1f} {hs:>6} {int(row['read_5xx']):4d}/{int(row['write_5xx']):<4d} "
                    f"{int(row['cache_errors']):9d} {int(row['reconnects']):7d} {int(row['shed']):5d} {row['probe_max_ms'] if row['probe_max_ms'] is not None else '-':>12}"
                    f" {row['svc_cpu'] if row['svc_cpu'] is not None else '-':>8} {row['log_mb_s'] if row['log_mb_s'] is not None else '-':>9}\n")


def repeat(args):
    """The repeat scenario's verdict from its kills' results (each evaluated as `repeat`): every
    kill passed, and the last is no worse than the first."""
    kills = [load_json(os.path.join(args.dir, f"kill{k}", "result.json")) for k in range(1, args.kills + 1)]
    crit = []
    def check(name, ok, measured, bound):
        crit.append({"criterion": name, "pass": bool(ok), "measured": measured, "bound": bound})
    def during(r, key="latency_ms"):
        return ((r or {}).get("figures", {}).get(key) or {}).get("during") or {}
    rows = []
    for k, r in enumerate(kills, 1):
        lat, wlat = during(r), during(r, "write_latency_ms")
        failed = [c["criterion"] for c in (r or {}).get("criteria", []) if not c["pass"]]
        rows.append(f"kill {k}: {'PASS' if r and r['pass'] else 'FAIL'} p50 {fmt_ms(lat.get('p50'))} p99 {fmt_ms(lat.get('p99'))} "
                    f"max {fmt_ms(lat.get('max'))}, posts max {fmt_ms(wlat.get('max'))}, hits back "
                    f"{(r or {}).get('figures', {}).get('hit_recovery_s')} s" + (f" (failed: {'; '.join(failed)})" if failed else ""))
    check(f"every one of the {args.kills} kills within the killmaster bounds, with no error on a healthy node",
          all(r and r["pass"] for r in kills), " | ".join(rows), "each kill PASS")
    one, last = during(kills[0]), during(kills[-1])
    # "No worse": the noise of a shared 2-core host allowed, 50 % or 5 ms on p99 (whichever is
    # larger), 1 ms on p50; the issue saw p99 16 -> 556 ms and p50 0.5 -> 2-7 ms.
    ok = bool(one and last) and \
        last.get("p99", 1e9) <= max(1.5 * one.get("p99", 0), one.get("p99", 0) + 5) and \
        last.get("p50", 1e9) <= one.get("p50", 0) + 1
    check(f"the kill {args.kills} no worse than the first: p99 <= max(1.5 x, +5 ms), p50 <= +1 ms",
          ok, f"first p50 {fmt_ms(one.get('p50'))} p99 {fmt_ms(one.get('p99'))}; kill {args.kills} p50 "
          f"{fmt_ms(last.get('p50'))} p99 {fmt_ms(last.get('p99'))}", "no worse")
    result = dict(kills[-1] or {"figures": {"latency_ms": {}, "write_latency_ms": {}, "reads": {},
                                            "verify": {}, "hit_recovery_s": None}})
    result.update({"scenario": "repeat", "pass": all(c["pass"] for c in crit), "criteria": crit,
                   "kills": [{"kill": k, "pass": bool(r and r["pass"]), "latency_ms": during(r),
                              "write_latency_ms": during(r, "write_latency_ms"),
                              "hit_recovery_s": (r or {}).get("figures", {}).get("hit_recovery_s")}
                             for k, r in enumerate(kills, 1)]})
    with open(os.path.join(args.dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    for c in crit:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  repeat: {c['criterion']}\n        measured: {c['measured']}")
    print(f"  => repeat: {'PASS' if result['pass'] else 'FAIL'}")


def summary(args):
    results = [load_json(p) for p in args.results]
    results = [r for r in results if r]
    if args.json:
        print(json.dumps({"pass": all(r["pass"] for r in results), "meta": json.loads(args.meta),
                          "scenarios": results}, indent=1, default=str))
        return
    print(f"\n{'scenario':<11} {'result':<6} {'reads 5xx':>9} {'p99 during':>11} {'max during':>11} {'write max':>10} {'hits back':>9} {'acked lost':>10} {'stale >60s':>10}")
    for r in results:
        f = r["figures"]
        lat = f["latency_ms"].get("during") or {}
        n5 = sum(v for k, v in f["reads"].items() if k.startswith("5"))
        lost = len(f["verify"].get("probe_lost", []))
        stale = sum(len(v) for v in (f["verify"].get("listing_missing_final") or {}).values())
        rec = f["hit_recovery_s"]
        wmax = (f["write_latency_ms"].get("during") or {}).get("max", 0)
        print(f"{r['scenario']:<11} {'PASS' if r['pass'] else 'FAIL':<6} {n5:>9} {lat.get('p99', 0):>8.1f} ms {lat.get('max', 0):>8.1f} ms {wmax:>7.1f} ms "
              f"{'-' if rec is None else str(rec) + ' s':>9} {lost:>10} {stale:>10}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("probe")
    a.add_argument("--url"); a.add_argument("--out"); a.add_argument("--stop")
    a.add_argument("--author", type=int, default=1); a.add_argument("--write-rate", type=float, default=2)
    a.add_argument("--api-key", default=""); a.add_argument("--tag", default="run")
    a.add_argument("--pid", default="0"); a.add_argument("--log", default="")
    a.add_argument("--log-cap-mb", type=float, default=256)
    a = sub.add_parser("verify")
    a.add_argument("--url"); a.add_argument("--db-url"); a.add_argument("--start-max-id", type=int)
    a.add_argument("--probe"); a.add_argument("--bound", type=float, default=60); a.add_argument("--out")
    a.add_argument("--api-key", default=""); a.add_argument("--psql", default="psql")
    a = sub.add_parser("evaluate")
    a.add_argument("--scenario"); a.add_argument("--dir"); a.add_argument("--ref", default="inject")
    a.add_argument("--rate", type=float); a.add_argument("--write-rate", type=float)
    a.add_argument("--bound", type=float, default=60); a.add_argument("--service-env", default="")
    a.add_argument("--migrate-dst", default=""); a.add_argument("--migrate-owner-now", default="")
    a.add_argument("--errorstats-before", default=""); a.add_argument("--errorstats-after", default="")
    a.add_argument("--scaleout-slots", default="0"); a.add_argument("--scaleout-seen", default="0")
    a.add_argument("--scaleout-back", default="0"); a.add_argument("--scaleout-left", default="0")
    a.add_argument("--migrated-keys", default="0"); a.add_argument("--ci", action="store_true")
    a = sub.add_parser("repeat")
    a.add_argument("--dir"); a.add_argument("--kills", type=int, default=5)
    a = sub.add_parser("summary")
    a.add_argument("--json", action="store_true"); a.add_argument("--meta", default="{}")
    a.add_argument("results", nargs="*")
    args = p.parse_args()
    {"probe": probe, "verify": verify, "evaluate": evaluate, "repeat": repeat, "summary": summary}[args.cmd](args)


if __name__ == "__main__":
    main()
PY
}

# ---------------------------------------------------------------------------------------------

main() {
  need redis-cli redis-server curl jq python3 flock timeout cargo
  mkdir -p "$CHAOS_DIR" || die "cannot create $CHAOS_DIR"
  if [[ $CMD == down ]]; then
    TEARDOWN=no
    stack down
    return
  fi
  trap cleanup EXIT
  trap on_signal INT TERM
  write_helper
  RUN_DIR=$CHAOS_DIR/runs/$(date +%Y%m%d-%H%M%S)
  mkdir -p "$RUN_DIR"
  local started=$SECONDS s results=() rc=0 meta
  say "private stack: Redis 127.0.0.1:${PORTS[0]}-${PORTS[5]}, PostgreSQL 127.0.0.1:$PG_PORT, service $APP_URL ($PROFILE)"
  say "load: $RATE reads/s (Zipf over $USERS users, loadgen's page mix) + $WRATE posts/s, open loop; probe: $PROBE_WRITE_RATE posts/s as user $PROBE_AUTHOR"
  say "scenarios: ${SELECTED[*]}; results in $RUN_DIR"
  build
  stack_up
  seed
  setup_auth
  for s in "${SELECTED[@]}"; do
    "scenario_$s"
    results+=("$RUN_DIR/$s/result.json")
    jq -e '.pass' "$RUN_DIR/$s/result.json" >/dev/null 2>&1 || rc=1
  done
  stack_up   # leave the stack whole (a killed node restarted, as a replica)
  meta=$(printf '{"rate": %s, "write_rate": %s, "posts": %s, "profile": "%s", "commit": "%s", "elapsed_s": %s, "run_dir": "%s"}' \
    "$RATE" "$WRATE" "$POSTS" "$PROFILE" "$COMMIT" \
    "$((SECONDS - started))" "$RUN_DIR")
  if [[ $JSON == yes ]]; then
    python3 "$HELPER" summary --json --meta "$meta" "${results[@]}"
  else
    python3 "$HELPER" summary "${results[@]}"
  fi
  python3 "$HELPER" summary --json --meta "$meta" "${results[@]}" >"$RUN_DIR/summary.json"
  say "done in $((SECONDS - started)) s: $( ((rc == 0)) && echo 'every criterion passed' || echo 'SOME CRITERIA FAILED'); details in $RUN_DIR"
  return "$rc"
}

main
