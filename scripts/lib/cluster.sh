# shellcheck shell=bash
# scripts/lib/cluster.sh — the redis-cli helpers that stack.sh, workshop.sh, chaos.sh and
# workshop-test.sh share: talking to one node, reading CLUSTER NODES, the config of a local node,
# running a `redis-cli --cluster` operation so that its failure is seen, and the checks that say
# whether the cluster is whole (no open slot, every slot served, nothing shut down that owns slots).
#
# Source it (it defines functions only, and needs bash, coreutils, awk, timeout and redis-cli).
# Every node is addressed as 127.0.0.1:PORT, as the local stack runs them.

[[ -n ${HOTFEED_CLUSTER_LIB:-} ]] && return 0
HOTFEED_CLUSTER_LIB=1

# rcli PORT ARG...: redis-cli against 127.0.0.1:PORT, at most RCLI_TIMEOUT (5) seconds; CRs
# stripped, errors on stdout. Fails when the node cannot be reached.
rcli() {
  local port=$1
  shift
  timeout "${RCLI_TIMEOUT:-5}" redis-cli -h 127.0.0.1 -p "$port" "$@" 2>&1 | tr -d '\r'
}

# field NAME: the value of NAME from KEY:VALUE lines on stdin (INFO / CLUSTER INFO output).
field() { sed -n "s/^$1://p" | tr -d '\r' | head -n1; }

# node_conf PORT DIR: the redis.conf of a node of the local stack. The settings are those of
# Redis's own utils/create-cluster: node timeout 2000 ms (a killed master fails over in ~4 s),
# no full-coverage requirement, reads allowed when down, no persistence.
node_conf() {
  local port=$1 dir=$2
  cat <<EOF
# Written by scripts/lib/cluster.sh (node_conf); rewritten each time the node starts.
port $port
bind 127.0.0.1
protected-mode no
daemonize yes
dir "$dir"
pidfile "$dir/redis.pid"
logfile "$dir/redis.log"
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
cluster-require-full-coverage no
cluster-allow-reads-when-down yes
save ""
appendonly no
# A cache: bounded, and full means "evict the least frequently used key", never "refuse writes"
# (noeviction would reject the service's fills and invalidations). STACK_REDIS_MAXMEMORY per node.
maxmemory ${STACK_REDIS_MAXMEMORY:-256mb}
maxmemory-policy allkeys-lfu
# Start a replica's first full sync at once instead of waiting 5 s for other replicas.
repl-diskless-sync-delay 0
EOF
}

# cluster_nodes PORT...: CLUSTER NODES as the first of PORT... that answers sees it.
cluster_nodes() {
  local p out
  for p in "$@"; do
    out=$(rcli "$p" cluster nodes) && [[ $out == *myself* ]] && {
      printf '%s\n' "$out"
      return 0
    }
  done
  return 1
}

# The awk that turns CLUSTER NODES into "id port flags master-id slots..." lines (port of
# 127.0.0.1:PORT@BUS; the open-slot entries "[slot->-id]" kept as they are).
# shellcheck disable=SC2016 # awk's own $fields
CLUSTER_NODES_AWK='{ split($2, a, "@"); n = split(a[1], hp, ":"); port = hp[n]; line = $1 " " port " " $3 " " $4; for (i = 9; i <= NF; i++) line = line " " $i; print line }'

# node_table PORT...: "id port flags master-id slot-ranges..." per node, from cluster_nodes.
node_table() { cluster_nodes "$@" | awk "$CLUSTER_NODES_AWK"; }

# owner_of_slot SLOT PORT...: "<master port> <replica port or ->" of the live master owning SLOT.
owner_of_slot() {
  local slot=$1
  shift
  node_table "$@" | awk -v slot="$slot" '
    { port[$1] = $2 }
    $3 ~ /master/ && $3 !~ /fail/ {
      for (i = 5; i <= NF; i++) {
        if ($i ~ /^\[/) continue
        n = split($i, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1])
        if (slot + 0 >= lo + 0 && slot + 0 <= hi + 0) owner = $1
      }
    }
    $3 ~ /slave/ && $3 !~ /fail/ { rep[$4] = $1 }
    END { if (owner == "") exit 1; print port[owner], (owner in rep ? port[rep[owner]] : "-") }'
}

# master_ports PORT...: the ports of the live masters that own slots, ascending.
master_ports() {
  node_table "$@" | awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 5 { print $2 }' | sort -n
}

