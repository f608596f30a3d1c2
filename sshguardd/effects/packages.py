"""The update watch's effects: ask the package manager about sshd, read /proc, watch.

`PackageProbe.collect()` answers "is openssh-server up to date, and does the running sshd
run what is installed?" as a frozen `contracts.PackageState`, by asking the consumers
themselves: `apt-cache policy` (whose candidate already honours pins and reads apt's
compressed lists) or `rpm -q` and `dnf --cacheonly`, never a network refresh unless
`refresh` is set. `PackageWatch` runs it on its own thread, never on the daemon's loop,
when the package database changes (inotify on dpkg's and apt's, or rpm's and dnf's,
directories, debounced: dpkg rewrites its status file many times per install) and on a
slow timer, and hands each new state to a callback (the daemon's queue).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from sshguardd.contracts import PackageState
from sshguardd.drift import packages as judge

log = logging.getLogger(__name__)

SSHD_COMMANDS = ("sshd", "sshd-session", "sshd-auth")
# C locale: the parsers read apt's English labels ("Installed:", "Version table:").
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"}


class ProbeError(RuntimeError):
    def __init__(self, argv: Sequence[str], detail: str):
        super().__init__(f"{' '.join(argv)}: {detail}")
        self.argv = list(argv)
        self.detail = detail


class PackageProbe:
    """`PackageProbe(package="openssh-server", backend="auto", ...)`; `collect()`.

    `root` is the file system root the package databases live under (tests point it at a
    private tree only for the rpm database: `rpm --root`), `proc` the proc mount.
    `backend`: "apt", "rpm" or "auto" (apt where dpkg's status file exists, else rpm).
    """

    def __init__(self, package: str = "openssh-server", backend: str = "auto", *,
                 apt_cache: str = "apt-cache", apt_get: str = "apt-get", rpm: str = "rpm",
                 dnf: str = "dnf", root: str | Path = "/", proc: str | Path = "/proc",
                 dnf_releasever: str | None = None, refresh: bool = False,
                 timeout: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.package = package
        self.root = Path(root)
        self.proc = Path(proc)
        self.apt_cache, self.apt_get, self.rpm, self.dnf = apt_cache, apt_get, rpm, dnf
        self.dnf_releasever = dnf_releasever
        self.refresh = refresh
        self.timeout = timeout
        self.clock = clock
        if backend == "auto":
            backend = "apt" if (self.root / "var/lib/dpkg/status").exists() else "rpm"
        self.backend = backend

    def watch_dirs(self) -> list[Path]:
        """Where a package install or a metadata refresh writes."""
        rel = (["var/lib/dpkg", "var/lib/apt/lists"] if self.backend == "apt"
               else ["var/lib/rpm", "var/cache/dnf"])
        return [self.root / r for r in rel if (self.root / r).is_dir()]

    # -- subprocesses ---------------------------------------------------------------------

    def _run(self, argv: Sequence[str], ok: Sequence[int] = (0,)) -> str:
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, env=_ENV,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProbeError(argv, str(exc)) from exc
        if proc.returncode not in ok:
            raise ProbeError(argv, f"exit {proc.returncode}: {proc.stderr.strip()[:500]}")
        return proc.stdout

    def refresh_metadata(self) -> None:
        """The opt-in network refresh (`apt-get update` / `dnf makecache`)."""
        if self.backend == "apt":
            self._run([self.apt_get, "-q", "update"])
        else:
            self._run([self.dnf, "-q", "makecache", *self._releasever()])

    def _releasever(self) -> list[str]:
        return [f"--releasever={self.dnf_releasever}"] if self.dnf_releasever else []

    # -- the check ------------------------------------------------------------------------

    def collect(self) -> PackageState:
        now = self.clock()
        try:
            verdict, installed_at = (self._apt() if self.backend == "apt" else self._rpm())
        except ProbeError as exc:
            log.warning("update check failed: %s", exc)
            return PackageState(self.backend, self.package, None, None, False, False, (),
                                False, (), now, str(exc))
        stale = judge.judge_stale(self.sshd_processes(), installed_at)
        return PackageState(self.backend, self.package, verdict.installed, verdict.candidate,
                            verdict.pending, verdict.security, verdict.advisories,
                            stale.stale, stale.reasons, now, None)

    def _apt(self) -> tuple[judge.UpdateVerdict, float | None]:
        pol = judge.parse_apt_policy(self._run([self.apt_cache, "policy", self.package]))
        releases = judge.parse_apt_releases(self._run([self.apt_cache, "policy"]))
        verdict = judge.judge_apt(pol, releases)
        installed_at = None
        for name in (f"{self.package}.list", f"{self.package}:amd64.list",
                     f"{self.package}:arm64.list"):
            try:
                installed_at = os.stat(self.root / "var/lib/dpkg/info" / name).st_mtime
                break
            except OSError:
                continue
        return verdict, installed_at

    def _rpm(self) -> tuple[judge.UpdateVerdict, float | None]:
        argv = [self.rpm, "-q", "--qf", "%{EPOCH}:%{VERSION}-%{RELEASE} %{INSTALLTIME}\\n"]
        if self.root != Path("/"):
            argv += ["--root", str(self.root)]
        # rpm -q exits 1 for a package that is not installed: that is an answer.
        installed, installed_at = judge.parse_rpm_query(self._run([*argv, self.package],
                                                                  ok=(0, 1)))
        candidate, advisories = None, []
        if shutil.which(self.dnf, path=_ENV["PATH"]):
            base = [self.dnf, "-q", "--cacheonly", *self._releasever()]
            listing = self._run([*base, "list", "--upgrades", self.package], ok=(0, 1))
            candidate = judge.parse_dnf_upgrades(listing, self.package)
            info = self._run([*base, "updateinfo", "list", "--available", self.package],
                             ok=(0, 1))
            advisories = judge.parse_dnf_updateinfo(info, self.package)
        return judge.judge_rpm(installed, candidate or installed, advisories), installed_at

    # -- /proc ----------------------------------------------------------------------------

    def sshd_processes(self) -> list[judge.ProcFacts]:
        """Every running sshd, sshd-session and sshd-auth, as /proc describes it."""
        try:
            btime = next(float(line.split()[1]) for line in
                         (self.proc / "stat").read_text().splitlines()
                         if line.startswith("btime "))
        except (OSError, StopIteration, ValueError):
            btime = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            own_ns = os.readlink(self.proc / "self/ns/mnt")
        except OSError:
            own_ns = None
        out = []
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit():
                continue
            base = self.proc / entry.name
            try:
                comm = (base / "comm").read_text().strip()
                if comm not in SSHD_COMMANDS:
                    continue
                # An sshd in another mount namespace (a container) runs its own files:
                # our /usr/sbin/sshd says nothing about it.
                if own_ns is not None and os.readlink(base / "ns/mnt") != own_ns:
                    continue
                stat = (base / "stat").read_text()
                # comm may hold spaces and parentheses: fields start after the last ')'.
                fields = stat[stat.rindex(")") + 2:].split()
                ppid, start = int(fields[1]), int(fields[19])
                exe = os.readlink(base / "exe")
                current = self._is_current(base / "exe", exe)
                deleted = sorted({line.split(None, 5)[5].removesuffix(" (deleted)")
                                  for line in (base / "maps").read_text().splitlines()
                                  if line.endswith(" (deleted)") and ".so" in line
                                  and len(line.split(None, 5)) == 6})
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile, or a kernel thread
            out.append(judge.ProcFacts(int(entry.name), comm, ppid, exe, current,
                                       tuple(deleted), btime + start / ticks))
        return out

    def _is_current(self, link: Path, target: str) -> bool:
        if target.endswith(" (deleted)"):
            return False
        try:
            running, installed = os.stat(link), os.stat(self.root / target.lstrip("/"))
        except OSError:
            return False
        return (running.st_dev, running.st_ino) == (installed.st_dev, installed.st_ino)


class _Dirty(FileSystemEventHandler):
    def __init__(self, owner: PackageWatch):
        self.owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.owner.trigger("package database changed")


class PackageWatch:
    """`PackageWatch(probe, callback, interval=600, debounce=2, refresh_interval=None)`.

    Runs `probe.collect()` on its own thread at start, `debounce` seconds after the last
    change in the package database, every `interval` seconds, and on `trigger()`; the
    callback receives each PackageState. With `refresh_interval` set, the metadata is
    refreshed (network) that often before a check.
    """

    def __init__(self, probe: PackageProbe, callback: Callable[[PackageState], object], *,
                 interval: float = 600.0, debounce: float = 2.0,
                 refresh_interval: float | None = None) -> None:
        self.probe, self.callback = probe, callback
        self.interval, self.debounce = interval, debounce
        self.refresh_interval = refresh_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._due: float | None = time.monotonic()
        self._thread: threading.Thread | None = None
        self._observer: Any = None  # watchdog's Observer (its type is a runtime alias)
        self.checks = 0

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        observer = Observer()
        for d in self.probe.watch_dirs():
            observer.schedule(_Dirty(self), str(d), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="package-watch", daemon=True)
        self._thread.start()

    def trigger(self, reason: str = "asked") -> None:
        with self._lock:
            due = time.monotonic() + self.debounce
            self._due = due if self._due is None else max(self._due, due)
        log.debug("update check due: %s", reason)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread is not None:
            self._thread.join(self.probe.timeout + 5)

    def _run(self) -> None:
        next_periodic = time.monotonic() + self.interval
        next_refresh = (time.monotonic() if self.refresh_interval else None)
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = self._due
            wake_at = min(x for x in (due, next_periodic) if x is not None)
            if now < wake_at:
                self._wake.wait(wake_at - now)
                self._wake.clear()
                continue
            with self._lock:
                self._due = None
            next_periodic = now + self.interval
            if next_refresh is not None and now >= next_refresh and self.refresh_interval:
                next_refresh = now + self.refresh_interval
                try:
                    self.probe.refresh_metadata()
                except ProbeError as exc:
                    log.warning("package metadata refresh failed: %s", exc)
            try:
                state = self.probe.collect()
            except Exception:  # a bug here must not end the watch
                log.exception("update check failed")
                continue
            self.checks += 1
            self.callback(state)
