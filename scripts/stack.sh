#!/usr/bin/env bash
# scripts/stack.sh — the local development stack for hotfeed, without Docker.
#
#   scripts/stack.sh up      start (or reuse) PostgreSQL and a 6-node Redis Cluster, write .env
#   scripts/stack.sh down    stop what `up` started (Redis nodes, the private PostgreSQL if any)
#   scripts/stack.sh status  one line per component; exit 0 if all healthy, 1 otherwise
#
# PostgreSQL: DATABASE_URL comes from the environment, else from the repo's .env, else
# postgres://postgres@127.0.0.1:5432/hotfeed. If a server answers there, `up` reuses it and creates
# the database named in the URL. If nothing answers, `up` starts a private server under
# $STACK_DIR/pg (trust auth, 127.0.0.1:$STACK_PG_PORT, database hotfeed) with the highest
# /usr/lib/postgresql/*/bin, installing the `postgresql` package with apt if there is none.
# `down` stops and removes only that private server; it never touches one it did not start.
#
# Redis: six cluster nodes on 127.0.0.1:$STACK_REDIS_BASE_PORT..+5 (3 masters, 3 replicas), each
# with its config, nodes.conf, pid file and log in $STACK_DIR/redis/<port>/. Settings are those
# of Redis's own utils/create-cluster: node timeout 2000 ms (a killed master fails over in ~4 s),
# no full-coverage requirement, reads allowed when down, no persistence (scripts/lib/cluster.sh,
# node_conf). A formed cluster that a failed or interrupted operation left damaged is repaired in
# place, and `up` says what it did: a node that is not one of the six (the fourth master of
# scripts/workshop.sh step 8) has its slots moved back to the masters beside them and is removed
# (and stopped when it is this stack's), or, if it no longer answers, is forgotten by every node;
# open (half-moved) slots are closed with `redis-cli --cluster fix --cluster-replace`; slots that
# no node serves are given to the master beside them. Only a half-formed cluster (e.g. a crashed
# `--cluster create`) is torn down and recreated. `up` returns only once every node reports
# cluster_state:ok with all 16384 slots and every replica's link to its master is up and synced.
# A node is "ours" when its INFO config_file is our redis.conf; other servers on those ports are
# reported and never stopped. Port 6379 is refused outright.
#
# .env: `up` appends DATABASE_URL, REDIS_URLS (all six nodes) and a random ADMIN_API_KEY only when
# .env does not already set them, so a user's edits win. `down` leaves .env alone.
#
# Environment:
#   STACK_REDIS_BASE_PORT  first Redis port (default 7000; uses base..base+5 and base+10000.. for the bus)
#   STACK_REDIS_MAXMEMORY  maxmemory of each node (default 256mb; the policy is allkeys-lfu)
#   STACK_PG_PORT          port of the private PostgreSQL (default 5433)
#   STACK_DIR              state directory (default <repo>/.stack)
#   STACK_ENV_FILE         the .env file up completes (default <repo>/.env)
#   STACK_WAIT_SECS        how long `up` waits for a healthy cluster (default 60)
#   DATABASE_URL           PostgreSQL to reuse (see above)
#
# Needs bash, coreutils and, on a bare machine, apt-get (through sudo when not root).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
# shellcheck source=scripts/lib/cluster.sh disable=SC1091
. "$SCRIPT_DIR/lib/cluster.sh"
ENV_FILE=${STACK_ENV_FILE:-$REPO_ROOT/.env}
DEFAULT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/hotfeed

STACK_DIR=${STACK_DIR:-$REPO_ROOT/.stack}
REDIS_BASE_PORT=${STACK_REDIS_BASE_PORT:-7000}
PG_PORT=${STACK_PG_PORT:-5433}
WAIT_SECS=${STACK_WAIT_SECS:-60}

REDIS_NODES=6          # 3 masters + 3 replicas
REDIS_MASTERS=3
PROBLEM=""             # why the last health check failed (set by cluster_healthy)
REPAIR_LOG=/dev/null   # every redis-cli output of a repair (set by redis_repair)
PSQL="" PG_ISREADY=""  # PostgreSQL client tools (set by find_pg_clients)
APT_UPDATED=no
TO_START=()            # free Redis ports to start (set by redis_preflight)

# ---------------------------------------------------------------------------------------------
# Small helpers

log() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: warning: %s\n' "$*" >&2; }
die() {
  printf 'stack: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: scripts/stack.sh up|down|status

  up      start (or reuse) PostgreSQL and a 6-node Redis Cluster on 127.0.0.1,
          wait until healthy, add DATABASE_URL / REDIS_URLS to .env if it lacks them
  down    stop the Redis nodes and the private PostgreSQL that up started; keeps .env
  status  one line per component; exit 0 if everything is healthy, 1 otherwise

environment: STACK_REDIS_BASE_PORT (7000), STACK_PG_PORT (5433), STACK_DIR (<repo>/.stack),
             STACK_WAIT_SECS (60), DATABASE_URL (else .env, else $DEFAULT_DATABASE_URL)
EOF
}

