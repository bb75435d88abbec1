#!/usr/bin/env bash
# Installs walrusd as a system service on Debian: release binaries in /usr/local/bin, the unit in
# /etc/systemd/system, the walrus user from walrus.sysusers, and /etc/walrus/walrusd.toml (kept if
# it exists). Run from the repository as root; then: systemctl enable --now walrusd
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (it writes /usr/local/bin and /etc)"; exit 1; }

deploy/setup.sh
deploy/build-release.sh
bin=$(deploy/build-release.sh --show-bin-path)
install -m 0755 "$bin/walrusd" "$bin/walrusctl" "$bin/walrus" /usr/local/bin/

install -D -m 0644 systemd/walrus.sysusers /usr/lib/sysusers.d/walrus.conf
systemd-sysusers /usr/lib/sysusers.d/walrus.conf
install -D -m 0644 systemd/walrusd.service /etc/systemd/system/walrusd.service
if [ ! -e /etc/walrus/walrusd.toml ]; then
  install -D -m 0640 -g walrus deploy/walrusd.toml /etc/walrus/walrusd.toml
fi
systemctl daemon-reload 2>/dev/null || echo "install.sh: systemd is not running here; the unit is in place for the next boot"
echo "Installed. Start it with: systemctl enable --now walrusd   (status: walrusctl status)"