# slots_owned PORT: how many slots the node on PORT owns, in its own view (0 when it has none or
# does not answer).
slots_owned() {
  rcli "$1" cluster nodes | awk '$3 ~ /myself/ {
    for (i = 9; i <= NF; i++) {
      if ($i ~ /^\[/) continue
      n = split($i, r, "-"); c += (n == 2 ? r[2] - r[1] + 1 : 1)
    }
  } END { print c + 0 }'
}

# slots_owned_by ID PORT...: how many slots the cluster (as the first answering PORT sees it)
# gives to node ID, whether or not that node still answers.
slots_owned_by() {
  local id=$1
  shift
  node_table "$@" | awk -v id="$id" '$1 == id {
    for (i = 5; i <= NF; i++) {
      if ($i ~ /^\[/) continue
      n = split($i, r, "-"); c += (n == 2 ? r[2] - r[1] + 1 : 1)
    }
  } END { print c + 0 }'
}

# open_slots PORT...: one line per open slot, as each answering node says of itself:
# "<port> <slot> migrating|importing <peer id>". Empty when no slot is half moved.
open_slots() {
  local p
  for p in "$@"; do
    rcli "$p" cluster nodes 2>/dev/null | awk -v port="$p" '$3 ~ /myself/ {
      for (i = 9; i <= NF; i++) {
        if ($i !~ /^\[/) continue
        s = $i; gsub(/[\[\]]/, "", s)
        if (s ~ /->-/) { split(s, a, "->-"); print port, a[1], "migrating", a[2] }
        else if (s ~ /-<-/) { split(s, a, "-<-"); print port, a[1], "importing", a[2] }
      }
    }'
  done
}

# cluster_problems PORT...: what keeps the cluster of PORT... from being whole, one line each:
# a node that does not answer, cluster_state other than ok, slots not served, open slots, a
# failed node, a replica whose link is down or still syncing. Prints nothing when it is whole.
cluster_problems() {
  local p ci ri state assigned ok
  for p in "$@"; do
    if ! ci=$(rcli "$p" cluster info) || [[ $ci != *cluster_state* ]]; then
      printf '127.0.0.1:%s does not answer\n' "$p"
      continue
    fi
    state=$(field cluster_state <<<"$ci")
    assigned=$(field cluster_slots_assigned <<<"$ci")
    ok=$(field cluster_slots_ok <<<"$ci")
    [[ $state == ok ]] || printf '127.0.0.1:%s: cluster_state:%s\n' "$p" "$state"
    if [[ $assigned != 16384 || $ok != 16384 ]]; then
      printf '127.0.0.1:%s: %s of 16384 slots assigned, %s served\n' "$p" "$assigned" "$ok"
    fi
    ri=$(rcli "$p" info replication)
    if [[ $(field role <<<"$ri") == slave ]] &&
      [[ $(field master_link_status <<<"$ri") != up || $(field master_sync_in_progress <<<"$ri") != 0 ]]; then
      printf '127.0.0.1:%s: replica link %s, sync in progress %s\n' "$p" \
        "$(field master_link_status <<<"$ri")" "$(field master_sync_in_progress <<<"$ri")"
    fi
  done
  open_slots "$@" | awk '{ printf "127.0.0.1:%s: slot %s open (%s, peer %s)\n", $1, $2, $3, substr($4, 1, 8) }'
  node_table "$@" | awk '$3 ~ /fail|noaddr|handshake/ { printf "node %s (127.0.0.1:%s) is %s\n", substr($1, 1, 8), $2, $3 }' || true
}

