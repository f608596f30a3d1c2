"""A hostile local user against the running daemon (issue 10).

One real `sshguardd run` in a Sandbox (private namespaces, overlays on /etc, /var, /root,
/home, a private journald, the stock sshd on port 22, metrics on 127.0.0.1:9822), and an
unprivileged account `mallory` (and an application account `app`) doing what THREATS.md
says a local user can: idle sockets on every loopback port, a slow client on the control
socket, forged journal lines, planted temp names in a directory symlinked into /etc/ssh,
FIFOs where the daemon reads. After each, the daemon must still be ready (status answers,
healthy), ban (three failures from a fresh address reach the kernel set) and repair
(a `sed -i` drift of PermitRootLogin is reverted).

The stand-in for sshd is a copy of logger named `sshd` run by root: _COMM=sshd, _UID=0,
exactly what OpenSSH 9.2 writes (no unit: the sandbox has no systemd as PID 1).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import DaemonProc, Sender, banned, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

RESTART = """#!/bin/sh
set -e
echo restart >> /run/restarts.log
kill -HUP "$(cat /run/sshd.pid)"
"""
CONFIG = """
[ban]
max_retry = 3
find_time = "10m"
ban_time = "1h"

[drift]
restart_command = ["/etc/sshguardd/restart-sshd"]
# every check below reverts the same sed -i: not a revert war
revert_war = { max_reverts = 100 }

[metrics]
enabled = true
address = "127.0.0.1"
port = 9822
"""
AS_MALLORY = ["setpriv", "--reuid=mallory", "--regid=mallory", "--init-groups"]
IDLER = r"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.connect((sys.argv[1], int(sys.argv[2])))
    held.append(s)
print(len(held), flush=True)
sys.stdin.read()
"""


def _settings(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if not ln.startswith("# sshguardd ")]


class Host:
    """The sandbox with sshd, the daemon, a root sshd stand-in and two local accounts."""

    def __init__(self, sb: Sandbox, logdir: Path) -> None:
        self.sb = sb
        sb.run(["sh", "-c", "find /root /home -name 'authorized_keys*' -delete"], check=True)
        for user in ("admin", "mallory", "app"):
            sb.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
        sb.run(["mkdir", "-p", "/etc/sshguardd", "/home/admin/.ssh"], check=True)
        restart = sb.path("/etc/sshguardd/restart-sshd")
        restart.write_text(RESTART)
        restart.chmod(0o755)
        write_config(sb, CONFIG)
        sb.start_sshd()
        pub = sb.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text()
        sb.path("/home/admin/.ssh/authorized_keys").write_text(pub)
        self.daemon = DaemonProc(sb, logdir / "daemon.log").start()
        self.sshd = Sender(sb, "sshd")
        self.next_net = 10
        wait_for(lambda: "PermitRootLogin no" in self.text("/etc/ssh/sshd_config"), 20,
                 what="the start-up hardening")

    def close(self) -> None:
        self.sshd.close()
        self.daemon.stop()

    def text(self, path: str) -> str:
        return self.sb.path(path).read_text()

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        out = self.sb.journal("-o", "json", f"SSHGUARDD_ALERT={kind}")
        return [json.loads(line) for line in out.splitlines() if line]

    def fresh(self) -> str:
        self.next_net += 1
        return f"203.0.113.{self.next_net}"

    def fail(self, addr: str, n: int = 3) -> None:
        self.sshd.say(*[f"Failed password for root from {addr} port {4000 + i} ssh2"
                        for i in range(n)])

    def assert_still_working(self) -> None:
        """Ready, banning and repairing."""
        st = self.daemon.status()
        assert st["ok"] and st["healthy"], st
        addr = self.fresh()
        self.fail(addr)
        wait_for(lambda: banned(self.sb, addr), 10, what=f"{addr} to be banned")
        # Compared without the comment a repair writes above its line ("# sshguardd DATE:
        # ... (was yes): ..."), which names the value it replaced.
        hardened = _settings(self.text("/etc/ssh/sshd_config"))
        self.sb.run(["sed", "-i", "s/^PermitRootLogin no$/PermitRootLogin yes/",
                     "/etc/ssh/sshd_config"], check=True)
        wait_for(lambda: _settings(self.text("/etc/ssh/sshd_config")) == hardened, 15,
                 what="the sed -i drift to be repaired")
        assert self.daemon.status()["healthy"]

    def daemon_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.daemon.pid()}/fd"))

    def daemon_threads(self) -> int:
        return len(os.listdir(f"/proc/{self.daemon.pid()}/task"))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    d = tmp_path_factory.mktemp("hostile")
    with Sandbox(d, overlays=("/var", "/root", "/home")) as sb:
        h = Host(sb, d)
        try:
            yield h
        finally:
            h.close()


