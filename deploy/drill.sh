#!/usr/bin/env bash
# The failover drill: a three-node walrus cluster on this machine, a write load whose client
# records every acknowledged write, and four scenarios. Each node runs in its own network
# namespace (198.51.100.0/24 on a bridge, no default route) when `ip netns` works (root), else
# all on 127.0.0.1 (the partition scenario then needs namespaces and is skipped).
#
#   deploy/drill.sh [BIN_DIR]          BIN_DIR: where walrusd and walrusctl are (default: release build)
#
# Prints one row per scenario: writes acknowledged, acknowledged writes lost, lost writes found in
# the old primary's diverged file, longest write unavailability, digests equal. Exits non-zero on
# any loss the mode does not allow (sync-replicas=1: none; sync-replicas=0: only writes that are in
# the old primary's diverged file) or on digests that differ.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$(cd "$here/.." && "$here/build-release.sh" --show-bin-path 2>/dev/null)}
[ -x "$bin/walrusd" ] && [ -x "$bin/walrusctl" ] || { echo "drill: no walrusd/walrusctl in $bin; build first (deploy/build-release.sh)"; exit 2; }
work=$(mktemp -d /tmp/walrus-drill.XXXXXX)
nodes=(a b c)
mode=loopback
if [ "$(id -u)" = 0 ] && [ "${WALRUS_DRILL_LOOPBACK:-0}" != 1 ] && command -v nft >/dev/null && ip netns add walrus-probe-$$ 2>/dev/null; then
  ip netns del walrus-probe-$$; mode=netns
fi
failures=0
pids=()

addr() { # node → address
  if [ $mode = netns ]; then case $1 in a) echo 198.51.100.1;; b) echo 198.51.100.2;; c) echo 198.51.100.3;; client) echo 198.51.100.100;; esac
  else echo 127.0.0.1; fi
}
cport() { if [ $mode = netns ]; then echo 7379; else case $1 in a) echo 17379;; b) echo 17389;; c) echo 17399;; esac; fi; }
rport() { if [ $mode = netns ]; then echo 7380; else case $1 in a) echo 17380;; b) echo 17390;; c) echo 17400;; esac; fi; }
inns() { local ns=$1; shift; if [ $mode = netns ]; then ip netns exec walrus-$ns "$@"; else "$@"; fi; }
sock() { echo "$work/$1.sock"; }
ctl() { # node, walrusctl arguments…; logs how long each call took to $work/steps.log
  local node=$1; shift
  local started; started=$(now_ms)
  "$bin/walrusctl" "$@" --socket "$(sock $node)"
  local status=$?
  echo "$node: walrusctl $* → $status in $(( $(now_ms) - started )) ms" >> "$work/steps.log"
  return $status
}
now_ms() { date +%s%3N; }

