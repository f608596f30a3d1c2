"""/etc/shadow: pure judging of root's lock and empty passwords, and a locked writer.

Judging never returns or logs a hash: findings name accounts and states only.

The writer follows shadow-utils (passwd, usermod, vipw) so it never races them:
1. lckpwdf(): a POSIX write lock (fcntl F_SETLK) on /etc/.pwd.lock, created 0600, waited
   for up to 15 s (glibc's LOCK_TIMEOUT);
2. the link lock of shadow-utils' commonio_lock_nowait(): write our pid to
   /etc/shadow.PID, link() it to /etc/shadow.lock (atomic), and break a lock whose pid is
   dead;
3. read the file under the locks, change only root's password field (every other byte,
   new users, other passwords and aging fields stay as read), write /etc/shadow+ with the
   original mode, owner and SELinux label, fsync, rename over /etc/shadow, fsync /etc;
4. release in reverse order.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sshguardd.effects import files as atomic

log = logging.getLogger(__name__)

LockForm = Literal["!", "*LOCK*", "*"]


# ---------------------------------------------------------------------------- pure

def is_locked(password_field: str) -> bool:
    """True if no password can match this field.

    crypt(3) output never starts with '!' or '*', so both mark a locked account: '!'
    prefixes a kept hash (passwd -l, usermod -L), '!!' is an account never given one
    (RHEL useradd), '*' and '*LOCK*' replace it (Debian system accounts, some images).
    An empty field is the opposite: no password at all.
    """
    return password_field.startswith(("!", "*"))


def lock_field(password_field: str, form: LockForm) -> str:
    """The locked form of a field: '!' keeps the hash behind a '!' (passwd -l style, so
    `passwd -u` can restore it); '*LOCK*' and '*' replace it."""
    if is_locked(password_field):
        return password_field
    return "!" + password_field if form == "!" else form


@dataclass(frozen=True, slots=True)
class ShadowState:
    """What the policy cares about in one shadow file. Never holds a hash."""

    root_present: bool
    root_locked: bool
    root_empty: bool
    empty_password_accounts: tuple[str, ...]  # accounts (root included) with an empty field


def entries(text: str):
    """(line number, account, password field) for each entry; never logged."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 2:
            continue
        yield lineno, fields[0], fields[1]


def judge(text: str) -> ShadowState:
    root = [pw for _, name, pw in entries(text) if name == "root"]
    empty = tuple(name for _, name, pw in entries(text) if pw == "")
    return ShadowState(
        root_present=bool(root),
        root_locked=bool(root) and is_locked(root[0]),
        root_empty=bool(root) and root[0] == "",
        empty_password_accounts=empty,
    )


class ShadowFormatError(ValueError):
    pass


def relock(text: str, form: LockForm, lock_empty: bool = False) -> str:
    """`text` with root's password field locked (and, if lock_empty, every empty field
    locked with '!'); every other byte unchanged. Only the first 'root' entry counts, as
    for getspnam()."""
    out = []
    root_done = False
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        nl = line[len(body):]
        if body and not body.startswith("#"):
            name, sep, rest = body.partition(":")
            if sep:
                pw, sep2, tail = rest.partition(":")
                if name == "root" and not root_done:
                    root_done = True
                    pw = lock_field(pw, form)
                elif lock_empty and pw == "":
                    pw = "!"
                body = f"{name}:{pw}{sep2}{tail}"
        out.append(body + nl)
    if not root_done:
        raise ShadowFormatError("no root entry in the shadow file")
    return "".join(out)


# ---------------------------------------------------------------------------- effects

class ShadowLockError(OSError):
    pass


class ShadowFile:
    """Locked read-modify-write of a shadow file. Paths default to the system's; tests give
    temp paths. `timeout` bounds the wait for each lock (glibc's lckpwdf waits 15 s)."""

    def __init__(self, path: Path = Path("/etc/shadow"), *,
                 pwd_lock: Path | None = None, timeout: float = 15.0):
        self.path = Path(path)
        self.pwd_lock = Path(pwd_lock) if pwd_lock else self.path.parent / ".pwd.lock"
        self.timeout = timeout

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="surrogateescape")

    # -- locks
    def _lckpwdf(self) -> int:
        fd = os.open(self.pwd_lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() > deadline:
                os.close(fd)
                raise ShadowLockError(errno.EAGAIN,
                                      f"{self.pwd_lock} held by another program")
            time.sleep(0.01)  # lckpwdf() itself blocks; we poll to keep a deadline

    def _link_lock(self) -> Path:
        lock = Path(f"{self.path}.lock")
        mine = Path(f"{self.path}.{os.getpid()}")
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{os.getpid()}".encode())
        finally:
            os.close(fd)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    os.link(mine, lock)
                    return lock
                except FileExistsError:
                    pass
                if not self._holder_alive(lock):
                    # A stale lock from a dead process: shadow-utils removes it too.
                    try:
                        lock.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() > deadline:
                    raise ShadowLockError(errno.EAGAIN, f"{lock} held by another program")
                time.sleep(0.01)
        finally:
            mine.unlink(missing_ok=True)

    @staticmethod
    def _holder_alive(lock: Path) -> bool:
        try:
            pid = int(lock.read_text().strip() or "0")
        except (OSError, ValueError):
            return True  # being written right now, or unreadable: do not break it
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # -- the one write
    def relock(self, form: LockForm, lock_empty: bool = False) -> tuple[str, str] | None:
        """Lock root (and empty fields if asked) under shadow-utils' locks. Returns (old
        text, new text) when the file changed, None when it was already compliant."""
        pwfd = self._lckpwdf()
        try:
            lock = self._link_lock()
            try:
                old = self.read()
                state = judge(old)
                if state.root_locked and not (lock_empty and state.empty_password_accounts):
                    return None
                new = relock(old, form, lock_empty)
                if new == old:
                    return None
                self.replace(new)
                return old, new
            finally:
                lock.unlink(missing_ok=True)
        finally:
            os.close(pwfd)

    def replace(self, text: str) -> None:
        # shadow-utils' own temporary name, so other tools recognise it as a shadow temp.
        atomic.replace(self.path, text.encode("utf-8", errors="surrogateescape"),
                       tmp=f"{self.path}+")
