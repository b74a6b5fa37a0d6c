#!/usr/bin/env bash
# scripts/entrypoint.sh — entrypoint of the hotfeed container image (see Dockerfile).
#
#   entrypoint.sh serve [ARGS]   check the configuration, wait for PostgreSQL and the Redis Cluster,
#                                apply migrations, then exec `hotfeed serve ARGS` (the default)
#   entrypoint.sh migrate        wait for PostgreSQL, apply migrations, exit
#   entrypoint.sh healthcheck    exit 0 if GET /ping answers 200 on APP_PORT (the image HEALTHCHECK)
#   entrypoint.sh COMMAND ...    exec anything else as is: datagen, loadgen, hotfeed --help, bash
#
# Misconfiguration (a missing or malformed DATABASE_URL, REDIS_URLS, CACHE or APP_PORT) exits 64 with
# a message naming the variable; PostgreSQL not answering in time exits 69. A Redis Cluster that is
# not ready in time only warns: hotfeed serves from PostgreSQL and reconnects in the background.
#
# Environment: hotfeed's own (DATABASE_URL, REDIS_URLS, CACHE, APP_HOST, APP_PORT, NO_MIGRATE, ...:
# `hotfeed serve --help`), plus
#   WAIT_TIMEOUT_SECS  how long to wait for PostgreSQL and for the cluster (default 60)
#   PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE
#                      used only when DATABASE_URL is unset: the URL is built from them, each part
#                      percent-encoded (a password may hold @ : / # ? % and spaces); compose.yml
#                      passes its PostgreSQL settings this way
# An option set to the empty string (`CACHE=` in .env) counts as unset: the default applies.
#
# SIGTERM or SIGINT while waiting or migrating ends the entrypoint at once (exit 143 / 130), also as
# PID 1 in a container, where a signal without a handler would be ignored.
#
# Needs bash and coreutils only (no curl, no redis-cli): it speaks TCP through bash's /dev/tcp.
# The `bash -c` scripts below are single-quoted on purpose: they get host and port as $0 and $1.
# shellcheck disable=SC2016
set -euo pipefail

# The options of hotfeed serve / migrate, datagen and loadgen, plus the entrypoint's own. Keep in
# sync with src/config/, datagen/src and loadgen/src (scripts/check-static.sh compares them).
SERVICE_OPTIONS=(
  DATABASE_URL DB_MAX_CONNECTIONS DB_MAX_INFLIGHT DB_ACQUIRE_TIMEOUT_MS DB_STATEMENT_TIMEOUT_MS
  APP_HOST APP_PORT APP_WORKERS SHUTDOWN_TIMEOUT_SECS SHUTDOWN_DRAIN_SECS NO_MIGRATE
  ACCESS_LOG LOG_SLOW_REQUEST_MS
  HTTP_HEAD_TIMEOUT_MS HTTP_BODY_TIMEOUT_MS HTTP_REQUEST_TIMEOUT_MS HTTP_KEEP_ALIVE_SECS
  HTTP_MAX_CONNECTIONS
  PAGE_SIZE_DEFAULT PAGE_SIZE_MAX PAGE_OFFSET_MAX METRICS_USER_LABEL_LIMIT
  FEED_CELEBRITY_FOLLOWERS FEED_BOX_CAP FEED_BOX_TTL_SECS
  CACHE REDIS_URLS REDIS_CA_CERT REDIS_TIMEOUT_MS REDIS_CONNECT_TIMEOUT_MS REDIS_REBUILD_AFTER_ERRORS
  REDIS_BREAKER_AFTER_FAILURES REDIS_BREAKER_OPEN_MS
  REDIS_CONNECTION_PER_WORKER
  CACHE_LIST_TTL_SECS CACHE_OBJECT_TTL_SECS CACHE_KEY_PREFIX CACHE_EARLY_REFRESH_MS
  CACHE_FETCH CACHE_OBJECT_BUCKETS
  L1 L1_TTL_MS L1_MAX_BYTES L1_ADMIT_READS L1_PING_MS HOT_WINDOW_SECS HOT_TOP_K
  ADMIN_API_KEY RATE_LIMIT_WRITES_PER_USER RATE_LIMIT_WRITES_PER_USER_BURST
  RATE_LIMIT_WRITES_PER_IP RATE_LIMIT_WRITES_PER_IP_BURST RATE_LIMIT_READS_PER_IP
  RATE_LIMIT_READS_PER_IP_BURST TRUST_FORWARDED_FOR
  LOG_FORMAT RUST_LOG LOADGEN_URL
  WAIT_TIMEOUT_SECS PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE
)

log() { printf 'entrypoint: %s\n' "$*" >&2; }
config_error() {
  printf 'entrypoint: configuration error: %s\n' "$*" >&2
  exit 64 # EX_USAGE
}
unavailable() {
  printf 'entrypoint: error: %s\n' "$*" >&2
  exit 69 # EX_UNAVAILABLE
}

# Unsets every SERVICE_OPTIONS variable that is set but empty: compose passes `CACHE=` from .env
# as an empty value, and hotfeed would reject '' (exit 2) instead of applying its default.
normalise_env() {
  local name
  for name in "${SERVICE_OPTIONS[@]}"; do
    if [[ -v $name && -z ${!name} ]]; then unset "$name"; fi
  done
}

