#!/usr/bin/env bash
# benches/scaling.sh — the measured anchors of docs/SCALING.md, and its paper model.
#
#   benches/scaling.sh measure   start a throwaway redis-server, build home-feed boxes and post
#                                objects exactly as the service does, print bytes and commands
#                                per box, per post, per append, and ops/s per node; stop it
#   benches/scaling.sh model     the 10-million-user model (Zipf follows, Zipf posts), from the
#                                anchors (defaults: the figures in docs/SCALING.md; override with
#                                the ANCHOR_* and MODEL_* variables listed in model())
#   benches/scaling.sh           both: measure, then the model from what was just measured
#
# The server: 127.0.0.1:$SCALING_PORT (7600), refused if anything listens there, with the settings
# of scripts/stack.sh's nodes (cluster-enabled, node timeout 2000, no persistence, Redis's default
# listpack thresholds), owning all 16384 slots so every key is served by this one node. Its files
# live in a temporary directory; it is shut down and the directory removed on exit, whatever
# happens. The Lua scripts are read from src/cache/boxes.rs and src/cache/redis.rs, so what is
# measured is what the service sends (EVAL with the script's text, as `boxes.rs` does).
#
# Environment: SCALING_PORT (7600), SCALING_BULK (10000 boxes per bulk memory run),
# SCALING_BENCH_N (300000 requests per redis-benchmark run), SCALING_BENCH_REPEAT (3, median kept).
# Needs redis-server, redis-cli, redis-benchmark (Redis 7; packages redis-server, redis-tools),
# awk and stdbuf (coreutils).
# No cargo, no PostgreSQL, does not touch the stack on 7000-7005.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
PORT=${SCALING_PORT:-7600}
BULK=${SCALING_BULK:-10000}
BENCH_N=${SCALING_BENCH_N:-300000}
BENCH_REPEAT=${SCALING_BENCH_REPEAT:-3}
CAP=100          # FEED_BOX_CAP default (src/config/cache.rs)
BOX_TTL=3600     # FEED_BOX_TTL_SECS default
OBJECT_TTL=600   # CACHE_OBJECT_TTL_SECS default
PREFIX=hf        # CACHE_KEY_PREFIX default

DIR=""
SERVER_PID=""
REPLICA_PID=""

# ---------------------------------------------------------------------------------------------
# Helpers

# The text of a Rust raw-string Lua constant, as the service sends it (r"\n...\n").
lua() {
  local name=$1 file=$2 body
  body=$(awk -v start="const $name: &str = r\"" '
    $0 == start { f = 1; next }
    f && $0 == "\";" { exit }
    f { print }' "$ROOT/$file")
  [[ -n $body ]] || { echo "scaling: $name not found in $file" >&2; exit 1; }
  printf '\n%s\n' "$body"
}

# A Lua body as one double-quoted argument of a redis-cli input line.
quoted() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$s"
}

rc() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }

# Runs redis-cli input lines from stdin in one connection; fails unless every reply is "1".
batch() {
  local want=$1 got
  got=$(rc | grep -c '^1$' || true)
  [[ $got == "$want" ]] || { echo "scaling: expected $want replies of 1, got $got" >&2; exit 1; }
}

info_field() { rc info "$1" | tr -d '\r' | sed -n "s/^$2://p"; }

