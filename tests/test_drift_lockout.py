"""The drift guard's lockout guard on real files: a repair that would lock every key
holder out is refused and alerted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drift_helpers import Box, actions


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_lockout_guard_refuses_without_keys(box: Box):
    box.main.write_text(box.main.read_text().replace(
        "PasswordAuthentication no", "PasswordAuthentication yes"))
    out = box.guard.check_all("start")
    assert actions(out) == {"passwordauthentication": "refused"}
    assert box.effective()["passwordauthentication"] == "yes"
    (alert,) = box.alerts("lockout_guard")
    assert "no account that can log in has an authorized key" in alert["REASON"]
    assert box.metric("lockout_guard_refusals_total") == 1
    # Root's keys do not count while the policy forbids root logins.
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    (root_ssh / "authorized_keys").write_text(Path(f"{box.key}.pub").read_text())
    assert actions(box.guard.check_all("again")) == {"passwordauthentication": "refused"}
    # A key for a user who can log in lets the repair go ahead.
    box.give_alice_a_key()
    assert actions(box.guard.check_all("keys added")) == {"passwordauthentication": "repaired"}


def test_lockout_guard_accepts_authorized_keys_command(box: Box):
    box.main.write_text(box.main.read_text().replace(
        "PasswordAuthentication no", "PasswordAuthentication yes")
        + "AuthorizedKeysCommand /usr/bin/true\nAuthorizedKeysCommandUser nobody\n")
    assert actions(box.guard.check_all("start")) == {"passwordauthentication": "repaired"}


def test_lockout_guard_keeps_root_login_when_root_holds_the_only_key(box: Box):
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    (root_ssh / "authorized_keys").write_text(Path(f"{box.key}.pub").read_text())
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "refused"}
    (alert,) = box.alerts("lockout_guard")
    assert "root is the only account with an authorized key" in alert["REASON"]
    box.give_alice_a_key()
    assert actions(box.guard.check_all("keys added")) == {"permitrootlogin": "repaired"}


def test_policy_allowing_root_keys_is_not_guarded(tmp_path: Path):
    box = Box(tmp_path, sshd_settings={"PermitRootLogin": "prohibit-password"})
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    (root_ssh / "authorized_keys").write_text(Path(f"{box.key}.pub").read_text())
    assert actions(box.guard.check_all("start")) == {"permitrootlogin": "repaired"}
    assert box.effective()["permitrootlogin"] == "without-password"
