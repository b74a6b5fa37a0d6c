#!/usr/bin/env bash
# The README's second command: bring up the local stack if it is not up, install the test tools
# the suite shells out to (promtool to lint /metrics, openssl for TLS certificates), then run every test of the
# workspace against the real PostgreSQL and Redis Cluster. Extra arguments go to `cargo test`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if ! command -v promtool >/dev/null 2>&1; then
    echo "test: installing promtool (Debian package prometheus)"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# openssl makes the self-signed certificates of the TLS tests (tests/api/tls.rs).
if ! command -v openssl >/dev/null 2>&1; then
    echo "test: installing openssl"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi

"$repo/scripts/stack.sh" up
exec cargo test --workspace "$@"
