"""What `sshguardd demo` watches inside its sandbox, and how it judges what it sees.

The daemon runs as `sshguardd run` inside the sandbox; the demo reads it only from the
outside, as an operator would: its sd_notify datagrams (READY=1, STATUS=), its stderr, the
journal's alerts (`journalctl --follow --output=json`), `sshd -T` for what sshd would
enforce, root's entry in /etc/shadow, and the Prometheus endpoint. Each feed has its own
thread; the script reads their results through `Observer`.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sshguardd.demo.sandbox import Sandbox
from sshguardd.demo.view import View

NOTIFY_PATH = "/run/sshguardd-demo.notify"
PROTECTED = ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication",
             "permitemptypasswords")  # the default policy's sshd keywords
ALERT_STYLES = {"ban": "red", "unban": "green", "drift": "yellow", "repaired": "green"}


@dataclass
class Feed:
    """What the journal said so far (filled by the feed thread, read by the main thread)."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, **match: str) -> int:
        with self.lock:
            return sum(1 for a in self.alerts if a.get("SSHGUARDD_ALERT") == kind
                       and all(str(a.get(k, "")).lower() == v.lower() for k, v in match.items()))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.alerts if a.get("SSHGUARDD_ALERT") == kind]


class Observer:
    """The daemon process and every feed about it; `close()` ends them all."""

    def __init__(self, sb: Sandbox, view: View, *, verbose: bool, metrics_port: int) -> None:
        self.sb = sb
        self.view = view
        self.verbose = verbose
        self.metrics_port = metrics_port
        self.feed = Feed()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log: collections.deque[str] = collections.deque(maxlen=200)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._notify: socket.socket | None = None

    # -- the feeds -----------------------------------------------------------------------

    def start_journal(self) -> None:
        journal = self.sb.popen(["journalctl", "--follow", "--output=json", "--lines=all",
                                 "SYSLOG_IDENTIFIER=sshguardd"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread(lambda: self._read_journal(journal), "demo-journal")

    def start_daemon(self) -> subprocess.Popen[bytes]:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(self.sb.path(NOTIFY_PATH)))  # a socket file inside the sandbox
        notify.settimeout(0.2)
        self._notify = notify
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = NOTIFY_PATH
        daemon = self.sb.popen([sys.executable, "-m", "sshguardd", "run"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.daemon = daemon
        self._thread(lambda: self._read_notify(notify), "demo-notify")
        self._thread(lambda: self._read_daemon_log(daemon), "demo-daemon-log")
        return daemon

    def daemon_died(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is not None

    def stop_daemon(self, timeout: float = 30) -> int | None:
        """SIGTERM the daemon (SIGKILL after `timeout`); its exit status, None if it was
        not running."""
        if self.daemon is None or self.daemon.poll() is not None:
            return None
        self.sb.signal(self.daemon, signal.SIGTERM)
        try:
            return self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            self.sb.signal(self.daemon, signal.SIGKILL)
            return self.daemon.wait(10)

    def _read_notify(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.splitlines():
                if line == "READY=1":
                    self.ready.set()
                elif line.startswith("STATUS=") and self.verbose:
                    self.view.event("status", line[7:], "dim")

    def _read_daemon_log(self, daemon: subprocess.Popen[bytes]) -> None:
        if daemon.stderr is None:
            return
        for raw in daemon.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.daemon_log.append(line)
            if self.verbose:
                self.view.event("daemon", line, "dim")

    def _read_journal(self, journal: subprocess.Popen[bytes]) -> None:
        if journal.stdout is None:
            return
        for raw in journal.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            kind = entry.get("SSHGUARDD_ALERT")
            if not isinstance(kind, str):
                continue
            with self.feed.lock:
                self.feed.alerts.append(entry)
            message = entry.get("MESSAGE")
            if isinstance(message, list):  # journalctl gives binary-safe fields as byte lists
                message = bytes(message).decode(errors="replace")
            self.view.event(kind.replace("_", " "), str(message),
                            ALERT_STYLES.get(kind, "magenta"))

    def _thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- looking inside ------------------------------------------------------------------

    def effective(self, keyword: str) -> str | None:
        """What sshd would use now (`sshd -T` on the file as it is)."""
        out = self.sb.run(["/usr/sbin/sshd", "-T", "-C", "user=nobody,host=x,addr=192.0.2.1"])
        for line in out.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == keyword:
                return str(value)
        return None

    def root_locked(self) -> bool:
        # Only the password field's first character is looked at; no hash is printed.
        for line in self.sb.path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "root":
                return rest.split(":", 1)[0].startswith(("!", "*"))
        return False

    def policy_holds(self) -> bool:
        return all(self.effective(k) == "no" for k in PROTECTED) and self.root_locked()

    def metrics(self) -> str:
        """The daemon's Prometheus exposition, scraped over HTTP/1.0 inside the sandbox."""
        with self.sb.connect(None, "127.0.0.1", self.metrics_port, timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")[2]

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the feed threads (the sandbox's close() ends the processes they read)."""
        self._stop.set()
        for t in self._threads:
            t.join(10)
        if self._notify is not None:
            self._notify.close()


def digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def sum_samples(exposition: str, name: str) -> float:
    """The sum of a metric's samples over all its labels, from Prometheus text format."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def covers(network: object, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(str(network), strict=False)
    except ValueError:
        return False


def compact_nft(text: str) -> str:
    """The nft table without blank lines, tabs as two spaces."""
    return "\n".join(line.replace("\t", "  ") for line in text.splitlines() if line.strip())
