"""The drift guard relocking root's password in real shadow/passwd files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drift_helpers import HASH, Box, actions
from sshguardd import contracts


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_root_password_relocked_other_accounts_untouched(box: Box):
    box.give_alice_a_key()
    text = box.shadow.read_text().replace("root:*:", f"root:{HASH}:")
    text += f"bob:{HASH}:19800:0:99999:7:::\n"
    box.shadow.write_text(text)
    out = box.guard.handle(contracts.FileChanged(str(box.shadow), box.now))
    assert actions(out) == {"root password": "repaired"}
    assert box.shadow.read_text() == text.replace(f"root:{HASH}:", f"root:!{HASH}:")
    assert box.restart_count() == 0  # shadow needs no sshd restart
    assert all(HASH not in str(a) for a in box.sent)
    assert [o.action for o in box.guard.handle(
        contracts.FileChanged(str(box.shadow), box.now))] == ["ignored"]


def test_empty_password_alerted_not_changed_by_default(box: Box):
    text = box.shadow.read_text() + "eve::19800:0:99999:7:::\n"
    box.shadow.write_text(text)
    out = box.guard.check_all("start")
    assert actions(out) == {"empty passwords": "drift"}
    assert box.shadow.read_text() == text
    (alert,) = box.alerts("drift")
    assert alert["SETTING"] == "empty passwords" and "eve" in alert["MESSAGE"]


def test_decoy_comment_with_a_form_feed_does_not_hide_root(box: Box):
    # str.splitlines() split "#\x0croot:!:..." into a comment and a locked root, so the
    # old guard said "locked" while glibc (one line, a comment) used the real root below.
    decoy = "#\x0croot:!:19700:0:99999:7:::\n"
    text = decoy + box.shadow.read_text().replace("root:*:", f"root:{HASH}:")
    box.shadow.write_text(text)
    out = box.guard.check_all("start")
    assert actions(out) == {"root password": "repaired"}
    assert box.shadow.read_text() == decoy + text[len(decoy):].replace(
        f"root:{HASH}:", f"root:!{HASH}:")


def test_an_indented_root_entry_is_root(box: Box):
    # nss_files skips leading whitespace: "  root:$6$..." is root's password for su and
    # sshd; the old guard reported "no root entry".
    text = box.shadow.read_text().replace("root:*:", f"  root:{HASH}:")
    box.shadow.write_text(text)
    assert actions(box.guard.check_all("start")) == {"root password": "repaired"}
    assert box.shadow.read_text() == text.replace(f"  root:{HASH}:", f"  root:!{HASH}:")


def test_a_hash_in_passwd_is_judged_and_relocked(box: Box):
    # The pre-shadow form (pwunconv): pam_unix takes the hash from passwd's second field
    # when it is not "x", whatever shadow says.
    passwd = box.passwd.read_text().replace("root:x:", f"root:{HASH}:")
    box.passwd.write_text(passwd)
    shadow_before = box.shadow.read_bytes()
    out = box.guard.check_all("start")
    assert actions(out) == {"root password": "repaired"}
    assert box.passwd.read_text() == passwd.replace(f"root:{HASH}:", f"root:!{HASH}:")
    assert box.shadow.read_bytes() == shadow_before  # root was locked there already
    (alert,) = box.alerts("repaired")
    assert alert["FILE"] == str(box.passwd)
    # Our own write is recognised when the watcher reports it.
    assert [o.action for o in box.guard.handle(
        contracts.FileChanged(str(box.passwd), box.now))] == ["ignored"]


def test_an_admin_shadow_edit_during_the_relock_is_kept(tmp_path: Path):
    shadow: list[Path] = []

    def admin_adds_a_user() -> None:  # cp + mv, ignoring shadow-utils' locks
        text = shadow[0].read_text()
        if "carol:" not in text:
            tmp = shadow[0].with_name("shadow.admin")
            tmp.write_text(text + f"carol:{HASH}:19800:0:99999:7:::\n")
            tmp.rename(shadow[0])

    box = Box(tmp_path, before_swap=admin_adds_a_user)
    shadow.append(box.shadow)
    box.shadow.write_text(box.shadow.read_text().replace("root:*:", f"root:{HASH}:"))
    assert actions(box.guard.check_all("start")) == {"root password": "repaired"}
    text = box.shadow.read_text()
    assert f"carol:{HASH}:19800" in text and f"root:!{HASH}:" in text