def test_baseline(host: Host) -> None:
    host.assert_still_working()


def test_1100_idle_sockets_on_the_metrics_port(host: Host) -> None:
    # Before: one thread per connection and no LimitNOFILE; all 1,024 descriptors went,
    # the next ban failed with EMFILE and a drift event was dropped.
    fds, threads = host.daemon_fds(), host.daemon_threads()
    idler = host.sb.popen([*AS_MALLORY, sys.executable, "-I", "-c", IDLER, "127.0.0.1",
                           "9822", "1100"], stdin=-1, stdout=-1, text=True)
    try:
        assert idler.stdout is not None and idler.stdout.readline().strip() == "1100"
        during = host.daemon_fds(), host.daemon_threads()
        print(f"daemon descriptors {fds} -> {during[0]}, threads {threads} -> {during[1]}"
              " with 1,100 idle metrics connections")
        assert during[0] <= fds + 40  # the metrics server's cap is 32
        assert during[1] <= threads + 1
        host.assert_still_working()
        got = host.sb.run(["curl", "-sf", "http://127.0.0.1:9822/metrics"], timeout=20)
        assert "sshguardd_bans_total" in got.stdout
    finally:
        assert idler.stdin is not None and idler.stdout is not None
        idler.stdin.close()
        idler.wait(20)
        idler.stdout.close()


def test_a_slow_control_client_holds_nothing(host: Host) -> None:
    # Before: one client at a time and a fresh 3 s timeout per recv(): one byte every 2 s
    # held the control socket for as long as the client liked.
    stop = threading.Event()
    answer: list[bytes] = []

    def dribble() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(host.daemon.socket))
            s.settimeout(0.2)
            for byte in b'{"cmd": "status", "x": "' + b"y" * 100:
                if stop.is_set():
                    return
                try:
                    s.send(bytes([byte]))
                    answer.append(s.recv(4096))
                    return
                except TimeoutError:
                    continue
                except OSError:
                    return

    t = threading.Thread(target=dribble)
    t.start()
    try:
        for _ in range(5):  # answered at once, again and again, while it dribbles
            assert host.daemon.status()["ok"]
        host.assert_still_working()
        wait_for(lambda: answer, 10, what="the slow client to be cut off")
        assert json.loads(answer[0])["error"] == "request timed out"
    finally:
        stop.set()
        t.join(10)


def test_forged_journal_lines_neither_ban_nor_shield(host: Host) -> None:
    # Before (systemd hosts): _SYSTEMD_UNIT=ssh.service alone was trusted. Here: logger -t
    # sshd and a program named sshd, both as mallory, must be ignored.
    victim, attacker = host.fresh(), host.fresh()
    user_sshd = Sender(host.sb, "sshd", *AS_MALLORY)
    forged = Sender(host.sb, "logger", *AS_MALLORY)
    try:
        user_sshd.say(*[f"Failed password for root from {victim} port {p} ssh2"
                        for p in range(10)])
        forged.say(*[f"Failed password for root from {victim} port {p} ssh2"
                     for p in range(10)])
        forged.say(f"Accepted password for admin from {attacker} port 1 ssh2")
        user_sshd.say(f"Accepted password for admin from {attacker} port 2 ssh2")
        wait_for(lambda: host.sb.journal("-o", "cat", "_UID=1001", "_UID=1002",
                                         "_UID=1003").count(attacker) == 2, 10,
                 what="the forged lines in the journal")
        host.fail(attacker)  # the real sshd: not shielded by the forged logins
        wait_for(lambda: banned(host.sb, attacker), 10, what="the attacker's ban")
        assert not banned(host.sb, victim)
    finally:
        user_sshd.close()
        forged.close()
    host.assert_still_working()


