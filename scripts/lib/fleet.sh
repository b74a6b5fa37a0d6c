# shellcheck shell=bash
# scripts/lib/fleet.sh — the `fleet` scenario of scripts/chaos.sh (docs/reliability.md, "The fleet").
#
# Three instances of the service on the suite's private stack behind HAProxy
# (deploy/haproxy/haproxy.cfg, the shipped configuration, with a second file of the suite's own:
# a stats listener and one pinned listener per instance). Under loadgen's open-loop load through
# the balancer, each instance in turn gets SIGTERM, drains (SHUTDOWN_DRAIN_SECS: readiness 503,
# still serving), exits, and is started again. Then writes go through one instance and reads
# through the others, to time how long an acknowledged write takes to be visible everywhere.
#
# Sourced by scripts/chaos.sh after its settings and helpers (say, die, event, now, stop_pid,
# loadgen, psql_, pg_tool, stack_up, summarize_log ...), whose globals it uses.

FLEET_N=3
FLEET_PIDS=() FLEET_PORTS=() FLEET_PINNED=() FLEET_STATS="" HAPROXY_PID="" FLEET_PROBE_PID=""
FLEET_HELPER=$ROOT/scripts/lib/fleet.py

# Ports from CHAOS_APP_PORT up: the balancer on it (so APP_URL, loadgen and verify go through the
# balancer), the instances on the next three, their pinned listeners on the three after, stats last.
fleet_ports() {
  local i p
  FLEET_PORTS=() FLEET_PINNED=()
  for ((i = 1; i <= FLEET_N; i++)); do
    FLEET_PORTS[i]=$((APP_PORT_ + i))
    FLEET_PINNED[i]=$((APP_PORT_ + FLEET_N + i))
  done
  FLEET_STATS=$((APP_PORT_ + 2 * FLEET_N + 1))
  for p in "$APP_PORT_" "${FLEET_PORTS[@]}" "${FLEET_PINNED[@]}" "$FLEET_STATS"; do
    ((p != 8080)) || die "the fleet's ports $APP_PORT_-$FLEET_STATS include 8080, the dev stack's; set CHAOS_APP_PORT" 2
    if curl -s -o /dev/null -m 1 "http://127.0.0.1:$p/"; then
      die "something already answers on 127.0.0.1:$p (the fleet uses $APP_PORT_-$FLEET_STATS); set CHAOS_APP_PORT"
    fi
  done
}

# HAProxy from Debian, installed when missing (apt through sudo when not root).
fleet_need_haproxy() {
  command -v haproxy >/dev/null 2>&1 && return 0
  local sudo_cmd=()
  [[ $EUID -eq 0 ]] || sudo_cmd=(sudo)
  say "installing haproxy (Debian package)"
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null 2>&1
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1
  command -v haproxy >/dev/null 2>&1 || die "haproxy is missing and could not be installed (apt-get install haproxy)"
}

# fleet_start_instance I: instance I on its port, as the balancer expects it; waits for /ping.
fleet_start_instance() {
  local i=$1 port=${FLEET_PORTS[$1]} log=$SCEN_DIR/app$1.log k
  (cd "$CHAOS_DIR" && exec env DATABASE_URL="$DB_URL" REDIS_URLS="$REDIS_URLS" APP_HOST=127.0.0.1 \
    APP_PORT="$port" CACHE_KEY_PREFIX=hf RUST_LOG="${CHAOS_RUST_LOG:-warn}" NO_MIGRATE=true \
    TRUST_FORWARDED_FOR=true SHUTDOWN_DRAIN_SECS="$FLEET_DRAIN" "$BIN/hotfeed" serve 8>&-) >>"$log" 2>&1 &
  FLEET_PIDS[i]=$!
  for ((k = 0; k < 300; k++)); do
    kill -0 "${FLEET_PIDS[i]}" 2>/dev/null || { tail -n 20 "$log" >&2; die "instance $i exited (log: $log)"; }
    curl -fs -o /dev/null "http://127.0.0.1:$port/ping" && return 0
    sleep 0.2
  done
  die "instance $i did not answer /ping within 60 s (log: $log)"
}

