#!/usr/bin/env bash
# Installs sshguardd from this checkout on a Debian or Ubuntu host, then starts it.
#
#   sudo ./install.sh              install (or upgrade), enable and start
#   sudo ./install.sh --no-start   install and enable, but do not start it now
#   sudo ./install.sh --uninstall  remove the program, unit and nft table (keeps config+state)
#   sudo ./install.sh --uninstall --purge   ... and /etc/sshguardd and /var/lib/sshguardd
#
# What goes where:
#   /opt/sshguardd/                         a Python venv holding sshguardd and its deps
#   /usr/bin/sshguardd                      symlink to /opt/sshguardd/bin/sshguardd
#   /etc/sshguardd/config.toml              from config.example.toml, never overwritten
#   /var/lib/sshguardd/                     state (mode 0700)
#   /etc/systemd/system/sshguardd.service   the unit (systemd hosts)
#   /usr/local/lib/systemd/catalog/         the journal catalog (journalctl -x)
#   /usr/local/share/man/man{5,8}/          sshguardd(8), sshguardd.toml(5)
#
# System packages: python3 (3.11+), python3-venv, nftables, and Debian's python3-systemd,
# which the venv sees through --system-site-packages: that avoids a compiler and libsystemd
# headers on a production host, and the distro keeps the libsystemd binding patched. Every
# other dependency is installed into the venv from the Python package index (pip honours
# PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX for mirrors and offline installs), and the
# venv's packages take precedence over the distro's.
set -euo pipefail

EX_USAGE=64 EX_UNAVAILABLE=69 EX_SOFTWARE=70 EX_NOPERM=77

PREFIX=/opt/sshguardd
BIN_LINK=/usr/bin/sshguardd
CONF_DIR=/etc/sshguardd
STATE_DIR=/var/lib/sshguardd
UNIT=/etc/systemd/system/sshguardd.service
CATALOG=/usr/local/lib/systemd/catalog/sshguardd.catalog
MAN_DIR=/usr/local/share/man
PACKAGES=(python3 python3-venv python3-systemd nftables)

src=$(cd "$(dirname "$0")" && pwd)
mode=install start=1 purge=0

say() { printf 'sshguardd install: %s\n' "$*"; }
die() { local code=$1; shift; printf 'sshguardd install: error: %s\n' "$*" >&2; exit "$code"; }

while [ $# -gt 0 ]; do
  case $1 in
    --no-start) start=0 ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die $EX_USAGE "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || die $EX_NOPERM "must run as root (try: sudo $0 $*)"

systemd_running() { [ -d /run/systemd/system ]; }

update_catalog() {  # journalctl -x explains sshguardd's alerts once the catalog is indexed
  if command -v journalctl >/dev/null; then journalctl --update-catalog 2>/dev/null || true; fi
}

nft_works() {
  # A dry run of creating our table: the kernel validates it (nf_tables loaded, and we
  # hold CAP_NET_ADMIN in this network namespace) but nothing is committed.
  command -v nft >/dev/null 2>&1 || return 1
  nft list tables >/dev/null 2>&1 && nft --check add table inet sshguardd >/dev/null 2>&1
}

uninstall() {
  if systemd_running && [ -e "$UNIT" ]; then
    systemctl disable --now sshguardd.service || true
  fi
  rm -f "$UNIT"
  if systemd_running; then systemctl daemon-reload || true; fi
  rm -f "$CATALOG"
  update_catalog
  rm -f "$MAN_DIR/man8/sshguardd.8" "$MAN_DIR/man5/sshguardd.toml.5"
  if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/bin/sshguardd" ]; then
    rm -f "$BIN_LINK"
  fi
  rm -rf "$PREFIX"
  # The daemon's nft table; bans end with it. No other table is touched.
  if command -v nft >/dev/null && nft list table inet sshguardd >/dev/null 2>&1; then
    nft delete table inet sshguardd
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$CONF_DIR" "$STATE_DIR" /run/sshguardd
    say "removed sshguardd, its configuration and its state"
  else
    say "removed sshguardd; kept $CONF_DIR and $STATE_DIR (--purge removes them)"
  fi
}

if [ "$mode" = uninstall ]; then uninstall; exit 0; fi

# --- Can it work here? ----------------------------------------------------------------
# shellcheck source=/dev/null
if [ -r /etc/os-release ]; then . /etc/os-release; fi
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*|*" ubuntu "*) ;;
  *) die $EX_UNAVAILABLE "this installer is for Debian and Ubuntu (found '${PRETTY_NAME:-unknown}'); on RHEL, Amazon Linux or Fedora build and install the RPM (packaging/rpm/build.sh)" ;;
