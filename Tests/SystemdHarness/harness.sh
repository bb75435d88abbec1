#!/usr/bin/env bash
# Runs walrusd's own unit under a real systemd user manager and a real journald, inside a private
# mount namespace (see shared notes: linux-test-harness.md), and checks what the daemon tells them.
# Usage (as root): unshare -m --propagation private bash harness.sh BIN_DIR UNIT_DIR WORK_DIR
# Prints "check NAME ok|FAIL detail" lines and exits non-zero if any check failed.
set -uo pipefail
bin_dir=$1; unit_dir=$2; work=$3
failures=0
check() { # name, condition-result (0 ok), detail
  if [ "$2" -eq 0 ]; then echo "check $1 ok $3"; else echo "check $1 FAIL $3"; failures=$((failures+1)); fi
}
wait_for() { # seconds, command...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.1; done
}

mount --make-rprivate /
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system /run/systemd/journal /run/systemd/journald.conf.d
I=/run/systemd/inaccessible; mkdir -p $I
mkdir -m 0000 $I/dir; install -m 0000 /dev/null $I/reg; mkfifo -m 0000 $I/fifo
mknod -m 0000 $I/chr c 0 0; mknod -m 0000 $I/blk b 0 0
python3 -c "import socket,os; s=socket.socket(socket.AF_UNIX); s.bind('$I/sock'); os.chmod('$I/sock',0)"
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\n' \
  > /run/systemd/journald.conf.d/test.conf
mount -t tmpfs tmpfs /run/log; mkdir -p /run/log/journal
mkdir -p /var/log/journal; mount -t tmpfs tmpfs /var/log/journal
/lib/systemd/systemd-journald & JPID=$!
wait_for 10 test -S /run/systemd/journal/socket || { echo "check journald FAIL no socket"; exit 1; }
mkdir -p /run/user/0; mount -t tmpfs tmpfs /run/user/0
export XDG_RUNTIME_DIR=/run/user/0 HOME=$work/home
mkdir -p $HOME/.config/systemd/user
# Under deploy/tsan.sh the binaries are TSan builds. The units cannot see /tmp (PrivateTmp) nor
# write outside their directories, so they get a suppressions file next to the binary and report
# to stderr, i.e. the journal (checked at the end); the manager passes its environment on.
tsan_suppressions=""
if [ -n "${TSAN_OPTIONS:-}" ]; then
  tsan_suppressions=$(echo "$TSAN_OPTIONS" | tr ' :' '\n\n' | sed -n 's/^suppressions=//p')
  export TSAN_OPTIONS="suppressions=/usr/local/bin/tsan-suppressions.txt"
