"""sd_notify: tell systemd when the daemon is ready, alive, reloading or stopping.

A dozen lines of our own instead of a library call: the protocol is one datagram of
NEWLINE-separated KEY=VALUE lines to the AF_UNIX socket named in $NOTIFY_SOCKET (a path, or
an abstract name written with a leading '@'), see sd_notify(3). Without $NOTIFY_SOCKET (run
by hand, in tests) every method is a no-op. A failed send is logged and never raised: losing
a STATUS= line must not take the daemon down (a lost WATCHDOG=1 is what the watchdog is for).

The daemon's contract with the unit (Type=notify, WatchdogSec=):
- `ready(status)` once the firewall table, journal follower and watchers are up;
- `watchdog()` from the main loop, only while it is healthy, every
  `watchdog_interval() / 2` seconds or more often;
- `reloading()` when SIGHUP handling starts, then `ready(status)` when it is done;
- `stopping()` when shutdown starts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to `socket_path` (default: $NOTIFY_SOCKET of `environ`).

    environ is read once, at construction; it defaults to os.environ.
    """

    def __init__(self, socket_path: str | None = None,
                 environ: Mapping[str, str] | None = None, *, send_timeout: float = 5.0):
        env = os.environ if environ is None else environ
        path = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET")
        self._address: str | bytes | None = None
        if path:
            if path.startswith("@"):
                self._address = "\0" + path[1:]
            elif path.startswith("/"):
                self._address = path
            else:
                # vsock: addresses (systemd 254+, VMs) are not for a daemon on the host.
                log.warning("ignoring unsupported NOTIFY_SOCKET %r", path)
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._failed = False
        # A datagram to a receiver whose queue is full (net.unix.max_dgram_qlen, often 10)
        # blocks; bound it so a stalled manager can never wedge the main loop for good.
        self._send_timeout = send_timeout

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """WatchdogSec= in seconds when systemd expects pings from this process, else None.
        Ping at least twice per interval (sd_watchdog_enabled(3))."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1e6

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd (253+, Type=notify-reload) tell this reload from an
        # earlier one; older systemd ignores the extra field.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(
            time.CLOCK_MONOTONIC) // 1000, STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (EXTEND_TIMEOUT_USEC=)."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def send(self, **fields: object) -> bool:
        """Send one datagram of the given fields (None values left out). True if sent."""
        if self._address is None:
            return False
        lines = []
        for key, value in fields.items():
            if value is None:
                continue
            # One line per field: a newline inside STATUS= would start a bogus field.
            text = " ".join(str(value).split()) if key == "STATUS" else str(value)
            lines.append(f"{key}={text}")
        payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(self._send_timeout)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            # Log the first failure loudly and the rest quietly: a missing socket fails on
            # every ping.
            (log.debug if self._failed else log.warning)(
                "sd_notify to %r failed: %s", self._address, exc)
            self._failed = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    # Same rules as sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be this process
    # (a child that inherited the environment must not ping on the parent's behalf).
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec
