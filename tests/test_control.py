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