fleet_start_balancer() {
  local cfg=$ROOT/deploy/haproxy/haproxy.cfg extra=$SCEN_DIR/haproxy-fleet.cfg i
  # CHAOS_FLEET_RETRIES=off: the control run of a balancer that sends nothing twice.
  if [[ ${CHAOS_FLEET_RETRIES:-on} == off ]]; then
    sed -e 's/^\( *\)retries 3$/\1retries 0/' -e 's/^\( *\)retry-on .*/\1retry-on none/' "$cfg" >"$SCEN_DIR/haproxy.cfg"
    cfg=$SCEN_DIR/haproxy.cfg
  fi
  {
    printf '# The suite'"'"'s own listeners, beside deploy/haproxy/haproxy.cfg (scripts/lib/fleet.sh).\n'
    printf 'listen stats\n    bind 127.0.0.1:%s\n    http-request set-log-level silent\n    stats enable\n    stats uri /stats\n\n' "$FLEET_STATS"
    for ((i = 1; i <= FLEET_N; i++)); do
      printf 'listen pinned%s\n    bind 127.0.0.1:%s\n    server hotfeed%s 127.0.0.1:%s\n\n' \
        "$i" "${FLEET_PINNED[i]}" "$i" "${FLEET_PORTS[i]}"
    done
  } >"$extra"
  HOTFEED_LISTEN=127.0.0.1:$APP_PORT_ HOTFEED_1=127.0.0.1:${FLEET_PORTS[1]} \
    HOTFEED_2=127.0.0.1:${FLEET_PORTS[2]} HOTFEED_3=127.0.0.1:${FLEET_PORTS[3]} \
    haproxy -c -q -f "$cfg" -f "$extra" >&2 || die "haproxy refused its configuration"
  HOTFEED_LISTEN=127.0.0.1:$APP_PORT_ HOTFEED_1=127.0.0.1:${FLEET_PORTS[1]} \
    HOTFEED_2=127.0.0.1:${FLEET_PORTS[2]} HOTFEED_3=127.0.0.1:${FLEET_PORTS[3]} \
    haproxy -db -f "$cfg" -f "$extra" 8>&- 2>>"$SCEN_DIR/haproxy.log" &
  HAPROXY_PID=$!
}

# fleet_state I: the balancer's status of instance I (UP, DOWN, "UP 1/2" going down, ...).
fleet_state() {
  curl -fs -m 2 "http://127.0.0.1:$FLEET_STATS/stats;csv" |
    awk -F, -v s="hotfeed$1" '$1 == "hotfeed" && $2 == s { print $18 }'
}

# fleet_wait_up I SECONDS: until the balancer has instance I fully UP again.
fleet_wait_up() {
  local i=$1 k
  for ((k = 0; k < $2 * 10; k++)); do
    [[ $(fleet_state "$i") == UP ]] && return 0
    sleep 0.1
  done
  return 1
}

since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# fleet_restart I: SIGTERM, wait for the exit (noting when the balancer marks it DOWN), start it
# again, wait until the balancer has it UP. One JSON line per restart in restarts.jsonl.
fleet_restart() {
  local i=$1 pid=${FLEET_PIDS[$1]} t0 t1 down=null exited up=null rc k
  local limit=$(((FLEET_DRAIN + ${SHUTDOWN_TIMEOUT_SECS:-10} + 10) * 10))
  event sigterm "instance $i (127.0.0.1:${FLEET_PORTS[i]}, pid $pid)"
  t0=$(now)
  kill -TERM "$pid"
  for ((k = 0; k < limit; k++)); do
    kill -0 "$pid" 2>/dev/null || break
    [[ $down == null && $(fleet_state "$i") == DOWN* ]] && { down=$(since "$t0"); event down "instance $i marked DOWN by the balancer"; }
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "instance $i still running $((limit / 10)) s after SIGTERM: killed"
    kill -KILL "$pid"
  fi
  wait "$pid"
  rc=$?
  exited=$(since "$t0")
  event exited "instance $i exited with status $rc"
  t1=$(now)
  fleet_start_instance "$i"
  fleet_wait_up "$i" 60 && up=$(since "$t1")
  event up "instance $i serving again, UP in the balancer"
  printf '{"instance": %s, "down_s": %s, "exited_s": %s, "exit": %s, "up_s": %s}\n' \
    "$i" "$down" "$exited" "$rc" "$up" >>"$SCEN_DIR/restarts.jsonl"
}

fleet_probe_start() {
  CHAOS_HELPER_DIR=$CHAOS_DIR python3 "$FLEET_HELPER" probe --url "$APP_URL" --out "$SCEN_DIR/probe.json" \
    --stop "$SCEN_DIR/stop" --author "$PROBE_AUTHOR" --write-rate "$PROBE_WRITE_RATE" \
    --api-key "${API_KEY:-}" --tag "$(basename "$RUN_DIR")" 2>"$SCEN_DIR/probe.err" 8>&- &
  FLEET_PROBE_PID=$!
}

fleet_probe_stop() {
  stop_helper "$FLEET_PROBE_PID"
  FLEET_PROBE_PID=""
}

