"""Compare-and-swap replacement of a file: never lose an edit that lands while we write.

A plain "compare, then rename" loses an admin's edit that lands between the compare and
the rename, and the result then looks like our own write. Here the new content is written
to a temp file (sshguardd.effects.files.write_temp), then exchanged with the target in one
step (renameat2(RENAME_EXCHANGE), Linux 3.15+): the temp name then holds exactly what the
target was at the instant of the swap. If that is not what we planned from, the exchange
is undone (the admin's file is back under its name) and Conflict is raised so the caller
re-plans from the new text. Where the filesystem cannot exchange (EINVAL), the compare is
made immediately before a plain rename.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

from sshguardd.effects import files

RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


class Conflict(OSError):
    """The file changed after it was read; nothing of ours is left in its place."""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically; False when this filesystem cannot."""
    if _renameat2 is None:
        return False
    rc = _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def replace_if_unchanged(path: Path | str, expected: bytes, data: bytes, *,
                         tmp: Path | str | None = None,
                         before_swap: Callable[[], None] | None = None) -> None:
    """Replace `path` (its realpath: a symlink stays a link) with `data` only if it still
    holds `expected`; raise Conflict otherwise. Owner, mode and SELinux label are kept
    (files.write_temp). before_swap runs between the temp write and the swap: tests put
    an admin's edit there, the worst moment for it."""
    # Through root-owned directories only (files.resolve_trusted): never a path a user
    # could redirect between our checks.
    target = Path(files.resolve_trusted(path))
    if tmp is not None:
        tmp = target.parent / Path(tmp).name  # rename(2) works within one directory
    t = files.write_temp(target, data, tmp=tmp)
    try:
        if before_swap is not None:
            before_swap()
        if _exchange(t, target):
            displaced = _read(t)
            if displaced != expected:
                _exchange(t, target)  # put theirs back under its name
                raise Conflict(errno.EAGAIN, f"{target} changed while being replaced")
            t.unlink()
        else:
            if _read(target) != expected:
                raise Conflict(errno.EAGAIN, f"{target} changed while being replaced")
            os.rename(t, target)
    except BaseException:
        t.unlink(missing_ok=True)
        raise
    files.fsync_dir(target.parent)
