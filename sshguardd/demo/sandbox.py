"""A throwaway copy of this host's system, for end-to-end tests and `sshguardd demo`.

`Sandbox` starts a *holder* process in private mount, network and PID namespaces
(`unshare --mount --net --pid --fork --mount-proc`). Inside it builds, without touching
the host (recipes verified in TESTBED.md):

- a private mount table (`mount --make-rprivate /`) and network stack with `lo` up, so
  nft rules, sshd's port 22 and extra loopback addresses stay inside;
- copy-on-write overlays on /etc (and /var by default), so the daemon runs with its real
  default paths (/etc/ssh/sshd_config, /etc/shadow, /var/lib/sshguardd) while the host's
  files stay unchanged; the upper and work dirs live under `workdir`;
- a tmpfs on /run with /run/sshd, /run/systemd/journal and /run/log/journal, and a
  private systemd-journald with volatile storage (it would otherwise write to the host's
  /var/log/journal when /var is not overlaid);
- a private /dev tmpfs holding the host's device nodes plus /dev/log, so syslog(3)
  callers such as sshd reach the private journald.

The holder is PID 1 of the PID namespace: killing it ends every process inside, so
`close()` (or the holder noticing that its stdin pipe closed because the test process
died) leaves nothing behind. Mounts live only in the private mount namespace and vanish
with it.

Commands run inside via `nsenter -t HOLDER -m -n -p` (their working directory is the
sandbox's /). TCP sockets for clients are made by a short-lived thread that `setns()`es
into the holder's network namespace; a socket keeps the namespace it was created in, so the
test process can then use it from any thread (e.g. with `paramiko.Transport(sock)`).

Requires root, util-linux (unshare, nsenter, mount), iproute2, and for the optional parts
systemd-journald and OpenSSH's sshd.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sshguardd.demo import holder as holder_script

T = TypeVar("T")

CLONE_NEWNET = 0x40000000

class SandboxError(RuntimeError):
    """The sandbox could not be built or a command inside it failed."""


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; return that value.

    Raises TimeoutError naming `what` after `timeout` seconds. Exceptions from the
    predicate propagate. This is the one place tests wait: never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    event = threading.Event()  # wait() on an Event instead of sleep(): same effect
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        event.wait(interval)


class Sandbox:
    """Private namespaces with an /etc overlay, a private journald and optional sshd.

    `Sandbox(workdir, etc_overlay=True, journald=True, overlays=("/var",), dev=True)`:
    `workdir` must exist; the sandbox makes (and on close removes) a private directory in
    it for overlay upper/work dirs. `overlays` are further directories made copy-on-write
    when `etc_overlay` is true (by default /var, so /var/lib/sshguardd and /var/log stay
    private). Use as a context manager or call `start()` / `close()`.
    """

    def __init__(self, workdir: Path | str, *, etc_overlay: bool = True, journald: bool = True,
                 overlays: Sequence[str] = ("/var",), dev: bool = True,
                 journald_bin: str = "/lib/systemd/systemd-journald",
                 sshd_bin: str = "/usr/sbin/sshd", ready_timeout: float = 20.0) -> None:
        self.workdir = Path(workdir)
        self.etc_overlay = etc_overlay
        self.journald = journald
        self.overlays = (["/etc", *overlays] if etc_overlay else [])
        self.dev = dev or journald  # /dev/log only makes sense with a journald
        self.journald_bin = journald_bin
        self.sshd_bin = sshd_bin
        self.ready_timeout = ready_timeout
        self.pid: int | None = None  # the holder, as seen from outside
        self._unshare: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._children: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._unshare is not None:
            raise SandboxError("sandbox already started")
        self._dir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=self.workdir))
        overlays = []
        for target in self.overlays:
            name = target.strip("/").replace("/", "_") or "root"
            upper, work = self._dir / f"{name}.upper", self._dir / f"{name}.work"
            upper.mkdir()
            work.mkdir()
            overlays.append((target, upper.name, work.name))
        hostdev = self._dir / "hostdev"
        hostdev.mkdir()
        spec = {"layers": str(self._dir), "overlays": overlays, "dev": self.dev,
                "hostdev": str(hostdev), "journald": self.journald,
                "journald_bin": self.journald_bin}
        holder = self._dir / "holder.py"
        holder.write_text(holder_script.SCRIPT)
        with open(self._dir / "holder.log", "wb") as errlog:  # the child keeps its own copy
            self._unshare = subprocess.Popen(
                ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--",
                 sys.executable, "-I", str(holder), json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                start_new_session=True,  # a Ctrl-C at the terminal is ours to handle
            )
        try:
            self._await_ready()
        except BaseException:
            self.close()
            raise

    def _await_ready(self) -> None:
        if self._unshare is None or self._unshare.stdout is None:
            raise SandboxError("sandbox is not starting")
        result: list[bytes] = []
        stdout = self._unshare.stdout
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.ready_timeout)
        if not result or result[0] != holder_script.READY:
            detail = self._holder_log()
            if reader.is_alive():
                self._kill_holder()
                reader.join(5)
            raise SandboxError(f"sandbox did not start: {detail or 'no output'}")
        self.pid = self._find_holder()

    def _find_holder(self) -> int:
        if self._unshare is None:
            raise SandboxError("sandbox is not running")
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        pids = children.read_text().split()
        if len(pids) != 1:
            raise SandboxError(f"expected one holder process under unshare, found {pids!r}")
        return int(pids[0])

    def _holder_log(self) -> str:
        try:
            return (self._dir / "holder.log").read_text(errors="replace").strip()  # type: ignore[operator]
        except OSError:
            return ""

    def _kill_holder(self) -> None:
        if self._unshare is None:
            return
        pid = self.pid
        if pid is None:
            try:
                pid = self._find_holder()
            except (OSError, SandboxError):
                pid = None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)  # PID 1 of the namespace: takes all with it
            except ProcessLookupError:
                pass
        if self._unshare.poll() is None:
            try:
                self._unshare.wait(10)
            except subprocess.TimeoutExpired:
                self._unshare.kill()
                self._unshare.wait(10)

    def close(self) -> None:
        """Kill everything inside, reap it, and remove the sandbox's directory."""
        if self._unshare is None:
            return
        self._kill_holder()
        for stream in (self._unshare.stdin, self._unshare.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # broken pipe: the holder is gone
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            # The process inside died with the namespace; its nsenter parent follows.
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        self._unshare = None
        self.pid = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- running things inside ---------------------------------------------------------

    def _nsenter(self, argv: Sequence[str]) -> list[str]:
        if self.pid is None:
            raise SandboxError("sandbox is not running")
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "--", *map(str, argv)]

    def run(self, argv: Sequence[str], *, check: bool = False, timeout: float | None = 60,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run` inside the sandbox (cwd is the sandbox's /).

        With check=True a failure raises SandboxError quoting argv and stderr.
        """
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        result = subprocess.run(self._nsenter(argv), timeout=timeout, check=False, **kw)
        if check and result.returncode != 0:
            raise SandboxError(f"{list(argv)!r} exited {result.returncode}: "
                               f"{(result.stderr or '').strip()}")
        return result

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen` inside the sandbox; the sandbox reaps it on close().

        The returned Popen is nsenter's; signal the process inside with `signal()`.
        It runs in a session of its own, so a Ctrl-C at the terminal reaches only the
        caller, which decides what to stop.
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self._nsenter(argv), **kw)
        with self._lock:
            self._children.append(proc)
        return proc

    def inner_pid(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
        """The host-side pid of the process `popen()` started inside (nsenter's child)."""
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

        def child() -> int:  # 0: not there yet
            try:
                pids = children.read_text().split()
                if not pids:
                    return 0
                # nsenter forks, then its child execs the command: until then the child
                # still shows nsenter's own command line.
                own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                theirs = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
            except FileNotFoundError:
                if proc.poll() is not None:
                    raise SandboxError(f"{proc.args!r} already exited") from None
                return 0
            return int(pids[0]) if theirs and theirs != own else 0

        return wait_for(child, timeout, what=f"the process inside for {proc.pid}")

    def signal(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the process inside (nsenter does not forward signals)."""
        try:
            os.kill(self.inner_pid(proc), sig)
        except (ProcessLookupError, SandboxError):
            pass  # already gone

    def path(self, p: str | os.PathLike[str]) -> Path:
        """The sandbox's view of absolute path `p`, as a path usable from outside."""
        if self.pid is None:
            raise SandboxError("sandbox is not running")
        return Path(f"/proc/{self.pid}/root") / str(p).lstrip("/")

    # -- network -----------------------------------------------------------------------

    def add_address(self, addr: str) -> None:
        """Add `addr` (IPv4 or IPv6, no prefix) to the sandbox's lo.

        127.0.0.0/8 is already on lo; adding one of those is a no-op.
        """
        ip = ipaddress.ip_address(addr)
        if ip.version == 4 and ip in ipaddress.ip_network("127.0.0.0/8"):
            return
        plen = 32 if ip.version == 4 else 128
        # nodad: a fresh IPv6 address is otherwise "tentative" for a moment and bind() fails
        extra = ["nodad"] if ip.version == 6 else []
        self.run(["ip", f"-{ip.version}", "addr", "add", f"{ip}/{plen}", "dev", "lo", *extra],
                 check=True)

    def in_netns(self, fn: Callable[[], T]) -> T:
        """Call `fn` on a short-lived thread inside the sandbox's network namespace.

        setns() on a thread changes only that thread; the thread then ends, so no thread
        of the caller's process is left in the sandbox. Sockets made by `fn` stay in it.
        """
        if self.pid is None:
            raise SandboxError("sandbox is not running")
        values: list[T] = []
        errors: list[BaseException] = []
        nspath = f"/proc/{self.pid}/ns/net"

        def target() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({nspath}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                values.append(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=target, name="sandbox-netns")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return values[0]

    def connect(self, src: str | None, dst: str, port: int = 22,
                timeout: float | None = 10.0) -> socket.socket:
        """A TCP socket connected from `src` (None: any) to `dst`:`port` inside the sandbox.

        The returned socket is blocking with `timeout` set; the caller owns it.
        """
        family = socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET

        def make() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                if src is not None:
                    sock.bind((src, 0))
                sock.connect((dst, port))
            except BaseException:
                sock.close()
                raise
            return sock

        return self.in_netns(make)

    def listening(self, port: int) -> bool:
        """Whether something listens on TCP `port` in the sandbox (from /proc/PID/net)."""
        if self.pid is None:
            return False
        want = f"{port:04X}"
        for name in ("tcp", "tcp6"):
            try:
                lines = Path(f"/proc/{self.pid}/net/{name}").read_text().splitlines()[1:]
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                if fields[1].rsplit(":", 1)[1] == want and fields[3] == "0A":  # 0A = LISTEN
                    return True
        return False

    # -- services ----------------------------------------------------------------------

    def start_sshd(self, port: int = 22, options: Mapping[str, str | Iterable[str]] | None = None,
                   listen: Sequence[str] = ("127.0.0.1", "::1"),
                   timeout: float = 15.0) -> subprocess.Popen[Any]:
        """Start the stock sshd (the overlay's /etc/ssh/sshd_config) on `port`.

        Host keys are made with `ssh-keygen -A` (in the overlay, so the host keeps its own).
        `options` are extra `-o` overrides, e.g. {"PasswordAuthentication": "yes"} for ban
        tests; a list value gives the keyword several times. sshd runs in the foreground
        (-D) and logs through syslog(3) to the private journald. Returns once it listens.
        """
        if not self.etc_overlay:
            raise SandboxError("start_sshd needs etc_overlay=True (ssh-keygen -A writes /etc/ssh)")
        self.run(["ssh-keygen", "-A"], check=True)
        argv = [self.sshd_bin, "-D", "-o", f"Port={port}", "-o", "PidFile=/run/sshd.pid"]
        for addr in listen:
            argv += ["-o", f"ListenAddress={addr}"]
        for key, value in (options or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            for v in values:
                argv += ["-o", f"{key}={v}"]
        self.run([self.sshd_bin, "-t", *argv[2:]], check=True)
        proc = self.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SandboxError(f"sshd exited {proc.returncode}: {err.strip()}")
            return self.listening(port)

        wait_for(up, timeout, what=f"sshd listening on port {port}")
        return proc

    def journal(self, *args: str, timeout: float = 30) -> str:
        """`journalctl --no-pager ARGS` inside the sandbox; its stdout."""
        return str(self.run(["journalctl", "--no-pager", *args], check=True,
                            timeout=timeout).stdout)
