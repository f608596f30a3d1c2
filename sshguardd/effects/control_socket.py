"""The control socket: a root-only Unix stream socket speaking one JSON object each way.

Protocol: the client connects, sends one JSON object (UTF-8, terminated by a newline or by
shutting down its write side), and reads one JSON object back, newline-terminated:

    {"cmd": "status"}                                  -> {"ok": true, ...}
    {"cmd": "bans"}                                    -> {"ok": true, "bans": [...]}
    {"cmd": "ban", "address": "ADDR", "duration": 600} -> {"ok": true, "ban": {...}}
    {"cmd": "unban", "address": "ADDR"}                -> {"ok": true, "removed": [...]}

Errors are {"ok": false, "error": "..."}. Requests are capped at MAX_REQUEST bytes and
must arrive within a few seconds; anything else is answered with an error and dropped, and
never reaches the daemon's state. Peers are checked with SO_PEERCRED (root only by default)
on top of the socket file's 0600 mode, so a mistake in directory permissions alone does
not open it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024
MAX_RESPONSE = 64 * 1024 * 1024  # a client's cap on the answer (a large ban list)
CLIENT_TIMEOUT = 3.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlUnavailable(Exception):
    """The daemon is not reachable on its control socket."""


class ControlServer:
    """Accepts connections on `path` on a thread of its own and answers each request with
    `handler(request) -> response` (called on that thread; the daemon's handler hands the
    request to its main loop and waits for the reply)."""

    def __init__(self, path: Path | str, handler: Handler, *,
                 allowed_uids: Iterable[int] = (0,), max_request: int = MAX_REQUEST,
                 client_timeout: float = CLIENT_TIMEOUT) -> None:
        self.path = Path(path)
        self.handler = handler
        self.allowed_uids = frozenset(allowed_uids)
        self.max_request = max_request
        self.client_timeout = client_timeout
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self.rejected = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise OSError(f"{self.path}: another sshguardd is already listening")
            self.path.unlink()  # stale, from a daemon that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # no window in which the socket is more open than 0600
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select

        assert self._sock is not None
        while True:
            ready, _, _ = select.select([self._sock, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    self._one(conn)
                except OSError as exc:  # the client went away: its problem, not ours
                    log.debug("control client: %s", exc)
                except Exception:
                    log.exception("control request failed")

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(self.client_timeout)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in self.allowed_uids:
            self.rejected += 1
            log.warning("control: refused peer pid %d uid %d", pid, uid)
            _send(conn, {"ok": False, "error": "permission denied"})
            return
        try:
            request = self._read(conn)
        except ValueError as exc:
            self.rejected += 1
            _send(conn, {"ok": False, "error": str(exc)})
            return
        try:
            response = self.handler(request)
        except Exception as exc:  # a bug in a handler must not kill the server
            log.exception("control handler failed on %r", request.get("cmd"))
            response = {"ok": False, "error": f"internal error: {exc}"}
        _send(conn, response)

    def _read(self, conn: socket.socket) -> dict[str, Any]:
        buf = bytearray()
        while b"\n" not in buf:
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                raise ValueError("request timed out") from None
            if not chunk:
                break
            buf += chunk
            if len(buf) > self.max_request:
                raise ValueError(f"request larger than {self.max_request} bytes")
        line = bytes(buf).split(b"\n", 1)[0]
        if len(line) > self.max_request:
            raise ValueError(f"request larger than {self.max_request} bytes")
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed request: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ValueError('malformed request: expected {"cmd": "..."}')
        return request

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(10)
            self._thread = None
            os.close(self._stop_r)
            os.close(self._stop_w)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(path: Path | str, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer.

    Raises ControlUnavailable when nothing listens on `path` (or it answers garbage)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlUnavailable(f"cannot reach sshguardd at {path}: {exc.strerror or exc}") \
                from None
        try:
            sock.sendall(json.dumps(obj).encode() + b"\n")
            buf = bytearray()
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_RESPONSE:
                    raise ControlUnavailable("answer too large")
        except OSError as exc:
            raise ControlUnavailable(f"sshguardd at {path} did not answer: {exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(bytes(buf).split(b"\n", 1)[0])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlUnavailable(f"sshguardd at {path} sent a malformed answer") from None
    if not isinstance(answer, dict):
        raise ControlUnavailable(f"sshguardd at {path} sent a malformed answer")
    return answer