is_root() { [[ $EUID -eq 0 ]]; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (install sudo, or run that command as root and retry)"
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these yourself: $*"
  log "installing $* with apt-get"
  if [[ $APT_UPDATED == no ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=yes
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Hides the password of a URL for printing.
mask_url() { sed -E 's#(://[^:/@]+:)[^@/]*@#\1***@#' <<<"$1"; }

elapsed() { printf '%ss' "$SECONDS"; }

# ---------------------------------------------------------------------------------------------
# .env

# Prints the first value .env assigns to NAME (the one dotenvy uses); fails if it sets none.
env_file_get() {
  local name=$1 line value
  [[ -f $ENV_FILE ]] || return 1
  line=$(grep -m1 -E "^[[:space:]]*(export[[:space:]]+)?${name}[[:space:]]*=" "$ENV_FILE") || return 1
  value=${line#*=}
  value=${value%$'\r'}
  value=${value#"${value%%[![:space:]]*}"}
  case $value in
    \"*\"*) value=${value#\"} && value=${value%%\"*} ;;
    \'*\'*) value=${value#\'} && value=${value%%\'*} ;;
    *) value=$(sed -E 's/[[:space:]]+#.*$//; s/[[:space:]]+$//' <<<"$value") ;;
  esac
  printf '%s\n' "$value"
}

# Appends NAME=VALUE to .env unless .env already sets NAME.
env_file_set_default() {
  local name=$1 value=$2 current
  if current=$(env_file_get "$name"); then
    if [[ $current != "$value" ]]; then
      warn ".env keeps its own $name=$(mask_url "$current"); this stack provides $(mask_url "$value")"
    fi
    return 0
  fi
  if [[ ! -f $ENV_FILE ]]; then
    printf '# Local settings for hotfeed (read by dotenvy). Created by scripts/stack.sh up; edit freely.\n' >"$ENV_FILE"
  elif [[ -s $ENV_FILE && $(tail -c1 "$ENV_FILE" | wc -l) -eq 0 ]]; then
    printf '\n' >>"$ENV_FILE"
  fi
  printf '%s=%s\n' "$name" "$value" >>"$ENV_FILE"
  log "wrote $name to $ENV_FILE"
}

# ---------------------------------------------------------------------------------------------
# Configuration checks

check_config() {
  local n
  for n in "$REDIS_BASE_PORT" "$PG_PORT" "$WAIT_SECS"; do
    [[ $n =~ ^[0-9]+$ ]] || die "STACK_REDIS_BASE_PORT, STACK_PG_PORT and STACK_WAIT_SECS must be numbers (got '$n')"
  done
  ((REDIS_BASE_PORT >= 1024 && REDIS_BASE_PORT + REDIS_NODES - 1 + 10000 <= 65535)) ||
    die "STACK_REDIS_BASE_PORT=$REDIS_BASE_PORT must be in 1024..55530 (cluster bus ports are port+10000)"
  if ((REDIS_BASE_PORT <= 6379 && 6379 < REDIS_BASE_PORT + REDIS_NODES)); then
    die "STACK_REDIS_BASE_PORT=$REDIS_BASE_PORT would include port 6379, which this script never touches"
  fi
  ((PG_PORT >= 1024 && PG_PORT <= 65535)) || die "STACK_PG_PORT=$PG_PORT must be in 1024..65535"
  case $STACK_DIR in
    /*) ;;
    *) STACK_DIR=$PWD/$STACK_DIR ;;
  esac
  STACK_DIR=${STACK_DIR%/}
  [[ -n $STACK_DIR && $STACK_DIR != "$HOME" ]] || die "STACK_DIR must be a dedicated directory (got '${STACK_DIR:-/}')"

  PORTS=()
  for ((n = 0; n < REDIS_NODES; n++)); do PORTS+=($((REDIS_BASE_PORT + n))); done
  PG_DIR=$STACK_DIR/pg
  PG_DATA=$PG_DIR/data
  PG_RUN=$PG_DIR/run
  PG_LOG=$PG_DIR/postgres.log
  PG_MARKER=$PG_DIR/started-by-stack
  PRIVATE_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/hotfeed
}

# Serializes up/down so two runs cannot race on the same nodes. The daemons we start must not
# inherit fd 9, or they would hold the lock for their whole life.
take_lock() {
  mkdir -p "$STACK_DIR"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$STACK_DIR/lock"
  flock -w 120 9 || die "another scripts/stack.sh holds $STACK_DIR/lock"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# DATABASE_URL from the environment, else .env, else the default; sets DB_URL and DB_URL_SOURCE.
resolve_database_url() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    DB_URL=$DATABASE_URL DB_URL_SOURCE="the environment"
  elif DB_URL=$(env_file_get DATABASE_URL) && [[ -n $DB_URL ]]; then
    DB_URL_SOURCE=.env
  else
    DB_URL=$DEFAULT_DATABASE_URL DB_URL_SOURCE="the default"
  fi
}

# Splits a postgres:// URL; sets URL_DB (may be empty) and URL_MAINT (same server, db "postgres").
parse_db_url() {
  local url=$1 scheme rest query="" authority
  [[ $url == *://* ]] || die "DATABASE_URL is not a URL: $(mask_url "$url")"
  scheme=${url%%://*}
  rest=${url#*://}
  if [[ $rest == *\?* ]]; then
    query="?${rest#*\?}"
    rest=${rest%%\?*}
  fi
  authority=${rest%%/*}
  URL_DB=""
  if [[ $rest == */* ]]; then URL_DB=${rest#*/}; fi
  URL_MAINT="$scheme://$authority/postgres$query"
}

# Finds psql and pg_isready (PATH first, then the highest /usr/lib/postgresql/*/bin).
find_pg_clients() {
  local name path
  for name in psql pg_isready; do
    path=$(command -v "$name" 2>/dev/null) ||
      path=$(printf '%s\n' /usr/lib/postgresql/*/bin/"$name" | sort -V | tail -n1)
    [[ -x $path ]] || return 1
    if [[ $name == psql ]]; then PSQL=$path; else PG_ISREADY=$path; fi
  done
}

ensure_pg_clients() {
  find_pg_clients && return 0
  apt_install postgresql-client
  find_pg_clients || die "psql / pg_isready still missing after installing postgresql-client"
}

# Succeeds when a PostgreSQL server accepts connections at URL (waits up to ~10 s while it starts).
pg_answers() {
  local url=$1 i rc
  parse_db_url "$url"
  for ((i = 0; i < 20; i++)); do
    rc=0
    "$PG_ISREADY" -q -t 3 -d "$URL_MAINT" || rc=$?
    case $rc in
      0) return 0 ;;
      1) sleep 0.5 ;; # starting up or shutting down
      3) die "pg_isready cannot use DATABASE_URL $(mask_url "$url") (bad connection parameters)" ;;
      *) return 1 ;;
    esac
  done
  return 1
}

# Creates the database named in URL unless it exists (through the "postgres" maintenance db).
ensure_database() {
  local url=$1 count out
  parse_db_url "$url"
  [[ -n $URL_DB && $URL_DB != postgres ]] || return 0
  count=$("$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -v db="$URL_DB" -d "$URL_MAINT" 2>&1 <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db';
SQL
  ) || die "PostgreSQL at $(mask_url "$url") answers, but psql could not query it: $count"
  if [[ $count == 0 ]]; then
    out=$("$PSQL" -X -q -v ON_ERROR_STOP=1 -v db="$URL_DB" -d "$URL_MAINT" 2>&1 <<'SQL'
CREATE DATABASE :"db";
SQL
    ) || die "could not create database $URL_DB: $out"
    log "created database $URL_DB"
  fi
}

# The bin dir of the PostgreSQL server to run: the version of an existing private data dir, else
# the highest /usr/lib/postgresql/*/bin with initdb and pg_ctl, else initdb on PATH.
pg_server_bindir() {
  local want="" d found=()
  if [[ -f $PG_DATA/PG_VERSION ]]; then
    want=$(<"$PG_DATA/PG_VERSION")
    if [[ -x /usr/lib/postgresql/$want/bin/pg_ctl ]]; then
      printf '%s\n' "/usr/lib/postgresql/$want/bin"
      return 0
    fi
  fi
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then found+=("$d"); fi
  done
  if ((${#found[@]} > 0)); then
    printf '%s\n' "${found[@]}" | sort -V | tail -n1
  elif d=$(command -v initdb 2>/dev/null); then
    dirname -- "$d"
  else
    return 1
  fi
}

# Runs a command as the owner of the private cluster: the postgres user when we are root
# (initdb and postgres refuse to run as root), else ourselves.
as_pg_owner() {
  if is_root; then
    (cd "$PG_DIR" && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

private_pg_running() {
  [[ -f $PG_DATA/PG_VERSION ]] || return 1
  local bindir
  bindir=$(pg_server_bindir) || return 1
  as_pg_owner "$bindir/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

start_private_pg() {
  local bindir sockdir
  if private_pg_running; then
    log "private PostgreSQL under $PG_DIR is already running"
    # It keeps the port it was started with, even if STACK_PG_PORT changed since.
    PRIVATE_DATABASE_URL=$(sed -n 's/^url=//p' "$PG_MARKER" 2>/dev/null)
    PRIVATE_DATABASE_URL=${PRIVATE_DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/hotfeed}
    return 0
  fi
  if ! bindir=$(pg_server_bindir); then
    apt_install postgresql
    log "note: the postgresql package may have started a system cluster on 5432 (password auth); the stack does not use it"
    bindir=$(pg_server_bindir) || die "no initdb/pg_ctl under /usr/lib/postgresql/*/bin after installing postgresql"
  fi
  if "$PG_ISREADY" -q -t 2 -h 127.0.0.1 -p "$PG_PORT"; then
    die "port $PG_PORT already has a PostgreSQL that this stack did not start; set STACK_PG_PORT to a free port"
  fi

  mkdir -p "$PG_DIR" "$PG_RUN"
  if is_root; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to own the private cluster"
    chown -R postgres: "$PG_DIR"
    runuser -u postgres -- test -w "$PG_DIR" ||
      die "the postgres user cannot reach $PG_DIR (a parent directory is not searchable, e.g. /root); set STACK_DIR=/var/tmp/hotfeed-stack or similar"
  fi
  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    log "initdb $PG_DATA ($bindir)"
    rm -rf "$PG_DATA"
    as_pg_owner "$bindir/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C \
      >"$PG_DIR/initdb.log" 2>&1 || {
      tail -n 20 "$PG_DIR/initdb.log" >&2
      die "initdb failed (log: $PG_DIR/initdb.log)"
    }
  fi
  printf 'port=%s\nurl=%s\nbindir=%s\n' "$PG_PORT" "$PRIVATE_DATABASE_URL" "$bindir" >"$PG_MARKER"
  # The Unix socket goes in $PG_RUN unless its path would pass the ~107-byte limit; clients use
  # TCP anyway.
  sockdir="'$PG_RUN'"
  if ((${#PG_RUN} > 90)); then
    warn "$PG_RUN is too long a path for a Unix socket; the private PostgreSQL listens on TCP only"
    sockdir="''"
  fi
  log "starting private PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg_owner "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
    -o "-p $PG_PORT -k $sockdir -c listen_addresses=127.0.0.1" start >/dev/null 9>&- || {
    tail -n 20 "$PG_LOG" >&2 || true
    die "the private PostgreSQL did not start (log: $PG_LOG)"
  }
}

stop_private_pg() {
  local bindir
  [[ -d $PG_DIR ]] || return 0
  if private_pg_running; then
    bindir=$(pg_server_bindir)
    log "stopping private PostgreSQL ($PG_DATA)"
    as_pg_owner "$bindir/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
  fi
  rm -rf "$PG_DIR"
}

# Brings PostgreSQL up; sets USED_DATABASE_URL.
pg_up() {
  resolve_database_url
  ensure_pg_clients
  if pg_answers "$DB_URL"; then
    if [[ -f $PG_MARKER ]] && [[ $DB_URL == *"127.0.0.1:$PG_PORT/"* ]]; then
      log "PostgreSQL: reusing the private server under $PG_DIR"
    else
      log "PostgreSQL: reusing the server at $(mask_url "$DB_URL") (from $DB_URL_SOURCE)"
    fi
    ensure_database "$DB_URL"
    USED_DATABASE_URL=$DB_URL
  else
    log "PostgreSQL: nothing answers at $(mask_url "$DB_URL") (from $DB_URL_SOURCE); using a private server"
    start_private_pg
    pg_answers "$PRIVATE_DATABASE_URL" || die "the private PostgreSQL on port $PG_PORT does not answer (log: $PG_LOG)"
    ensure_database "$PRIVATE_DATABASE_URL"
    USED_DATABASE_URL=$PRIVATE_DATABASE_URL
  fi
}

# ---------------------------------------------------------------------------------------------
# Redis Cluster

node_dir() { printf '%s/redis/%s' "$STACK_DIR" "$1"; }

# What listens on PORT: free, ours, foreign-cluster, foreign-plain, hung (no reply) or other.
node_state() {
  local port=$1 out
  if ! out=$(rcli "$port" ping); then
    case $out in
      *"Connection refused"*) echo free ;;
      "") echo hung ;;
      *) echo other ;;
    esac
    return 0
  fi
  if [[ $out != PONG ]]; then
    echo other
  elif [[ $(rcli "$port" info server | field config_file) == "$(node_dir "$port")/redis.conf" ]]; then
    echo ours
  elif [[ $(rcli "$port" info cluster | field cluster_enabled) == 1 ]]; then
    echo foreign-cluster
  else
    echo foreign-plain
  fi
}

# PID from our pid file, if that process is still the redis-server of PORT.
our_pid() {
  local port=$1 pidfile pid
  pidfile=$(node_dir "$port")/redis.pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(ps -p "$pid" -o args= 2>/dev/null) == *redis-server*":$port"* ]] || return 1
  printf '%s\n' "$pid"
}

# Succeeds while PID runs. A zombie counts as gone: some init processes (this VM's, for one)
# take seconds to reap a daemon that exited.
pid_alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $stat != Z* ]]
}

# Fails with a clear message if PORT is taken by something that is not our node.
refuse_foreign() {
  local port=$1 state=$2 cfg
  case $state in
    foreign-plain)
      die "port $port answers PING but is not a cluster-enabled Redis node; stop it or choose other ports with STACK_REDIS_BASE_PORT" ;;
    foreign-cluster)
      cfg=$(rcli "$port" info server | field config_file)
      die "port $port is a Redis Cluster node this stack did not start (config: ${cfg:-none}); stop it or choose other ports with STACK_REDIS_BASE_PORT" ;;
    other)
      die "port $port is in use by something that does not answer PING like a usable Redis; choose other ports with STACK_REDIS_BASE_PORT" ;;
  esac
}

ensure_redis_installed() {
  local version
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server redis-tools
  fi
  version=$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')
  [[ ${version%%.*} =~ ^[0-9]+$ ]] || die "cannot tell the version of redis-server"
  ((${version%%.*} >= 6)) ||
    die "redis-server $version is too old: cluster-allow-reads-when-down needs Redis 6.0+ (packages.redis.io has newer builds)"
}

write_node_conf() {
  node_conf "$1" "$(node_dir "$1")" >"$(node_dir "$1")/redis.conf"
}

start_node() {
  local port=$1 dir out i
  dir=$(node_dir "$port")
  mkdir -p "$dir"
  write_node_conf "$port"
  rm -f "$dir/redis.pid"
  # 9>&-: the daemon must not inherit (and keep holding) our lock.
  out=$(redis-server "$dir/redis.conf" 2>&1 9>&-) || die "redis-server on port $port failed to start: $out"
  for ((i = 0; i < 50; i++)); do
    [[ $(rcli "$port" ping) == PONG ]] && return 0
    sleep 0.2
  done
  tail -n 20 "$dir/redis.log" >&2 || true
  die "redis node $port did not answer PING within 10 s (log: $dir/redis.log)"
}

# Stops our node on PORT (SHUTDOWN NOSAVE, then signals); leaves anything else alone.
# Fails when there was nothing of ours to stop.
stop_node() {
  local port=$1 state pid="" i
  state=$(node_state "$port")
  pid=$(our_pid "$port") || pid=""
  case $state in
    foreign-* | other)
      warn "port $port is not one of this stack's nodes; leaving it alone"
      return 1 ;;
    ours)
      [[ -n $pid ]] || pid=$(rcli "$port" info server | field process_id)
      rcli "$port" shutdown nosave >/dev/null || true ;;
  esac
  if [[ -z $pid ]]; then
    if [[ $state == ours ]]; then return 0; fi
    return 1
  fi
  for ((i = 0; i < 25; i++)); do
    pid_alive "$pid" || return 0
    if ((i == 10)); then kill -TERM "$pid" 2>/dev/null || true; kill -CONT "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  warn "redis node $port (pid $pid) ignored SHUTDOWN and SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

# fresh (no node knows another, no slots), formed (all 6 know each other, all slots assigned) or partial.
cluster_shape() {
  local port info known slots fresh=0 formed=0 nodes peers want replicas empty_masters
  for port in "${PORTS[@]}"; do
    info=$(rcli "$port" cluster info) || true
    known=$(field cluster_known_nodes <<<"$info")
    slots=$(field cluster_slots_assigned <<<"$info")
    if [[ $known == 1 && $slots == 0 ]]; then fresh=$((fresh + 1)); fi
    if [[ $known == "$REDIS_NODES" && $slots == 16384 ]]; then formed=$((formed + 1)); fi
  done
  if ((fresh == REDIS_NODES)); then
    echo fresh
  elif ((formed == REDIS_NODES)); then
    # Every node knows six: they must be exactly our six, and the replicas must have been
    # assigned (`--cluster create` does that last; killed before it, we get 3 masters without
    # slots and no replicas). A failed master without slots is a restarting node, not a sign.
    nodes=$(rcli "${PORTS[0]}" cluster nodes)
    peers=$(awk '{ sub(/@.*/, "", $2); print $2 }' <<<"$nodes" | sort | tr '\n' ' ')
    want=$(printf '127.0.0.1:%s\n' "${PORTS[@]}" | sort | tr '\n' ' ')
    replicas=$(awk '$3 ~ /slave/' <<<"$nodes" | wc -l)
    empty_masters=$(awk '$3 ~ /master/ && $3 !~ /fail/ && NF < 9' <<<"$nodes" | wc -l)
    if [[ $peers != "$want" ]]; then
      echo partial
    elif ((replicas < REDIS_NODES - REDIS_MASTERS && empty_masters > 0)); then
      echo partial
    else
      echo formed
    fi
  else
    echo partial
  fi
}

# Succeeds when all nodes are up with cluster_state:ok and all slots served, there are 3 masters
# each with a replica, and every replica's link is up and synced. Else sets PROBLEM.
cluster_healthy() {
  local port ci ri masters=0 replicas=0
  for port in "${PORTS[@]}"; do
    ci=$(rcli "$port" cluster info) || { PROBLEM="node $port does not answer"; return 1; }
    if [[ $(field cluster_state <<<"$ci") != ok ]]; then
      PROBLEM="node $port: cluster_state:$(field cluster_state <<<"$ci")"
      return 1
    fi
    if [[ $(field cluster_slots_assigned <<<"$ci") != 16384 || $(field cluster_slots_ok <<<"$ci") != 16384 ]]; then
      PROBLEM="node $port: slots assigned $(field cluster_slots_assigned <<<"$ci"), ok $(field cluster_slots_ok <<<"$ci") of 16384"
      return 1
    fi
    if [[ $(field cluster_known_nodes <<<"$ci") != "$REDIS_NODES" ]]; then
      PROBLEM="node $port knows $(field cluster_known_nodes <<<"$ci") nodes, not $REDIS_NODES"
      return 1
    fi
    ri=$(rcli "$port" info replication) || { PROBLEM="node $port does not answer"; return 1; }
    case $(field role <<<"$ri") in
      master)
        masters=$((masters + 1))
        if [[ $(field connected_slaves <<<"$ri") -lt 1 ]]; then
          PROBLEM="master $port has no connected replica"
          return 1
        fi ;;
      slave)
        replicas=$((replicas + 1))
        if [[ $(field master_link_status <<<"$ri") != up || $(field master_sync_in_progress <<<"$ri") != 0 ]]; then
          PROBLEM="replica $port: master_link_status:$(field master_link_status <<<"$ri"), sync in progress:$(field master_sync_in_progress <<<"$ri")"
          return 1
        fi ;;
      *)
        PROBLEM="node $port: unknown role"
        return 1 ;;
    esac
  done
  if ((masters != REDIS_MASTERS || replicas != REDIS_NODES - REDIS_MASTERS)); then
    PROBLEM="$masters masters and $replicas replicas (want $REDIS_MASTERS and $((REDIS_NODES - REDIS_MASTERS)))"
    return 1
  fi
  local open
  open=$(open_slots "${PORTS[@]}" | awk '{ print $2 }' | sort -un | tr '\n' ' ')
  if [[ -n $open ]]; then
    PROBLEM="slots half moved (open): ${open% } ('scripts/stack.sh up' closes them)"
    return 1
  fi
  PROBLEM=""
}

