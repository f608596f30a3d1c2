"""Files as a setuid program must treat them: replaced crash-safely, read defensively.

Writing (`replace`): a reader (sshd, PAM, an editor) sees either the whole old file or the
whole new one. The new content goes to a temporary file created with
`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` beside the target, is fsync'd, gets the old file's
owner, mode and SELinux label, and is renamed over the old name; the directory is fsync'd
so the rename survives a crash. Every directory on the way (symlinks are followed, the way
configuration management links sshd_config to a managed copy) must be root-owned and not
writable by group or others, the last one with no sticky-bit exception: a user who can
write a directory on the path could plant the temporary name as a symlink to a root-only
file (the old `O_TRUNC` open then chowned that victim to the user, issue 10) or swap the
directory between our checks. Such a path raises `UnsafePathError` (an OSError, so a
repair turns it into a `repair_failed` alert and restores what it wrote).

Reading (`read_untrusted`): for files a local user controls (`~/.ssh/authorized_keys`,
drop-ins that may be FIFOs or symlinks to /dev/zero). `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`,
regular files only (fstat after open, so a FIFO, socket or device never blocks or
streams), a size cap and a deadline.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SYMLINKS = 40  # the kernel's own limit (MAXSYMLINKS)
READ_CAP = 1024 * 1024  # bytes; far above any sane authorized_keys or drop-in
READ_TIMEOUT = 2.0  # seconds for a whole read_untrusted()
_CHUNK = 64 * 1024


class UnsafePathError(OSError):
    """A path sshguardd refuses to write through or a file it refuses to read.

    `path` is the path as given, `reason` says what was wrong ("... is owned by uid 1000",
    "is a FIFO", ...)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(errno.EPERM, reason, str(path))
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"refusing {self.path}: {self.reason}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _untrusted_dir(st: os.stat_result, *, final: bool) -> str | None:
    """Why a directory with this stat is not ours alone, or None. Ancestors may be sticky
    and world-writable (/tmp): others cannot rename or remove root's entries there."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != 0:
        return f"is owned by uid {st.st_uid}"
    if st.st_mode & 0o022 and (final or not st.st_mode & stat.S_ISVTX):
        return f"is writable by group or others (mode {st.st_mode & 0o7777:04o})"
    return None


def resolve_trusted(path: Path | str) -> str:
    """Resolve `path` like realpath(3), but only through directories no one but root can
    change; return the resolved path (its last component need not exist).

    Raises UnsafePathError naming the first directory or symlink that fails, and
    FileNotFoundError/NotADirectoryError like the kernel would. The parent directory of
    the result is not judged here: `replace` re-checks it on the descriptor it writes in."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        text = os.path.join(os.getcwd(), text)
    pending = [c for c in text.split("/") if c][::-1]  # a stack: next component last
    cur = "/"
    cur_st = os.lstat(cur)
    if (why := _untrusted_dir(cur_st, final=False)) is not None:
        raise UnsafePathError(text, f"/ {why}")
    links = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            cur = os.path.dirname(cur)  # already verified on the way down
            cur_st = os.lstat(cur)
            continue
        nxt = os.path.join(cur, name)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            if pending:
                raise
            return nxt
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise UnsafePathError(text, "too many levels of symbolic links")
            if st.st_uid != 0 and cur_st.st_mode & 0o022:
                raise UnsafePathError(text, f"symlink {nxt} is owned by uid {st.st_uid} "
                                            "in a shared directory")
            target = os.readlink(nxt)
            if target.startswith("/"):
                cur, cur_st = "/", os.lstat("/")
            pending.extend(c for c in reversed(target.split("/")) if c)
            continue
        if not pending:
            return nxt
        if (why := _untrusted_dir(st, final=False)) is not None:
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", nxt)
            raise UnsafePathError(text, f"directory {nxt} {why}")
        cur, cur_st = nxt, st
    return cur


