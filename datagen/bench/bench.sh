#!/usr/bin/env bash
# Reproduces the datagen figures of docs/benchmarks.md: datagen with its defaults (100 users,
# 2,000,000 posts) into a scratch database, RUNS times (default 3), each followed in the same run
# by the reference: a raw binary COPY of the very same posts into a bare table, then its primary
# key and the page index, as psql does it. Prints every run, the medians and their ratio.
#
#   datagen/bench/bench.sh                 # DATABASE_URL's server, database hotfeed_bench
#   RUNS=5 BENCH_DB=scratch datagen/bench/bench.sh
#   DATAGEN_ARGS=--no-cache-flush datagen/bench/bench.sh    # no Redis Cluster running
#
# The flush runs against REDIS_URLS under the prefix hfbench (BENCH_PREFIX), so a service using the
# cluster with its own prefix keeps its cache.
#
# Needs psql. Reads DATABASE_URL and REDIS_URLS from the environment or .env; the bench database
# is created (dropped first if it exists) and dropped at the end unless KEEP=1.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
if [ -f .env ]; then
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
fi

runs=${RUNS:-3}
bench_db=${BENCH_DB:-hotfeed_bench}
base=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hotfeed}
server=${base%/*}
admin_url="$server/postgres"
url="$server/$bench_db"
read -r -a extra <<<"${DATAGEN_ARGS:-}"
extra+=(--cache-key-prefix "${BENCH_PREFIX:-hfbench}")
export PGOPTIONS="-c client_min_messages=warning"
work=$(mktemp -d)
dump="$work/posts.bin"

cleanup() {
    rm -rf "$work"
    if [ "${KEEP:-0}" != 1 ]; then
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$bench_db\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cargo build --release -p datagen --quiet
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$bench_db\" WITH (FORCE)" -c "CREATE DATABASE \"$bench_db\""

echo "machine: $(nproc) cores, $(psql -Atq "$url" -c 'SHOW server_version'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "run  datagen_s  posts/s   reference_s  ratio"
datagen_times=()
reference_times=()
for run in $(seq 1 "$runs"); do
    psql -q "$url" -c CHECKPOINT 2>/dev/null || true
    started=$(now)
    target/release/datagen --database-url "$url" "${extra[@]}" >"$work/summary.txt" 2>"$work/progress.txt" || {
        cat "$work/progress.txt" >&2
        exit 1
    }
    datagen_s=$(seconds "$started" "$(now)")

    if [ "$run" = 1 ]; then
        # The same rows for the reference: datagen is deterministic, so every run loads these.
        psql -q "$url" -c "\\copy posts TO '$dump' WITH (FORMAT binary)"
        cp "$work/summary.txt" "$work/first-summary.txt"
        posts=$(psql -Atq "$url" -c 'SELECT count(*) FROM posts')
    fi
    psql -q "$url" -c "DROP TABLE IF EXISTS posts_ref" \
        -c "CREATE TABLE posts_ref (id bigint NOT NULL, user_id bigint NOT NULL, content text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)" \
        -c CHECKPOINT
    started=$(now)
    psql -q -v ON_ERROR_STOP=1 "$url" \
        -c "\\copy posts_ref FROM '$dump' WITH (FORMAT binary)" \
        -c "ALTER TABLE posts_ref ADD PRIMARY KEY (id)" \
        -c "CREATE INDEX ON posts_ref (user_id, created_at DESC, id DESC)"
    reference_s=$(seconds "$started" "$(now)")
    psql -q "$url" -c "DROP TABLE posts_ref"

    datagen_times+=("$datagen_s")
    reference_times+=("$reference_s")
    printf '%3s  %9s  %7.0f   %11s  %5.2f\n' "$run" "$datagen_s" \
        "$(awk -v n="$posts" -v s="$datagen_s" 'BEGIN { print n / s }')" "$reference_s" \
        "$(awk -v a="$datagen_s" -v b="$reference_s" 'BEGIN { print a / b }')"
done

datagen_median=$(median "${datagen_times[@]}")
reference_median=$(median "${reference_times[@]}")
echo "median  datagen $datagen_median s ($(awk -v n="$posts" -v s="$datagen_median" 'BEGIN { printf "%.0f", n / s }') posts/s)," \
    "reference $reference_median s ($(awk -v n="$posts" -v s="$reference_median" 'BEGIN { printf "%.0f", n / s }') rows/s)," \
    "ratio $(awk -v a="$datagen_median" -v b="$reference_median" 'BEGIN { printf "%.2f", a / b }')"
echo
echo "first run's summary:"
cat "$work/first-summary.txt"
