"""Issue 12: `systemctl reload` returned ~140 ms before the new config applied (the unit's
ExecReload= was `check-config` then `kill -HUP`), and in audit mode `status` showed each
re-check's time as the drift's time.

The daemon runs as `sshguardd run` in a sandbox (tests/daemon_helpers.py); the unit's own
ExecReload= lines are run as systemd runs them, one after the other, stopping at the first
failure. What `status` says right after they return is what must be in force.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_helpers import CONFIG, REPO, DaemonProc, Sender, caught_up, write_config
from sshguardd import config
from sshguardd.daemon import reload
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

UNIT = REPO / "packaging" / "systemd" / "sshguardd.service"
CLI = [sys.executable, "-m", "sshguardd"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

BASE = """
[ban]
max_retry = 3
ban_time = "1h"
allow = ["10.99.0.0/16"]

[drift]
enabled = false

[metrics]
enabled = false
"""


@pytest.fixture
def daemon(sandbox: Sandbox, tmp_path: Path) -> Iterator[DaemonProc]:
    write_config(sandbox, BASE)
    d = DaemonProc(sandbox, tmp_path / "daemon.log")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def exec_reload(sb: Sandbox, d: DaemonProc) -> subprocess.CompletedProcess[str]:
    """The unit's ExecReload= commands, in order, as systemd runs them (the first failing
    one fails the reload): /usr/bin/sshguardd is this checkout, $MAINPID the daemon."""
    lines = [ln.split("=", 1)[1] for ln in UNIT.read_text().splitlines()
             if ln.startswith("ExecReload=")]
    assert lines
    pid = str(d.status()["pid"])
    result = None
    for line in lines:
        argv = [a.replace("$MAINPID", pid) for a in shlex.split(line.lstrip("-"))]
        if argv[0] == "/usr/bin/sshguardd":
            argv = ["env", f"PYTHONPATH={REPO}", *CLI, *argv[1:]]
        result = sb.run(argv)
        if result.returncode != 0:
            break
    assert result is not None
    return result


def test_systemctl_reload_returns_once_the_new_config_is_in_force(
        sandbox: Sandbox, daemon: DaemonProc) -> None:
    daemon.start()
    before = daemon.status()
    assert before["config"]["ban"]["max_retry"] == 3 and before["access"]["sources"] == []
    write_config(sandbox, BASE.replace("max_retry = 3", "max_retry = 2")
                 + '\n[access]\nsources = ["10.99.0.0/16"]\n')
    t0 = time.monotonic()
    r = exec_reload(sandbox, daemon)
    print(f"ExecReload= took {1000 * (time.monotonic() - t0):.0f} ms (CLI start included)")
    assert r.returncode == 0, r.stdout + r.stderr
    # No waiting: when ExecReload= has returned, status already answers with the new
    # config (before, the SIGHUP was only flagged and status answered first).
    after = daemon.status()
    assert after["config"]["ban"]["max_retry"] == 2
    assert after["access"]["sources"] == ["10.99.0.0/16"]
    assert after["config"]["loaded_at"] > before["config"]["loaded_at"]
    assert after["pid"] == before["pid"]
    assert "ban.max_retry: 3 -> 2" in r.stdout, r.stdout
    # ... and the kernel has the mode: one nft transaction, done before the answer.
    chain = sandbox.run(["nft", "list", "table", "inet", "sshguardd"], check=True).stdout
    assert "10.99.0.0/16" in chain, chain


def test_a_refused_config_exits_78_naming_the_key_and_keeps_the_old_one(
        sandbox: Sandbox, daemon: DaemonProc) -> None:
    daemon.start()
    write_config(sandbox, BASE.replace("max_retry = 3", "max_retry = 0")
                 .replace('ban_time = "1h"', 'ban_time = "1h"\nbogus = 1'))
    r = exec_reload(sandbox, daemon)
    assert r.returncode == 78, r.stdout + r.stderr
    # Every problem, by key, on stderr (the journal, under systemd) and in the daemon's log.
    err = r.stderr
    assert "/etc/sshguardd/config.toml: ban.max_retry: " in err, err
    assert "/etc/sshguardd/config.toml: ban.bogus: unknown key" in err, err
    assert "keeps running on its previous config" in err, err
    assert r.stdout == ""
    log = daemon.log()
    assert "reload refused: /etc/sshguardd/config.toml: ban.max_retry" in log, log
    st = daemon.status()
    assert st["ok"] and st["config"]["ban"]["max_retry"] == 3
    # --json carries the same, for scripts.
    r = daemon.cli("reload", "--json")
    answer = json.loads(r.stdout)
    assert (r.returncode, answer["result"]) == (78, "refused")
    assert {p["key"] for p in answer["problems"]} == {"ban.max_retry", "ban.bogus"}
    # Fixed: applied, and what waits for a restart says so.
    write_config(sandbox, BASE.replace("enabled = false\n\n[metrics]",
                                       "enabled = false\n\n[metrics]\nport = 9823"))
    r = daemon.cli("reload", "--json")
    answer = json.loads(r.stdout)
    assert (r.returncode, answer["result"]) == (0, "applied"), r.stdout + r.stderr
    assert answer["changed"] == [{"key": "metrics.port", "old": 9822, "new": 9823,
                                  "applies": "on restart"}]
    assert daemon.status()["config"]["ban"]["max_retry"] == 3


def test_access_held_back_by_the_lockout_guard_exits_1_and_says_why(
        sandbox: Sandbox, daemon: DaemonProc) -> None:
    daemon.start()
    sshd = Sender(sandbox, "sshd")
    try:  # an admin logged in from 10.7.0.1: allow-only from 10.99/16 would shut them out
        sshd.say("Accepted publickey for admin from 10.7.0.1 port 5 ssh2: ED25519 SHA256:x")
        wait_for(lambda: caught_up(daemon, sandbox), 10, what="the login to be read")
    finally:
        sshd.close()
    write_config(sandbox, BASE.replace("max_retry = 3", "max_retry = 4")
                 + '\n[access]\nsources = ["10.99.0.0/16"]\n')
    r = daemon.cli("reload")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ban.max_retry: 3 -> 4" in r.stdout  # the rest is applied
    assert "access.sources held back: the lockout guard kept allow-only mode off" in r.stderr
    assert "10.7.0.1" in r.stderr, r.stderr
    st = daemon.status()
    assert st["access"]["sources"] == [] and st["config"]["ban"]["max_retry"] == 4


def test_reload_without_a_daemon_says_so_and_exits_69(sandbox: Sandbox,
                                                       daemon: DaemonProc) -> None:
    r = daemon.cli("reload")
    assert r.returncode == 69, r.stdout + r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("sshguardd reload: sshguardd is not running"), line
    assert "nothing was reloaded" in line and r.stdout == ""


def test_reload_as_another_user_exits_77() -> None:
    r = subprocess.run([*NOBODY, *CLI, "reload"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "HOME": "/nonexistent"}, check=False)
    assert r.returncode == 77, r.stdout + r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("sshguardd reload: needs root (") and "try: sudo" in line


def test_audit_mode_keeps_the_time_a_drift_was_first_seen(
        sandbox: Sandbox, daemon: DaemonProc) -> None:
    """Before: every re-check (reload, a change to the file, the 5-minute re-check)
    reported the standing drift again and status showed the re-check's time."""
    sandbox.run(["ssh-keygen", "-A"], check=True)
    main = sandbox.path("/etc/ssh/sshd_config")
    # One drift: every other policy setting holds, root is locked.
    main.write_text("PermitRootLogin yes\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPermitEmptyPasswords no\n"
                    + main.read_text())
    sandbox.run(["usermod", "-L", "root"], check=True)
    # debug: the guard logs each change event it has handled (the test's barrier).
    write_config(sandbox, BASE.replace("[drift]\nenabled = false", '[drift]\nmode = "audit"')
                 + '\n[daemon]\nlog_level = "debug"\n[updates]\nenabled = false\n')
    daemon.start()
    first = wait_for(lambda: daemon.status()["last_drift_at"], 15, what="the drift seen")
    text = daemon.status()["last_drift"]
    assert text.startswith("permitrootlogin in /etc/ssh/sshd_config: drift at "), text
    # Re-checks in a later second than the first sighting, so the shown time would move.
    wait_for(lambda: time.time() >= first + 1.0, 5, what="a later second")
    r = daemon.cli("reload")  # a full re-check, done when this returns
    assert r.returncode == 0, r.stdout + r.stderr
    handled = daemon.log().count("handled a change of /etc/ssh/sshd_config")
    main.write_text(main.read_text() + "# an unrelated edit\n")  # a change event
    wait_for(lambda: daemon.log().count("handled a change of /etc/ssh/sshd_config")
             > handled, 10, what="the change to be judged")
    st = daemon.status()
    assert (st["last_drift_at"], st["last_drift"]) == (first, text)
    # A reload that changes [drift] builds a new guard: the drift it finds is the same one.
    write_config(sandbox, sandbox.path(CONFIG).read_text().replace(
        'mode = "audit"', 'mode = "audit"\ndebounce = "0.2s"'))
    r = daemon.cli("reload")
    assert r.returncode == 0 and "drift.debounce: 0.1 -> 0.2" in r.stdout, r.stdout + r.stderr
    st = daemon.status()
    assert (st["last_drift_at"], st["last_drift"]) == (first, text)
    assert "PermitRootLogin yes" in main.read_text()  # audit: reported, not repaired
    # A different drift is a new one, with its own time.
    main.write_text(main.read_text().replace("PermitRootLogin yes",
                                             "PermitRootLogin prohibit-password"))
    wait_for(lambda: daemon.status()["last_drift_at"] > first, 10,
             what="the changed drift to be reported with its own time")


def test_changes_name_each_key_and_when_it_applies() -> None:
    old = config.parse('[fleet]\nurl = "rediss://h1:secret@cache:6379/0"\n')
    new = config.parse('[ban]\nmax_retry = 4\n[fleet]\nurl = "rediss://h1:other@cache:6379/0"\n'
                       '[drift.sshd_settings]\nx11forwarding = "no"\n')
    got = reload.changes(old, new)
    assert got == [
        {"key": "ban.max_retry", "old": 5, "new": 4, "applies": "now"},
        {"key": "drift.sshd_settings.x11forwarding", "old": None, "new": "no",
         "applies": "now"},
        {"key": "fleet.url", "old": "rediss://***@cache:6379/0",
         "new": "rediss://***@cache:6379/0", "applies": "on restart"},
    ]
    assert "secret" not in reload.summary(got) and "other" not in reload.summary(got)
    assert reload.changes(new, new) == []
