"""Profile files and the files their controls judge: the I/O half of drift/profiles.py.

`load()` reads a shipped profile (sshguardd/profiles/NAME.toml, installed with the package)
or an absolute path the admin names, the way config_file reads the config (no FIFO or
device, a size cap); a site profile must be root-owned and not writable by group or others,
since it decides what a root daemon enforces. `inspect()` lstat()s a file for a FileControl
(never following a symlink: a symlinked host key is reported, not judged through);
`tighten()` repairs owner and mode only where that is safe: a root-owned regular file,
opened with O_NOFOLLOW and changed through that descriptor (fchmod/fchown), so a swapped
name can never redirect the change.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from importlib import resources
from pathlib import Path

from sshguardd.config import ConfigError
from sshguardd.drift import profiles
from sshguardd.drift.profiles import FileState, Profile
from sshguardd.effects import files

MAX_BYTES = 256 * 1024


def _shipped(name: str) -> tuple[str, str]:
    ref = resources.files("sshguardd") / "profiles" / f"{name}.toml"
    return str(ref), ref.read_text(encoding="utf-8")


def load(name: str) -> Profile:
    """The profile `name` ("baseline", "cis", "stig") or the file at an absolute path.
    Raises ConfigError (key paths of each problem) for a missing or broken profile."""
    if name in profiles.NAMES:
        try:
            path, text = _shipped(name)
        except OSError as exc:
            raise ConfigError(name, [("(file)", f"shipped profile missing: {exc}")]) from None
        return profiles.parse(text, path)
    p = Path(name)
    try:
        data = files.read_untrusted(p, max_bytes=MAX_BYTES, follow_symlinks=False)
        st = p.lstat()
    except OSError as exc:
        raise ConfigError(p, [("(file)", str(exc))]) from None
    if st.st_uid != 0 or st.st_mode & 0o022:
        why = (f"a site profile must be root-owned and not writable by group or others "
               f"(uid {st.st_uid}, mode {st.st_mode & 0o7777:04o})")
        raise ConfigError(p, [("(file)", why)])
    try:
        return profiles.parse(data.decode("utf-8"), str(p))
    except UnicodeDecodeError as exc:
        raise ConfigError(p, [("(file)", f"not UTF-8: {exc}")]) from None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def inspect(path: str) -> FileState:
    """lstat() of `path` as a FileState (kind "missing" when it does not exist)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return FileState(path, "missing")
    kind = ("file" if stat.S_ISREG(st.st_mode)
            else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
    return FileState(path, kind, st.st_uid, st.st_gid, st.st_mode & 0o7777,
                     _user(st.st_uid), _group(st.st_gid))


def tighten(control: profiles.FileControl, path: str) -> str:
    """Make `path` satisfy `control`, or raise OSError saying why it is not safe to.

    Only a root-owned regular file is changed (an owner that is not root means someone
    else's file: reported, never chowned to root), through an O_NOFOLLOW descriptor. The
    group is kept when the control allows it (root or ssh_keys); the mode loses the bits
    the limit forbids and gains none. Returns what changed, e.g. "mode 0644 -> 0600"."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise files.UnsafePathError(path, "not a regular file")
        if st.st_uid != 0:
            raise files.UnsafePathError(path, f"owned by uid {st.st_uid}, not root: left "
                                        "for a person to judge")
        done = []
        group = _group(st.st_gid)
        limit = control.limit(group)
        if limit is None:  # a group the control does not allow: root's
            os.fchown(fd, 0, 0)
            done.append(f"group {group or st.st_gid} -> root")
            limit = control.limit("root")
            if limit is None:
                raise files.UnsafePathError(path, "the control allows no group root")
        mode = st.st_mode & 0o7777
        if mode & ~limit:
            os.fchmod(fd, mode & limit)
            done.append(f"mode {mode:04o} -> {mode & limit:04o}")
        return ", ".join(done)
    finally:
        os.close(fd)
