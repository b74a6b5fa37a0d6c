#!/usr/bin/env bash
# scripts/redis-cluster-init.sh — the one-shot `redis-cluster-init` service of compose.yml.
#
# Makes the six compose Redis nodes one healthy cluster (3 masters, 3 replicas) and exits 0, so
# nobody has to run `redis-cli --cluster create` by hand. Safe to run any number of times; it runs
# on every `docker compose up`, before the app starts:
#
#   fresh nodes (first up, or after `down`)   -> redis-cli --cluster create
#   an existing cluster (stop/start, restart)  -> every node meets every other at its current IP,
#                                                 which repairs addresses that changed on restart
#   a node replaced by a fresh one             -> it joins as the replica of a master that lacks one;
#                                                 the entry of the node it replaced is forgotten
#   a replaced master                          -> its replica takes over (CLUSTER FAILOVER TAKEOVER)
#   a whole shard replaced                     -> its slots go to the fresh node that replaced it
#   slots never fully assigned (a create that  -> reset and created again (a cache: nothing is lost
#   died half-way), or a repair that failed       that PostgreSQL does not hold)
#
# It returns only when every node reports cluster_state:ok with all 16384 slots, and every replica's
# link to its master is up; otherwise it prints the cluster's view and exits 1.
#
# Environment:
#   CLUSTER_NODES      space-separated host:port of every node (default redis-1:6379 .. redis-6:6379)
#   CLUSTER_REPLICAS   replicas per master (default 1)
#   CLUSTER_WAIT_SECS  how long to wait for the nodes and for a healthy cluster (default 60)
#   REDISCLI_AUTH      password of the nodes, if any (read by redis-cli itself)
#
# Needs bash, redis-cli and getent: the official redis image has all three. Node names are
# resolved to IPv4 addresses (getent ahostsv4), also on IPv6-enabled networks; the nodes listen
# on both families (bind * -::* in deploy/redis/redis-cluster.conf).
set -euo pipefail

declare -A ID_OF
read -r -a NODES <<<"${CLUSTER_NODES:-redis-1:6379 redis-2:6379 redis-3:6379 redis-4:6379 redis-5:6379 redis-6:6379}"
REPLICAS=${CLUSTER_REPLICAS:-1}
WAIT_SECS=${CLUSTER_WAIT_SECS:-60}
TOTAL_SLOTS=16384
PROBLEM=""

log() { printf 'redis-cluster-init: %s\n' "$*"; }
die() {
  printf 'redis-cluster-init: error: %s\n' "$*" >&2
  exit 1
}

[[ $REPLICAS =~ ^[0-9]+$ && $WAIT_SECS =~ ^[0-9]+$ ]] ||
  die "CLUSTER_REPLICAS and CLUSTER_WAIT_SECS must be whole numbers (got '$REPLICAS', '$WAIT_SECS')"
