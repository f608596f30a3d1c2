"""Replacing a file the crash-safe way, keeping what makes it the same file to the system.

A reader (sshd, PAM, an editor) sees either the whole old file or the whole new one: the
new content goes to a temporary file in the same directory, is fsync'd, gets the old file's
owner, mode and SELinux label, and is renamed over the old name; the directory is fsync'd
so the rename itself survives a crash.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def copy_metadata(src_fd: int, dst_fd: int) -> None:
    """Give dst the owner, mode and SELinux label of src."""
    st = os.fstat(src_fd)
    os.fchown(dst_fd, st.st_uid, st.st_gid)
    os.fchmod(dst_fd, st.st_mode & 0o7777)
    try:
        label = os.getxattr(src_fd, "security.selinux")
    except OSError:
        return  # no SELinux or no label: nothing to keep
    try:
        os.setxattr(dst_fd, "security.selinux", label)
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


def write_temp(path: Path | str, data: bytes, *, like: Path | str | None = None,
               tmp: Path | str | None = None) -> Path:
    """Write data to a temporary file beside path (or at tmp) with the metadata of `like`
    (default: path itself, if it exists; else 0600 root), fsync'd. Returns its path."""
    path = Path(path)
    tmp = Path(tmp) if tmp else path.with_name(f".{path.name}.sshguardd-{os.getpid()}")
    like = Path(like) if like else path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            src = os.open(like, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            src = None
        if src is not None:
            try:
                copy_metadata(src, fd)
            finally:
                os.close(src)
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def replace(path: Path | str, data: bytes, *, like: Path | str | None = None,
            tmp: Path | str | None = None) -> None:
    """Atomically replace path with data, keeping owner, mode and SELinux label.

    A symlink is followed: the file it points to is replaced and the link stays a link
    (configuration management often links sshd_config to a managed copy)."""
    path = Path(os.path.realpath(path))
    if tmp is not None and Path(tmp).parent != path.parent:
        tmp = path.parent / Path(tmp).name  # rename(2) only works within one filesystem
    t = write_temp(path, data, like=like, tmp=tmp)
    try:
        os.rename(t, path)
    except BaseException:
        t.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
