"""Hostile authorized_keys files against the running daemon (issue 10): a FIFO, a symlink
to /dev/zero, a symlink to /etc/shadow, a 4 GiB sparse file and a socket, each in a local
user's ~/.ssh, while the lockout guard has to judge every one of those accounts before it
reaches the admin's good key. The old guard opened them with a plain open() on the main
loop: the FIFO blocked the daemon for ever (never READY, no bans), /dev/zero grew it past
1.5 GiB. Now the daemon gets ready, repairs, bans, and stays small.

Real daemon (`sshguardd run`) in a Sandbox with a real sshd, real accounts (useradd) and
sshd's lines from a stand-in sshd for the ban.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, Sender, banned, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

RESTART = """#!/bin/sh
kill -HUP "$(cat /run/sshd.pid)"
"""
HOSTILE = {
    "fifo": "mkfifo {ak}",
    "zero": "ln -s /dev/zero {ak}",
    "shlink": "ln -s /etc/shadow {ak}",
    "huge": "truncate -s 4G {ak}",
    "sock": "python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' {ak}",
}


def test_hostile_key_files_leave_the_daemon_ready_repairing_and_banning(tmp_path: Path):
    with Sandbox(tmp_path, overlays=("/var", "/root", "/home")) as sb:
        sb.run(["sh", "-c", "find /root /home -name 'authorized_keys*' -delete"], check=True)
        for name, make in HOSTILE.items():  # made first: lower uids, judged first
            ak = f"/home/{name}/.ssh/authorized_keys"
            sb.run(["sh", "-c", f"useradd -m -s /bin/bash {name} && "
                    f"install -d -o {name} -m 700 /home/{name}/.ssh && "
                    + make.format(ak=ak) + f" && chown -h {name} {ak}"], check=True)
        sb.run(["useradd", "-m", "-s", "/bin/bash", "admin"], check=True)
        sb.run(["install", "-d", "-o", "admin", "-m", "700", "/home/admin/.ssh"], check=True)
        sb.run(["mkdir", "-p", "/etc/sshguardd"], check=True)
        restart = sb.path("/etc/sshguardd/restart-sshd")
        restart.write_text(RESTART)
        restart.chmod(0o755)
        write_config(sb, '[ban]\nmax_retry = 3\n\n[drift]\nrestart_command = '
                     '["/etc/sshguardd/restart-sshd"]\n\n[metrics]\nenabled = false\n')
        p = sb.path("/etc/ssh/sshd_config")
        p.write_text("PasswordAuthentication yes\n" + p.read_text())
        sb.start_sshd()
        pub = sb.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text()
        ak = sb.path("/home/admin/.ssh/authorized_keys")
        ak.write_text(pub)
        sb.run(["chown", "admin", "/home/admin/.ssh/authorized_keys"], check=True)

        started = time.monotonic()
        d = DaemonProc(sb, tmp_path / "daemon.log").start()  # waits for the control socket
        try:
            ready = time.monotonic() - started

            def effective() -> str:
                out = sb.run(["/usr/sbin/sshd", "-T"], check=True).stdout
                return dict(line.split(" ", 1) for line in out.splitlines()
                            if " " in line)["passwordauthentication"]

            # The guard judged the five hostile accounts, then found admin's key.
            wait_for(lambda: effective() == "no", 20, what="passwords turned off")
            out = sb.journal("-o", "json", "SSHGUARDD_ALERT=lockout_guard")
            assert out.strip() == "", out
            s = Sender(sb, "sshd")
            try:
                s.say(*(f"Failed password for root from 10.3.0.1 port {40000 + i} ssh2"
                        for i in range(3)))
                wait_for(lambda: banned(sb, "10.3.0.1"), 10, what="the ban")
            finally:
                s.close()
            st = json.loads(d.cli("status", "--json").stdout)
            assert st["healthy"] is True
            rss = int(next(line.split()[1] for line in
                           Path(f"/proc/{d.pid()}/status").read_text().splitlines()
                           if line.startswith("VmRSS:")))
            assert rss < 200_000, f"{rss} kB"  # /dev/zero read whole would be GiBs
            print(f"ready after {ready:.1f}s, RSS {rss} kB")
        finally:
            d.stop()
