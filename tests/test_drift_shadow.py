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