# cluster_summary PORT...: one line per node of the cluster (as the first answering PORT sees
# it): address, role, slots owned (count and ranges) or the master it replicates, open slots.
cluster_summary() {
  node_table "$@" | awk '
    { id[NR] = $1; port[$1] = $2; flags[$1] = $3; master[$1] = $4; c = 0; r = ""; o = ""
      for (i = 5; i <= NF; i++) {
        if ($i ~ /^\[/) { o = o " " $i; continue }
        n = split($i, s, "-"); c += (n == 2 ? s[2] - s[1] + 1 : 1); r = r (r == "" ? "" : ",") $i
      }
      count[$1] = c; ranges[$1] = r; open[$1] = o }
    END {
      for (k = 1; k <= NR; k++) {
        n = id[k]; f = flags[n]; sub(/myself,/, "", f)
        if (f ~ /slave/) what = "replica of 127.0.0.1:" port[master[n]]
        else what = count[n] " slots" (ranges[n] == "" ? "" : " (" ranges[n] ")")
        printf "  127.0.0.1:%-6s %-14s %s%s\n", port[n], f, what, (open[n] == "" ? "" : "   open:" open[n])
      }
    }' | sort
}

# cluster_run LOG SECS ARG...: `redis-cli --cluster ARG...` with stdin closed, for at most SECS
# seconds, its whole output appended to LOG (colours removed). Prints its progress lines (>>>,
# Moving N slots, [OK]); on a non-zero exit status or an [ERR] line, prints redis-cli's own error
# lines (or its last lines), where the whole output is, and fails. It runs in the background with
# its pid in CLUSTER_RUN_PID, so that a trapped Ctrl-C is handled at once (not after a rebalance
# of minutes); the trap decides whether to stop it.
CLUSTER_RUN_PID=""
cluster_run() {
  local log=$1 secs=$2 rc=0 out
  shift 2
  case $1 in
    reshard | rebalance | del-node) cluster_wait_agreement "$log" "$2" 30 ;;
    add-node) cluster_wait_agreement "$log" "$3" 30 ;;
  esac
  out=$(mktemp "${TMPDIR:-/tmp}/cluster-run.XXXXXX")
  timeout "$secs" redis-cli --cluster "$@" </dev/null >"$out" 2>&1 &
  CLUSTER_RUN_PID=$!
  wait "$CLUSTER_RUN_PID" || rc=$?
  CLUSTER_RUN_PID=""
  sed -i 's/\x1b\[[0-9;]*m//g; s/\r//g' "$out"
  { printf '\n$ redis-cli --cluster %s\n' "$*"; cat "$out"; printf '(exit status %s)\n' "$rc"; } >>"$log"
  grep -E '^(>>>|Moving [0-9]+ slots|\[OK\])' "$out" |
    grep -vE '^(>>> (Performing Cluster Check|Check for open slots|Check slots coverage)|\[OK\] All)' |
    sed 's/^/    /' || true
  if ((rc == 0)) && ! grep -q '^\[ERR\]' "$out"; then
    rm -f "$out"
    return 0
  fi
  if ((rc == 124)); then
    printf '    redis-cli --cluster %s: timed out after %ss\n' "$1" "$secs"
  else
    printf '    redis-cli --cluster %s failed (exit status %s):\n' "$1" "$rc"
  fi
  cluster_errors "$out" | sed 's/^/    | /'
  printf '    (whole output: %s)\n' "$log"
  rm -f "$out"
  return 1
}

# cluster_wait_agreement LOG HOST:PORT SECS: waits until every node the node at HOST:PORT knows
# holds the same slot map (`redis-cli --cluster check` prints "All nodes agree about slots
# configuration"), for at most SECS seconds. A move changes the map on the two nodes it involves
# at once and on the others only by gossip, a few hundred ms later; reshard, rebalance and
# del-node refuse to start before then ("[ERR] Nodes don't agree about configuration!"), so two
# operations in a row failed at random (seen in scripts/workshop-test.sh's second run). Returns 0
# either way: if the nodes never agree, the operation itself fails and says so.
cluster_wait_agreement() {
  local log=$1 addr=$2 secs=$3 deadline
  deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if timeout 10 redis-cli --cluster check "$addr" </dev/null 2>&1 |
      grep -q 'All nodes agree about slots configuration'; then
      return 0
    fi
    sleep 0.2
  done
  printf '\n(the nodes did not agree about the slot map within %ss of asking %s)\n' "$secs" "$addr" >>"$log"
  return 0
}