((${#NODES[@]} >= 3 * (REPLICAS + 1))) ||
  die "${#NODES[@]} nodes in CLUSTER_NODES cannot make 3 masters with $REPLICAS replica(s) each"
MASTERS=$((${#NODES[@]} / (REPLICAS + 1)))
for node in "${NODES[@]}"; do
  [[ $node =~ ^[^:]+:[0-9]+$ ]] || die "CLUSTER_NODES entry '$node' is not host:port"
done

host_of() { printf '%s' "${1%:*}"; }
port_of() { printf '%s' "${1##*:}"; }

# Runs redis-cli against one node.
cli() {
  local node=$1
  shift
  redis-cli -h "$(host_of "$node")" -p "$(port_of "$node")" "$@"
}

# The value of NAME in INFO-style "name:value" output on stdin.
field() { tr -d '\r' | sed -n "s/^$1://p" | head -n1; }

# The node's IPv4 address (CLUSTER MEET and --cluster create want IPs, not names). IPv4 on purpose:
# on an IPv6-enabled Docker network a name resolves to AAAA and A records, AAAA usually first, and
# every node must meet the others over the same family. `getent ahostsv4` asks for A records only
# (never `getent hosts`, which returns whichever family comes first; scripts/check-static.sh
# fails on it).
ip_of() {
  local host
  host=$(host_of "$1")
  if [[ $host =~ ^[0-9.]+$ ]]; then
    printf '%s' "$host"
  else
    # awk reads every line (no `exit`): leaving early could kill getent with SIGPIPE, which
    # pipefail turns into a failure of the whole resolution when getent prints several lines.
    getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }'
  fi
}

# ---------------------------------------------------------------------------------------------

wait_for_nodes() {
  local deadline=$((SECONDS + WAIT_SECS)) node
  for node in "${NODES[@]}"; do
    until [[ $(cli "$node" ping 2>/dev/null) == PONG ]]; do
      ((SECONDS < deadline)) ||
        die "Redis node $node does not answer PING after ${WAIT_SECS}s (is its container up? docker compose logs $(host_of "$node"))"
      sleep 1
    done
    [[ $(cli "$node" info cluster | field cluster_enabled) == 1 ]] ||
      die "Redis node $node runs without cluster-enabled yes (check deploy/redis/redis-cluster.conf)"
  done
  IPS=()
  for node in "${NODES[@]}"; do
    local ip
    ip=$(ip_of "$node")
    [[ -n $ip ]] || die "cannot resolve $(host_of "$node")"
    IPS+=("$ip")
  done
}

# Sets FRESH (how many nodes know only themselves and own no slot), ASSIGNED_MAX (the most slots
# any node sees assigned) and REF (the node with that view: decisions are taken on its view, never
# on a fresh node's, which knows nothing of the cluster yet).
survey() {
  FRESH=0 ASSIGNED_MAX=0 REF=${NODES[0]}
  local node info known assigned
  for node in "${NODES[@]}"; do
    info=$(cli "$node" cluster info)
    known=$(field cluster_known_nodes <<<"$info")
    assigned=$(field cluster_slots_assigned <<<"$info")
    if [[ $known == 1 && $assigned == 0 ]]; then FRESH=$((FRESH + 1)); fi
    if ((assigned > ASSIGNED_MAX)); then ASSIGNED_MAX=$assigned REF=$node; fi
  done
}

create_cluster() {
  local addresses=() i
  for i in "${!NODES[@]}"; do addresses+=("${IPS[i]}:$(port_of "${NODES[i]}")"); done
  log "creating the cluster: $MASTERS masters, $REPLICAS replica(s) each, on ${NODES[*]}"
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas "$REPLICAS" --cluster-yes
}

# Empties every node and makes it forget the cluster. Only ever costs cached copies: PostgreSQL
# holds the data.
reset_all() {
  local node
  for node in "${NODES[@]}"; do
    # A replica refuses FLUSHALL; CLUSTER RESET turns it back into an empty master first.
    cli "$node" cluster reset hard >/dev/null 2>&1 || true
    cli "$node" flushall >/dev/null
    cli "$node" cluster reset hard >/dev/null
  done
}

# Every node meets every other at its current IP. For a node already known under the same id, the
# handshake only refreshes its address; that is what repairs a cluster whose containers came back
# with new IPs.
meet_all() {
  local i j
  for i in "${!NODES[@]}"; do
    for j in "${!NODES[@]}"; do
      ((i == j)) && continue
      cli "${NODES[i]}" cluster meet "${IPS[j]}" "$(port_of "${NODES[j]}")" >/dev/null
    done
  done
}

# Sets IDS (the node id of every configured node, one per line) and ID_OF (node -> id).
load_ids() {
  local node
  IDS="" ID_OF=()
  for node in "${NODES[@]}"; do
    ID_OF[$node]=$(cli "$node" cluster myid | tr -d '\r')
    IDS+="${ID_OF[$node]}"$'\n'
  done
  IDS=${IDS%$'\n'}
}

# REF's `cluster nodes` without handshake entries. Fields: 1 id, 3 flags, 4 master id or "-",
# 9.. slot ranges (a master owning no slot has 8 fields).
view() { cli "$REF" cluster nodes | tr -d '\r' | awk '$3 !~ /handshake/'; }

# Nodes REF knows that are not configured (the entries of replaced containers).
leftovers() { view | awk '{ print $1 }' | grep -vxF "$IDS" || true; }

# The configured node whose id is $1 (empty if none).
node_with_id() {
  local node
  for node in "${NODES[@]}"; do
    if [[ ${ID_OF[$node]} == "$1" ]]; then printf '%s' "$node"; fi
  done
}

# The id of the healthy, configured, slot-owning master with the fewest replicas.
best_master() {
  view | awk -v ids="$IDS" '
    BEGIN { n = split(ids, list, "\n"); for (i = 1; i <= n; i++) configured[list[i]] = 1 }
    $3 ~ /master/ && $3 !~ /fail/ && NF > 8 && ($1 in configured) { owner[$1] = 1; replicas[$1] += 0 }
    $3 ~ /slave/ && $3 !~ /fail/ { replicas[$4]++ }
    END {
      best = ""
      for (m in owner) if (best == "" || replicas[m] < replicas[best]) best = m
      print best
    }'
}

# Waits until every node knows every configured node.
wait_until_met() {
  local deadline=$((SECONDS + WAIT_SECS)) node missing
  while :; do
    missing=0
    for node in "${NODES[@]}"; do
      local known
      known=$(cli "$node" cluster nodes | awk '$3 !~ /handshake/ { print $1 }')
      if grep -qvxF "$known" <<<"$IDS"; then missing=1; fi
    done
    ((missing == 0)) && return 0
    ((SECONDS < deadline)) || die "the nodes did not all learn of each other within ${WAIT_SECS}s"
    sleep 1
  done
}

# A replaced master may never be failed over automatically (a fresh node that reuses its address
# makes it `noaddr`, which failure detection skips), so its replica takes over explicitly.
take_over_replaced_masters() {
  local id replica deadline
  for id in $(view | awk 'NF > 8 { print $1 }' | grep -vxF "$IDS" || true); do
    replica=$(node_with_id "$(view | awk -v m="$id" '$4 == m && $3 ~ /slave/ && $3 !~ /fail/ { print $1; exit }')")
    [[ -n $replica ]] || continue
    log "master $id was replaced: its replica $replica takes its slots over"
    cli "$replica" cluster failover takeover >/dev/null
    deadline=$((SECONDS + 10))
    until view | awk -v r="${ID_OF[$replica]}" '$1 == r && NF > 8 { found = 1 } END { exit !found }'; do
      ((SECONDS < deadline)) || die "replica $replica did not take over within 10s"
      sleep 0.5
    done
  done
}

# Replicas that still follow a replaced node follow a live master instead.
reattach_orphaned_replicas() {
  local node master
  for node in "${NODES[@]}"; do
    master=$(cli "$node" cluster nodes | tr -d '\r' | awk '$3 ~ /myself/ && $3 ~ /slave/ { print $4 }')
    if [[ -z $master ]] || grep -qxF "$master" <<<"$IDS"; then continue; fi
    master=$(best_master)
    [[ -n $master ]] || return 0
    log "replica $node followed a replaced node: making it a replica of $master"
    cli "$node" cluster replicate "$master" >/dev/null
  done
}

# Forgets, on every node, the entries of replaced nodes. Sets ORPHANED: the slot ranges that were
# still theirs, one line per replaced master.
forget_leftovers() {
  local id node
  ORPHANED=$(view | awk -v ids="$IDS" '
    BEGIN { n = split(ids, list, "\n"); for (i = 1; i <= n; i++) configured[list[i]] = 1 }
    NF > 8 && !($1 in configured) {
      ranges = ""
      for (i = 9; i <= NF; i++) if ($i !~ /^\[/) ranges = ranges " " $i
      print substr(ranges, 2)
    }')
  for id in $(leftovers); do
    log "forgetting node $id (no configured node has that id any more)"
    for node in "${NODES[@]}"; do
      cli "$node" cluster forget "$id" >/dev/null 2>&1 || true
    done
  done
}

# Gives the slots of each replaced master that had no replica left to a slot-less master (the
# fresh node that replaced it), so shards stay balanced.
reassign_orphaned_slots() {
  local ranges spare args range
  while read -r ranges; do
    [[ -n $ranges ]] || continue
    spare=$(node_with_id "$(view | awk '$3 ~ /master/ && $3 !~ /fail/ && NF == 8 { print $1; exit }')")
    [[ -n $spare ]] || return 0 # cover_slots hands them to the existing masters
    args=()
    for range in $ranges; do
      args+=("${range%-*}" "${range#*-}")
    done
    log "slots $ranges lost their master and replicas: assigning them to $spare"
    cli "$spare" cluster addslotsrange "${args[@]}" >/dev/null
    sleep 1 # let the claim spread before the next decision reads the view
  done <<<"$ORPHANED"
}

# Makes each slot-less master the replica of the master with the fewest replicas.
attach_spare_masters() {
  local spare master node
  for spare in $(view | awk '$3 ~ /master/ && $3 !~ /fail/ && NF == 8 { print $1 }'); do
    node=$(node_with_id "$spare")
    [[ -n $node ]] || continue
    master=$(best_master)
    [[ -n $master ]] || die "no master owns slots; cannot attach spare node $node"
    log "node $node owns no slot: making it a replica of $master"
    cli "$node" cluster replicate "$master" >/dev/null
  done
}

# Last resort: slots nobody owns go to the existing masters.
cover_slots() {
  local assigned output
  assigned=$(cli "$REF" cluster info | field cluster_slots_assigned)
  ((assigned < TOTAL_SLOTS)) || return 0
  log "$((TOTAL_SLOTS - assigned)) slots have no master: redis-cli --cluster fix"
  # `fix` asks before covering slots even with --cluster-yes on some versions: answer it.
  output=$(
    set +o pipefail
    yes yes | redis-cli --cluster fix "$(ip_of "$REF"):$(port_of "$REF")" --cluster-yes 2>&1
  ) || {
    printf '%s\n' "$output" >&2
    die "redis-cli --cluster fix failed; start over with: docker compose down && docker compose up"
  }
}

heal_cluster() {
  log "a cluster exists: refreshing node addresses and repairing what changed"
  meet_all
  load_ids
  wait_until_met
  take_over_replaced_masters
  reattach_orphaned_replicas
  forget_leftovers
  reassign_orphaned_slots
  attach_spare_masters
  cover_slots
}

# Succeeds when every node sees a complete, ok cluster with MASTERS masters and synced replicas.
healthy() {
  local node info role masters
  PROBLEM=""
  for node in "${NODES[@]}"; do
    info=$(cli "$node" cluster info 2>/dev/null) || {
      PROBLEM="$node does not answer"
      return 1
    }
    if [[ $(field cluster_state <<<"$info") != ok ]]; then
      PROBLEM="$node reports cluster_state:$(field cluster_state <<<"$info")"
      return 1
    fi
    if [[ $(field cluster_slots_assigned <<<"$info") != "$TOTAL_SLOTS" ]]; then
      PROBLEM="$node sees $(field cluster_slots_assigned <<<"$info") of $TOTAL_SLOTS slots assigned"
      return 1
    fi
    role=$(cli "$node" info replication | field role)
    if [[ $role == slave ]]; then
      local link
      link=$(cli "$node" info replication | field master_link_status)
      if [[ $link != up ]]; then
        PROBLEM="replica $node: master_link_status:$link"
        return 1
      fi
    fi
  done
  masters=$(cli "$REF" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8' | wc -l)
  if ((masters != MASTERS)); then
    PROBLEM="$masters masters own slots, expected $MASTERS"
    return 1
  fi
}

wait_until_healthy() {
  local deadline=$((SECONDS + WAIT_SECS))
  until healthy; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

main() {
  wait_for_nodes
  survey
  if ((FRESH == ${#NODES[@]})); then
    create_cluster
  elif ((ASSIGNED_MAX < TOTAL_SLOTS)); then
    log "the nodes hold a partly assigned cluster (a create that died half-way?): recreating it"
    reset_all
    create_cluster
  elif ! (heal_cluster) || ! wait_until_healthy; then
    log "repairing did not give a healthy cluster${PROBLEM:+ ($PROBLEM)}: recreating it (a cache: PostgreSQL holds the data)"
    reset_all
    REF=${NODES[0]}
    create_cluster
  fi
  if ! wait_until_healthy; then
    cli "$REF" cluster nodes >&2 || true
    die "cluster not healthy after ${WAIT_SECS}s: $PROBLEM. Look at: docker compose logs redis-1 ... redis-6; start over with: docker compose down && docker compose up"
  fi
  log "cluster ok: $MASTERS masters, $((${#NODES[@]} - MASTERS)) replicas in sync (${NODES[*]})"
}

# Sourced (scripts/check-static.sh tests ip_of): define only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
