#!/usr/bin/env bash
# Reproduces the datagen figures of docs/datagen.md and docs/benchmarks.md: datagen with a profile
# (PROFILE, default demo: 100 users, 2,000,000 posts, 1,000 follows; feed: 100,000 users,
# 2,000,000 posts, 5,000,000 follows) into a scratch database, RUNS times (default 3), each
# followed in the same run by the reference: a raw binary COPY of the very same users, posts and
# follows into bare tables, then the same primary keys, unique key and indexes as the migrations,
# as psql does it. Prints every run, the medians and their ratios.
#
#   datagen/bench/bench.sh                 # demo profile, DATABASE_URL's server, database hotfeed_bench
#   PROFILE=feed datagen/bench/bench.sh    # the follow graph of the home-feed benchmark
#   RUNS=5 BENCH_DB=scratch datagen/bench/bench.sh
#   DATAGEN_ARGS=--no-cache-flush datagen/bench/bench.sh    # no Redis Cluster running
#
# Two ratios, both "speed as a fraction of the reference's" (reference seconds / datagen seconds,
# higher is better; the goal is >= 0.8), each taken within a run, where both sides saw the same
# machine, and summarised by their median over the runs:
#   vs ready   the reference's COPY plus the same indexes: the same end state minus ANALYZE,
#              foreign keys, counts and one transaction
#   vs COPY    the reference's COPY alone, no index at all
# The reference gets datagen's maintenance_work_mem, so neither sorts with more memory.
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
profile=${PROFILE:-demo}
bench_db=${BENCH_DB:-hotfeed_bench}
base=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hotfeed}
server=${base%/*}
admin_url="$server/postgres"
url="$server/$bench_db"
read -r -a extra <<<"${DATAGEN_ARGS:-}"
extra+=(--profile "$profile" --cache-key-prefix "${BENCH_PREFIX:-hfbench}")
export PGOPTIONS="-c client_min_messages=warning"
# datagen's own setting for its index builds (SET LOCAL in datagen/src/load.rs).
reference_options="$PGOPTIONS -c maintenance_work_mem=512MB"
work=$(mktemp -d)

cleanup() {
    rm -rf "$work"
    if [ "${KEEP:-0}" != 1 ]; then
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$bench_db\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The reference's tables: the migrations' columns, no index, no constraint, no default.
create_reference() {
    psql -q -v ON_ERROR_STOP=1 "$url" \
        -c "DROP TABLE IF EXISTS users_ref, posts_ref, follows_ref" \
        -c "CREATE TABLE users_ref (id bigint NOT NULL, username text NOT NULL, display_name text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, followers_count bigint NOT NULL, following_count bigint NOT NULL)" \
        -c "CREATE TABLE posts_ref (id bigint NOT NULL, user_id bigint NOT NULL, content text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)" \
        -c "CREATE TABLE follows_ref (follower_id bigint NOT NULL, followee_id bigint NOT NULL, created_at timestamptz NOT NULL)" \
        -c CHECKPOINT
}

cargo build --release -p datagen --quiet
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$bench_db\" WITH (FORCE)" -c "CREATE DATABASE \"$bench_db\""

echo "machine: $(nproc) cores, $(psql -Atq "$url" -c 'SHOW server_version'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "datagen: target/release/datagen --database-url $url ${extra[*]}"
echo "run  datagen_s   rows/s  reference: copy_s  ready_s  ratio vs ready  vs COPY  load"
datagen_times=()
copy_times=()
ready_times=()
ready_ratios=()
copy_ratios=()
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
        for table in users posts follows; do
            psql -q "$url" -c "\\copy $table TO '$work/$table.bin' WITH (FORMAT binary)"
        done
        cp "$work/summary.txt" "$work/first-summary.txt"
        rows=$(psql -Atq "$url" -c 'SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts) + (SELECT count(*) FROM follows)')
    fi
    create_reference
    started=$(now)
    PGOPTIONS=$reference_options psql -q -v ON_ERROR_STOP=1 "$url" \
        -c "\\copy users_ref FROM '$work/users.bin' WITH (FORMAT binary)" \
        -c "\\copy posts_ref FROM '$work/posts.bin' WITH (FORMAT binary)" \
        -c "\\copy follows_ref FROM '$work/follows.bin' WITH (FORMAT binary)"
    copied=$(now)
    PGOPTIONS=$reference_options psql -q -v ON_ERROR_STOP=1 "$url" \
        -c "ALTER TABLE users_ref ADD PRIMARY KEY (id)" \
        -c "ALTER TABLE users_ref ADD UNIQUE (username)" \
        -c "ALTER TABLE posts_ref ADD PRIMARY KEY (id)" \
        -c "CREATE INDEX ON posts_ref (user_id, created_at DESC, id DESC)" \
        -c "ALTER TABLE follows_ref ADD PRIMARY KEY (follower_id, followee_id)" \
        -c "CREATE INDEX ON follows_ref (followee_id, created_at DESC, follower_id DESC)" \
        -c "CREATE INDEX ON follows_ref (follower_id, created_at DESC, followee_id DESC)"
    finished=$(now)
    copy_s=$(seconds "$started" "$copied")
    ready_s=$(seconds "$started" "$finished")
    psql -q "$url" -c "DROP TABLE users_ref, posts_ref, follows_ref"

    datagen_times+=("$datagen_s")
    copy_times+=("$copy_s")
    ready_times+=("$ready_s")
    ready_ratios+=("$(ratio "$ready_s" "$datagen_s")")
    copy_ratios+=("$(ratio "$copy_s" "$datagen_s")")
    printf '%3s  %9s  %7.0f  %17s  %7s  %14s  %7s  %s\n' "$run" "$datagen_s" \
        "$(awk -v n="$rows" -v s="$datagen_s" 'BEGIN { print n / s }')" "$copy_s" "$ready_s" \
        "${ready_ratios[-1]}" "${copy_ratios[-1]}" "$(cut -d' ' -f1 /proc/loadavg)"
    # Where datagen's time went in this run.
    grep -o 'query-ready in .*' "$work/summary.txt" | sed 's/^/     datagen /'
done

datagen_median=$(median "${datagen_times[@]}")
copy_median=$(median "${copy_times[@]}")
ready_median=$(median "${ready_times[@]}")
echo "median  datagen $datagen_median s ($(awk -v n="$rows" -v s="$datagen_median" 'BEGIN { printf "%.0f", n / s }') rows/s)," \
    "reference COPY $copy_median s, COPY + indexes $ready_median s;" \
    "datagen's speed (median of the runs' ratios): $(median "${ready_ratios[@]}") of COPY + indexes," \
    "$(median "${copy_ratios[@]}") of COPY alone"
echo
echo "first run's summary:"
cat "$work/first-summary.txt"