def test_planted_temp_name_in_a_user_directory_linked_into_etc_ssh(host: Host) -> None:
    # Before: the repair opened .NAME.sshguardd-PID with O_CREAT|O_TRUNC beside the
    # symlink's target and chowned it like the target: the planted symlink's victim (a
    # root-only file) became app's, mode 0644, holding sshd_config text.
    sb = host.sb
    pid = host.daemon.status()["pid"]
    sb.run(["sh", "-c", "umask 077; echo secret > /root/victim"], check=True)
    sb.run([*["setpriv", "--reuid=app", "--regid=app", "--init-groups"], "sh", "-c",
            ("mkdir -p /home/app/conf && cd /home/app/conf && "
            f"ln -s /root/victim .50-app.conf.sshguardd-{pid} && "
            "printf 'PasswordAuthentication yes\\n' > 50-app.conf")], check=True)
    sb.run(["ln", "-s", "/home/app/conf/50-app.conf",
            "/etc/ssh/sshd_config.d/50-app.conf"], check=True)
    (alert, *_) = wait_for(lambda: [a for a in host.alerts("repair_failed")
                                    if "50-app.conf" in json.dumps(a)], 15,
                           what="the refused repair to be alerted")
    assert ("refusing /etc/ssh/sshd_config.d/50-app.conf: directory /home/app is owned by "
            "uid") in json.dumps(alert), alert
    st = sb.path("/root/victim").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert sb.path("/root/victim").read_text() == "secret\n"
    assert sb.path("/home/app/conf/50-app.conf").read_text() == "PasswordAuthentication yes\n"
    sb.run(["rm", "/etc/ssh/sshd_config.d/50-app.conf"], check=True)
    host.assert_still_working()


def test_fifo_drop_in_does_not_stall_the_daemon(host: Host) -> None:
    # Before: sshd -t/-T blocked 30 s on the FIFO per call; bans 89 s late.
    host.sb.run(["mkfifo", "/etc/ssh/sshd_config.d/60-fifo.conf"], check=True)
    try:
        addr = host.fresh()
        host.fail(addr)
        wait_for(lambda: banned(host.sb, addr), 10, what=f"{addr} to be banned")
        assert host.daemon.status()["ok"]
    finally:
        host.sb.run(["rm", "/etc/ssh/sshd_config.d/60-fifo.conf"], check=True)
    host.assert_still_working()


@pytest.mark.parametrize("plant", [
    "mkfifo .ssh/authorized_keys",                       # blocked the loop forever
    "ln -s /dev/zero .ssh/authorized_keys",              # grew the daemon past 1.5 GiB
    "ln -s /dev/zero .ssh/authorized_keys2",
    "truncate -s 200M .ssh/authorized_keys",             # a huge (sparse) file
    "ln -s /etc/shadow .ssh/authorized_keys",            # a root-only file behind a link
])
def test_hostile_authorized_keys_leave_the_daemon_ready(host: Host, plant: str) -> None:
    # Before (issue 10): the lockout guard opened every user's authorized_keys as root, on
    # the main loop, with a plain open() and whole-line reads. Now (access engineer's
    # effects/accounts.py over files.read_untrusted) off the loop, regular files only,
    # capped, with a deadline. The drift in assert_still_working makes the guard read them.
    sb = host.sb
    sb.run([*AS_MALLORY, "sh", "-c", f"cd /home/mallory && mkdir -p .ssh && {plant}"],
           check=True)
    try:
        host.assert_still_working()
        rss = next(int(line.split()[1]) for line in
                   Path(f"/proc/{host.daemon.pid()}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        assert rss < 200 * 1024, f"{rss} kB resident"
    finally:
        sb.run(["rm", "-rf", "/home/mallory/.ssh"], check=True)
