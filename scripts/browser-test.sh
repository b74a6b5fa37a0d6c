#!/usr/bin/env bash
# scripts/browser-test.sh — the dashboard's browser test (tests/browser/dashboard.test.mjs) in
# Debian's headless Chromium, against a running service.
#
#   scripts/browser-test.sh              the test as the environment asks (EXPECT_HOT, EXPECT_KILLED)
#   scripts/browser-test.sh --scenario   the whole story: Zipf load -> "hot"; a master killed under
#                                        load -> "killed" (every read must still be served); the
#                                        node restarted (scripts/stack.sh up)
#   scripts/browser-test.sh --serve ...  first build and start a debug service of its own on
#                                        BROWSER_PORT (18398) over a fresh database (hotfeed_browser,
#                                        seeded by datagen: 100 users, 20,000 posts) and its own key
#                                        prefix, and test that one (scripts/test.sh does this)
#
# Installs what is missing first: Debian's chromium (apt, when /usr/bin/chromium is absent) and
# playwright-core (`npm ci` in tests/browser when node_modules is absent; no browser download).
#
# Environment:
#   HOTFEED_URL            the service (default http://127.0.0.1:8080); scripts/run.sh serves it
#   SCREENSHOT_DIR         where the PNGs go (default docs/img, from the repo root)
#   LOADGEN                loadgen binary for --scenario (default target/debug/loadgen;
#                          `cargo build -p loadgen` makes it)
#   STACK_REDIS_BASE_PORT  first port of the local cluster (default 7000), as scripts/stack.sh
#   KILL_PORT              --scenario: the master to kill (default: the owner of user 1's pages)
#   CACHE_KEY_PREFIX       the service's key prefix (default hf), to find user 1's slot
#   BROWSER_PORT           --serve: the port of the service started (default 18398)
#   BROWSER_LOAD_RATE      --scenario: loadgen's reads per second (default 100)
#
# Exit status: 0 when every step passed; 1 when a step failed; 2 on a usage or setup error.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
cd "$REPO"
# rcli, owner_of_slot: the redis-cli helpers the scripts share.
# shellcheck source=scripts/lib/cluster.sh disable=SC1091
. "$SCRIPT_DIR/lib/cluster.sh"

HOTFEED_URL=${HOTFEED_URL:-http://127.0.0.1:8080}
HOTFEED_URL=${HOTFEED_URL%/}
SCREENSHOT_DIR=${SCREENSHOT_DIR:-docs/img}
LOADGEN=${LOADGEN:-target/debug/loadgen}
BASE_PORT=${STACK_REDIS_BASE_PORT:-7000}
PREFIX=${CACHE_KEY_PREFIX:-hf}
CHROMIUM=/usr/bin/chromium
TEST_DIR=$REPO/tests/browser

SCENARIO=no
# Reads a second during the scenario: 100 by default, as the fault suite's --ci subset, since the
# service under test is a debug build on a shared runner (at 200/s the failover's PostgreSQL
# fallback was seen to saturate a debug build's pool and shed 123 of 4,000 reads with 503).
LOAD_RATE=${BROWSER_LOAD_RATE:-100}
SERVE=no
SERVER_PID=""
SERVE_DB=hotfeed_browser
LOADGEN_PID=""
KILLED_PORT=""   # set while a node this script killed is not restarted yet
WORK=""
SHOTS=""         # SCREENSHOT_DIR, absolute

say() { printf 'browser-test: %s\n' "$*"; }
die() {
  printf 'browser-test: error: %s\n' "$*" >&2
  exit 2
}

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (install sudo, or run it as root)"
  fi
}

# ---------------------------------------------------------------------------------------------
# Setup

ensure_chromium() {
  [[ -x $CHROMIUM ]] && return 0
  command -v apt-get >/dev/null 2>&1 || die "$CHROMIUM is missing and there is no apt-get; install Chromium"
  say "installing Debian's chromium (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  [[ -x $CHROMIUM ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
}