def _open_trusted_dir(path: str, shown: Path | str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        why = _untrusted_dir(os.fstat(fd), final=True)
    except BaseException:
        os.close(fd)
        raise
    if why is not None:
        os.close(fd)
        raise UnsafePathError(shown, f"directory {path} {why}")
    return fd


def copy_metadata(src_fd: int, dst_fd: int) -> None:
    """Give dst (a file we created) the owner, mode and SELinux label of src."""
    st = os.fstat(src_fd)
    os.fchown(dst_fd, st.st_uid, st.st_gid)
    os.fchmod(dst_fd, st.st_mode & 0o7777)
    try:
        label = os.getxattr(src_fd, "security.selinux")
    except OSError:
        return  # no SELinux or no label: nothing to keep
    _set_label(dst_fd, label)


def _set_label(fd: int, label: bytes) -> None:
    try:
        os.setxattr(fd, "security.selinux", label)
    except OSError as exc:
        log.warning("could not keep the SELinux label: %s", exc)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _model(path: str, shown: Path | str) -> tuple[os.stat_result, bytes | None] | None:
    """The stat and SELinux label the new file should copy: those of the regular file at
    `path` (never followed: it sits in a verified directory), or None if it is absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(shown, f"{path} is {_kind(st.st_mode)}")
    try:
        label: bytes | None = os.getxattr(path, "security.selinux", follow_symlinks=False)
    except OSError:
        label = None
    return st, label


def _create(dfd: int, name: str, parent: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, 0o600, dir_fd=dfd)
    except FileExistsError:
        # Only root can create entries in a verified directory: this is a leftover of a
        # writer that crashed (ours, or shadow-utils' own `shadow+`). Never written through.
        log.warning("removing stale temporary file %s/%s", parent, name)
        os.unlink(name, dir_fd=dfd)
        return os.open(name, flags, 0o600, dir_fd=dfd)


def _write_in(dfd: int, parent: str, name: str, data: bytes,
              model: tuple[os.stat_result, bytes | None] | None) -> None:
    fd = _create(dfd, name, parent)
    try:
        if model is not None:
            st, label = model
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, st.st_mode & 0o7777)
            if label is not None:
                _set_label(fd, label)
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dfd)
        raise
    os.close(fd)


def _prepare(path: Path | str, like: Path | str | None, tmp: Path | str | None
             ) -> tuple[str, str, str, tuple[os.stat_result, bytes | None] | None]:
    real = resolve_trusted(path)
    parent, name = os.path.split(real)
    model = _model(real if like is None else resolve_trusted(like), path)
    tmp_name = Path(tmp).name if tmp else f".{name}.sshguardd-{os.getpid()}"
    return parent, name, tmp_name, model


def write_temp(path: Path | str, data: bytes, *, like: Path | str | None = None,
               tmp: Path | str | None = None) -> Path:
    """Write data to a new temporary file beside path (named like tmp, in path's directory)
    with the metadata of `like` (default: path itself, if it exists; else 0600 root),
    fsync'd. Returns its path. Same directory checks as `replace`."""
    parent, _name, tmp_name, model = _prepare(path, like, tmp)
    dfd = _open_trusted_dir(parent, path)
    try:
        _write_in(dfd, parent, tmp_name, data, model)
    finally:
        os.close(dfd)
    return Path(parent) / tmp_name


def replace(path: Path | str, data: bytes, *, like: Path | str | None = None,
            tmp: Path | str | None = None) -> None:
    """Atomically replace path with data, keeping owner, mode and SELinux label.

    A symlink is followed (the file it points to is replaced and the link stays a link)
    only through root-owned directories nobody else can write; otherwise, or when the
    target is not a regular file, UnsafePathError is raised and nothing is written. `tmp`
    names the temporary file (only its name is used: rename(2) stays in one directory)."""
    parent, name, tmp_name, model = _prepare(path, like, tmp)
    dfd = _open_trusted_dir(parent, path)
    try:
        _write_in(dfd, parent, tmp_name, data, model)
        try:
            os.rename(tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.unlink(tmp_name, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_untrusted(path: Path | str, *, max_bytes: int = READ_CAP,
                   timeout: float = READ_TIMEOUT, follow_symlinks: bool = False,
                   owners: Collection[int] | None = None) -> bytes:
    """Read a file a local user may control, as a setuid program would.

    Opens with O_NOFOLLOW (unless follow_symlinks: drop-ins may be managed links; the
    fstat check below still refuses /dev/zero or a FIFO behind one), O_NONBLOCK (opening
    a FIFO never waits for a writer) and O_CLOEXEC; refuses anything fstat does not call a
    regular file, a file owned by a uid outside `owners` (when given), a file larger than
    `max_bytes`, and a read still unfinished after `timeout` seconds (checked between
    chunks: a read stuck inside a FUSE server is bounded only by running this off the
    main loop, as callers must). Raises UnsafePathError for those, FileNotFoundError and
    other OSErrors as the kernel reports them. Never call it on the daemon's loop thread
    for a file in a user's home."""
    deadline = time.monotonic() + timeout
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise UnsafePathError(path, "is a symlink") from None
        if exc.errno == errno.ENXIO:
            raise UnsafePathError(path, "is a socket") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(path, f"is {_kind(st.st_mode)}")
        if owners is not None and st.st_uid not in owners:
            raise UnsafePathError(path, f"is owned by uid {st.st_uid}")
        if st.st_size > max_bytes:
            raise UnsafePathError(path, f"is larger than {max_bytes} bytes ({st.st_size})")
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise UnsafePathError(path, f"not read within {timeout:g}s")
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # it grew after fstat
                raise UnsafePathError(path, f"is larger than {max_bytes} bytes")
    finally:
        os.close(fd)