# usec_per_call and calls of one command since the last CONFIG RESETSTAT.
cmdstat() { rc info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/\1 \2/p"; }

# The fixed-width member of FeedEntry::member: <created_at micros, 17>:<id, 19>.
member() { printf '%017d:%019d' $((1796000000000000 + $1 * 1000003)) $((9000000000 + $1)); }


celebs_of() {
  local n=$1 i out=""
  for ((i = 1; i <= n; i++)); do out+="${out:+,}$((1000000 + i * 7919))"; done
  printf '%s' "$out"
}

cleanup() {
  if [[ -n $REPLICA_PID ]]; then kill "$REPLICA_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]]; then
    rc shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID" 2>/dev/null || true; fi
  fi
  if [[ -n $DIR ]]; then rm -rf -- "$DIR"; fi
}

start_server() {
  if rc ping >/dev/null 2>&1; then
    echo "scaling: something already listens on 127.0.0.1:$PORT; choose SCALING_PORT" >&2
    exit 1
  fi
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/hotfeed-scaling.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  # The node settings of scripts/stack.sh (write_node_conf); listpack thresholds left at Redis's
  # defaults there too, printed below.
  cat >"$DIR/redis.conf" <<EOF
port $PORT
bind 127.0.0.1
protected-mode no
daemonize yes
dir "$DIR"
pidfile "$DIR/redis.pid"
logfile "$DIR/redis.log"
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
cluster-require-full-coverage no
cluster-allow-reads-when-down yes
save ""
appendonly no
repl-diskless-sync-delay 0
EOF
  redis-server "$DIR/redis.conf" >/dev/null
  for _ in $(seq 1 50); do
    [[ -s $DIR/redis.pid ]] && rc ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  SERVER_PID=$(<"$DIR/redis.pid")
  rc cluster addslotsrange 0 16383 >/dev/null
  for _ in $(seq 1 50); do
    [[ $(info_field cluster cluster_enabled) == 1 ]] &&
      rc cluster info | tr -d '\r' | grep -qx 'cluster_state:ok' && return 0
    sleep 0.1
  done
  echo "scaling: the node did not reach cluster_state:ok" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# What the service does, one box at a time (EVAL with the script text, as boxes.rs sends it)

# (`; printf x` keeps the final newline that $(...) would strip: the bodies are byte-exact.)
READ_LUA=$(lua READ_LUA src/cache/boxes.rs; printf x) READ_LUA=${READ_LUA%x}
APPEND_LUA=$(lua APPEND_LUA src/cache/boxes.rs; printf x) APPEND_LUA=${APPEND_LUA%x}
STORE_LUA=$(lua STORE_LUA src/cache/boxes.rs; printf x) STORE_LUA=${STORE_LUA%x}
BEGIN_LUA=$(lua BEGIN_LUA src/cache/boxes.rs; printf x) BEGIN_LUA=${BEGIN_LUA%x}
PUT_VERSIONED_LUA=$(lua PUT_VERSIONED_LUA src/cache/redis.rs; printf x) PUT_VERSIONED_LUA=${PUT_VERSIONED_LUA%x}
for body in "$READ_LUA" "$APPEND_LUA" "$STORE_LUA" "$BEGIN_LUA" "$PUT_VERSIONED_LUA"; do
  [[ ${#body} -gt 2 ]] || exit 1
done

# Input lines of rebuilds, as home_feed::rebuild: BEGIN (claims the token), then STORE with the
# entries newest first, TTL, complete flag and celebrities. Boxes of users $1..$1+$2-1 ($3: inbox
# or outbox), $4 entries each (entry numbers from $5 up), complete $6, celebs $7; what=$8
# (both, begin, store).
rebuild_lines() {
  Q_BEGIN=$(quoted "$BEGIN_LUA") Q_STORE=$(quoted "$STORE_LUA") \
    awk -v first="$1" -v count="$2" -v kind="$3" -v n="$4" -v from="$5" -v complete="$6" \
      -v celebs="$7" -v what="${8:-both}" -v prefix="$PREFIX" -v ttl="$BOX_TTL" '
    function member(i) { return sprintf("%017d:%019d", 1796000000000000 + i * 1000003, 9000000000 + i) }
    BEGIN {
      for (u = first; u < first + count; u++) {
        k = prefix ":{user:" u "}:" kind
        keys = k " " k ":meta " k ":building"
        if (what != "store") print "EVAL " ENVIRON["Q_BEGIN"] " 3 " keys " t" u " 10000"
        if (what == "begin") continue
        line = "EVAL " ENVIRON["Q_STORE"] " 3 " keys " t" u " " ttl " " complete " \"" celebs "\""
        for (i = from + n - 1; i >= from; i--) line = line " " member(i)
        print line
      }
    }'
}

# Input lines of fan-out appends: entry $3+j to box of user $1+(j mod $5) ($2: inbox or outbox),
# j = 0..$4-1, capped at $6.
append_lines() {
  Q_APPEND=$(quoted "$APPEND_LUA") \
    awk -v first="$1" -v kind="$2" -v entry="$3" -v count="$4" -v boxes="$5" -v cap="$6" \
      -v prefix="$PREFIX" '
    function member(i) { return sprintf("%017d:%019d", 1796000000000000 + i * 1000003, 9000000000 + i) }
    BEGIN {
      for (j = 0; j < count; j++) {
        k = prefix ":{user:" (first + j % boxes) "}:" kind
        print "EVAL " ENVIRON["Q_APPEND"] " 3 " k " " k ":meta " k ":building " member(entry + j) " " cap
      }
    }'
}

# A post object as Feed::publish writes it: PUT_VERSIONED hf:post:<id> <version> <version>|<json>.
post_json() {
  local id=$1 user=$2 content=$3
  printf '{"id":%s,"user_id":%s,"content":"%s","created_at":"2026-12-02T10:15:30.123456Z","updated_at":"2026-12-02T10:15:30.123456Z"}' \
    "$id" "$user" "$content"
}

usage_of() { rc memory usage "$1" samples 0; }

# ---------------------------------------------------------------------------------------------
# measure

measure() {
  local tool
  for tool in redis-server redis-cli redis-benchmark stdbuf; do
    command -v "$tool" >/dev/null || { echo "scaling: needs $tool" >&2; exit 1; }
  done
  start_server
  echo "== server"
  echo "$(redis-server --version | cut -d' ' -f1-3), 127.0.0.1:$PORT, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  rc config get 'zset-max-listpack-*' | paste - - | tr '\t' ' ' | sed 's/^/  /'
  rc config get 'hash-max-listpack-*' | paste - - | tr '\t' ' ' | sed 's/^/  /'
  echo "  FEED_BOX_CAP $CAP, FEED_BOX_TTL_SECS $BOX_TTL, CACHE_OBJECT_TTL_SECS $OBJECT_TTL, member $(member 1) (${#APPEND_LUA} bytes of APPEND_LUA)"

  echo
  echo "== one inbox by size (MEMORY USAGE of the sorted set, built by BEGIN + STORE as a rebuild)"
  printf '  %-28s %8s %10s %9s\n' entries bytes bytes/entry encoding
  local n user key bytes
  for n in 1 10 25 50 100 127 800; do
    user=$((3000000 + n))
    rebuild_lines "$user" 1 inbox "$n" 1 0 "" | batch 2
    key="$PREFIX:{user:$user}:inbox"
    bytes=$(usage_of "$key")
    printf '  %-28s %8s %10s %9s\n' "$n" "$bytes" $((bytes / n)) "$(rc object encoding "$key")"
  done
  # For comparison, Mastodon's feed:home:<id>: 800 entries, member = score = an 18-digit status id.
  key="feed:home:3400000"
  awk 'BEGIN { for (i = 0; i < 800; i += 100) { line = "ZADD feed:home:3400000"
    for (j = i; j < i + 100; j++) { id = sprintf("%d", 113500000000000000 + j * 7919); line = line " " id " " id }
    print line } }' | rc >/dev/null
  bytes=$(usage_of "$key")
  printf '  %-28s %8s %10s %9s\n' "800, Mastodon-style ids" "$bytes" $((bytes / 800)) "$(rc object encoding "$key")"
  # At the cap after appends (the steady state of an active inbox), and the caps Redis's
  # threshold allows: 127 stays a listpack with the extra entry of an append, 128 does not.
  local cap label
  for cap in "$CAP" 127 128; do
    user=$((3100000 + cap))
    rebuild_lines "$user" 1 inbox "$cap" 1 0 "" | batch 2
    append_lines "$user" inbox 100000 "$CAP" 1 "$cap" | batch "$CAP"
    key="$PREFIX:{user:$user}:inbox"
    bytes=$(usage_of "$key")
    label="cap $cap, after $CAP appends"
    printf '  %-28s %8s %10s %9s\n' "$label" "$bytes" $((bytes / $(rc zcard "$key"))) "$(rc object encoding "$key")"
  done

  echo
  echo "== the meta hash of a box (complete + celebs) and the rebuild token"
  local c meta
  for c in 0 5 20; do
    user=$((3200000 + c))
    rebuild_lines "$user" 1 inbox "$CAP" 1 0 "$(celebs_of "$c")" | batch 2
    meta="$PREFIX:{user:$user}:inbox:meta"
    printf '  meta, %2s celebrities (%3s bytes of ids): %4s bytes, %s\n' "$c" "$(celebs_of "$c" | wc -c)" \
      "$(usage_of "$meta")" "$(rc object encoding "$meta")"
  done
  rebuild_lines 3300000 1 inbox 0 1 0 "" begin | batch 1
  printf '  building token (lives during a rebuild only): %s bytes\n' "$(usage_of "$PREFIX:{user:3300000}:inbox:building")"

  echo
  echo "== post objects (PUT_VERSIONED hf:post:<id>, <version>|<json>, as Feed::publish)"
  local short long content value id=12345678901
  short="This is post content $id generated by datagen. UserId is 4242424. Random data: aut molestias sit."
  long=$(printf 'Lorem ipsum dolor sit amet, consectetur %.0s' $(seq 1 8) | cut -c1-280)
  for content in "$short" "$long"; do
    id=$((id + 1))
    value="1796000000123456|$(post_json "$id" 4242424 "$content")"
    rc eval "$PUT_VERSIONED_LUA" 1 "$PREFIX:post:$id" 1796000000123456 "$value" "$OBJECT_TTL" >/dev/null
    printf '  content %3s chars, value %3s bytes: %4s bytes\n' "${#content}" "${#value}" "$(usage_of "$PREFIX:post:$id")"
    if [[ $content == "$short" ]]; then ANCHOR_POST_BYTES=$(usage_of "$PREFIX:post:$id"); fi
  done
  POST_KEY="$PREFIX:post:$id"

  echo
  echo "== bulk: $BULK inboxes at the cap (used_memory delta: keys, dict and expires entries, all)"
  local before after base
  for c in 0 20; do
    base=$((4000000 + c * 25000))
    before=$(info_field memory used_memory)
    rebuild_lines "$base" "$BULK" inbox "$CAP" 1 0 "$(celebs_of "$c")" | batch $((2 * BULK))
    after=$(info_field memory used_memory)
    printf '  celebs %2s: %s bytes per inbox (set + meta, with TTLs)\n' "$c" $(((after - before) / BULK))
    if ((c == 0)); then ANCHOR_INBOX_BYTES=$(((after - before) / BULK)); else ANCHOR_INBOX_BYTES_CELEBS=$(((after - before) / BULK)); fi
  done
  echo "  keys now: $(rc dbsize), used_memory $(info_field memory used_memory_human)"

  echo
  echo "== one fan-out append, to an inbox that exists (at the cap) and to one that does not"
  echo "   (INFO commandstats, bytes received and replication offset, over 1000 EVALs)"
  local stats bytes0 bytes1 off0 off1 what first
  # redis-cli --replica: a replica that prints the stream it receives (line-buffered for the file).
  stdbuf -oL redis-cli -h 127.0.0.1 -p "$PORT" --replica >"$DIR/replica.out" 2>&1 &
  REPLICA_PID=$!
  for _ in $(seq 1 100); do
    grep -q 'Logging commands' "$DIR/replica.out" && break
    sleep 0.1
  done
  for what in existing absent; do
    first=4000000
    [[ $what == absent ]] && first=7000000
    rc config resetstat >/dev/null
    bytes0=$(info_field stats total_net_input_bytes)
    off0=$(info_field replication master_repl_offset)
    append_lines "$first" inbox 200000 1000 1000 "$CAP" | rc >/dev/null
    bytes1=$(info_field stats total_net_input_bytes)
    off1=$(info_field replication master_repl_offset)
    stats=$(rc info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([a-z]*\):calls=\([0-9]*\).*/\1=\2/p' |
      grep -v -e '^info=' -e '^config=' -e '^replconf=' -e '^ping=' -e '^sync=' -e '^psync=' | tr '\n' ' ')
    printf '  %-8s: commands per 1000 appends: %s\n' "$what" "$stats"
    printf '  %-8s: %s bytes received per append, %s bytes replicated per append\n' "$what" \
      $(((bytes1 - bytes0) / 1000)) $(((off1 - off0) / 1000))
    if [[ $what == existing ]]; then
      ANCHOR_APPEND_WIRE=$(((bytes1 - bytes0) / 1000)) ANCHOR_APPEND_REPL=$(((off1 - off0) / 1000))
    fi
  done
  sleep 0.5
  kill "$REPLICA_PID" 2>/dev/null || true
  wait "$REPLICA_PID" 2>/dev/null || true
  REPLICA_PID=""
  echo "  what the replica received for the last append to an existing box:"
  tr -d '\r' <"$DIR/replica.out" |
    awk '/^"MULTI"/ { block = "" } { block = block (block == "" ? "" : " ") $0 } /^"EXEC"/ { last = block } END { print "    " last }' | cut -c1-300

  echo
  echo "== a rebuild on the server (commandstats usec_per_call of STORE with $CAP entries, 1000 boxes)"
  rebuild_lines 8000000 1000 inbox "$CAP" 1 0 "" begin | batch 1000
  rc config resetstat >/dev/null
  rebuild_lines 8000000 1000 inbox "$CAP" 1 0 "" store | batch 1000
  local calls per
  read -r calls per <<<"$(cmdstat eval)"
  printf '  STORE of %s entries: %s calls, %s us per call\n' "$CAP" "$calls" "$per"
  ANCHOR_STORE_US=$per

  echo
  echo "== ops/s of one node (redis-benchmark -c 50 -P 16 -n $BENCH_N, median of $BENCH_REPEAT; client on the same cores)"
  # A fixed box per run (redis-benchmark draws each __rand_int__ on its own, and a script's keys
  # must share a slot); each append adds a new random member, so every run trims at the cap.
  local rnd_member="17960000000000000:0000000__rand_int__"
  local sha k1 k2 k3
  sha=$(rc script load "$APPEND_LUA")
  k1="$PREFIX:{user:4000001}:inbox" k2="$PREFIX:{user:4000002}:inbox" k3="$PREFIX:{user:7500000}:inbox"
  bench ANCHOR_APPEND_OPS "APPEND, existing box at cap (EVAL)" eval EVAL "$APPEND_LUA" 3 "$k1" "$k1:meta" "$k1:building" "$rnd_member" "$CAP"
  bench ANCHOR_APPEND_SHA_OPS "APPEND, existing box at cap (EVALSHA)" evalsha EVALSHA "$sha" 3 "$k2" "$k2:meta" "$k2:building" "$rnd_member" "$CAP"
  bench ANCHOR_ABSENT_OPS "APPEND, absent box (EVAL)" eval EVAL "$APPEND_LUA" 3 "$k3" "$k3:meta" "$k3:building" "$rnd_member" "$CAP"
  bench ANCHOR_READ_OPS "READ 51 of a box at cap (EVAL)" eval EVAL "$READ_LUA" 2 "$PREFIX:{user:4000003}:inbox" "$PREFIX:{user:4000003}:inbox:meta" + 51
  bench ANCHOR_GET_OPS "GET a post object (280 chars)" get GET "$POST_KEY"
}

# bench VAR LABEL STATNAME COMMAND...: the median ops/s over BENCH_REPEAT runs (also set in VAR,
# for the model), and the server's own usec_per_call of the command (no network or parsing).
bench() {
  local var=$1 label=$2 stat=$3 i rates=() median per
  shift 3
  rc config resetstat >/dev/null
  for ((i = 0; i < BENCH_REPEAT; i++)); do
    rates+=("$(redis-benchmark -h 127.0.0.1 -p "$PORT" -c 50 -P 16 -n "$BENCH_N" -r 1000000000 -q "$@" |
      tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -n 1 | awk '{ printf "%d", $1 }')")
  done
  median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  per=$(cmdstat "$stat" | awk '{ print $2 }')
  printf '  %-40s %8s ops/s  (runs: %s; server %s us/call)\n' "$label" "$median" "${rates[*]}" "$per"
  printf -v "$var" '%s' "$median"
}

# ---------------------------------------------------------------------------------------------
# model

# The paper model of docs/SCALING.md. Anchors: set by `measure` when both run (`all`), else the
# environment, else the figures of docs/SCALING.md (ops/s: the median of the 12 repetitions of four measure runs).
# Assumptions (MODEL_*): each overridable from the environment.
model() {
  awk \
    -v inbox_bytes="${ANCHOR_INBOX_BYTES:-5460}" \
    -v inbox_bytes_celebs="${ANCHOR_INBOX_BYTES_CELEBS:-5812}" \
    -v post_bytes="${ANCHOR_POST_BYTES:-408}" \
    -v append_ops="${ANCHOR_APPEND_OPS:-32133}" \
    -v absent_ops="${ANCHOR_ABSENT_OPS:-69260}" \
    -v read_ops="${ANCHOR_READ_OPS:-21758}" \
    -v get_ops="${ANCHOR_GET_OPS:-356439}" \
    -v store_us="${ANCHOR_STORE_US:-211}" \
    -v append_wire="${ANCHOR_APPEND_WIRE:-517}" \
    -v append_repl="${ANCHOR_APPEND_REPL:-264}" \
    -v N="${MODEL_USERS:-10000000}" \
    -v m="${MODEL_FOLLOWS:-200}" \
    -v fs="${MODEL_FOLLOW_S:-0.8}" \
    -v P="${MODEL_POSTS:-1000}" \
    -v ps="${MODEL_POST_S:-0.8}" \
    -v R="${MODEL_READS:-20000}" \
    -v active="${MODEL_ACTIVE:-0.2}" \
    -v page="${MODEL_PAGE:-50}" \
    -v box_ttl="${MODEL_BOX_TTL:-$BOX_TTL}" \
    -v hot_hours="${MODEL_HOT_HOURS:-6}" \
    -v replicas="${MODEL_REPLICAS:-1}" \
    -v node_gb="${MODEL_NODE_GB:-20}" \
    -v util="${MODEL_UTIL:-0.5}" \
    -v thresholds="${MODEL_THRESHOLDS:-1000 10000 100000 0}" '
  function sumpow(a, b, s) {   # sum of k^-s for k in [a, b), by the integral (large a)
    if (s == 1) return log((b - 0.5) / (a - 0.5))
    return ((b - 0.5) ^ (1 - s) - (a - 0.5) ^ (1 - s)) / (1 - s)
  }
  function followers(mm, i,   x) { x = mm * w[i] / H; return x > 700 ? N : N * (1 - exp(-x)) }
  function fmt(x) {
    if (x >= 1e9) return sprintf("%.2f G", x / 1e9)
    if (x >= 1e6) return sprintf("%.2f M", x / 1e6)
    if (x >= 1e4) return sprintf("%.0f k", x / 1e3)
    if (x >= 100 || x == int(x)) return sprintf("%.0f", x)
    return sprintf("%.1f", x)
  }
  BEGIN {
    # Ranks 1..K0 one by one, then bins 0.1 % wide: enough to place every threshold.
    K0 = 20000
    for (k = 1; k <= K0 && k <= N; k++) { nb++; cnt[nb] = 1; w[nb] = k ^ -fs; v[nb] = k ^ -ps; first[nb] = k }
    for (lo = K0 + 1; lo <= N; lo = hi) {
      hi = int(lo * 1.001) + 1; if (hi > N + 1) hi = N + 1
      nb++; cnt[nb] = hi - lo; w[nb] = sumpow(lo, hi, fs) / cnt[nb]; v[nb] = sumpow(lo, hi, ps) / cnt[nb]; first[nb] = lo
    }
    for (i = 1; i <= nb; i++) { H += cnt[i] * w[i]; Hp += cnt[i] * v[i] }
    # Each user follows m distinct accounts drawn Zipf(fs) by popularity rank (Poissonized:
    # rank k is followed by N (1 - exp(-M p_k)) users, M solved so that the mean is exactly m).
    E = N * m; lo = m; hi = m * 1e6
    for (it = 0; it < 100; it++) {
      mid = sqrt(lo * hi); tot = 0
      for (i = 1; i <= nb; i++) tot += cnt[i] * followers(mid, i)
      if (tot < E) lo = mid; else hi = mid
    }
    M = mid
    for (i = 1; i <= nb; i++) { f[i] = followers(M, i); lam[i] = P * v[i] / Hp }

    printf "== the follow graph: %s users, %d follows each on average, Zipf exponent %.2f by rank\n", fmt(N), m, fs
    printf "  followers of rank 1, 10, 100, 1000: %s, %s, %s, %s (share of all users: %.1f %%)\n", \
      fmt(f[1]), fmt(f[10]), fmt(f[100]), fmt(f[1000]), 100 * f[1] / N
    split("1000 10000 100000 1000000", levels, " ")
    for (j = 1; j <= 4; j++) {
      c = 0; e = 0
      for (i = 1; i <= nb; i++) if (f[i] >= levels[j]) { c += cnt[i]; e += cnt[i] * f[i] }
      printf "  accounts with >= %7d followers: %9s, holding %4.1f %% of all follows\n", levels[j], fmt(c), 100 * e / E
    }
    seen = 0
    for (i = 1; i <= nb && seen + cnt[i] < N / 2; i++) seen += cnt[i]
    printf "  followers of the median account: %s, of the least followed: %s\n", fmt(f[i]), fmt(f[nb])
    printf "  posts: %d/s, Zipf %.2f by author; if aligned with popularity the top poster writes %.1f/s\n", P, ps, lam[1]

    objects = P * 3600 * hot_hours * post_bytes
    printf "\n== per threshold (FEED_CELEBRITY_FOLLOWERS; 0 = no celebrities, push everything)\n"
    printf "  reads %s pages/s of %d posts, %.0f %% of users active (inbox exists), %d replica(s), %d GB per master, %.0f %% of measured ops/s\n\n", \
      fmt(R), page, 100 * active, replicas, node_gb, 100 * util
    n = split(thresholds, T, " ")
    for (t = 1; t <= n; t++) {
      th = T[t] + 0
      crows_i = 0; crows_a = 0; ncel = 0; pulled = 0; push_i = 0; push_a = 0; rows_i = 0; rows_a = 0; celpost = 0; maxpush = 0
      for (i = 1; i <= nb; i++) {
        celeb = (th > 0 && f[i] >= th)
        lim = (th > 0 && f[i] > th) ? th : f[i]
        rows_i += cnt[i] * lim / N; rows_a += cnt[i] * lam[i] * lim / P
        if (celeb) { ncel += cnt[i]; pulled += cnt[i] * f[i]; celpost += cnt[i] * lam[i]; crows_i += cnt[i] * th / N; crows_a += cnt[i] * lam[i] * th / P }
        else { push_i += cnt[i] * f[i] / N; push_a += cnt[i] * lam[i] * f[i] / P; if (f[i] > maxpush) maxpush = f[i] }
      }
      C = pulled / N
      lbl[t] = th > 0 ? fmt(th) : "none"
      r_ncel[t] = fmt(ncel); r_pull[t] = sprintf("%.1f %%", 100 * pulled / E); r_C[t] = sprintf("%.1f", C)
      r_push_i[t] = fmt(push_i); r_push_a[t] = fmt(push_a); r_max[t] = fmt(maxpush)
      r_celpost[t] = sprintf("%.1f %%", 100 * celpost / P)
      # Writes: one APPEND EVAL per pushed follower box (existing with probability `active`),
      # plus the author s inbox and outbox; reads: inbox + C outboxes + page objects.
      for (mode = 1; mode <= 2; mode++) {
        push = (mode == 1 ? push_i : push_a) * P
        wsec = push * (active / append_ops + (1 - active) / absent_ops) + 2 * P / append_ops
        rsec = R * (1 + C) / read_ops + R * page / get_ops
        bsec = active * N / box_ttl * store_us / 1e6
        cpu = wsec + rsec + bsec
        if (mode == 1) {
          r_pushs[t] = fmt(push)
          r_wire[t] = sprintf("%.0f / %.0f MB/s", push * append_wire / 1e6, push * active * append_repl / 1e6)
        }
        else { r_pushs_a[t] = fmt(push) }
        r_cpu[t, mode] = sprintf("%.1f", cpu)
        mem = active * N * (C > 7 ? inbox_bytes_celebs : inbox_bytes) + ncel * inbox_bytes + objects
        mm = int(mem / (node_gb * 1e9)) + 1; om = int(cpu / util) + 1
        masters = mm > om ? mm : om
        r_mem[t] = sprintf("%.0f GB", mem / 1e9); r_mm[t] = mm; r_om[t, mode] = om
        r_nodes[t, mode] = sprintf("%d (%d masters)", masters * (1 + replicas), masters)
      }
      r_rd[t] = fmt(R * (1 + C + page)); r_outr[t] = fmt(R * C)
      r_rows[t] = fmt(rows_i * P) " / " fmt(rows_a * P)
      r_crows[t] = fmt(crows_i * P) " / " fmt(crows_a * P)
      r_fanout_ms[t] = sprintf("%.0f ms / %.0f ms", 1000 * maxpush / append_ops, 1000 * maxpush / append_ops / (r_om[t, 1] > r_mm[t] ? r_om[t, 1] : r_mm[t]))
    }
    hdr = "| FEED_CELEBRITY_FOLLOWERS |"; sep = "| --- |"
    for (t = 1; t <= n; t++) { hdr = hdr " " lbl[t] " |"; sep = sep " ---: |" }
    print hdr; print sep
    row("celebrities (accounts pulled)", r_ncel)
    row("share of follows pulled", r_pull)
    row("celebrities followed per reader (outboxes per page)", r_C)
    row("largest pushed fan-out (followers of one post)", r_max)
    row("its APPENDs at the measured rate: on one node / spread over the masters (indep.)", r_fanout_ms)
    row("pushed boxes per post, posting independent of popularity", r_push_i)
    row("pushed boxes per post, posting aligned with popularity", r_push_a)
    row("posts by celebrities, aligned", r_celpost)
    row("fan-out APPEND EVALs/s, independent", r_pushs)
    row("fan-out APPEND EVALs/s, aligned", r_pushs_a)
    row("fan-out bytes/s into masters / to replicas, independent", r_wire)
    row("outbox READ EVALs/s (pulls)", r_outr)
    row("Redis commands/s for reads (inbox + outboxes + objects)", r_rd)
    row("PostgreSQL follower rows/s for fan-out, indep. / aligned", r_rows)
    row("  of which only to classify celebrity posts (LIMIT T)", r_crows)
    row("node-seconds/s of Redis work, independent", r_cpu, 1)
    row("node-seconds/s of Redis work, aligned", r_cpu, 2)
    row("dataset per copy (inboxes, outboxes, objects)", r_mem)
    row("masters for memory", r_mm)
    row("masters for ops, independent", r_om, 1)
    row("masters for ops, aligned", r_om, 2)
    row("nodes with replicas, independent", r_nodes, 1)
    row("nodes with replicas, aligned", r_nodes, 2)

    printf "\n  inboxes: %s x %d B = %.1f GB per copy; post objects (%d h of posts x %d B): %.1f GB\n", \
      fmt(active * N), inbox_bytes, active * N * inbox_bytes / 1e9, hot_hours, post_bytes, objects / 1e9
    printf "  every user active: %.1f GB of inboxes; rebuilds: %s/s (each user once per FEED_BOX_TTL_SECS), %.2f node-s/s\n", \
      N * inbox_bytes / 1e9, fmt(active * N / box_ttl), active * N / box_ttl * store_us / 1e6
    printf "  hottest outbox (rank 1, followed by %.0f %% of users): %s READ EVALs/s = %.2f of the measured READ rate of one node\n", \
      100 * f[1] / N, fmt(R * f[1] / N), R * f[1] / N / read_ops
  }
  function row(name, arr, mode,   t, line) {
    line = "| " name " |"
    for (t = 1; t <= n; t++) line = line " " (mode ? arr[t, mode] : arr[t]) " |"
    print line
  }'
}

case ${1:-all} in
  measure) measure ;;
  model) model ;;
  all) measure && model ;;
  -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" ;;
  *) echo "usage: benches/scaling.sh [measure|model|all]" >&2; exit 2 ;;
esac
