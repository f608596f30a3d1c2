#!/bin/sh
# Real PerSourcePenalties lines from Debian 13's sshd (OpenSSH 10.0p2), as captured for
# penalty_golden.jsonl and run by tests/test_penalties_sshd10.py. ROOT is a Debian 13 root
# filesystem made with
#   debootstrap --variant=minbase --include=openssh-server,openssh-client trixie ROOT MIRROR
# and may be written to (the test gives it an overlay). Run as root in fresh namespaces:
#   unshare --mount --net --fork sh tests/data/penalty_capture.sh ROOT [LEVEL]
# It prints sshd's log. LEVEL VERBOSE (default) shows srclimit_penalise's lines, INFO only
# the drop lines. The ssh client is the host's: 127.0.0.2 and 2001:db8::2 never
# authenticate (noauth), 127.0.0.3 offers a key root does not accept (authfail). Then sshd
# is sent SIGHUP (it re-executes, as a restart does) and 127.0.0.2 tries once more.
set -eu
R=$1
LEVEL=${2:-VERBOSE}
mount --make-rprivate /
ip link set lo up
ip -6 addr add 2001:db8::2/128 dev lo
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
mkdir -p "$R/run/sshd"
chroot "$R" ssh-keygen -A >/dev/null
rm -f "$R/tmp/sshd.log"
# sshd binds its sockets before it detaches: listening once this returns.
chroot "$R" /usr/sbin/sshd -p 2222 -o ListenAddress=127.0.0.1 -o ListenAddress=::1 \
  -o LogLevel="$LEVEL" -o 'PerSourcePenalties=noauth:20s authfail:30s min:25s max:120s' \
  -E /tmp/sshd.log -o PidFile=/run/sshd.pid
set -- -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o ConnectTimeout=3 -p 2222
noauth() {
  ssh "$@" -o PreferredAuthentications=password -o NumberOfPasswordPrompts=0 true \
    2>/dev/null || true
}
for i in 1 2 3 4; do noauth "$@" -b 127.0.0.2 nobody@127.0.0.1; done
key=$(mktemp -u)
ssh-keygen -q -t ed25519 -N '' -f "$key"
for i in 1 2 3; do
  ssh "$@" -i "$key" -o PreferredAuthentications=publickey -b 127.0.0.3 root@127.0.0.1 true \
    2>/dev/null || true
done
rm -f "$key" "$key.pub"
for i in 1 2 3 4; do noauth "$@" -b 2001:db8::2 nobody@::1; done
# A restart forgives: after SIGHUP the new listener lets 127.0.0.2 in again.
kill -HUP "$(cat "$R/run/sshd.pid")"
i=0
while [ "$(grep -c '^Server listening on 127.0.0.1' "$R/tmp/sshd.log")" -lt 2 ]; do
  i=$((i + 1)); [ $i -lt 500 ] || { echo "no new listener" >&2; exit 1; }; sleep 0.02
done
noauth "$@" -b 127.0.0.2 nobody@127.0.0.1
kill "$(cat "$R/run/sshd.pid")"
cat "$R/tmp/sshd.log"
