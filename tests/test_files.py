"""effects/files.py: safe replace (temp files, trusted directories) and read_untrusted.

Real files in a temp dir; a "user" is uid 65534 (files chowned to it), the daemon is root.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from sshguardd.effects import files

USER = 65534


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    d = tmp_path / "etc" / "ssh" / "sshd_config.d"
    d.mkdir(parents=True, mode=0o755)
    return d


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    return victim


def test_planted_temp_symlink_in_user_dir_linked_into_etc_ssh_is_refused(
        tmp_path: Path, etc: Path) -> None:
    # Issue 10: an application user's directory symlinked into /etc/ssh; the user plants
    # the repair's temp name as a symlink to a root-only file. The old code opened it with
    # O_CREAT|O_TRUNC, wrote sshd text into the victim and chowned it to the user.
    victim = _victim(tmp_path)
    app = tmp_path / "app"
    app.mkdir()
    (app / "50-app.conf").write_text("PasswordAuthentication yes\n")
    os.chown(app / "50-app.conf", USER, USER)
    os.chown(app, USER, USER)
    (etc / "50-app.conf").symlink_to(app / "50-app.conf")
    (app / f".50-app.conf.sshguardd-{os.getpid()}").symlink_to(victim)

    with pytest.raises(files.UnsafePathError) as err:
        files.replace(etc / "50-app.conf", b"PasswordAuthentication no\n")
    assert f"directory {app} is owned by uid {USER}" in str(err.value)
    st = victim.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode), victim.read_text()) == (0, 0o600,
                                                                         "secret\n")
    assert (app / "50-app.conf").read_text() == "PasswordAuthentication yes\n"


def test_group_or_other_writable_directory_is_refused(tmp_path: Path, etc: Path) -> None:
    (etc / "x.conf").write_text("a\n")
    etc.chmod(0o775)
    with pytest.raises(files.UnsafePathError, match="writable by group or others"):
        files.replace(etc / "x.conf", b"b\n")
    etc.chmod(0o1777)  # sticky is fine for an ancestor, never for the file's own dir
    with pytest.raises(files.UnsafePathError, match="writable by group or others"):
        files.replace(etc / "x.conf", b"b\n")
    assert (etc / "x.conf").read_text() == "a\n"


def test_a_user_owned_ancestor_is_refused(tmp_path: Path, etc: Path) -> None:
    (etc / "x.conf").write_text("a\n")
    os.chown(etc.parent, USER, 0)  # the user could rename sshd_config.d away and back
    with pytest.raises(files.UnsafePathError, match=f"owned by uid {USER}"):
        files.replace(etc / "x.conf", b"b\n")


def test_symlink_into_a_root_directory_is_followed_and_metadata_kept(
        tmp_path: Path, etc: Path) -> None:
    managed = tmp_path / "managed"
    managed.mkdir(mode=0o755)
    (managed / "sshd_config").write_text("old\n")
    os.chown(managed / "sshd_config", USER, 0)  # a user-owned file: kept on the new one
    (managed / "sshd_config").chmod(0o640)
    (etc.parent / "sshd_config").symlink_to("../../managed/sshd_config")
    files.replace(etc.parent / "sshd_config", b"new\n")
    assert (etc.parent / "sshd_config").is_symlink()
    st = (managed / "sshd_config").stat()
    assert (managed / "sshd_config").read_text() == "new\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (USER, 0, 0o640)
    assert sorted(p.name for p in managed.iterdir()) == ["sshd_config"]


def test_stale_temp_in_a_trusted_dir_is_removed_not_written_through(
        tmp_path: Path, etc: Path) -> None:
    victim = _victim(tmp_path)
    (etc / "x.conf").write_text("a\n")
    (etc / f".x.conf.sshguardd-{os.getpid()}").symlink_to(victim)  # only root could
    files.replace(etc / "x.conf", b"b\n")
    assert (etc / "x.conf").read_text() == "b\n" and victim.read_text() == "secret\n"
    assert sorted(p.name for p in etc.iterdir()) == ["x.conf"]


def test_non_regular_target_is_refused(tmp_path: Path, etc: Path) -> None:
    os.mkfifo(etc / "fifo.conf")
    with pytest.raises(files.UnsafePathError, match="is a FIFO"):
        files.replace(etc / "fifo.conf", b"x\n")


def test_new_file_is_created_0600_root(etc: Path) -> None:
    files.replace(etc / "new.conf", b"x\n")
    st = (etc / "new.conf").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)


def test_read_untrusted_refuses_hostile_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.mkfifo(home / "fifo")
    (home / "zero").symlink_to("/dev/zero")
    (home / "big").write_bytes(b"k" * 2049)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(home / "sock"))
    try:
        cases = {"fifo": "is a FIFO", "zero": "is a symlink", "big": "larger than 2048",
                 "sock": "is a socket"}
        for name, why in cases.items():
            with pytest.raises(files.UnsafePathError, match=why):
                files.read_untrusted(home / name, max_bytes=2048)
        with pytest.raises(files.UnsafePathError, match="is a character device"):
            files.read_untrusted(home / "zero", follow_symlinks=True)
    finally:
        sock.close()
    (home / "keys").write_bytes(b"ssh-ed25519 AAAA\n")
    os.chown(home / "keys", USER, USER)
    assert files.read_untrusted(home / "keys", owners=(0, USER)) == b"ssh-ed25519 AAAA\n"
    with pytest.raises(files.UnsafePathError, match=f"owned by uid {USER}"):
        files.read_untrusted(home / "keys", owners=(0,))
    with pytest.raises(FileNotFoundError):
        files.read_untrusted(home / "missing")
