#!/usr/bin/env bash
# The README's first command: bring up the local stack (PostgreSQL + a 6-node Redis Cluster, no
# Docker), then build and run the service on APP_PORT (default 8080) in the foreground.
# Extra arguments go to `hotfeed serve` (see `cargo run --release -- serve --help`).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

"$repo/scripts/stack.sh" up
exec cargo run --release --bin hotfeed -- serve "$@"
