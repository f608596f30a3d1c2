"""The sandbox really isolates: /etc, nft, journal, sshd, addresses, and cleanup."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from pathlib import Path

import pytest
from systemd import journal

from sshguardd.demo.sandbox import Sandbox, SandboxError, wait_for

pytestmark = pytest.mark.e2e


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_etc_writes_stay_in_the_overlay(sandbox: Sandbox) -> None:
    host_before = _digest("/etc/ssh/sshd_config")
    inside = sandbox.path("/etc/ssh/sshd_config")
    assert inside.read_bytes() == Path("/etc/ssh/sshd_config").read_bytes()

    # Written from outside through /proc/PID/root, and from inside by a process there.
    inside.write_text(inside.read_text() + "PermitRootLogin yes\n")
    sandbox.run(["sh", "-c", "echo 'PasswordAuthentication yes' >> /etc/ssh/sshd_config"],
                check=True)
    sandbox.run(["touch", "/etc/sandbox-probe"], check=True)

    seen = sandbox.run(["cat", "/etc/ssh/sshd_config"], check=True).stdout
    assert seen.endswith("PermitRootLogin yes\nPasswordAuthentication yes\n")
    assert _digest("/etc/ssh/sshd_config") == host_before
    assert not Path("/etc/sandbox-probe").exists()
    assert sandbox.path("/etc/sandbox-probe").exists()


def test_var_is_private_too(sandbox: Sandbox) -> None:
    sandbox.run(["mkdir", "-p", "/var/lib/sshguardd-sandbox-probe"], check=True)
    assert sandbox.path("/var/lib/sshguardd-sandbox-probe").is_dir()
    assert not Path("/var/lib/sshguardd-sandbox-probe").exists()


def test_nft_is_private_to_each_sandbox(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Sandbox(tmp_path / "a", journald=False) as a, \
            Sandbox(tmp_path / "b", journald=False) as b:
        ours = os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{a.pid}/ns/net").st_ino != ours
        a.run(["nft", "add", "table", "inet", "sandboxprobe"], check=True)
        assert "sandboxprobe" in a.run(["nft", "list", "tables"], check=True).stdout
        assert "sandboxprobe" not in b.run(["nft", "list", "tables"], check=True).stdout


def test_private_journald_is_readable_inside_and_from_outside(sandbox: Sandbox) -> None:
    sandbox.run(["systemd-cat", "-t", "sandboxprobe", "echo", "hello from inside"], check=True)
    wait_for(lambda: "hello from inside" in sandbox.journal("-t", "sandboxprobe"),
             what="the entry in journalctl")

    # The journal files are readable from outside through the sandbox's view of /run.
    def read_outside() -> list[str]:
        reader = journal.Reader(path=str(sandbox.path("/run/log/journal")))
        try:
            reader.add_match(SYSLOG_IDENTIFIER="sandboxprobe")
            return [e["MESSAGE"] for e in reader]
        finally:
            reader.close()

    assert wait_for(read_outside, what="the entry via journal.Reader") == ["hello from inside"]


def test_syslog_callers_reach_the_journal_via_dev_log(sandbox: Sandbox) -> None:
    sandbox.run(["logger", "-t", "sandboxsyslog", "via dev-log"], check=True)
    wait_for(lambda: "via dev-log" in sandbox.journal("-t", "sandboxsyslog"),
             what="logger's line in the journal")


def test_sshd_accepts_connections_from_chosen_addresses(sandbox: Sandbox) -> None:
    sshd = sandbox.start_sshd(options={"PasswordAuthentication": "yes"})
    assert sshd.poll() is None
    sandbox.add_address("2001:db8::2")
    for src, dst in (("127.0.0.2", "127.0.0.1"), ("2001:db8::2", "::1"), (None, "::1")):
        with sandbox.connect(src, dst, 22) as sock:
            if src is not None:
                assert sock.getsockname()[0] == src
            assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH")
    # sshd logged through /dev/log to the private journald, naming the client address.
    wait_for(lambda: "Connection closed by 2001:db8::2" in sandbox.journal("-t", "sshd"),
             what="sshd's log line for the IPv6 client")
    # The host keys were made in the overlay, not on the host.
    assert sandbox.path("/etc/ssh/ssh_host_ed25519_key").exists()


def test_connect_fails_clearly_when_nothing_listens(sandbox: Sandbox) -> None:
    with pytest.raises(ConnectionRefusedError):
        sandbox.connect("127.0.0.3", "127.0.0.1", 2)


def test_close_leaves_no_processes_mounts_or_dirs(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path)
    sb.start()
    sb.start_sshd()
    sleeper = sb.popen(["sleep", "600"])
    holder = sb.pid
    assert holder is not None
    netns = os.readlink(f"/proc/{holder}/ns/net")
    inside = [p for p in os.listdir("/proc") if p.isdigit() and _netns(p) == netns]
    assert len(inside) >= 4  # holder, journald, sshd, sleep (+ nsenter parents)
    sock = sb.connect(None, "127.0.0.1", 22)
    sb.close()
    sock.close()

    assert sleeper.returncode is not None
    assert not Path(f"/proc/{holder}").exists()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _netns(p) == netns]
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    assert list(tmp_path.iterdir()) == []
    sb.close()  # idempotent


def test_holder_exits_when_its_owner_goes_away(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path, journald=False)
    sb.start()
    holder = sb.pid
    assert sb._unshare is not None and sb._unshare.stdin is not None
    sb._unshare.stdin.close()  # what the kernel does when the owning process dies
    wait_for(lambda: not Path(f"/proc/{holder}").exists() or _zombie(holder),
             what="the holder to exit")
    sb.close()


def test_failed_command_raises_with_argv_and_stderr(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match=r"ls.*/nonexistent"):
        sandbox.run(["ls", "/nonexistent"], check=True)
    assert sandbox.run(["false"]).returncode == 1


def test_in_netns_leaves_the_caller_in_its_own_namespace(sandbox: Sandbox) -> None:
    ours = os.readlink("/proc/self/ns/net")
    theirs = sandbox.in_netns(lambda: os.readlink(f"/proc/self/task/{_gettid()}/ns/net"))
    assert theirs == os.readlink(f"/proc/{sandbox.pid}/ns/net") != ours
    assert os.readlink(f"/proc/self/task/{_gettid()}/ns/net") == ours
    with pytest.raises(socket.gaierror):
        sandbox.in_netns(lambda: socket.getaddrinfo("no.such.host.invalid", 22))


def _gettid() -> int:
    import threading
    return threading.get_native_id()


def _netns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _zombie(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_setup_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="journald"):
        Sandbox(tmp_path, journald_bin="/nonexistent/journald", ready_timeout=20).start()
    assert list(tmp_path.iterdir()) == []


def test_signal_reaches_the_process_inside(sandbox: Sandbox) -> None:
    proc = sandbox.popen(["sleep", "600"])
    inner = sandbox.inner_pid(proc)
    assert inner != proc.pid
    assert Path(f"/proc/{inner}/cmdline").read_bytes().startswith(b"sleep\0")
    sandbox.signal(proc)
    assert proc.wait(10) == 128 + 15 or proc.returncode == -15


def test_layers_may_live_under_an_overlaid_directory() -> None:
    # /var/tmp is where `sshguardd demo` keeps its layers, with /var itself overlaid.
    layers = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/var/tmp"))
    try:
        with Sandbox(layers, journald=False, overlays=("/var", "/root")) as sb:
            sb.run(["touch", "/root/sandbox-probe", "/var/sandbox-probe"], check=True)
            assert sb.path("/root/sandbox-probe").exists()
        assert not Path("/root/sandbox-probe").exists()
        assert not Path("/var/sandbox-probe").exists()
        assert list(layers.iterdir()) == []
    finally:
        layers.rmdir()
