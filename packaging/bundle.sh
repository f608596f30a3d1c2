#!/usr/bin/env bash
# Builds sshguardd's private library tree, the same for the RPM and the .deb:
#   packaging/bundle.sh SRC WHEELHOUSE DEST [BUILDROOT]
# DEST receives sshguardd (built from SRC) and exactly the runtime pins of
# SRC/packaging/requirements.txt, every file hash-checked, systemd-python compiled from its
# sdist against this host's libsystemd, all byte-compiled for python3.11 (paths relative to
# BUILDROOT when given). No index is contacted: everything comes from WHEELHOUSE
# (packaging/wheelhouse.sh fills it). Needs python3.11 with venv and headers, gcc,
# pkg-config and libsystemd's headers.
set -euo pipefail
src=$(realpath "$1") wheelhouse=$(realpath "$2") dest=$(realpath -m "$3") buildroot=${4:-}
python=${PYTHON311:-/usr/bin/python3.11}
pins=$src/packaging/requirements.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No pip configuration or index from the build host: the build is reproducible offline.
for v in $(compgen -e | grep '^PIP_' || true); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_FIND_LINKS=$wheelhouse
export PIP_DISABLE_PIP_VERSION_CHECK=1
grep -E '^[A-Za-z].* # build$' "$pins" > "$work/build.txt"
grep -E '^systemd-python' "$pins" > "$work/compiled.txt"
grep -E '^[A-Za-z]' "$pins" | grep -v -e ' # build$' -e '^systemd-python' > "$work/binary.txt"

"$python" -m venv "$work/env"
pip=("$work/env/bin/python" -m pip -q)
# The build tools, hash-checked, in the build venv; builds then use them as they are
# (--no-build-isolation), so no unchecked build dependency is ever fetched.
"${pip[@]}" install --require-hashes -r "$work/build.txt"
"${pip[@]}" wheel --no-build-isolation --no-deps --require-hashes -w "$work/dist" \
  -r "$work/compiled.txt"
# sshguardd from a copy, so SRC gets no build/ or egg-info.
mkdir "$work/src"
cp -r "$src/pyproject.toml" "$src/README.md" "$src/sshguardd" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"${pip[@]}" wheel --no-build-isolation --no-deps -w "$work/dist" "$work/src"

"${pip[@]}" install --no-compile --no-warn-script-location --target "$dest" --no-deps \
  --require-hashes -r "$work/binary.txt"
rm -rf "${dest:?}/bin"  # watchdog's watchmedo script: not sshguardd's (and in the way of the next)
"${pip[@]}" install --no-compile --no-warn-script-location --target "$dest" --no-deps \
  "$work"/dist/*.whl
# sshguardd's own console script is replaced by the package's launcher, and
# direct_url.json would only record this build directory.
rm -rf "${dest:?}/bin"
find "$dest" -name direct_url.json -delete
if [ -n "$buildroot" ]; then
  "$python" -m compileall -q -j0 -s "$(realpath -m "$buildroot")" -p / "$dest"
else
  "$python" -m compileall -q -j0 "$dest"
fi
