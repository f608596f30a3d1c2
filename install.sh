#!/usr/bin/env bash
# Installs sshguardd from this checkout on a Debian or Ubuntu host, shows what it will
# change on this host, then starts it.
#
#   sudo ./install.sh              install (or upgrade: restarts it when the code changed)
#   sudo ./install.sh --audit      ... with a new config in audit mode (alerts, repairs nothing)
#   sudo ./install.sh --no-start   install and enable, but do not start it now
#   sudo ./install.sh --wheelhouse DIR   with no package index: the pinned files from DIR
#   sudo ./install.sh --deb FILE   install the .deb instead (apt; no network needed)
#   sudo ./install.sh --uninstall  remove program, unit, nft table and bans (keeps config+state)
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
# other dependency is installed into the venv at the versions and hashes pinned in
# packaging/requirements.txt (pip --require-hashes): from the package index pip is
# configured with (PIP_INDEX_URL for a mirror) or, with --wheelhouse DIR, from DIR alone
# (packaging/wheelhouse.sh fills one). sshguardd itself is built with the pinned setuptools
# (--no-build-isolation), so nothing unpinned is fetched. The venv's packages take
# precedence over the distro's.
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
mode=install start=1 purge=0 audit=0 wheelhouse="" deb=""

say() { printf 'sshguardd install: %s\n' "$*"; }
die() { local code=$1; shift; printf 'sshguardd install: error: %s\n' "$*" >&2; exit "$code"; }

while [ $# -gt 0 ]; do
  case $1 in
    --no-start) start=0 ;;
    --audit) audit=1 ;;
    --wheelhouse)
      if [ $# -lt 2 ] || [ ! -d "$2" ]; then die $EX_USAGE "--wheelhouse needs a directory"; fi
      wheelhouse=$(realpath "$2"); shift ;;
    --deb)
      if [ $# -lt 2 ] || [ ! -f "$2" ]; then die $EX_USAGE "--deb needs a .deb file"; fi
      deb=$(realpath "$2"); shift ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
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

lift_stored_bans() {
  # Drop the active bans from the state store: the daemon restores stored bans into the
  # kernel when it starts, so without this a reinstall would bring back the bans that
  # uninstall lifted. The offender history stays (it only escalates later bans).
  local db=$STATE_DIR/state.db
  if [ -e "$db" ] && [ -x "$PREFIX/bin/python" ]; then
    "$PREFIX/bin/python" -I -c '
import sys, time
from sshguardd.effects.store import Store
with Store(sys.argv[1]) as s:
    with s.batch():
        for b in s.active_bans(time.time()):
            s.remove_ban(b.network)
' "$db" || say "warning: could not clear the stored bans in $db"
  fi
}

remove_program() {  # all of install.sh's files but the config, the state and the nft table
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
}

uninstall() {
  if systemd_running && [ -e "$UNIT" ]; then
    systemctl disable --now sshguardd.service || true
  fi
  lift_stored_bans
  remove_program
  # The daemon's nft table; bans end with it. No other table is touched.
  if command -v nft >/dev/null && nft list table inet sshguardd >/dev/null 2>&1; then
    nft delete table inet sshguardd
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$CONF_DIR" "$STATE_DIR" /run/sshguardd
    say "removed sshguardd, its configuration and its state"
  else
    say "removed sshguardd and lifted its bans; kept $CONF_DIR and $STATE_DIR (--purge removes them)"
  fi
}

if [ "$mode" = uninstall ]; then uninstall; exit 0; fi

config_mode() {  # the drift guard's mode in a config file: enforce, audit or off
  /usr/bin/python3 -c 'import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb")).get("drift", {})
print("off" if d.get("enabled", True) is False else d.get("mode", "enforce"))' "$1" \
    2>/dev/null || echo unknown
}
if [ "$audit" = 1 ] && [ -e "$CONF_DIR/config.toml" ]; then
  # An admin's config is never edited, and --audit must never start an enforcing daemon.
  cur=$(config_mode "$CONF_DIR/config.toml")
  case $cur in
    audit|off) ;;
    *) die $EX_USAGE "--audit: the existing $CONF_DIR/config.toml has drift.mode \"$cur\"; set mode = \"audit\" in its [drift] section (or move the file aside) and run this again" ;;
  esac
fi

write_new_config() {  # the example config (every default); with --audit, in audit mode
  install -d -m 0755 "$CONF_DIR"
  if [ "$audit" = 1 ]; then
    sed 's/^mode = "enforce"  /mode = "audit"    /' "$1" > "$CONF_DIR/config.toml.new"
    grep -q '^mode = "audit"' "$CONF_DIR/config.toml.new" \
      || die $EX_SOFTWARE "could not set audit mode in the example config"
    chmod 0644 "$CONF_DIR/config.toml.new"
    mv "$CONF_DIR/config.toml.new" "$CONF_DIR/config.toml"
  else
    install -m 0644 "$1" "$CONF_DIR/config.toml"
  fi
}

# --- Can it work here? ----------------------------------------------------------------
# shellcheck source=/dev/null
if [ -r /etc/os-release ]; then . /etc/os-release; fi
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*|*" ubuntu "*) ;;
  *) die $EX_UNAVAILABLE "this installer is for Debian and Ubuntu (found '${PRETTY_NAME:-unknown}'); on RHEL, Amazon Linux or Fedora build and install the RPM (packaging/rpm/build.sh)" ;;
esac
[ -x /usr/sbin/sshd ] || die $EX_UNAVAILABLE "OpenSSH's sshd (/usr/sbin/sshd) is not installed: there is nothing for sshguardd to protect"

