#!/usr/bin/env bash
# The README's second command: bring up the local stack if it is not up, install the test tools
# the suite shells out to (promtool to lint /metrics, openssl for TLS certificates), then run every test of the
# workspace against the real PostgreSQL and Redis Cluster, then fuzz the live API from its OpenAPI
# document with schemathesis (scripts/schemathesis.sh) and test the dashboard in Chromium
# (scripts/browser-test.sh). Extra arguments go to `cargo test` (and
# skip the fuzzing).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# need COMMAND PACKAGE: installs the Debian package that provides COMMAND when it is missing.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "test: installing $1 (Debian package $2)"
    local sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

need promtool prometheus # lints /metrics (tests/api/metrics.rs)
need openssl openssl     # makes the TLS tests' certificates (tests/api/tls.rs)

"$repo/scripts/stack.sh" up
cargo test --workspace "$@"
# The whole suite (no filter given) also fuzzes the live API from its OpenAPI document, and plays
# the dashboard's story in Debian's Chromium (installed by the script when missing): the page
# loads without console errors, marks the hot node under Zipf load, and shows a master killed
# under load while every read is served.
if [[ $# -eq 0 ]]; then
    "$repo/scripts/schemathesis.sh"
    SCREENSHOT_DIR="$repo/.stack/screenshots" "$repo/scripts/browser-test.sh" --serve --scenario
fi
