"""The demo's attackers: the OpenSSH client guessing user names from chosen addresses.

Every attempt is a real `ssh` run inside the sandbox, bound to the attacker's address with
`-b`, against the sandbox's sshd. An attacker stops once a connection attempt times out:
its SYN was dropped, so the ban reached the kernel.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.demo.view import View

SERVER_V4, SERVER_V6 = "203.0.113.1", "2001:db8::1"  # documentation ranges (RFC 5737/3849)
GUESSES = ("admin", "oracle", "test", "ubuntu", "postgres", "root", "git", "pi")
MAX_ATTEMPTS = 15


@dataclass
class Attacker:
    address: str
    attempts: int = 0
    dropped: bool = False  # a connection attempt timed out: the kernel drops it


def ssh(sb: Sandbox, src: str, user: str, *, key: str | None = None,
        timeout: int = 5) -> subprocess.CompletedProcess[str]:
    """One `ssh USER@SERVER true` from `src`: with `key`, a key login; else passwords and
    keyboard-interactive with no prompts answered (a failed attempt each time)."""
    server = SERVER_V6 if ":" in src else SERVER_V4
    # timeout(1) inside the sandbox ends a client whose established connection was cut
    # off by a ban (ConnectTimeout covers only connecting): exit status 124.
    argv = ["timeout", "--kill-after=2", str(timeout + 5),
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={timeout}", "-o", "LogLevel=ERROR", "-b", src]
    if key:
        argv += ["-o", "IdentitiesOnly=yes", "-i", key]
    else:
        argv += ["-o", "PreferredAuthentications=password,keyboard-interactive",
                 "-o", "NumberOfPasswordPrompts=0"]
    return sb.run([*argv, f"{user}@{server}", "true"], timeout=timeout + 60)


class BruteForce:
    """Attackers in parallel, one thread each, with a live progress line.

    `failures` reads how many failures the daemon has counted so far (its metrics); it is
    asked at most twice a second.
    """

    def __init__(self, sb: Sandbox, view: View, addresses: Iterable[str],
                 failures: Callable[[], float]) -> None:
        self.sb = sb
        self.view = view
        self.failures = failures
        self.attackers = {a: Attacker(a) for a in addresses}
        self._stop = threading.Event()
        self._counted, self._counted_at = 0.0, 0.0

    def run(self) -> None:
        """Until every attacker is dropped or has made MAX_ATTEMPTS attempts."""
        workers = [threading.Thread(target=self._attack, args=(a,), name=f"demo-attack-{a}")
                   for a in self.attackers.values()]
        for w in workers:
            w.start()
        try:
            wait_for(lambda: self.show() or all(not w.is_alive() for w in workers),
                     MAX_ATTEMPTS * 10 + 30, interval=0.25, what="the attackers")
        finally:
            self.stop()
            for w in workers:
                w.join()
        self.show()
        self.view.end_progress()

    def stop(self) -> None:
        self._stop.set()

    def _attack(self, a: Attacker) -> None:
        for i in range(MAX_ATTEMPTS):
            if self._stop.is_set() or a.dropped:
                return
            a.attempts += 1
            result = ssh(self.sb, a.address, GUESSES[i % len(GUESSES)], timeout=3)
            if result.returncode == 124:
                # The ban landed mid-connection: its packets are dropped and the client
                # waits forever; the next attempt shows how a new connection fares.
                continue
            if "timed out" in result.stderr:
                a.dropped = True  # SYN dropped: the ban is in the kernel
                return

    def show(self) -> bool:
        """Redraw the progress line; whether every attacker is dropped."""
        parts = []
        for a in self.attackers.values():
            status = "BANNED" if a.dropped else f"{a.attempts:>2}"
            parts.append(f"{a.address} {self.view.bar(a.attempts, 5, 5)} {status}")
        now = time.monotonic()
        if now - self._counted_at >= 0.5:  # what the daemon has detected so far
            self._counted_at = now
            try:
                self._counted = self.failures()
            except OSError:
                pass  # a scrape that failed now shows the last count
        self.view.progress(f"sshguardd counted {self._counted:g} failures · attempts: "
                           + "  ".join(parts))
        return all(a.dropped for a in self.attackers.values())
