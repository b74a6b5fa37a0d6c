#!/usr/bin/env bash
# Fuzzes the live API from its own OpenAPI document with schemathesis (PyPI): every documented
# operation, positive and negative inputs, then stateful sequences along the document's links.
# Fails on any server error or any response (status, headers, body, content type) that does not
# conform to the document, on bad input that is accepted, and on a wrong method without a 405 and
# its Allow header.
#
# Starts its own debug `hotfeed serve` on SCHEMATHESIS_PORT (18399) against a fresh database
# (hotfeed_schemathesis, on the server of DATABASE_URL) and its own key prefix, so it never touches
# a developer's data; the local stack must be up (scripts/stack.sh up, which scripts/test.sh runs).
#
#   scripts/schemathesis.sh            # 30 examples per operation, a fixed seed (reproducible)
#   SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_SEED=random scripts/schemathesis.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SCHEMATHESIS_VERSION=4.32.5
port=${SCHEMATHESIS_PORT:-18399}
examples=${SCHEMATHESIS_MAX_EXAMPLES:-30}
seed=${SCHEMATHESIS_SEED:-20261202}
venv=${SCHEMATHESIS_VENV:-$repo/.stack/schemathesis-$SCHEMATHESIS_VERSION}

log() { printf 'schemathesis: %s\n' "$*"; }
die() { log "$*" >&2; exit 1; }

if [[ -f .env ]]; then
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
fi
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/hotfeed}"
database=hotfeed_schemathesis
admin_url=${DATABASE_URL%/*}/postgres
app_url=${DATABASE_URL%/*}/$database

# The tool, pinned, in a virtualenv of its own (Debian's python3 needs python3-venv for that).
if [[ ! -x $venv/bin/st ]]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        sudo_cmd=()
        [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

log "building hotfeed (debug)"
cargo build -q -p hotfeed

server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database" >/dev/null ||
    die "cannot create $database at ${admin_url%%@*}@... (is the stack up? scripts/stack.sh up)"
# Writes need a key: the fuzzer acts with an admin key of its own, which may act as any user.
admin_key="hf_schemathesis_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
DATABASE_URL=$app_url APP_HOST=127.0.0.1 APP_PORT=$port APP_WORKERS=2 ADMIN_API_KEY=$admin_key \
    CACHE_KEY_PREFIX="st$(date +%s)" LOG_FORMAT=json RUST_LOG=warn \
    target/debug/hotfeed serve >"$repo/.stack/schemathesis-serve.log" 2>&1 &
server=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -fs "$base/ping" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || die "hotfeed exited; see .stack/schemathesis-serve.log"
    sleep 0.2
done

# A few users, posts and follows, so operations on ids 1..3 reach their real logic, not only 404.
json=(-H 'content-type: application/json' -H "Authorization: Bearer $admin_key")
for name in alice bob carol; do
    curl -fs "${json[@]}" -d "{\"username\":\"$name\"}" "$base/api/v1/users" >/dev/null
done
for author in 1 2 3; do
    curl -fs "${json[@]}" -d "{\"user_id\":$author,\"content\":\"hello from $author\"}" "$base/api/v1/posts" >/dev/null
done
curl -fs -X PUT -H "Authorization: Bearer $admin_key" "$base/api/v1/users/1/following/2" >/dev/null

log "fuzzing $base/api/v1/openapi.json ($examples examples per operation, seed $seed)"
seed_args=(--seed "$seed")
[[ $seed == random ]] && seed_args=()
"$venv/bin/st" run "$base/api/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance \
    --header "Authorization: Bearer $admin_key" \
    --max-examples "$examples" "${seed_args[@]}" --request-timeout 10 --no-color