ensure_node_modules() {
  command -v node >/dev/null 2>&1 || die "node is missing (apt-get install nodejs npm)"
  [[ -d $TEST_DIR/node_modules/playwright-core ]] && return 0
  command -v npm >/dev/null 2>&1 || die "npm is missing (apt-get install npm)"
  say "installing playwright-core (npm ci in tests/browser; no browser is downloaded)"
  (cd "$TEST_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 npm ci --no-audit --no-fund --loglevel=error)
}

# serve_own: a debug service of this script's own, over a fresh seeded database; sets HOTFEED_URL.
serve_own() {
  if [[ -f $REPO/.env ]]; then
    set -a
    # shellcheck disable=SC1091
    . "$REPO/.env"
    set +a
  fi
  local db_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hotfeed}
  local admin_url=${db_url%/*}/postgres app_db=${db_url%/*}/$SERVE_DB port=${BROWSER_PORT:-18398}
  PREFIX="bt$(date +%s)"
  say "building hotfeed, loadgen and datagen (debug)"
  cargo build -q -p hotfeed -p loadgen -p datagen
  LOADGEN=$REPO/target/debug/loadgen
  psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $SERVE_DB WITH (FORCE)" -c "CREATE DATABASE $SERVE_DB" >/dev/null ||
    die "cannot create $SERVE_DB (is the stack up? scripts/stack.sh up)"
  "$REPO/target/debug/hotfeed" migrate --database-url "$app_db" >/dev/null
  say "seeding $SERVE_DB (datagen: 100 users, 20,000 posts)"
  "$REPO/target/debug/datagen" --users 100 --posts 20000 --database-url "$app_db" --no-cache-flush >/dev/null 2>&1 ||
    die "datagen failed"
  DATABASE_URL=$app_db APP_HOST=127.0.0.1 APP_PORT=$port NO_MIGRATE=true CACHE_KEY_PREFIX=$PREFIX \
    RATE_LIMIT_READS_PER_IP=0 LOG_FORMAT=json RUST_LOG=warn \
    "$REPO/target/debug/hotfeed" serve >"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
  HOTFEED_URL=http://127.0.0.1:$port
  for _ in $(seq 150); do
    curl -fs --max-time 1 -o /dev/null "$HOTFEED_URL/ping" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; die "hotfeed exited"; }
    sleep 0.2
  done
  die "hotfeed did not answer on $HOTFEED_URL within 30 s"
}

stop_own() {
  [[ -n $SERVER_PID ]] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  local db_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hotfeed}
  psql -q "${db_url%/*}/postgres" -c "DROP DATABASE IF EXISTS $SERVE_DB WITH (FORCE)" >/dev/null 2>&1 || true
}

service_answers() {
  curl -fs --max-time 3 -o /dev/null "$HOTFEED_URL/api/v1/admin/stats"
}

# ---------------------------------------------------------------------------------------------
# The scenario's moving parts

# Prints "<PORT> <replica port>" when PORT is a live master (replica "-" if it has none).
master_and_replica() {
  local port=$1 nodes
  nodes=$(rcli "$port" cluster nodes) || return 1
  awk '
    { split($2, a, "@"); split(a[1], hp, ":"); addr[$1] = hp[2] }
    $3 ~ /myself/ && $3 ~ /master/ { me = $1 }
    $3 ~ /slave/ && $3 !~ /fail/ { rep[$4] = $1 }
    END {
      if (me == "") exit 1
      print addr[me], (me in rep ? addr[rep[me]] : "-")
    }' <<<"$nodes"
}

start_loadgen() {
  local duration=$1 log=$2
  [[ -x $LOADGEN ]] || die "no loadgen at $LOADGEN (cargo build -p loadgen, or set LOADGEN)"
  say "loadgen: --users 100 --rate $LOAD_RATE --duration $duration against $HOTFEED_URL (log: $log)"
  "$LOADGEN" --url "$HOTFEED_URL" --users 100 --rate "$LOAD_RATE" --warmup 0s --duration "$duration" \
    --quiet --json >"$log" 2>"$log.err" &
  LOADGEN_PID=$!
}
# every_read_served REPORT: loadgen's report says every request got a 200 (none failed, none timed
# out); prints the counts either way.
every_read_served() {
  python3 - "$1" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
statuses = report.get("statuses", {})
ok = statuses.get("200", 0)
print(f"browser-test: reads under the kill: {report['requests']} sent, {ok} answered 200, "
      f"other outcomes {({k: v for k, v in statuses.items() if k != '200'}) or 'none'}, "
      f"p99 {report['latency_ms']['p99']:.1f} ms, max {report['latency_ms']['max']:.1f} ms", file=sys.stderr)
sys.exit(0 if report["requests"] > 0 and ok == report["requests"] else 1)
PY
}

stop_loadgen() {
  [[ -n $LOADGEN_PID ]] || return 0
  if kill -0 "$LOADGEN_PID" 2>/dev/null; then
    kill -TERM "$LOADGEN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$LOADGEN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LOADGEN_PID" 2>/dev/null || true
  fi
  wait "$LOADGEN_PID" 2>/dev/null || true
  LOADGEN_PID=""
}

restore_node() {
  [[ -n $KILLED_PORT ]] || return 0
  say "restarting 127.0.0.1:$KILLED_PORT: scripts/stack.sh up (the node rejoins as a replica)"
  if STACK_REDIS_BASE_PORT=$BASE_PORT timeout 120 "$REPO/scripts/stack.sh" up >"$WORK/stack-up.log" 2>&1; then
    KILLED_PORT=""
  else
    tail -n 15 "$WORK/stack-up.log" >&2
    say "scripts/stack.sh up failed (log above); run it yourself to restore the cluster"
  fi
}

cleanup() {
  stop_loadgen
  restore_node
  stop_own
  if [[ -n $WORK && -d $WORK ]]; then rm -rf "$WORK"; fi
}

run_test() { # env assignments for the test, then nothing else
  env "$@" HOTFEED_URL="$HOTFEED_URL" node "$TEST_DIR/dashboard.test.mjs"
}

scenario() {
  local rc=0 slot="" master replica pid shots line
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli is missing (scripts/stack.sh up installs it)"
  [[ -x $LOADGEN ]] || die "no loadgen at $LOADGEN (cargo build -p loadgen, or set LOADGEN)"

  say "step 1/3: Zipf load, the dashboard must mark a hot node"
  start_loadgen 20s "$WORK/loadgen-hot.json"
  run_test EXPECT_HOT=1 SCREENSHOT_DIR="$SHOTS" || rc=1
  stop_loadgen

  say "step 2/3: kill -9 of a master under load, the dashboard must show it"
  if [[ -n ${KILL_PORT:-} ]]; then
    line=$(master_and_replica "$KILL_PORT") || die "127.0.0.1:$KILL_PORT is not a live master of the cluster"
  else
    slot=$(rcli "$BASE_PORT" cluster keyslot "$PREFIX:{user:1}:pages")
    [[ $slot =~ ^[0-9]+$ ]] || die "cluster keyslot on 127.0.0.1:$BASE_PORT answered '$slot'"
    line=$(owner_of_slot "$slot" $(seq "$BASE_PORT" $((BASE_PORT + 5)))) || die "no live master owns slot $slot (is the cluster whole? scripts/stack.sh status)"
  fi
  read -r master replica <<<"$line"
  pid=$(rcli "$master" info server | sed -n 's/^process_id://p')
  [[ $pid =~ ^[0-9]+$ ]] || die "cannot read the process_id of 127.0.0.1:$master"
  local why=""
  [[ -z $slot ]] || why=" (owner of slot $slot: user 1's pages)"
  say "master 127.0.0.1:$master$why, pid $pid; its replica 127.0.0.1:$replica"
  start_loadgen 20s "$WORK/loadgen-killed.json"
  sleep 3
  KILLED_PORT=$master
  kill -KILL "$pid"
  say "killed pid $pid (127.0.0.1:$master)"
  # dashboard.png stays the picture of the whole cluster: this run's shots go to a scratch dir.
  shots=$WORK/shots
  mkdir -p "$shots"
  if run_test EXPECT_KILLED="127.0.0.1:$master" EXPECT_PROMOTED="${replica/#-/}" SCREENSHOT_DIR="$shots"; then
    cp "$shots/dashboard-killed.png" "$SHOTS/"
  else
    rc=1
    cp "$shots"/failed-*.png "$SHOTS/" 2>/dev/null || true
  fi
  # Reads keep flowing: loadgen runs to its end and every read it sent must have been served.
  wait "$LOADGEN_PID" 2>/dev/null || true
  LOADGEN_PID=""
  every_read_served "$WORK/loadgen-killed.json" || {
    cp "$WORK/loadgen-killed.json" "$SHOTS/"
    say "FAIL reads under the kill: not every read was served (report: $SHOTS/loadgen-killed.json)"
    rc=1
  }

  say "step 3/3: restore the node"
  restore_node
  [[ -z $KILLED_PORT ]] || rc=1
  return "$rc"
}

main() {
  while (($#)); do
    case $1 in
      --scenario) SCENARIO=yes ;;
      --serve) SERVE=yes ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; exit 2 ;;
    esac
    shift
  done
  ensure_chromium
  ensure_node_modules
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotfeed-browser-test.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  [[ $SERVE == no ]] || serve_own
  service_answers || die "no answer from $HOTFEED_URL/api/v1/admin/stats; start the service (scripts/run.sh) or set HOTFEED_URL"
  case $SCREENSHOT_DIR in
    /*) SHOTS=$SCREENSHOT_DIR ;;
    *) SHOTS=$REPO/$SCREENSHOT_DIR ;;
  esac
  mkdir -p "$SHOTS"
  if [[ $SCENARIO == yes ]]; then
    scenario
  else
    run_test SCREENSHOT_DIR="$SHOTS"
  fi
}

main "$@"
