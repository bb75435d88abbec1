#!/usr/bin/env bash
# Installs the Debian packages walrus builds and tests against (if any is missing).
# Needs root or sudo; safe to run again.
set -euo pipefail

packages=(
  pkg-config      # SwiftPM finds the C libraries through it
  libisal-dev     # CRC-32 (ISA-L)
  zlib1g-dev      # CRC-32 cross-check in the tests
  libedit-dev     # line editing in the walrus shell
  libsystemd-dev  # sd_notify and the journal, for walrusd
  libssl-dev      # HMAC-SHA256 (libcrypto) for replication auth
  util-linux      # setsid, for the shell's terminal tests
  iproute2        # ip netns: the failover drill's hosts
  nftables        # nft: the drill's partitions and packet loss
  redis-tools     # redis-cli and redis-benchmark: the real clients the tests drive walrusd with
  redis-server    # the peer walrus-bench measures against
  gnuplot-nox     # walrus-bench report draws its charts with it
  linux-perf      # perf stat and perf trace: walrus-bench counts both servers' fdatasync calls and times their disk calls
  python3-pip     # for redis-py below
  liblua5.1-0-dev # Lua 5.1 (what Redis embeds) for EVAL and EVALSHA
  lua-cjson-dev   # the cjson library Redis scripts use
  lua-bitop-dev   # the bit library Redis scripts use
  tcl             # Redis's own test suite (deploy/redis-suite.sh) is Tcl
  openssl         # the TLS tests, walrus-bench tls and the drill's --tls make their certificates with it
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# redis-py, the Python client the compatibility tests use.
if ! python3 -c "import redis" 2>/dev/null; then
  echo "Installing redis-py"
  python3 -m pip install --quiet redis 2>/dev/null || python3 -m pip install --quiet --break-system-packages redis
fi
