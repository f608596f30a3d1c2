"""The locked write of /etc/shadow (and /etc/passwd) the way shadow-utils writes them.

The writer follows shadow-utils (passwd, usermod, vipw) so it never races them:
1. lckpwdf(): a POSIX write lock (fcntl F_SETLK) on /etc/.pwd.lock, created 0600, waited
   for up to 15 s (glibc's LOCK_TIMEOUT);
2. the link lock of shadow-utils' commonio_lock_nowait(): write our pid to
   /etc/shadow.PID, link() it to /etc/shadow.lock (atomic), and break a lock whose pid is
   dead;
3. read the file under the locks, change only root's password field (the pure part is
   sshguardd.drift.shadow_rules), write /etc/shadow+ with the original mode, owner and
   SELinux label, fsync, and swap it in only if the file still holds what was read
   (sshguardd.effects.swap: a tool that ignores the locks, `cp` + `mv`, is not
   overwritten), fsync /etc;
4. release in reverse order.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from sshguardd.drift import shadow_rules as rules
from sshguardd.effects import swap

log = logging.getLogger(__name__)

MAX_BYTES = 64 << 20


class ShadowLockError(OSError):
    pass


def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        data = b""
        while len(data) <= MAX_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return data.decode("utf-8", errors="surrogateescape")
            data += chunk
        raise OSError(errno.EFBIG, f"{path} is larger than {MAX_BYTES} bytes")
    finally:
        os.close(fd)


class ShadowFile:
    """Locked read-modify-write of a shadow file (and its passwd file). Paths default to
    the system's; tests give temp paths. `timeout` bounds the wait for each lock (glibc's
    lckpwdf waits 15 s)."""

    def __init__(self, path: Path = Path("/etc/shadow"), *,
                 passwd: Path | None = None, pwd_lock: Path | None = None,
                 timeout: float = 15.0, before_swap: Callable[[], None] | None = None):
        self.path = Path(path)
        self.passwd = Path(passwd) if passwd else self.path.parent / "passwd"
        self.pwd_lock = Path(pwd_lock) if pwd_lock else self.path.parent / ".pwd.lock"
        self.timeout = timeout
        self.before_swap = before_swap

    def read(self) -> str:
        return _read(self.path)

    def read_passwd(self) -> str | None:
        try:
            return _read(self.passwd)
        except FileNotFoundError:
            return None

    # -- locks
    def _lckpwdf(self) -> int:
        fd = os.open(self.pwd_lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
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

    def _link_lock(self, path: Path) -> Path:
        lock = Path(f"{path}.lock")
        mine = Path(f"{path}.{os.getpid()}")
        mine.unlink(missing_ok=True)
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o600)
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
    def relock(self, form: rules.LockForm, lock_empty: bool = False, *,
               passwd: bool = False, lock_root: bool = True) -> dict[str, str]:
        """Under shadow-utils' locks: lock root's shadow password (lock_root), every empty
        one (lock_empty) and, with passwd=True, a password root's passwd entry holds
        itself. Returns {path: new text} for each file changed (empty: all compliant).
        Raises swap.Conflict when a file changed under us (nothing of ours is left)."""
        written: dict[str, str] = {}
        pwfd = self._lckpwdf()
        try:
            if passwd and lock_root:
                got = self._relock_file(self.passwd, lambda t: rules.relock_passwd(t, form))
                if got is not None:
                    written[str(self.passwd)] = got[1]
            state = rules.judge(self.read())
            empty = [a for a in state.empty_password_accounts if a != "root"]
            if (lock_root and state.root_present and not state.root_locked) or (
                    lock_empty and empty):
                got = self._relock_file(self.path, lambda t: self._change(
                    t, form, lock_empty, lock_root))
                if got is not None:
                    written[str(self.path)] = got[1]
            return written
        finally:
            os.close(pwfd)

    @staticmethod
    def _change(text: str, form: rules.LockForm, lock_empty: bool, lock_root: bool) -> str:
        if not lock_root or rules.lookup(rules.shadow_entries(text), "root") is None:
            return rules.lock_empty_fields(text) if lock_empty else text
        return rules.relock(text, form, lock_empty)

    def _relock_file(self, path: Path, change: Callable[[str], str]) -> tuple[str, str] | None:
        lock = self._link_lock(path)
        try:
            old = _read(path)
            new = change(old)
            if new == old:
                return None
            self.replace(path, old, new)
            return old, new
        finally:
            lock.unlink(missing_ok=True)

    def replace(self, path: Path, old: str, new: str) -> None:
        # shadow-utils' own temporary name, so other tools recognise it as a shadow temp.
        swap.replace_if_unchanged(path, old.encode("utf-8", errors="surrogateescape"),
                                  new.encode("utf-8", errors="surrogateescape"),
                                  tmp=f"{path}+", before_swap=self.before_swap)
