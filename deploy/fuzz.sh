#!/usr/bin/env bash
# Fuzz walrus's decoders with libFuzzer: the RESP parser, the replication frame and message
# decoders, the WAL record decoder and segment scanner, the snapshot reader and the control
# socket's request parser, and the command layer (Sources/WalrusFuzzTargets).
#
#   deploy/fuzz.sh [SECONDS] [TARGET...]     default: 60 seconds for each of the six targets
#   WALRUS_FUZZ_JOBS=2                       targets run at once
#   WALRUS_FUZZ_MERGE=1                      add inputs that found new coverage to Tests/Fuzz/corpus
#
# Builds walrus-fuzz with -sanitize=fuzzer,address (release, .build-fuzz), runs each target from
# the committed corpus (new inputs go to a scratch directory, not the repo), and fails on any
# crash, leak, timeout (10 s for one input) or out-of-memory; the input that did it is kept in
# ./fuzz-artifacts/ and its replay command printed. Prints a table of executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(resp replication wal snapshot control commands)
jobs=${WALRUS_FUZZ_JOBS:-2}

swift build -c release --product walrus-fuzz --build-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZ -Xswiftc -use-ld=lld 2>&1 | grep -Ev "warning: Cannot export" | tail -3
binary=.build-fuzz/release/walrus-fuzz
work=$(mktemp -d /tmp/walrus-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p fuzz-artifacts

run_one() {
    local target=$1
    mkdir -p "$work/$target"
    # -rss_limit_mb: a decoder that allocates what a length field claims is a finding, not a pass.
    # SWIFT_BACKTRACE=enable=no: Swift's own crash handler reads the crashed process's memory,
    # which AddressSanitizer reports as a wild read of its own and hides the trap's message.
    if SWIFT_BACKTRACE=enable=no "$binary" "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz-artifacts/$target-" "$work/$target" "Tests/Fuzz/corpus/$target" \
        >"$work/$target.log" 2>&1; then
        echo ok >"$work/$target.status"
    else
        echo failed >"$work/$target.status"
    fi
}
export -f run_one
export binary seconds work
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'

echo
echo "### Fuzzing: ${seconds} s per target (libFuzzer + AddressSanitizer, release build)"
echo
echo "| target | executions | exec/s | corpus (committed + new) | crashes, leaks, timeouts |"
echo "|---|---|---|---|---|"
failed=0
for target in "${targets[@]}"; do
    # (A failing run prints its stats twice: at the finding and at exit.)
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$work/$target.log" | grep -oE '[0-9]+$' | tail -1 || echo 0)
    speed=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$work/$target.log" | grep -oE '[0-9]+$' | tail -1 || echo 0)
    committed=$(ls "Tests/Fuzz/corpus/$target" | wc -l)
    found=$(ls "$work/$target" | wc -l)
    if [ "$(cat "$work/$target.status")" = ok ]; then problems=0; else problems=1; failed=1; fi
    echo "| $target | $runs | $speed | $committed + $found | $problems |"
done
for target in "${targets[@]}"; do
    if [ "$(cat "$work/$target.status")" != ok ]; then
        echo
        echo "== $target FAILED; the end of its log:"
        # The sanitizer's whole report (the allocation's or the crash's stack from frame 0), then the end.
        # A Swift trap (precondition, fatalError) says what failed on the line before the signal.
        grep -E 'Fatal error|Precondition failed|Assertion failed' "$work/$target.log" | head -5 || true
        sed -n '/==[0-9]*==ERROR/,/^SUMMARY/p' "$work/$target.log" | head -120
        tail -12 "$work/$target.log"
        echo "Replay: swift build --product walrus-fuzz && .build/debug/walrus-fuzz $target fuzz-artifacts/$target-*"
    fi
done
if [ "${WALRUS_FUZZ_MERGE:-0}" = 1 ] && [ $failed = 0 ]; then
    for target in "${targets[@]}"; do
        "$binary" "$target" -merge=1 "Tests/Fuzz/corpus/$target" "$work/$target" >/dev/null 2>&1
        echo "Tests/Fuzz/corpus/$target: $(ls "Tests/Fuzz/corpus/$target" | wc -l) inputs after merging"
    done
fi
exit $failed
