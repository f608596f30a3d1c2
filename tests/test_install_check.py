"""`sshguardd check --diff` (the preview install.sh and the .deb print before starting the
daemon) and the verbs' honest errors for the wrong user, in a Sandbox whose /etc is
copy-on-write: the host's stock sshd_config, a real `sshd -T`, a real /etc/shadow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshguardd.demo.sandbox import Sandbox

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "sshguardd"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def box(sandbox: Sandbox, tmp_path: Path) -> Sandbox:
    sandbox.run(["ssh-keygen", "-A"], check=True)
    sandbox.run(["mkdir", "-p", "/run/sshd"], check=True)
    # Accounts as on a fresh host: root, the system accounts (no login shell) and alice,
    # whose home is here, so whether anyone holds a key is up to the test.
    home = tmp_path / "alice"
    home.mkdir()
    passwd = sandbox.path("/etc/passwd")
    keep = [line for line in passwd.read_text().splitlines()
            if line.startswith("root:") or line.endswith(("nologin", "/bin/false", "/bin/sync"))]
    passwd.write_text("\n".join(keep + [f"alice:x:1000:1000::{home}:/bin/bash"]) + "\n")
    sandbox.alice_home = home  # type: ignore[attr-defined]
    # root with a password: unlocked, as cloud images often leave it.
    sandbox.run(["chpasswd"], input="root:hunter2\n", check=True)
    return sandbox


def _stock_sshd_config(box: Sandbox) -> str:
    return box.path("/etc/ssh/sshd_config").read_text()


def test_diff_shows_the_plan_and_changes_nothing(box: Sandbox) -> None:
    watched = ("/etc/ssh/sshd_config", "/etc/shadow")
    before = {p: box.path(p).read_bytes() for p in watched}
    r = box.run([*CLI, "check", "--diff"])
    assert r.returncode == 1, r.stdout + r.stderr  # something to change
    out = r.stdout
    assert out.startswith('sshguardd will make these changes on this host when it starts '
                          '(drift.mode = "enforce")'), out
    assert "--- /etc/ssh/sshd_config\n+++ /etc/ssh/sshd_config (after sshguardd)" in out
    assert "+PermitRootLogin no" in out
    # No account can log in with a key yet: turning passwords off is held back, and why.
    assert "lockout guard holds back passwordauthentication" in out
    assert "+PasswordAuthentication no" not in out
    assert "root's password: will be locked (it is unlocked now)" in out
    assert ("guards port(s) 22 (from sshd -T): 5 failed logins within 10m ban an address "
            "for 10m") in out
    assert "to only watch first: install.sh --audit" in out
    assert {p: box.path(p).read_bytes() for p in watched} == before

    # With a key for alice, the plan turns passwords off too; JSON says the same.
    ssh = box.alice_home / ".ssh"  # type: ignore[attr-defined]
    ssh.mkdir()
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDER x\n")
    r = box.run([*CLI, "check", "--diff", "--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["changes"] is True
    assert doc["held_back"] == []
    # (the directive is the last line of an edit; a comment line may come before it)
    assert sorted(e["new"].splitlines()[-1] for e in doc["edits"]) == [
        "PasswordAuthentication no", "PermitRootLogin no"]
    assert doc["root_password"] == "lock" and doc["ports"] == [22]
    assert "+PasswordAuthentication no" in doc["diff"]


def test_diff_in_audit_mode_says_nothing_is_changed(box: Sandbox, tmp_path: Path) -> None:
    cfg = tmp_path / "audit.toml"
    cfg.write_text('[drift]\nmode = "audit"\n')
    r = box.run([*CLI, "check", "--diff", "-c", str(cfg)])
    assert r.returncode == 1
    assert r.stdout.startswith('drift.mode = "audit": sshguardd only alerts'), r.stdout
    assert "will make these changes" not in r.stdout
    assert f'to enforce: mode = "enforce" in [drift] of {cfg}' in r.stdout


def test_diff_is_empty_on_a_compliant_host(box: Sandbox) -> None:
    conf = box.path("/etc/ssh/sshd_config")
    conf.write_text("PermitRootLogin no\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPermitEmptyPasswords no\n"
                    + _stock_sshd_config(box))
    box.run(["usermod", "-L", "root"], check=True)
    r = box.run([*CLI, "check", "--diff"])
    assert r.returncode == 0, r.stdout
    assert "sshd_config: no change" in r.stdout
    assert "root's password: already locked, no change" in r.stdout


@pytest.mark.parametrize("argv", [["check"], ["check", "--diff"], ["status"], ["bans"],
                                  ["unban", "192.0.2.1"]])
def test_verbs_that_need_root_say_so_and_exit_77(argv: list[str]) -> None:
    """As another user `check` used to report FAIL for "sshd accepts its config" and the
    root password and exit 1, exactly like drift; the control verbs said the daemon was
    unreachable (69)."""
    r = subprocess.run([*NOBODY, *CLI, *argv], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent,
                       env={**os.environ, "HOME": "/nonexistent"})
    assert r.returncode == 77, r.stdout + r.stderr
    assert r.stdout == ""  # no table of false findings
    [line] = r.stderr.splitlines()
    assert line.startswith(f"sshguardd {argv[0]}: needs root (") and "try: sudo" in line
