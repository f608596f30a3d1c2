"""Repairs that read well (issue 12 item 6), through the real drift guard, real files and a
real `sshd -t`/`sshd -T` (tests/drift_helpers.Box): a contradicting line that sshd ignores
is commented out instead of staying live-looking below the effective one, and each line
sshguardd changes or adds carries a comment naming sshguardd, the date and the reason,
without piling up comments over repeated repairs.
"""

from __future__ import annotations

import time
from pathlib import Path

from drift_helpers import Box, actions
from sshguardd import contracts


def _date(box: Box) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(box.now))


def _repair(box: Box) -> dict[str, str]:
    box.now += 5
    return actions(box.guard.handle(contracts.FileChanged(str(box.main), box.now)))


def test_overridden_contradicting_line_is_commented_out(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.give_alice_a_key()
    stock = box.main.read_text()
    # `sed -i '1i PermitRootLogin yes'` and `echo PermitRootLogin yes >>`: the first line
    # wins; before, the repair fixed it and left the last one live-looking below the "no".
    box.main.write_text("PermitRootLogin yes\n" + stock + "PermitRootLogin yes\n")
    assert _repair(box) == {"permitrootlogin": "repaired"}
    text = box.main.read_text()
    d = _date(box)
    assert text == (
        f"# sshguardd {d}: PermitRootLogin no (was yes): no logins as root over SSH\n"
        "PermitRootLogin no\n" + stock +
        "# PermitRootLogin yes  # overridden by the PermitRootLogin no line above; "
        f"commented out by sshguardd {d}\n")
    live = [ln for ln in text.splitlines() if ln.lower().startswith("permitrootlogin")]
    assert live == ["PermitRootLogin no", "PermitRootLogin no"]  # nothing says yes any more
    assert box.effective()["permitrootlogin"] == "no"
    box.runner.test(box.main)  # sshd accepts the commented file


def test_added_line_says_why_and_repeated_repairs_do_not_pile_up_comments(
        tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.give_alice_a_key()
    # No line sets KbdInteractiveAuthentication: sshd's default (yes) is drift.
    box.main.write_text(box.main.read_text().replace("KbdInteractiveAuthentication no\n", ""))
    assert actions(box.guard.check_all("start")) == {"kbdinteractiveauthentication": "repaired"}
    text = box.main.read_text()
    assert (f"# sshguardd {_date(box)}: KbdInteractiveAuthentication no (was yes, sshd's "
            "default): no keyboard-interactive (password) prompts\n"
            "KbdInteractiveAuthentication no\n") in text
    for _ in range(3):  # the same line drifts again and again
        box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                         "PermitRootLogin yes"))
        assert _repair(box) == {"permitrootlogin": "repaired"}
    text = box.main.read_text()
    assert text.count("PermitRootLogin no (was yes)") == 1, text
    assert text.count("# sshguardd ") == 2  # one per line sshguardd wrote
    assert box.effective()["kbdinteractiveauthentication"] == "no"
