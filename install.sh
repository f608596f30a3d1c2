#!/usr/bin/env bash
# Placeholder until packaging lands: installs into /opt/sshguardd and runs the daemon.
set -euo pipefail
echo "install.sh: not ready yet" >&2
exit 69