esac
[ -x /usr/sbin/sshd ] || die $EX_UNAVAILABLE "OpenSSH's sshd (/usr/sbin/sshd) is not installed: there is nothing for sshguardd to protect"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || die $EX_UNAVAILABLE "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die $EX_UNAVAILABLE "could not install ${missing[*]}"
fi

/usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die $EX_UNAVAILABLE "sshguardd needs Python 3.11 or newer; /usr/bin/python3 is $(/usr/bin/python3 -V 2>&1)"
nft_works || die $EX_UNAVAILABLE "nftables does not work here ('nft list tables' or a dry run of 'add table inet sshguardd' failed): sshguardd bans with nftables, so it needs the nf_tables kernel module and CAP_NET_ADMIN (in a container, the host's permission to manage its firewall)"
if [ -e "$BIN_LINK" ] && [ ! -L "$BIN_LINK" ]; then
  die $EX_UNAVAILABLE "$BIN_LINK exists and is not our symlink (installed from a package?); remove that first"
fi

# --- The program ------------------------------------------------------------------------
# Build from a copy, so the checkout gets no build/ or egg-info directories.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$src/pyproject.toml" "$src/README.md" "$src/sshguardd" "$stage/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

say "installing sshguardd into $PREFIX"
if [ ! -x "$PREFIX/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$PREFIX" \
    || die $EX_SOFTWARE "could not create the venv $PREFIX"
fi
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --no-warn-script-location \
  --upgrade "$stage" || die $EX_UNAVAILABLE "pip could not install sshguardd into $PREFIX (see above)"
"$PREFIX/bin/python" -c 'import systemd.journal, pydantic, watchdog, prometheus_client' \
  || die $EX_SOFTWARE "the installed sshguardd cannot import its dependencies"
ln -sfn "$PREFIX/bin/sshguardd" "$BIN_LINK"

install -d -m 0755 "$CONF_DIR"
if [ -e "$CONF_DIR/config.toml" ]; then
  say "keeping the existing $CONF_DIR/config.toml"
else
  install -m 0644 "$src/config.example.toml" "$CONF_DIR/config.toml"
  say "wrote $CONF_DIR/config.toml (every value the default; edit and run 'sshguardd check-config')"
fi
install -d -m 0700 "$STATE_DIR"
"$BIN_LINK" check-config -c "$CONF_DIR/config.toml" >/dev/null \
  || die 78 "$CONF_DIR/config.toml is not valid (see above); fix it and run $0 again"

install -D -m 0644 "$src/packaging/systemd/sshguardd.catalog" "$CATALOG"
update_catalog
install -D -m 0644 "$src/docs/man/sshguardd.8" "$MAN_DIR/man8/sshguardd.8"
install -D -m 0644 "$src/docs/man/sshguardd.toml.5" "$MAN_DIR/man5/sshguardd.toml.5"
install -D -m 0644 "$src/packaging/systemd/sshguardd.service" "$UNIT"
say "installed $("$BIN_LINK" --version)"

# --- Start it ---------------------------------------------------------------------------
cat <<EOF
sshguardd install: with the default $CONF_DIR/config.toml sshguardd enforces
  PermitRootLogin no, PasswordAuthentication no, KbdInteractiveAuthentication no,
  PermitEmptyPasswords no, and a locked root password (its lockout guard keeps password
  login while no account has SSH keys), and bans sources of repeated failed logins.
EOF
if systemd_running; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then
    systemctl enable --now sshguardd.service || die $EX_SOFTWARE "systemctl enable --now sshguardd failed: see 'journalctl -u sshguardd'"
    systemctl --no-pager --lines=5 status sshguardd.service || true
    say "sshguardd is enabled and running: 'sshguardd status', 'journalctl -u sshguardd'"
  else
    systemctl enable sshguardd.service
    say "sshguardd is enabled; start it with 'systemctl start sshguardd'"
  fi
else
  say "systemd is not PID 1 on this host, so there is no unit to enable"
  if [ "$start" = 1 ]; then
    say "running 'sshguardd run' in the foreground (Ctrl-C stops it)"
    rm -rf "$stage"; trap - EXIT
    exec "$BIN_LINK" run
  fi
  say "start it with 'sshguardd run' (under your supervisor of choice)"
fi