# cluster_errors LOG: redis-cli's own error lines in LOG ([ERR], [WARNING], "***" lines, a node's
# error reply and the line after "replied with error:"), else its last 5 lines.
cluster_errors() {
  local lines
  lines=$(sed 's/\x1b\[[0-9;]*m//g; s/\r//g' "$1" | awk '
    after { print; after = 0; next }
    /replied with error:?$/ { print; after = 1; next }
    /^\[ERR\]|^\[WARNING\]|^\*\*\*|^(ERR|IOERR|BUSYKEY|MOVED|ASK|TRYAGAIN|CLUSTERDOWN|LOADING|OOM|NOREPLICAS) / { print }' | tr -d '#' | sed '/^[[:space:]]*$/d')
  if [[ -n $lines ]]; then
    printf '%s\n' "$lines"
  else
    sed 's/\x1b\[[0-9;]*m//g' "$1" | tail -n 5
  fi
}

# shutdown_if_empty PORT: SHUTDOWN NOSAVE of the node on PORT, only when it owns no slot in its
# own view and in the view of the nodes it knows, and no slot of it is half moved. Fails (and
# says why) otherwise: a node that owns slots is never shut down, or their keys and their
# coverage would go with it.
shutdown_if_empty() {
  local port=$1 id owned others
  id=$(rcli "$port" cluster myid) || { printf '127.0.0.1:%s does not answer\n' "$port"; return 1; }
  owned=$(slots_owned "$port")
  if ((owned > 0)); then
    printf 'refusing to shut down 127.0.0.1:%s: it still owns %s slots\n' "$port" "$owned"
    return 1
  fi
  if [[ -n $(open_slots "$port") ]]; then
    printf 'refusing to shut down 127.0.0.1:%s: it has open (half-moved) slots\n' "$port"
    return 1
  fi
  # What the others believe: after a failed del-node they may still route slots to it.
  others=$(node_table "$port" | awk -v id="$id" '$1 != id && $3 !~ /fail|noaddr/ { print $2 }')
  local p
  for p in $others; do
    owned=$(slots_owned_by "$id" "$p")
    if ((owned > 0)); then
      printf 'refusing to shut down 127.0.0.1:%s: 127.0.0.1:%s still routes %s slots to it\n' "$port" "$p" "$owned"
      return 1
    fi
  done
  rcli "$port" shutdown nosave >/dev/null || true
}

# drain_node LOG NODE_PORT PORT...: moves every slot of the master on NODE_PORT to the masters
# beside it (each of its slot ranges to the owner of the slot just above it, else just below,
# which is where `rebalance` took it from), one `reshard` per range, lowest first; then the node
# is an empty master. `--cluster-replace`: see cluster_move_flags. PORT... are the cluster's
# other nodes, the first answering one used as the entry point. Fails, with redis-cli's error
# lines, at the first move that fails.
drain_node() {
  local log=$1 port=$2 id entry table ranges range lo hi to n
  shift 2
  id=$(rcli "$port" cluster myid) || id=""
  if [[ ! $id =~ ^[0-9a-f]{40}$ ]]; then
    printf '    127.0.0.1:%s does not answer\n' "$port"
    return 1
  fi
  entry=$(first_answering "$@") || { printf '    no node of the cluster answers\n'; return 1; }
  # A master left without slots would otherwise turn itself into a replica of the node that took
  # its last slot (Redis 7), start a full sync, and fail the del-node that follows.
  rcli "$port" config set cluster-allow-replica-migration no >/dev/null || true
  while :; do
    table=$(node_table "$entry") || { printf '    127.0.0.1:%s does not answer\n' "$entry"; return 1; }
    ranges=$(awk -v id="$id" '$1 == id { for (i = 5; i <= NF; i++) if ($i !~ /^\[/) print $i }' <<<"$table" | sort -n)
    [[ -n $ranges ]] || return 0
    range=$(head -n1 <<<"$ranges")
    lo=${range%-*} hi=${range#*-}
    n=$((hi - lo + 1))
    to=""
    if ((hi < 16383)); then to=$(slot_owner_id "$table" $((hi + 1)) "$id"); fi
    if [[ -z $to ]] && ((lo > 0)); then to=$(slot_owner_id "$table" $((lo - 1)) "$id"); fi
    if [[ -z $to ]]; then
      to=$(awk -v id="$id" '$1 != id && $3 ~ /master/ && $3 !~ /fail/ && NF >= 5 { print $1; exit }' <<<"$table")
    fi
    [[ -n $to ]] || { printf '    no other master to take slots %s\n' "$range"; return 1; }
    printf '    Moving %s slots (%s) from 127.0.0.1:%s to 127.0.0.1:%s\n' "$n" "$range" "$port" \
      "$(awk -v id="$to" '$1 == id { print $2 }' <<<"$table")"
    # shellcheck disable=SC2046 # the flags are words
    cluster_run "$log" 600 reshard "127.0.0.1:$entry" --cluster-from "$id" --cluster-to "$to" \
      --cluster-slots "$n" --cluster-yes $(cluster_move_flags) || return 1
  done
}

# slot_owner_id TABLE SLOT SKIP_ID: the id of the live master that owns SLOT in node_table's
# TABLE, unless it is SKIP_ID.
slot_owner_id() {
  awk -v slot="$2" -v skip="$3" '$1 != skip && $3 ~ /master/ && $3 !~ /fail/ {
    for (i = 5; i <= NF; i++) {
      if ($i ~ /^\[/) continue
      n = split($i, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1])
      if (slot + 0 >= lo + 0 && slot + 0 <= hi + 0) { print $1; exit }
    }
  }' <<<"$1"
}

# first_answering PORT...: the first of PORT... whose node answers PING.
first_answering() {
  local p
  for p in "$@"; do
    [[ $(rcli "$p" ping) == PONG ]] && { printf '%s\n' "$p"; return 0; }
  done
  return 1
}

# The flags every slot move (rebalance, reshard) is given: see the comment at the top of
# scripts/workshop.sh's step 8 for why keys are replaced.
cluster_move_flags() { printf '%s\n' --cluster-replace; }
