#!/usr/bin/env bash
# The test suite under ThreadSanitizer, in its own build folder (.build-tsan). The daemons the
# tests start are the TSan-built ones too; every process writes its reports to one directory,
# and any report (after Tests/tsan-suppressions.txt) fails the run. Redis's own suite is left to
# the plain run: its tests time scripts in milliseconds, which a sanitized daemon cannot keep. So
# is the Sentinel failover: three sanitized nodes and three Sentinels held a test thread for
# nearly four minutes, and the tests queued behind it ran out of their time limits.
#
#   deploy/tsan.sh [swift test arguments, e.g. --filter ReplicationTests]
set -euo pipefail
cd "$(dirname "$0")/.."
reports=$(mktemp -d /tmp/walrus-tsan.XXXXXX)
swift build --build-tests --sanitize=thread --build-path .build-tsan 2>&1 | tail -1
status=0
TSAN_OPTIONS="suppressions=$PWD/Tests/tsan-suppressions.txt log_path=$reports/report second_deadlock_stack=1" \
    swift test --skip-build --sanitize=thread --build-path .build-tsan --skip RedisSuiteTests --skip SentinelTests "$@" || status=$?
count=$(ls "$reports" | wc -l)
if [ "$count" -gt 0 ]; then
    echo "ThreadSanitizer: $count processes reported (first 200 lines of each):"
    for f in "$reports"/*; do echo "== $f"; head -200 "$f"; done
    # Last, so that a log cut to its tail still names every finding: each report's headline and
    # the first frames in walrus's own code.
    echo "ThreadSanitizer findings, by process:"
    for f in "$reports"/*; do
        echo "== $f"
        grep -E "WARNING: ThreadSanitizer|ERROR: ThreadSanitizer|SUMMARY: ThreadSanitizer" "$f" | sort | uniq -c | head -20
        grep -v /checkouts/ "$f" | grep -oE "(Sources|Tests)/[^ ]+\.swift:[0-9]+" | awk '!seen[$0]++' | head -12
    done
    status=1
fi
echo "ThreadSanitizer: $count reports; swift test exit status $status"
rm -rf "$reports"
exit $status
