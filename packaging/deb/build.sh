#!/usr/bin/env bash
# Builds the sshguardd .deb from this checkout: packaging/deb/build.sh [OUTDIR]
# (default build/deb; the package is OUTDIR/sshguardd_<version>-1_<arch>.deb).
#
# Like the RPM it bundles the Python dependencies pinned in packaging/requirements.txt,
# hash-checked, in a private directory (/usr/lib/sshguardd), built by packaging/bundle.sh
# from the wheelhouse (packaging/wheelhouse.sh fills it; offline once filled). So the
# package needs nothing from any index: `apt install ./sshguardd_*.deb` works on a host with
# no network, given python3.11, nftables, openssh-server and systemd (all in Debian 12).
# The bundled wheels are CPython 3.11 builds, hence `Depends: python3.11`. Built with
# dpkg-deb alone (no debhelper); needs what bundle.sh needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(realpath -m "${1:-$root/build/deb}")
wheelhouse=$(realpath -m "${SSHGUARDD_WHEELHOUSE:-$root/build/wheelhouse}")
python=${PYTHON311:-/usr/bin/python3.11}
version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")
debversion=${SSHGUARDD_DEB_VERSION:-$version-1}
arch=$(dpkg --print-architecture)

"$root/packaging/wheelhouse.sh" "$wheelhouse"
mkdir -p "$out"
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
chmod 0755 "$tree"

# 1. The program and its bundled dependencies.
"$root/packaging/bundle.sh" "$root" "$wheelhouse" "$tree/usr/lib/sshguardd" "$tree"
install -d "$tree/usr/bin"
cat > "$tree/usr/bin/sshguardd" <<'LAUNCHER'
#!/usr/bin/python3.11 -I
# sshguardd (.deb): the package and its bundled dependencies live in /usr/lib/sshguardd.
import sys
sys.path.insert(0, "/usr/lib/sshguardd")
from sshguardd.cli import main
sys.exit(main())
LAUNCHER
chmod 0755 "$tree/usr/bin/sshguardd"

# 2. Unit, catalog, example config, man pages, docs.
install -D -m 0644 "$root/packaging/systemd/sshguardd.service" \
  "$tree/usr/lib/systemd/system/sshguardd.service"
install -D -m 0644 "$root/packaging/systemd/sshguardd.catalog" \
  "$tree/usr/lib/systemd/catalog/sshguardd.catalog"
install -D -m 0644 "$root/config.example.toml" "$tree/usr/share/sshguardd/config.example.toml"
for page in man8/sshguardd.8 man5/sshguardd.toml.5; do
  install -D -m 0644 "$root/docs/man/$(basename "$page")" "$tree/usr/share/man/$page"
  gzip -9n "$tree/usr/share/man/$page"
done
install -d "$tree/usr/share/doc/sshguardd"
install -m 0644 "$root/README.md" "$tree/usr/share/doc/sshguardd/README.md"
gzip -9nc "$root/CHANGELOG.md" > "$tree/usr/share/doc/sshguardd/changelog.gz"
printf 'sshguardd\nLicense: MIT\n' > "$tree/usr/share/doc/sshguardd/copyright"
find "$tree/usr/share" -type f -exec chmod 0644 {} +

# 3. Control file and maintainer scripts.
install -d "$tree/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
cat > "$tree/DEBIAN/control" <<CONTROL
Package: sshguardd
Version: $debversion
Architecture: $arch
Maintainer: sshguardd developers <sshguardd@localhost>
Installed-Size: $size
Depends: python3.11, nftables, openssh-server, systemd, libsystemd0
Section: admin
Priority: optional
Homepage: https://github.com/sshguardd/sshguardd
Description: keeps SSH hardened: reverts sshd_config/shadow drift, bans brute force
 sshguardd watches /etc/ssh/sshd_config (with its Include'd drop-ins) and /etc/shadow
 and reverts a protected setting that drifted (root login allowed, password
 authentication enabled, root's password unlocked), validating with sshd -t before
 restarting sshd. It follows sshd's failed logins in the journal and bans offending
 addresses in an nftables set whose elements the kernel expires.
 .
 The Python dependencies (pydantic, watchdog, prometheus-client, systemd-python, and
 redis with hiredis for fleet mode) are bundled in /usr/lib/sshguardd at the versions
 pinned by the project.
CONTROL
for script in postinst prerm postrm; do
  sed "s/@VERSION@/$debversion/" "$here/$script" > "$tree/DEBIAN/$script"
  chmod 0755 "$tree/DEBIAN/$script"
done

deb="$out/sshguardd_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
echo "$deb"
