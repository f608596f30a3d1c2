"""One thread, one selector, bounded clients: the loop under the metrics and control servers.

Any local user can open idle connections to a loopback port, and a slow client can dribble
a request byte by byte. The old servers gave each connection a thread (prometheus_client)
or served one client at a time with a fresh timeout per recv() (control): 1,100 idle
sockets used every descriptor and stopped bans and repairs (issue 10). Here:

- every connection lives in one selector on one thread, non-blocking;
- at most `max_connections` at a time: a new one evicts the oldest (a scraper's request
  takes milliseconds, an idler's never ends), so descriptors stay bounded;
- each connection has one deadline for its whole request *and* answer;
- accept() failing with EMFILE/ENFILE leaves the listening socket readable, so the loop
  would spin on it; it is taken out of the selector for a second instead, and `problem`
  reports the exhaustion so the daemon's healthy() (and the watchdog) can act.

Subclasses say when a request is complete and what to answer (`_complete`, `_answer`);
an answer may be given later from another thread with `reply()`.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_STARVED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 1.0  # seconds the listener rests after accept() ran out of descriptors


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None
    busy: bool = False  # the request is being answered elsewhere (reply() comes later)
    peer: object = None


class SelectorServer:
    """Serves connections from a listening socket on a thread of its own."""

    name = "server"

    def __init__(self, *, max_connections: int, request_timeout: float, max_request: int,
                 answer_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """request_timeout: for reading the whole request, and again for writing the whole
        answer; answer_timeout: for computing it (a control request waits on the loop)."""
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.answer_timeout = answer_timeout
        self.max_request = max_request
        self.clock = clock
        self.accept_errors = 0
        self.evicted = 0
        self.timed_out = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: OrderedDict[int, Conn] = OrderedDict()  # oldest first
        self._replies: list[tuple[Conn, bytes]] = []
        self._lock = threading.Lock()
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._starved_at: float | None = None

    # -- subclass hooks --------------------------------------------------------------------

    def _accepted(self, conn: Conn) -> bytes | None:
        """A new connection: bytes to answer at once (and close), or None to read."""
        return None

    def _complete(self, buf: bytes, eof: bool) -> bool:
        raise NotImplementedError

    def _answer(self, conn: Conn, request: bytes) -> bytes | None:
        """The answer, or None when it will come through reply()."""
        raise NotImplementedError

    def _too_large(self) -> bytes:
        return b""

    def _timeout_answer(self) -> bytes:
        return b""

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Made here, not on the thread: every descriptor the loop needs exists before it
        # runs, so a process already out of descriptors cannot kill it.
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def problem(self) -> str | None:
        """Why this server cannot do its job right now, or None (for healthy())."""
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return f"{self.name} thread died"
        if self._starved_at is not None:  # cleared by the next accept() that works
            return f"{self.name}: out of file descriptors (accept failed)"
        return None

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already awake

    def _stop_thread(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout)
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def reply(self, conn: Conn, data: bytes) -> None:
        """Answer `conn` from any thread (after _answer returned None)."""
        with self._lock:
            self._replies.append((conn, data))
        self._wake()

    # -- the loop ----------------------------------------------------------------------------

    def _serve(self) -> None:
        sel, listener = self._sel, self._sock
        if listener is None:
            return
        listening = True
        sel.register(listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        resume_at = 0.0
        try:
            while not self._stopping:
                now = self.clock()
                if not listening and now >= resume_at:
                    if self._accept(sel):  # descriptors again (or nobody waiting)
                        sel.register(listener, selectors.EVENT_READ, None)
                        listening = True
                    else:
                        resume_at = self.clock() + ACCEPT_PAUSE
                self._expire(sel, now)
                waits = [c.deadline for c in self._conns.values()]
                if not listening:
                    waits.append(resume_at)
                timeout = max(0.0, min(waits) - now) if waits else None
                for key, mask in sel.select(timeout):
                    if key.fileobj is listener:
                        if not self._accept(sel):
                            sel.unregister(listener)
                            listening = False
                            resume_at = self.clock() + ACCEPT_PAUSE
                    elif key.fileobj == self._wake_r:
                        self._drain_wake(sel)
                    else:
                        self._io(sel, key.data, mask)
        except Exception:
            log.exception("%s loop failed", self.name)
            raise
        finally:
            for c in list(self._conns.values()):
                self._close(sel, c)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> bool:
        """Accept what is pending; False when out of descriptors (pause the listener)."""
        listener = self._sock
        if listener is None:
            return True
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                self._starved_at = None
                return True
            except OSError as exc:
                if exc.errno in _STARVED:
                    self.accept_errors += 1
                    if self._starved_at is None:
                        log.error("%s: accept failed: %s; pausing it", self.name, exc)
                        self._starved_at = self.clock()
                    return False
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                raise
            self._starved_at = None
            sock.setblocking(False)
            while len(self._conns) >= self.max_connections:
                _, oldest = self._conns.popitem(last=False)
                self.evicted += 1
                self._close(sel, oldest, forget=False)
            conn = Conn(sock, self.clock() + self.request_timeout)
            try:
                early = self._accepted(conn)
            except OSError:
                sock.close()
                continue
            self._conns[id(conn)] = conn
            sel.register(sock, selectors.EVENT_READ, conn)
            if early is not None:
                self._send(sel, conn, early)

    def _drain_wake(self, sel: selectors.BaseSelector) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            replies, self._replies = self._replies, []
        for conn, data in replies:
            if id(conn) in self._conns and self._conns[id(conn)] is conn:
                self._send(sel, conn, data)

    def _io(self, sel: selectors.BaseSelector, conn: Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE and conn.out is not None:
                n = conn.sock.send(conn.out)
                conn.out = conn.out[n:]
                if not conn.out:
                    self._close(sel, conn)
                return
            if not mask & selectors.EVENT_READ or conn.busy or conn.out is not None:
                return
            chunk = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._close(sel, conn)
            return
        conn.inbuf += chunk
        if len(conn.inbuf) > self.max_request:
            self._send(sel, conn, self._too_large())
            return
        if self._complete(bytes(conn.inbuf), eof=not chunk):
            conn.busy = True
            conn.deadline = self.clock() + self.answer_timeout
            answer = self._answer(conn, bytes(conn.inbuf))
            if answer is not None:
                self._send(sel, conn, answer)
        elif not chunk:
            self._close(sel, conn)

    def _send(self, sel: selectors.BaseSelector, conn: Conn, data: bytes) -> None:
        if not data:
            self._close(sel, conn)
            return
        conn.out = memoryview(data)
        conn.busy = False
        conn.deadline = self.clock() + self.request_timeout
        try:
            sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
        except (KeyError, ValueError):
            return

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self.timed_out += 1
            data = self._timeout_answer() if conn.out is None else b""
            if data:
                try:
                    conn.sock.send(data)  # best effort: the socket buffer takes it or not
                except OSError:
                    pass
            self._close(sel, conn)

    def _close(self, sel: selectors.BaseSelector, conn: Conn, forget: bool = True) -> None:
        if forget:
            self._conns.pop(id(conn), None)
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