# Ends what the fleet started (chaos.sh's cleanup calls it too, on an error or an interrupt).
fleet_stop() {
  local i
  [[ -n $FLEET_PROBE_PID ]] && { stop_pid "$FLEET_PROBE_PID"; FLEET_PROBE_PID=""; }
  for i in "${!FLEET_PIDS[@]}"; do stop_pid "${FLEET_PIDS[i]}"; done
  FLEET_PIDS=()
  [[ -n $HAPROXY_PID ]] && { stop_pid "$HAPROXY_PID"; HAPROXY_PID=""; }
  return 0
}

scenario_fleet() {
  local i load_secs settle vis_count bound ci=()
  if [[ $CI == yes ]]; then
    FLEET_DRAIN=3 settle=1 vis_count=100 load_secs=45 ci=(--ci)
  else
    FLEET_DRAIN=5 settle=3 vis_count=500 load_secs=100
  fi
  # CHAOS_FLEET_DRAIN_SECS=0: the control run, instances that stop at once on SIGTERM.
  FLEET_DRAIN=${CHAOS_FLEET_DRAIN_SECS:-$FLEET_DRAIN}
  [[ $FLEET_DRAIN =~ ^[0-9]+$ ]] || die "CHAOS_FLEET_DRAIN_SECS: not a whole number: $FLEET_DRAIN" 2
  # The documented bound of a read on one instance after a write on another: L1_TTL_MS.
  bound=$(awk -v ms="${L1_TTL_MS:-5000}" 'BEGIN { print ms / 1000 }')
  SCEN_DIR=$RUN_DIR/fleet
  mkdir -p "$SCEN_DIR"
  : >"$SCEN_DIR/events"
  : >"$SCEN_DIR/restarts.jsonl"
  say "== fleet"
  fleet_need_haproxy
  fleet_ports
  stack_up
  for ((i = 1; i <= FLEET_N; i++)); do fleet_start_instance "$i"; done
  fleet_start_balancer
  for ((i = 1; i <= FLEET_N; i++)); do
    fleet_wait_up "$i" 30 || die "the balancer did not mark instance $i UP (log: $SCEN_DIR/haproxy.log)"
  done
  say "  balancer $APP_URL (HAProxy) -> instances on ${FLEET_PORTS[*]}; drain ${FLEET_DRAIN}s; stale bound ${bound}s (L1_TTL_MS)"
  say "  waiting for $LOCK"
  exec 8>"$LOCK"
  flock -w 1800 8 || die "could not take $LOCK within 30 min"
  loadgen warm "$WARM" 7
  # After the warm-up, whose posts number from 0 like the run's: every row from here has a
  # content of its own, so two rows with one content are one write created twice.
  START_MAX_ID=$(psql_ -c 'SELECT coalesce(max(id), 0) FROM posts')
  event start "rate=$RATE write_rate=$WRATE through the balancer, $FLEET_N instances"
  fleet_probe_start
  loadgen_bg load "$load_secs" 2
  sleep "$PRE"
  for ((i = 1; i <= FLEET_N; i++)); do
    fleet_restart "$i"
    sleep "$settle"
  done
  event visibility "$vis_count posts through instance 1, read through instances 2 and 3"
  CHAOS_HELPER_DIR=$CHAOS_DIR python3 "$FLEET_HELPER" visibility --count "$vis_count" \
    --writer "http://127.0.0.1:${FLEET_PINNED[1]}" \
    --readers "http://127.0.0.1:${FLEET_PINNED[2]},http://127.0.0.1:${FLEET_PINNED[3]}" \
    --api-key "${API_KEY:-}" --tag "$(basename "$RUN_DIR")" --out "$SCEN_DIR/visibility.json" 8>&-
  loadgen_wait
  event end ""
  fleet_probe_stop
  flock -u 8
  exec 8>&-
  say "  verifying every post written since id $START_MAX_ID"
  python3 "$HELPER" verify --url "$APP_URL" --db-url "$DB_URL" --start-max-id "$START_MAX_ID" \
    --probe "$SCEN_DIR/probe.json" --bound "$bound" --out "$SCEN_DIR/verify.json" --psql "$(pg_tool psql)" \
    --api-key "${API_KEY:-}" 2>>"$SCEN_DIR/probe.err"
  psql_ -c "SELECT count(*) - count(DISTINCT content) FROM posts WHERE id > $START_MAX_ID" >"$SCEN_DIR/duplicates"
  fleet_stop
  for ((i = 1; i <= FLEET_N; i++)); do summarize_log "$SCEN_DIR/app$i.log"; done
  CHAOS_HELPER_DIR=$CHAOS_DIR python3 "$FLEET_HELPER" evaluate --dir "$SCEN_DIR" --instances "$FLEET_N" \
    --drain "$FLEET_DRAIN" --bound "$bound" --rate "$RATE" --write-rate "$WRATE" --vis-min "$vis_count" \
    "${ci[@]}" >"$SCEN_DIR/result.txt"
  cat "$SCEN_DIR/result.txt" >&2
}