wait_cluster_healthy() {
  local deadline=$((SECONDS + WAIT_SECS))
  until cluster_healthy; do
    if ((SECONDS >= deadline)); then
      die "the Redis Cluster is not healthy after ${WAIT_SECS}s: $PROBLEM (logs: $STACK_DIR/redis/<port>/redis.log; 'scripts/stack.sh down' then 'up' recreates it)"
    fi
    sleep 0.5
  done
}

create_cluster() {
  local addrs=() port log_file
  for port in "${PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
  log_file=$STACK_DIR/redis/create.log
  log "creating the cluster (${#addrs[@]} nodes, 1 replica per master)"
  rm -f "$log_file"
  REPAIR_LOG=$log_file
  cluster_run "$log_file" "$WAIT_SECS" create "${addrs[@]}" --cluster-replicas 1 --cluster-yes ||
    die_cluster "redis-cli --cluster create failed"
}

# Looks at every port before anything starts (PostgreSQL included), so a conflict leaves nothing
# half-started. Sets TO_START to the free ports.
redis_preflight() {
  local port state pid
  TO_START=()
  for port in "${PORTS[@]}"; do
    state=$(node_state "$port")
    if [[ $state == hung ]] && pid=$(our_pid "$port"); then
      warn "node $port (pid $pid) accepts connections but does not reply; sending SIGCONT"
      kill -CONT "$pid" 2>/dev/null || true
      sleep 1
      state=$(node_state "$port")
    fi
    case $state in
      ours) ;;
      free) TO_START+=("$port") ;;
      hung) die "port $port accepts connections but does not answer PING; stop whatever holds it" ;;
      *) refuse_foreign "$port" "$state" ;;
    esac
  done
}

