#!/usr/bin/env bash
# Instructions per durable SET, walrusd against redis-server, counted by callgrind: far steadier
# than ops/s and CPU-µs, which move by up to 2x between hours. Run it on a quiet machine: while
# other work loads the cores, both servers' counts rise (~+1,500 per SET at -c 1).
#
#   deploy/callgrind.sh [--clients 1,50] [--follower] [--measure primary|follower] [--top 15] [--out DIR]
#
# Each server (walrusd --fsync always; redis-server appendfsync always) runs under
# `valgrind --tool=callgrind` twice, serving N and 3N SETs from redis-benchmark (-d 100 -r 100000);
# the difference divided by 2N is the user-space instructions per SET, startup and shutdown cancel
# out. With --follower each primary has a follower / replica attached (not under valgrind), so the
# primary's streaming is counted too. With --measure follower (implies --follower) the follower /
# replica runs under callgrind instead and its primary does not: the instructions a follower spends
# to receive, log, fdatasync, apply and ACK one replicated SET (the count ends when the follower has
# caught up with its primary's offset, so every SET is in it). Kernel instructions are not counted
# (callgrind cannot), so compare these with the CPU-µs rows of `walrus-bench report`, which
# include the system calls.
#
# Two things valgrind 3.19 (Debian 12) needs, done here: walrusd's debug info is stripped from a
# copy (valgrind cannot read Swift 6's DWARF 5 and gives up), and a one-line preload replaces
# sigsuspend with pause (valgrind crashes on the rt_sigsuspend that libdispatch's dispatch_main
# makes on walrusd's main thread; that thread only waits there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
clients=1,50; follower=0; measure=primary; top=15; out=${TMPDIR:-/tmp}/walrus-callgrind
while [ $# -gt 0 ]; do
    case $1 in
        --clients) clients=$2; shift 2 ;;
        --follower) follower=1; shift ;;
        --measure)
            case ${2:-} in primary) measure=primary ;; follower) measure=follower; follower=1 ;;
                *) echo "callgrind.sh: --measure takes primary or follower, not '${2:-}'" >&2; exit 2 ;; esac
            shift 2 ;;
        --top) top=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "callgrind.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
# Absolute: the clean-up below matches processes by this path.
out=$(realpath -m "$out")
for tool in valgrind callgrind_annotate redis-server redis-benchmark redis-cli python3; do
    command -v $tool > /dev/null || { echo "callgrind.sh: '$tool' is missing; apt-get install valgrind redis-server redis-tools python3" >&2; exit 2; }
done
cc=$(command -v cc || command -v clang || command -v gcc) || { echo "callgrind.sh: no C compiler (cc, clang or gcc) for the preload" >&2; exit 2; }

"$here/build-release.sh" --product walrusd 2>&1 | tail -1
bin=$("$here/build-release.sh" --show-bin-path)
rm -rf "$out"; mkdir -p "$out"
strip --strip-debug -o "$out/walrusd" "$bin/walrusd"
printf '#include <signal.h>\n#include <unistd.h>\nint sigsuspend(const sigset_t *m) { (void)m; pause(); return -1; }\n' > "$out/shim.c"
$cc -shared -fPIC -O2 "$out/shim.c" -o "$out/shim.so"

