"""The control socket: a root-only Unix stream socket speaking one JSON object each way.

Protocol: the client connects, sends one JSON object (UTF-8, terminated by a newline or by
shutting down its write side), and reads one JSON object back, newline-terminated:

    {"cmd": "status"}                                  -> {"ok": true, ...}
    {"cmd": "bans"}                                    -> {"ok": true, "bans": [...]}
    {"cmd": "ban", "address": "ADDR", "duration": 600} -> {"ok": true, "ban": {...}}
    {"cmd": "unban", "address": "ADDR"}                -> {"ok": true, "removed": [...]}
    {"cmd": "reload"}            -> {"ok": true, "result": "applied", "changed": [...]}
                                 or {"ok": false, "result": "refused", "problems": [...]}

Errors are {"ok": false, "error": "..."}. Requests are capped at MAX_REQUEST bytes, must
arrive whole within CLIENT_TIMEOUT seconds of connecting (one deadline, not one per
recv()), and may not hold non-finite numbers; anything else is answered with an error and
dropped, and never reaches the daemon's state. Clients are served concurrently. Peers
are checked with SO_PEERCRED (root only by default) on top of the socket file's 0600 mode,
so a mistake in directory permissions alone does not open it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sshguardd.effects.selector_server import Conn, SelectorServer

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024
MAX_RESPONSE = 64 * 1024 * 1024  # a client's cap on the answer (a large ban list)
CLIENT_TIMEOUT = 3.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlUnavailable(Exception):
    """The daemon is not reachable on its control socket."""


class ControlServer(SelectorServer):
    """Accepts connections on `path` and answers each request with
    `handler(request) -> response`, called on one of `workers` threads (the daemon's
    handler hands the request to its main loop and waits for the reply).

    Reading happens on the selector loop (selector_server.py), so a slow or silent client
    holds one connection slot, never the server: `client_timeout` is the deadline for the
    whole request, up to `max_connections` clients are served at once."""

    name = "control"

    def __init__(self, path: Path | str, handler: Handler, *,
                 allowed_uids: Iterable[int] = (0,), max_request: int = MAX_REQUEST,
                 client_timeout: float = CLIENT_TIMEOUT, max_connections: int = 16,
                 workers: int = 4, answer_timeout: float = 60.0) -> None:
        super().__init__(max_connections=max_connections, request_timeout=client_timeout,
                         max_request=max_request, answer_timeout=answer_timeout)
        self.path = Path(path)
        self.handler = handler
        self.allowed_uids = frozenset(allowed_uids)
        self.client_timeout = client_timeout
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
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
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="control")
        self._start(sock)

    def _accepted(self, conn: Conn) -> bytes | None:
        creds = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                     struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        conn.peer = (pid, uid)
        if uid not in self.allowed_uids:
            self.rejected += 1
            log.warning("control: refused peer pid %d uid %d", pid, uid)
            return _encode({"ok": False, "error": "permission denied"})
        return None

    def _complete(self, buf: bytes, eof: bool) -> bool:
        return b"\n" in buf or eof

    def _too_large(self) -> bytes:
        self.rejected += 1
        return _encode({"ok": False, "error": f"request larger than {self.max_request} bytes"})

    def _timeout_answer(self) -> bytes:
        self.rejected += 1
        return _encode({"ok": False, "error": "request timed out"})

    def _answer(self, conn: Conn, request: bytes) -> bytes | None:
        try:
            parsed = parse_request(request.split(b"\n", 1)[0], self.max_request)
        except ValueError as exc:
            self.rejected += 1
            return _encode({"ok": False, "error": str(exc)})
        if self._pool is None:  # stopping
            return _encode({"ok": False, "error": "shutting down"})
        self._pool.submit(self._handle, conn, parsed)
        return None

    def _handle(self, conn: Conn, request: dict[str, Any]) -> None:
        try:
            response = self.handler(request)
        except Exception as exc:  # a bug in a handler must not kill the server
            log.exception("control handler failed on %r", request.get("cmd"))
            response = {"ok": False, "error": f"internal error: {exc}"}
        try:
            data = _encode(response)
        except (TypeError, ValueError) as exc:
            log.error("control answer to %r not encodable: %s", request.get("cmd"), exc)
            data = _encode({"ok": False, "error": "internal error: bad answer"})
        self.reply(conn, data)

    def stop(self) -> None:
        was_listening = self._sock is not None
        self._stop_thread()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if was_listening:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"malformed request: {name} is not a number sshguardd accepts")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise ValueError(f"malformed request: {text} is out of range")
    return value


def parse_request(line: bytes, max_request: int = MAX_REQUEST) -> dict[str, Any]:
    """One request line -> its JSON object. Raises ValueError (its text is the answer)
    for oversized, non-UTF-8, non-JSON, non-object, or non-finite numbers (Infinity,
    NaN, 1e999: issue 11, a ban "until inf")."""
    if len(line) > max_request:
        raise ValueError(f"request larger than {max_request} bytes")
    try:
        request = json.loads(line.decode("utf-8"), parse_constant=_reject_constant,
                             parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed request: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise ValueError('malformed request: expected {"cmd": "..."}')
    return request


def _encode(obj: dict[str, Any]) -> bytes:
    # allow_nan=False: an answer never carries a value the client would choke on.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


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