# ---------------------------------------------------------------------------------------------
# Repair: a formed cluster that an interrupted or failed operation damaged (a fourth master left
# by scripts/workshop.sh step 8, a slot left half moved, slots nobody serves) is mended in place.
# Every redis-cli operation is checked; on a failure `up` stops and says what state the cluster
# is in. Nothing that owns slots is shut down.

# Where a node started by scripts/workshop.sh (step 8) lives: $STACK_DIR/workshop/<port>.
extra_node_dirs() {
  local d
  for d in "$STACK_DIR"/workshop/*/; do
    [[ -f $d/redis.conf ]] && printf '%s\n' "${d%/}"
  done
  return 0
}

# Stops with the cluster's state, what failed and what to do.
die_cluster() {
  printf 'stack: error: %s\n' "$1" >&2
  {
    printf 'stack: the cluster now:\n'
    cluster_summary "${PORTS[@]}" || true
    cluster_problems "${PORTS[@]}" | sed 's/^/  problem: /' || true
    printf "stack: redis-cli's whole output: %s\n" "$REPAIR_LOG"
    printf "stack: run 'scripts/stack.sh up' again once the cause is fixed (it repairs what it can);\n"
    printf "stack: 'scripts/stack.sh down' then 'scripts/stack.sh up' recreates the cluster (the cache starts empty).\n"
  } >&2
  exit 1
}

# A node in the cluster that is not one of our six: its slots go back to the masters beside them
# and it leaves the cluster; it is stopped only when it is this stack's and owns nothing. A stray
# that no longer answers is forgotten by every node (its slots, unserved since, are covered
# afterwards by cover_unassigned).
repair_stray() {
  local id=$1 port=$2 owned cfg out p
  owned=$(slots_owned_by "$id" "${PORTS[@]}")
  if [[ $port != 0 && $(rcli "$port" cluster myid) == "$id" ]]; then
    log "repair: 127.0.0.1:$port is in the cluster but is not one of its six nodes (it owns $owned slots): moving its slots back and removing it"
    repair_open_slots
    drain_node "$REPAIR_LOG" "$port" "${PORTS[@]}" || die_cluster "could not move the slots of 127.0.0.1:$port back"
    cluster_run "$REPAIR_LOG" 60 del-node "127.0.0.1:${PORTS[0]}" "$id" || die_cluster "could not remove 127.0.0.1:$port from the cluster"
    cfg=$(rcli "$port" info server | field config_file)
    if [[ -n $cfg && $cfg == "$STACK_DIR"/* ]]; then
      out=$(shutdown_if_empty "$port") || die_cluster "$out"
      rm -rf "$(dirname -- "$cfg")"
      log "repair: removed 127.0.0.1:$port from the cluster and stopped it"
    else
      log "repair: removed 127.0.0.1:$port from the cluster; it is not this stack's node (config: ${cfg:-none}), so it is left running"
    fi
  else
    log "repair: node ${id:0:8} (127.0.0.1:$port) is in the cluster but does not answer; it owned $owned slots, whose cached keys are gone: every node forgets it"
    for p in "${PORTS[@]}"; do
      out=$(rcli "$p" cluster forget "$id") || true
      [[ $out == OK || $out == *"Unknown node"* ]] || warn "127.0.0.1:$p: CLUSTER FORGET ${id:0:8}: $out"
    done
  fi
}

# Closes half-moved slots with `redis-cli --cluster fix`: `--cluster-replace` because a key the
# importing node received under ASK while the source still held it (a cache fill) must not stop
# the fix (see scripts/workshop.sh step 8).
repair_open_slots() {
  local open
  open=$(open_slots "${PORTS[@]}" | awk '{ print $2 }' | sort -un | tr '\n' ' ')
  [[ -n $open ]] || return 0
  log "repair: slots left half moved (open): ${open% }; closing them with redis-cli --cluster fix --cluster-replace"
  cluster_run "$REPAIR_LOG" 300 fix "127.0.0.1:${PORTS[0]}" --cluster-yes --cluster-replace ||
    die_cluster "redis-cli --cluster fix could not close the open slots"
  sleep 1
  [[ -z $(open_slots "${PORTS[@]}") ]] || die_cluster "slots are still open after redis-cli --cluster fix"
}

# Slots no node serves (their owner was forgotten) go to the master that owns the slot just above
# the range, else just below: the layout `--cluster create` made comes back.
cover_unassigned() {
  local table ranges range lo hi to port out
  table=$(node_table "${PORTS[@]}") || return 0
  ranges=$(awk '$3 ~ /master/ { for (i = 5; i <= NF; i++) { if ($i ~ /^\[/) continue
      n = split($i, r, "-"); for (s = r[1]; s <= (n > 1 ? r[2] : r[1]); s++) have[s] = 1 } }
    END { lo = -1; for (s = 0; s <= 16384; s++) { if (s < 16384 && !(s in have)) { if (lo < 0) lo = s }
      else if (lo >= 0) { print lo "-" s - 1; lo = -1 } } }' <<<"$table")
  for range in $ranges; do
    lo=${range%-*} hi=${range#*-}
    to=""
    if ((hi < 16383)); then to=$(slot_owner_id "$table" $((hi + 1)) none); fi
    if [[ -z $to ]] && ((lo > 0)); then to=$(slot_owner_id "$table" $((lo - 1)) none); fi
    [[ -n $to ]] || die_cluster "slots $range are served by no node, and no master is left to take them"
    port=$(awk -v id="$to" '$1 == id { print $2 }' <<<"$table")
    out=$(rcli "$port" cluster addslotsrange "$lo" "$hi")
    if [[ $out == *"nknown subcommand"* ]]; then # Redis 6: no ADDSLOTSRANGE
      # shellcheck disable=SC2046 # one argument per slot
      out=$(rcli "$port" cluster addslots $(seq "$lo" "$hi"))
    fi
    [[ $out == OK ]] || die_cluster "CLUSTER ADDSLOTSRANGE $lo $hi on 127.0.0.1:$port: $out"
    log "repair: slots $range were served by no node; 127.0.0.1:$port owns them now (empty)"
  done
}

# A node of this stack started by the workshop but no longer in the cluster (its removal was
# interrupted after del-node): it owns nothing, so it is stopped.
stop_left_extra_nodes() {
  local dir port out
  while read -r dir; do
    [[ -n $dir ]] || continue
    port=${dir##*/}
    if [[ $(rcli "$port" ping) == PONG ]]; then
      # Something else on that port, or our node still in the cluster (repair_stray's job).
      [[ $(rcli "$port" info server | field config_file) == "$dir/redis.conf" ]] || continue
      if node_table "${PORTS[@]}" | awk -v p="$port" '$2 == p { f = 1 } END { exit !f }'; then
        continue
      fi
      out=$(shutdown_if_empty "$port") || die_cluster "$out"
      log "repair: stopped 127.0.0.1:$port, a node of scripts/workshop.sh that had left the cluster"
    fi
    rm -rf "$dir"
  done < <(extra_node_dirs)
}

