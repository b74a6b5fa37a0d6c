#!/usr/bin/env bash
# scripts/container-smoke.sh — build the container image and run compose.yml (and compose.dev.yml)
# with a real container engine, on a Debian machine that reaches Debian's archive, crates.io and
# PyPI but no container registry.
#
#   scripts/container-smoke.sh                  full: build ./Dockerfile's runtime stage (cold:
#                                               ~17 min on 2 cores), run the compose demo, then
#                                               build the dev stage and run compose.dev.yml's app
#                                               (it compiles the workspace inside: ~10 more min)
#   scripts/container-smoke.sh --ci             CI's form: the runtime stage of ./Dockerfile, unchanged,
#                                               with its builder stage replaced by the binaries
#                                               `cargo build --workspace --bins` made on the host;
#                                               compose.dev.yml: parsed and its datagen command
#                                               checked, its dev image not built
#   options: --release (with --ci: release binaries instead of the debug ones CI's tests built),
#            --keep-images (keep the stand-ins and hotfeed images for the next run; default: remove
#            what this run built), --no-dev (skip compose.dev.yml), -h/--help
#
# What it does, each step with a time limit and a line saying what failed:
#   1. installs what is missing: podman, runc, iptables, debootstrap, netavark, aardvark-dns (apt); podman-compose
#      (PyPI, pinned below, in a venv under $CONTAINER_SMOKE_HOME); a containers.conf with lower
#      default ulimits (VMs without CAP_SYS_RESOURCE cannot raise nofile to podman's 1048576);
#   2. builds the stand-in base images (deploy/standins/: a debootstrap'ed Debian, then Redis,
#      PostgreSQL, Prometheus and the Rust toolchain from Debian's packages and this machine's
#      toolchain), tagged with the official images' names; an official image already present is
#      used as is;
#   3. builds hotfeed:local (see the modes above), checks its user (10001) and HEALTHCHECK;
#   4. compose.yml: `config`, PostgreSQL and six Redis nodes, the cluster init (fresh, then again on
#      the formed cluster), the app (waits, migrates, healthy) and Prometheus; the README's demo:
#      404 on the empty database, datagen (DATAGEN_ARGS empty, then two flags), user 1's first page
#      MISS then HIT, user 70's home feed, /health, /metrics, Prometheus's target and rules; `down -v`;
#   5. compose.dev.yml (full mode): the dev stage, the stack, the app compiling in its container
#      under cargo watch, healthy, serving, gdb attaching; --ci only parses it and checks datagen's
#      command.
# Grafana is not started (no Debian package to make a stand-in from). Published ports are moved off
# the defaults (CT_APP_PORT 18980, CT_POSTGRES_PORT 18932, CT_PROMETHEUS_PORT 18990,
# CT_DEBUG_PORT 18945). Runs as root (rootful podman: `sudo scripts/container-smoke.sh`). docs/OPERATIONS.md, "The container
# smoke test", says what this proves and what it cannot.
#
# The functions run by name through `step` (bash -c), which shellcheck cannot follow:
# shellcheck disable=SC2317
set -euo pipefail

PODMAN_COMPOSE_PIN=1.6.0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTAINER_SMOKE_HOME=${CONTAINER_SMOKE_HOME:-$HOME/.cache/hotfeed-container-smoke}
PROJECT=${CT_PROJECT:-hotfeed-smoke}
STANDIN_LABEL=org.hotfeed.standin
MODE=full PROFILE=debug KEEP_IMAGES=no DEV=yes
usage() { sed -n '2,/^# The functions run by name/{/^# The functions run by name/d;s/^# \{0,1\}//;p}' "$0"; }
while (($#)); do
  case $1 in
    --ci) MODE=ci ;;
    --release) PROFILE=release ;;
    --keep-images) KEEP_IMAGES=yes ;;
    --no-dev) DEV=no ;;
    -h | --help) usage; exit 0 ;;
    *) echo "container-smoke: unknown option $1 (--help)" >&2; exit 64 ;;
  esac
  shift
done

[[ $(id -u) -eq 0 ]] || { echo "container-smoke: run as root (rootful podman): sudo $0" >&2; exit 64; }

