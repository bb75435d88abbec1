#!/usr/bin/env bash
# The main job for a developer: build walrusd (release) and run it in the foreground on
# ./walrus-data, port 7379, control socket ./walrus-data/control.sock. Talk to it with
# `redis-cli -p 7379`, `walrus --connect 127.0.0.1:7379` or `walrusctl status`; Ctrl-C stops it
# cleanly. Extra arguments go to walrusd (e.g. --fsync interval).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
swift build -c release
bin=$(swift build -c release --show-bin-path)
echo "walrusd on 127.0.0.1:7379 (data ./walrus-data). In another terminal:"
echo "  redis-cli -p 7379 SET hello world      $bin/walrus --connect 127.0.0.1:7379      $bin/walrusctl status --socket ./walrus-data/control.sock"
exec "$bin/walrusd" --data ./walrus-data --port 7379 "$@"