setup_network() {
  [ $mode = netns ] || return 0
  # Namespaces left by a drill that was killed half way would make these fail.
  for ns in a b c client sw; do ip netns del walrus-$ns 2>/dev/null; done
  ip netns add walrus-sw
  ip -n walrus-sw link add br0 type bridge
  ip -n walrus-sw link set br0 up
  for ns in a b c client; do
    ip netns add walrus-$ns
    ip -n walrus-$ns link set lo up
    ip link add eth0 netns walrus-$ns type veth peer name p-$ns netns walrus-sw
    ip -n walrus-sw link set p-$ns master br0
    ip -n walrus-sw link set p-$ns up
    ip -n walrus-$ns addr add "$(addr $ns)/24" dev eth0
    ip -n walrus-$ns link set eth0 up
  done
}

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if [ $mode = netns ]; then for ns in a b c client sw; do ip netns del walrus-$ns 2>/dev/null; done; fi
  [ -n "${WALRUS_DRILL_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

start_node() { # node, extra args...
  local node=$1; shift
  local command=("$bin/walrusd" --data "$work/$node" --bind "$(addr $node)" --port "$(cport $node)"
    --repl-bind "$(addr $node)" --repl-port "$(rport $node)" --control-socket "$(sock $node)"
    --repl-timeout 2000 --log-level notice "$@")
  # Not through a shell function: $! must be walrusd itself (ip netns exec execs it).
  if [ $mode = netns ]; then ip netns exec walrus-$node "${command[@]}" >>"$work/$node.log" 2>&1 &
  else "${command[@]}" >>"$work/$node.log" 2>&1 & fi
  pids+=($!)
  eval "pid_$node=$!"
  local deadline=$((SECONDS + 30))
  until inns client redis-cli -h "$(addr $node)" -p "$(cport $node)" PING 2>/dev/null | grep -q PONG; do
    [ $SECONDS -ge $deadline ] && { echo "drill: node $node did not start"; tail -5 "$work/$node.log"; return 1; }
    sleep 0.05
  done
}
kill_node() { local var=pid_$1; kill -"${2:-9}" "${!var}" 2>/dev/null; wait "${!var}" 2>/dev/null; }
follow_args() { echo "--follow $(addr $1):$(rport $1)"; }
all_nodes() { local list=""; for n in a b c; do list+="$(addr $n):$(cport $n),"; done; echo "${list%,}"; }

start_load() { # scenario name
  rm -f "$work/stop"
  inns client python3 "$here/drill-checker.py" load --nodes "$(all_nodes)" --prefix "$1" --stop "$work/stop" --out "$work/$1.json" &
  load_pid=$!
  sleep 1.5
}
stop_load() {
  sleep 1; touch "$work/stop"
  local started; started=$(now_ms)
  wait $load_pid
  echo "load client stopped in $(( $(now_ms) - started )) ms" >> "$work/steps.log"
}

wait_converged() { # primary, others...
  local primary=$1; shift
  local deadline=$((SECONDS + 30)) want
  while [ $SECONDS -lt $deadline ]; do
    want=$(ctl $primary digest 2>/dev/null | cut -d' ' -f1)
    local ok=1
    for n in "$@"; do [ "$(ctl $n digest 2>/dev/null | cut -d' ' -f1)" = "$want" ] || ok=0; done
    [ $ok = 1 ] && [ -n "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

most_advanced() { # of the given followers, the one with the highest applied index
  local best="" best_index=-1 index
  for n in "$@"; do
    index=$(ctl $n status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("appliedIndex", -1))')
    if [ "${index:--1}" -gt "$best_index" ]; then best=$n; best_index=$index; fi
  done
  echo $best
}

stop_all() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  pids=()
}

fresh_cluster() { # sync-replicas
  stop_all
  for n in a b c; do rm -rf "$work/$n" "$work/$n.log"; done
  echo "cluster start at $(now_ms)" >> "$work/steps.log"
  start_node a --sync-replicas "$1" --sync-replicas-timeout 1000 || return 1
  start_node b $(follow_args a) --sync-replicas "$1" --sync-replicas-timeout 1000 || return 1
  start_node c $(follow_args a) --sync-replicas "$1" --sync-replicas-timeout 1000 || return 1
  wait_converged a b c
  echo "cluster converged at $(now_ms)" >> "$work/steps.log"
}

rows=()
report() { # scenario, sync, primary at the end, diverged node, allowed-loss rule
  local name=$1 sync=$2 primary=$3 old=$4
  local diverged=()
  for f in "$work/$old"/diverged-*.log; do
    [ -e "$f" ] || continue
    "$bin/walrusctl" wal dump --json --file "$f" > "$f.json"
    diverged+=(--diverged "$f.json")
  done
  local others=() digest="yes"
  for n in a b c; do [ $n != "$primary" ] && others+=($n); done
  wait_converged "$primary" "${others[@]}" || digest="NO"
  local result acked lost moved gap
  result=$(inns client python3 "$here/drill-checker.py" verify --node "$(addr $primary):$(cport $primary)" --acked "$work/$name.json" "${diverged[@]}")
  lost=$(echo "$result" | sed -n 's/.*lost=\([0-9]*\).*/\1/p'); moved=$(echo "$result" | sed -n 's/.*moved=\([0-9]*\).*/\1/p')
  acked=$(python3 -c "import json; print(len(json.load(open('$work/$name.json'))['acked']))")
  gap=$(python3 -c "import json; print(json.load(open('$work/$name.json'))['gap_ms'])")
  local verdict=ok
  if [ "$sync" = 1 ] && [ "$lost" != 0 ]; then verdict=FAIL; fi
  if [ "$sync" = 0 ] && [ "$lost" != "$moved" ]; then verdict=FAIL; fi
  [ "$digest" = yes ] || verdict=FAIL
  [ $verdict = ok ] || failures=$((failures + 1))
  rows+=("| $name | $sync | $acked | $lost | $moved | $gap | $digest | $verdict |")
}

scenario_switchover() {
  fresh_cluster 1 || { rows+=("| switchover | 1 | – | – | – | – | – | FAIL (setup) |"); failures=$((failures+1)); return; }
  start_load switchover
  ctl a switchover "$(addr b):$(cport b)" >"$work/switchover.out" 2>&1 || cat "$work/switchover.out"
  ctl c follow "$(addr b):$(rport b)" >/dev/null
  stop_load
  report switchover 1 b a
}

scenario_kill() { # sync-replicas
  local sync=$1 name=kill-primary-sync$1
  fresh_cluster $sync || { rows+=("| $name | $sync | – | – | – | – | – | FAIL (setup) |"); failures=$((failures+1)); return; }
  start_load $name
  kill_node a 9
  sleep 0.3
  local new; new=$(most_advanced b c)
  local other; other=$([ $new = b ] && echo c || echo b)
  ctl $new promote >"$work/promote.out" 2>&1 || ctl $new promote --force >>"$work/promote.out" 2>&1
  ctl $other follow "$(addr $new):$(rport $new)" >/dev/null
  start_node a $(follow_args $new) --sync-replicas $sync --sync-replicas-timeout 1000
  stop_load
  report $name $sync $new a
}

scenario_partition() {
  if [ $mode != netns ]; then rows+=("| partition | 1 | – | – | – | – | – | skipped (needs network namespaces) |"); return; fi
  fresh_cluster 1 || { rows+=("| partition | 1 | – | – | – | – | – | FAIL (setup) |"); failures=$((failures+1)); return; }
  start_load partition
  # Cut the primary off from its followers (nftables in its namespace); clients still reach it,
  # so they keep trying it: with sync-replicas=1 it must acknowledge nothing from here on.
  ip netns exec walrus-a nft -f - <<NFT
table inet drill {
  chain input { type filter hook input priority 0; ip saddr { $(addr b), $(addr c) } drop; }
  chain output { type filter hook output priority 0; ip daddr { $(addr b), $(addr c) } drop; }
}
NFT
  local cut_at; cut_at=$(now_ms)
  sleep 2.5                                  # > repl-timeout: the followers notice
  ctl b promote >/dev/null 2>&1 || ctl b promote --force >/dev/null
  ctl c follow "$(addr b):$(rport b)" >/dev/null
  sleep 1
  local acked_isolated
  acked_isolated=$(inns client python3 -c "
import redis
r = redis.Redis(host='$(addr a)', port=$(cport a), socket_timeout=5, protocol=2)
try:
    print(1 if r.set('drill:isolated', 'x') else 0)
except redis.ResponseError as e:
    print(0)
")
  ip netns exec walrus-a nft delete table inet drill   # heal; the orchestrator makes the old primary step down
  ctl a follow "$(addr b):$(rport b)" >/dev/null
  echo "partition: isolated primary acknowledged $acked_isolated probe write(s); partition lasted $(( $(now_ms) - cut_at )) ms" >> "$work/steps.log"
  stop_load
  [ "$acked_isolated" = 0 ] || failures=$((failures + 1))
  report partition 1 b a
}

nft_in() { # namespace, rule body for both directions against the given peers: drop …
  local ns=$1 peers=$2 extra=$3
  ip netns exec walrus-$ns nft -f - <<NFT
table inet drill {
  chain input { type filter hook input priority 0; ip saddr { $peers } $extra drop; }
  chain output { type filter hook output priority 0; ip daddr { $peers } $extra drop; }
}
NFT
}

scenario_follower_partition() {
  if [ $mode != netns ]; then rows+=("| follower-partition-10s | 1 | – | – | – | – | – | skipped (needs network namespaces) |"); return; fi
  fresh_cluster 1 || { rows+=("| follower-partition-10s | 1 | – | – | – | – | – | FAIL (setup) |"); failures=$((failures+1)); return; }
  start_load follower-partition-10s
  nft_in c "$(addr a)" ""                    # follower c loses its primary for 10 s (b keeps sync-replicas=1 met)
  sleep 10
  ip netns exec walrus-c nft delete table inet drill
  stop_load
  report follower-partition-10s 1 a a
  if grep -q "Sending a snapshot" "$work/a.log"; then
    rows[-1]="${rows[-1]/| ok |/| FAIL (needed a snapshot) |}"; failures=$((failures + 1))
  fi
}

scenario_packet_loss() {
  if [ $mode != netns ]; then rows+=("| packet-loss-10% | 1 | – | – | – | – | – | skipped (needs network namespaces) |"); return; fi
  fresh_cluster 1 || { rows+=("| packet-loss-10% | 1 | – | – | – | – | – | FAIL (setup) |"); failures=$((failures+1)); return; }
  start_load packet-loss-10%
  nft_in a "$(addr b), $(addr c), $(addr client)" "numgen random mod 100 < 10"   # 10% of the primary's packets, both ways
  sleep 4
  ip netns exec walrus-a nft delete table inet drill
  stop_load
  report packet-loss-10% 1 a a
}

setup_network
echo "walrus failover drill ($mode mode, binaries in $bin)"
only=${WALRUS_DRILL_ONLY:-switchover,kill1,kill0,partition,follower-partition,packet-loss}
[[ ",$only," == *,switchover,* ]] && scenario_switchover
[[ ",$only," == *,kill1,* ]] && scenario_kill 1
[[ ",$only," == *,kill0,* ]] && scenario_kill 0
[[ ",$only," == *,partition,* ]] && scenario_partition
[[ ",$only," == *,follower-partition,* ]] && scenario_follower_partition
[[ ",$only," == *,packet-loss,* ]] && scenario_packet_loss
echo ""
echo "| scenario | sync-replicas | writes acknowledged | acknowledged lost | lost found in diverged file | longest write gap ms | digests equal | verdict |"
echo "|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do echo "$row"; done
echo ""
grep -E '^partition:' "$work/steps.log" 2>/dev/null
echo "drill: $failures scenario(s) failed"
exit $((failures > 0))