export APP_PORT=${CT_APP_PORT:-18980} POSTGRES_PORT=${CT_POSTGRES_PORT:-18932}
export PROMETHEUS_PORT=${CT_PROMETHEUS_PORT:-18990} DEBUG_PORT=${CT_DEBUG_PORT:-18945}
export GRAFANA_PORT=${CT_GRAFANA_PORT:-18930} BIND_ADDRESS=127.0.0.1
export CONTAINERS_CONF=$CONTAINER_SMOKE_HOME/containers.conf BUILDAH_FORMAT=docker
export REPO PROJECT STANDIN_LABEL MODE PROFILE CONTAINER_SMOKE_HOME
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotfeed-container-smoke.XXXXXX")
export WORK
: >"$WORK/empty.env"
cd "$REPO"

# ---------------------------------------------------------------------------------------------
# Steps: each runs in its own process group under `timeout`, its output in $WORK/logs; a failure
# prints the step, why (exit code or time limit) and the end of its output, then tears down.

STEP_NO=0
TIMES=()
START=$SECONDS
step() {
  local name=$1 limit=$2 rc=0 t0=$SECONDS
  shift 2
  STEP_NO=$((STEP_NO + 1))
  local log
  log=$(printf '%s/logs/%02d.log' "$WORK" "$STEP_NO")
  mkdir -p "$WORK/logs"
  printf '==> %s (limit %ss) ... ' "$name" "$limit"
  timeout -k 20 "$limit" bash -c 'set -euo pipefail; "$@"' step "$@" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  if ((rc == 0)); then
    printf 'ok (%ss)\n' "$took"
    if [[ -s $log ]] && grep -q '^| ' "$log"; then sed -n 's/^| /    /p' "$log"; fi
    TIMES+=("$(printf '%5ss  %s' "$took" "$name")")
    return 0
  fi
  if ((rc == 124 || rc == 137)); then
    printf 'FAILED: timed out after %ss\n' "$limit"
  else
    printf 'FAILED (exit %s after %ss)\n' "$rc" "$took"
  fi
  echo "---- last lines of its output ($log) ----"
  tail -n 40 "$log" | sed 's/^/    /'
  echo "container-smoke: FAILED at step '$name'"
  exit 1
}
# Lines a step prints with `say` are shown under its ok line (measured times, versions).
say() { printf '| %s\n' "$*"; }
die() { printf 'container-smoke: %s\n' "$*" >&2; exit 1; }

