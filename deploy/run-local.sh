#!/usr/bin/env bash
# The main job for a developer: build walrus (release) and run a local primary and a follower in
# the foreground:
#   primary   ./walrus-data            clients 127.0.0.1:7379, replication 7380
#   follower  ./walrus-data-follower   clients 127.0.0.1:7381 (reads; writes get READONLY)
# Talk to them with `redis-cli -p 7379` / `-p 7381`, `walrus --connect 127.0.0.1:7379`,
# `walrusctl status|replicas|digest --socket ./walrus-data/control.sock`. Ctrl-C stops both cleanly.
# Extra arguments go to both walrusd processes (e.g. --fsync interval).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
deploy/build-release.sh
bin=$(deploy/build-release.sh --show-bin-path)
"$bin/walrusd" --data ./walrus-data --port 7379 --repl-port 7380 "$@" &
primary=$!
"$bin/walrusd" --data ./walrus-data-follower --port 7381 --repl-port 7382 --follow 127.0.0.1:7380 "$@" &
follower=$!
# Ctrl-C reaches both (same process group); a TERM to this script is passed on.
trap 'kill -TERM $primary $follower 2>/dev/null || true' TERM
cat <<TEXT
walrusd primary on 127.0.0.1:7379 (data ./walrus-data), follower on 127.0.0.1:7381 (data ./walrus-data-follower).
In another terminal:
  redis-cli -p 7379 SET hello world && redis-cli -p 7381 GET hello
  $bin/walrus --connect 127.0.0.1:7379
  $bin/walrusctl replicas --socket ./walrus-data/control.sock
  $bin/walrusctl status --socket ./walrus-data-follower/control.sock
TEXT
# When either stops, stop the other too.
wait -n $primary $follower || true
kill -TERM $primary $follower 2>/dev/null || true
wait
