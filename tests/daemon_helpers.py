"""Running the real `sshguardd run` inside a Sandbox, for the daemon and end-to-end tests.

The daemon runs as a process in the sandbox's namespaces with its real default paths
(/etc/sshguardd/config.toml in the /etc overlay, /var/lib/sshguardd in the /var overlay,
/run/sshguardd/control.sock on the sandbox's /run), reads the sandbox's private journald
and owns an nft table in the sandbox's network namespace.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.effects import control_socket as control

CONFIG = "/etc/sshguardd/config.toml"
SOCKET = "/run/sshguardd/control.sock"
REPO = Path(__file__).resolve().parent.parent


# Every DaemonProc made during the current test, so a failing test's report can carry the
# daemons' own logs (tests/conftest.py): a timeout alone says nothing of why.
STARTED: list[DaemonProc] = []


class DaemonProc:
    """One `sshguardd run` inside `sb`. Its stderr goes to `log_path` (outside)."""

    def __init__(self, sb: Sandbox, log_path: Path, notify_socket: Path | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self.sb = sb
        self.args = args
        self.log_path = log_path
        self.notify_socket = notify_socket
        self.extra_env = env or {}
        self.proc: subprocess.Popen[Any] | None = None
        STARTED.append(self)

    def start(self, wait: bool = True) -> DaemonProc:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}
        if self.notify_socket is not None:
            env["NOTIFY_SOCKET"] = str(self.notify_socket)
        env.update(self.extra_env)
        argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                sys.executable, "-m", "sshguardd", "run", "--config", CONFIG, *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = self.sb.popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                return bool(self.request({"cmd": "status"}).get("ok"))
            except control.ControlUnavailable:
                return False
        wait_for(up, timeout, interval=0.05, what="the daemon's control socket")

    @property
    def socket(self) -> Path:
        return self.sb.path(SOCKET)

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        return control.request(self.socket, obj)

    def status(self) -> dict[str, Any]:
        return self.request({"cmd": "status"})

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`sshguardd ARGS` inside the sandbox (the real CLI, talking to the socket)."""
        return self.sb.run(["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "sshguardd",
                            *args, "--config", CONFIG])

    def pid(self) -> int:
        """The daemon's pid as seen from outside (the child of nsenter's env)."""
        st = self.status()
        inner = st.get("pid")
        if inner is None:
            raise AssertionError(f"the daemon did not say its pid: {st}")
        # nsenter -> env (exec'd python); find the host pid whose NSpid ends with inner
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                for line in (p / "status").read_text().splitlines():
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) > 1 and int(ids[-1]) == inner and \
                                os.readlink(f"/proc/{p.name}/ns/pid") == \
                                os.readlink(f"/proc/{self.sb.pid}/ns/pid"):
                            return int(p.name)
            except OSError:
                continue
        raise AssertionError(f"daemon pid {inner} not found")

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid(), sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                self.send_signal(sig)
            except (AssertionError, control.ControlUnavailable):
                pass  # already stopping / not answering: wait for nsenter below
            self.proc.wait(timeout)
        return self.proc.returncode

    def kill9(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(20)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def write_config(sb: Sandbox, text: str) -> None:
    path = sb.path(CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def kernel_elements(sb: Sandbox, table: str = "sshguardd") -> set[str]:
    """Every element of every set in our table, as nft reports them ('10.0.0.5',
    '2001:db8::/64'); empty when the table does not exist."""
    out = sb.run(["nft", "-j", "list", "table", "inet", table])
    if out.returncode != 0:
        return set()
    found: set[str] = set()
    for item in json.loads(out.stdout)["nftables"]:
        s = item.get("set")
        if not s:
            continue
        for el in s.get("elem", []):
            found.add(_element(el))
    return found


def _element(el: Any) -> str:
    if isinstance(el, str):
        return el
    if isinstance(el, dict):
        if "elem" in el:
            return _element(el["elem"]["val"] if isinstance(el["elem"], dict) else el["elem"])
        if "prefix" in el:
            return f"{el['prefix']['addr']}/{el['prefix']['len']}"
        if "range" in el:
            return "-".join(map(str, el["range"]))
        if "val" in el:
            return _element(el["val"])
    return str(el)


def banned(sb: Sandbox, addr: str) -> bool:
    """Is addr (or a network given in CIDR) an element of our kernel sets? A /64 may be
    stored as its network address in a set matched through a prefix mask."""
    elements = kernel_elements(sb)
    if "/" not in addr:
        return addr in elements
    return addr in elements or addr.split("/")[0] in elements


class Sender:
    """A long-lived syslog sender inside the sandbox: a copy of `logger` named `exe_name`
    (so journald records _COMM=exe_name), reading lines from stdin. It must outlive its
    messages: journald reads _COMM from /proc when the datagram arrives."""

    _dir: Path | None = None

    def __init__(self, sb: Sandbox, exe_name: str = "sshd", *pre: str, tag: str = "sshd"):
        if Sender._dir is None or not Sender._dir.exists():
            d = Path(tempfile.mkdtemp(prefix="sshguardd-senders-"))
            os.chmod(d, 0o755)
            Sender._dir = d
        exe = Sender._dir / exe_name
        if not exe.exists():
            shutil.copy("/usr/bin/logger", exe)
            os.chmod(exe, 0o755)
        self.sb = sb
        self.comm = Path(exe_name).name[:15]  # what the kernel keeps as the comm
        self.sent = 0
        self.proc = sb.popen([*pre, str(exe), "-u", "/dev/log", "-p", "auth.info", "-t", tag],
                             stdin=subprocess.PIPE, text=True)

    def say(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.sent += len(lines)

    def _journal_pid(self) -> str:
        """Our pid as journald records it: the last NSpid entry (the sandbox's pid
        namespace), found once; the process does not change while we wait."""
        status = Path(f"/proc/{self.sb.inner_pid(self.proc)}/status").read_text()
        return next(ln.split()[-1] for ln in status.splitlines() if ln.startswith("NSpid:"))

    def stored(self, pid: str | None = None) -> int:
        """How many of our lines journald has stored with our _COMM (seen from inside)."""
        pid = pid or self._journal_pid()
        out = self.sb.journal(f"_PID={pid}", f"_COMM={self.comm}", "-o", "cat")
        return len(out.splitlines())

    def close(self) -> None:
        """End the sender once journald has stored every line it said: a sender that exits
        first (a loaded machine, a busy journald) leaves its last lines without _COMM,
        which the daemon's trust rule rightly refuses."""
        assert self.proc.stdin is not None
        try:
            if self.sent and self.proc.poll() is None:
                pid = self._journal_pid()
                wait_for(lambda: self.stored(pid) >= self.sent, 20,
                         what=f"journald to store {self.sent} lines from {self.comm}")
        finally:
            self.proc.stdin.close()
            self.proc.wait(10)


def failed(addr: str, n: int = 1, user: str = "nobody") -> list[str]:
    """n failed-password lines from addr, each on its own source port."""
    return [f"Failed password for invalid user {user} from {addr} port {40000 + i} ssh2"
            for i in range(n)]


class NotifyCollector:
    """Stands in for systemd's end of $NOTIFY_SOCKET: a thread reads every datagram as
    soon as it arrives and keeps it with its arrival time (time.monotonic()).

    Reading at once matters: a Unix datagram socket queues only net.unix.max_dgram_qlen
    (10 by default in a fresh network namespace) datagrams, after which the daemon's
    sd_notify sends block, so a test that read only now and then would slow the daemon's
    loop down and measure its own listener. Every wait has a deadline."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)  # how often the thread looks at the stop flag
        self.messages: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-collector",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data))

    def snapshot(self) -> list[tuple[float, bytes]]:
        with self._lock:
            return list(self.messages)

    def fields(self, since: float = 0.0) -> list[dict[str, str]]:
        """The datagrams received at or after `since`, each as its KEY=VALUE fields."""
        out = []
        for t, data in self.snapshot():
            if t >= since:
                out.append(dict(line.split("=", 1) for line in
                                data.decode("utf-8", "replace").splitlines() if "=" in line))
        return out

    def count(self, key: str, value: str | None = None, since: float = 0.0) -> int:
        return sum(1 for f in self.fields(since)
                   if key in f and (value is None or f[key] == value))

    def wait(self, key: str, value: str | None = None, *, since: float = 0.0,
             n: int = 1, timeout: float = 15) -> None:
        wait_for(lambda: self.count(key, value, since) >= n, timeout,
                 what=f"{n} x {key}={value or '*'} on the notify socket "
                      f"(got {self.snapshot()[-8:]})")

    def wait_sequence(self, *keys: str, since: float = 0.0, timeout: float = 15) -> None:
        """Wait until the fields `keys` were sent in this order (others in between)."""
        def seen() -> bool:
            want = list(keys)
            for f in self.fields(since):
                if want and want[0] in f:
                    want.pop(0)
            return not want
        wait_for(seen, timeout, what=f"{' then '.join(keys)} on the notify socket "
                                     f"(got {self.snapshot()[-8:]})")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> NotifyCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def latest_sshd_cursor(sb: Sandbox) -> str | None:
    out = sb.journal("-n", "1", "-o", "json", "_COMM=sshd", "_UID=0")
    out = out.strip()
    return json.loads(out)["__CURSOR"] if out else None


def caught_up(d: DaemonProc, sb: Sandbox) -> bool:
    """The daemon has processed every sshd entry in the journal so far."""
    cur = latest_sshd_cursor(sb)
    return cur is not None and d.status().get("position") == cur


def in_process_parts(tmp_path: Path, *, firewall: Any = None, drift: Any = None,
                     clock: Any = None, notifier: Any = None,
                     alerts_sent: list[Any] | None = None) -> Any:
    """daemon.parts.Parts for a Daemon run in this process: a real Store in tmp_path, a
    real Metrics on a private registry, real Alerts whose journal sends land in
    `alerts_sent`, the dry-run firewall unless one is given, and no producers (tests put
    items on the daemon's queue themselves). `drift` is a guard object (or None)."""
    import time as _time

    from prometheus_client import CollectorRegistry

    from sshguardd.daemon import parts
    from sshguardd.daemon.notify import Notifier
    from sshguardd.effects.alerts import Alerts
    from sshguardd.effects.metrics import Metrics
    from sshguardd.effects.nft_dryrun import DryRunFirewall
    from sshguardd.effects.store import Store

    sent = alerts_sent if alerts_sent is not None else []

    def no_producer(*_: Any) -> Any:
        raise AssertionError("no producer in an in-process daemon")

    return parts.Parts(
        store=lambda: Store(tmp_path / "state.db"),
        firewall=firewall if firewall is not None else DryRunFirewall(),
        metrics=Metrics(CollectorRegistry()),
        alerts=Alerts(send=lambda *a, **k: sent.append((a, k)), echo=False),
        notifier=notifier if notifier is not None else Notifier(environ={}),
        follower=no_producer,
        drift=lambda cfg: drift,
        watcher=no_producer,
        control=no_producer,
        clock=clock if clock is not None else _time.time,
        serve_metrics=False,
    )


def in_process_daemon(tmp_path: Path, cfg: Any = None, **kw: Any) -> Any:
    """A Daemon (see in_process_parts) whose store, engine and firewall are up, with no
    follower, control server or watcher: ready for on_batch(), _timers() and loop()."""
    from sshguardd import config
    from sshguardd.daemon.ban_engine import BanEngine
    from sshguardd.daemon.firewall_upkeep import FirewallUpkeep
    from sshguardd.daemon.loop import Daemon

    d = Daemon(cfg or config.Config(), in_process_parts(tmp_path, **kw),
               install_signals=False)
    d.store = d.parts.store()
    d.engine = BanEngine(d.cfg, d.store, d.firewall, d.metrics, d.alerts)
    d.engine.restore(d.clock())
    d.engine.rebuild([], d.clock())
    d.upkeep = FirewallUpkeep(d.engine, d.firewall, d.store, None, float("inf"), d.clock)
    d._host_drift(d.cfg)   # no watcher: tests hand FileChanged to the loop themselves
    return d