# Percent-encodes $1 for a URL's userinfo, path or query: everything but A-Z a-z 0-9 - . _ ~,
# byte by byte (UTF-8 stays UTF-8).
urlencode() {
  local LC_ALL=C string=$1 out="" char i
  for ((i = 0; i < ${#string}; i++)); do
    char=${string:i:1}
    if [[ $char == [A-Za-z0-9._~-] ]]; then
      out+=$char
    else
      printf -v char '%%%02X' "'$char"
      out+=$char
    fi
  done
  printf '%s' "$out"
}

# Builds DATABASE_URL from PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE when DATABASE_URL is
# unset and PGHOST is set; exports it.
database_url_from_parts() {
  [[ -z ${DATABASE_URL:-} && -n ${PGHOST:-} ]] || return 0
  local userinfo="" host=$PGHOST
  if [[ -n ${PGUSER:-} ]]; then
    userinfo=$(urlencode "$PGUSER")
    [[ -n ${PGPASSWORD:-} ]] && userinfo+=":$(urlencode "$PGPASSWORD")"
    userinfo+="@"
  fi
  [[ $host == *:* ]] && host="[$host]" # an IPv6 literal
  DATABASE_URL="postgres://${userinfo}${host}:${PGPORT:-5432}/$(urlencode "${PGDATABASE:-${PGUSER:-postgres}}")"
  export DATABASE_URL
}

# ---------------------------------------------------------------------------------------------
# Signals. Bash runs a trap only once the foreground command has finished, so every wait below
# runs its command in the background and `wait`s for it: a trapped signal interrupts `wait` at
# once. The handler stops that command and exits.

CHILD=""
on_signal() {
  local signal=$1 code=$2
  log "received SIG$signal while starting: exiting"
  if [[ -n $CHILD ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
  fi
  exit "$code"
}
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT

# Runs "$@" in the background, waits for it, returns its status.
interruptible() {
  local status=0
  "$@" &
  CHILD=$!
  wait "$CHILD" || status=$?
  CHILD=""
  return "$status"
}
nap() { interruptible sleep "$1"; }

is_true() { [[ ${1,,} =~ ^(1|true|yes|on)$ ]]; }

# Hides the password of a URL for printing.
mask_url() { sed -E 's#(://[^:/@]+:)[^@/]*@#\1***@#' <<<"$1"; }

# Splits a URL's authority into URL_HOST and URL_PORT (default $2); URL_AUTH=1 if it has credentials.
parse_authority() {
  local url=$1 default_port=$2 rest authority
  rest=${url#*://}
  authority=${rest%%[/?#]*}
  URL_AUTH=0
  if [[ $authority == *@* ]]; then
    URL_AUTH=1
    authority=${authority##*@}
  fi
  if [[ $authority =~ ^\[([^]]+)\](:([0-9]+))?$ ]]; then # [IPv6]:port
    URL_HOST=${BASH_REMATCH[1]} URL_PORT=${BASH_REMATCH[3]:-$default_port}
  elif [[ $authority =~ ^([^:]*)(:([0-9]*))?$ ]]; then
    URL_HOST=${BASH_REMATCH[1]} URL_PORT=${BASH_REMATCH[3]:-$default_port}
  else
    return 1
  fi
}

# Succeeds if a TCP connection to host $1 port $2 opens within 2 s.
tcp_open() {
  interruptible timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Succeeds if the Redis node at host $1 port $2 reports cluster_state:ok (RESP over /dev/tcp).
cluster_ok() {
  interruptible timeout 2 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "*2\r\n\$7\r\nCLUSTER\r\n\$4\r\nINFO\r\n" >&3
    while IFS= read -r line <&3; do
      case $line in
        cluster_state:ok*) exit 0 ;;
        cluster_state:* | -*) exit 1 ;;
      esac
    done
    exit 1' "$1" "$2" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# Configuration checks: fail early with the variable's name rather than deep inside hotfeed.

check_database_url() {
  [[ -n ${DATABASE_URL:-} ]] ||
    config_error "DATABASE_URL is not set (e.g. postgres://postgres:postgres@postgres:5432/hotfeed)"
  [[ $DATABASE_URL =~ ^postgres(ql)?:// ]] ||
    config_error "DATABASE_URL must start with postgres:// or postgresql:// (got $(mask_url "$DATABASE_URL"))"
  parse_authority "$DATABASE_URL" 5432 ||
    config_error "DATABASE_URL has a malformed host:port (got $(mask_url "$DATABASE_URL"))"
  PG_HOST=$URL_HOST PG_PORT=$URL_PORT
}

check_serve_settings() {
  local cache=${CACHE:-on} url
  [[ $cache == on || $cache == off ]] || config_error "CACHE must be on or off (got '$cache')"
  if [[ -n ${APP_PORT:-} ]]; then
    if ! [[ $APP_PORT =~ ^[0-9]+$ ]] || ((APP_PORT > 65535)); then
      config_error "APP_PORT must be a port number (got '$APP_PORT')"
    fi
  fi
  [[ $WAIT_TIMEOUT_SECS =~ ^[0-9]+$ ]] ||
    config_error "WAIT_TIMEOUT_SECS must be a whole number of seconds (got '$WAIT_TIMEOUT_SECS')"
  REDIS_SEEDS=()
  [[ $cache == on ]] || return 0
  [[ -n ${REDIS_URLS:-} ]] ||
    config_error "REDIS_URLS is not set; name the cluster's nodes (redis://redis-1:6379,...) or set CACHE=off"
  IFS=, read -r -a urls <<<"$REDIS_URLS"
  for url in "${urls[@]}"; do
    url=${url//[[:space:]]/}
    [[ -n $url ]] || continue
    [[ $url =~ ^rediss?:// ]] ||
      config_error "every REDIS_URLS entry must start with redis:// or rediss:// (got $(mask_url "$url"))"
    if ! parse_authority "$url" 6379 || [[ -z $URL_HOST ]]; then
      config_error "REDIS_URLS entry has a malformed host:port (got $(mask_url "$url"))"
    fi
    local tls=0
    [[ $url == rediss://* ]] && tls=1
    REDIS_SEEDS+=("$URL_HOST $URL_PORT $URL_AUTH $tls")
  done
  ((${#REDIS_SEEDS[@]} > 0)) || config_error "REDIS_URLS names no node"
}

# ---------------------------------------------------------------------------------------------

wait_for_postgres() {
  [[ -n $PG_HOST ]] || return 0 # a Unix socket given in the query string: nothing to probe here
  local deadline=$((SECONDS + WAIT_TIMEOUT_SECS))
  log "waiting for PostgreSQL at $PG_HOST:$PG_PORT (up to ${WAIT_TIMEOUT_SECS}s)"
  until tcp_open "$PG_HOST" "$PG_PORT"; do
    ((SECONDS < deadline)) ||
      unavailable "PostgreSQL at $PG_HOST:$PG_PORT does not accept connections after ${WAIT_TIMEOUT_SECS}s (DATABASE_URL=$(mask_url "$DATABASE_URL"))"
    nap 1
  done
}

# Applies migrations, retrying while PostgreSQL finishes starting (it accepts TCP before it accepts
# logins) or while another replica holds the same migration.
migrate() {
  local deadline=$((SECONDS + WAIT_TIMEOUT_SECS))
  until interruptible hotfeed migrate; do
    ((SECONDS < deadline)) ||
      unavailable "migrations could not be applied within ${WAIT_TIMEOUT_SECS}s (see hotfeed's error above)"
    log "migration failed; retrying in 2s"
    nap 2
  done
}

# Waits until one seed node reports cluster_state:ok. Never fatal: the service runs without Redis.
wait_for_cluster() {
  ((${#REDIS_SEEDS[@]} > 0)) || return 0
  local deadline=$((SECONDS + WAIT_TIMEOUT_SECS)) seed host port auth tls
  log "waiting for the Redis Cluster (${#REDIS_SEEDS[@]} seed node(s), up to ${WAIT_TIMEOUT_SECS}s)"
  while :; do
    for seed in "${REDIS_SEEDS[@]}"; do
      read -r host port auth tls <<<"$seed"
      if ((auth == 1 || tls == 1)); then
        # With credentials or TLS, only reachability is checked (AUTH and the TLS handshake are
        # left to hotfeed; bash's /dev/tcp speaks neither).
        tcp_open "$host" "$port" && return 0
      else
        cluster_ok "$host" "$port" && return 0
      fi
    done
    if ((SECONDS >= deadline)); then
      log "warning: no REDIS_URLS node reports cluster_state:ok after ${WAIT_TIMEOUT_SECS}s;" \
        "starting anyway: reads are served from PostgreSQL until the cluster answers"
      return 0
    fi
    nap 1
  done
}

healthcheck() {
  local host=${APP_HOST:-0.0.0.0}
  [[ $host == 0.0.0.0 || $host == :: || -z $host ]] && host=127.0.0.1
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
    IFS= read -r status <&3
    [[ $status =~ ^HTTP/1\.[01]\ 200 ]]' "$host" "${APP_PORT:-8080}" 2>/dev/null
}

main() {
  normalise_env
  WAIT_TIMEOUT_SECS=${WAIT_TIMEOUT_SECS:-60}
  database_url_from_parts
  local command=${1:-serve}
  (($# > 0)) && shift
  case $command in
    serve)
      check_database_url
      check_serve_settings
      wait_for_postgres
      if is_true "${NO_MIGRATE:-false}"; then
        log "NO_MIGRATE is set: not applying migrations"
      else
        migrate
      fi
      wait_for_cluster
      # Migrations are done (or deliberately skipped): serve must not run them again.
      export NO_MIGRATE=true
      exec hotfeed serve "$@"
      ;;
    migrate)
      check_database_url
      wait_for_postgres
      migrate
      ;;
    healthcheck)
      healthcheck
      ;;
    *)
      exec "$command" "$@"
      ;;
  esac
}

# Sourced (scripts/check-static.sh tests the functions): define only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
