#!/usr/bin/env bash
# Fills a wheelhouse with exactly the files packaging/requirements.txt pins, hash-checked:
#   packaging/wheelhouse.sh [DIR]      (default $SSHGUARDD_WHEELHOUSE, else build/wheelhouse)
# Offline when DIR already holds them all, else from the package index pip is configured
# with. The RPM and .deb builds, install.sh --wheelhouse DIR and the tests read it; copy it
# to a host with no index to install there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
wheelhouse=$(realpath -m "${1:-${SSHGUARDD_WHEELHOUSE:-$root/build/wheelhouse}}")
python=${PYTHON311:-/usr/bin/python3.11}
mkdir -p "$wheelhouse"
# pip for python3.11 (the hashes are of cp311 files): the interpreter's own, or (Debian
# without python3-pip) a venv's.
pip_python=$python
if ! "$python" -m pip --version >/dev/null 2>&1; then
  [ -x "$root/build/pip-env/bin/python" ] || "$python" -m venv "$root/build/pip-env"
  pip_python=$root/build/pip-env/bin/python
fi
dl=("$pip_python" -m pip download --disable-pip-version-check -q --no-deps --require-hashes
    --dest "$wheelhouse" -r "$here/requirements.txt")
"${dl[@]}" --no-index --find-links "$wheelhouse" >/dev/null 2>&1 || "${dl[@]}"
