#!/usr/bin/env bash
# The Sentinel failover drill: walrusd (sync-replicas 1 and 0) and redis-server 7.0
# (min-replicas-to-write 1 and 0) under the same three Sentinels, in network namespaces.
# Scenarios: SENTINEL FAILOVER under load, kill -9 of the primary, the primary cut off by
# nftables and healed. Prints one table row per scenario and server (see deploy/sentinel_drill.py).
#
#   deploy/sentinel-drill.sh [--quick] [--check] [--scenarios planned,kill,partition]
#                            [--servers walrusd:1,walrusd:0,redis:1,redis:0] [--json FILE] [--tls]
#
# --check exits 1 unless walrusd loses no acknowledged write with sync-replicas 1 in every
# scenario and in the planned failover with 0, and every run ends with equal states.
# Needs root for the namespaces (else it runs on 127.0.0.1 without the partition).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is missing: run deploy/setup.sh" >&2; exit 1; }
python3 -c "import redis" 2>/dev/null || { echo "redis-py is missing: run deploy/setup.sh" >&2; exit 1; }
deploy/build-release.sh --product walrusd 2>&1 | tail -1
deploy/build-release.sh --product walrusctl 2>&1 | tail -1
exec python3 deploy/sentinel_drill.py --walrusd "$PWD/.build/release/walrusd" --walrusctl "$PWD/.build/release/walrusctl" "$@"