fi
/lib/systemd/systemd --user --log-target=journal & MPID=$!
cleanup() { systemctl --user stop walrusd.service walrusd@follower.service >/dev/null 2>&1; kill $MPID $JPID 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT
wait_for 20 test -S $XDG_RUNTIME_DIR/systemd/private || { echo "check manager FAIL no private socket"; exit 1; }

# The project's unit, pointed at the built binary, plus only the test-sandbox drop-ins.
# PrivateTmp= would hide a binary under /tmp, so it goes to /usr/local/bin — on a tmpfs that only
# this mount namespace sees, so the host is not touched.
mount -t tmpfs tmpfs /usr/local/bin
install -m 0755 "$bin_dir/walrusd" /usr/local/bin/walrusd
if [ -n "$tsan_suppressions" ]; then cp "$tsan_suppressions" /usr/local/bin/tsan-suppressions.txt; else touch /usr/local/bin/tsan-suppressions.txt; fi
cp "$unit_dir/walrusd.service" "$unit_dir/walrusd@.service" $HOME/.config/systemd/user/
# ConfigurationDirectory= of a user unit is ~/.config/walrus.
mkdir -p $HOME/.config/walrus
port=${WALRUS_TEST_PORT:-17379}
repl_port=${WALRUS_TEST_REPL_PORT:-17380}
follower_port=${WALRUS_TEST_FOLLOWER_PORT:-17381}
sed -e "s/^port = .*/port = $port/" -e 's/^log-level = .*/log-level = "info"/' \
  "$unit_dir/../deploy/walrusd.toml" > $HOME/.config/walrus/walrusd.toml
echo "repl-port = $repl_port" >> $HOME/.config/walrus/walrusd.toml
# The follower instance (walrusd@follower reads follower.toml): its own ports, following the primary.
printf 'port = %s\nrepl-port = %s\nfollow = "127.0.0.1:%s"\nlog-level = "info"\n' \
  "$follower_port" "${WALRUS_TEST_FOLLOWER_REPL_PORT:-17382}" "$repl_port" > $HOME/.config/walrus/follower.toml
mkdir -p $HOME/.config/systemd/user/walrusd.service.d $HOME/.config/systemd/user/walrusd@.service.d
cat > $HOME/.config/systemd/user/walrusd.service.d/test-sandbox.conf <<DROPIN
[Service]
# A user manager runs services as its own user (root here) and cannot switch to walrus.
User=
Group=
# Under a user manager these hide the notify and journal sockets; bind them back in. The user
# manager's notify socket lives under /run/user, which ProtectHome=yes makes inaccessible;
# ProtectHome=tmpfs hides the same directories but lets BindPaths= show the socket.
ProtectHome=tmpfs
BindPaths=%t/systemd/notify
BindPaths=/run/systemd/journal/socket
BindPaths=/run/systemd/journal/stdout
${WALRUS_EXTRA_DROPIN:-}
DROPIN
cp $HOME/.config/systemd/user/walrusd.service.d/test-sandbox.conf $HOME/.config/systemd/user/walrusd@.service.d/
systemctl --user daemon-reload

# The production unit itself: hardening score (exposure ≤ 1.5 is the project's bar).
exposure=$(systemd-analyze security --offline=true "$unit_dir/walrusd.service" 2>/dev/null | sed -n 's/.*Overall exposure level for walrusd.service: \([0-9.]*\).*/\1/p')
check security-exposure $(python3 -c "import sys; sys.exit(0 if '$exposure' and float('$exposure') <= 1.5 else 1)"; echo $?) "exposure=$exposure"

verify_err=$(systemd-analyze --user verify $HOME/.config/systemd/user/walrusd.service 2>&1 >/dev/null)
check unit-verifies $([ -z "$verify_err" ]; echo $?) "${verify_err:0:200}"
mkdir -p $work/instance && cp "$unit_dir/walrusd@.service" $work/instance/walrusd@follower.service
verify_err=$(cd $work/instance && systemd-analyze --user verify ./walrusd@follower.service 2>&1 >/dev/null)
check template-verifies $([ -z "$verify_err" ]; echo $?) "${verify_err:0:200}"

# 1. start returns only after READY=1, and the status line names the role.
start=$(date +%s%N)
systemctl --user start walrusd.service; rc=$?
state=$(systemctl --user show -p ActiveState --value walrusd.service)
check start-waits-for-ready $([ $rc -eq 0 ] && [ "$state" = active ]; echo $?) "rc=$rc state=$state"
if [ "$state" != active ]; then
  systemctl --user status walrusd.service --no-pager | head -20
  journalctl --no-pager -D /run/log/journal -u walrusd.service | tail -20
  journalctl --no-pager -D /run/log/journal | grep -iE "notif|walrusd" | grep -v "walrusd\[" | tail -10
  echo "checks failed: start"; exit 1
fi
status=$(systemctl --user show -p StatusText --value walrusd.service)
check status-shows-role $([[ "$status" == primary* ]]; echo $?) "'$status'"
redis-cli -p $port PING >/dev/null
for i in $(seq 1 200); do echo "SET key$i value$i"; done | redis-cli -p $port >/dev/null
check writes-acknowledged $([ "$(redis-cli -p $port DBSIZE)" = 200 ]; echo $?) "dbsize=$(redis-cli -p $port DBSIZE)"

# 2. journal entries come over the native protocol with fields (wait until journald has them).
wait_for 10 bash -c "journalctl --no-pager -D /run/log/journal -o json -u walrusd.service 2>/dev/null | grep -q WALRUS_SERVER_PORT"
json=$(journalctl --no-pager -D /run/log/journal -o json -u walrusd.service 2>/dev/null)
check journal-has-walrus-fields $(echo "$json" | grep -q '"WALRUS_SERVER_PORT"'; echo $?) ""
check journal-has-code-file $(echo "$json" | grep -q '"CODE_FILE"'; echo $?) ""
check journal-native-transport $(echo "$json" | grep '"WALRUS_SERVER_PORT"' | grep -q '"_TRANSPORT":"journal"'; echo $?) ""

# 3. a stopped (SIGSTOP) daemon misses its watchdog pings, is killed and restarted, with its data.
before=$(systemctl --user show -p NRestarts --value walrusd.service)
pid=$(systemctl --user show -p MainPID --value walrusd.service)
# Never signal pid 0 (the whole process group, this script included).
[ "${pid:-0}" -gt 1 ] && kill -STOP "$pid"
wait_for 60 bash -c "[ \$(systemctl --user show -p NRestarts --value walrusd.service) -gt $before ] && [ \$(systemctl --user show -p ActiveState --value walrusd.service) = active ]"
after=$(systemctl --user show -p NRestarts --value walrusd.service)
check watchdog-restarts $([ "$after" -gt "$before" ]; echo $?) "NRestarts $before -> $after"
check data-after-watchdog $([ "$(redis-cli -p $port GET key200)" = value200 ]; echo $?) "key200=$(redis-cli -p $port GET key200)"

# 4. reload (RELOADING=1 … READY=1) re-reads the config file: the log level changes live.
sed -i 's/^log-level = .*/log-level = "debug"/' $HOME/.config/walrus/walrusd.toml
systemctl --user reload walrusd.service; rc=$?
# ExecReload only sends SIGHUP (systemd 252 has no Type=notify-reload): wait for walrusd to apply it.
wait_for 15 bash -c "'$bin_dir/walrusctl' log-level --socket $XDG_RUNTIME_DIR/walrus/control.sock 2>&1 | grep -q debug"
level=$("$bin_dir/walrusctl" log-level --socket $XDG_RUNTIME_DIR/walrus/control.sock 2>&1)
check reload $([ $rc -eq 0 ] && [ "$(systemctl --user show -p ActiveState --value walrusd.service)" = active ] && [[ "$level" == *debug* ]]; echo $?) "rc=$rc walrusctl: $level"

# 5. stop drains and ends with Result=success; a later start recovers everything.
systemctl --user stop walrusd.service
result=$(systemctl --user show -p Result --value walrusd.service)
check stop-result-success $([ "$result" = success ]; echo $?) "Result=$result"
systemctl --user start walrusd.service
check data-after-restart $([ "$(redis-cli -p $port DBSIZE)" = 200 ]; echo $?) "dbsize=$(redis-cli -p $port DBSIZE)"

# 7. a follower unit (the template's "follower" instance) streams from the primary: both units
#    active, the follower has the data, refuses writes, and its StatusText shows its link and lag.
systemctl --user start walrusd@follower.service; rc=$?
wait_for 20 bash -c "[ \"\$(redis-cli -p $follower_port DBSIZE 2>/dev/null)\" = 200 ]"
states="$(systemctl --user show -p ActiveState --value walrusd.service) $(systemctl --user show -p ActiveState --value walrusd@follower.service)"
check follower-unit-active $([ $rc -eq 0 ] && [ "$states" = "active active" ]; echo $?) "rc=$rc states=$states dbsize=$(redis-cli -p $follower_port DBSIZE)"
redis-cli -p $port SET after-follower yes >/dev/null
wait_for 15 bash -c "systemctl --user show -p StatusText --value walrusd@follower.service | grep -q 'link up'"
fstatus=$(systemctl --user show -p StatusText --value walrusd@follower.service)
if [[ "$fstatus" != *"link up"* ]]; then
  journalctl --no-pager -D /run/log/journal -u walrusd@follower.service -o verbose | grep -E "MESSAGE=|WALRUS_REPL" | tail -8
  journalctl --no-pager -D /run/log/journal -u walrusd.service | grep -i repl | tail -5
fi
check follower-status-shows-link $([[ "$fstatus" == "follower of 127.0.0.1:$repl_port · link up"* && "$fstatus" == *" lag "* ]]; echo $?) "'$fstatus'"
readonly_reply=$(redis-cli -p $follower_port SET x 1)
check follower-refuses-writes $([ "$readonly_reply" = "READONLY You can't write against a read only replica." ]; echo $?) "'$readonly_reply'"
wait_for 10 bash -c "systemctl --user show -p StatusText --value walrusd.service | grep -q '1 follower'"
pstatus=$(systemctl --user show -p StatusText --value walrusd.service)
check primary-status-shows-follower $([[ "$pstatus" == *"1 follower, max lag"* ]]; echo $?) "'$pstatus'"
systemctl --user stop walrusd@follower.service

# 6. a recovery that outlasts TimeoutStartSec keeps the unit activating by extending the timeout.
systemctl --user stop walrusd.service
# StateDirectory= of a user unit is under ~/.config (systemd 252) or ~/.local/state (newer): find it.
data=$(dirname "$(find "$HOME" -name LOCK -path "*/walrus/LOCK" | head -1)")
# Append a big log in the original's record format (Python and zlib, independent of walrus).
python3 - "$data" ${WALRUS_TEST_RECOVERY_RECORDS:-2000000} <<'PY'
import os, struct, sys, zlib
directory, count = sys.argv[1], int(sys.argv[2])
names = sorted((n for n in os.listdir(directory) if n.startswith("wal-") and n.endswith(".log")), key=lambda n: int(n[4:-4]))
number = int(names[-1][4:-4]) + 1 if names else 1
value = b"v" * 100
with open(os.path.join(directory, "wal-%04d.log" % number), "wb") as out:
    chunk = []
    for i in range(count):
        key = b"bulk:%012d" % i
        data = struct.pack(">BII", 1, len(key), len(value)) + key + value
        chunk.append(struct.pack(">III", 0xCAFEBABE, len(data), zlib.crc32(data)) + data)
        if len(chunk) == 10000:
            out.write(b"".join(chunk)); chunk = []
    out.write(b"".join(chunk))
PY
mkdir -p $HOME/.config/systemd/user/walrusd.service.d
printf '[Service]\nTimeoutStartSec=2\n' > $HOME/.config/systemd/user/walrusd.service.d/short-timeout.conf
systemctl --user daemon-reload
started_ns=$(date +%s%N)
systemctl --user start walrusd.service; rc=$?
elapsed_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
state=$(systemctl --user show -p ActiveState --value walrusd.service)
extended=$(journalctl --no-pager -D /run/log/journal -o json -u walrusd.service | grep -c '"recovery.percent"\|"WALRUS_RECOVERY_PERCENT"')
keys=$(redis-cli -p $port DBSIZE)
check slow-recovery-extends-timeout $([ $rc -eq 0 ] && [ "$state" = active ] && [ $elapsed_ms -gt 2000 ]; echo $?) \
  "rc=$rc state=$state start took ${elapsed_ms} ms against TimeoutStartSec=2s, keys=$keys, progress entries=$extended"
rm -f $HOME/.config/systemd/user/walrusd.service.d/short-timeout.conf
systemctl --user daemon-reload

if [ -n "${TSAN_OPTIONS:-}" ]; then
  races=$(journalctl --no-pager -D /run/log/journal | grep -c "WARNING: ThreadSanitizer")
  check no-thread-sanitizer-reports $([ "$races" -eq 0 ]; echo $?) "$races reports in the journal"
  [ "$races" -eq 0 ] || journalctl --no-pager -D /run/log/journal | grep -A40 "WARNING: ThreadSanitizer" | head -120
fi

echo "checks failed: $failures"
exit $failures
