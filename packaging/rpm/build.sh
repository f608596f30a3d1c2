#!/usr/bin/env bash
# Builds the sshguardd RPM from this checkout: packaging/rpm/build.sh [TOPDIR]
# (default build/rpm; the package lands in TOPDIR/RPMS/<arch>/).
# `packaging/rpm/build.sh --wheelhouse-only` only fills the wheelhouse (kept for callers
# that predate packaging/wheelhouse.sh, which it runs).
#
# It makes the spec's three sources: the source tarball, the wheelhouse of
# packaging/requirements.txt (packaging/wheelhouse.sh: $SSHGUARDD_WHEELHOUSE, default
# build/wheelhouse, downloaded once and then reused offline) and requirements.txt itself.
# The spec bundles them with packaging/bundle.sh, as the .deb does. On a distribution
# without an rpm database of its own (Debian, Ubuntu) BuildRequires cannot be checked, so
# rpmbuild gets --nodeps there; the build needs python3.11 (with venv and headers), gcc,
# pkg-config and libsystemd's headers either way.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
wheelhouse_only=0
if [ "${1:-}" = --wheelhouse-only ]; then wheelhouse_only=1; shift; fi
topdir=$(realpath -m "${1:-$root/build/rpm}")
wheelhouse=$(realpath -m "${SSHGUARDD_WHEELHOUSE:-$root/build/wheelhouse}")
python=${PYTHON311:-/usr/bin/python3.11}

"$root/packaging/wheelhouse.sh" "$wheelhouse"
[ "$wheelhouse_only" = 0 ] || exit 0

version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")
mkdir -p "$topdir"/{SOURCES,BUILD,RPMS,SRPMS,SPECS}

# 1. Source tarball: the files the package needs, as they are in the working tree.
cd "$root"
mapfile -t files < <(git ls-files -co --exclude-standard -- \
  pyproject.toml README.md CHANGELOG.md config.example.toml sshguardd packaging/systemd \
  packaging/bundle.sh packaging/requirements.txt docs | grep -v '/__pycache__/')
tar --create --gzip --file "$topdir/SOURCES/sshguardd-$version.tar.gz" \
  --transform "s,^,sshguardd-$version/," --owner=0 --group=0 --sort=name "${files[@]}"

# 2. The wheelhouse, holding exactly the pinned files (bundle.sh checks their hashes).
tar --create --file "$topdir/SOURCES/sshguardd-wheelhouse-$version.tar" \
  -C "$(dirname "$wheelhouse")" --transform "s,^$(basename "$wheelhouse"),wheelhouse," \
  "$(basename "$wheelhouse")"
cp "$root/packaging/requirements.txt" "$topdir/SOURCES/requirements.txt"

# 3. rpmbuild.
nodeps=()
if ! rpm -q rpm >/dev/null 2>&1; then nodeps=(--nodeps); fi
exec rpmbuild -bb "${nodeps[@]}" --define "_topdir $topdir" "$here/sshguardd.spec"