pc() { "$CONTAINER_SMOKE_HOME/venv/bin/podman-compose" --in-pod false --env-file "$WORK/empty.env" -p "$PROJECT" "$@"; }
pc_main() { pc -f compose.yml "$@"; }
pc_dev() { pc -f compose.yml -f compose.dev.yml "$@"; }
# The container of SERVICE in the project (podman-compose names it PROJECT_SERVICE_1).
cid() {
  podman ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -n 1
}
# Registry-qualified name of an image reference (what `podman images` lists).
qualified() {
  local ref=$1
  if [[ $ref != */* ]]; then ref=docker.io/library/$ref; fi
  if [[ ${ref%%/*} != *.* && ${ref%%/*} != localhost ]]; then ref=docker.io/$ref; fi
  printf '%s\n' "$ref"
}
compose_image() { sed -n "s|^ *image: *\\($1:[^ ]*\\) *\$|\\1|p" compose.yml | head -n 1; }
dockerfile_arg() { sed -n "s/^ARG $1=//p" Dockerfile | head -n 1; }
plain() { sed 's/\x1b\[[0-9;]*m//g'; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" || true; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every second until it succeeds.
wait_for() {
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < limit)) || { echo "not $what after ${limit}s"; return 1; }
    sleep 1
  done
}
healthy() { podman healthcheck run "$(cid "$1")"; }
export -f say die plain pc pc_main pc_dev cid qualified compose_image dockerfile_arg http_code wait_for healthy

# ---------------------------------------------------------------------------------------------
# 1. Tools

install_tools() {
  local missing=() pkg
  for pkg in podman runc iptables debootstrap netavark aardvark-dns uidmap slirp4netns fuse-overlayfs curl python3; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  if ! python3 -m venv --help >/dev/null 2>&1; then missing+=(python3-venv); fi
  if ((${#missing[@]})); then
    echo "installing ${missing[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  mkdir -p "$CONTAINER_SMOKE_HOME"
  local pc_bin=$CONTAINER_SMOKE_HOME/venv/bin/podman-compose
  if ! "$pc_bin" --version 2>/dev/null | grep -q "podman-compose version $PODMAN_COMPOSE_PIN"; then
    echo "installing podman-compose $PODMAN_COMPOSE_PIN (PyPI, venv in $CONTAINER_SMOKE_HOME/venv)"
    python3 -m venv "$CONTAINER_SMOKE_HOME/venv"
    "$CONTAINER_SMOKE_HOME/venv/bin/pip" install --quiet --disable-pip-version-check \
      "podman-compose==$PODMAN_COMPOSE_PIN"
  fi
  # Podman's default nofile/nproc limits (1048576) need CAP_SYS_RESOURCE, which some VMs lack
  # ("error setting rlimit type 7: operation not permitted"); runc, not crun: crun refuses a
  # hybrid cgroup v1/v2 host ("cgroups in hybrid mode not supported"); netavark (with
  # aardvark-dns) resolves service names.
  cat >"$CONTAINERS_CONF" <<'EOF'
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "netavark"
EOF
  say "$(podman --version), podman-compose $PODMAN_COMPOSE_PIN, debootstrap $(dpkg-query -W -f '${Version}' debootstrap)"
}
export -f install_tools
export PODMAN_COMPOSE_PIN

# ---------------------------------------------------------------------------------------------
# 2. Stand-in base images (deploy/standins/README.md)

# The Debian base every stand-in and the runtime stage start from.
base_image() {
  local release ref
  release=$(dockerfile_arg DEBIAN_RELEASE)
  ref=$(qualified "debian:$release-slim")
  if podman image exists "$ref"; then
    say "$ref: present, reused"
    return 0
  fi
  local rootfs=$WORK/rootfs
  debootstrap --variant=minbase "$release" "$rootfs" "${CT_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change "LABEL $STANDIN_LABEL=true" --change 'CMD ["bash"]' - "$ref"
  rm -rf "$rootfs"
  say "$ref: made with debootstrap --variant=minbase $release ($(podman image inspect --format '{{.Size}}' "$ref" | awk '{printf "%d MB", $1/1e6}'))"
}

# build_standin FILE REF [podman build args]: builds deploy/standins/FILE as REF unless REF exists.
build_standin() {
  local file=$1 ref
  [[ -n $2 ]] || die "no image name for deploy/standins/$file"
  ref=$(qualified "$2")
  shift 2
  if podman image exists "$ref"; then
    if [[ $(podman image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$ref") == true ]]; then
      say "$ref: stand-in present, reused"
    else
      say "$ref: an image not made here (the official one?), used as is"
    fi
    return 0
  fi
  local context=$WORK/standin-context
  rm -rf "$context" && mkdir -p "$context/extra-ca"
  cp -a deploy/standins/. "$context/"
  # The machine's extra CA certificates (only the Rust stand-in copies them in).
  cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca/" 2>/dev/null || true
  touch "$context/extra-ca/.keep"
  nice -n 15 podman build --pull=never --format docker -t "$ref" -f "$context/$file" "$@" "$context"
  say "$ref: stand-in built from deploy/standins/$file"
}

# The Rust toolchain of this machine that matches the Dockerfile's RUST_VERSION.
rust_sysroot() {
  local version=$1 dir
  for dir in "$HOME"/.rustup/toolchains/"$version".*-x86_64-unknown-linux-gnu "$HOME"/.rustup/toolchains/"$version"-x86_64-unknown-linux-gnu; do
    [[ -x $dir/bin/rustc ]] && { readlink -f "$dir"; return 0; }
  done
  local sysroot
  sysroot=$(rustc --print sysroot)
  "$sysroot/bin/rustc" --version | grep -q "^rustc $version" ||
    echo "warning: no $version toolchain; using $("$sysroot/bin/rustc" --version)" >&2
  printf '%s\n' "$sysroot"
}

standins() {
  base_image
  local rust_version release sysroot
  rust_version=$(dockerfile_arg RUST_VERSION)
  release=$(dockerfile_arg DEBIAN_RELEASE)
  # The CI form compiles nothing in a container: no Rust stand-in.
  if [[ $MODE == full ]]; then
    sysroot=$(rust_sysroot "$rust_version")
    build_standin rust.Containerfile "rust:$rust_version-slim-$release" --volume "$sysroot:/toolchain:ro"
  fi
  build_standin redis.Containerfile "$(compose_image redis)"
  build_standin postgres.Containerfile "$(compose_image postgres)"
  build_standin prometheus.Containerfile "$(compose_image prom/prometheus)"
}
export -f base_image build_standin rust_sysroot standins

# ---------------------------------------------------------------------------------------------
# 3. The hotfeed image

# Full mode: ./Dockerfile as compose builds it (app's build section: context ., target runtime).
build_full() {
  nice -n 15 "$CONTAINER_SMOKE_HOME/venv/bin/podman-compose" --in-pod false --env-file "$WORK/empty.env" \
    -p "$PROJECT" -f compose.yml --podman-build-args "--pull=never --format docker" build app
}

# CI mode: the same runtime stage, its `COPY --from=builder /out/` fed by the host's binaries. The
# Containerfile is made from ./Dockerfile at run time (its ARGs before the first FROM, a one-line
# builder stage, then the runtime stage as written), so there is no second copy of the runtime
# stage to drift from the real one.
build_ci() {
  local target_dir=${CARGO_TARGET_DIR:-$REPO/target} flags=()
  [[ $PROFILE == release ]] && flags=(--release)
  nice -n 15 cargo build --locked --workspace --bins "${flags[@]}"
  local context=$WORK/ci-context bin
  mkdir -p "$context/bin" "$context/scripts"
  for bin in hotfeed datagen loadgen; do
    # Without debug info: the image layer is a tenth of the size, the code is the same.
    objcopy --strip-debug "$target_dir/$PROFILE/$bin" "$context/bin/$bin"
  done
  cp scripts/entrypoint.sh "$context/scripts/"
  {
    sed -n '/^FROM /q;p' Dockerfile
    printf '# CI form (scripts/container-smoke.sh --ci): the binaries cargo built on the host (%s)\n' "$PROFILE"
    printf 'FROM scratch AS builder\nCOPY bin/ /out/\n\n'
    sed -n '/^FROM .* AS runtime$/,/^FROM /{/^FROM /{/ AS runtime$/!d};p}' Dockerfile
  } >"$context/Containerfile"
  grep -q ' AS runtime$' "$context/Containerfile" || die "no 'FROM ... AS runtime' stage in Dockerfile"
  nice -n 15 podman build --pull=never --format docker -t hotfeed:local -f "$context/Containerfile" "$context"
  say "hotfeed:local from target/$PROFILE binaries and ./Dockerfile's runtime stage"
}

image_checks() {
  local user health
  user=$(podman image inspect --format '{{.Config.User}}' hotfeed:local)
  health=$(podman image inspect --format '{{json .Config.Healthcheck}}' hotfeed:local)
  echo "User=$user Healthcheck=$health"
  [[ $user == 10001:10001 ]] || die "image user is '$user', expected 10001:10001 (non-root)"
  [[ $health == *entrypoint.sh*healthcheck* ]] || die "image HEALTHCHECK is '$health', expected entrypoint.sh healthcheck"
  podman run --rm --entrypoint id hotfeed:local -u | grep -qx 10001 || die "a container of hotfeed:local does not run as uid 10001"
  podman run --rm hotfeed:local hotfeed --version
  say "hotfeed:local: $(podman image inspect --format '{{.Size}}' hotfeed:local | awk '{printf "%d MB", $1/1e6}'), user 10001:10001, HEALTHCHECK entrypoint.sh healthcheck"
}
export -f build_full build_ci image_checks

# ---------------------------------------------------------------------------------------------
# 4. compose.yml

ports_free() {
  local port
  for port in "$APP_PORT" "$POSTGRES_PORT" "$PROMETHEUS_PORT" "$DEBUG_PORT"; do
    if ss -Htln "sport = :$port" | grep -q .; then die "port $port is in use (set CT_*_PORT)"; fi
  done
}

infra_up() {
  local files=$1 t0=$SECONDS node
  "pc_$files" config >"$WORK/compose-$files.config.yml"
  # shellcheck disable=SC2086 # a list of service names
  "pc_$files" up -d --no-build postgres $REDIS_NODES
  wait_for 90 "postgres healthy" healthy postgres
  for node in $REDIS_NODES; do wait_for 60 "$node healthy" healthy "$node"; done
  say "postgres and six Redis nodes healthy in $((SECONDS - t0))s ($(podman exec "$(cid postgres)" postgres --version), $(podman exec "$(cid redis-1)" redis-server --version | awk '{print $3}'))"
}

cluster_init() {
  local files=$1 t0=$SECONDS id rc
  "pc_$files" up -d --no-build --no-deps redis-cluster-init
  id=$(cid redis-cluster-init)
  rc=$(timeout 150 podman wait "$id") || die "redis-cluster-init did not finish in 150s"
  podman logs "$id" 2>&1 | plain | tail -n 5
  [[ $rc == 0 ]] || die "redis-cluster-init exited $rc on fresh nodes"
  say "cluster formed by redis-cluster-init (fresh nodes) in $((SECONDS - t0))s: $(podman logs "$id" 2>&1 | plain | grep -m1 -o 'cluster ok.*' || true)"
  t0=$SECONDS
  podman start --attach "$id" >"$WORK/init-rerun.log" 2>&1 || true
  rc=$(podman inspect --format '{{.State.ExitCode}}' "$id")
  tail -n 5 "$WORK/init-rerun.log"
  [[ $rc == 0 ]] || die "redis-cluster-init exited $rc on the formed cluster (rerun)"
  say "redis-cluster-init rerun on the formed cluster: exit 0 in $((SECONDS - t0))s"
}

app_up() {
  local files=$1 limit=$2 t0=$SECONDS
  shift 2
  "pc_$files" up -d --no-build --no-deps app "$@"
  # The dev app compiles the workspace in the container: as nice as the image builds (children
  # inherit it from the entrypoint, which execs cargo watch).
  if [[ $files == dev ]]; then
    podman top "$(cid app)" hpid | tail -n +2 | xargs -r renice -n 15 -p >/dev/null
  fi
  wait_for "$limit" "app healthy" healthy app || { podman logs --tail 30 "$(cid app)"; return 1; }
  podman logs "$(cid app)" >"$WORK/app-$files.log" 2>&1
  if [[ $files == dev ]]; then
    # The dev image's command is cargo watch, which the entrypoint execs as is (no waits of its
    # own: compose.dev.yml starts the app after PostgreSQL and the cluster are healthy), and which
    # runs `hotfeed serve` once the workspace compiled.
    grep -q 'hotfeed listening' "$WORK/app-$files.log" || die "the dev app did not log that it listens"
  else
    grep -q 'waiting for PostgreSQL' "$WORK/app-$files.log" || die "the entrypoint did not log its wait for PostgreSQL"
    grep -q 'waiting for the Redis Cluster' "$WORK/app-$files.log" || die "the entrypoint did not log its wait for the cluster"
  fi
  local uid migrations
  uid=$(podman exec "$(cid app)" id -u)
  migrations=$(podman exec "$(cid postgres)" psql -U postgres -d hotfeed -tAc 'SELECT count(*) FROM refinery_schema_history')
  ((migrations > 0)) || die "no migration applied (refinery_schema_history is empty)"
  if [[ $files == dev ]]; then
    say "dev app compiled and healthy in $((SECONDS - t0))s as uid $uid; $migrations migrations applied"
  else
    say "app healthy in $((SECONDS - t0))s as uid $uid; the entrypoint waited for PostgreSQL and the cluster; $migrations migrations applied"
  fi
}

url() { printf 'http://127.0.0.1:%s%s' "$APP_PORT" "$1"; }
# x_cache PATH: the X-Cache header of a 200 answer (fails on another status).
x_cache() {
  local headers
  headers=$(curl -s -D - -o /dev/null --max-time 10 "$(url "$1")")
  grep -q '^HTTP/[0-9.]* 200' <<<"$headers" || { echo "GET $1: $(head -n 1 <<<"$headers")"; return 1; }
  sed -n 's/^x-cache: *\([A-Z0-9-]*\).*/\1/ip' <<<"$headers" | tr -d '\r'
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# metric NAME_AND_LABELS: its value on /metrics (0 when absent).
metric() { curl -s --max-time 10 "$(url /metrics)" | awk -v m="$1" '$1 == m {v = $2} END {print v + 0}'; }

datagen_run() {
  local t0=$SECONDS
  # DATAGEN_ARGS unset: no empty argument may reach datagen.
  (unset DATAGEN_ARGS && DATAGEN_USERS=100 DATAGEN_POSTS=20000 pc_main --profile datagen run --rm --no-deps datagen)
  # Two flags with values in one variable: split into four arguments.
  DATAGEN_USERS=100 DATAGEN_POSTS=20000 DATAGEN_ARGS="--seed 7 --exponent 1.2" \
    pc_main --profile datagen run --rm --no-deps datagen
  say "datagen through compose (100 users, 20,000 posts; DATAGEN_ARGS unset, then \"--seed 7 --exponent 1.2\") in $((SECONDS - t0))s"
}

demo() {
  local code first second feed1 feed2 health
  code=$(http_code "$(url /api/v1/users/1/posts)")
  [[ $code == 404 ]] || die "user 1 on the empty database answered $code, expected 404"
  datagen_run
  local misses hits
  misses=$(metric 'post_list_cache_misses_total{user_id="1"}')
  hits=$(metric 'post_list_cache_hits_total{user_id="1"}')
  first=$(x_cache /api/v1/users/1/posts)
  second=$(x_cache /api/v1/users/1/posts)
  [[ $first == MISS && $second == HIT ]] || die "user 1's first page: X-Cache $first then $second, expected MISS then HIT"
  say "user 1's first page: $first, then $second ($(curl -s "$(url /api/v1/users/1/posts)" | json 'len(d["data"])') posts)"
  feed1=$(x_cache /api/v1/users/70/feed)
  # The inbox is built in the background after the first read.
  local t0=$SECONDS
  until feed2=$(x_cache /api/v1/users/70/feed) && [[ $feed2 == HIT* ]]; do
    ((SECONDS - t0 < 20)) || die "user 70's home feed: X-Cache $feed1, then $feed2 for 20s, expected a HIT"
    sleep 1
  done
  say "user 70's home feed: $feed1, then $feed2 ($(curl -s "$(url /api/v1/users/70/feed)" | json 'len({p["user_id"] for p in d["data"]})') authors)"
  health=$(curl -s --max-time 10 -w '\n%{http_code}' "$(url /health)")
  echo "$health"
  [[ $(tail -n 1 <<<"$health") == 200 ]] || die "/health answered $(tail -n 1 <<<"$health")"
  local seen
  seen=$(head -n 1 <<<"$health" | json '"postgres %s, masters up: %s" % (d["postgres"]["status"], " ".join(m["node"] for m in d["redis"]["masters"] if m["status"] == "up"))')
  [[ $seen == "postgres up, masters up: "*" "*" "* ]] || die "/health: $seen, expected PostgreSQL and three masters up"
  say "/health: 200, $seen"
  curl -s "$(url /metrics)" | grep -E '^post_(list|object)_cache'
  misses=$(($(metric 'post_list_cache_misses_total{user_id="1"}') - misses))
  hits=$(($(metric 'post_list_cache_hits_total{user_id="1"}') - hits))
  [[ $misses == 1 && $hits -ge 1 ]] || die "/metrics counted $misses list misses and $hits hits of user 1 for MISS then HIT"
  say "/metrics: user 1's list +$misses miss, +$hits hits"
}

prometheus_checks() {
  local prom=http://127.0.0.1:$PROMETHEUS_PORT t0=$SECONDS expected rules
  target_up() {
    curl -s "$prom/api/v1/targets" | json '[t for t in d["data"]["activeTargets"] if t["labels"]["job"] == "hotfeed" and t["health"] == "up"][0]["scrapeUrl"]'
  }
  wait_for 60 "Prometheus's hotfeed target up" target_up || { curl -s "$prom/api/v1/targets"; return 1; }
  series() { curl -s "$prom/api/v1/query" --data-urlencode 'query=post_list_cache_hits_total{user_id="1"}' | json 'd["data"]["result"][0]["value"][1]'; }
  wait_for 30 "user 1's hits in Prometheus" series
  expected=$(grep -c '^ *- alert:' deploy/prometheus/alerts.yml)
  rules=$(curl -s "$prom/api/v1/rules" | json 'sum(len(g["rules"]) for g in d["data"]["groups"])')
  [[ $rules == "$expected" ]] || die "Prometheus loaded $rules rules, deploy/prometheus/alerts.yml has $expected"
  say "Prometheus ($(curl -s "$prom/api/v1/status/buildinfo" | json 'd["data"]["version"]')): target $(target_up) up in $((SECONDS - t0))s, post_list_cache_hits_total{user_id=\"1\"} = $(series), $rules rules loaded"
}

# The anonymous volumes of the project's containers (the images' VOLUME /data and the like).
anonymous_volumes() {
  local ids
  mapfile -t ids < <(podman ps -a -q --filter "label=com.docker.compose.project=$PROJECT")
  ((${#ids[@]} == 0)) || podman inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{"\n"}}{{end}}{{end}}' "${ids[@]}" |
    grep -E '^[0-9a-f]{64}$' || true
}
# rm_all KIND ID...: removes containers, volumes or images by id, ignoring what is already gone.
rm_all() {
  local kind=$1
  shift
  (($#)) || return 0
  case $kind in
    containers) podman rm -f -v "$@" ;;
    volumes) podman volume rm -f "$@" ;;
    images) podman rmi -f "$@" ;;
  esac >/dev/null 2>&1 || true
}

# `down -v`, then nothing of the project may be left. podman-compose 1.6 removes the named
# volumes but not the anonymous ones (Docker Compose removes both): those are removed here.
down_clean() {
  local files=$1 left anonymous
  anonymous=$(anonymous_volumes)
  "pc_$files" --profile datagen down -v
  # shellcheck disable=SC2086 # a list of volume ids
  rm_all volumes $anonymous
  left=$(podman ps -a -q --filter "label=com.docker.compose.project=$PROJECT"; podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
  [[ -z $left ]] || die "left after down -v: $left"
  say "down -v: no container or volume of $PROJECT left ($(wc -w <<<"$anonymous") anonymous volumes removed by hand)"
}
export -f ports_free infra_up cluster_init app_up url x_cache json metric datagen_run demo prometheus_checks anonymous_volumes rm_all down_clean
export REDIS_NODES="redis-1 redis-2 redis-3 redis-4 redis-5 redis-6"

# ---------------------------------------------------------------------------------------------
# 5. compose.dev.yml

build_dev() {
  nice -n 15 "$CONTAINER_SMOKE_HOME/venv/bin/podman-compose" --in-pod false --env-file "$WORK/empty.env" \
    -p "$PROJECT" -f compose.yml -f compose.dev.yml --podman-build-args "--pull=never --format docker" build app
  say "hotfeed:dev: $(podman run --rm --entrypoint bash hotfeed:dev -c 'rustc --version; cargo watch --version; gdb --version | head -n 1' | paste -sd ',')"
}

# The dev datagen's command as both Compose implementations hand it over: a shell that splits
# DATAGEN_ARGS, so an empty one adds no argument (the compose.yml step ran the same form).
dev_datagen_command() {
  pc_dev --profile datagen config >"$WORK/dev-datagen.yml"
  python3 - "$WORK/dev-datagen.yml" <<'PY'
import subprocess, sys, yaml
service = yaml.safe_load(open(sys.argv[1]))["services"]["datagen"]
command, env = service["command"], service["environment"]
assert command[:2] == ["bash", "-c"], command
for args, expected in (("", []), ("--seed 7 --exponent 1.2", ["--seed", "7", "--exponent", "1.2"])):
    script = command[2].replace("exec cargo run --release -p datagen --", "printf '%s\\n'")
    out = subprocess.run(["bash", "-c", script], env={**env, "DATAGEN_ARGS": args},
                         capture_output=True, text=True, check=True).stdout.split("\n")[:-1]
    want = ["--users", str(env["DATAGEN_USERS"]), "--posts", str(env["DATAGEN_POSTS"])] + expected
    assert out == want, (args, out, want)
print("| dev datagen: cargo run --release -p datagen --", *want)
PY
}

# Full mode: the dev app compiles the workspace (debug) in the container, then serves.
dev_serve() {
  local code pid
  code=$(http_code "$(url /api/v1/users/1/posts)")
  [[ $code == 404 ]] || die "dev app: user 1 on the empty database answered $code, expected 404"
  [[ $(http_code "$(url /health)") == 200 ]] || die "dev app: /health is not 200"
  pid=$(podman exec "$(cid app)" pgrep -x hotfeed)
  podman exec "$(cid app)" gdb -p "$pid" -batch -ex 'info threads' >"$WORK/gdb.log" 2>&1 || true
  grep -q 'Thread' "$WORK/gdb.log" || { cat "$WORK/gdb.log"; die "gdb could not attach to hotfeed in the dev container"; }
  say "dev app: 404 on the empty database, /health 200, gdb attached to hotfeed (pid $pid, $(grep -c '^ *[0-9* ]*Thread' "$WORK/gdb.log") threads)"
}
export -f build_dev dev_datagen_command dev_serve

# ---------------------------------------------------------------------------------------------
# Teardown: whatever a failed step left, then the images this run made unless --keep-images.

cleanup() {
  local rc=$?
  trap - EXIT
  command -v podman >/dev/null || exit "$rc"
  local anonymous containers volumes images
  mapfile -t anonymous < <(anonymous_volumes 2>/dev/null)
  mapfile -t containers < <(podman ps -a -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
  rm_all containers "${containers[@]}"
  rm_all volumes "${anonymous[@]}"
  mapfile -t volumes < <(podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
  rm_all volumes "${volumes[@]}"
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  if [[ $KEEP_IMAGES == no ]]; then
    rm_all images hotfeed:local hotfeed:dev
    mapfile -t images < <(podman images -q --filter "label=$STANDIN_LABEL=true" 2>/dev/null | sort -u)
    rm_all images "${images[@]}"
    # The build stages' intermediate images (untagged).
    podman image prune -f >/dev/null 2>&1 || true
    echo "container-smoke: removed the images it built (--keep-images keeps them)"
  fi
  if ((rc == 0)); then rm -rf "$WORK"; else echo "container-smoke: logs kept in $WORK/logs"; fi
  exit "$rc"
}
# The run itself is one function, called on the file's last line: bash has read all of it before
# the first step starts, so editing this file during a run cannot change the run.
main() {
trap cleanup EXIT

echo "container-smoke: mode $MODE$([[ $MODE == ci ]] && echo " ($PROFILE binaries)"), project $PROJECT, app on 127.0.0.1:$APP_PORT, Prometheus on :$PROMETHEUS_PORT"
step "tools: podman, debootstrap, podman-compose $PODMAN_COMPOSE_PIN" 600 install_tools
step "ports $APP_PORT $POSTGRES_PORT $PROMETHEUS_PORT $DEBUG_PORT free" 10 ports_free
step "stand-in base images (deploy/standins)" 1500 standins
if [[ $MODE == full ]]; then
  step "build ./Dockerfile (target runtime) as hotfeed:local" 3600 build_full
else
  step "build hotfeed:local from host binaries (cargo build --workspace --bins, $PROFILE)" 2400 build_ci
fi
step "image: non-root user and HEALTHCHECK" 120 image_checks

step "compose.yml: config; postgres and redis-1..6 up and healthy" 240 infra_up main
step "compose.yml: redis-cluster-init, fresh and rerun" 330 cluster_init main
step "compose.yml: app and prometheus up, app healthy" 240 app_up main 180 prometheus
step "compose.yml: the demo (404, datagen, MISS/HIT, home feed, /health, /metrics)" 300 demo
step "compose.yml: Prometheus scrapes app:8080/metrics, rules loaded" 150 prometheus_checks
step "compose.yml: down -v" 120 down_clean main

# The CI form parses compose.dev.yml and checks datagen's command there; building the dev stage
# (cargo-chef and cargo-watch compiled in it) and compiling the workspace in the dev container
# take too long for CI: full mode only.
if [[ $DEV == yes ]]; then
  step "compose.dev.yml: config; datagen's command splits DATAGEN_ARGS" 60 dev_datagen_command
  if [[ $MODE == full ]]; then
    step "compose.dev.yml: build the dev stage as hotfeed:dev" 2400 build_dev
    step "compose.dev.yml: postgres and redis-1..6 up and healthy" 240 infra_up dev
    step "compose.dev.yml: redis-cluster-init" 330 cluster_init dev
    step "compose.dev.yml: app compiles in the container (cargo watch) and gets healthy" 2700 app_up dev 2600
    step "compose.dev.yml: serves, gdb attaches" 120 dev_serve
    step "compose.dev.yml: down -v" 120 down_clean dev
  fi
fi

echo
echo "container-smoke: passed in $((SECONDS - START))s ($MODE mode)"
printf '  %s\n' "${TIMES[@]}"
}

main "$@"; exit
