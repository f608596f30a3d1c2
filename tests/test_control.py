"""The control socket with real Unix sockets: permissions, peer credentials, and bad input
that must be answered with an error without hurting the server."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from sshguardd.demo.sandbox import wait_for
from sshguardd.effects import control_socket as control
from sshguardd.effects.control_socket import ControlServer, ControlUnavailable


@pytest.fixture
def sockdir():
    # pytest's tmp_path lives under a 0700 directory; the non-root test needs to reach
    # the socket's directory to be refused by the socket itself.
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="ctl-"))
    os.chmod(d, 0o755)
    yield d
    import shutil

    shutil.rmtree(d)


def echo(req: dict[str, Any]) -> dict[str, Any]:
    if req["cmd"] == "boom":
        raise RuntimeError("handler bug")
    return {"ok": True, "echo": req}


@pytest.fixture
def server(sockdir: Path):
    srv = ControlServer(sockdir / "run" / "control.sock", echo, client_timeout=0.5)
    srv.start()
    yield srv
    srv.stop()


def raw(path: Path, payload: bytes, shut: bool = True) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        try:
            s.sendall(payload)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read everything
        buf = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def test_round_trip_and_socket_mode(server: ControlServer) -> None:
    assert control.request(server.path, {"cmd": "status"}) == {
        "ok": True, "echo": {"cmd": "status"}}
    st = server.path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0


@pytest.mark.parametrize("payload, error", [
    (b"not json\n", "malformed request"),
    (b"[1, 2]\n", "malformed request"),
    (b'{"no": "cmd"}\n', "malformed request"),
    (b'{"cmd": 5}\n', "malformed request"),
    (b"\xff\xfe\n", "malformed request"),
    (b"", "malformed request"),
])
def test_malformed_requests_get_an_error(server: ControlServer, payload: bytes,
                                         error: str) -> None:
    answer = raw(server.path, payload)
    assert answer["ok"] is False and error in answer["error"]
    assert control.request(server.path, {"cmd": "still-alive"})["ok"] is True


def test_oversized_request_is_refused(server: ControlServer) -> None:
    big = json.dumps({"cmd": "ban", "address": "x" * (control.MAX_REQUEST + 10)}).encode()
    answer = raw(server.path, big + b"\n")
    assert answer == {"ok": False,
                      "error": f"request larger than {control.MAX_REQUEST} bytes"}
    # a stream with no newline at all is cut off at the cap as well
    answer = raw(server.path, b"{" * (4 * control.MAX_REQUEST), shut=False)
    assert answer["ok"] is False and "larger than" in answer["error"]
    assert server.rejected == 2
    assert control.request(server.path, {"cmd": "x"})["ok"] is True


def test_silent_client_times_out_and_others_are_served(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(server.path))
        # served after the silent one is given up on (client_timeout=0.5)
        assert control.request(server.path, {"cmd": "next"}, timeout=5)["ok"] is True
        silent.settimeout(5)
        answer = json.loads(silent.recv(4096))
    assert answer == {"ok": False, "error": "request timed out"}


def test_handler_exception_is_an_error_not_a_crash(server: ControlServer) -> None:
    answer = control.request(server.path, {"cmd": "boom"})
    assert answer["ok"] is False and "handler bug" in answer["error"]
    assert control.request(server.path, {"cmd": "after"})["ok"] is True


def test_peer_credentials_checked(sockdir: Path) -> None:
    srv = ControlServer(sockdir / "c.sock", echo, allowed_uids=(4242,))
    srv.start()
    try:
        # root is refused here because only uid 4242 is allowed: SO_PEERCRED decides,
        # not only the file mode
        assert control.request(srv.path, {"cmd": "status"}) == {
            "ok": False, "error": "permission denied"}
    finally:
        srv.stop()


def test_non_root_cannot_connect(server: ControlServer) -> None:
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n sys.exit(13)\n")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-I", "-c", code, str(server.path)], capture_output=True)
    assert result.returncode == 13, result.stderr


def test_unavailable_when_nothing_listens(sockdir: Path) -> None:
    with pytest.raises(ControlUnavailable):
        control.request(sockdir / "nobody.sock", {"cmd": "status"})


def test_stale_socket_replaced_live_one_not(sockdir: Path) -> None:
    path = sockdir / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a killed daemon's leftover
    first = ControlServer(path, echo)
    first.start()
    try:
        second = ControlServer(path, echo)
        with pytest.raises(OSError, match="already listening"):
            second.start()
        assert control.request(path, {"cmd": "x"})["ok"] is True
    finally:
        first.stop()
    assert not path.exists()


def test_stop_leaves_no_thread(sockdir: Path) -> None:
    before = set(threading.enumerate())
    srv = ControlServer(sockdir / "c.sock", echo)
    srv.start()
    srv.stop()
    assert set(threading.enumerate()) == before


def thread_cpu_ticks(stat_fd: int) -> int:
    """utime + stime of a thread, from its /proc/self/task/TID/stat opened beforehand
    (re-read with pread: no new descriptor needed)."""
    fields = os.pread(stat_fd, 4096, 0).decode().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_a_dribbling_client_gets_one_deadline_and_others_are_served_meanwhile(
        server: ControlServer) -> None:
    # Issue 10: one slow client held the old one-at-a-time server for as long as it kept
    # sending a byte within each fresh 3 s recv() timeout.
    stop = threading.Event()
    answers: list[bytes] = []

    def dribble() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(server.path))
            s.settimeout(0.05)
            for byte in b'{"cmd": "status", "pad": "' + b"x" * 400:
                if stop.is_set():
                    break
                try:
                    s.send(bytes([byte]))
                    answers.append(s.recv(4096))
                    return
                except TimeoutError:
                    continue  # 0.05 s between bytes, each well inside any per-recv timeout
                except OSError:
                    return

    t = threading.Thread(target=dribble)
    t.start()
    try:
        wait_for(lambda: server.connections == 1, 5, what="the dribbler to connect")
        # served at once, while the dribbler still holds its connection
        assert control.request(server.path, {"cmd": "next"}, timeout=0.4)["ok"] is True
        wait_for(lambda: answers, 5, what="the dribbler's answer")
        assert json.loads(answers[0]) == {"ok": False, "error": "request timed out"}
    finally:
        stop.set()
        t.join(10)
    assert server.timed_out == 1


@pytest.mark.parametrize("number", [b"Infinity", b"-Infinity", b"NaN", b"1e999", b"-1e400"])
def test_non_finite_numbers_are_refused(sockdir: Path, number: bytes) -> None:
    # Issue 11: {"duration": Infinity} left a network "banned until inf" in memory.
    seen: list[dict[str, Any]] = []
    srv = ControlServer(sockdir / "c.sock", lambda r: seen.append(r) or {"ok": True})
    srv.start()
    try:
        answer = raw(srv.path, b'{"cmd": "ban", "address": "192.0.2.1", "duration": '
                     + number + b"}\n")
        assert answer["ok"] is False and "malformed request" in answer["error"]
        assert seen == []
        assert raw(srv.path, b'{"cmd": "ban", "duration": 600.5}\n')["ok"] is True
    finally:
        srv.stop()


def test_accept_out_of_descriptors_pauses_instead_of_spinning(server: ControlServer) -> None:
    # Issue 10: the control thread spun at 50-100 % CPU on accept() EMFILE.
    import resource

    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    tid = server._thread.native_id  # type: ignore[union-attr]
    stat_fd = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 2,
                                                    hard))
        try:
            while True:
                filler.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        for c in clients:
            c.connect(str(server.path))  # needs no new descriptor here; accept() does
        wait_for(lambda: server.problem, 5, what="the exhaustion to be reported")
        ticks, errors = thread_cpu_ticks(stat_fd), server.accept_errors
        wait_for(lambda: server.accept_errors >= errors + 2, 5, what="two more tries")
        # two paused retries (>= 1 s apart) cost almost no CPU; a spin costs 100 %
        assert thread_cpu_ticks(stat_fd) - ticks < 20
        assert "out of file descriptors" in (server.problem or "")
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(stat_fd)
    for c in clients:
        c.sendall(b'{"cmd": "back"}\n')
        c.settimeout(5)
        assert json.loads(c.recv(4096))["ok"] is True
        c.close()
    assert server.problem is None
