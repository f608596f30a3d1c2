"""Failure counters survive a restart whatever the journal kept: they are saved in the
state store with the position of the batch that changed them, in one transaction.

Before: the counters were rebuilt only by replaying the journal's last find_time, so a
vacuumed journal plus `kill -9` lost them (a flood with vacuum lost ~93 %); here 3 of 5
failures were forgotten and the attacker's next 2 banned nobody."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, Sender, banned, caught_up, failed, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
[ban]
max_retry = 5
find_time = "10m"
ban_time = "1h"
allow = ["10.99.0.0/16"]

[drift]
enabled = false

[metrics]
enabled = false
"""


@pytest.fixture
def daemon(sandbox: Sandbox, tmp_path: Path) -> Iterator[DaemonProc]:
    write_config(sandbox, CONFIG)
    d = DaemonProc(sandbox, tmp_path / "daemon.log")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def _sshd_lines(sb: Sandbox) -> str:
    return sb.journal("-o", "cat", "_COMM=sshd")


def test_counters_survive_kill9_and_a_vacuumed_journal(sandbox: Sandbox,
                                                       daemon: DaemonProc) -> None:
    daemon.start()
    first = Sender(sandbox, "sshd")
    first.say(*failed("10.8.0.1", 3))
    first.close()
    # `position` is where the follower has read to; the loop may not have processed (and
    # committed) that batch yet, so wait for the offender too before the kill.
    wait_for(lambda: caught_up(daemon, sandbox) and daemon.status()["offenders_tracked"] == 1,
             30, what="the daemon to read and count 3 failures")
    daemon.kill9()

    # The journal forgets them: rotate, then drop every archived file.
    sandbox.run(["journalctl", "--rotate"], check=True)

    def vacuumed() -> bool:
        sandbox.run(["journalctl", "--vacuum-time=1s"], check=True)
        return "10.8.0.1" not in _sshd_lines(sandbox)
    wait_for(vacuumed, 30, interval=0.5,
             what="the vacuumed journal to hold none of the failures")

    daemon.start()
    assert "restored the failure counters of 1 offenders" in daemon.log()
    second = Sender(sandbox, "sshd")
    second.say(*failed("10.8.0.1", 2))
    second.close()
    wait_for(lambda: banned(sandbox, "10.8.0.1"), 30,
             what="the ban after 3 + 2 failures across the restart")
