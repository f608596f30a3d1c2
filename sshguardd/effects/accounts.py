"""Accounts, shells, lock state and users' authorized_keys files, read safely; and sshd's
own answer for an account (`sshd -T -C user=U,host=H,addr=A`).

Users' files are hostile (THREATS.md, adversary 2): a FIFO, a symlink to /dev/zero or
/etc/shadow, a socket, a device node or a multi-gigabyte file. Each is read with
sshguardd.effects.files.read_untrusted (O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC: a symlink is
refused, not followed; opening a FIFO does not wait for a writer; fstat after the open,
regular files only; a size cap), on a worker thread with a deadline (a home on NFS or a
FUSE mount the user controls can stall any system call). A read that overruns its
deadline is abandoned and its thread left to finish; past MAX_STUCK such threads no user
file is read at all until they end, so a hostile mount costs a few threads, never the
daemon loop.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from sshguardd.drift import lockout
from sshguardd.drift.sshd_judge import PROBE_DEFAULTS
from sshguardd.effects import files
from sshguardd.effects.sshd import Sshd

log = logging.getLogger(__name__)

MAX_KEYS_BYTES = 1 << 20        # sshd reads any size; no real authorized_keys is 1 MiB
MAX_SYSTEM_BYTES = 64 << 20     # /etc/passwd, group, shadow, shells (root-owned)
READ_TIMEOUT = 2.0              # per account's key files
MAX_STUCK = 4
T = TypeVar("T")


class ReadStalled(OSError):
    """A read overran its deadline (or too many earlier ones are still stuck)."""


@dataclass(frozen=True, slots=True)
class FileRead:
    data: bytes | None
    problem: str = ""               # "" when data is the whole file
    st: os.stat_result | None = None


def read_regular(path: str | os.PathLike[str], max_bytes: int,
                 timeout: float = files.READ_TIMEOUT) -> FileRead:
    """The bytes of a regular file, or why not (files.read_untrusted: never follows a
    final symlink, never blocks on a FIFO, never reads a device, never more than
    max_bytes), with the file's owner and mode for StrictModes."""
    try:
        data = files.read_untrusted(os.fspath(path), max_bytes=max_bytes, timeout=timeout)
        st = os.lstat(path)
    except FileNotFoundError:
        return FileRead(None, "missing")
    except files.UnsafePathError as exc:
        return FileRead(None, f"{exc.reason} (not read)")
    except OSError as exc:
        return FileRead(None, f"unreadable: {exc.strerror}")
    return FileRead(data, "", st)


class AccountSource(Protocol):
    """What the lockout guard needs from the host."""

    def accounts(self, shadow_text: str, *, today: int,
                 lock_root: bool) -> list[lockout.Account]: ...

    def ask(self, config: str, account: lockout.Account) -> dict[str, str]: ...

    def key_files(self, account: lockout.Account,
                  paths: Sequence[str]) -> list[lockout.KeyFile]: ...


class Accounts:
    """The real host: account databases under their paths, sshd through `runner`.

    probe is the connection sshd is asked about (`-C`): the documentation addresses of
    sshd_judge.PROBE_DEFAULTS, so the answer is what sshd gives "some remote address";
    a Match Address block for the admin's own network is not seen (the guard then errs
    towards refusing)."""

    def __init__(self, runner: Sshd, *, passwd: Path = Path("/etc/passwd"),
                 group: Path | None = None, shells: Path | None = None,
                 probe: Mapping[str, str] | None = None,
                 read_timeout: float = READ_TIMEOUT, max_bytes: int = MAX_KEYS_BYTES):
        self.runner = runner
        self.passwd = Path(passwd)
        self.group = Path(group) if group else self.passwd.with_name("group")
        self.shells = Path(shells) if shells else self.passwd.with_name("shells")
        self.probe = dict(probe or PROBE_DEFAULTS)
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes
        self._stuck: list[threading.Thread] = []
        self.stalls = 0  # reads abandoned at their deadline, for tests and metrics

    @property
    def host(self) -> str:
        return self.probe.get("host", "")

    @property
    def addr(self) -> str:
        return self.probe.get("addr", "")

    def _system(self, path: Path) -> str | None:
        got = read_regular(path, MAX_SYSTEM_BYTES)
        if got.data is None:
            if got.problem != "missing":
                log.warning("lockout guard: %s is %s", path, got.problem)
            return None
        return got.data.decode("utf-8", errors="replace")

    def accounts(self, shadow_text: str, *, today: int,
                 lock_root: bool) -> list[lockout.Account]:
        """Every /etc/passwd account with its groups, shell and lock state. Raises
        OSError when /etc/passwd cannot be read (the guard must not judge blind)."""
        passwd = self._system(self.passwd)
        if passwd is None:
            raise OSError(f"cannot read {self.passwd}")
        return lockout.parse_accounts(passwd, self._system(self.group) or "", shadow_text,
                                      self._system(self.shells), today=today,
                                      lock_root=lock_root)

    def ask(self, config: str, account: lockout.Account) -> dict[str, str]:
        """sshd's effective configuration for this account from the probe address.
        Raises ServiceError (argv and stderr) when sshd refuses."""
        return self.runner.effective(config, {**self.probe, "user": account.name})

    def key_files(self, account: lockout.Account,
                  paths: Sequence[str]) -> list[lockout.KeyFile]:
        """The account's key files, read off the calling thread within read_timeout."""
        try:
            return self._deadline(lambda: [self._key_file(account, p) for p in paths])
        except ReadStalled as exc:
            return [lockout.KeyFile(p, None, str(exc)) for p in paths]

    def _key_file(self, account: lockout.Account, path: str) -> lockout.KeyFile:
        got = read_regular(path, self.max_bytes)
        if got.data is None or got.st is None:
            return lockout.KeyFile(path, None, got.problem)
        return lockout.KeyFile(path, got.data.decode("utf-8", errors="replace"), "",
                               lockout.PathStat(path, got.st.st_uid, got.st.st_mode),
                               tuple(_parents(path, account.home)))

    def _deadline(self, fn: Callable[[], T]) -> T:
        self._stuck = [t for t in self._stuck if t.is_alive()]
        if len(self._stuck) >= MAX_STUCK:
            raise ReadStalled(f"not read: {len(self._stuck)} earlier reads still stalled")
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc

        t = threading.Thread(target=run, name="lockout-read", daemon=True)
        t.start()
        t.join(self.read_timeout)
        if t.is_alive():
            self._stuck.append(t)
            self.stalls += 1
            log.warning("lockout guard: reading key files took over %.1fs; gave up",
                        self.read_timeout)
            raise ReadStalled(f"not read within {self.read_timeout:g}s")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]


def _parents(path: str, home: str) -> list[lockout.PathStat]:
    """Owner and mode of each directory above path, as sshd's StrictModes walks them: the
    canonical path upwards, stopping at the home directory (or /)."""
    out = []
    d = os.path.dirname(os.path.realpath(path))
    home = os.path.realpath(home) if home else ""
    under_home = bool(home) and (d == home or d.startswith(home.rstrip("/") + "/"))
    while True:
        try:
            st = os.stat(d)
        except OSError:
            break
        out.append(lockout.PathStat(d, st.st_uid, st.st_mode))
        if (under_home and d == home) or d in ("/", "."):
            break
        d = os.path.dirname(d)
    return out
