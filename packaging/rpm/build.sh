#!/usr/bin/env bash
# Builds the sshguardd RPM from this checkout: packaging/rpm/build.sh [TOPDIR]
# (default build/rpm; the package lands in TOPDIR/RPMS/<arch>/).
# `packaging/rpm/build.sh --wheelhouse-only` only fills the wheelhouse (tests use it as an
# offline package index).
#
# It makes the spec's three sources: the source tarball, a wheelhouse holding the pinned
# dependencies of vendor.txt (downloaded once with pip into $SSHGUARDD_WHEELHOUSE, default
# build/wheelhouse, then reused offline) and vendor.txt itself. On a distribution without
# an rpm database of its own (Debian, Ubuntu) BuildRequires cannot be checked, so rpmbuild
# gets --nodeps there; the build needs python3.11 (with venv and headers), gcc, pkg-config
# and libsystemd's headers either way.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
wheelhouse_only=0
if [ "${1:-}" = --wheelhouse-only ]; then wheelhouse_only=1; shift; fi
topdir=$(realpath -m "${1:-$root/build/rpm}")
wheelhouse=$(realpath -m "${SSHGUARDD_WHEELHOUSE:-$root/build/wheelhouse}")
python=${PYTHON311:-/usr/bin/python3.11}

version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")
mkdir -p "$wheelhouse"
[ "$wheelhouse_only" = 1 ] || mkdir -p "$topdir"/{SOURCES,BUILD,RPMS,SRPMS,SPECS}

# 1. Source tarball: the files the package needs, as they are in the working tree.
cd "$root"
mapfile -t files < <(git ls-files -co --exclude-standard -- \
  pyproject.toml README.md CHANGELOG.md config.example.toml sshguardd packaging/systemd \
  docs | grep -v '/__pycache__/')
[ "$wheelhouse_only" = 1 ] || tar --create --gzip --file "$topdir/SOURCES/sshguardd-$version.tar.gz" \
  --transform "s,^,sshguardd-$version/," --owner=0 --group=0 --sort=name "${files[@]}"

# 2. Wheelhouse: exactly vendor.txt, plus setuptools/wheel to build sshguardd and
#    systemd-python (which has no wheels on PyPI: its sdist is compiled by the spec).
binary_reqs=$(grep -E '^[A-Za-z]' "$here/vendor.txt" | grep -v '^systemd-python')
source_reqs=$(grep -E '^systemd-python' "$here/vendor.txt")
build_reqs=("setuptools>=64" "wheel")
# pip for python3.11: the interpreter's own, or (Debian without python3-pip) a venv's.
pip_python=$python
if ! "$python" -m pip --version >/dev/null 2>&1; then
  [ -x "$root/build/pip-env/bin/python" ] || "$python" -m venv "$root/build/pip-env"
  pip_python=$root/build/pip-env/bin/python
fi
fetch() {  # offline from the wheelhouse when it already has everything, else from the index
  pip_dl=("$pip_python" -m pip download --disable-pip-version-check -q --dest "$wheelhouse" "$@")
  "${pip_dl[@]}" --no-index --find-links "$wheelhouse" >/dev/null 2>&1 || "${pip_dl[@]}"
}
# shellcheck disable=SC2086
fetch --no-deps --only-binary=:all: $binary_reqs
fetch --only-binary=:all: "${build_reqs[@]}"  # with their own dependencies
fetch --no-deps --no-binary=:all: "$source_reqs"
[ "$wheelhouse_only" = 0 ] || exit 0
tar --create --file "$topdir/SOURCES/sshguardd-wheelhouse-$version.tar" \
  -C "$(dirname "$wheelhouse")" --transform "s,^$(basename "$wheelhouse"),wheelhouse," \
  "$(basename "$wheelhouse")"
cp "$here/vendor.txt" "$topdir/SOURCES/vendor.txt"

# 3. rpmbuild.
nodeps=()
if ! rpm -q rpm >/dev/null 2>&1; then nodeps=(--nodeps); fi
exec rpmbuild -bb "${nodeps[@]}" --define "_topdir $topdir" "$here/sshguardd.spec"
