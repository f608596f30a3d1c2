#!/usr/bin/env bash
# Installs everything the test suite needs on a Debian/Ubuntu machine (system packages and a
# virtualenv in .venv), then runs the whole suite as root inside a private mount and network
# namespace, so no test can reach the host's firewall or mount table. Extra arguments go to
# pytest (e.g. `scripts/test.sh -k nft`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config libsystemd-dev
  nftables iproute2 util-linux procps openssh-server openssh-client
  systemd systemd-journal-remote systemd-container debootstrap
  fail2ban python3-systemd sshguard prometheus rpm
  rpm2cpio man-db passwd coreutils shellcheck apt-utils dpkg-dev
  time redis-server redis-tools openssl
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # Peers installed only for comparison (fail2ban, sshguard, prometheus) and redis-server
  # (the fleet tests start their own) must not start on the host: a policy-rc.d that
  # says "no" keeps invoke-rc.d from starting any service.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ -d /run/systemd/system ]; then
    systemctl disable --now fail2ban.service sshguard.service prometheus.service \
      redis-server.service 2>/dev/null || true
  fi
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,fleet]'

# tests/test_container.py boots Debian in systemd-nspawn from a cached root filesystem; make
# it here, while the Debian mirror is reachable (once, about 1.5 minutes; reused afterwards).
.venv/bin/python tests/test_container.py --prepare-rootfs
# tests/test_penalties_sshd10.py runs Debian 13's sshd (OpenSSH 10.0, PerSourcePenalties)
# from another cached root filesystem, made here too (once, about a minute).
.venv/bin/python tests/test_penalties_sshd10.py --prepare-rootfs

# tests/test_rpm.py and tests/test_install.py install from a wheelhouse of the RPM's pinned
# dependencies (build/wheelhouse); fill it here, while the package index is reachable.
packaging/rpm/build.sh --wheelhouse-only
# tests/test_install_systemd.py runs install.sh in a network-less container; the one Debian
# package it would install there (python3-systemd) is fetched here.
if ! ls build/debs/python3-systemd_*.deb >/dev/null 2>&1; then
  mkdir -p build/debs && (cd build/debs && apt-get download -q python3-systemd)
fi

# The suite runs in its own mount and network namespace; tests that need more (an /etc
# overlay, a private journald, sshd) build it with sshguardd.demo.sandbox.
exec unshare --mount --net --fork -- bash -c '
  mount --make-rprivate /
  ip link set lo up
  exec .venv/bin/python -m pytest "$@"
' pytest-in-netns "$@"