# --- The .deb instead of this checkout --------------------------------------------------
if [ -n "$deb" ]; then
  [ "$start" = 1 ] || die $EX_USAGE "--no-start does not apply to --deb (the package starts the daemon)"
  if [ -e "$PREFIX" ] || [ -e "$UNIT" ]; then
    say "replacing the install.sh installation with the package (config, state and bans kept)"
    remove_program
  fi
  if [ "$audit" = 1 ] && [ ! -e "$CONF_DIR/config.toml" ]; then
    write_new_config "$src/config.example.toml"  # the package keeps a config it finds
  fi
  say "installing $deb with apt (nothing is downloaded when its dependencies are installed)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "$deb" \
    || die $EX_UNAVAILABLE "apt-get could not install $deb (see above)"
  exit 0
fi
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
fingerprint() {  # what a running daemon is made of: the venv's Python files and the unit
  {
    if [ -d "$PREFIX/lib" ]; then
      find "$PREFIX/lib" -name '*.py' -type f -print0 | sort -z | xargs -0r sha256sum
    fi
    if [ -e "$UNIT" ]; then sha256sum "$UNIT"; fi
  } | sha256sum | cut -d' ' -f1
}
old_version=$("$BIN_LINK" --version 2>/dev/null | cut -d' ' -f2 || true)
old_print=$(fingerprint)

# Build from a copy, so the checkout gets no build/ or egg-info directories.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$src/pyproject.toml" "$src/README.md" "$src/sshguardd" "$stage/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
# The pins install.sh uses: all but systemd-python (Debian's python3-systemd serves).
grep -E '^[A-Za-z]' "$src/packaging/requirements.txt" | grep -v '^systemd-python' \
  > "$stage/pins.txt"
pip_args=(-q --disable-pip-version-check --no-warn-script-location)
if [ -n "$wheelhouse" ]; then pip_args+=(--no-index --find-links "$wheelhouse"); fi

say "installing sshguardd into $PREFIX${wheelhouse:+ from $wheelhouse (no package index)}"
if [ ! -x "$PREFIX/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$PREFIX" \
    || die $EX_SOFTWARE "could not create the venv $PREFIX"
fi
"$PREFIX/bin/python" -m pip install "${pip_args[@]}" --require-hashes -r "$stage/pins.txt" \
  || die $EX_UNAVAILABLE "pip could not install the pinned dependencies (packaging/requirements.txt) into $PREFIX (see above). With no package index: fill a wheelhouse with packaging/wheelhouse.sh where there is one and pass --wheelhouse DIR, or install the .deb (--deb FILE)"
"$PREFIX/bin/python" -m pip install "${pip_args[@]}" --no-deps --no-build-isolation \
  --force-reinstall "$stage" \
  || die $EX_UNAVAILABLE "pip could not install sshguardd into $PREFIX (see above)"
"$PREFIX/bin/python" -c 'import systemd.journal, pydantic, watchdog, prometheus_client, redis' \
  || die $EX_SOFTWARE "the installed sshguardd cannot import its dependencies"
ln -sfn "$PREFIX/bin/sshguardd" "$BIN_LINK"

if [ -e "$CONF_DIR/config.toml" ]; then
  say "keeping the existing $CONF_DIR/config.toml (drift guard: $(config_mode "$CONF_DIR/config.toml"))"
else
  write_new_config "$src/config.example.toml"
  say "wrote $CONF_DIR/config.toml (every value the default, drift guard: $(config_mode "$CONF_DIR/config.toml")); edit it and run 'sshguardd check-config'"
fi
install -d -m 0700 "$STATE_DIR"
"$BIN_LINK" check-config -c "$CONF_DIR/config.toml" >/dev/null \
  || die 78 "$CONF_DIR/config.toml is not valid (see above); fix it and run $0 again"

install -D -m 0644 "$src/packaging/systemd/sshguardd.catalog" "$CATALOG"
update_catalog
install -D -m 0644 "$src/docs/man/sshguardd.8" "$MAN_DIR/man8/sshguardd.8"
install -D -m 0644 "$src/docs/man/sshguardd.toml.5" "$MAN_DIR/man5/sshguardd.toml.5"
install -D -m 0644 "$src/packaging/systemd/sshguardd.service" "$UNIT"
new_version=$("$BIN_LINK" --version | cut -d' ' -f2)
changed=0
[ "$(fingerprint)" = "$old_print" ] || changed=1
if [ -z "$old_version" ]; then
  say "installed sshguardd $new_version"
elif [ "$changed" = 1 ]; then
  say "upgraded sshguardd $old_version -> $new_version"
else
  say "reinstalled sshguardd $new_version (code and unit unchanged)"
fi

# --- What it will do, then start it -----------------------------------------------------
say "what the daemon does on this host (the same at any time: sudo sshguardd check --diff):"
"$BIN_LINK" check --diff -c "$CONF_DIR/config.toml" | sed 's/^/  /' || true
if systemd_running; then
  systemctl daemon-reload
  if [ "$start" = 1 ] && systemctl is-active --quiet sshguardd.service; then
    # An upgrade: the old code keeps running until the daemon restarts.
    if [ "$changed" = 1 ]; then
      systemctl restart sshguardd.service || die $EX_SOFTWARE "systemctl restart sshguardd failed: see 'journalctl -u sshguardd'"
      say "restarted the daemon onto the new code: $old_version -> $new_version (config kept)"
    else
      say "the running daemon already runs this code: not restarted"
    fi
    systemctl enable --quiet sshguardd.service
    "$BIN_LINK" status 2>/dev/null | sed -n '1s/^/  /p' || true
  elif [ "$start" = 1 ]; then
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
