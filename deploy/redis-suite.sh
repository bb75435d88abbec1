#!/usr/bin/env bash
# Runs Redis 7.0's own test files (from Debian's redis source package, fetched at test time and
# never committed) against redis-server and against walrusd, side by side, and compares them:
# every test that passes on redis-server must pass on walrusd, unless Tests/RedisSuite/exceptions.tsv
# lists it (only tests that need a data type, command or library walrus does not have belong there, each with its
# reason). Prints a table per file; exits 1 on any test that passes on Redis and fails here.
#
#   deploy/redis-suite.sh [--walrusd PATH] [--out DIR] [FILE …]     (FILE: unit/type/string …)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

walrusd=.build/debug/walrusd
out=./redis-suite
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --walrusd) walrusd=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || files=(unit/type/string unit/type/incr unit/keyspace unit/expire unit/scan unit/multi unit/protocol unit/info-command unit/scripting unit/pubsub)
exceptions="$root/Tests/RedisSuite/exceptions.tsv"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The suite: Debian's source package, cached outside the repository.
cache=${WALRUS_REDIS_SUITE:-${XDG_CACHE_HOME:-$HOME/.cache}/walrus/redis-suite}
suite=$(ls -d "$cache"/redis-7.0.* 2>/dev/null | head -1 || true)
if [ -z "$suite" ] || [ ! -x "$suite/runtest" ]; then
  command -v tclsh >/dev/null || { echo "redis-suite: tclsh is missing (apt-get install tcl; deploy/setup.sh does)"; exit 2; }
  mkdir -p "$cache"
  d=$(mktemp -d)
  mkdir -p "$d/etc" "$d/lists/partial" "$d/cache/archives/partial"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$d/etc/src.sources"
  o="-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=$d/etc -o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache"
  apt-get $o update -qq >/dev/null 2>&1
  (cd "$d" && apt-get $o source --download-only redis >/dev/null 2>&1) \
    || { echo "redis-suite: cannot download Debian's redis source package (deb-src of /etc/apt/sources.list.d/debian.sources)"; exit 2; }
  tar xzf "$d"/redis_*.orig.tar.gz -C "$cache"
  rm -rf "$d"
  suite=$(ls -d "$cache"/redis-7.0.* | head -1)
fi
echo "redis-suite: $suite"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
# SIGKILL: both servers' data is scratch, and a caller that blocks SIGTERM (a test runner's
# thread) passes that mask on, so a SIGTERM might never arrive.
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$work" --daemonize no > "$work/redis.log" 2>&1 &
pids+=($!)
walrus_port=$(free_port)
"$walrusd" --data "$work/walrus" --port "$walrus_port" --repl-port 0 > "$work/walrusd.log" 2>&1 &
pids+=($!)
for port in "$redis_port" "$walrus_port"; do
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

# unit/scripting runs every test twice, for EVAL and for Redis 7's FUNCTION/FCALL. walrus builds
# EVAL, EVALSHA and SCRIPT, not function libraries: the file's EVAL pass is run (a copy with
# `foreach is_eval {1}`, made here in the cache, never committed), on both servers alike.
eval_only() {  # FILE → the file to run
  if [ "$1" = unit/scripting ]; then
    sed 's/^foreach is_eval {0 1} {/foreach is_eval {1} {/' "$suite/tests/unit/scripting.tcl" > "$suite/tests/unit/scripting-eval.tcl"
    echo unit/scripting-eval
  else
    echo "$1"
  fi
}

tags="-slow -needs:debug -needs:repl -needs:config-maxmemory -needs:save -needs:reset -needs:config-resetstat"
run_file() {  # server port file → the log, ANSI colours removed
  (cd "$suite" && ./runtest --host 127.0.0.1 --port "$2" --single "$(eval_only "$3")" --singledb --durable --ignore-encoding \
    --ignore-digest --tags "$tags" 2>&1 || true) | sed 's/\x1b\[[0-9;]*m//g' > "$out/$1-$(basename "$3").log"
}
passed() { { grep '^\[ok\]: ' "$1" || true; } | sed -e 's/^\[ok\]: //' -e 's/ ([0-9]* ms)$//' | sort -u; }
failed() { { grep '^\[err\]: ' "$1" || true; } | sed -e 's/^\[err\]: //' -e 's/ in tests\/.*$//' | sort -u; }

status=0
table="| file | passed on redis-server | passed on walrusd | excepted (exceptions.tsv, each with its reason) | not run here by the suite | missing |"$'\n'"|---|---|---|---|---|---|"
for file in "${files[@]}"; do
  run_file redis "$redis_port" "$file"
  run_file walrusd "$walrus_port" "$file"
  name=$(basename "$file")
  passed "$out/redis-$name.log" > "$work/redis.ok"
  passed "$out/walrusd-$name.log" > "$work/walrus.ok"
  failed "$out/walrusd-$name.log" > "$work/walrus.err"
  awk -F'\t' -v f="$file" '$1 == f { print $2 }' "$exceptions" 2>/dev/null | sort -u > "$work/excepted"
  # Passes on Redis, not here, and not excepted: failed here, or never reported at all.
  comm -23 "$work/redis.ok" "$work/walrus.ok" | comm -23 - "$work/excepted" > "$work/missing"
  # Of those, the ones the suite itself chose not to run here (a condition on the server's
  # INFO, e.g. a jemalloc-only test): listed, not counted as failures.
  comm -23 "$work/missing" "$work/walrus.err" > "$work/notrun"
  comm -12 "$work/missing" "$work/walrus.err" > "$work/failed"
  mv "$work/failed" "$work/missing"
  excepted=$(comm -23 "$work/redis.ok" "$work/walrus.ok" | comm -12 - "$work/excepted" | wc -l)
  missing=$(wc -l < "$work/missing")
  notrun=$(wc -l < "$work/notrun")
  table+=$'\n'"| $file | $(wc -l < "$work/redis.ok") | $(wc -l < "$work/walrus.ok") | $excepted | $notrun | $missing |"
  sed "s|^|  note: not run against walrusd (the suite's own condition): $file: |" "$work/notrun"
  if [ "$missing" -gt 0 ]; then
    status=1
    echo "== $file: passes on redis-server, fails on walrusd:"
    while read -r test; do
      echo "  - $test"
      grep -A3 -F "[err]: $test in" "$out/walrusd-$name.log" | sed 's/^/      /' | head -4 || true
    done < "$work/missing"
  fi
  if grep -q '\[exception\]' "$out/walrusd-$name.log"; then
    status=1
    echo "== $file: the run against walrusd stopped with an exception:"
    grep -A5 '\[exception\]' "$out/walrusd-$name.log" | sed 's/^/    /'
  fi
  # An excepted test that passes here is a stale exception: say so (not a failure).
  comm -12 "$work/excepted" "$work/walrus.ok" | sed "s|^|  note: excepted but passes: $file: |"
done
echo "$table" | tee "$out/table.md"
if ! kill -0 "${pids[1]}" 2>/dev/null; then echo "redis-suite: walrusd exited during the run:"; tail -20 "$work/walrusd.log"; status=1; fi
exit $status
