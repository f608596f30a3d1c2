"""Shadow judging (pure) and the shadow-utils-compatible locked writer (real temp files, and
against shadow-utils' own vipw in a sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshguardd.demo.sandbox import wait_for
from sshguardd.drift import shadow_rules as shadow
from sshguardd.effects.shadow_file import ShadowFile, ShadowLockError

HASH = "$y$j9T$abcdefghijklmnopqrstu.$ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg"
ROOT_OPEN = f"root:{HASH}:19700:0:99999:7:::\n"
REST = ("daemon:*:19700:0:99999:7:::\n"
        "bin:!:19700::::::\n"
        f"alice:{HASH}:19701:0:99999:7:::\n")


@pytest.mark.parametrize("field,locked", [
    ("!" + HASH, True), ("!", True), ("!!", True), ("*", True), ("*LOCK*", True),
    ("!*", True), (HASH, False), ("", False), ("x", False),
])
def test_lock_forms(field, locked):
    assert shadow.is_locked(field) is locked


def test_judge_never_exposes_hashes():
    st = shadow.judge(ROOT_OPEN + REST + "eve::19702:0:99999:7:::\n")
    assert st == shadow.ShadowState(True, False, False, ("eve",), shadow_root_locked=False)
    assert HASH not in repr(st)


@pytest.mark.parametrize("form,expected", [
    ("!", "!" + HASH), ("*LOCK*", "*LOCK*"), ("*", "*")])
def test_relock_changes_only_roots_field(form, expected):
    text = "# comment kept\n" + REST + ROOT_OPEN + "eve::19702:0:99999:7:::"
    out = shadow.relock(text, form)
    assert out == text.replace(f"root:{HASH}:", f"root:{expected}:")
    assert shadow.judge(out).root_locked


def test_relock_empty_fields_when_asked():
    out = shadow.relock(ROOT_OPEN + "eve::1::::::\n", "*", lock_empty=True)
    assert out == "root:*:19700:0:99999:7:::\neve:!:1::::::\n"


def test_relock_of_locked_root_is_identity():
    text = "root:!" + HASH + ":1::::::\n" + REST
    assert shadow.relock(text, "*") == text


def test_no_root_is_an_error():
    with pytest.raises(shadow.ShadowFormatError):
        shadow.relock(REST, "!")


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    p = d / "shadow"
    p.write_text(REST + ROOT_OPEN)
    os.chown(p, 0, 42)
    os.chmod(p, 0o640)
    return d


def test_writer_locks_root_keeps_mode_owner_and_other_bytes(etc: Path):
    sf = ShadowFile(etc / "shadow")
    ino = (etc / "shadow").stat().st_ino
    written = sf.relock("!")
    assert (etc / "shadow").read_text() == REST + f"root:!{HASH}:19700:0:99999:7:::\n"
    assert written == {str(etc / "shadow"): (etc / "shadow").read_text()}
    st = (etc / "shadow").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 0, 42)
    assert st.st_ino != ino  # replaced by rename, not rewritten in place
    # The locks are released and no temporary file is left behind.
    assert sorted(p.name for p in etc.iterdir()) == [".pwd.lock", "shadow"]
    assert sf.relock("!") == {}


def test_writer_waits_for_lckpwdf_holder(etc: Path):
    # Another program (here a child process, like passwd) holds lckpwdf's lock.
    lock = etc / ".pwd.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         ("import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o600);"
          "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"),
         str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ShadowLockError):
            ShadowFile(etc / "shadow", timeout=0.2).relock("!")
        assert (etc / "shadow").read_text() == REST + ROOT_OPEN
        done = threading.Event()
        result = []
        t = threading.Thread(target=lambda: (result.append(
            ShadowFile(etc / "shadow", timeout=10).relock("*")), done.set()))
        t.start()
        assert not done.wait(0.3)  # still waiting for the holder
        holder.stdin.close()
        assert done.wait(10)
        t.join()
        assert shadow.judge((etc / "shadow").read_text()).root_locked
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        if not holder.stdin.closed:
            holder.stdin.close()


def test_link_lock_held_by_live_process_blocks_and_stale_one_is_broken(etc: Path):
    lock = etc / "shadow.lock"
    lock.write_text(str(os.getpid()))  # a live holder: us
    with pytest.raises(ShadowLockError):
        ShadowFile(etc / "shadow", timeout=0.2).relock("!")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(str(dead.pid))  # a holder that died without cleaning up
    assert ShadowFile(etc / "shadow").relock("!") is not None
    assert not lock.exists()


def test_writer_interoperates_with_shadow_utils_lock(etc: Path):
    # Our lckpwdf lock is the same fcntl lock glibc takes: a real fcntl probe sees it.
    sf = ShadowFile(etc / "shadow")
    fd = sf._lckpwdf()
    try:
        out = subprocess.run(
            [sys.executable, "-c",
             ("import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_WRONLY)\n"
              "try: fcntl.lockf(fd, fcntl.LOCK_EX|fcntl.LOCK_NB); print('free')\n"
              "except OSError: print('held')"), str(etc / ".pwd.lock")],
            capture_output=True, text=True, check=True).stdout
        assert out.strip() == "held"
    finally:
        os.close(fd)


@pytest.mark.e2e
def test_writer_waits_for_a_real_vipw(sandbox):
    """shadow-utils' own vipw -s holds lckpwdf and /etc/shadow.lock while its editor runs:
    our writer (run inside the sandbox, so pids in lock files mean the same processes)
    must not get in, and must get in once vipw is done."""
    editor = sandbox.path("/etc/slow-editor")
    editor.write_text("#!/bin/sh\ntouch /run/editing\nread line < /run/go\n")
    editor.chmod(0o755)
    sandbox.run(["mkfifo", "/run/go"], check=True)
    sandbox.run(["usermod", "-p", HASH, "root"], check=True)
    vipw = sandbox.popen(["env", "EDITOR=/etc/slow-editor", "VISUAL=/etc/slow-editor",
                          "vipw", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from sshguardd.effects.shadow_file import ShadowFile, ShadowLockError\n"
            "try:\n    print('changed' if ShadowFile(timeout=0.5).relock('!') else 'same')\n"
            "except ShadowLockError as exc:\n    print('locked out:', exc)\n")
    root = str(Path(__file__).resolve().parents[1])
    try:
        wait_for(lambda: sandbox.path("/run/editing").exists(), 10, what="vipw's editor")
        out = sandbox.run([sys.executable, "-c", code, root], check=True).stdout
        assert out.startswith("locked out: ") and ".pwd.lock" in out
        assert f"root:{HASH}:" in sandbox.path("/etc/shadow").read_text()
    finally:
        sandbox.run(["sh", "-c", "echo done > /run/go"])
        vipw.wait(20)
    out = sandbox.run([sys.executable, "-c", code, root], check=True).stdout
    assert out == "changed\n"
    assert f"root:!{HASH}:" in sandbox.path("/etc/shadow").read_text()


def test_writer_keeps_the_selinux_label(etc: Path):
    # Without an SELinux kernel, ext4 still stores security.* xattrs for root, which is
    # enough to see that the label travels to the replacement file.
    label = b"system_u:object_r:shadow_t:s0\x00"
    os.setxattr(etc / "shadow", "security.selinux", label)
    assert ShadowFile(etc / "shadow").relock("*LOCK*")
    assert os.getxattr(etc / "shadow", "security.selinux") == label


_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=8)
_field = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789$./!*", max_size=20)
_entry = st.builds(lambda n, pw, rest: f"{n}:{pw}:{rest}", _name, _field,
                   st.text(alphabet="0123456789:", max_size=20))


@settings(max_examples=300, deadline=None)
@given(before=st.lists(_entry, max_size=8), after=st.lists(_entry, max_size=8),
       root_pw=_field, form=st.sampled_from(["!", "*LOCK*", "*"]),
       final_newline=st.booleans())
def test_relock_touches_nothing_but_the_first_roots_password(before, after, root_pw, form,
                                                             final_newline):
    before = [e for e in before if not e.startswith("root:")]
    lines = before + [f"root:{root_pw}:19700:0:99999:7:::"] + after
    text = "\n".join(lines) + ("\n" if final_newline else "")
    out = shadow.relock(text, form)
    assert shadow.judge(out).root_locked
    old_lines, new_lines = text.split("\n"), out.split("\n")
    assert len(old_lines) == len(new_lines)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    assert changed in ([], [len(before)])
    for i in changed:
        a, b = old_lines[i].split(":"), new_lines[i].split(":")
        assert a[0] == b[0] == "root" and a[2:] == b[2:]
        assert b[1] == (("!" + a[1]) if form == "!" else form)