# Every server this script starts has $out in its command line: one pkill stops what is left
# (run() works in a subshell, so it cannot hand process ids back).
cleanup() { pkill -9 -f -- "$out/" 2> /dev/null || true; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
waitping() {
    for _ in $(seq 1 240); do
        redis-cli -p "$1" PING 2> /dev/null | grep -q PONG && return 0
        sleep 0.5
    done
    echo "callgrind.sh: nothing answered PING on port $1 within 120 s (see $2)" >&2; cleanup; exit 1
}

# offset PORT FIELD: a field of INFO replication (master_repl_offset on a primary, slave_repl_offset on a follower).
offset() { redis-cli -p "$1" INFO replication 2> /dev/null | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }

# run_follower KIND N C: the follower / replica under callgrind, its primary plain, N SETs from C
# clients on the primary; prints the follower's total instructions once it has every SET.
run_follower() {
    local kind=$1 n=$2 c=$3 dir="$out/$1-$2-c$3" port rport fport
    mkdir -p "$dir/primary"; port=$(freeport); rport=$(freeport); fport=$(freeport)
    if [ "$kind" = redis ]; then
        redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/primary" --save "" --appendonly yes \
            --appendfsync always --logfile "" > "$dir/primary.log" 2>&1 &
        waitping "$port" "$dir/primary.log"
        timeout -s KILL 600 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
            redis-server --port "$fport" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly yes \
            --appendfsync always --logfile "" --replicaof 127.0.0.1 "$port" > "$dir/valgrind.log" 2>&1 &
    else
        "$bin/walrusd" --data "$dir/primary" --port "$port" --repl-port "$rport" --control-socket "$dir/p.sock" \
            --fsync always --log-level warning > "$dir/primary.log" 2>&1 &
        waitping "$port" "$dir/primary.log"
        LD_PRELOAD="$out/shim.so" timeout -s KILL 600 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
            "$out/walrusd" --data "$dir/data" --port "$fport" --repl-port "$(freeport)" --control-socket "$dir/c.sock" \
            --fsync always --log-level warning --follow "127.0.0.1:$rport" > "$dir/valgrind.log" 2>&1 &
    fi
    waitping "$fport" "$dir/valgrind.log"
    for _ in $(seq 1 240); do
        [ "$(redis-cli -p "$fport" INFO replication 2> /dev/null | tr -d '\r' | grep -c '^master_link_status:up')" = 1 ] && break
        sleep 0.5
    done
    sleep 2
    timeout 300 redis-benchmark -p "$port" -n "$n" -c "$c" -d 100 -r 100000 -t set -q > "$dir/bench.txt" 2>&1 \
        || { echo "callgrind.sh: redis-benchmark against $kind's primary failed or took over 300 s (see $dir)" >&2; cleanup; exit 1; }
    # The follower under valgrind runs behind: wait until it has what the primary has.
    local want; want=$(offset "$port" master_repl_offset)
    caught() { local got; got=$(offset "$fport" slave_repl_offset); [ -n "$got" ] && [ -n "$want" ] && [ "$got" -ge "$want" ]; }
    for _ in $(seq 1 600); do caught && break; sleep 0.5; done
    caught \
        || { echo "callgrind.sh: $kind's follower did not reach offset $want within 300 s (see $dir)" >&2; cleanup; exit 1; }
    sleep 1
    local served; served=$(pgrep -f "valgrind.bin.*$dir/" | head -1)
    kill -TERM "$served"
    for _ in $(seq 1 120); do kill -0 "$served" 2> /dev/null || break; sleep 0.5; done
    pkill -9 -f -- "$dir/primary" 2> /dev/null || true
    awk '/^(summary|totals):/ { print $2; exit }' "$dir/cg.out"
}

# run KIND N C: one server under callgrind serving N SETs from C clients; prints its total instructions.
run() {
    [ $measure = follower ] && { run_follower "$@"; return; }
    local kind=$1 n=$2 c=$3 dir="$out/$1-$2-c$3" port rport fport
    mkdir -p "$dir"; port=$(freeport); rport=$(freeport)
    if [ "$kind" = redis ]; then
        timeout -s KILL 600 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
            redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly yes \
            --appendfsync always --logfile "" > "$dir/valgrind.log" 2>&1 &
    else
        LD_PRELOAD="$out/shim.so" timeout -s KILL 600 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
            "$out/walrusd" --data "$dir/data" --port "$port" --repl-port "$rport" --control-socket "$dir/c.sock" \
            --fsync always --log-level warning > "$dir/valgrind.log" 2>&1 &
    fi
    waitping "$port" "$dir/valgrind.log"
    if [ $follower = 1 ]; then
        fport=$(freeport)
        if [ "$kind" = redis ]; then
            redis-server --port "$fport" --bind 127.0.0.1 --dir "$dir" --dbfilename f.rdb --appenddirname f-aof --save "" \
                --appendonly yes --appendfsync always --logfile "" --replicaof 127.0.0.1 "$port" > /dev/null &
        else
            "$bin/walrusd" --data "$dir/follower" --port "$fport" --repl-port "$(freeport)" --control-socket "$dir/f.sock" \
                --fsync always --log-level warning --follow "127.0.0.1:$rport" > "$dir/follower.log" 2>&1 &
        fi
        local fpid=$!
        waitping "$fport" "$dir/follower.log"
        sleep 2
    fi
    timeout 300 redis-benchmark -p "$port" -n "$n" -c "$c" -d 100 -r 100000 -t set -q > "$dir/bench.txt" 2>&1 \
        || { echo "callgrind.sh: redis-benchmark against $kind failed or took over 300 s (see $dir)" >&2; cleanup; exit 1; }
    # valgrind.bin is the process that serves; ask it to stop cleanly so callgrind writes its counts.
    local served; served=$(pgrep -f "valgrind.bin.*$dir/" | head -1)
    kill -TERM "$served"
    for _ in $(seq 1 120); do kill -0 "$served" 2> /dev/null || break; sleep 0.5; done
    [ $follower = 1 ] && kill -9 "$fpid" 2> /dev/null || true
    awk '/^(summary|totals):/ { print $2; exit }' "$dir/cg.out"
}

base=3000
peer=redis-server; [ $measure = follower ] && peer="redis-server replica"
printf '| SET -d 100, fsync always%s | clients | walrusd instructions/SET | %s | ratio |\n|---|---|---|---|---|\n' \
    "$([ $follower = 1 ] && echo ', follower attached')" "$peer"
for c in ${clients//,/ }; do
    n1=$base; [ "$c" -gt 1 ] && n1=$((base * 3))
    n2=$((n1 * 3))
    w1=$(run walrusd $n1 "$c"); w2=$(run walrusd $n2 "$c")
    r1=$(run redis $n1 "$c"); r2=$(run redis $n2 "$c")
    python3 - "$measure" "$c" "$n1" "$n2" "$w1" "$w2" "$r1" "$r2" << 'EOF'
import sys
side = sys.argv[1]
c, n1, n2, w1, w2, r1, r2 = map(int, sys.argv[2:])
w, r = (w2 - w1) / (n2 - n1), (r2 - r1) / (n2 - n1)
print(f"| {side} | -c {c} | {w:,.0f} | {r:,.0f} | {w / r:.2f}x |")
EOF
done

# Where walrusd's instructions go, per SET (self cost), from the last client count's pair of runs.
echo
echo "walrusd ($measure), -c ${c}: self instructions per SET by function (top $top)"
python3 - "$out/walrusd-$n1-c$c/cg.out" "$out/walrusd-$n2-c$c/cg.out" $((n2 - n1)) "$top" << 'EOF'
import collections, re, subprocess, sys
def load(path):
    text = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True).stdout
    costs = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(?:\S+:)?(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r" \[[^]]*\]$", "", m.group(2).strip())
            costs[name] += int(m.group(1).replace(",", ""))
    return costs
a, b = load(sys.argv[1]), load(sys.argv[2]); n = int(sys.argv[3])
rows = sorted(b, key=lambda k: a[k] - b[k])[: int(sys.argv[4])]
for name in rows:
    demangled = name
    if name.startswith("$s"):
        demangled = subprocess.run(["swift", "demangle", "--simplified", "--compact", name], capture_output=True, text=True).stdout.strip() or name
    print(f"{(b[name] - a[name]) / n:8,.0f}  {demangled[:140]}")
EOF
echo "(callgrind files: $out)"
