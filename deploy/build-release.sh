#!/usr/bin/env bash
# The release build every script here runs (walrusd, walrusctl, walrus, walrus-bench); arguments go
# to `swift build` (e.g. --product walrusd, --show-bin-path).
#
# -enforce-exclusivity=unchecked drops Swift's run-time exclusivity checks (the static ones stay)
# from every module, SwiftNIO's included, which only a command-line flag can reach. They cost
# ~4,800 instructions per replicated SET inside NIO's channel code (swift_beginAccess /
# swift_endAccess and their thread-local lookups). NIO's maintainers suggest the flag for servers.
# The checks still run where bugs are looked for: the debug build the tests use, the
# ThreadSanitizer build (deploy/tsan.sh) and the fuzzing build (deploy/fuzz.sh).
#
# --experimental-lto-mode=thin: link-time optimization across modules, so SwiftNIO's generic
# channel code is inlined and specialized into walrusd's handlers. callgrind, -c 1 with a follower:
# 24,450 -> 22,330 user-space instructions per durable SET (full LTO: 21,494, but its single
# whole-program step took 6.4 min for walrusd alone). Thin LTO makes a clean release build of every
# product ~7 min instead of ~3.
#
# Every release build in this repository goes through here: the same flags keep SwiftPM from
# rebuilding everything when two scripts build one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift build -c release --experimental-lto-mode=thin -Xswiftc -enforce-exclusivity=unchecked "$@"
