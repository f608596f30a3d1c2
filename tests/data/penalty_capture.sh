#!/bin/sh
# How the "OpenSSH 10.0p2 capture" lines of penalty_golden.jsonl were made (issue 15
# part 4), for whoever refreshes them. Not run by the suite: it needs a Debian 13 root
# filesystem (about 1.5 min and 250 MB), which Debian 12's suite does not build:
#   debootstrap --variant=minbase --include=openssh-server,openssh-client trixie ROOT MIRROR
# Run as root: unshare --mount --net --fork sh tests/data/penalty_capture.sh ROOT [LEVEL]
# It prints sshd's log: LEVEL VERBOSE (default) shows srclimit_penalise's lines, INFO only
# the drop lines. The ssh client is the host's; 127.0.0.2 and 2001:db8::2 never
# authenticate (noauth), 127.0.0.3 offers a key root does not accept (authfail).
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
chroot "$R" /usr/sbin/sshd -p 2222 -o ListenAddress=127.0.0.1 -o ListenAddress=::1 \
  -o LogLevel="$LEVEL" -o 'PerSourcePenalties=noauth:4s authfail:6s min:5s max:60s' \
  -E /tmp/sshd.log -o PidFile=/run/sshd.pid
sleep 0.5
set -- -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o ConnectTimeout=3 -p 2222
for i in 1 2 3; do
  ssh "$@" -o PreferredAuthentications=password -o NumberOfPasswordPrompts=0 \
    -b 127.0.0.2 nobody@127.0.0.1 true 2>/dev/null || true
done
key=$(mktemp -u)
ssh-keygen -q -t ed25519 -N '' -f "$key"
for i in 1 2; do
  ssh "$@" -i "$key" -o PreferredAuthentications=publickey -b 127.0.0.3 root@127.0.0.1 true \
    2>/dev/null || true
done
for i in 1 2 3; do
  ssh "$@" -o PreferredAuthentications=password -o NumberOfPasswordPrompts=0 \
    -b 2001:db8::2 nobody@::1 true 2>/dev/null || true
done
rm -f "$key" "$key.pub"
kill "$(cat "$R/run/sshd.pid")"
sleep 0.3
cat "$R/tmp/sshd.log"