# Repairs a formed cluster of our six nodes in place; leaves anything else to cluster_shape.
redis_repair() {
  local table port id
  REPAIR_LOG=$STACK_DIR/redis/repair.log
  stop_left_extra_nodes
  table=$(node_table "${PORTS[@]}") || return 0
  for port in "${PORTS[@]}"; do
    awk -v p="$port" '$2 == p { f = 1 } END { exit !f }' <<<"$table" || return 0
  done
  while read -r id port _; do
    [[ -n $id ]] || continue
    repair_stray "$id" "$port"
  done < <(awk -v ours=" ${PORTS[*]} " 'index(ours, " " $2 " ") == 0 { print $1, $2, $3 }' <<<"$table")
  repair_open_slots
  cover_unassigned
  repair_settled
}

# Waits (up to 15 s) until every node has heard of the repair: six known nodes, all slots
# assigned. Else cluster_shape would take a cluster still gossiping for a half-formed one.
repair_settled() {
  local port ci deadline=$((SECONDS + 15)) settled
  while ((SECONDS < deadline)); do
    settled=yes
    for port in "${PORTS[@]}"; do
      ci=$(rcli "$port" cluster info) || true
      if [[ $(field cluster_known_nodes <<<"$ci") != "$REDIS_NODES" || $(field cluster_slots_assigned <<<"$ci") != 16384 ]]; then
        settled=no
      fi
    done
    [[ $settled == yes ]] && return 0
    sleep 0.5
  done
}

redis_up() {
  local port shape
  mkdir -p "$STACK_DIR/redis"
  if ((${#TO_START[@]} > 0)); then
    log "starting redis nodes: ${TO_START[*]}"
    for port in "${TO_START[@]}"; do start_node "$port"; done
  fi

  redis_repair
  shape=$(cluster_shape)
  if [[ $shape == partial ]]; then
    log "the cluster is half-formed (left by an earlier run?); recreating it from scratch"
    for port in "${PORTS[@]}"; do stop_node "$port" || true; done
    rm -rf "$STACK_DIR/redis"
    mkdir -p "$STACK_DIR/redis"
    for port in "${PORTS[@]}"; do start_node "$port"; done
    shape=fresh
  fi
  if [[ $shape == fresh ]]; then create_cluster; fi
  log "waiting for cluster_state:ok, all slots and in-sync replicas (up to ${WAIT_SECS}s)"
  wait_cluster_healthy
}

redis_urls() {
  local port urls=()
  for port in "${PORTS[@]}"; do urls+=("redis://127.0.0.1:$port"); done
  (IFS=,; printf '%s\n' "${urls[*]}")
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_up() {
  local urls
  take_lock
  ensure_redis_installed
  redis_preflight
  pg_up
  redis_up
  urls=$(redis_urls)
  env_file_set_default DATABASE_URL "$USED_DATABASE_URL"
  env_file_set_default REDIS_URLS "$urls"
  # An admin key of this checkout's own, so the demo's loadgen --write-rate and the workshop can
  # write as any seeded user; random, so no two clones share one.
  if ! env_file_get ADMIN_API_KEY >/dev/null; then
    env_file_set_default ADMIN_API_KEY "$(head -c 32 /dev/urandom | base64 -w0)"
  fi
  if [[ -n ${DATABASE_URL:-} && $DATABASE_URL != "$USED_DATABASE_URL" ]]; then
    warn "DATABASE_URL in your environment ($(mask_url "$DATABASE_URL")) overrides .env for the app; unset it"
  fi
  if [[ -n ${REDIS_URLS:-} && $REDIS_URLS != "$urls" ]]; then
    warn "REDIS_URLS in your environment ($REDIS_URLS) overrides .env for the app"
  fi
  log "DATABASE_URL=$(mask_url "$USED_DATABASE_URL")"
  log "REDIS_URLS=$urls"
  log "up in $(elapsed)"
  cmd_status || true
}

cmd_down() {
  local port dir stopped=()
  take_lock
  for port in "${PORTS[@]}"; do
    if stop_node "$port"; then stopped+=("$port"); fi
  done
  # A fourth master of scripts/workshop.sh goes with the cluster it belonged to.
  while read -r dir; do
    [[ -n $dir ]] || continue
    port=${dir##*/}
    if [[ $(rcli "$port" info server | field config_file) == "$dir/redis.conf" ]]; then
      rcli "$port" shutdown nosave >/dev/null || true
      stopped+=("$port")
    fi
    rm -rf "$dir"
  done < <(extra_node_dirs)
  rm -rf "$STACK_DIR/redis"
  if ((${#stopped[@]} > 0)); then
    log "stopped redis nodes: ${stopped[*]}"
  else
    log "no redis node of this stack was running on ${PORTS[0]}..${PORTS[-1]}"
  fi
  if [[ -d $PG_DIR ]]; then
    stop_private_pg
  fi
  log "down in $(elapsed)"
}

# One aligned status line: component, what, state.
row() { printf "stack: %-10s %-${COLW}s %s\n" "$1" "$2" "$3"; }

cmd_status() {
  local healthy=0 port state ri role detail cs="" url pg_state masked private_url=""
  # Within `up`, report the URL it settled on; on its own, the one the app would read.
  if [[ -n ${USED_DATABASE_URL:-} ]]; then
    url=$USED_DATABASE_URL
  else
    resolve_database_url
    url=$DB_URL
  fi
  masked=$(mask_url "$url")
  COLW=${#masked}
  if ((COLW < 24)); then COLW=24; fi
  if find_pg_clients && pg_answers "$url"; then pg_state=up; else pg_state=down healthy=1; fi
  if [[ -f $PG_MARKER ]]; then private_url=$(sed -n 's/^url=//p' "$PG_MARKER"); fi
  if [[ $url == "$private_url" ]]; then pg_state="$pg_state  (private server in $PG_DIR)"; fi
  row postgresql "$masked" "$pg_state"
  if [[ -n $private_url && $url != "$private_url" ]]; then
    if private_pg_running; then pg_state=up; else pg_state=down; fi
    row "" "$private_url" "$pg_state  (private server in $PG_DIR; not the DATABASE_URL in use)"
  fi
  for port in "${PORTS[@]}"; do
    state=$(node_state "$port")
    if [[ $state == ours ]]; then
      ri=$(rcli "$port" info replication)
      role=$(field role <<<"$ri")
      if [[ $role == slave ]]; then
        detail="replica of $(field master_port <<<"$ri"), link $(field master_link_status <<<"$ri")"
      else
        detail="master, slots $(rcli "$port" cluster nodes | awk '$3 ~ /myself/ { s = ""; for (i = 9; i <= NF; i++) s = s (s == "" ? "" : ",") $i; print (s == "" ? "none" : s) }')"
      fi
      [[ -n $cs ]] || cs=$(rcli "$port" cluster info | field cluster_state)
      row redis "127.0.0.1:$port" "up    $detail"
    else
      healthy=1
      case $state in
        free) detail=down ;;
        hung) detail="down  (accepts connections, no reply)" ;;
        *) detail="down  (port used by a server this stack did not start)" ;;
      esac
      row redis "127.0.0.1:$port" "$detail"
    fi
  done
  if [[ -z $cs ]]; then
    row cluster "cluster_state:unknown" "(no node of ours answers)"
    healthy=1
  elif cluster_healthy; then
    row cluster "cluster_state:$cs" "$REDIS_MASTERS masters, $((REDIS_NODES - REDIS_MASTERS)) replicas in sync"
  else
    row cluster "cluster_state:$cs" "not healthy: $PROBLEM"
    healthy=1
  fi
  return "$healthy"
}

main() {
  local cmd=${1:-}
  case $cmd in
    up | down | status) ;;
    -h | --help | help | "")
      usage
      return 0 ;;
    *)
      usage >&2
      return 2 ;;
  esac
  check_config
  "cmd_$cmd"
}

main "$@"
